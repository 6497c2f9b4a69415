//! One conformance suite for every [`Engine`], and the store behaviour on top of each.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::fjall_engine::FjallEngine;
use super::memory::MemoryEngine;
use super::store::{Decision, KvStore, StoreOptions, decode};
use super::{Engine, StorageError};
use crate::config::Durability;
use crate::versioning::{Actor, Dot, Siblings, VersionVector};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn check_engine(e: &dyn Engine) {
    assert_eq!(e.get(b"missing").unwrap(), None);
    e.apply(&[(b("a"), Some(b("1"))), (b("c"), Some(b("3"))), (b("b"), Some(b("2")))]).unwrap();
    assert_eq!(e.get(b"b").unwrap(), Some(b("2")));
    // Overwrite and delete in one batch.
    e.apply(&[(b("a"), Some(b("1'"))), (b("b"), None)]).unwrap();
    assert_eq!(e.get(b"a").unwrap(), Some(b("1'")));
    assert_eq!(e.get(b"b").unwrap(), None);
    // Deleting a missing key is not an error.
    e.apply(&[(b("zz"), None)]).unwrap();
    // Ordered scans with bounds and limits.
    e.apply(&[(b("d"), Some(b("4"))), (b("e"), Some(b("5")))]).unwrap();
    let keys = |r: Vec<(Bytes, Bytes)>| r.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(e.scan((Bound::Unbounded, Bound::Unbounded), 100).unwrap()), vec![b("a"), b("c"), b("d"), b("e")]);
    assert_eq!(keys(e.scan((Bound::Included(b"c"), Bound::Excluded(b"e")), 100).unwrap()), vec![b("c"), b("d")]);
    assert_eq!(keys(e.scan((Bound::Excluded(b"a"), Bound::Unbounded), 2).unwrap()), vec![b("c"), b("d")]);
    assert_eq!(keys(e.scan_rev((Bound::Unbounded, Bound::Excluded(b"e")), 2).unwrap()), vec![b("d"), b("c")]);
    assert_eq!(keys(e.scan_rev((Bound::Included(b"c"), Bound::Unbounded), 9).unwrap()), vec![b("e"), b("d"), b("c")]);
    // Binary keys and values, including empty ones.
    e.apply(&[(Bytes::from_static(&[0, 255, 0]), Some(Bytes::new()))]).unwrap();
    assert_eq!(e.get(&[0, 255, 0]).unwrap(), Some(Bytes::new()));
    e.sync().unwrap();
}

#[test]
fn memory_engine_conforms() {
    check_engine(&MemoryEngine::new());
}

#[test]
fn fjall_engine_conforms() {
    let dir = tempfile::tempdir().unwrap();
    check_engine(&FjallEngine::open(dir.path(), 8 << 20).unwrap());
}

#[test]
fn fjall_engine_recovers_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = FjallEngine::open(dir.path(), 8 << 20).unwrap();
        e.apply(&[(b("k"), Some(b("v")))]).unwrap();
    }
    let e = FjallEngine::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(e.get(b"k").unwrap(), Some(b("v")));
}

fn write(
    store: &KvStore,
    key: &str,
    value: Option<&str>,
    counter: u64,
) -> impl Future<Output = Result<(), StorageError>> {
    let value = value.map(b);
    async move {
        store
            .update(key.as_bytes(), |s: &mut Siblings, _| {
                let ctx = s.context().clone();
                s.update(&ctx, Dot { actor: Actor(1), counter }, counter, value);
                Ok::<_, StorageError>(Decision::Write(()))
            })
            .await
    }
}

