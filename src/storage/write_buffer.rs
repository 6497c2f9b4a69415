//! The in-memory write buffer of the `buffered` durability mode (paper §6.1): writes land here and a background
//! writer persists them in batches. Reads check the buffer before the engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use super::{Change, Engine, StorageError};

/// Pending changes plus the batch being written out.
#[derive(Default)]
pub(super) struct WriteBuffer {
    pending: Mutex<Pending>,
    /// The batch a flush is writing: still visible to readers until the engine holds it.
    flushing: RwLock<Arc<HashMap<Bytes, Option<Bytes>>>>,
    /// One flush at a time, so a newer batch never lands before an older one.
    flush_lock: Mutex<()>,
}

#[derive(Default)]
struct Pending {
    changes: HashMap<Bytes, Option<Bytes>>,
    bytes: usize,
}

/// What a read found in the buffer.
pub(super) enum Buffered {
    /// The key has a buffered value.
    Value(Bytes),
    /// The key has a buffered delete.
    Deleted,
    /// Not buffered: read the engine.
    Absent,
}

impl WriteBuffer {
    /// Looks `key` up in the pending changes, then in the batch being flushed.
    pub(super) fn get(&self, key: &[u8]) -> Buffered {
        // Lock order everywhere: pending, then flushing. Holding pending while reading flushing means a flush can
        // neither move a key between the two nor put a failed batch back while we look.
        let pending = self.pending.lock().expect("write buffer lock");
        if let Some(v) = pending.changes.get(key) {
            return found(v);
        }
        match self.flushing.read().expect("write buffer lock").get(key) {
            Some(v) => found(v),
            None => Buffered::Absent,
        }
    }

    /// Bytes waiting to be flushed.
    pub(super) fn pending_bytes(&self) -> usize {
        self.pending.lock().expect("write buffer lock").bytes
    }

    /// Buffers changes.
    pub(super) fn put(&self, changes: &[Change]) {
        let mut p = self.pending.lock().expect("write buffer lock");
        for (k, v) in changes {
            p.bytes += k.len() + v.as_ref().map_or(0, Bytes::len);
            p.changes.insert(k.clone(), v.clone());
        }
    }

    /// Writes `changes` straight to the engine (the paper's durable write, §6.1) and drops the pending changes of
    /// the same keys, which these supersede. Holding the flush lock means no flush is writing an older copy of these
    /// keys that could land after them. The caller holds the keys' locks, so no newer change of them is pending.
    pub(super) fn write_through(&self, engine: &dyn Engine, changes: &[Change]) -> Result<(), StorageError> {
        let _one_at_a_time = self.flush_lock.lock().expect("write buffer lock");
        engine.apply(changes)?;
        let mut p = self.pending.lock().expect("write buffer lock");
        for (k, _) in changes {
            if let Some(v) = p.changes.remove(k) {
                p.bytes -= k.len() + v.as_ref().map_or(0, Bytes::len);
            }
        }
        Ok(())
    }

    /// Writes every pending change to the engine. Returns how many changes were written.
    pub(super) fn flush(&self, engine: &dyn Engine) -> Result<usize, StorageError> {
        let _one_at_a_time = self.flush_lock.lock().expect("write buffer lock");
        let batch = {
            let mut p = self.pending.lock().expect("write buffer lock");
            if p.changes.is_empty() {
                return Ok(0);
            }
            let taken = Arc::new(std::mem::take(&mut p.changes));
            p.bytes = 0;
            *self.flushing.write().expect("write buffer lock") = taken.clone();
            taken
        };
        let changes: Vec<Change> = batch.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let result = engine.apply(&changes);
        let mut p = self.pending.lock().expect("write buffer lock");
        if result.is_err() {
            // Put the batch back (newer pending changes win) so nothing acknowledged is dropped, in the same
            // critical section that empties `flushing`: a reader never finds the key in neither place.
            for (k, v) in batch.iter() {
                if !p.changes.contains_key(k) {
                    p.bytes += k.len() + v.as_ref().map_or(0, Bytes::len);
                    p.changes.insert(k.clone(), v.clone());
                }
            }
        }
        *self.flushing.write().expect("write buffer lock") = Arc::default();
        drop(p);
        result.map(|_| changes.len())
    }
}

fn found(v: &Option<Bytes>) -> Buffered {
    match v {
        Some(v) => Buffered::Value(v.clone()),
        None => Buffered::Deleted,
    }
}
