//! Hints (paper §4.6): replicas a node holds for another node that was unreachable, kept apart from its own data
//! and delivered when that node answers again.
//!
//! Layout in their own keyspace: key = `[len(target)][target][storage key]` (a storage key names one row of a key:
//! hints of a collection are kept per row), value = `[stored at, ms: 8 bytes BE][encoded sibling set]`. Hints for
//! the same row and target merge (the sibling merge), so any number of missed writes becomes one delivery. A hint is deleted only after the target acknowledged it, and only if it did not
//! change meanwhile (a newer write merged into it is delivered next time).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};

use super::layout::prefix_end;
use super::store::{decode, encode};
use super::{Engine, StorageError, layout};
use crate::crdt::rows::Rows;
use crate::versioning::Siblings;

/// Backlog of hints for one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Hints held.
    pub count: u64,
    /// Bytes held.
    pub bytes: u64,
    /// When the oldest hint was stored (ms since the Unix epoch).
    pub oldest_ms: Option<u64>,
}

/// One hint ready for delivery.
#[derive(Clone, Debug)]
pub struct Hint {
    /// The hint's own key (for deletion).
    pub raw_key: Bytes,
    /// The stored value, as read (deletion only if unchanged).
    pub raw_value: Bytes,
    /// The user key.
    pub user_key: Bytes,
    /// The row of the key (empty: its key row).
    pub row: Bytes,
    /// The state to deliver.
    pub state: Siblings,
    /// When the hint was first stored (ms since the Unix epoch).
    pub stored_ms: u64,
}

/// Durable hints on an engine of their own.
pub struct HintStore {
    engine: Arc<dyn Engine>,
    /// Read-modify-write of hints is rare (only while a node is down): one lock is enough.
    lock: Mutex<()>,
    backlog: Mutex<BTreeMap<String, Backlog>>,
}

fn prefix(target: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(target.len() + 1);
    p.push(target.len().min(255) as u8);
    p.extend_from_slice(&target.as_bytes()[..target.len().min(255)]);
    p
}

fn parse_key(raw: &[u8]) -> Option<(String, &[u8])> {
    let (&len, rest) = raw.split_first()?;
    let (target, storage_key) = rest.split_at_checked(len as usize)?;
    Some((String::from_utf8_lossy(target).into_owned(), storage_key))
}

fn parse_value(raw: &[u8]) -> Result<(u64, Siblings), StorageError> {
    let (at, body) = raw.split_at_checked(8).ok_or_else(|| StorageError::Corrupt { reason: "short hint".into() })?;
    Ok((u64::from_be_bytes(at.try_into().expect("8 bytes")), decode(body)?))
}

impl HintStore {
    /// Opens the store and rebuilds the backlog figures from what is stored.
    pub fn open(engine: Arc<dyn Engine>) -> Result<Self, StorageError> {
        let store = Self { engine, lock: Mutex::new(()), backlog: Mutex::new(BTreeMap::new()) };
        let mut backlog: BTreeMap<String, Backlog> = BTreeMap::new();
        let mut after: Option<Bytes> = None;
        loop {
            let lower = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let page = store.engine.scan((lower, Bound::Unbounded), 4096)?;
            for (k, v) in &page {
                if let Some((target, _)) = parse_key(k) {
                    let (at, _) = parse_value(v)?;
                    let b = backlog.entry(target).or_default();
                    b.count += 1;
                    b.bytes += (k.len() + v.len()) as u64;
                    b.oldest_ms = Some(b.oldest_ms.map_or(at, |o| o.min(at)));
                }
            }
            match page.last() {
                Some((k, _)) if page.len() == 4096 => after = Some(k.clone()),
                _ => break,
            }
        }
        *store.backlog.lock().expect("backlog lock") = backlog;
        Ok(store)
    }

