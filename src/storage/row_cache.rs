//! The row cache (L1): the stored rows of recently used keys, so that reads and read-modify-writes of hot keys
//! skip the engine's memtable search and the copy out of it (issue 19's profile: 40% of a pipelined GET's CPU).
//! It keeps the stored bytes, not the decoded state: a decode costs about what a clone of the decoded state would
//! (both allocate the versions), and the bytes take a third of the memory, so the same budget holds three times the
//! keys. A written row's bytes are the very allocation the engine's memtable holds.
//!
//! Coherence rests on one rule, which [`KvStore`](super::KvStore) keeps: an entry changes only while its key's
//! stripe lock is held, and every change of a stored row happens under that lock too. So
//! * a write puts its new state once the engine (or the write buffer) took it, and a delete puts [`Row::Absent`];
//! * a write the engine refused forgets the key (the engine may hold either state);
//! * a read that missed fills the entry while it holds the lock, so no write slips between its engine read and its
//!   fill (a fill without the lock could put back a state a write had just replaced, for good);
//! * a rewrite that changes the stored bytes but not the state (a format upgrade) forgets the key;
//! * an engine reopen clears everything.
//!
//! Eviction is quick_cache's S3-FIFO over a byte budget (`--row-cache-mb`), so a scan does not flush the hot keys.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// What the cache knows of one storage key.
#[derive(Clone, Debug)]
pub enum Row {
    /// The store holds nothing under the key.
    Absent,
    /// The key's stored bytes.
    Present {
        /// What the engine holds under the key.
        raw: Bytes,
        /// The write observer's digest of `raw` (the hash tree's entry hash; 0 without an observer): a write tells
        /// the observer the old digest and the new, and need not hash the old bytes again.
        digest: u128,
    },
}

/// Bytes an entry costs beyond its key and its row: the map slot and its bookkeeping (with the evicted keys'
/// ghosts), the allocator's size classes. Set so that a node's resident memory grows by about the budget (measured:
/// 1M keys of 100 bytes through a 64 MiB cache).
const ENTRY_OVERHEAD: u64 = 160;

/// Longest storage key kept inside the map's entry: a 16-byte ring position and a user key of up to 30 bytes, so
/// that the whole key is 48 bytes with its length and tag.
const INLINE_KEY_BYTES: usize = 46;

/// A storage key as the cache keeps it. A lookup compares the key it finds in the map's entry; kept inline, that
/// key is in the entry's own cache lines, where a `Bytes` was a pointer to one more memory miss per lookup (the
/// comparison was 5% of a pipelined GET's CPU over 100k keys). Longer keys stay on the heap.
#[derive(Clone)]
enum CacheKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY_BYTES] },
    Heap(Bytes),
}

impl CacheKey {
    fn new(key: Bytes) -> Self {
        if key.len() > INLINE_KEY_BYTES {
            return CacheKey::Heap(key);
        }
        let mut bytes = [0; INLINE_KEY_BYTES];
        bytes[..key.len()].copy_from_slice(&key);
        CacheKey::Inline { len: key.len() as u8, bytes }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            CacheKey::Inline { len, bytes } => &bytes[..*len as usize],
            CacheKey::Heap(key) => key,
        }
    }
}

// Equality and hash are the bytes' own, as `Borrow` requires: lookups go by `&[u8]`.
impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl Borrow<[u8]> for CacheKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

#[derive(Clone)]
struct RowWeight;

impl Weighter<CacheKey, Row> for RowWeight {
    fn weight(&self, key: &CacheKey, row: &Row) -> u64 {
        let row = match row {
            Row::Absent => 0,
            Row::Present { raw, .. } => raw.len() as u64,
        };
        key.as_slice().len() as u64 + row + ENTRY_OVERHEAD
    }
}

/// A bounded cache of rows by storage key. See the module docs for the rule callers keep.
pub struct RowCache {
    rows: Cache<CacheKey, Row, RowWeight>,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    hits_metric: metrics::Counter,
    misses_metric: metrics::Counter,
}

