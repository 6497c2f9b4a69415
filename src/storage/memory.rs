//! The in-memory engine: a `BTreeMap` behind a lock. Used by simulations and tests, and as the reference the
//! conformance suite holds fjall to.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::RwLock;

use bytes::Bytes;

use super::{Change, Engine, StorageError};

/// An ordered map in memory; nothing survives the process.
#[derive(Default)]
pub struct MemoryEngine {
    map: RwLock<BTreeMap<Bytes, Bytes>>,
}

impl MemoryEngine {
    /// An empty engine.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        Ok(self.map.read().expect("memory engine lock").get(key).cloned())
    }

    fn apply(&self, changes: &[Change]) -> Result<(), StorageError> {
        // One write lock for the whole batch makes it atomic for readers.
        let mut map = self.map.write().expect("memory engine lock");
        for (k, v) in changes {
            match v {
                Some(v) => map.insert(k.clone(), v.clone()),
                None => map.remove(k),
            };
        }
        Ok(())
    }

    fn scan(&self, range: (Bound<&[u8]>, Bound<&[u8]>), limit: usize) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let map = self.map.read().expect("memory engine lock");
        Ok(map.range::<[u8], _>(range).take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn scan_rev(&self, range: (Bound<&[u8]>, Bound<&[u8]>), limit: usize) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let map = self.map.read().expect("memory engine lock");
        Ok(map.range::<[u8], _>(range).rev().take(limit).map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn sync(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn disk_space(&self) -> u64 {
        0
    }
}