async fn check_store(engine: Arc<dyn Engine>, durability: Durability, row_cache_bytes: u64) {
    let options = StoreOptions { durability, row_cache_bytes, ..Default::default() };
    let store = KvStore::open(engine.clone(), options.clone()).unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let bg = tokio::spawn(store.clone().run_background(cancel.clone()));

    assert!(store.get(b"k1").unwrap().is_none());
    write(&store, "k1", Some("a"), 1).await.unwrap();
    write(&store, "k2", Some("b"), 2).await.unwrap();
    assert_eq!(store.live_keys(), 2);
    let s = store.get(b"k1").unwrap().unwrap();
    assert_eq!(s.live_values().collect::<Vec<_>>(), vec![&b("a")]);
    // A tombstone keeps the key stored but not live.
    write(&store, "k1", None, 3).await.unwrap();
    assert_eq!(store.live_keys(), 1);
    assert!(!store.get(b"k1").unwrap().unwrap().has_live_value());
    // Keep leaves storage untouched.
    let kept = store.update(b"k3", |_, existed| Ok::<_, StorageError>(Decision::Keep(existed))).await.unwrap();
    assert!(!kept);
    assert!(store.get(b"k3").unwrap().is_none());
    // A failing closure writes nothing.
    let err = store
        .update(b"k2", |s: &mut Siblings, _| {
            s.update(&VersionVector::new(), Dot { actor: Actor(1), counter: 9 }, 9, None);
            Err::<Decision<()>, _>(StorageError::Corrupt { reason: "refused".into() })
        })
        .await;
    assert!(err.is_err());
    assert_eq!(store.get(b"k2").unwrap().unwrap().sibling_count(), 1);
    // Scans see buffered writes, in ring order, with user keys.
    let mut seen = Vec::new();
    store.for_each_raw((Bound::Unbounded, Bound::Unbounded), |k, _| seen.push(k.to_vec())).unwrap();
    seen.sort();
    assert_eq!(seen, vec![b"k1".to_vec(), b"k2".to_vec()]);

    // Concurrent updates of one key never lose each other (the key lock): 50 writers, each adding a version
    // concurrent with all others (empty context), with dots issued under the lock as real coordinators do.
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(100));
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let (store, counter) = (store.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            store
                .update(b"hot", move |s: &mut Siblings, _| {
                    let c = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    s.update(
                        &VersionVector::new(),
                        Dot { actor: Actor(2), counter: c },
                        i,
                        Some(Bytes::from(i.to_string())),
                    );
                    Ok::<_, StorageError>(Decision::Write(()))
                })
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.get(b"hot").unwrap().unwrap().sibling_count(), 50);

    cancel.cancel();
    bg.await.unwrap().unwrap();
    // Everything is in the engine after the final flush: reopen and count.
    let reopened = KvStore::open(engine, options).unwrap();
    assert_eq!(reopened.live_keys(), store.live_keys());
}

#[tokio::test]
async fn no_write_after_close() {
    let store = KvStore::open(Arc::new(MemoryEngine::new()), StoreOptions::default()).unwrap();
    write(&store, "k", Some("v"), 1).await.unwrap();
    store.close_writes();
    assert!(matches!(write(&store, "k", Some("w"), 2).await, Err(StorageError::Closed)));
    assert_eq!(store.get(b"k").unwrap().unwrap().live_values().collect::<Vec<_>>(), vec![&b("v")]);
}

/// An engine whose writes fail while `failing` is set: before applying anything, or after applying everything
/// when `applies_then_fails` is set (as fjall does when its journal write fails after the memtable took the change).
struct FlakyEngine {
    inner: MemoryEngine,
    failing: std::sync::atomic::AtomicBool,
    applies_then_fails: std::sync::atomic::AtomicBool,
}

impl Engine for FlakyEngine {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        self.inner.get(key)
    }
    fn apply(&self, changes: &[super::Change]) -> Result<(), StorageError> {
        if self.applies_then_fails.load(std::sync::atomic::Ordering::SeqCst) {
            self.inner.apply(changes)?;
            return Err(StorageError::Engine { message: "journal on fire".into() });
        }
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StorageError::Engine { message: "disk on fire".into() });
        }
        self.inner.apply(changes)
    }
    fn scan(&self, range: (Bound<&[u8]>, Bound<&[u8]>), limit: usize) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        self.inner.scan(range, limit)
    }
    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }
    fn disk_space(&self) -> u64 {
        0
    }
}

