//! The checks behind the fuzz targets, shared by the cargo-fuzz binaries (`fuzz_targets/`) and by
//! `tests/fuzz_corpus.rs`, which replays the committed corpus under plain `cargo test`. So every input that once
//! crashed, once added to the corpus, stays a regression test in both.
//!
//! Each check takes arbitrary bytes and panics only on a bug: a panic in the code under test or a broken property.
#![allow(dead_code)] // each fuzz binary uses one check

use std::sync::{Arc, LazyLock};

use bytes::{Bytes, BytesMut};
use dynamo_kv::commands::NodeContext;
use dynamo_kv::config::{Config, ServeArgs};
use dynamo_kv::node::Node;
use dynamo_kv::resp::{FrameLimits, RequestCodec};
use dynamo_kv::ring::slot::key_digest;
use dynamo_kv::rpc::handshake::{Handshake, ServerHandshake};
use dynamo_kv::rpc::message::decode;
use dynamo_kv::rpc::{ClusterKey, Frame, Message};
use dynamo_kv::versioning::ContextKey;
use dynamo_kv::versioning::context;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

// ---- resp_request -------------------------------------------------------------------------------------------------

/// Small limits, so inputs of a few hundred bytes reach every limit check.
const LIMITS: FrameLimits = FrameLimits { max_request_bytes: 512, max_array_len: 8, max_bulk_bytes: 64 };

/// The requests decoded from `chunks` in order, and the error that stopped decoding, if any.
fn decode_requests<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Vec<Bytes>>, Option<String>) {
    let mut codec = RequestCodec::new(LIMITS);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(e) => return (requests, Some(e.to_string())),
            }
        }
    }
    (requests, None)
}

/// The RESP request decoder on arbitrary client bytes (after a first byte that picks a chunk size), fed whole and
/// again in chunks. No request it yields breaks the limits, and a stream cut into chunks (as TCP delivers it)
/// decodes to the same requests and the same error as the stream in one piece: the incremental scan that resumes
/// partial frames agrees with a one-shot decode.
pub fn resp_request(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else { return };
    let whole = decode_requests(std::iter::once(stream));
    for request in &whole.0 {
        assert!(!request.is_empty(), "empty requests are skipped, never yielded");
        assert!(request.len() <= LIMITS.max_array_len, "{} arguments", request.len());
        // Multibulk frames bound each bulk and the frame; inline lines bound the whole line. Both bound this.
        let bytes: usize = request.iter().map(Bytes::len).sum();
        assert!(bytes <= LIMITS.max_request_bytes, "{bytes} bytes of arguments");
    }
    let chunked = decode_requests(stream.chunks(usize::from(chunk % 16) + 1));
    assert_eq!(whole, chunked, "chunked delivery must decode as the whole stream does");
}

// ---- client_session -----------------------------------------------------------------------------------------------

/// Data directories of session nodes are named this plus the process id.
const DIR_PREFIX: &str = "dynamo-kv-fuzz-";

/// A single-node store that serves [`client_session`] inputs; one per process.
struct SessionNode {
    runtime: tokio::runtime::Runtime,
    node: Arc<NodeContext>,
}

