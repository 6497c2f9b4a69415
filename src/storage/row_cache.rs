//! The row cache (L1): the decoded states of recently used keys, so that reads and read-modify-writes of hot keys
//! skip the engine's memtable search, the copy out of it and the decode (issue 19's profile: 40% of a pipelined
//! GET's CPU).
//!
//! Coherence rests on one rule, which [`KvStore`](super::KvStore) keeps: an entry changes only while its key's
//! stripe lock is held, and every change of a stored row happens under that lock too. So
//! * a write puts its new state once the engine (or the write buffer) took it, and a delete puts [`Row::Absent`];
//! * a write the engine refused forgets the key (the engine may hold either state);
//! * a read that missed fills the entry while it holds the lock, so no write slips between its engine read and its
//!   fill (a fill without the lock could put back a state a write had just replaced, for good);
//! * a rewrite that changes the stored bytes but not the state (a format upgrade) forgets the key, because the
//!   entry keeps the hash tree's digest of the stored bytes;
//! * an engine reopen clears everything.
//!
//! Eviction is quick_cache's S3-FIFO over a byte budget (`--row-cache-mb`), so a scan does not flush the hot keys.

use std::sync::Arc;

use bytes::Bytes;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use crate::versioning::Siblings;

/// What the cache knows of one storage key.
#[derive(Clone, Debug)]
pub enum Row {
    /// The store holds nothing under the key.
    Absent,
    /// The key's decoded state, with what a write needs to know of the stored bytes it decodes from.
    Present {
        /// The decoded sibling set.
        state: Arc<Siblings>,
        /// The write observer's digest of the stored bytes (the hash tree's entry hash; 0 without an observer):
        /// a write tells the observer the old digest and the new.
        digest: u128,
        /// Length of the stored bytes (the decoded state holds about as many).
        stored_len: u32,
    },
}

/// Bytes an entry costs beyond its key and stored bytes: the decoded versions and vectors, the map slot, the Arc.
const ENTRY_OVERHEAD: u64 = 160;

#[derive(Clone)]
struct RowWeight;

impl Weighter<Bytes, Row> for RowWeight {
    fn weight(&self, key: &Bytes, row: &Row) -> u64 {
        // The decoded state holds about as many bytes as it was stored in (its values are copies).
        let stored = match row {
            Row::Absent => 0,
            Row::Present { stored_len, .. } => u64::from(*stored_len),
        };
        key.len() as u64 + stored + ENTRY_OVERHEAD
    }
}

/// A bounded cache of rows by storage key. See the module docs for the rule callers keep.
pub struct RowCache {
    rows: Cache<Bytes, Row, RowWeight>,
    capacity: u64,
    hits: metrics::Counter,
    misses: metrics::Counter,
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
            hits: metrics::counter!("dynamo_row_cache_hits_total"),
            misses: metrics::counter!("dynamo_row_cache_misses_total"),
        })
    }

    /// The row cached for `key`, counting the hit or miss.
    pub fn get(&self, key: &[u8]) -> Option<Row> {
        let row = self.rows.get(key);
        if row.is_some() {
            self.hits.increment(1)
        } else {
            self.misses.increment(1)
        }
        row
    }

    /// Records `key`'s row. Only under the key's stripe lock.
    pub fn put(&self, key: Bytes, row: Row) {
        self.rows.insert(key, row);
    }

    /// Forgets `key`. Only under the key's stripe lock.
    pub fn forget(&self, key: &[u8]) {
        self.rows.remove(key);
    }

    /// Forgets every row (the engine was reopened).
    pub fn clear(&self) {
        self.rows.clear();
    }

    /// Bytes held, as entries are weighed.
    pub fn weight(&self) -> u64 {
        self.rows.weight()
    }

    /// The byte budget.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}
