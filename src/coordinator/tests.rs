use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::config::{Quorum, VersioningOptions};
use crate::membership::PeerInfo;
use crate::ring::Member;
use crate::rpc::handshake::ClusterKey;
use crate::rpc::{Identity, PeerPool};
use crate::storage::memory::MemoryEngine;
use crate::storage::store::StoreOptions;

/// A coordinator of a one-node cluster on the in-memory engine.
fn coordinator(options: VersioningOptions) -> (Arc<Coordinator>, tempfile::TempDir) {
    coordinator_named(options, "n1")
}

/// [`coordinator`] with node id `id` (its own actor).
fn coordinator_named(options: VersioningOptions, id: &str) -> (Arc<Coordinator>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = KvStore::open(Arc::new(MemoryEngine::new()), StoreOptions::default()).unwrap();
    let meta = Arc::new(NodeMeta::open(dir.path(), id).unwrap());
    let me = PeerInfo {
        member: Member { id: id.into(), weight: 1, zone: None },
        client_addr: "127.0.0.1:0".into(),
        peer_addr: "127.0.0.1:0".into(),
    };
    let pool = Arc::new(PeerPool::new(Identity::plain(id, ClusterKey::derive("t", None))));
    let cluster = Cluster::open(
        crate::cluster::ClusterParams {
            me,
            seeds: vec![],
            bootstrap_expect: None,
            partitions: 64,
            n: 3,
            auto_commit: true,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            data_dir: dir.path().to_path_buf(),
        },
        pool.clone(),
    )
    .unwrap();
    let context_key = crate::versioning::ContextKey::from_bytes([9; 32]);
    let c = Coordinator::new(CoordinatorParts {
        store,
        meta,
        options,
        cluster,
        pool,
        quorum: Quorum { n: 3, r: 2, w: 2 },
        timeout: Duration::from_secs(1),
        context_key,
        hints: Arc::new(crate::storage::hints::HintStore::open(Arc::new(MemoryEngine::new())).unwrap()),
        recovery: Arc::new(crate::storage::recovery::Recovery::open(dir.path(), false).unwrap()),
        tasks: tokio_util::task::TaskTracker::new(),
    });
    (c, dir)
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

fn sorted(r: &ReadResult) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = r.values.iter().map(|b| b.as_ref()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn shopping_cart() {
    let (c, _d) = coordinator(VersioningOptions::default());
    let cart = b("cart");
    let missing = c.get(&cart, None).await.unwrap();
    assert!(missing.values.is_empty() && missing.context.is_empty(), "a missing key reads with an empty context");
    // Two clients create the cart at once, each with the empty context it read: neither write hides the other.
    c.put(cart.clone(), Some(b("[]")), WriteContext::Covering(missing.context.clone()), None, None).await.unwrap();
    c.put(cart.clone(), Some(b("[cup]")), WriteContext::Covering(missing.context), None, None).await.unwrap();
    assert_eq!(sorted(&c.get(&cart, None).await.unwrap()), vec![b"[]".as_ref(), b"[cup]".as_ref()]);
    c.put(cart.clone(), Some(b("[]")), WriteContext::Blind, None, None).await.unwrap();
    let ctx = c.get(&cart, None).await.unwrap().context;
    c.put(cart.clone(), Some(b("[book]")), WriteContext::Covering(ctx.clone()), None, None).await.unwrap();
    c.put(cart.clone(), Some(b("[pen]")), WriteContext::Covering(ctx), None, None).await.unwrap();
    let read = c.get(&cart, None).await.unwrap();
    assert_eq!(sorted(&read), vec![b"[book]".as_ref(), b"[pen]".as_ref()]);
    assert_eq!(read.first_replier.as_deref(), Some("n1"));
    c.put(cart.clone(), Some(b("[book,pen]")), WriteContext::Covering(read.context), None, None).await.unwrap();
    assert_eq!(sorted(&c.get(&cart, None).await.unwrap()), vec![b"[book,pen]".as_ref()]);
}

#[tokio::test]
async fn hard_limit_refuses_without_writing() {
    let opts = VersioningOptions { sibling_soft_limit: 2, sibling_hard_limit: 3, ..Default::default() };
    let (c, _d) = coordinator(opts);
    let k = b("k");
    let empty = VersionVector::new();
    for v in ["v0", "v1", "v2"] {
        c.put(k.clone(), Some(Bytes::from(v)), WriteContext::Covering(empty.clone()), None, None).await.unwrap();
    }
    let err = c.put(k.clone(), Some(b("v3")), WriteContext::Covering(empty), None, None).await.unwrap_err();
    assert!(matches!(err, CoordError::TooManySiblings { count: 4, limit: 3 }));
    assert!(err.client_text().starts_with("SIBLINGS "));
    assert_eq!(c.get(&k, None).await.unwrap().values.len(), 3);
    c.put(k.clone(), Some(b("one")), WriteContext::Blind, None, None).await.unwrap();
    assert_eq!(c.get(&k, None).await.unwrap().values.len(), 1);
}

#[tokio::test]
async fn sibling_bytes_limit_refuses_without_writing() {
    let opts = VersioningOptions { max_siblings_bytes: 10, ..Default::default() };
    let (c, _d) = coordinator(opts);
    let (k, empty) = (b("k"), VersionVector::new());
    c.put(k.clone(), Some(b("123456")), WriteContext::Covering(empty.clone()), None, None).await.unwrap();
    let err = c.put(k.clone(), Some(b("78901")), WriteContext::Covering(empty), None, None).await.unwrap_err();
    assert!(matches!(err, CoordError::SiblingsTooLarge { bytes: 11, limit: 10 }));
    let ctx = c.get(&k, None).await.unwrap().context;
    c.put(k.clone(), Some(b("78901")), WriteContext::Covering(ctx), None, None).await.unwrap();
}

#[tokio::test]
async fn context_claiming_unissued_local_dots_is_refused() {
    let (c, _d) = coordinator(VersioningOptions::default());
    let k = b("k");
    c.put(k.clone(), Some(b("v")), WriteContext::Blind, None, None).await.unwrap();
    let mut ahead = VersionVector::new();
    ahead.advance(c.meta().actor(), c.meta().issued_counter() + 1000, 0);
    let err = c.put(k.clone(), Some(b("w")), WriteContext::Covering(ahead), None, None).await.unwrap_err();
    assert!(matches!(err, CoordError::ContextAhead));
    assert_eq!(sorted(&c.get(&k, None).await.unwrap()), vec![b"v".as_ref()]);
}

#[tokio::test]
async fn quorum_overrides_are_checked_and_unmeetable_quorums_refused() {
    let (c, _d) = coordinator(VersioningOptions::default());
    let k = b("k");
    let err = c.get(&k, Some(2)).await.unwrap_err();
    assert_eq!(err.client_text(), "ERR R must be between 1 and N (1), got 2");
    let err = c.put(k.clone(), Some(b("v")), WriteContext::Blind, Some(0), None).await.unwrap_err();
    assert!(matches!(err, CoordError::QuorumRange { which: QuorumOf::Writes, .. }));
    assert!(c.get(&k, None).await.unwrap().context.is_empty(), "nothing was written");
}

#[tokio::test]
async fn merge_local_applies_replica_states() {
    let (c, _d) = coordinator(VersioningOptions::default());
    let k = b("k");
    let mut remote = Siblings::new();
    remote.update(
        &VersionVector::new(),
        crate::versioning::Dot { actor: crate::versioning::Actor(42), counter: 1 },
        0,
        Some(b("from-peer")),
    );
    c.replica().merge(&k, &remote).await.unwrap();
    c.replica().merge(&k, &remote).await.unwrap();
    let local = c.read_local(&k).unwrap().unwrap();
    assert_eq!(local, remote, "merging twice is merging once");
}

/// A replica remembers where a list's live items begin and end (`KvStore::list_ends`), so its end reads skip the
/// rows earlier pops deleted; items pushed past those remembered ends, and into a list that emptied, are still
/// found, at the right end.
#[tokio::test]
async fn end_reads_find_items_pushed_past_the_remembered_ends() {
    let (c, _d) = coordinator(VersioningOptions::default());
    let key = b("queue");
    let push = |head: bool, v: &'static str| Op::ListPush { head, values: vec![b(v)] };
    let pop = |head: bool| Op::ListPop { head, count: 1 };
    for v in ["a", "b", "c", "d"] {
        c.apply(key.clone(), push(false, v), None).await.unwrap();
    }
    assert_eq!(c.apply(key.clone(), pop(true), None).await.unwrap(), OpReply::Members(vec![b("a")]));
    assert_eq!(c.apply(key.clone(), pop(false), None).await.unwrap(), OpReply::Members(vec![b("d")]));
    // Below the head and above the tail the end reads last found.
    c.apply(key.clone(), push(true, "x"), None).await.unwrap();
    c.apply(key.clone(), push(false, "y"), None).await.unwrap();
    for want in ["x", "b", "c", "y"] {
        assert_eq!(c.apply(key.clone(), pop(true), None).await.unwrap(), OpReply::Members(vec![b(want)]));
    }
    assert_eq!(c.apply(key.clone(), pop(false), None).await.unwrap(), OpReply::Members(vec![]));
    // Into the emptied list, from either end.
    c.apply(key.clone(), push(false, "z"), None).await.unwrap();
    c.apply(key.clone(), push(true, "w"), None).await.unwrap();
    assert_eq!(c.apply(key.clone(), pop(false), None).await.unwrap(), OpReply::Members(vec![b("z")]));
    assert_eq!(c.apply(key.clone(), pop(false), None).await.unwrap(), OpReply::Members(vec![b("w")]));
}

/// SPOP reads a sample, not the set: a sample holds the key row and the rows asked for, each pop takes a member
/// no earlier pop took until none is left, and the first pops come from across the whole order (the pick descends
/// it at random) rather than from one end.
#[tokio::test]
async fn set_pops_read_a_sample_and_take_members_from_across_the_set() {
    let (c, _d) = coordinator(VersioningOptions::default());
    let key = b("bag");
    let members: Vec<Bytes> = (0..1000).map(|i| Bytes::from(format!("m{i:03}"))).collect();
    c.apply(key.clone(), Op::SetAdd { members: members.clone() }, None).await.unwrap();
    let sample = c.store.sample_live_rows(&key, 42, 3).unwrap();
    assert_eq!(sample.len(), 4, "the key row and three members");
    // Each member of a sample is a pick of its own, not its neighbour in the order.
    let sample = c.store.sample_live_rows(&key, 42, 10).unwrap();
    let spread: std::collections::BTreeSet<u8> = sample.rows().iter().skip(1).map(|(row, _)| row[2]).collect();
    assert!(spread.len() >= 4, "a sample of ten from these hundreds only: {spread:?}");
    let (mut taken, mut hundreds) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for i in 0..1000u64 {
        let pop = Op::SetPop { count: 1, seed: i.wrapping_mul(0x9e37_79b9_7f4a_7c15) };
        let OpReply::Members(got) = c.apply(key.clone(), pop, None).await.unwrap() else { panic!("members") };
        assert_eq!(got.len(), 1, "pop {i} of a set with members left");
        assert!(taken.insert(got[0].clone()), "{:?} popped twice", got[0]);
        if i < 50 {
            hundreds.insert(got[0][1]);
        }
    }
    assert_eq!(taken.len(), members.len());
    assert!(hundreds.len() >= 8, "the first 50 pops took members of only these hundreds: {hundreds:?}");
    let pop = Op::SetPop { count: 3, seed: 7 };
    assert_eq!(c.apply(key.clone(), pop, None).await.unwrap(), OpReply::Members(vec![]));
    assert_eq!(c.store.all_live_rows(&key).unwrap().len(), 1, "the key row and no removed member");
    // A count takes that many different members.
    c.apply(key.clone(), Op::SetAdd { members: members[..20].to_vec() }, None).await.unwrap();
    let OpReply::Members(got) = c.apply(key.clone(), Op::SetPop { count: 15, seed: 9 }, None).await.unwrap() else {
        panic!("members")
    };
    assert_eq!(got.iter().collect::<std::collections::BTreeSet<_>>().len(), 15);
    assert_eq!(c.store.all_live_rows(&key).unwrap().len(), 6, "the key row and the five members left");
    // Members written below and above the live rows' bounds the pops remembered are found.
    let bag = b("bag2");
    c.apply(bag.clone(), Op::SetAdd { members: vec![b("m5")] }, None).await.unwrap();
    assert_eq!(c.store.sample_live_rows(&bag, 1, 5).unwrap().len(), 2);
    c.apply(bag.clone(), Op::SetAdd { members: vec![b("m1"), b("m9")] }, None).await.unwrap();
    let OpReply::Members(mut got) = c.apply(bag.clone(), Op::SetPop { count: 5, seed: 3 }, None).await.unwrap() else {
        panic!("members")
    };
    got.sort();
    assert_eq!(got, vec![b("m1"), b("m5"), b("m9")]);
}

/// A DEL coordinated by a node whose own copy has not received the collection its quorum read found still clears
/// the elements that read saw: when they arrive there, they stay removed, and the next SADD starts a new set.
#[tokio::test]
async fn a_delete_through_a_node_without_the_collection_clears_what_its_read_saw() {
    let (writer, _d1) = coordinator_named(VersioningOptions::default(), "n1");
    let (stale, _d2) = coordinator_named(VersioningOptions::default(), "n2");
    let key = b("s");
    writer.apply(key.clone(), Op::SetAdd { members: vec![b("a"), b("b")] }, None).await.unwrap();
    let rows = writer.read_rows(&key, RowSelect::All, None).await.unwrap();
    let context = rows.key_row().unwrap().context().clone();
    let delete = WriteContext::after_read(Some(crate::crdt::Kind::Set), context);
    stale.put(key.clone(), None, delete, None, None).await.unwrap();
    stale.replica().merge_rows(&key, &rows).await.unwrap();
    stale.apply(key.clone(), Op::SetAdd { members: vec![b("c")] }, None).await.unwrap();
    let after = stale.read_rows(&key, RowSelect::All, None).await.unwrap();
    assert_eq!(crate::crdt::rows::members(&after, now_ms()), vec![b("c")]);
}
