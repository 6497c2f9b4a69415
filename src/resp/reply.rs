//! Replies, and their encoding in the protocol version the connection negotiated.

use bytes::{BufMut, Bytes, BytesMut};

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

    /// Appends the encoded reply to `out`, written straight into the buffer (no intermediate frames: building
    /// them cost as much as the rest of a pipelined GET's reply).
    pub fn encode(self, protocol: Protocol, out: &mut BytesMut) {
        self.write(protocol, out);
    }

    fn write(&self, protocol: Protocol, out: &mut BytesMut) {
        let resp3 = protocol == Protocol::Resp3;
        match self {
            Reply::Simple(s) => line(out, b'+', s),
            Reply::Error(e) => {
                out.put_u8(b'-');
                // Error lines may not contain CR or LF: replace them so a message can never break the framing.
                out.extend(e.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
                out.put_slice(b"\r\n");
            }
            Reply::Integer(i) => line(out, b':', itoa::Buffer::new().format(*i).as_bytes()),
            Reply::Bulk(b) => bulk(out, b),
            Reply::Nil => out.put_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" }),
            Reply::Array(items) => {
                header(out, b'*', items.len());
                items.iter().for_each(|r| r.write(protocol, out));
            }
            Reply::Set(items) => {
                header(out, if resp3 { b'~' } else { b'*' }, items.len());
                items.iter().for_each(|r| r.write(protocol, out));
            }
            Reply::Map(pairs) if resp3 => {
                header(out, b'%', pairs.len());
                pairs.iter().for_each(|(k, v)| {
                    k.write(protocol, out);
                    v.write(protocol, out);
                });
            }
            Reply::Pairs(pairs) if resp3 => {
                header(out, b'*', pairs.len());
                pairs.iter().for_each(|(k, v)| {
                    out.put_slice(b"*2\r\n");
                    k.write(protocol, out);
                    v.write(protocol, out);
                });
            }
            Reply::Map(pairs) | Reply::Pairs(pairs) => {
                header(out, b'*', 2 * pairs.len());
                pairs.iter().for_each(|(k, v)| {
                    k.write(protocol, out);
                    v.write(protocol, out);
                });
            }
            Reply::Double(x) if resp3 => {
                let text = if x.is_nan() {
                    "nan".to_string()
                } else if x.is_infinite() {
                    if x.is_sign_negative() { "-inf" } else { "inf" }.to_string()
                } else {
                    x.to_string()
                };
                line(out, b',', text.as_bytes());
            }
            Reply::Double(x) => bulk(out, &crate::crdt::zset::format(*x)),
        }
    }
}

