//! The key-value store of one node: sibling sets per key, read-modify-write under a key lock, and the durability
//! mode that decides when a write is acknowledged.
//!
//! | mode       | a write is acknowledged once…                           | lost by kill -9 | lost by power loss |
//! |------------|---------------------------------------------------------|-----------------|--------------------|
//! | `fsync`    | it is on disk; concurrent writers share one fsync        | nothing         | nothing            |
//! | `os`       | it reached the OS (one write(2) per group); fsynced 1/s  | nothing         | ≤ ~1 s of writes   |
//! | `buffered` | it is in the in-memory buffer; flushed every few ms      | ≤ one interval  | ≤ ~1 s + interval  |
//!
//! In `buffered` mode a cluster's coordinator writes its own copy through to the engine
//! ([`KvStore::update_durable`], the paper's "durable write"), so with N ≥ 2 every acknowledged write has one
//! replica that survives a kill -9; only the other replicas' copies wait in their buffers.

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Mutex as AsyncMutex;
use tokio_util::sync::CancellationToken;

use super::row_cache::{Row, RowCache};
use super::tallies::{self, Tallies, TallyEntry};
use super::write_buffer::{Buffered, WriteBuffer};
use super::write_gate::{SpaceAction, WriteGate, WriteStop};
use super::{Change, Engine, StorageError, layout};
use crate::config::Durability;
use crate::crdt::rows::{Rows, Tally, TallyChange, TallyReply};
use crate::crdt::zorder::{Order, ScoreOrder, ZQuery};
use crate::versioning::siblings::{Format2Siblings, Format3Siblings, LegacySiblings};
use crate::versioning::{RowKind, Siblings};

/// Rows a scan for live elements copies out of the engine at once, past its first page (which asks for just the
/// rows wanted: the rows at a collection's end are usually live).
const SCAN_PAGE: usize = 64;
/// Number of key-lock stripes: enough that unrelated keys rarely share one.
const LOCK_STRIPES: usize = 1024;
/// Lists whose length is kept ([`KvStore::list_len`]); past it the lengths are counted again when needed.
const MAX_LIST_LENS: usize = 100_000;
/// The most rows a sample picks each by its own descent ([`KvStore::sample_live_rows`]).
const MAX_SEPARATE_PICKS: usize = 64;
/// Format byte prefixed to every stored sibling set: 4 since key rows carry their cleared element writes (3:
/// versions with deadlines, 2: typed values).
const VALUE_FORMAT: u8 = 4;
/// The format of sibling sets without cleared element writes.
const FORMAT_3: u8 = 3;
/// The format of sibling sets whose every value was a string; still read, and rewritten at start
/// ([`KvStore::build`]), as is format 2.
const LEGACY_VALUE_FORMAT: u8 = 1;
/// The format of typed sibling sets without deadlines.
const FORMAT_2: u8 = 2;
/// How often `os` mode fsyncs (Redis's appendfsync everysec).
pub const OS_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// How often free disk space is measured: often enough that writes stop before a burst fills the margin.
const SPACE_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Buffered bytes that make a writer flush inline instead of waiting for the background writer.
const BUFFER_FLUSH_BYTES: usize = 64 << 20;

/// Tunables of the store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// When writes are acknowledged.
    pub durability: Durability,
    /// How often the `buffered` mode's writer persists the buffer.
    pub buffer_flush_interval: Duration,
    /// Free disk space below which writes stop ([`WriteGate`]; 0: only a failed write stops them).
    pub min_free_disk: u64,
    /// Byte budget of the cache of hot keys' stored rows ([`RowCache`]; 0: no cache).
    pub row_cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Os,
            buffer_flush_interval: Duration::from_millis(50),
            min_free_disk: 0,
            row_cache_bytes: 8 << 20,
        }
    }
}

/// What a read-modify-write closure decided.
pub enum Decision<T> {
    /// Store the (changed) sibling set and return the value.
    Write(T),
    /// Change nothing and return the value.
    Keep(T),
}

/// Sibling sets keyed by user key, on an [`Engine`].
pub struct KvStore {
    engine: Arc<dyn Engine>,
    options: StoreOptions,
    locks: Box<[std::sync::Mutex<()>]>,
    buffer: Option<WriteBuffer>,
    /// Writes applied so far, writes known to have reached the OS (`os` mode's group flush) and writes known to be on
    /// disk (fsync mode's group commit).
    applied_seq: AtomicU64,
    flushed_seq: AtomicU64,
    synced_seq: AsyncMutex<u64>,
    /// Keys holding at least one live value (DBSIZE).
    live_keys: AtomicI64,
    /// Set at shutdown: no update may start after the final flush.
    closed: AtomicBool,
    /// Told of every change (the anti-entropy hash tree).
    observer: Option<Arc<dyn super::WriteObserver>>,
    /// The start-up count (live keys, and every stored key replayed to the observer) is still running; see
    /// [`build`](Self::build).
    building: AtomicBool,
    /// Storage keys up to this one have been counted by the build (`None`: none yet).
    built_through: std::sync::Mutex<Option<Bytes>>,
    /// Whether writes are taken (a low disk or a failed write stops them).
    gate: WriteGate,
    /// Reopens of the engine after failed writes.
    reopens: AtomicU64,
    /// Stored rows of recently used keys, changed only under their key lock (see [`RowCache`]).
    cache: Option<RowCache>,
    /// The number of live items of lists whose length was asked ([`KvStore::list_len`]), kept under their key
    /// locks as items move in and out of the live range.
    list_lens: std::sync::Mutex<std::collections::HashMap<Bytes, u64>>,
    /// Where the live items' home of recently read lists begins and ends ([`ListEnds`]), kept under their key
    /// locks: an end read starts there instead of walking the deletes that earlier pops left in the engine.
    list_ends: std::sync::Mutex<std::collections::HashMap<Bytes, ListEnds>>,
    /// Where the element rows that hold a live value begin and end, for recently sampled collections
    /// ([`ListEnds`] over element rows): a pop or a probe for a live element starts there, and an emptied
    /// collection reads none, instead of walking removed rows (and every version of a hot row that the engine
    /// still holds). An element row can be written under its own lock stripe rather than its key's (a single
    /// row's merge), so bounds learned by a scan are kept only when no such write was counted in the key's
    /// [`live_writes`](Self::live_writes) stripe meanwhile.
    live_ends: std::sync::Mutex<std::collections::HashMap<Bytes, ListEnds>>,
    /// Writes of element rows with a live value, by the lock stripe of their key row (bumped under the
    /// `live_ends` lock, after the engine took the write).
    live_writes: Box<[AtomicU64]>,
    /// The tallies of collections whose count was asked ([`KvStore::tally`]), with the cleared element writes of
    /// the key row they were counted under, kept under their key locks as rows are written and deleted. A key row
    /// write that changes what it cleared drops its key's tally (every element's liveness may change): the next
    /// count counts again.
    tallies: std::sync::Mutex<Tallies>,
}

/// Bounds of a list's live items' home, as storage keys: no row of that home lies below `low` or above `high`.
/// Pops delete rows from the home's ends, and an ordered engine (an LSM tree) walks those deletes on every scan
/// until compaction drops them: a queue's end read would cost as much as every pop before it. Items only enter at
/// ends the bounds then widen to, and leaving rows keep the bounds true, so they stay valid until dropped. The same
/// bounds over a collection's element rows that hold a live value ([`KvStore::live_ends`]) widen to each row
/// written with one.
///
/// A list's bounds also keep the rows an end read met next from each end (`next_up` from `low` upwards,
/// `next_down` from `high` downwards), so that a queue's pops read their next item by point reads rather than by
/// a scan each: the first of them still present is the end's first row once every row before it is gone, since
/// nothing entered between them meanwhile (an item entering at or before the last of them drops them).
#[derive(Clone, Debug, Default)]
struct ListEnds {
    low: Bytes,
    high: Bytes,
    next_up: Vec<Bytes>,
    next_down: Vec<Bytes>,
}

/// A row's stored state and its digest (`None`: absent).
type StoredRow = Option<(Siblings, u128)>;

/// How many rows past an end's first one a list's end read remembers ([`ListEnds`]): a run of pops reads the
/// engine's range once per this many.
const LIST_LOOKAHEAD: usize = 16;

impl KvStore {
    /// Opens the store on `engine`, counting the live keys already stored (a full scan: start-up time grows with
    /// the data).
    pub fn open(engine: Arc<dyn Engine>, options: StoreOptions) -> Result<Arc<Self>, StorageError> {
        Self::open_observed(engine, options, None)
    }

    /// As [`open`](Self::open), telling `observer` of every stored key during the start-up scan and of every change
    /// afterwards.
    pub fn open_observed(
        engine: Arc<dyn Engine>,
        options: StoreOptions,
        observer: Option<Arc<dyn super::WriteObserver>>,
    ) -> Result<Arc<Self>, StorageError> {
        let store = Self::open_unbuilt(engine, options, observer);
        store.build()?;
        Ok(store)
    }

    /// As [`open_observed`](Self::open_observed) without the start-up scan: the store serves at once, and
    /// [`build`](Self::build) (run it in the background) counts the live keys and replays the stored keys to the
    /// observer while reads and writes go on. Start-up time then does not grow with the data.
    pub fn open_unbuilt(
        engine: Arc<dyn Engine>,
        options: StoreOptions,
        observer: Option<Arc<dyn super::WriteObserver>>,
    ) -> Arc<Self> {
        let buffer = (options.durability == Durability::Buffered).then(WriteBuffer::default);
        let gate = WriteGate::new(options.min_free_disk);
        Arc::new(KvStore {
            cache: RowCache::new(options.row_cache_bytes),
            gate,
            reopens: AtomicU64::new(0),
            engine,
            options,
            locks: (0..LOCK_STRIPES).map(|_| std::sync::Mutex::new(())).collect(),
            buffer,
            applied_seq: AtomicU64::new(0),
            flushed_seq: AtomicU64::new(0),
            synced_seq: AsyncMutex::new(0),
            live_keys: AtomicI64::new(0),
            closed: AtomicBool::new(false),
            observer,
            building: AtomicBool::new(true),
            built_through: std::sync::Mutex::new(None),
            list_lens: std::sync::Mutex::new(std::collections::HashMap::new()),
            list_ends: std::sync::Mutex::new(std::collections::HashMap::new()),
            live_ends: std::sync::Mutex::new(std::collections::HashMap::new()),
            live_writes: (0..LOCK_STRIPES).map(|_| AtomicU64::new(0)).collect(),
            tallies: std::sync::Mutex::new(Tallies::default()),
        })
    }

