//! The fjall engine: an LSM tree with a journal, so applied batches survive kill -9 and, after [`Engine::sync`],
//! power loss.
//!
//! fjall poisons a database after a failed journal write (a full disk, an I/O error): every later write fails
//! until the database is opened again. The engines of one database therefore share its handles behind a lock, and
//! [`Engine::reopen`] replaces them in place, replaying the journal, without a restart of the node.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::{Change, Engine, StorageError};

/// Name of the keyspace holding sibling sets.
const DATA_KEYSPACE: &str = "data";
/// Largest memtable of a keyspace. A start replays the journal of every memtable not yet flushed to a table (after
/// a clean stop too), so this bounds start-up time: fjall's default of 64 MiB took 1.6 s to replay with 1M small
/// keys; 16 MiB keeps it a few hundred ms whatever the data size.
const MAX_MEMTABLE_BYTES: u64 = 16 << 20;

fn keyspace_options() -> KeyspaceCreateOptions {
    // Writes stay in the journal's buffer until we persist it: `apply` does at once, `apply_unflushed` leaves it to
    // the store's group flush (one write(2) for many requests). fjall keeps this setting per keyspace from when it
    // was created, so a data directory from before persists every write by itself: slower, never less durable.
    KeyspaceCreateOptions::default().max_memtable_size(MAX_MEMTABLE_BYTES).manual_journal_persist(true)
}

/// The open handles of one database: the database and each keyspace an engine uses, by slot.
struct Handles {
    db: Database,
    keyspaces: Vec<Keyspace>,
}

/// One fjall database, shared by the engines of its keyspaces.
struct Shared {
    dir: PathBuf,
    cache_bytes: u64,
    /// Keyspace names by slot: an engine keeps its slot across reopens.
    names: RwLock<Vec<String>>,
    /// `None` only while a reopen failed (every operation then fails until one succeeds).
    handles: RwLock<Option<Handles>>,
}

impl Shared {
    fn open_db(&self) -> Result<Database, StorageError> {
        Database::builder(&self.dir).cache_size(self.cache_bytes).open().map_err(|e| match e {
            fjall::Error::Locked => StorageError::DataDir {
                path: self.dir.display().to_string(),
                reason: "it is in use by another dynamo-kv process".into(),
            },
            other => other.into(),
        })
    }
}

/// fjall-backed engine: one keyspace of a database.
pub struct FjallEngine {
    shared: Arc<Shared>,
    slot: usize,
}

impl FjallEngine {
    /// Opens (or creates) the database under `dir`. `cache_bytes` sizes fjall's block cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        let shared = Shared {
            dir: dir.to_path_buf(),
            cache_bytes,
            names: RwLock::new(vec![DATA_KEYSPACE.to_string()]),
            handles: RwLock::new(None),
        };
        let db = shared.open_db()?;
        let data = db.keyspace(DATA_KEYSPACE, keyspace_options)?;
        *shared.handles.write().expect("handles lock") = Some(Handles { db, keyspaces: vec![data] });
        Ok(Self { shared: Arc::new(shared), slot: 0 })
    }

    /// Another keyspace of the same database (one journal, so one kill -9 story), as an engine of its own.
    pub fn keyspace(&self, name: &str) -> Result<Self, StorageError> {
        let mut handles = self.shared.handles.write().expect("handles lock");
        let h = handles.as_mut().ok_or_else(reopening)?;
        let ks = h.db.keyspace(name, keyspace_options)?;
        let mut names = self.shared.names.write().expect("names lock");
        names.push(name.to_string());
        h.keyspaces.push(ks);
        Ok(Self { shared: self.shared.clone(), slot: names.len() - 1 })
    }

    /// Runs `f` on this engine's keyspace (and its database). While a reopen replays the journal (up to a second or
    /// so), callers get an error at once instead of waiting: they run on the async runtime's few threads, and a node
    /// whose threads all wait cannot even answer PING.
    fn with<T>(&self, f: impl FnOnce(&Database, &Keyspace) -> Result<T, StorageError>) -> Result<T, StorageError> {
        let handles = match self.shared.handles.try_read() {
            Ok(h) => h,
            Err(std::sync::TryLockError::WouldBlock) => return Err(reopening()),
            Err(std::sync::TryLockError::Poisoned(e)) => panic!("storage handles lock poisoned: {e}"),
        };
        let h = handles.as_ref().ok_or_else(reopening)?;
        f(&h.db, &h.keyspaces[self.slot])
    }
}

fn reopening() -> StorageError {
    StorageError::Engine { message: "the storage engine is reopening after a failed write".into() }
}