/// `kind`, `text`, CRLF.
fn line(out: &mut BytesMut, kind: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(kind);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

/// An aggregate's header: `kind`, element count, CRLF.
fn header(out: &mut BytesMut, kind: u8, len: usize) {
    line(out, kind, itoa::Buffer::new().format(len).as_bytes());
}

/// A bulk string (RESP3's blob string has the same form).
fn bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    header(out, b'$', data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use redis_protocol::resp2::encode::extend_encode as encode2;
    use redis_protocol::resp2::types::BytesFrame as Frame2;
    use redis_protocol::resp3::encode::complete::extend_encode as encode3;
    use redis_protocol::resp3::types::{BytesFrame as Frame3, FrameMap};

    use super::*;

    /// The reference: redis-protocol's frames and encoders, which replies went through before they were written
    /// directly.
    fn reference(r: Reply, p: Protocol) -> Vec<u8> {
        let mut out = BytesMut::new();
        match p {
            Protocol::Resp2 => encode2(&mut out, &to_resp2(r), false).unwrap(),
            Protocol::Resp3 => encode3(&mut out, &to_resp3(r), false).unwrap(),
        };
        out.to_vec()
    }

    fn clean(e: String) -> Bytes {
        Bytes::from(e.replace(['\r', '\n'], " "))
    }

    fn to_resp2(r: Reply) -> Frame2 {
        match r {
            Reply::Simple(s) => Frame2::SimpleString(s),
            Reply::Error(e) => Frame2::Error(String::from_utf8(clean(e).to_vec()).unwrap().into()),
            Reply::Integer(i) => Frame2::Integer(i),
            Reply::Bulk(b) => Frame2::BulkString(b),
            Reply::Nil => Frame2::Null,
            Reply::Array(items) | Reply::Set(items) => Frame2::Array(items.into_iter().map(to_resp2).collect()),
            Reply::Map(pairs) | Reply::Pairs(pairs) => {
                Frame2::Array(pairs.into_iter().flat_map(|(k, v)| [to_resp2(k), to_resp2(v)]).collect())
            }
            Reply::Double(x) => Frame2::BulkString(crate::crdt::zset::format(x)),
        }
    }

    fn to_resp3(r: Reply) -> Frame3 {
        match r {
            Reply::Simple(s) => Frame3::SimpleString { data: s, attributes: None },
            Reply::Error(e) => {
                Frame3::SimpleError { data: String::from_utf8(clean(e).to_vec()).unwrap().into(), attributes: None }
            }
            Reply::Integer(i) => Frame3::Number { data: i, attributes: None },
            Reply::Bulk(b) => Frame3::BlobString { data: b, attributes: None },
            Reply::Nil => Frame3::Null,
            Reply::Array(items) => Frame3::Array { data: items.into_iter().map(to_resp3).collect(), attributes: None },
            Reply::Set(items) => Frame3::Set { data: items.into_iter().map(to_resp3).collect(), attributes: None },
            Reply::Double(x) => Frame3::Double { data: x, attributes: None },
            Reply::Pairs(pairs) => Frame3::Array {
                data: pairs
                    .into_iter()
                    .map(|(k, v)| Frame3::Array { data: vec![to_resp3(k), to_resp3(v)], attributes: None })
                    .collect(),
                attributes: None,
            },
            Reply::Map(pairs) => {
                let mut data = FrameMap::with_capacity(pairs.len());
                for (k, v) in pairs {
                    data.insert(to_resp3(k), to_resp3(v));
                }
                Frame3::Map { data, attributes: None }
            }
        }
    }

    fn leaf() -> impl Strategy<Value = Reply> {
        prop_oneof![
            "[a-zA-Z0-9 ]{0,12}".prop_map(|s| Reply::Simple(Bytes::from(s))),
            "ERR [a-z\r\n ]{0,12}".prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Reply::Bulk(Bytes::from(b))),
            Just(Reply::Nil),
            prop_oneof![any::<f64>(), Just(f64::INFINITY), Just(f64::NEG_INFINITY), Just(0.5), Just(-3.0)]
                .prop_map(Reply::Double),
        ]
    }

    fn reply() -> impl Strategy<Value = Reply> {
        leaf().prop_recursive(3, 40, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Reply::Array),
                // Distinct members, as a set reply has: redis-protocol's set type would merge equal ones.
                proptest::collection::btree_set("[a-z]{0,6}", 0..6)
                    .prop_map(|m| Reply::Set(m.into_iter().map(Reply::bulk).collect())),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..4).prop_map(Reply::Pairs),
                // Distinct keys, as every map we send has: redis-protocol's map type would merge equal ones.
                proptest::collection::btree_map(any::<u32>(), inner, 0..4).prop_map(|m| {
                    Reply::Map(m.into_iter().map(|(k, v)| (Reply::bulk(format!("f{k}")), v)).collect())
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn direct_encoding_matches_the_protocol_library(r in reply()) {
            for p in [Protocol::Resp2, Protocol::Resp3] {
                let mut out = BytesMut::new();
                r.clone().encode(p, &mut out);
                prop_assert_eq!(out.to_vec(), reference(r.clone(), p), "{:?} in {:?}", r, p);
            }
        }
    }

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