    /// Counts the live keys and replays every stored key to the observer, page by page in storage order, while
    /// writes go on. Each page is read with every key lock held (a few ms), and a write counts its change itself
    /// only for keys the build has passed: a key ahead of it is counted once, in its state when the build reads it.
    pub fn build(&self) -> Result<(), StorageError> {
        const PAGE: usize = 4096;
        let started = std::time::Instant::now();
        loop {
            let _all: Vec<_> = self.locks.iter().map(|l| l.lock().expect("key lock")).collect();
            // A buffered write ahead of the build must be in the engine before the build reads past it.
            if let Some(buffer) = &self.buffer {
                buffer.flush(self.engine.as_ref())?;
            }
            let after = self.built_through.lock().expect("build cursor").clone();
            let lower = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let mut page = self.engine.scan((lower, Bound::Unbounded), PAGE)?;
            let mut live = 0i64;
            // A value an older build wrote is rewritten in today's format (under every key lock, so no write
            // races it), so that replicas holding equal states hash them equally.
            let mut upgraded: Vec<super::Change> = Vec::new();
            for (k, v) in page.iter_mut() {
                let state = decode(v)?;
                live += i64::from(state.has_live_value() && layout::is_key_row(k));
                if v.first() != Some(&VALUE_FORMAT) {
                    *v = encode(&state);
                    upgraded.push((k.clone(), Some(v.clone())));
                }
            }
            if !upgraded.is_empty() {
                if let Some(cache) = &self.cache {
                    // The entries keep the stored bytes the hash tree hashed: those just changed.
                    upgraded.iter().for_each(|(k, _)| cache.forget(k));
                }
                // So did the digests tallies were counted from.
                self.tallies.lock().expect("tallies lock").clear();
                self.engine.apply(&upgraded)?;
                metrics::counter!("dynamo_storage_values_upgraded_total").increment(upgraded.len() as u64);
            }
            for (k, v) in &page {
                if let Some(o) = &self.observer {
                    o.on_change(k, None, Some(o.digest(k, v)));
                }
            }
            self.live_keys.fetch_add(live, Ordering::Relaxed);
            match page.last() {
                Some((k, _)) if page.len() == PAGE => {
                    *self.built_through.lock().expect("build cursor") = Some(k.clone())
                }
                _ => {
                    self.building.store(false, Ordering::Release);
                    tracing::debug!(keys = self.live_keys(), took = ?started.elapsed(), "storage counted");
                    return Ok(());
                }
            }
        }
    }

