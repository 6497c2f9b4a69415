//! A simulated disk: an ordered map that outlives the node using it, and loses on a crash what the node had not
//! handed to the operating system yet (as a kill -9 of a real node loses fjall's unflushed journal buffer).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use bytes::Bytes;
use dynamo_kv::storage::{Change, Engine, StorageError};

#[derive(Default)]
struct State {
    map: BTreeMap<Bytes, Bytes>,
    /// What each change applied since the last flush replaced, oldest first: undone by a crash.
    unflushed: Vec<(Bytes, Option<Bytes>)>,
}

/// One node's disk (its keys, or its hints).
#[derive(Default)]
pub struct SimDisk {
    state: Mutex<State>,
}

impl SimDisk {
    /// A kill -9: what was applied but never flushed is gone.
    pub fn crash(&self) {
        let mut s = self.state.lock().unwrap();
        let undo = std::mem::take(&mut s.unflushed);
        for (k, old) in undo.into_iter().rev() {
            match old {
                Some(v) => s.map.insert(k, v),
                None => s.map.remove(&k),
            };
        }
    }

    fn put(&self, changes: &[Change], flushed: bool) {
        let mut s = self.state.lock().unwrap();
        for (k, v) in changes {
            let old = match v {
                Some(v) => s.map.insert(k.clone(), v.clone()),
                None => s.map.remove(k),
            };
            if !flushed {
                s.unflushed.push((k.clone(), old));
            }
        }
        if flushed {
            s.unflushed.clear();
        }
    }
}

impl Engine for SimDisk {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        Ok(self.state.lock().unwrap().map.get(key).cloned())
    }

    fn apply(&self, changes: &[Change]) -> Result<(), StorageError> {
        self.put(changes, true);
        Ok(())
    }

    fn apply_unflushed(&self, changes: &[Change]) -> Result<(), StorageError> {
        self.put(changes, false);
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.state.lock().unwrap().unflushed.clear();
        Ok(())
    }

    fn scan(&self, range: (Bound<&[u8]>, Bound<&[u8]>), limit: usize) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let s = self.state.lock().unwrap();
        Ok(s.map.range::<[u8], _>(range).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.flush()
    }

    fn disk_space(&self) -> u64 {
        0
    }
}
