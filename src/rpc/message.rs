//! What travels on the internal protocol after the handshake. The transport knows no message by name: each
//! subsystem declares its own requests as [`Message`] types, each with its reply type, next to the client that
//! sends them and the handler that answers them (gossip in `cluster`, replica reads and writes in
//! `replication::replica`, handoff streams in `replication::handoff`, hash trees in `antientropy`, forwarded writes
//! and key scans in `coordinator`, load in `commands::views`). A frame carries the message's one-byte tag, so the
//! receiving node knows which type to decode; the node's dispatch (`node.rs`) maps tags to handlers.
//!
//! A frame is `[kind: u8][request id: u64 LE]`, then for a request `[tag: u8][postcard body]`, for a reply the
//! postcard of the message's reply, for a refusal the postcard of a [`RemoteError`]. Postcard is not
//! self-describing, so the handshake pins [`PROTOCOL_VERSION`].

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::membership::PeerInfo;

/// Version of the internal protocol; peers with another version are refused at the handshake.
pub const PROTOCOL_VERSION: u16 = 12;

/// A request of the internal protocol, answered by a [`Message::Reply`].
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// Its tag on the wire: unique across the protocol (the node's dispatch match refuses a duplicate as an
    /// unreachable pattern, and a unit test lists them all).
    const TAG: u8;
    /// Its name in metrics and logs.
    const NAME: &'static str;
    /// What answers it.
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

/// Declares a request type a [`Message`]: `rpc_message!(Read => ReplicaRead, tag 10, "read")`.
#[macro_export]
macro_rules! rpc_message {
    ($request:ty => $reply:ty, tag $tag:literal, $name:literal) => {
        impl $crate::rpc::Message for $request {
            const TAG: u8 = $tag;
            const NAME: &'static str = $name;
            type Reply = $reply;
        }
    };
}

/// Why a remote request failed, as the remote classified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteErrorKind {
    /// Not enough replicas answered.
    Unavailable,
    /// The write was refused (sibling limits, bad context).
    Refused,
    /// Storage failed.
    Storage,
    /// The receiver cannot serve this request (e.g. not a replica of the key).
    Misdirected,
    /// The receiver's storage takes no writes now (a full or failing disk); it applied nothing, so another
    /// replica may take the write.
    WritesStopped,
}

/// A handler's refusal: the request reached the peer, which answered that it could not serve it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    /// Classification.
    pub kind: RemoteErrorKind,
    /// The message a client would see.
    pub message: String,
}

impl RemoteError {
    /// A refusal of `kind` saying `message`.
    pub fn new(kind: RemoteErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

const REQUEST: u8 = 0;
const REPLY: u8 = 1;
const REFUSAL: u8 = 2;
/// Kind byte and request id.
const HEADER: usize = 9;

/// One frame after the handshake, its body not decoded yet (the receiver picks the type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A request with its id and its message's tag.
    Request {
        /// Id the reply will carry.
        id: u64,
        /// Which message the body is.
        tag: u8,
        /// Postcard of the message.
        body: Bytes,
    },
    /// The answer to request `id`: the postcard of its reply, or the peer's refusal.
    Reply {
        /// Id of the request.
        id: u64,
        /// The encoded reply, or why there is none.
        body: Result<Bytes, RemoteError>,
    },
}

/// A frame that is not one.
#[derive(Debug, thiserror::Error)]
#[error("malformed frame: {reason}")]
pub struct Malformed {
    /// What is wrong with it.
    pub reason: String,
}

fn header(kind: u8, id: u64, extra: usize) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + 1 + extra);
    b.push(kind);
    b.extend_from_slice(&id.to_le_bytes());
    b
}

/// The frame with `value`'s postcard appended. A `Vec` rather than a `BytesMut`: postcard appends a byte slice
/// through `Extend`, which a `Vec` does as one reserved copy and a `BytesMut` byte by byte.
fn append<T: Serialize>(frame: Vec<u8>, value: &T) -> Bytes {
    Bytes::from(postcard::to_extend(value, frame).expect("protocol messages serialize"))
}

impl Frame {
    /// The frame of request `id` carrying `message`.
    pub fn request<M: Message>(id: u64, message: &M) -> Bytes {
        let mut b = header(REQUEST, id, 64);
        b.push(M::TAG);
        append(b, message)
    }