#[tokio::test]
async fn buffered_writes_survive_a_failed_flush() {
    let engine =
        Arc::new(FlakyEngine { inner: MemoryEngine::new(), failing: true.into(), applies_then_fails: false.into() });
    let options = StoreOptions { durability: Durability::Buffered, ..Default::default() };
    let store = KvStore::open(engine.clone(), options).unwrap();
    write(&store, "k", Some("v"), 1).await.unwrap();
    assert!(store.flush_and_sync().is_err(), "the engine refuses the batch");
    // The acknowledged write is still visible and still pending.
    assert_eq!(store.get(b"k").unwrap().unwrap().live_values().collect::<Vec<_>>(), vec![&b("v")]);
    engine.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    store.flush_and_sync().unwrap();
    assert!(engine.inner.get(&super::layout::storage_key(b"k")).unwrap().is_some(), "it reached the engine");
}

#[tokio::test]
async fn store_on_memory_in_every_mode() {
    for mode in [Durability::Fsync, Durability::Os, Durability::Buffered] {
        for cache in [0, 8 << 20] {
            check_store(Arc::new(MemoryEngine::new()), mode, cache).await;
        }
    }
}

#[tokio::test]
async fn store_on_fjall_in_every_mode() {
    for mode in [Durability::Fsync, Durability::Os, Durability::Buffered] {
        for cache in [0, 8 << 20] {
            let dir = tempfile::tempdir().unwrap();
            check_store(Arc::new(FjallEngine::open(dir.path(), 8 << 20).unwrap()), mode, cache).await;
        }
    }
}

/// The state of `user_key` as the engine holds it, bypassing the store and its cache.
fn in_engine(engine: &dyn Engine, user_key: &[u8]) -> Option<Siblings> {
    engine.get(&super::layout::storage_key(user_key)).unwrap().map(|raw| decode(&raw).unwrap())
}

/// The row cache answers what the engine holds after every kind of change: a write, a write the engine refused
/// (before or after taking it), a delete.
#[tokio::test]
async fn the_row_cache_follows_every_write_path() {
    use std::sync::atomic::Ordering::SeqCst;
    let flaky = || {
        Arc::new(FlakyEngine { inner: MemoryEngine::new(), failing: false.into(), applies_then_fails: false.into() })
    };
    // A failed write stops the store's writes (the write gate), so each kind of failure gets its own store.
    for applied in [false, true] {
        let engine = flaky();
        let store = KvStore::open(engine.clone(), StoreOptions::default()).unwrap();
        assert!(store.get(b"k").unwrap().is_none(), "absent, and now cached as absent");
        write(&store, "k", Some("v1"), 1).await.unwrap();
        assert_eq!(store.get(b"k").unwrap(), in_engine(engine.as_ref(), b"k"));
        let flag = if applied { &engine.applies_then_fails } else { &engine.failing };
        flag.store(true, SeqCst);
        assert!(write(&store, "k", Some("v2"), 2).await.is_err());
        flag.store(false, SeqCst);
        // Refused before the engine took it, the state stays v1; after, the store answers what the engine holds
        // (v2), not its last good state.
        let now = store.get(b"k").unwrap();
        let expected = if applied { b("v2") } else { b("v1") };
        assert_eq!(now.as_ref().unwrap().live_values().collect::<Vec<_>>(), vec![&expected], "applied: {applied}");
        assert_eq!(now, in_engine(engine.as_ref(), b"k"));
    }
    let engine = flaky();
    let store = KvStore::open(engine.clone(), StoreOptions::default()).unwrap();
    write(&store, "k", Some("v1"), 1).await.unwrap();
    assert!(store.get(b"k").unwrap().is_some());
    // A tombstone every replica holds is reaped: the key reads absent, and a new write reads back.
    write(&store, "k", None, 2).await.unwrap();
    let tombstone = store.get(b"k").unwrap().unwrap();
    let storage_key = super::layout::storage_key(b"k");
    assert!(store.remove_if_equal(&storage_key, &tombstone).unwrap());
    assert!(store.get(b"k").unwrap().is_none());
    assert!(in_engine(engine.as_ref(), b"k").is_none());
    write(&store, "k", Some("v3"), 3).await.unwrap();
    assert_eq!(store.get(b"k").unwrap(), in_engine(engine.as_ref(), b"k"));
}