    /// Stores (merges) hints of `rows` of `user_key` for `target`.
    pub fn put(&self, target: &str, user_key: &[u8], rows: &Rows, now_ms: u64) -> Result<(), StorageError> {
        for (row, state) in rows.rows() {
            self.put_row(target, &layout::row_key(user_key, row), state, now_ms)?;
        }
        Ok(())
    }

    fn put_row(&self, target: &str, storage_key: &[u8], state: &Siblings, now_ms: u64) -> Result<(), StorageError> {
        let _guard = self.lock.lock().expect("hint lock");
        let mut key = prefix(target);
        key.extend_from_slice(storage_key);
        let existing = self.engine.get(&key)?;
        let (at, merged, old_len) = match &existing {
            Some(v) => {
                // The hint's age counts from the latest write merged into it: an old hint with a new write in it
                // must not expire early.
                let (_, mut s) = parse_value(v)?;
                s.merge(state);
                (now_ms, s, v.len())
            }
            None => (now_ms, state.clone(), 0),
        };
        let mut value = BytesMut::with_capacity(64);
        value.put_u64(at);
        value.extend_from_slice(&encode(&merged));
        let (klen, vlen) = (key.len(), value.len());
        self.engine.apply(&[(Bytes::from(key), Some(value.freeze()))])?;
        let mut backlog = self.backlog.lock().expect("backlog lock");
        let b = backlog.entry(target.to_string()).or_default();
        if existing.is_none() {
            b.count += 1;
            b.bytes += (klen + vlen) as u64;
            b.oldest_ms = Some(b.oldest_ms.map_or(at, |o| o.min(at)));
        } else {
            b.bytes = (b.bytes + vlen as u64).saturating_sub(old_len as u64);
        }
        metrics::counter!("dynamo_hints_stored_total").increment(1);
        Ok(())
    }

    /// The merge of every hint held for the key row of `user_key`, whatever its target: what this node can answer
    /// as a stand-in.
    pub fn get_any(&self, user_key: &[u8]) -> Result<Option<Siblings>, StorageError> {
        Ok(self.get_rows(user_key, Some(&[]))?.key_row().cloned())
    }