    /// The frame answering request `id` with an encoded reply (see [`encode`]) or a refusal.
    pub fn reply(id: u64, body: Result<Bytes, RemoteError>) -> Bytes {
        match body {
            Ok(body) => {
                let mut b = header(REPLY, id, body.len());
                b.extend_from_slice(&body);
                Bytes::from(b)
            }
            Err(e) => append(header(REFUSAL, id, e.message.len() + 4), &e),
        }
    }

    /// Splits a received frame into its parts; the body is a view of `frame`, not a copy.
    pub fn parse(frame: Bytes) -> Result<Frame, Malformed> {
        if frame.len() < HEADER {
            return Err(Malformed { reason: format!("{} bytes is shorter than a frame header", frame.len()) });
        }
        let id = u64::from_le_bytes(frame[1..HEADER].try_into().expect("eight bytes"));
        match frame[0] {
            REQUEST if frame.len() > HEADER => {
                Ok(Frame::Request { id, tag: frame[HEADER], body: frame.slice(HEADER + 1..) })
            }
            REQUEST => Err(Malformed { reason: "a request without a tag".into() }),
            REPLY => Ok(Frame::Reply { id, body: Ok(frame.slice(HEADER..)) }),
            REFUSAL => Ok(Frame::Reply { id, body: Err(decode(&frame[HEADER..])?) }),
            kind => Err(Malformed { reason: format!("unknown frame kind {kind}") }),
        }
    }
}

/// Postcard of a message or reply.
pub fn encode<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(postcard::to_stdvec(value).expect("protocol messages serialize"))
}

/// A message or reply from its postcard; trailing bytes are an error (a frame holds one value).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Malformed> {
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Malformed { reason: format!("{} bytes after the message", rest.len()) }),
        Err(e) => Err(Malformed { reason: e.to_string() }),
    }
}

/// What a handler made of one request.
#[derive(Debug)]
pub enum Answer {
    /// The encoded reply.
    Reply(Bytes),
    /// The handler refused it.
    Refused(RemoteError),
    /// The request did not decode (an unknown tag, a body that is not its message): the connection closes.
    Malformed(Malformed),
}

/// Decodes `body` as an `M`, serves it, and encodes the reply: one arm of a node's dispatch.
pub async fn answer<M, F, Fut>(body: &[u8], serve: F) -> Answer
where
    M: Message,
    F: FnOnce(M) -> Fut,
    Fut: Future<Output = Result<M::Reply, RemoteError>>,
{
    let message = match decode::<M>(body) {
        Ok(m) => m,
        Err(e) => return Answer::Malformed(e),
    };
    metrics::counter!("dynamo_rpc_requests_total", "message" => M::NAME).increment(1);
    match serve(message).await {
        Ok(reply) => Answer::Reply(encode(&reply)),
        Err(e) => Answer::Refused(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Hello(String);

    impl Message for Hello {
        const TAG: u8 = 200;
        const NAME: &'static str = "hello";
        type Reply = u32;
    }

    #[test]
    fn frames_round_trip() {
        let frame = Frame::request(7, &Hello("there".into()));
        let Frame::Request { id, tag, body } = Frame::parse(frame).unwrap() else { panic!("a request") };
        assert_eq!((id, tag), (7, Hello::TAG));
        assert_eq!(decode::<Hello>(&body).unwrap(), Hello("there".into()));

        let reply = Frame::parse(Frame::reply(7, Ok(encode(&42u32)))).unwrap();
        let Frame::Reply { id: 7, body: Ok(body) } = reply else { panic!("a reply: {reply:?}") };
        assert_eq!(decode::<u32>(&body).unwrap(), 42);

        let refusal = RemoteError::new(RemoteErrorKind::Misdirected, "not here");
        let parsed = Frame::parse(Frame::reply(9, Err(refusal.clone()))).unwrap();
        assert_eq!(parsed, Frame::Reply { id: 9, body: Err(refusal) });
    }

    #[test]
    fn broken_frames_are_malformed() {
        assert!(Frame::parse(Bytes::from_static(&[0, 1, 2])).is_err(), "short");
        assert!(Frame::parse(Bytes::from_static(&[0; 9])).is_err(), "a request without a tag");
        assert!(Frame::parse(Bytes::from_static(&[5; 12])).is_err(), "an unknown kind");
        assert!(
            Frame::parse(Bytes::from_static(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 9])).is_err(),
            "a refusal that is not one"
        );
        let mut long = encode(&Hello("x".into())).to_vec();
        long.push(0);
        assert!(decode::<Hello>(&long).is_err(), "trailing bytes");
    }
}