/// `INFO`'s hit and miss counts are exact: a read that misses counts one miss, not one per lookup.
#[tokio::test]
async fn the_row_cache_counts_each_lookup_once() {
    let store = KvStore::open(Arc::new(MemoryEngine::new()), StoreOptions::default()).unwrap();
    assert!(store.get(b"k").unwrap().is_none());
    let stats = store.row_cache_stats().unwrap();
    assert_eq!((stats.hits, stats.misses), (0, 1), "a first read misses once");
    assert!(store.get(b"k").unwrap().is_none());
    write(&store, "k", Some("v"), 1).await.unwrap();
    assert!(store.get(b"k").unwrap().is_some());
    let stats = store.row_cache_stats().unwrap();
    assert_eq!((stats.hits, stats.misses), (3, 1), "then the read, the write's read and the last read hit");
}

/// Many tasks writing, reading and reaping a few keys through a cache too small to hold them all (so entries are
/// evicted and filled again all the time): every read sees a state the engine held, and at the end the cache, the
/// engine and the hash tree's leaves (kept from cached digests) agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_row_cache_stays_coherent_under_concurrent_writes() {
    use crate::antientropy::tree::HashTree;
    let engine = Arc::new(MemoryEngine::new());
    let tree = Arc::new(HashTree::new());
    let options = StoreOptions { row_cache_bytes: 2 << 10, ..Default::default() };
    let store = KvStore::open_observed(engine.clone(), options, Some(tree.clone())).unwrap();
    let dots = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (store, dots) = (store.clone(), dots.clone());
        tasks.push(tokio::spawn(async move {
            let mut seed = t * 7919 + 1;
            for _ in 0..300 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let key = format!("key{}", (seed >> 33) % 24);
                match (seed >> 20) % 4 {
                    0 | 1 => {
                        // A write that supersedes what it read, or a delete (tombstone).
                        let value = ((seed >> 10) % 3 != 0).then(|| Bytes::from(format!("{t}-{seed}")));
                        let dots = dots.clone();
                        store
                            .update(key.as_bytes(), move |s: &mut Siblings, _| {
                                let c = dots.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                                let ctx = s.context().clone();
                                s.update(&ctx, Dot { actor: Actor(t + 1), counter: c }, c, value);
                                Ok::<_, StorageError>(Decision::Write(()))
                            })
                            .await
                            .unwrap();
                    }
                    2 => {
                        let _ = store.get(key.as_bytes()).unwrap();
                    }
                    _ => {
                        // Reap the key if it is a tombstone just now.
                        if let Some(s) = store.get(key.as_bytes()).unwrap()
                            && !s.has_live_value()
                        {
                            store.remove_if_equal(&super::layout::storage_key(key.as_bytes()), &s).unwrap();
                        }
                    }
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let fresh = Arc::new(HashTree::new());
    for i in 0..24 {
        let key = format!("key{i}");
        assert_eq!(store.get(key.as_bytes()).unwrap(), in_engine(engine.as_ref(), key.as_bytes()), "{key}");
        let storage_key = super::layout::storage_key(key.as_bytes());
        if let Some(raw) = engine.get(&storage_key).unwrap() {
            use super::WriteObserver;
            fresh.on_change(&storage_key, None, Some(fresh.digest(&storage_key, &raw)));
        }
    }
    let q = crate::antientropy::tree::LEAVES;
    assert_eq!(tree.partition_leaves(0, 1), fresh.partition_leaves(0, 1), "{q} leaves");
}

/// Buffered mode's durable write (paper §6.1) reaches the engine before it returns and supersedes the key's buffered
/// copy, so a later flush cannot bring the older value back; an ordinary write waits in the buffer.
#[tokio::test]
async fn a_durable_write_bypasses_the_buffer_and_wins_over_it() {
    let engine = Arc::new(MemoryEngine::new());
    let options = StoreOptions {
        durability: Durability::Buffered,
        buffer_flush_interval: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let store = KvStore::open(engine.clone(), options).unwrap();
    let at = |k: &str| engine.get(&super::layout::storage_key(k.as_bytes())).unwrap();
    write(&store, "k", Some("buffered"), 1).await.unwrap();
    write(&store, "other", Some("buffered"), 2).await.unwrap();
    assert!(at("k").is_none() && at("other").is_none(), "ordinary writes wait in the buffer");
    store
        .update_durable(b"k", |s: &mut Siblings, _| {
            let ctx = s.context().clone();
            s.update(&ctx, Dot { actor: Actor(1), counter: 3 }, 3, Some(b("durable")));
            Ok::<_, StorageError>(Decision::Write(()))
        })
        .await
        .unwrap();
    // A crash now (the buffer lost) would keep the durable write.
    let on_engine = decode(&at("k").expect("the durable write reached the engine")).unwrap();
    assert_eq!(on_engine.live_values().collect::<Vec<_>>(), vec![&b("durable")]);
    store.flush_and_sync().unwrap();
    let after = store.get(b"k").unwrap().unwrap();
    assert_eq!(after.live_values().collect::<Vec<_>>(), vec![&b("durable")], "the flush kept the newer copy");
    assert!(at("other").is_some(), "the other key was flushed");
}

/// A value an older build stored (format 1: untyped string versions) reads as a string, and the start-up count
/// rewrites it in today's format, so replicas hash equal states equally.
#[test]
fn values_of_the_untyped_format_are_read_and_upgraded() {
    #[derive(serde::Serialize)]
    struct OldVersion {
        dot: Dot,
        timestamp_ms: u64,
        value: Option<Bytes>,
    }
    #[derive(serde::Serialize)]
    struct OldSiblings {
        context: VersionVector,
        versions: Vec<OldVersion>,
    }
    let dot = Dot { actor: Actor(7), counter: 1 };
    let mut context = VersionVector::new();
    context.advance(dot.actor, dot.counter, 5);
    let old = OldSiblings { context, versions: vec![OldVersion { dot, timestamp_ms: 5, value: Some(b("old")) }] };
    let mut raw = vec![1u8];
    raw.extend(postcard::to_stdvec(&old).unwrap());
    let engine = Arc::new(MemoryEngine::new());
    let key = crate::storage::layout::storage_key(b"k");
    engine.apply(&[(key.clone(), Some(Bytes::from(raw)))]).unwrap();
    let store = KvStore::open(engine.clone(), StoreOptions::default()).unwrap();
    let state = store.get(b"k").unwrap().unwrap();
    assert_eq!(state.live_values().collect::<Vec<_>>(), vec![&b("old")]);
    let stored = engine.get(&key).unwrap().unwrap();
    assert_eq!(stored, super::store::encode(&state), "rewritten in the current format");
    assert_eq!(store.live_keys(), 1);
}

/// A value stored before versions carried deadlines (format 2: typed versions) reads with no deadline, and the
/// start-up count rewrites it in today's format.
#[test]
fn values_of_the_format_without_deadlines_are_read_and_upgraded() {
    #[derive(serde::Serialize)]
    struct OldVersion {
        dot: Dot,
        timestamp_ms: u64,
        value: Option<crate::versioning::Value>,
    }
    #[derive(serde::Serialize)]
    struct OldSiblings {
        context: VersionVector,
        versions: Vec<OldVersion>,
    }
    let dot = Dot { actor: Actor(7), counter: 1 };
    let mut context = VersionVector::new();
    context.advance(dot.actor, dot.counter, 5);
    let value = Some(crate::versioning::Value::Counter(42));
    let old = OldSiblings { context, versions: vec![OldVersion { dot, timestamp_ms: 5, value: value.clone() }] };
    let mut raw = vec![2u8];
    raw.extend(postcard::to_stdvec(&old).unwrap());
    let engine = Arc::new(MemoryEngine::new());
    let key = crate::storage::layout::storage_key(b"k");
    engine.apply(&[(key.clone(), Some(Bytes::from(raw)))]).unwrap();
    let store = KvStore::open(engine.clone(), StoreOptions::default()).unwrap();
    let state = store.get(b"k").unwrap().unwrap();
    assert_eq!(state.versions()[0].value, value);
    assert_eq!(state.deadline(0), Some(None), "no deadline");
    let stored = engine.get(&key).unwrap().unwrap();
    assert_eq!(stored, super::store::encode(&state), "rewritten in the current format");
}
