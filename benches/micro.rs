//! Micro-benchmarks of the hot paths under every client request: RESP framing, the versioning algebra, preference
//! lists, the quorum bookkeeping, the storage read-modify-write and the anti-entropy leaf update.
//!
//! Figures only, never a pass/fail: these machines are shared and noisy. Run with `cargo bench --bench micro`
//! (add `-- <filter>` for one group); `cargo test --bench micro` runs each benchmark once as a smoke test.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use tokio_util::codec::Decoder;

use dynamo_kv::antientropy::tree::HashTree;
use dynamo_kv::cluster::ClusterView;
use dynamo_kv::config::DEFAULT_MAX_VV_ENTRIES;
use dynamo_kv::coordinator::operation::{Candidate, ReadOperation, WriteOperation};
use dynamo_kv::membership::{MemberRecord, MemberStatus, PeerInfo};
use dynamo_kv::replication::replica::ReplicaRead;
use dynamo_kv::resp::{FrameLimits, Protocol, Reply, RequestCodec};
use dynamo_kv::ring::{DEFAULT_SPACING, Member, Ring};
use dynamo_kv::storage::fjall_engine::FjallEngine;
use dynamo_kv::storage::memory::MemoryEngine;
use dynamo_kv::storage::store::{Decision, StoreOptions, encode};
use dynamo_kv::storage::{Engine, KvStore, StorageError, WriteObserver, layout};
use dynamo_kv::versioning::context::{self, ContextKey, Token};
use dynamo_kv::versioning::{Actor, Dot, Entry, Siblings, VersionVector};

/// Value size of the SET and storage benchmarks: a typical small cached object.
const VALUE_BYTES: usize = 100;
/// Sibling counts: the usual single value, a few concurrent writers, a hot key under contention.
const SIBLING_COUNTS: [usize; 3] = [1, 3, 10];
/// Ring sizes: a small cluster and the default Q.
const PARTITIONS: [usize; 2] = [64, 256];
/// Physical nodes in the benchmarked ring.
const NODES: usize = 5;
/// Distinct keys cycled through, so lookups are not all served by one cache line.
const KEYS: usize = 10_000;
/// Block cache of the fjall engine in the storage benchmarks (the configured default is 64 MiB).
const CACHE_BYTES: u64 = 64 << 20;

fn key(i: usize) -> Vec<u8> {
    format!("user:{i:05}").into_bytes()
}

fn value() -> Bytes {
    Bytes::from(vec![b'x'; VALUE_BYTES])
}