impl Engine for FjallEngine {
    fn name(&self) -> &'static str {
        "fjall"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError> {
        self.with(|_, ks| Ok(ks.get(key)?.map(Bytes::from)))
    }

    fn apply(&self, changes: &[Change]) -> Result<(), StorageError> {
        self.apply_unflushed(changes)?;
        self.flush()
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.with(|db, _| Ok(db.persist(PersistMode::Buffer)?))
    }

    fn apply_unflushed(&self, changes: &[Change]) -> Result<(), StorageError> {
        self.with(|db, ks| {
            if let [(k, v)] = changes {
                // A single change is atomic on its own; skip the batch allocation.
                match v {
                    Some(v) => ks.insert(k.clone(), v.clone())?,
                    None => ks.remove(k.clone())?,
                }
                return Ok(());
            }
            let mut batch = db.batch();
            for (k, v) in changes {
                match v {
                    Some(v) => batch.insert(ks, k.clone(), v.clone()),
                    None => batch.remove(ks, k.clone()),
                }
            }
            batch.commit()?;
            Ok(())
        })
    }

    fn scan(&self, range: (Bound<&[u8]>, Bound<&[u8]>), limit: usize) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        self.with(|_, ks| {
            let mut out = Vec::new();
            for guard in ks.range::<&[u8], _>(range).take(limit) {
                let (k, v) = guard.into_inner()?;
                out.push((Bytes::from(k), Bytes::from(v)));
            }
            Ok(out)
        })
    }

    fn scan_rev(&self, range: (Bound<&[u8]>, Bound<&[u8]>), limit: usize) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        self.with(|_, ks| {
            let mut out = Vec::new();
            for guard in ks.range::<&[u8], _>(range).rev().take(limit) {
                let (k, v) = guard.into_inner()?;
                out.push((Bytes::from(k), Bytes::from(v)));
            }
            Ok(out)
        })
    }

    fn sync(&self) -> Result<(), StorageError> {
        self.with(|db, _| Ok(db.persist(PersistMode::SyncData)?))
    }

    fn disk_space(&self) -> u64 {
        self.with(|db, _| Ok(db.disk_space().unwrap_or(0))).unwrap_or(0)
    }

    fn table_count(&self) -> u64 {
        self.with(|_, ks| Ok(ks.table_count() as u64)).unwrap_or(0)
    }

    fn free_space(&self) -> Option<u64> {
        let st = rustix::fs::statvfs(&self.shared.dir).ok()?;
        Some(st.f_bavail.saturating_mul(st.f_frsize))
    }

    fn flush_memtables(&self) -> Result<(), StorageError> {
        let handles = self.shared.handles.read().expect("handles lock");
        let h = handles.as_ref().ok_or_else(reopening)?;
        // fjall 3.1 offers this only as a hidden (test) API; without it a start replays up to a memtable of journal
        // per keyspace. Every keyspace of the database shares the journal, so all are flushed.
        for ks in &h.keyspaces {
            ks.rotate_memtable_and_wait()?;
        }
        Ok(())
    }

    fn reopen(&self) -> Result<(), StorageError> {
        let mut handles = self.shared.handles.write().expect("handles lock");
        // Every handle must go before the database can be opened again: fjall holds its lock file until then.
        drop(handles.take());
        let db = self.shared.open_db()?;
        let names = self.shared.names.read().expect("names lock");
        let keyspaces = names.iter().map(|n| db.keyspace(n, keyspace_options)).collect::<Result<Vec<_>, _>>()?;
        *handles = Some(Handles { db, keyspaces });
        tracing::info!(dir = %self.shared.dir.display(), "storage engine reopened");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopen_keeps_every_keyspace_and_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let data = FjallEngine::open(dir.path(), 8 << 20).unwrap();
        let hints = data.keyspace("hints").unwrap();
        data.apply(&[(Bytes::from_static(b"k"), Some(Bytes::from_static(b"v")))]).unwrap();
        hints.apply(&[(Bytes::from_static(b"h"), Some(Bytes::from_static(b"x")))]).unwrap();
        data.reopen().unwrap();
        assert_eq!(data.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(hints.get(b"h").unwrap().as_deref(), Some(&b"x"[..]));
        hints.apply(&[(Bytes::from_static(b"h2"), Some(Bytes::from_static(b"y")))]).unwrap();
        assert_eq!(hints.get(b"h2").unwrap().as_deref(), Some(&b"y"[..]));
        assert!(data.free_space().unwrap() > 0);
    }
}