    /// Runs [`build`](Self::build) on a blocking thread until it succeeds: it resumes from its cursor, so a failure
    /// (I/O, a full disk) is retried where it stopped.
    pub fn spawn_build(self: &Arc<Self>) {
        let store = self.clone();
        crate::sys::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let mut wait = Duration::from_millis(100);
            loop {
                match store.build() {
                    Ok(()) => {
                        let took_ms = started.elapsed().as_millis() as u64;
                        tracing::info!(keys = store.live_keys(), took_ms, "storage counted; hash trees ready");
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?wait, "counting storage failed; anti-entropy waits");
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            }
        });
    }

    /// Forgets the count and the observer's view, to build them again from what the engine holds (after a reopen,
    /// which may have recovered a write that was reported failed). Run [`spawn_build`](Self::spawn_build) next.
    fn reset_build(&self) {
        let _all: Vec<_> = self.locks.iter().map(|l| l.lock().expect("key lock")).collect();
        self.building.store(true, Ordering::Release);
        *self.built_through.lock().expect("build cursor") = None;
        self.live_keys.store(0, Ordering::Relaxed);
        if let Some(o) = &self.observer {
            o.reset();
        }
        // What was kept of collections was kept from writes the engine may not hold, or hold after all.
        self.list_lens.lock().expect("list lengths lock").clear();
        self.list_ends.lock().expect("list ends lock").clear();
        self.live_ends.lock().expect("live ends lock").clear();
        self.tallies.lock().expect("tallies lock").clear();
    }

    /// Why writes are stopped, if they are (a disk below its floor, or a failed write).
    pub fn write_stop(&self) -> Option<WriteStop> {
        self.gate.stop()
    }

    /// How many times the engine was reopened after a failed write (the node then re-proves its ranges).
    pub fn reopens(&self) -> u64 {
        self.reopens.load(Ordering::Acquire)
    }

    /// `Ok` when writes are taken, else why not (for writes outside the store on the same disk, such as hints).
    pub fn check_writes(&self) -> Result<(), StorageError> {
        self.gate.check()
    }

    /// The free-space floor below which writes stop, bytes.
    pub fn min_free_disk(&self) -> u64 {
        self.gate.min_free()
    }

    /// Bytes free on the disk under the engine (`None`: in memory).
    pub fn free_space(&self) -> Option<u64> {
        self.engine.free_space()
    }

    /// Measures free space and acts on it: stops or resumes writes, and reopens the engine after a failed write
    /// once there is room (then builds the count and the hash trees again). Called every 250 ms by
    /// [`run_background`](Self::run_background); blocking.
    pub fn check_space(self: &Arc<Self>) {
        let Some(free) = self.engine.free_space() else { return };
        metrics::gauge!("dynamo_storage_free_bytes").set(free as f64);
        if self.gate.on_free_space(free, std::time::Instant::now()) == SpaceAction::Reopen {
            // Writes are refused at the gate until `reopened` below, so none reaches the engine meanwhile; a
            // buffered write waits in the buffer for the new engine.
            let result = self.engine.reopen().and_then(|()| match &self.buffer {
                Some(buffer) => buffer.flush(self.engine.as_ref()).map(|_| ()),
                None => Ok(()),
            });
            if let Some(cache) = &self.cache {
                // Before writes resume: the engine's state is what its journal kept, which the cache must not
                // second-guess.
                cache.clear();
            }
            // Nor may the tallies counted from what the cache and the engine held before.
            self.tallies.lock().expect("tallies lock").clear();
            self.gate.reopened(&result, std::time::Instant::now());
            if result.is_ok() {
                self.reopens.fetch_add(1, Ordering::AcqRel);
                self.reset_build();
                self.spawn_build();
            }
        }
        let stopped = self.gate.stop();
        metrics::gauge!("dynamo_storage_writes_stopped").set(if stopped.is_some() { 1.0 } else { 0.0 });
    }

    /// Whether the start-up count is done: until then [`live_keys`](Self::live_keys) is partial and the
    /// observer has not seen every key.
    pub fn is_built(&self) -> bool {
        !self.building.load(Ordering::Acquire)
    }

    /// Whether a change of `key` is counted by its writer now (call it under the key's lock): always, except during
    /// the build for keys it has not reached yet.
    fn counted_by_writer(&self, key: &[u8]) -> bool {
        !self.building.load(Ordering::Acquire)
            || self.built_through.lock().expect("build cursor").as_deref().is_some_and(|c| key <= c)
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    /// The durability mode.
    pub fn durability(&self) -> Durability {
        self.options.durability
    }

    /// Keys with at least one live value on this node.
    pub fn live_keys(&self) -> u64 {
        self.live_keys.load(Ordering::Relaxed).max(0) as u64
    }

    /// Bytes on disk.
    pub fn disk_space(&self) -> u64 {
        self.engine.disk_space()
    }

    /// The row cache's figures (`None`: no cache).
    pub fn row_cache_stats(&self) -> Option<super::row_cache::RowCacheStats> {
        self.cache.as_ref().map(RowCache::stats)
    }

    /// Sorted tables of the engine (flushes add them, compactions merge them).
    pub fn table_count(&self) -> u64 {
        self.engine.table_count()
    }

    /// The sibling set of `user_key`, or `None` when this node never stored the key.
    pub fn get(&self, user_key: &[u8]) -> Result<Option<Siblings>, StorageError> {
        let key = layout::storage_key(user_key);
        let Some(cache) = &self.cache else {
            return self.get_raw(&key)?.map(|raw| decode(&raw)).transpose();
        };
        if let Some(row) = cache.get_if_cached(&key) {
            return match row {
                Row::Absent => Ok(None),
                Row::Present { raw, .. } => decode(&raw).map(Some),
            };
        }
        // A miss fills under the key lock (and counts there, once): no write can land between this engine read and the fill.
        let _guard = self.locks[stripe(&key)].lock().expect("key lock");
        Ok(self.current_row(&key)?.map(|(state, _)| state))
    }

    /// The state of `key` and the observer's digest of its stored bytes: from the cache when there is one (a miss
    /// fills it). Call with the key's stripe lock held.
    fn current_row(&self, key: &Bytes) -> Result<Option<(Siblings, u128)>, StorageError> {
        let Some(cache) = &self.cache else {
            return match self.get_raw(key)? {
                Some(raw) => Ok(Some((decode(&raw)?, self.digest(key, &raw)))),
                None => Ok(None),
            };
        };
        match cache.get(key) {
            Some(Row::Absent) => Ok(None),
            Some(Row::Present { raw, digest }) => Ok(Some((decode(&raw)?, digest))),
            None => match self.get_raw(key)? {
                None => {
                    cache.put_absent(key.clone());
                    Ok(None)
                }
                Some(raw) => {
                    let (state, digest) = (decode(&raw)?, self.digest(key, &raw));
                    // The engine's bytes may share a larger buffer (a table block): the cache keeps its own copy.
                    cache.put(key.clone(), Bytes::copy_from_slice(&raw), digest);
                    Ok(Some((state, digest)))
                }
            },
        }
    }

    /// The observer's digest of a stored entry (0 without an observer).
    fn digest(&self, key: &[u8], raw: &[u8]) -> u128 {
        self.observer.as_ref().map_or(0, |o| o.digest(key, raw))
    }

    /// Atomically reads, changes and writes the sibling set of `user_key`: no other update of the key runs in
    /// between, and no reader sees half of it. `f` gets the current set (empty when absent) and whether it existed.
    /// Returns once the write is as durable as the mode promises.
    pub async fn update<T, E>(
        &self,
        user_key: &[u8],
        f: impl FnOnce(&mut Siblings, bool) -> Result<Decision<T>, E>,
    ) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        self.update_with(user_key, f, false).await
    }

    /// As [`update`](Self::update), but in `buffered` mode the write bypasses the buffer and reaches the engine
    /// before it returns (it survives a kill -9 of this node): the one durable write per request of paper §6.1.
    /// In the other modes it is the same as `update`.
    pub async fn update_durable<T, E>(
        &self,
        user_key: &[u8],
        f: impl FnOnce(&mut Siblings, bool) -> Result<Decision<T>, E>,
    ) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        self.update_with(user_key, f, true).await
    }

    async fn update_with<T, E>(
        &self,
        user_key: &[u8],
        f: impl FnOnce(&mut Siblings, bool) -> Result<Decision<T>, E>,
        durable: bool,
    ) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        self.update_storage_key(layout::storage_key(user_key), f, durable).await
    }

    /// [`update`](Self::update) of one row by its storage key (any row of any key: anti-entropy, handoff and hint
    /// delivery move rows as they are stored).
    pub async fn update_row<T, E>(
        &self,
        storage_key: Bytes,
        f: impl FnOnce(&mut Siblings, bool) -> Result<Decision<T>, E>,
    ) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        self.update_storage_key(storage_key, f, false).await
    }

    async fn update_storage_key<T, E>(
        &self,
        key: Bytes,
        f: impl FnOnce(&mut Siblings, bool) -> Result<Decision<T>, E>,
        durable: bool,
    ) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        if let Some((user_key, row)) = layout::parse(&key)
            && let Some((live, _)) = crate::crdt::rows::item_homes(row)
        {
            // A list item's row, in either home: one logical row (see `update_rows`).
            let user_key = Bytes::copy_from_slice(user_key);
            return self
                .update_rows(&user_key, std::slice::from_ref(&live), durable, |rows: &mut Rows| {
                    let existed = rows.get(&live).is_some();
                    f(rows.entry(&live), existed)
                })
                .await;
        }
        let (out, seq) = {
            let _guard = self.locks[stripe(&key)].lock().expect("key lock");
            if self.closed.load(Ordering::Acquire) {
                return Err(StorageError::Closed.into());
            }
            let (existing, old_digest) = self.current_row(&key)?.unzip();
            let existed = existing.is_some();
            let mut siblings = existing.unwrap_or_default();
            let was_live = siblings.has_live_value();
            let cleared_before = siblings.cleared().clone();
            let out = match f(&mut siblings, existed)? {
                Decision::Keep(out) => return Ok(out),
                Decision::Write(out) => out,
            };
            let write = RowWrite { key: key.clone(), old_digest, was_live, state: Some(&siblings) };
            let mut seq = self.write_rows(vec![write], durable)?;
            if *siblings.cleared() != cleared_before
                && let Some(user_key) = layout::user_key(&key).filter(|_| layout::is_key_row(&key))
            {
                seq = self.sweep_cleared_items(user_key, &siblings, durable)?.unwrap_or(seq);
            }
            (out, seq)
        };
        self.wait_durable(seq).await?;
        Ok(out)
    }

    /// Atomically reads, changes and writes rows of `user_key`: its key row (the empty row) and `rows`, under the
    /// key's lock (every row of a key shares it), in one write batch. `f` gets the rows that exist; the rows it
    /// leaves changed are written. As [`update_durable`](Self::update_durable) when `durable`.
    ///
    /// A list item's row has two homes (`crdt::rows::item_homes`): `f` sees it under its live home's name, merged
    /// from both, and it is written to the live home while it holds the item, to the removed home once it does
    /// not (the other home deleted). A key row whose cleared vector grew moves the list items it cleared out of
    /// the live range.
    pub async fn update_rows<T, E>(
        &self,
        user_key: &[u8],
        rows: &[Bytes],
        durable: bool,
        f: impl FnOnce(&mut Rows) -> Result<Decision<T>, E>,
    ) -> Result<T, E>
    where
        E: From<StorageError>,
    {
        let key_row = layout::storage_key(user_key);
        let (out, seq) = {
            let _guard = self.locks[stripe(&key_row)].lock().expect("key lock");
            if self.closed.load(Ordering::Acquire) {
                return Err(StorageError::Closed.into());
            }
            let mut homes: Vec<(Bytes, Home)> = Vec::with_capacity(rows.len() + 1);
            let mut current = Rows::new();
            for row in std::iter::once(&Bytes::new()).chain(rows.iter().filter(|r| !r.is_empty())) {
                let (row, home, state) = self.read_logical(user_key, row)?;
                if let Some(state) = state {
                    current.merge_row_owned(row.clone(), state);
                }
                homes.push((row, home));
            }
            let previous = current.clone();
            let out = match f(&mut current)? {
                Decision::Keep(out) => return Ok(out),
                Decision::Write(out) => out,
            };
            let mut writes = Vec::new();
            for (row, state) in current.rows() {
                let old = previous.get(row);
                if old == Some(state) || (old.is_none() && state.versions().is_empty() && state.context().is_empty()) {
                    continue;
                }
                let home = match homes.iter().find(|(r, _)| r == row) {
                    Some((_, home)) => home.clone(),
                    None => Home::of(user_key, row),
                };
                home.writes(state, old.is_some_and(Siblings::has_live_value), &mut writes);
            }
            if writes.is_empty() {
                return Ok(out);
            }
            let mut seq = self.write_rows(writes, durable)?;
            if let (Some(before), Some(after)) = (previous.key_row(), current.key_row())
                && before.cleared() != after.cleared()
            {
                seq = self.sweep_cleared_items(user_key, after, durable)?.unwrap_or(seq);
            } else if let (None, Some(after)) = (previous.key_row(), current.key_row())
                && !after.cleared().is_empty()
            {
                seq = self.sweep_cleared_items(user_key, after, durable)?.unwrap_or(seq);
            }
            (out, seq)
        };
        self.wait_durable(seq).await?;
        Ok(out)
    }

    /// A logical row of `user_key` as stored (call under the key's lock): its name (a list item's under its live
    /// home), where it lives, and its state merged from its homes (`None`: absent).
    fn read_logical(&self, user_key: &[u8], row: &Bytes) -> Result<(Bytes, Home, Option<Siblings>), StorageError> {
        let home = Home::of(user_key, row);
        let mut state: Option<Siblings> = None;
        let mut digests = [None, None];
        for (i, key) in home.keys().enumerate() {
            if let Some((s, digest)) = self.current_row(key)? {
                digests[i] = Some(digest);
                match &mut state {
                    Some(merged) => merged.merge(&s),
                    None => state = Some(s),
                }
            }
        }
        let name = match &home {
            Home::One { .. } => row.clone(),
            Home::Item { live, .. } => Bytes::copy_from_slice(&live[live.len() - row.len()..]),
        };
        Ok((name, home.with_digests(digests), state))
    }

    /// Moves the list items of `user_key` that its key row (just written, under the key's lock) cleared out of the
    /// live items' range, so that the ends of the list are read without walking past them. Returns the write's
    /// sequence number, if it wrote.
    fn sweep_cleared_items(
        &self,
        user_key: &[u8],
        key_row: &Siblings,
        durable: bool,
    ) -> Result<Option<u64>, StorageError> {
        let prefix = layout::storage_key(user_key);
        let (start, end) = crate::crdt::rows::live_items_range();
        let (lower, upper) = ([&prefix[..], &start].concat(), [&prefix[..], &end].concat());
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        let mut moved: Vec<(Bytes, Home, Siblings)> = Vec::new();
        let mut after = Bound::Included(Bytes::from(lower));
        loop {
            let page = self.engine.scan((after.as_ref().map(|b| &b[..]), Bound::Excluded(&upper)), 1024)?;
            for (k, v) in &page {
                let mut state = decode(v)?;
                if crate::crdt::rows::element_is_live(key_row, &state) {
                    continue;
                }
                state.remove_versions(|v| key_row.cleared().covers(v.dot));
                let row = Bytes::copy_from_slice(&k[prefix.len()..]);
                let (_, home, _) = self.read_logical(user_key, &row)?;
                moved.push((row, home, state));
            }
            match page.last() {
                Some((k, _)) if page.len() == 1024 => after = Bound::Excluded(k.clone()),
                _ => break,
            }
        }
        if moved.is_empty() {
            return Ok(None);
        }
        let mut writes = Vec::new();
        for (_, home, state) in &moved {
            home.writes(state, true, &mut writes);
        }
        Ok(Some(self.write_rows(writes, durable)?))
    }

    /// How many live list items this replica holds under `user_key` (not cleared by its key row): what `LPUSH` and
    /// `RPUSH` answer. Counted once per key, then kept as items move in and out of the live range.
    pub fn list_len(&self, user_key: &[u8]) -> Result<u64, StorageError> {
        let prefix = layout::storage_key(user_key);
        let _guard = self.locks[stripe(&prefix)].lock().expect("key lock");
        if let Some(n) = self.list_lens.lock().expect("list lengths lock").get(user_key) {
            return Ok(*n);
        }
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        let (start, end) = crate::crdt::rows::live_items_range();
        let upper = [&prefix[..], &end].concat();
        let mut after = Bound::Included(Bytes::from([&prefix[..], &start].concat()));
        let mut n = 0u64;
        loop {
            let page = self.engine.scan((after.as_ref().map(|b| &b[..]), Bound::Excluded(&upper)), 4096)?;
            n += page.len() as u64;
            match page.last() {
                Some((k, _)) if page.len() == 4096 => after = Bound::Excluded(k.clone()),
                _ => break,
            }
        }
        let mut lens = self.list_lens.lock().expect("list lengths lock");
        if lens.len() >= MAX_LIST_LENS {
            // Counted again when next needed.
            lens.clear();
        }
        lens.insert(Bytes::copy_from_slice(user_key), n);
        Ok(n)
    }

    /// The key row of `user_key` with this replica's tally of its element rows ([`Tally`]) and its latest changes,
    /// oldest first (`None` without a hash tree to take digests from). Counted by one scan of the key's rows when
    /// first asked, under the key's lock (writes of the key wait for it), then kept as its rows change, so a count
    /// costs a point read, not a read of every element.
    ///
    /// With `ranked`, also the answer to that read of the sorted set's order, from its members kept in score order
    /// (gathered by the same scan the first time, then kept as its rows change: [`ScoreOrder`]), and no changes.
    /// No answer for a set too large to keep in order ([`tallies::MAX_ORDERED`]).
    ///
    /// [`ScoreOrder`]: crate::crdt::zorder::ScoreOrder
    pub fn tally(&self, user_key: &[u8], ranked: Option<&ZQuery>) -> Result<Option<TallyReply>, StorageError> {
        let prefix = layout::storage_key(user_key);
        let _guard = self.locks[stripe(&prefix)].lock().expect("key lock");
        let key_row = self.current_row(&prefix)?.map(|(state, _)| state);
        if self.observer.is_none() {
            return Ok(None);
        }
        if let Some(entry) = self.tallies.lock().expect("tallies lock").get(user_key) {
            match (ranked, entry.order()) {
                (None, _) => {
                    return Ok(Some(TallyReply { key_row, tally: entry.tally, recent: entry.recent(), answer: None }));
                }
                (Some(query), Some(order)) => {
                    let answer = Some(query.answer(order));
                    return Ok(Some(TallyReply { key_row, tally: entry.tally, recent: Vec::new(), answer }));
                }
                // Too many members to keep in order: no scan would keep them.
                (Some(_), None) if entry.tally.count(RowKind::ZSet) as usize > tallies::MAX_ORDERED => {
                    return Ok(Some(TallyReply { key_row, tally: entry.tally, recent: Vec::new(), answer: None }));
                }
                (Some(_), None) => {}
            }
        }
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        let cleared = key_row.as_ref().map(|k| k.cleared().clone()).unwrap_or_default();
        let mut tally = Tally::default();
        let mut order = ranked.map(|_| ScoreOrder::default());
        self.for_each_element_row(&prefix, |k, v| {
            let (row, state) = (&k[prefix.len()..], decode(v)?);
            tally.account(&cleared, row, &state, self.digest(k, v), true);
            if let Some(o) = &mut order {
                match crate::crdt::rows::ranked_entry(&cleared, row, &state) {
                    // Past the bound it is not kept: stop gathering.
                    Some(_) if o.len() >= tallies::MAX_ORDERED => order = None,
                    Some((member, score)) => o.set(&member, Some(score)),
                    None => {}
                }
            }
            Ok(())
        })?;
        // A key with no row at all is not kept: counts of missing keys would crowd out the tallies worth keeping.
        if key_row.is_none() && tally == Tally::default() {
            let answer = ranked.map(ZQuery::empty);
            return Ok(Some(TallyReply { key_row, tally, recent: Vec::new(), answer }));
        }
        let mut tallies = self.tallies.lock().expect("tallies lock");
        tallies.insert(user_key, TallyEntry::new(tally, cleared));
        let answer = match (ranked, order) {
            (Some(query), Some(order)) => {
                let answer = query.answer(&order);
                tallies.keep_order(user_key, order);
                Some(answer)
            }
            _ => None,
        };
        Ok(Some(TallyReply { key_row, tally, recent: Vec::new(), answer }))
    }

    /// The element rows among `rows` (about to be written, under their key's lock) of keys with a tally, each with
    /// its stored state and digest before the write (`None`: absent); a key row among them that changes what its
    /// key cleared drops its key's tally first.
    fn tallied_rows(&self, rows: &[RowWrite<'_>]) -> Result<Vec<(usize, StoredRow)>, StorageError> {
        let mut tallies = self.tallies.lock().expect("tallies lock");
        if tallies.is_empty() {
            return Ok(Vec::new());
        }
        for row in rows.iter().filter(|r| layout::is_key_row(&r.key)) {
            let Some(user_key) = layout::user_key(&row.key) else { continue };
            let cleared = row.state.map(|s| s.cleared().clone()).unwrap_or_default();
            if tallies.get(user_key).is_some_and(|entry| entry.cleared != cleared) {
                tallies.remove(user_key);
            }
        }
        let tallied: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                let key = &rows[i].key;
                !layout::is_key_row(key) && layout::user_key(key).is_some_and(|k| tallies.get(k).is_some())
            })
            .collect();
        drop(tallies);
        tallied.into_iter().map(|i| Ok((i, self.current_row(&rows[i].key)?))).collect()
    }

    /// Takes a row write or delete into its key's tally, if it has one, and notes it among the tally's latest
    /// changes: out goes the row as it was (`old`), in comes the row as it is (`new`), each with its digest.
    fn account_row(&self, storage_key: &[u8], old: Option<(&Siblings, u128)>, new: Option<(&Siblings, u128)>) {
        let Some((user_key, row)) = layout::parse(storage_key) else { return };
        let mut tallies = self.tallies.lock().expect("tallies lock");
        let Some(entry) = tallies.get(user_key) else { return };
        let change = TallyChange::of(&entry.cleared, row, old, new);
        if entry.order().is_some()
            && let Some((RowKind::ZSet, member)) = crate::crdt::rows::parse_row(row)
        {
            let ranked = new.and_then(|(state, _)| crate::crdt::rows::ranked_entry(&entry.cleared, row, state));
            tallies.reorder(user_key, member, ranked.map(|(_, score)| score));
        }
        if change.before != change.after {
            tallies.apply(user_key, change);
        }
    }

    /// Up to `count` live list items at one end of `user_key`'s list, with its key row. Under the key's lock, so
    /// the bounds it learns ([`ListEnds`]) hold.
    pub fn end_items(&self, user_key: &[u8], head: bool, count: usize) -> Result<Rows, StorageError> {
        let prefix = layout::storage_key(user_key);
        let _guard = self.locks[stripe(&prefix)].lock().expect("key lock");
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        let mut out = Rows::new();
        let key_row = self.current_row(&prefix)?.map(|(state, _)| state);
        if let Some(k) = &key_row {
            out.merge_row(Bytes::new(), k);
        }
        let key_row = key_row.unwrap_or_default();
        let (start, end) = crate::crdt::rows::live_items_range();
        let (lower, upper) = ([&prefix[..], &start].concat(), [&prefix[..], &end].concat());
        let known = self.list_ends.lock().expect("list ends lock").get(user_key).cloned();
        // Every row of the home lies within [low, high].
        let (low, high) = match &known {
            Some(ends) => (ends.low.to_vec(), ends.high.to_vec()),
            None => (lower.clone(), upper.clone()),
        };
        let mut from: Bound<Bytes> = Bound::Included(Bytes::from(if head { low.clone() } else { high.clone() }));
        let mut found = 0;
        let mut edge: Option<Bytes> = None;
        // An empty home (`low` past `high`) has nothing to scan.
        let mut more = low <= high;
        // A remembered bound is a row's key, and the rows met from this end last time follow it in order
        // ([`ListEnds`]): while every one of them read so far is gone or taken, the next still present is the next
        // row of the home. So the end's items are read by point reads (the row cache, or the engine's filters),
        // where a scan would open an iterator over every table of the engine, and a scan starts only past them.
        let candidates: Vec<Bytes> = match (&known, &from) {
            (Some(ends), Bound::Included(bound)) if more && count > 0 => {
                // A long read (an LRANGE) scans at once: a point read per row costs more than the scan's step.
                let next = if head { &ends.next_up } else { &ends.next_down };
                let next = if count <= LIST_LOOKAHEAD { &next[..] } else { &[] };
                std::iter::once(bound).chain(next).cloned().collect()
            }
            _ => Vec::new(),
        };
        // How many candidates were read (each gone, or taken), and which one became the end's first row.
        let (mut read, mut first) = (0, None);
        for candidate in &candidates {
            if found == count || candidate[..] < lower[..] || candidate[..] >= upper[..] {
                break;
            }
            match self.current_row(candidate)? {
                None => {}
                Some((state, _)) if crate::crdt::rows::element_is_live(&key_row, &state) => {
                    out.merge_row_owned(Bytes::copy_from_slice(&candidate[prefix.len()..]), state);
                    found += 1;
                    first = first.or(Some(read));
                }
                // A row that stays without a live item: the scan reads on from it.
                Some(_) => break,
            }
            read += 1;
        }
        if read > 0 {
            from = Bound::Excluded(candidates[read - 1].clone());
            more = found < count;
        }
        // The rows this read met after the end's first row, in order from the end: past the candidates read, the
        // unread ones still follow when no scan reads on (found them all), else the scan's rows do.
        let mut met: Vec<Bytes> = Vec::new();
        if let Some(first) = first {
            edge = Some(candidates[first].clone());
            let upto = if more { read } else { candidates.len() };
            met.extend(candidates[first + 1..upto].iter().cloned());
        }
        // The first page asks for just the items wanted and the few rows after them that the next pops at this end
        // will want (a push finds its end by the point read above): a full page copied 64 rows per push out of the
        // engine.
        let mut page_len = (count - found + LIST_LOOKAHEAD).clamp(1, SCAN_PAGE);
        while more {
            let page = match head {
                true => self.engine.scan((from.as_ref().map(|b| &b[..]), Bound::Included(&high)), page_len)?,
                false => {
                    let to = match &from {
                        Bound::Included(b) => Bound::Included(&b[..]),
                        Bound::Excluded(b) => Bound::Excluded(&b[..]),
                        Bound::Unbounded => Bound::Unbounded,
                    };
                    self.engine.scan_rev((Bound::Included(&low[..]), to), page_len)?
                }
            };
            let full = page.len() == page_len;
            page_len = SCAN_PAGE;
            let page: Vec<_> = page.into_iter().filter(|(k, _)| k.as_ref() < &upper[..]).collect();
            let mut rows = page.iter();
            if edge.is_none() {
                edge = rows.next().map(|(k, _)| k.clone());
            }
            met.extend(rows.map(|(k, _)| k.clone()));
            for (k, v) in &page {
                let state = decode(v)?;
                if crate::crdt::rows::element_is_live(&key_row, &state) {
                    out.merge_row_owned(Bytes::copy_from_slice(&k[prefix.len()..]), state);
                    found += 1;
                    if found == count {
                        break;
                    }
                }
            }
            match page.last() {
                Some((k, _)) if found < count && full => from = Bound::Excluded(k.clone()),
                _ => more = false,
            }
        }
        // The first row met from this end is where the home begins (or, with none, it is empty: the bounds close
        // on the other one).
        let mut ends = self.list_ends.lock().expect("list ends lock");
        if ends.len() >= MAX_LIST_LENS {
            ends.clear();
        }
        let entry = ends.entry(Bytes::copy_from_slice(user_key)).or_insert_with(|| ListEnds {
            low: Bytes::from(lower.clone()),
            high: Bytes::from(upper.clone()),
            ..ListEnds::default()
        });
        met.truncate(LIST_LOOKAHEAD);
        match (head, edge) {
            (true, Some(k)) => (entry.low, entry.next_up) = (k, met),
            (false, Some(k)) => (entry.high, entry.next_down) = (k, met),
            // Nothing in the home at all: an empty range, widened by the next item that arrives.
            (_, None) => {
                *entry = ListEnds {
                    low: Bytes::from(upper.clone()),
                    high: Bytes::from(lower.clone()),
                    ..ListEnds::default()
                };
            }
        }
        Ok(out)
    }

    /// The stored rows of `user_key` among its key row and `rows` (a list item's merged from its two homes).
    pub fn get_rows(&self, user_key: &[u8], rows: &[Bytes]) -> Result<Rows, StorageError> {
        let key_row = layout::storage_key(user_key);
        let _guard = self.locks[stripe(&key_row)].lock().expect("key lock");
        let mut out = Rows::new();
        for row in std::iter::once(&Bytes::new()).chain(rows.iter().filter(|r| !r.is_empty())) {
            if let (name, _, Some(state)) = self.read_logical(user_key, row)? {
                out.merge_row_owned(name, state);
            }
        }
        Ok(out)
    }

    /// Up to `n` element rows of `user_key` that hold a live element its stored key row has not cleared, in row
    /// order.
    pub fn first_live_rows(&self, user_key: &[u8], n: usize) -> Result<Rows, StorageError> {
        let prefix = layout::storage_key(user_key);
        let _guard = self.locks[stripe(&prefix)].lock().expect("key lock");
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        let key_row = self.current_row(&prefix)?.map(|(state, _)| state).unwrap_or_default();
        let mut out = Rows::new();
        if let Some((low, high)) = self.live_span(user_key, &prefix)? {
            let span = (Bound::Included(&low[..]), Bound::Included(&high[..]));
            self.live_rows(&prefix, &key_row, span, Direction::Forward, n, &mut out)?;
        }
        Ok(out)
    }

    /// Every element row of `user_key` that holds a live element its stored key row has not cleared, with the key
    /// row ([`RowSelect::Live`](crate::crdt::rows::RowSelect::Live)): within the remembered bounds of such rows, so
    /// that an emptied collection reads none of its removed rows.
    pub fn all_live_rows(&self, user_key: &[u8]) -> Result<Rows, StorageError> {
        self.read_live_span(user_key, |prefix, key_row, (low, high), out| {
            let span = (Bound::Included(&low[..]), Bound::Included(&high[..]));
            self.live_rows(prefix, key_row, span, Direction::Forward, usize::MAX, out).map(drop)
        })
    }

    /// Under `user_key`'s lock, its key row (nothing when the key has none) and what `read` adds of its element
    /// rows, given the first and the last of them that hold a live value ([`live_span`](Self::live_span)), if any.
    fn read_live_span(
        &self,
        user_key: &[u8],
        read: impl FnOnce(&[u8], &Siblings, (&Bytes, &Bytes), &mut Rows) -> Result<(), StorageError>,
    ) -> Result<Rows, StorageError> {
        let prefix = layout::storage_key(user_key);
        let _guard = self.locks[stripe(&prefix)].lock().expect("key lock");
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        let mut out = Rows::new();
        let Some((key_row, _)) = self.current_row(&prefix)? else { return Ok(out) };
        out.merge_row(Bytes::new(), &key_row);
        if let Some((low, high)) = self.live_span(user_key, &prefix)? {
            read(&prefix, &key_row, (&low, &high), &mut out)?;
        }
        Ok(out)
    }

    /// Up to `n` element rows of `user_key` that hold a live element its stored key row has not cleared, picked at
    /// random, with the key row ([`RowSelect::Sample`](crate::crdt::rows::RowSelect::Sample)). Each pick descends
    /// the rows' order as a trie ([`descend`](Self::descend)) and takes the first live row from there, wrapping
    /// around, that is not picked yet. Past [`MAX_SEPARATE_PICKS`] rows, one descent picks where a run of `n`
    /// rows in row order begins: a large count costs `n` rows, not `n` descents, and its members are neighbours
    /// in that order.
    pub fn sample_live_rows(&self, user_key: &[u8], seed: u64, n: usize) -> Result<Rows, StorageError> {
        self.read_live_span(user_key, |prefix, key_row, (span_low, span_high), out| {
            let mut rng = seed | 1;
            let mut random = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            // Up to `want` live rows from `start` on, wrapping around to the span's beginning.
            let run_from = |start: &Bytes, want: usize, into: &mut Rows| -> Result<Vec<Bytes>, StorageError> {
                let after = (Bound::Included(&start[..]), Bound::Included(&span_high[..]));
                let mut found = self.live_rows(prefix, key_row, after, Direction::Forward, want, into)?;
                if found.len() < want {
                    let before = (Bound::Included(&span_low[..]), Bound::Excluded(&start[..]));
                    let rest = want - found.len();
                    found.extend(self.live_rows(prefix, key_row, before, Direction::Forward, rest, into)?);
                }
                Ok(found)
            };
            if n > MAX_SEPARATE_PICKS {
                if let Some(start) = self.descend(prefix, key_row, (span_low, span_high), &mut random)? {
                    run_from(&start, n, out)?;
                }
                return Ok(());
            }
            let mut picked: std::collections::BTreeSet<Bytes> = std::collections::BTreeSet::new();
            while picked.len() < n {
                let Some(start) = self.descend(prefix, key_row, (span_low, span_high), &mut random)? else { break };
                // One more row than picked so far holds one not picked yet, unless every live row is picked.
                let mut run = Rows::new();
                let found = run_from(&start, picked.len() + 1, &mut run)?;
                let Some(new) = found.into_iter().find(|k| !picked.contains(k)) else { break };
                let row = Bytes::copy_from_slice(&new[prefix.len()..]);
                if let Some(state) = run.get(&row) {
                    out.merge_row(row, state);
                }
                picked.insert(new);
            }
            Ok(())
        })
    }

    /// A live element row of the key at `prefix` that `random` picks within `span` (its first and last rows that
    /// hold a live value), descending the rows' order as a trie: where the first and the last live rows under the
    /// prefix chosen so far part, it picks a byte between theirs at random and goes on with the rows from there
    /// that share it. Each step is two seeks, and there are about as many steps as the rows have bytes that differ.
    /// The pick is uniform among rows whose bytes fill their ranges (as decimal numbers do) and favors rows that
    /// follow a gap in the order otherwise (Redis's own pick is only roughly fair too).
    fn descend(
        &self,
        prefix: &[u8],
        key_row: &Siblings,
        span: (&Bytes, &Bytes),
        random: &mut impl FnMut() -> u64,
    ) -> Result<Option<Bytes>, StorageError> {
        let mut scratch = Rows::new();
        let whole = (Bound::Included(&span.0[..]), Bound::Included(&span.1[..]));
        let first = self.live_rows(prefix, key_row, whole, Direction::Forward, 1, &mut scratch)?;
        let last = self.live_rows(prefix, key_row, whole, Direction::Backward, 1, &mut scratch)?;
        let (Some(mut low), Some(mut high)) = (first.into_iter().next(), last.into_iter().next()) else {
            return Ok(None);
        };
        while low != high {
            let common = low.iter().zip(high.iter()).take_while(|(a, b)| a == b).count();
            // The choices at this byte: `low` itself when it ends here (as -1), else its byte, up to `high`'s.
            let from = low.get(common).map_or(-1, |b| i32::from(*b));
            let to = i32::from(high[common]);
            let byte = from + (random() % (to - from + 1) as u64) as i32;
            let Ok(byte) = u8::try_from(byte) else { break };
            let mut child = low[..common].to_vec();
            child.push(byte);
            let below_high = (Bound::Included(&child[..]), Bound::Included(&high[..]));
            let found = self.live_rows(prefix, key_row, below_high, Direction::Forward, 1, &mut scratch)?;
            // `high` itself lies in that range, so a live row is found.
            let Some(next_low) = found.into_iter().next() else { break };
            let branch = layout::prefix_end(&next_low[..=common]);
            let within = (Bound::Included(&next_low[..]), branch.as_deref().map_or(Bound::Unbounded, Bound::Excluded));
            let found = self.live_rows(prefix, key_row, within, Direction::Backward, 1, &mut scratch)?;
            high = found.into_iter().next().unwrap_or_else(|| next_low.clone());
            low = next_low;
        }
        Ok(Some(low))
    }

    /// The first and the last element rows of the key at `prefix` that hold a live value (`None`: none does), from
    /// its remembered bounds ([`KvStore::live_ends`]), which this tightens unless a row was written meanwhile.
    /// Called under the key's lock.
    fn live_span(&self, user_key: &[u8], prefix: &[u8]) -> Result<Option<(Bytes, Bytes)>, StorageError> {
        let end = layout::rows_end(prefix);
        let writes = &self.live_writes[stripe(prefix)];
        let writes_before = writes.load(Ordering::Acquire);
        let known = self.live_ends.lock().expect("live ends lock").get(user_key).cloned();
        let (lower, upper) = match &known {
            Some(ends) if ends.low > ends.high => return Ok(None),
            Some(ends) => (Bound::Included(&ends.low[..]), Bound::Included(&ends.high[..])),
            None => (Bound::Excluded(prefix), end.as_deref().map_or(Bound::Unbounded, Bound::Excluded)),
        };
        let edge = |direction| -> Result<Option<Bytes>, StorageError> {
            let (mut lower, mut upper) = (lower.map(Bytes::copy_from_slice), upper.map(Bytes::copy_from_slice));
            // The first row is usually the live one: a page of one, then full pages past removed rows.
            let mut page_len = 1;
            loop {
                let bounds = (lower.as_ref().map(|b| &b[..]), upper.as_ref().map(|b| &b[..]));
                let page = match direction {
                    Direction::Forward => self.engine.scan(bounds, page_len)?,
                    Direction::Backward => self.engine.scan_rev(bounds, page_len)?,
                };
                for (k, v) in &page {
                    if decode(v)?.has_live_value() {
                        return Ok(Some(k.clone()));
                    }
                }
                let full = page.len() == page_len;
                page_len = SCAN_PAGE;
                match (page.last(), direction) {
                    (Some((k, _)), Direction::Forward) if full => lower = Bound::Excluded(k.clone()),
                    (Some((k, _)), Direction::Backward) if full => upper = Bound::Excluded(k.clone()),
                    _ => return Ok(None),
                }
            }
        };
        let span = match edge(Direction::Forward)? {
            Some(low) => edge(Direction::Backward)?.map(|high| (low, high)),
            None => None,
        };
        let mut ends = self.live_ends.lock().expect("live ends lock");
        if writes.load(Ordering::Acquire) != writes_before {
            // A row the scans may have missed: the bounds it widened (or none) stay as they are.
            return Ok(span);
        }
        if ends.len() >= MAX_LIST_LENS {
            ends.clear();
        }
        // No live row at all: an empty range (`low` past `high`), widened by the next row written with a value.
        let (low, high) = span.clone().unwrap_or_else(|| {
            (
                Bytes::from(end.clone().map_or_else(|| vec![u8::MAX; prefix.len() + 1], |e| e.to_vec())),
                Bytes::copy_from_slice(prefix),
            )
        });
        ends.insert(Bytes::copy_from_slice(user_key), ListEnds { low, high, ..ListEnds::default() });
        Ok(span)
    }

    /// Up to `n` element rows of the key at `prefix` within `range` that hold a live element `key_row` has not
    /// cleared, merged into `out` in the order met; returns their storage keys.
    fn live_rows(
        &self,
        prefix: &[u8],
        key_row: &Siblings,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        direction: Direction,
        n: usize,
        out: &mut Rows,
    ) -> Result<Vec<Bytes>, StorageError> {
        let mut found = Vec::new();
        let (mut lower, mut upper) = (range.0.map(Bytes::copy_from_slice), range.1.map(Bytes::copy_from_slice));
        // As many rows as wanted first (a descent's step wants one), then full pages past removed rows.
        let mut page_len = n.clamp(1, SCAN_PAGE);
        while found.len() < n {
            let bounds = (lower.as_ref().map(|b| &b[..]), upper.as_ref().map(|b| &b[..]));
            let page = match direction {
                Direction::Forward => self.engine.scan(bounds, page_len)?,
                Direction::Backward => self.engine.scan_rev(bounds, page_len)?,
            };
            let full = page.len() == page_len;
            page_len = SCAN_PAGE;
            for (k, v) in &page {
                let state = decode(v)?;
                if crate::crdt::rows::element_is_live(key_row, &state) {
                    out.merge_row_owned(Bytes::copy_from_slice(&k[prefix.len()..]), state);
                    found.push(k.clone());
                    if found.len() == n {
                        break;
                    }
                }
            }
            match (page.last(), direction) {
                (Some((k, _)), Direction::Forward) if full => lower = Bound::Excluded(k.clone()),
                (Some((k, _)), Direction::Backward) if full => upper = Bound::Excluded(k.clone()),
                _ => break,
            }
        }
        Ok(found)
    }

    /// Every stored row of `user_key`, its key row first.
    pub fn scan_rows(&self, user_key: &[u8]) -> Result<Rows, StorageError> {
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        let prefix = layout::storage_key(user_key);
        let mut out = Rows::new();
        // The key row by point read (the cache usually has it), then the element rows from just past it: the key
        // row is rewritten by every element write, and a scan would walk each of its versions that the engine
        // still holds (an LSM tree keeps them until a flush or compaction drops them), where a seek skips them.
        if let Some(key_row) = self.get(user_key)? {
            out.merge_row(Bytes::new(), &key_row);
        }
        self.for_each_element_row(&prefix, |k, v| {
            let row = &k[prefix.len()..];
            let name = crate::crdt::rows::item_homes(row).map_or_else(|| Bytes::copy_from_slice(row), |(l, _)| l);
            out.merge_row_owned(name, decode(v)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// Visits every stored element row of the key at `prefix` (its storage key and stored bytes), in storage order,
    /// from just past its key row, page by page.
    fn for_each_element_row(
        &self,
        prefix: &Bytes,
        mut f: impl FnMut(&Bytes, &Bytes) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        const PAGE: usize = 4096;
        let end = layout::rows_end(prefix);
        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut after = prefix.clone();
        loop {
            let page = self.engine.scan((Bound::Excluded(&after[..]), upper), PAGE)?;
            for (k, v) in &page {
                f(k, v)?;
            }
            match page.last() {
                Some((k, _)) if page.len() == PAGE => after = k.clone(),
                _ => return Ok(()),
            }
        }
    }

    /// Writes changed rows in one batch (called under their key's lock): the engine, the cache, the observer, the
    /// live-key count and the list lengths. Returns the write's sequence number, for
    /// [`wait_durable`](Self::wait_durable).
    fn write_rows(&self, rows: Vec<RowWrite<'_>>, durable: bool) -> Result<u64, StorageError> {
        self.gate.check()?;
        let tallied = self.tallied_rows(&rows)?;
        let encoded: Vec<Option<Bytes>> = rows.iter().map(|r| r.state.map(encode)).collect();
        let changes: Vec<Change> = rows.iter().zip(&encoded).map(|(r, e)| (r.key.clone(), e.clone())).collect();
        let written = self.gate.observe(match &self.buffer {
            Some(buffer) if durable => buffer.write_through(self.engine.as_ref(), &changes),
            _ => self.write_raw(&changes),
        });
        let digests: Vec<Option<u128>> =
            rows.iter().zip(&encoded).map(|(r, e)| e.as_ref().map(|e| self.digest(&r.key, e))).collect();
        for ((row, encoded), &digest) in rows.iter().zip(encoded).zip(&digests) {
            if let Some(cache) = &self.cache {
                match (&written, encoded, digest) {
                    (Ok(()), Some(encoded), Some(digest)) => cache.put(row.key.clone(), encoded, digest),
                    (Ok(()), None, _) => cache.put_absent(row.key.clone()),
                    // The engine may hold either state now: the next read asks it.
                    _ => cache.forget(&row.key),
                }
            }
            if written.is_err() {
                continue;
            }
            if self.counted_by_writer(&row.key) {
                if let Some(o) = &self.observer {
                    o.on_change(&row.key, row.old_digest, digest);
                }
                if layout::is_key_row(&row.key) {
                    let now_live = row.state.is_some_and(Siblings::has_live_value);
                    self.live_keys.fetch_add(i64::from(now_live) - i64::from(row.was_live), Ordering::Relaxed);
                }
            }
            self.count_list_item(&row.key, row.old_digest.is_some(), row.state.is_some());
            if row.state.is_some_and(Siblings::has_live_value) {
                self.widen_live_ends(&row.key);
            }
        }
        for (i, old) in tallied {
            let row = &rows[i];
            if written.is_ok() {
                let old = old.as_ref().map(|(state, digest)| (state, *digest));
                self.account_row(&row.key, old, row.state.zip(digests[i]));
            } else if let Some(user_key) = layout::user_key(&row.key) {
                // The engine may hold either state: counted again when next asked.
                self.tallies.lock().expect("tallies lock").remove(user_key);
            }
        }
        written?;
        Ok(self.applied_seq.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Keeps a counted list's length as its live items' home gains or loses `storage_key`.
    fn count_list_item(&self, storage_key: &[u8], existed: bool, exists: bool) {
        if existed == exists {
            return;
        }
        let Some((user_key, row)) = layout::parse(storage_key) else { return };
        if !row.starts_with(&crate::crdt::rows::live_items_range().0) {
            return;
        }
        if let Some(n) = self.list_lens.lock().expect("list lengths lock").get_mut(user_key) {
            *n = if exists { *n + 1 } else { n.saturating_sub(1) };
        }
        if exists && let Some(ends) = self.list_ends.lock().expect("list ends lock").get_mut(user_key) {
            // A row entering at or before the last row an end read met from an end: those rows no longer follow
            // one another there.
            if ends.next_up.last().is_none_or(|last| storage_key <= &last[..]) {
                ends.next_up.clear();
            }
            if ends.next_down.last().is_none_or(|last| storage_key >= &last[..]) {
                ends.next_down.clear();
            }
            if storage_key < &ends.low[..] {
                ends.low = Bytes::copy_from_slice(storage_key);
            }
            if storage_key > &ends.high[..] {
                ends.high = Bytes::copy_from_slice(storage_key);
            }
        }
    }

    /// Widens the remembered bounds of live element rows ([`KvStore::live_ends`]) of the key of `storage_key`, an
    /// element row written with a live value, to take it in.
    fn widen_live_ends(&self, storage_key: &[u8]) {
        if layout::is_key_row(storage_key) {
            return;
        }
        let Some((user_key, row)) = layout::parse(storage_key) else { return };
        // The key row's storage key is the row's without the row part.
        let key_row = &storage_key[..storage_key.len() - row.len()];
        let mut all = self.live_ends.lock().expect("live ends lock");
        self.live_writes[stripe(key_row)].fetch_add(1, Ordering::AcqRel);
        if let Some(ends) = all.get_mut(user_key) {
            if storage_key < &ends.low[..] {
                ends.low = Bytes::copy_from_slice(storage_key);
            }
            if storage_key > &ends.high[..] {
                ends.high = Bytes::copy_from_slice(storage_key);
            }
        }
    }

    /// Waits until the write numbered `seq` is as durable as the mode promises.
    async fn wait_durable(&self, seq: u64) -> Result<(), StorageError> {
        match self.options.durability {
            Durability::Fsync => self.wait_synced(seq).await,
            // The write waits in the engine's journal buffer (`apply_unflushed`): acknowledged once it reached the OS.
            Durability::Os => self.wait_flushed(seq).await,
            // In the buffer, or written through (`apply`, which flushed).
            Durability::Buffered => Ok(()),
        }
    }

    /// Visits every stored key in `range` of storage keys with its decoded sibling set, in key order.
    pub fn for_each_raw(
        &self,
        range: (Bound<&[u8]>, Bound<&[u8]>),
        mut f: impl FnMut(&[u8], Siblings),
    ) -> Result<(), StorageError> {
        const PAGE: usize = 4096;
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        let mut start: Bound<Bytes> = match range.0 {
            Bound::Included(k) => Bound::Included(Bytes::copy_from_slice(k)),
            Bound::Excluded(k) => Bound::Excluded(Bytes::copy_from_slice(k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        loop {
            let page = self.engine.scan((start.as_ref().map(|b| b.as_ref()), range.1), PAGE)?;
            for (k, v) in &page {
                let user_key = layout::user_key(k).ok_or_else(|| StorageError::Corrupt {
                    reason: "storage key shorter than its ring position".into(),
                })?;
                f(user_key, decode(v)?);
            }
            match page.last() {
                Some((k, _)) if page.len() == PAGE => start = Bound::Excluded(k.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// Refuses every later update and waits for those in progress, so a flush after this call holds every write
    /// that was or will be acknowledged. Blocks briefly (it takes each key lock once).
    pub fn close_writes(&self) {
        self.closed.store(true, Ordering::Release);
        for lock in self.locks.iter() {
            drop(lock.lock().expect("key lock"));
        }
    }

    /// Deletes a key of a range this node no longer replicates, once pushed to its replicas; only if its state is
    /// still `expected`. Returns whether it did.
    pub fn remove_if_unchanged(&self, storage_key: &[u8], expected: &Siblings) -> Result<bool, StorageError> {
        self.remove_matching(storage_key, expected, true)
    }

    /// Deletes a key whose stored state is exactly `expected` (a tombstone every replica holds); returns whether
    /// it did. A key that changed meanwhile is kept.
    pub fn remove_if_equal(&self, storage_key: &[u8], expected: &Siblings) -> Result<bool, StorageError> {
        self.remove_matching(storage_key, expected, false)
    }

    fn remove_matching(&self, storage_key: &[u8], expected: &Siblings, live_ok: bool) -> Result<bool, StorageError> {
        let _guard = self.locks[stripe(storage_key)].lock().expect("key lock");
        if self.closed.load(Ordering::Acquire) {
            return Err(StorageError::Closed);
        }
        let key = Bytes::copy_from_slice(storage_key);
        let Some((current, digest)) = self.current_row(&key)? else { return Ok(false) };
        // An expired value counts as deleted: reaping removes it like a tombstone.
        if current != *expected || (current.is_live_at(crate::versioning::clock::now_ms()) && !live_ok) {
            return Ok(false);
        }
        // A delete writes too (an LSM tombstone): it waits for the disk like any write.
        self.gate.check()?;
        let deleted = match &self.buffer {
            Some(buffer) => {
                buffer.put(&[(key.clone(), None)]);
                Ok(())
            }
            None => self.gate.observe(self.engine.apply(&[(key.clone(), None)])),
        };
        if let Some(cache) = &self.cache {
            match deleted {
                Ok(()) => cache.put_absent(key),
                Err(_) => cache.forget(&key),
            }
        }
        if let Some(user_key) = layout::user_key(storage_key) {
            let mut tallies = self.tallies.lock().expect("tallies lock");
            if deleted.is_err() || layout::is_key_row(storage_key) {
                // Either state may be stored (counted again when next asked), or the key row went with what it
                // cleared.
                tallies.remove(user_key);
            } else if live_ok {
                // A live row swept from a range handed off is no join of what it was: no merge of counts reaches
                // back across it (`crdt::rows::merged_count`).
                tallies.forget_changes(user_key);
            }
        }
        deleted?;
        self.account_row(storage_key, Some((&current, digest)), None);
        self.count_list_item(storage_key, true, false);
        if self.counted_by_writer(storage_key) {
            if current.has_live_value() && layout::is_key_row(storage_key) {
                self.live_keys.fetch_sub(1, Ordering::Relaxed);
            }
            if let Some(o) = &self.observer {
                o.on_change(storage_key, Some(digest), None);
            }
        }
        Ok(true)
    }

    /// Up to `limit` stored keys with ring positions in `[first, last]` after storage key `after`, in storage order,
    /// as (storage key, sibling set). Streams one partition to a node receiving it (handoff).
    pub fn scan_positions(
        &self,
        first: u128,
        last: u128,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Bytes, Siblings)>, StorageError> {
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        let (start, end) = layout::position_range(first, last);
        let lower = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Included(&start[..]),
        };
        let upper = match &end {
            Some(e) => Bound::Excluded(&e[..]),
            None => Bound::Unbounded,
        };
        self.engine.scan((lower, upper), limit)?.into_iter().map(|(k, v)| Ok((k, decode(&v)?))).collect()
    }

    /// A page of a key scan (SCAN): the key rows (element rows of collections are skipped) with ring positions in
    /// `[first, last]`, in storage order, at least `limit` of them when there are that many, then every further key
    /// whose scan cursor ([`layout::scan_cursor`] of its position) equals the last one's, so a cursor never splits
    /// keys; and whether the range is exhausted.
    pub fn scan_page(
        &self,
        first: u128,
        last: u128,
        limit: usize,
    ) -> Result<(Vec<(Bytes, Siblings)>, bool), StorageError> {
        const PAGE: usize = 256;
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        let (start, end) = layout::position_range(first, last);
        let upper = end.as_ref().map_or(Bound::Unbounded, |e| Bound::Excluded(&e[..]));
        let cursor = |k: &[u8]| layout::position(k).map(layout::scan_cursor);
        let mut lower = Bound::Included(Bytes::copy_from_slice(&start));
        let mut items: Vec<(Bytes, Siblings)> = Vec::new();
        loop {
            let page = self.engine.scan((lower.as_ref().map(|b| &b[..]), upper), PAGE)?;
            let exhausted = page.len() < PAGE;
            let mut next = page.last().map(|(k, _)| Bound::Excluded(k.clone()));
            for (k, v) in &page {
                let Some((user_key, row)) = layout::parse(k) else { continue };
                if !row.is_empty() {
                    // An element row: skip the rest of its key's rows in one seek.
                    next = layout::rows_end(&layout::storage_key(user_key)).map(Bound::Included);
                    break;
                }
                if items.len() >= limit.max(1) && cursor(k) != items.last().and_then(|(l, _)| cursor(l)) {
                    return Ok((items, false));
                }
                items.push((k.clone(), decode(v)?));
            }
            match next {
                Some(bound) if !(exhausted && matches!(bound, Bound::Excluded(_))) => lower = bound,
                _ => return Ok((items, true)),
            }
        }
    }

    /// Key count and an order-independent hash (XOR of MD5 over key and encoded state) of the keys with ring
    /// positions in `[first, last]`: equal on two replicas exactly when they hold the same states (whp).
    pub fn digest_positions(&self, first: u128, last: u128) -> Result<(u64, [u8; 16]), StorageError> {
        const PAGE: usize = 4096;
        let mut keys = 0u64;
        let mut hash = [0u8; 16];
        let mut after: Option<Bytes> = None;
        loop {
            let page = self.scan_positions(first, last, after.as_deref(), PAGE)?;
            for (k, s) in &page {
                let mut ctx = md5::Context::new();
                ctx.consume(k);
                ctx.consume(encode(s));
                for (h, b) in hash.iter_mut().zip(ctx.finalize().0) {
                    *h ^= b;
                }
                keys += 1;
            }
            match page.last() {
                Some((k, _)) if page.len() == PAGE => after = Some(k.clone()),
                _ => return Ok((keys, hash)),
            }
        }
    }

    /// Persists buffered writes and fsyncs the engine: used by the periodic sync and at shutdown.
    pub fn flush_and_sync(&self) -> Result<(), StorageError> {
        if let Some(buffer) = &self.buffer {
            buffer.flush(self.engine.as_ref())?;
        }
        self.engine.sync()
    }

    /// Writes the engine's memtables to its tables at a clean stop, so the next start replays no journal. Skipped
    /// while writes are stopped (the engine may be unable to flush, and would wait for good).
    pub fn flush_memtables(&self) -> Result<(), StorageError> {
        if self.gate.stop().is_some() {
            return Ok(());
        }
        self.engine.flush_memtables()
    }

    /// Background duties of the durability mode, until `cancel` fires: the buffered writer, the once-a-second
    /// fsync. Ends with a final flush and sync.
    pub async fn run_background(self: Arc<Self>, cancel: CancellationToken) -> Result<(), StorageError> {
        let period = match self.options.durability {
            Durability::Buffered => self.options.buffer_flush_interval,
            Durability::Os | Durability::Fsync => OS_SYNC_INTERVAL,
        }
        .min(SPACE_CHECK_INTERVAL);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut since_sync = Duration::ZERO;
        let mut since_space = SPACE_CHECK_INTERVAL;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                _ = ticker.tick() => {}
            }
            since_sync += period;
            since_space += period;
            let store = self.clone();
            let sync_now = since_sync >= OS_SYNC_INTERVAL;
            if sync_now {
                since_sync = Duration::ZERO;
            }
            let space_now = since_space >= SPACE_CHECK_INTERVAL;
            if space_now {
                since_space = Duration::ZERO;
            }
            let result = crate::sys::blocking(move || {
                if space_now {
                    store.check_space();
                }
                if store.gate.stop().is_some_and(|s| matches!(s, WriteStop::Failed { .. })) {
                    // The engine refuses writes until it reopens; what is buffered waits for that.
                    return Ok(());
                }
                if let Some(buffer) = &store.buffer {
                    store.gate.observe(buffer.flush(store.engine.as_ref()))?;
                }
                if sync_now { store.gate.observe(store.engine.sync()) } else { Ok(()) }
            })
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "background storage flush failed; will retry");
                metrics::counter!("dynamo_storage_flush_errors_total").increment(1);
            }
        }
        let store = self.clone();
        crate::sys::blocking(move || store.flush_and_sync()).await
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        if let Some(buffer) = &self.buffer {
            match buffer.get(key) {
                Buffered::Value(v) => return Ok(Some(v)),
                Buffered::Deleted => return Ok(None),
                Buffered::Absent => {}
            }
        }
        self.engine.get(key)
    }

    fn write_raw(&self, changes: &[Change]) -> Result<(), StorageError> {
        match &self.buffer {
            Some(buffer) => {
                // Flush a full buffer before taking the change: if the flush fails, this write is refused
                // whole instead of being reported failed while it still lands later.
                if buffer.pending_bytes() >= BUFFER_FLUSH_BYTES {
                    buffer.flush(self.engine.as_ref())?;
                }
                buffer.put(changes);
                Ok(())
            }
            None => self.engine.apply_unflushed(changes),
        }
    }

    /// Group flush: hands the engine's journal buffer to the OS once for every write applied before it, so a
    /// pipeline (or many clients at once) pays one write(2) instead of one per request. The first yield lets the
    /// requests running beside this one apply theirs first.
    async fn wait_flushed(&self, seq: u64) -> Result<(), StorageError> {
        if self.flushed_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        tokio::task::yield_now().await;
        if self.flushed_seq.load(Ordering::Acquire) >= seq {
            return Ok(());
        }
        let target = self.applied_seq.load(Ordering::Acquire);
        self.gate.observe(self.engine.flush())?;
        self.flushed_seq.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Group commit: the first waiter syncs everything applied so far; waiters that queued behind it find their
    /// write already covered and return without another fsync.
    async fn wait_synced(&self, seq: u64) -> Result<(), StorageError> {
        let mut synced = self.synced_seq.lock().await;
        if *synced >= seq {
            return Ok(());
        }
        let target = self.applied_seq.load(Ordering::Acquire);
        let engine = self.engine.clone();
        let result = crate::sys::blocking(move || engine.sync()).await;
        self.gate.observe(result)?;
        metrics::counter!("dynamo_storage_fsyncs_total").increment(1);
        *synced = target;
        Ok(())
    }
}

/// One row [`KvStore::write_rows`] writes.
struct RowWrite<'a> {
    key: Bytes,
    /// The observer's digest of the row before (`None`: it was absent).
    old_digest: Option<u128>,
    /// Whether the row held a live value before.
    was_live: bool,
    /// The new state; `None` deletes the row.
    state: Option<&'a Siblings>,
}

/// Where a logical row of a key is stored: one storage key, or a list item's two homes (`crdt::rows::item_homes`),
/// with the observer's digests of what each held when read (`None`: absent).
#[derive(Clone, Debug)]
enum Home {
    One { key: Bytes, digest: Option<u128> },
    Item { live: Bytes, live_digest: Option<u128>, removed: Bytes, removed_digest: Option<u128> },
}

impl Home {
    /// The home of row `row` of `user_key`, as if absent.
    fn of(user_key: &[u8], row: &[u8]) -> Home {
        match crate::crdt::rows::item_homes(row) {
            Some((live, removed)) => Home::Item {
                live: layout::row_key(user_key, &live),
                live_digest: None,
                removed: layout::row_key(user_key, &removed),
                removed_digest: None,
            },
            None => Home::One { key: layout::row_key(user_key, row), digest: None },
        }
    }

    fn keys(&self) -> impl Iterator<Item = &Bytes> {
        match self {
            Home::One { key, .. } => [Some(key), None],
            Home::Item { live, removed, .. } => [Some(live), Some(removed)],
        }
        .into_iter()
        .flatten()
    }

    fn with_digests(self, digests: [Option<u128>; 2]) -> Home {
        match self {
            Home::One { key, .. } => Home::One { key, digest: digests[0] },
            Home::Item { live, removed, .. } => {
                Home::Item { live, live_digest: digests[0], removed, removed_digest: digests[1] }
            }
        }
    }

    /// The writes that store `state` here: a list item in its live home while it holds the item, else in its
    /// removed home, the other home deleted.
    fn writes<'a>(&self, state: &'a Siblings, was_live: bool, out: &mut Vec<RowWrite<'a>>) {
        match self {
            Home::One { key, digest } => {
                out.push(RowWrite { key: key.clone(), old_digest: *digest, was_live, state: Some(state) })
            }
            Home::Item { live, live_digest, removed, removed_digest } => {
                let (to, to_digest, from, from_digest) = match state.has_live_value() {
                    true => (live, live_digest, removed, removed_digest),
                    false => (removed, removed_digest, live, live_digest),
                };
                out.push(RowWrite { key: to.clone(), old_digest: *to_digest, was_live, state: Some(state) });
                if from_digest.is_some() {
                    out.push(RowWrite { key: from.clone(), old_digest: *from_digest, was_live, state: None });
                }
            }
        }
    }
}

/// The lock stripe of a storage key: from its first bytes, the ring position, which every row of a key shares.
fn stripe(key: &[u8]) -> usize {
    // The first bytes of a storage key are MD5 output: already uniform.
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    (u64::from_be_bytes(b) as usize) % LOCK_STRIPES
}

/// Encodes a sibling set for storage: `[format][postcard]`.
pub fn encode(s: &Siblings) -> Bytes {
    // Sized up front from the values and a generous allowance per version and vector entry: growing the buffer
    // while serializing cost more than the serializing (two reallocs and copies per write).
    let estimate = 16
        + s.context().len() * 24
        + s.versions().iter().map(|v| 64 + v.value.as_ref().map_or(0, crate::versioning::Value::len)).sum::<usize>();
    let mut out = Vec::with_capacity(estimate);
    out.push(VALUE_FORMAT);
    Bytes::from(postcard::to_extend(s, out).expect("sibling sets always serialize"))
}

/// Decodes a stored sibling set.
pub fn decode(raw: &[u8]) -> Result<Siblings, StorageError> {
    match raw.split_first() {
        Some((&VALUE_FORMAT, body)) => postcard::from_bytes(body)
            .map_err(|e| StorageError::Corrupt { reason: format!("sibling set does not decode: {e}") }),
        Some((&FORMAT_3, body)) => postcard::from_bytes::<Format3Siblings>(body)
            .map(Siblings::from)
            .map_err(|e| StorageError::Corrupt { reason: format!("sibling set (format 3) does not decode: {e}") }),
        Some((&FORMAT_2, body)) => postcard::from_bytes::<Format2Siblings>(body)
            .map(Siblings::from)
            .map_err(|e| StorageError::Corrupt { reason: format!("sibling set (format 2) does not decode: {e}") }),
        Some((&LEGACY_VALUE_FORMAT, body)) => postcard::from_bytes::<LegacySiblings>(body)
            .map(Siblings::from)
            .map_err(|e| StorageError::Corrupt { reason: format!("sibling set (format 1) does not decode: {e}") }),
        Some((other, _)) => Err(StorageError::Corrupt { reason: format!("unknown value format {other}") }),
        None => Err(StorageError::Corrupt { reason: "empty stored value".into() }),
    }
}

/// Which way a scan goes.
#[derive(Clone, Copy)]
enum Direction {
    Forward,
    Backward,
}