/// `args` as a RESP multibulk request, as clients send it.
fn request(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Decoding one GET or SET request; every client command pays this before anything else runs.
fn resp_decode(c: &mut Criterion) {
    let limits = dynamo_kv::config::Limits::default();
    let mut codec = RequestCodec::new(FrameLimits {
        max_request_bytes: limits.max_request_bytes,
        max_array_len: limits.max_array_len,
        max_bulk_bytes: limits.max_value_bytes.max(limits.max_key_bytes),
    });
    let get = request(&[b"GET", b"user:00042"]);
    let set = request(&[b"SET", b"user:00042", &value()]);
    let mut group = c.benchmark_group("resp/decode");
    for (name, frame) in [("GET", &get), ("SET_100B", &set)] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(frame.as_slice()),
                |buf| black_box(codec.decode(buf).expect("valid frame").expect("complete frame")),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Encoding the replies to GET (one value and its context token) and SET; paid once per command on the way out.
fn resp_encode(c: &mut Criterion) {
    let mut clock = VersionVector::new();
    for a in 0..3 {
        clock.advance(Actor(a), 1_000 + a, 1_700_000_000_000);
    }
    let token = context::encode(
        &ContextKey::from_bytes([7; 32]),
        &dynamo_kv::ring::slot::key_digest(b"user:00042"),
        &Token { clock, coordinator: Some("node1".into()) },
    );
    let get = Reply::Array(vec![Reply::Array(vec![Reply::Bulk(value())]), Reply::bulk(token)]);
    let mut group = c.benchmark_group("resp/encode");
    let mut out = BytesMut::with_capacity(4096);
    for (name, reply, protocol) in [
        ("GET_reply_resp2", &get, Protocol::Resp2),
        ("GET_reply_resp3", &get, Protocol::Resp3),
        ("SET_reply_resp2", &Reply::ok(), Protocol::Resp2),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || reply.clone(),
                |r| {
                    // The connection's write buffer is reused across replies, so is this one.
                    out.clear();
                    r.encode(protocol, &mut out);
                    black_box(out.len())
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A key state with `n` concurrent siblings of 100 bytes: `n` clients overwrote the same read through `n`
/// coordinators.
fn siblings(n: usize) -> Siblings {
    let mut s = Siblings::new();
    s.update(&VersionVector::new(), Dot { actor: Actor(1_000), counter: 1 }, 1, Some(value()));
    let read = s.context().clone();
    for a in 0..n as u64 {
        s.update(&read, Dot { actor: Actor(a), counter: 10 + a }, 2 + a, Some(value()));
    }
    s
}

/// Merging another replica's state of a key (replication, read repair, anti-entropy, handoff all do it); the other
/// replica holds one newer write that superseded our first sibling.
fn dvv_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("dvv/merge");
    for n in SIBLING_COUNTS {
        let ours = siblings(n);
        let mut theirs = ours.clone();
        let first = ours.versions()[0].dot;
        let covered =
            VersionVector::from_entries([Entry { actor: first.actor, counter: first.counter, timestamp_ms: 0 }]);
        theirs.update(&covered, Dot { actor: Actor(2_000), counter: 1 }, 100, Some(value()));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || ours.clone(),
                |mut s| {
                    s.merge(black_box(&theirs));
                    s
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// A write whose context covers all `n` siblings (a client resolving them): the coordinator's update on every put.
fn dvv_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("dvv/update");
    for n in SIBLING_COUNTS {
        let state = siblings(n);
        let ctx = state.context().clone();
        let v = value();
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter_batched(
                || state.clone(),
                |mut s| {
                    s.update(black_box(&ctx), Dot { actor: Actor(2_000), counter: 1 }, 100, Some(v.clone()));
                    s
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

/// Version-vector dominance over 1, 3 and 10 actors (10 is the pruning bound): asked whenever contexts are compared.
fn vv_descends(c: &mut Criterion) {
    let mut group = c.benchmark_group("vv/descends");
    for n in [1, 3, DEFAULT_MAX_VV_ENTRIES] {
        let older = VersionVector::from_entries((0..n as u64).map(|a| Entry {
            actor: Actor(a * 7_919),
            counter: 100 + a,
            timestamp_ms: a,
        }));
        let mut newer = older.clone();
        newer.advance(Actor(0), 1_000, 1_000);
        // `newer` descends `older`: the answer is true, which walks every entry (the worst case).
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| black_box(&newer).descends(black_box(&older)))
        });
    }
    group.finish();
}

fn members() -> Vec<Member> {
    (1..=NODES).map(|i| Member { id: format!("node{i}"), weight: 1, zone: None }).collect()
}

/// A key's preference list on a ring of 64 and 256 partitions over 5 nodes: every get and put starts with it. `ring`
/// is the bare lookup, `view` adds the member records the coordinator resolves addresses from.
fn preflist(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    let records: BTreeMap<String, MemberRecord> = members()
        .into_iter()
        .enumerate()
        .map(|(i, member)| {
            let info = PeerInfo {
                client_addr: format!("10.0.0.{}:7001", i + 1),
                peer_addr: format!("10.0.0.{}:17001", i + 1),
                member,
            };
            (info.member.id.clone(), MemberRecord { info, status: MemberStatus::Valid, version: 1 })
        })
        .collect();
    let mut group = c.benchmark_group("preflist");
    for q in PARTITIONS {
        let ring = Ring::build(q, members(), None, DEFAULT_SPACING).expect("valid ring");
        let mut i = 0;
        group.bench_with_input(BenchmarkId::new("ring", q), &q, |b, _| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                black_box(ring.preference_list_for_key(black_box(&keys[i])).collect::<Vec<_>>())
            })
        });
        let view = ClusterView {
            ring: Some(ring),
            next: None,
            members: records.clone(),
            ring_version: 1,
            ring_author: String::new(),
            done: Default::default(),
            moved: Default::default(),
            cluster_id: 1,
        };
        group.bench_with_input(BenchmarkId::new("view", q), &q, |b, _| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                black_box(view.preference_list(black_box(&keys[i])))
            })
        });
    }
    group.finish();
}

/// The coordinator's bookkeeping of one quorum operation, without the I/O: planning whom to ask, taking the
/// replies, giving the answer and deciding whether anything is left to repair. `read/1` is one node (the local
/// replica answers alone), `read/3` three replicas that agree with R=2, `write/3` a write's plan and its
/// acknowledgements with W=2. A reply's state is made outside the timing, as the replica's decode makes it.
fn quorum(c: &mut Criterion) {
    const ME: Candidate = Candidate { local: true, usable: true };
    const UP: Candidate = Candidate { local: false, usable: true };
    let mut state = Siblings::new();
    state.update(&VersionVector::new(), Dot { actor: Actor(1), counter: 1 }, 1, Some(value()));
    let reply = |s: &Siblings| Ok(ReplicaRead { state: Some(s.clone()), vouches: true });
    let mut group = c.benchmark_group("quorum");
    group.bench_function("read/1", |b| {
        b.iter_batched(
            || reply(&state),
            |r| {
                let mut op = ReadOperation::<Siblings>::plan(black_box(&[ME]), 1, 1);
                let answer = op.on_reply(0, r);
                black_box((answer, op.settled()))
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("read/3", |b| {
        b.iter_batched(
            || [reply(&state), reply(&state), reply(&state)],
            |[a, b, c]| {
                let mut op = ReadOperation::<Siblings>::plan(black_box(&[ME, UP, UP]), 3, 2);
                op.on_reply(0, a);
                let answer = op.on_reply(1, b);
                op.on_reply(2, c);
                black_box((answer, op.settled()))
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("write/3", |b| {
        b.iter(|| {
            let mut op = WriteOperation::plan(black_box(&[ME, UP, UP]), 3, 2, 0).expect("enough replicas");
            op.on_local_write();
            let answer = op.on_ack(0, true);
            op.on_ack(1, true);
            black_box((answer, op.complete()))
        })
    });
    group.finish();
}

/// A blind put as the coordinator does it: one atomic read-modify-write of the key's sibling set.
async fn put(store: &KvStore, key: &[u8], dot: Dot, value: Bytes) -> Result<(), StorageError> {
    store
        .update(key, |s: &mut Siblings, _| {
            let ctx = s.context().clone();
            s.update(&ctx, dot, dot.counter, Some(value));
            Ok::<_, StorageError>(Decision::Write(()))
        })
        .await
}

/// Local put and get of a 100-byte value among 10 000 keys, in memory and on fjall in `os` durability (the
/// default: no fsync on the write path); the local half of every replicated write and read.
fn storage(c: &mut Criterion) {
    let keys: Vec<Vec<u8>> = (0..KEYS).map(key).collect();
    // One value shared by every write, as a decoded request's value is a slice of the read buffer.
    let v = value();
    let dir = tempfile::tempdir().expect("temp dir");
    let engines: [(&str, Arc<dyn Engine>); 2] = [
        ("memory", Arc::new(MemoryEngine::new())),
        ("fjall", Arc::new(FjallEngine::open(dir.path(), CACHE_BYTES).expect("open fjall"))),
    ];
    let mut group = c.benchmark_group("storage");
    for (name, engine) in engines {
        let store = KvStore::open(engine, StoreOptions::default()).expect("open store");
        // A fresh dot per write, as the node's sequence hands them out.
        let actor = Actor(1);
        let mut counter = 0u64;
        for k in &keys {
            counter += 1;
            futures::executor::block_on(put(&store, k, Dot { actor, counter }, v.clone())).expect("put");
        }
        let mut i = 0;
        group.bench_function(BenchmarkId::new("put", name), |b| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                counter += 1;
                // `os` durability never awaits inside `update`, so polling it on this thread measures the write
                // alone, not a runtime.
                futures::executor::block_on(put(&store, &keys[i], Dot { actor, counter }, v.clone())).expect("put")
            })
        });
        group.bench_function(BenchmarkId::new("get", name), |b| {
            b.iter(|| {
                i = (i + 1) % KEYS;
                black_box(store.get(black_box(&keys[i])).expect("get").expect("stored"))
            })
        });
    }
    group.finish();
}

/// XOR-ing one overwritten entry out of its Merkle leaf and the new one in: runs under the key lock on every write.
fn merkle_leaf_update(c: &mut Criterion) {
    let tree = HashTree::new();
    let entries: Vec<(Bytes, u128, Bytes)> = (0..KEYS)
        .map(|i| {
            let mut s = Siblings::new();
            s.update(&VersionVector::new(), Dot { actor: Actor(1), counter: i as u64 + 1 }, 1, Some(value()));
            let old = encode(&s);
            let ctx = s.context().clone();
            s.update(&ctx, Dot { actor: Actor(1), counter: (KEYS + i) as u64 + 1 }, 2, Some(value()));
            let storage_key = layout::storage_key(&key(i));
            let old_digest = tree.digest(&storage_key, &old);
            (storage_key, old_digest, encode(&s))
        })
        .collect();
    let mut i = 0;
    c.bench_function("merkle/leaf_update", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let (k, old, new) = &entries[i];
            // A write of a cached key: the old digest is remembered, the new value is hashed.
            let new_digest = tree.digest(black_box(k), black_box(new));
            tree.on_change(black_box(k), Some(black_box(*old)), Some(new_digest));
        })
    });
}

criterion_group!(
    benches,
    resp_decode,
    resp_encode,
    dvv_merge,
    dvv_update,
    vv_descends,
    preflist,
    quorum,
    storage,
    merkle_leaf_update
);
criterion_main!(benches);