    /// The merge of every hint held for rows of `user_key` (its key row and `rows`; `None`: every row), whatever
    /// their target.
    pub fn get_rows(&self, user_key: &[u8], rows: Option<&[Bytes]>) -> Result<Rows, StorageError> {
        let key_row = layout::storage_key(user_key);
        let targets: Vec<String> = self.backlog.lock().expect("backlog lock").keys().cloned().collect();
        let mut out = Rows::new();
        for target in targets {
            let mut start = prefix(&target);
            start.extend_from_slice(&key_row);
            match rows {
                Some(rows) => {
                    for row in std::iter::once(&Bytes::new()).chain(rows.iter().filter(|r| !r.is_empty())) {
                        let mut key = start.clone();
                        key.extend_from_slice(row);
                        if let Some(v) = self.engine.get(&key)? {
                            out.merge_row(row.clone(), &parse_value(&v)?.1);
                        }
                    }
                }
                None => {
                    // Every hint of the key for this target: they begin with its key row's storage key.
                    let end = prefix_end(&start);
                    let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                    let mut lower = Bound::Included(Bytes::from(start.clone()));
                    loop {
                        let page = self.engine.scan((lower.as_ref().map(|b| &b[..]), upper), 1024)?;
                        for (k, v) in &page {
                            out.merge_row(Bytes::copy_from_slice(&k[start.len()..]), &parse_value(v)?.1);
                        }
                        match page.last() {
                            Some((k, _)) if page.len() == 1024 => lower = Bound::Excluded(k.clone()),
                            _ => break,
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Up to `limit` hints for `target`, in key order.
    pub fn batch(&self, target: &str, limit: usize) -> Result<Vec<Hint>, StorageError> {
        let start = prefix(target);
        let end = prefix_end(&start);
        let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let page = self.engine.scan((Bound::Included(&start[..]), upper), limit)?;
        page.into_iter()
            .filter_map(|(k, v)| {
                let (t, storage_key) = parse_key(&k)?;
                let (user_key, row) = layout::parse(storage_key)?;
                let (user_key, row) = (Bytes::copy_from_slice(user_key), Bytes::copy_from_slice(row));
                (t == target).then(|| (k.clone(), v.clone(), user_key, row))
            })
            .map(|(raw_key, raw_value, user_key, row)| {
                let (stored_ms, state) = parse_value(&raw_value)?;
                Ok(Hint { raw_key, raw_value, user_key, row, state, stored_ms })
            })
            .collect()
    }

    /// Deletes a delivered hint, unless it changed since it was read (then it is delivered again later).
    pub fn delete_delivered(&self, target: &str, hint: &Hint) -> Result<bool, StorageError> {
        let _guard = self.lock.lock().expect("hint lock");
        if self.engine.get(&hint.raw_key)?.as_ref() != Some(&hint.raw_value) {
            return Ok(false);
        }
        self.engine.apply(&[(hint.raw_key.clone(), None)])?;
        let mut backlog = self.backlog.lock().expect("backlog lock");
        if let Some(b) = backlog.get_mut(target) {
            b.count = b.count.saturating_sub(1);
            b.bytes = b.bytes.saturating_sub((hint.raw_key.len() + hint.raw_value.len()) as u64);
            if b.count == 0 {
                backlog.remove(target);
            }
        }
        metrics::counter!("dynamo_hints_delivered_total").increment(1);
        Ok(true)
    }

    /// The backlog per target.
    pub fn backlog(&self) -> BTreeMap<String, Backlog> {
        self.backlog.lock().expect("backlog lock").clone()
    }

    /// Makes stored hints durable on disk.
    pub fn sync(&self) -> Result<(), StorageError> {
        self.engine.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryEngine;
    use crate::versioning::{Actor, Dot, VersionVector};

    fn state(actor: u64, v: &'static str) -> Rows {
        Rows::key_only(sibling(actor, v))
    }

    fn sibling(actor: u64, v: &'static str) -> Siblings {
        let mut s = Siblings::new();
        s.update(
            &VersionVector::new(),
            Dot { actor: Actor(actor), counter: 1 },
            0,
            Some(Bytes::from_static(v.as_bytes())),
        );
        s
    }

    #[test]
    fn hints_merge_deliver_and_survive_reopen() {
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new());
        let hints = HintStore::open(engine.clone()).unwrap();
        hints.put("n2", b"k", &state(1, "a"), 10).unwrap();
        hints.put("n2", b"k", &state(2, "b"), 20).unwrap();
        hints.put("n3", b"j", &state(1, "c"), 30).unwrap();
        let b = hints.backlog();
        assert_eq!(b["n2"].count, 1, "two hints of one key merge");
        assert_eq!(b["n2"].oldest_ms, Some(10));
        assert_eq!(b["n3"].count, 1);
        // A target whose id is a prefix of another's does not see the other's hints.
        hints.put("n", b"x", &state(1, "d"), 40).unwrap();
        assert_eq!(hints.batch("n", 10).unwrap().len(), 1);

        let reopened = HintStore::open(engine).unwrap();
        let counts =
            |b: BTreeMap<String, Backlog>| b.into_iter().map(|(t, b)| (t, b.count, b.bytes)).collect::<Vec<_>>();
        assert_eq!(counts(reopened.backlog()), counts(hints.backlog()));
        let batch = reopened.batch("n2", 10).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].user_key, Bytes::from_static(b"k"));
        assert_eq!(batch[0].state.sibling_count(), 2);
        // A hint that changed after it was read is kept for the next delivery.
        reopened.put("n2", b"k", &state(3, "c"), 50).unwrap();
        assert!(!reopened.delete_delivered("n2", &batch[0]).unwrap());
        let batch = reopened.batch("n2", 10).unwrap();
        assert!(reopened.delete_delivered("n2", &batch[0]).unwrap());
        assert!(!reopened.backlog().contains_key("n2"));
    }
}
