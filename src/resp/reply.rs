//! Replies, and their encoding in the protocol version the connection negotiated.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::encode::extend_encode as encode2;
use redis_protocol::resp2::types::BytesFrame as Frame2;
use redis_protocol::resp3::encode::complete::extend_encode as encode3;
use redis_protocol::resp3::types::{BytesFrame as Frame3, FrameMap};

/// The protocol a connection speaks: RESP2 until `HELLO 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2 (the default).
    Resp2,
    /// RESP3.
    Resp3,
}

/// A reply to one command.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+text`
    Simple(Bytes),
    /// `-CODE message`; the text starts with an upper-case code word.
    Error(String),
    /// `:n`
    Integer(i64),
    /// `$len\r\nbytes`
    Bulk(Bytes),
    /// Nil (`$-1` in RESP2, `_` in RESP3).
    Nil,
    /// An array.
    Array(Vec<Reply>),
    /// A map in RESP3; a flat array of pairs in RESP2.
    Map(Vec<(Reply, Reply)>),
    /// A set in RESP3 (SMEMBERS); an array in RESP2.
    Set(Vec<Reply>),
    /// A double in RESP3 (a score); in RESP2 its text as Redis prints it.
    Double(f64),
    /// An array of 2-element arrays in RESP3 (members with scores); one flat array in RESP2.
    Pairs(Vec<(Reply, Reply)>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple(Bytes::from_static(b"OK"))
    }

    /// A simple string from static text.
    pub fn simple(s: &'static str) -> Reply {
        Reply::Simple(Bytes::from_static(s.as_bytes()))
    }

    /// A bulk string from text.
    pub fn bulk(s: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(s.into()))
    }

    /// An error; `message` must start with a code word (`ERR`, `NOAUTH`, ...).
    pub fn error(message: impl Into<String>) -> Reply {
        Reply::Error(message.into())
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the encoded reply to `out`.
    pub fn encode(self, protocol: Protocol, out: &mut BytesMut) {
        match protocol {
            Protocol::Resp2 => {
                encode2(out, &self.into_resp2(), false).expect("encoding into a growable buffer");
            }
            Protocol::Resp3 => {
                encode3(out, &self.into_resp3(), false).expect("encoding into a growable buffer");
            }
        }
    }

    fn into_resp2(self) -> Frame2 {
        match self {
            Reply::Simple(s) => Frame2::SimpleString(s),
            Reply::Error(e) => Frame2::Error(sanitize(e).into()),
            Reply::Integer(i) => Frame2::Integer(i),
            Reply::Bulk(b) => Frame2::BulkString(b),
            Reply::Nil => Frame2::Null,
            Reply::Array(items) | Reply::Set(items) => {
                Frame2::Array(items.into_iter().map(Reply::into_resp2).collect())
            }
            Reply::Map(pairs) | Reply::Pairs(pairs) => {
                Frame2::Array(pairs.into_iter().flat_map(|(k, v)| [k.into_resp2(), v.into_resp2()]).collect())
            }
            Reply::Double(x) => Frame2::BulkString(crate::crdt::zset::format(x)),
        }
    }

    fn into_resp3(self) -> Frame3 {
        match self {
            Reply::Simple(s) => Frame3::SimpleString { data: s, attributes: None },
            Reply::Error(e) => Frame3::SimpleError { data: sanitize(e).into(), attributes: None },
            Reply::Integer(i) => Frame3::Number { data: i, attributes: None },
            Reply::Bulk(b) => Frame3::BlobString { data: b, attributes: None },
            Reply::Nil => Frame3::Null,
            Reply::Array(items) => {
                Frame3::Array { data: items.into_iter().map(Reply::into_resp3).collect(), attributes: None }
            }
            Reply::Set(items) => {
                Frame3::Set { data: items.into_iter().map(Reply::into_resp3).collect(), attributes: None }
            }
            Reply::Double(x) => Frame3::Double { data: x, attributes: None },
            Reply::Pairs(pairs) => Frame3::Array {
                data: pairs
                    .into_iter()
                    .map(|(k, v)| Frame3::Array { data: vec![k.into_resp3(), v.into_resp3()], attributes: None })
                    .collect(),
                attributes: None,
            },
            Reply::Map(pairs) => {
                let mut data = FrameMap::with_capacity(pairs.len());
                for (k, v) in pairs {
                    data.insert(k.into_resp3(), v.into_resp3());
                }
                Frame3::Map { data, attributes: None }
            }
        }
    }
}

/// Error lines may not contain CR or LF; replace them so a message can never break the framing.
fn sanitize(mut e: String) -> String {
    if e.contains(['\r', '\n']) {
        e = e.replace(['\r', '\n'], " ");
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(r: Reply, p: Protocol) -> String {
        let mut out = BytesMut::new();
        r.encode(p, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn resp2_and_resp3() {
        let get = Reply::Array(vec![Reply::Array(vec![Reply::bulk("v")]), Reply::Nil]);
        assert_eq!(enc(get.clone(), Protocol::Resp2), "*2\r\n*1\r\n$1\r\nv\r\n$-1\r\n");
        assert_eq!(enc(get, Protocol::Resp3), "*2\r\n*1\r\n$1\r\nv\r\n_\r\n");
        let map = Reply::Map(vec![(Reply::bulk("a"), Reply::Integer(1))]);
        assert_eq!(enc(map.clone(), Protocol::Resp2), "*2\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(map, Protocol::Resp3), "%1\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(enc(Reply::error("ERR a\r\nb"), Protocol::Resp2), "-ERR a  b\r\n");
        assert_eq!(enc(Reply::ok(), Protocol::Resp3), "+OK\r\n");
        let set = Reply::Set(vec![Reply::bulk("m")]);
        assert_eq!(enc(set.clone(), Protocol::Resp2), "*1\r\n$1\r\nm\r\n");
        assert_eq!(enc(set, Protocol::Resp3), "~1\r\n$1\r\nm\r\n");
    }
}
