use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::storage::memory::MemoryEngine;
use crate::storage::store::StoreOptions;
use crate::versioning::{Actor, Dot, VersionVector};

fn replica() -> LocalReplica {
    let tree = Arc::new(HashTree::new());
    let store =
        KvStore::open_observed(Arc::new(MemoryEngine::new()), StoreOptions::default(), Some(tree.clone())).unwrap();
    LocalReplica { store, tree, recovery: never_forgot() }
}

/// The recovery state of a node that never lost its disk (it never writes its file).
fn never_forgot() -> Arc<Recovery> {
    Arc::new(Recovery::open(tempfile::tempdir().unwrap().path(), false).unwrap())
}

async fn put(r: &LocalReplica, key: &str, actor: u64, counter: u64, value: &str) {
    r.store
        .update(key.as_bytes(), |s: &mut Siblings, _| {
            let ctx = s.context().clone();
            s.update(&ctx, Dot { actor: Actor(actor), counter }, 0, Some(Bytes::from(value.to_string())));
            Ok::<_, crate::storage::StorageError>(Decision::Write(()))
        })
        .await
        .unwrap();
}

/// Loads the same `n` keys into both replicas by merging one state into each.
async fn load_both(a: &LocalReplica, b: &LocalReplica, n: usize) -> u64 {
    let mut items = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = Siblings::new();
        s.update(
            &VersionVector::new(),
            Dot { actor: Actor(1), counter: i as u64 + 1 },
            0,
            Some(Bytes::from(vec![b'x'; 100])),
        );
        items.push((crate::storage::layout::storage_key(format!("key{i}").as_bytes()), s));
    }
    let bytes = items_bytes(&items);
    a.merge_items(items.clone()).await.unwrap();
    b.merge_items(items).await.unwrap();
    bytes
}

#[tokio::test]
async fn in_sync_replicas_exchange_only_leaves() {
    let (a, b) = (replica(), replica());
    load_both(&a, &b, 2000).await;
    for p in 0..256 {
        let o = exchange(&a, &b, p, 256).await.unwrap();
        assert_eq!(o.differing_leaves, 0);
        assert_eq!(o.keys_repaired, 0);
    }
}

#[tokio::test]
async fn one_differing_key_in_100k_costs_a_tiny_fraction_of_a_copy() {
    let (a, b) = (replica(), replica());
    let data = load_both(&a, &b, 100_000).await;
    put(&a, "key4242", 9, 1, "only on a").await;
    let mut total = Outcome::default();
    for p in 0..256 {
        let o = exchange(&a, &b, p, 256).await.unwrap();
        total.differing_leaves += o.differing_leaves;
        total.keys_repaired += o.keys_repaired;
        total.bytes += o.bytes;
    }
    let ratio = total.bytes as f64 / data as f64;
    println!(
        "100k keys ({data} bytes of states): one differing key repaired with {} bytes exchanged ({:.4}% of a full copy), {} differing leaf",
        total.bytes,
        ratio * 100.0,
        total.differing_leaves
    );
    assert_eq!(total.differing_leaves, 1);
    assert_eq!(total.keys_repaired, 1, "b took the key");
    assert!(ratio < 0.01, "exchange {} bytes vs data {data}", total.bytes);
    assert_eq!(b.store.get(b"key4242").unwrap(), a.store.get(b"key4242").unwrap());
    // Now in sync: a second pass changes nothing.
    for p in 0..256 {
        assert_eq!(exchange(&a, &b, p, 256).await.unwrap().differing_leaves, 0);
    }
}

#[tokio::test]
async fn concurrent_versions_merge_in_both_directions() {
    let (a, b) = (replica(), replica());
    put(&a, "k", 1, 1, "from a").await;
    put(&b, "k", 2, 1, "from b").await;
    put(&b, "only-b", 2, 2, "b").await;
    for p in 0..256 {
        exchange(&a, &b, p, 256).await.unwrap();
    }
    let sa = a.store.get(b"k").unwrap().unwrap();
    assert_eq!(sa.live_values().count(), 2, "both siblings kept");
    assert_eq!(Some(sa), b.store.get(b"k").unwrap());
    assert!(a.store.get(b"only-b").unwrap().is_some());
}

#[test]
fn tree_tracks_writes_incrementally_and_matches_a_rebuild() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let engine: Arc<dyn crate::storage::Engine> = Arc::new(MemoryEngine::new());
        let tree = Arc::new(HashTree::new());
        let store = KvStore::open_observed(engine.clone(), StoreOptions::default(), Some(tree.clone())).unwrap();
        let r = LocalReplica { store, tree: tree.clone(), recovery: never_forgot() };
        for i in 0..500u64 {
            put(&r, &format!("k{}", i % 200), 1, i + 1, &format!("v{i}")).await;
        }
        // A tree rebuilt from storage at start-up equals the incrementally kept one.
        let rebuilt = Arc::new(HashTree::new());
        KvStore::open_observed(engine, StoreOptions::default(), Some(rebuilt.clone())).unwrap();
        for p in 0..256 {
            assert_eq!(tree.partition_leaves(p, 256), rebuilt.partition_leaves(p, 256));
        }
        // Peer input out of range is refused, not a panic.
        assert!(tree.partition_leaves(300, 256).is_none() && tree.partition_leaves(0, 1 << 15).is_none());
    });
}

