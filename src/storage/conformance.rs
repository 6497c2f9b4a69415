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

async fn check_store(engine: Arc<dyn Engine>, durability: Durability) {
    let options = StoreOptions { durability, ..Default::default() };
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

/// An engine whose writes fail while `failing` is set.
struct FlakyEngine {
    inner: MemoryEngine,
    failing: std::sync::atomic::AtomicBool,
}

impl Engine for FlakyEngine {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        self.inner.get(key)
    }
    fn apply(&self, changes: &[super::Change]) -> Result<(), StorageError> {
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
    let engine = Arc::new(FlakyEngine { inner: MemoryEngine::new(), failing: true.into() });
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
        check_store(Arc::new(MemoryEngine::new()), mode).await;
    }
}

#[tokio::test]
async fn store_on_fjall_in_every_mode() {
    for mode in [Durability::Fsync, Durability::Os, Durability::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        check_store(Arc::new(FjallEngine::open(dir.path(), 8 << 20).unwrap()), mode).await;
    }
}

/// Buffered mode's durable write (paper §6.1) reaches the engine before it returns and supersedes the key's buffered
/// copy, so a later flush cannot bring the older value back; an ordinary write waits in the buffer.
#[tokio::test]
async fn a_durable_write_bypasses_the_buffer_and_wins_over_it() {
    let engine = Arc::new(MemoryEngine::new());
    let options = StoreOptions {
        durability: Durability::Buffered,
        buffer_flush_interval: std::time::Duration::from_secs(3600),
        min_free_disk: 0,
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