/// What `INFO` shows of the cache.
#[derive(Clone, Copy, Debug)]
pub struct RowCacheStats {
    /// Bytes held, as entries are weighed (about what they take in memory).
    pub bytes: u64,
    /// The byte budget.
    pub budget: u64,
    /// Rows held (an absent key's row included).
    pub rows: usize,
    /// Lookups that found the row.
    pub hits: u64,
    /// Lookups that went to the engine.
    pub misses: u64,
}

impl RowCache {
    /// A cache of at most `capacity` bytes (as [`RowWeight`] counts them); `None` for 0 (no cache).
    pub fn new(capacity: u64) -> Option<Self> {
        if capacity == 0 {
            return None;
        }
        let estimated_rows = (capacity / 512).max(64) as usize;
        Some(RowCache {
            rows: Cache::with_weighter(estimated_rows, capacity, RowWeight),
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            hits_metric: metrics::counter!("dynamo_row_cache_hits_total"),
            misses_metric: metrics::counter!("dynamo_row_cache_misses_total"),
        })
    }

    /// The row cached for `key`, counting the hit or miss.
    pub fn get(&self, key: &[u8]) -> Option<Row> {
        let row = self.rows.get(key);
        if row.is_some() {
            self.hit()
        } else {
            self.miss()
        }
        row
    }

    /// The row cached for `key`, counting only a hit: for a lookup that, when it misses, looks again under the
    /// key's lock with [`get`](Self::get), which counts the outcome.
    pub fn get_if_cached(&self, key: &[u8]) -> Option<Row> {
        let row = self.rows.get(key);
        if row.is_some() {
            self.hit();
        }
        row
    }

    fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
        self.hits_metric.increment(1);
    }

    fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.misses_metric.increment(1);
    }

    /// Records that `key` is absent. Only under the key's stripe lock.
    pub fn put_absent(&self, key: Bytes) {
        self.rows.insert(CacheKey::new(key), Row::Absent);
    }

    /// Records `key`'s stored bytes and their digest. Only under the key's stripe lock.
    pub fn put(&self, key: Bytes, raw: Bytes, digest: u128) {
        self.rows.insert(CacheKey::new(key), Row::Present { raw, digest });
    }

    /// Forgets `key`. Only under the key's stripe lock.
    pub fn forget(&self, key: &[u8]) {
        self.rows.remove(key);
    }

    /// Forgets every row (the engine was reopened).
    pub fn clear(&self) {
        self.rows.clear();
    }

    /// Its figures for `INFO`.
    pub fn stats(&self) -> RowCacheStats {
        RowCacheStats {
            bytes: self.rows.weight(),
            budget: self.capacity,
            rows: self.rows.len(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_inline_and_on_the_heap_are_found_by_their_bytes() {
        let cache = RowCache::new(1 << 20).expect("a cache");
        // Both sides of the inline bound, the empty key, and keys that share a prefix.
        let keys: Vec<Bytes> = [0, 1, INLINE_KEY_BYTES - 1, INLINE_KEY_BYTES, INLINE_KEY_BYTES + 1, 200]
            .into_iter()
            .map(|n| Bytes::from(vec![b'k'; n]))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            cache.put(k.clone(), Bytes::from(vec![i as u8; 3]), i as u128);
        }
        for (i, k) in keys.iter().enumerate() {
            match cache.get(k) {
                Some(Row::Present { raw, digest }) => {
                    assert_eq!((raw.as_ref(), digest), (&[i as u8; 3][..], i as u128), "key of {} bytes", k.len())
                }
                other => panic!("key of {} bytes: {other:?}", k.len()),
            }
        }
        assert!(cache.get(&[b'k'; 2]).is_none());
        cache.forget(&keys[3]);
        cache.put_absent(keys[4].clone());
        assert!(cache.get(&keys[3]).is_none());
        assert!(matches!(cache.get(&keys[4]), Some(Row::Absent)));
        assert!(matches!(cache.get(&keys[5]), Some(Row::Present { .. })));
        assert_eq!(cache.stats().rows, keys.len() - 1);
    }
}