/// After a restart the store counts its keys and builds the tree in the background while writes go on (new keys,
/// changed keys, deleted keys, ahead of and behind the build): the result must equal a build of the final data.
#[test]
fn a_background_build_during_writes_matches_a_build_of_the_final_data() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    rt.block_on(async {
        for durability in [crate::config::Durability::Os, crate::config::Durability::Buffered] {
            let options = StoreOptions { durability, ..StoreOptions::default() };
            let engine: Arc<dyn crate::storage::Engine> = Arc::new(MemoryEngine::new());
            let first = KvStore::open_observed(engine.clone(), options.clone(), None).unwrap();
            let r = LocalReplica { store: first, tree: Arc::new(HashTree::new()), recovery: never_forgot() };
            for i in 0..20_000u64 {
                put(&r, &format!("k{i}"), 1, i + 1, "old").await;
            }
            r.store.flush_and_sync().unwrap();
            // "Restart": a new store over the same engine, built in the background while writers run.
            let tree = Arc::new(HashTree::new());
            let store = KvStore::open_unbuilt(engine.clone(), options.clone(), Some(tree.clone()));
            let r = LocalReplica { store: store.clone(), tree: tree.clone(), recovery: never_forgot() };
            let build = tokio::task::spawn_blocking(move || store.build());
            let (mut counter, mut during) = (100_000, 0);
            while !r.store.is_built() || counter < 100_500 {
                counter += 1;
                during += u32::from(!r.store.is_built());
                let i = counter % 25_000;
                put(&r, &format!("k{i}"), 2, counter, "new").await;
                if counter % 7 == 0 {
                    let key = crate::storage::layout::storage_key(format!("k{}", (counter * 13) % 20_000).as_bytes());
                    if let Some(s) = r.store.get(crate::storage::layout::user_key(&key).unwrap()).unwrap() {
                        r.store.remove_if_unchanged(&key, &s).unwrap();
                    }
                }
            }
            build.await.unwrap().unwrap();
            assert!(during > 0, "some writes ran while the build did");
            println!("{durability:?}: {during} writes during the build");
            r.store.flush_and_sync().unwrap();
            let rebuilt = Arc::new(HashTree::new());
            let reference = KvStore::open_observed(engine, options, Some(rebuilt.clone())).unwrap();
            assert_eq!(r.store.live_keys(), reference.live_keys(), "{durability:?}: live keys");
            for p in 0..256 {
                assert_eq!(tree.partition_leaves(p, 256), rebuilt.partition_leaves(p, 256), "{durability:?}: {p}");
            }
        }
    });
}

/// An expired value swept from one replica (active expiry) and still held by the other: the exchange that their
/// different leaves start never brings the value back. The swept state's context covers the value's dot, so both
/// replicas end with the swept state, and the next exchange finds nothing to repair.
#[tokio::test]
async fn an_exchange_between_a_swept_and_an_unswept_replica_never_brings_an_expired_value_back() {
    let (a, b) = (replica(), replica());
    let now = crate::versioning::clock::now_ms();
    let mut s = Siblings::new();
    s.update(&VersionVector::new(), Dot { actor: Actor(1), counter: 1 }, now - 5_000, Some(Bytes::from("gone")));
    let expiry = crate::versioning::Expiry { set_ms: now - 5_000, set_by: Actor(1), at_ms: Some(now - 1_000) };
    s.set_expiry(|_| true, expiry);
    let key = crate::storage::layout::storage_key(b"mortal");
    a.merge_items(vec![(key.clone(), s.clone())]).await.unwrap();
    b.merge_items(vec![(key.clone(), s)]).await.unwrap();
    assert_eq!(a.sweep_expired(vec![key.clone()], now).await.unwrap(), 1);
    let repaired: u64 = {
        let mut n = 0;
        for p in 0..256 {
            n += exchange(&a, &b, p, 256).await.unwrap().keys_repaired;
        }
        n
    };
    assert!(repaired >= 1, "the swept replica's leaf differed");
    for r in [&a, &b] {
        let state = r.store.get(b"mortal").unwrap().unwrap();
        assert_eq!(state.versions().len(), 0, "no replica holds the expired value");
        assert!(state.context().covers(Dot { actor: Actor(1), counter: 1 }), "its dot stays covered");
    }
    for p in 0..256 {
        assert_eq!(exchange(&a, &b, p, 256).await.unwrap().differing_leaves, 0);
    }
}