static SESSION_NODE: LazyLock<SessionNode> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // Per process, so parallel fuzzing jobs (-jobs=N) do not share a locked data directory. libFuzzer exits without
    // running destructors, so each start removes the directories of processes that are gone.
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix(DIR_PREFIX)
            && !std::path::Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = tmp.join(format!("{DIR_PREFIX}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let args = ServeArgs {
        node_id: Some("fuzz".into()),
        listen: Some("127.0.0.1:0".into()),
        peer_listen: Some("127.0.0.1:0".into()),
        data_dir: Some(dir),
        ..Default::default()
    };
    let config = Config::resolve(&args).expect("fuzz node settings");
    let node = runtime.block_on(Node::start(config)).expect("fuzz node starts");
    let context = node.context();
    runtime.spawn(node.run(std::future::pending()));
    let fixture = SessionNode { runtime, node: context };
    // Wait until the node serves writes (it founds its one-node ring as it starts running).
    for _ in 0..500 {
        if fixture.session(b"SET fuzz:ready 1\r\n") == b"+OK\r\n" {
            return fixture;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the fuzz node never accepted a write");
});

impl SessionNode {
    /// Serves `input` as one client connection that sends it and closes; returns everything written back.
    fn session(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let serve = dynamo_kv::server::connection(input, &mut out, &self.node, 1, CancellationToken::new());
        let _ = self.runtime.block_on(serve);
        out
    }
}

/// Panics unless `out` is a sequence of complete RESP2 or RESP3 frames (HELLO 3 switches mid-stream).
fn assert_well_formed(out: &[u8]) {
    let mut at = 0;
    while at < out.len() {
        let rest = &out[at..];
        let len = match redis_protocol::resp2::decode::decode(rest) {
            Ok(Some((_, len))) => len,
            _ => match redis_protocol::resp3::decode::complete::decode(rest) {
                Ok(Some((_, len))) => len,
                other => panic!(
                    "malformed reply at byte {at}: {other:?} in {:?}",
                    String::from_utf8_lossy(&rest[..rest.len().min(200)])
                ),
            },
        };
        at += len;
    }
}

/// A whole client session on a real single-node store: the bytes go through the connection code a TCP client
/// reaches (RESP decoder, pipelining, AUTH/HELLO/CLIENT state, every command's argument parser, reads and writes
/// on fjall), and every byte written back must be a complete, well-formed RESP2 or RESP3 reply.
///
/// The node lives as long as the process (opening one per input would be thousands of times slower), so keys
/// written by earlier inputs are still there: a crash may need the inputs before it to reproduce.
pub fn client_session(data: &[u8]) {
    assert_well_formed(&SESSION_NODE.session(data));
}

// ---- peer_frame ---------------------------------------------------------------------------------------------------

/// What a peer sends, as the node decodes it: handshake frames before authentication (anyone who reaches the peer
/// port can send these; a 0xff byte separates the first frame from the second) driven through the server side of
/// the handshake, and frames after it, their bodies decoded as the message their tag names. What decodes must
/// re-encode to a frame that decodes to the same message.
pub fn peer_frame(data: &[u8]) {
    let key = ClusterKey::derive("fuzz", Some("secret"));
    let mut frames = data.splitn(2, |&b| b == 0xff);
    if let Ok(hello) = postcard::from_bytes::<Handshake>(frames.next().unwrap_or_default()) {
        let mut server = ServerHandshake::new("server", [3; 16]);
        if server.on_hello(&key, hello).is_ok()
            && let Some(Ok(proof)) = frames.next().map(postcard::from_bytes::<Handshake>)
        {
            // A proof made without the key is refused (guessing a 32-byte MAC is hopeless).
            assert!(server.on_proof(&key, proof).is_err(), "a proof without the key was accepted");
        }
    }
    match Frame::parse(Bytes::copy_from_slice(data)) {
        Ok(Frame::Request { id, tag, body }) => request_round_trips(id, tag, &body),
        Ok(Frame::Reply { id, body }) => {
            let again = Frame::parse(Frame::reply(id, body.clone())).ok();
            assert_eq!(again, Some(Frame::Reply { id, body }), "a reply frame round-trips");
        }
        Err(_) => {}
    }
}

/// Decodes a request body as the message `tag` names (every message of the protocol; node.rs dispatches the same
/// tags) and checks it re-encodes to a frame that decodes to the same message.
fn request_round_trips(id: u64, tag: u8, body: &[u8]) {
    use dynamo_kv::antientropy::{MergeStates, RangeStates, Reap, TreeLeaves};
    use dynamo_kv::cluster::{GossipPush, Ping};
    use dynamo_kv::commands::views::NodeLoad;
    use dynamo_kv::coordinator::{Coordinate, scan::ScanKeys};
    use dynamo_kv::replication::handoff::{DigestRange, HandoffPull};
    use dynamo_kv::replication::replica::{KeepHint, Read, ReadRows, ReadTally, Replicate};

    fn check<M: Message + std::fmt::Debug>(id: u64, body: &[u8]) {
        let Ok(message) = decode::<M>(body) else { return };
        let Ok(Frame::Request { id: again, tag, body }) = Frame::parse(Frame::request(id, &message)) else {
            panic!("an encoded request parses")
        };
        assert_eq!((again, tag), (id, M::TAG));
        let decoded: M = decode(&body).expect("an encoded message decodes");
        assert_eq!(format!("{message:?}"), format!("{decoded:?}"));
    }
    match tag {
        Ping::TAG => check::<Ping>(id, body),
        GossipPush::TAG => check::<GossipPush>(id, body),
        Read::TAG => check::<Read>(id, body),
        ReadRows::TAG => check::<ReadRows>(id, body),
        ReadTally::TAG => check::<ReadTally>(id, body),
        Replicate::TAG => check::<Replicate>(id, body),
        KeepHint::TAG => check::<KeepHint>(id, body),
        Coordinate::TAG => check::<Coordinate>(id, body),
        ScanKeys::TAG => check::<ScanKeys>(id, body),
        HandoffPull::TAG => check::<HandoffPull>(id, body),
        DigestRange::TAG => check::<DigestRange>(id, body),
        TreeLeaves::TAG => check::<TreeLeaves>(id, body),
        RangeStates::TAG => check::<RangeStates>(id, body),
        MergeStates::TAG => check::<MergeStates>(id, body),
        Reap::TAG => check::<Reap>(id, body),
        NodeLoad::TAG => check::<NodeLoad>(id, body),
        _ => {}
    }
}

// ---- context_token ------------------------------------------------------------------------------------------------

/// The context token decoder: text as a client presents it (almost always refused at the tag), and arbitrary
/// payloads behind a valid tag (sealed here with the key, which a client cannot do) so the payload parser sees
/// them. A token that decodes round-trips and binds its key and secret.
pub fn context_token(data: &[u8]) {
    let key = ContextKey::from_bytes([7; 32]);
    let k = key_digest(b"k");
    if let Ok(token) = context::decode(&key, &k, data) {
        assert_eq!(context::decode(&key, &k, context::encode(&key, &k, &token).as_bytes()).ok(), Some(token));
    }
    let sealed = context::seal(&key, &k, data.to_vec());
    if let Ok(token) = context::decode(&key, &k, sealed.as_bytes()) {
        let again = context::encode(&key, &k, &token);
        assert_eq!(context::decode(&key, &k, again.as_bytes()).ok(), Some(token), "a decoded token round-trips");
        assert!(context::decode(&key, &key_digest(b"other key"), sealed.as_bytes()).is_err(), "a token binds its key");
        let other = ContextKey::from_bytes([8; 32]);
        assert!(context::decode(&other, &k, sealed.as_bytes()).is_err(), "and its secret");
    }
}
