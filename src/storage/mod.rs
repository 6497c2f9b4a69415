//! Storage (L1): engines behind one trait, the on-disk key layout, durability modes, and the per-key
//! read-modify-write store that holds sibling sets.
//!
//! * [`Engine`]: an ordered byte map with atomic batches, range scans and an explicit sync. Two engines implement it,
//!   [`fjall_engine::FjallEngine`] and [`memory::MemoryEngine`], and one conformance suite checks both.
//! * [`layout`]: storage key = MD5 ring position (16 bytes, big endian) ‖ user key, so one partition of the ring is
//!   one contiguous range scan.
//! * [`store::KvStore`]: sibling sets per key, updated atomically under a key lock, with the configured durability.
//! * [`meta::NodeMeta`]: the node's identity in its data directory (epoch, dot counter, clean-shutdown marker).
//! * [`write_gate::WriteGate`]: whether writes are taken, stopped before the disk fills or after a write failed.
//! * [`recovery::Recovery`]: the key ranges this replica cannot vouch for yet, after a wipe or a lossy crash.

pub mod fjall_engine;
pub mod hints;
pub mod layout;
pub mod memory;
pub mod meta;
pub mod recovery;
pub mod row_cache;
pub mod store;
pub mod tallies;
pub mod upgrade;
mod write_buffer;
pub mod write_gate;

#[cfg(test)]
mod conformance;

use std::ops::Bound;

use bytes::Bytes;

pub use store::KvStore;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine failed (I/O, corruption, a full disk).
    #[error("storage engine failure: {message}")]
    Engine {
        /// The engine's own description.
        message: String,
    },
    /// A stored value could not be decoded.
    #[error("stored value for a key is corrupt: {reason}")]
    Corrupt {
        /// What was wrong.
        reason: String,
    },
    /// File-system failure outside the engine (node metadata).
    #[error("{action} {path}: {source}")]
    Io {
        /// What we tried.
        action: &'static str,
        /// The file involved.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store stopped taking writes (the node is shutting down).
    #[error("node is shutting down")]
    Closed,
    /// Writes are stopped: the disk is below its free-space floor, or a write failed ([`write_gate`]).
    #[error("writes stopped on this node: {reason}")]
    WritesStopped {
        /// Why, and what brings writes back.
        reason: String,
    },
    /// The data directory belongs to another node, or is otherwise unusable.
    #[error("data directory {path} is unusable: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
}

impl From<fjall::Error> for StorageError {
    fn from(e: fjall::Error) -> Self {
        // fjall's Display says only "FjallError"; the operator needs the cause.
        let message = match e {
            fjall::Error::Io(io) => io.to_string(),
            fjall::Error::Poisoned => "poisoned by an earlier failed journal write".into(),
            other => format!("{other:?}"),
        };
        StorageError::Engine { message }
    }
}

/// Told of every change to stored values, under the key's lock (hash trees keep themselves current this way).
pub trait WriteObserver: Send + Sync + 'static {
    /// The observer's digest of one stored entry: all it needs to remember of `value` under `storage_key`. The
    /// store keeps the digest of each cached row, so a write of a cached key digests only its new value.
    fn digest(&self, storage_key: &[u8], value: &[u8]) -> u128;
    /// `storage_key` changed from the entry with digest `old` to the one with digest `new` (`None`: absent).
    fn on_change(&self, storage_key: &[u8], old: Option<u128>, new: Option<u128>);
    /// Forget every key: a rebuild replays them all again.
    fn reset(&self);
}

/// One change in an atomic batch: `Some(value)` to put, `None` to delete.
pub type Change = (Bytes, Option<Bytes>);

/// An ordered byte map. Implementations must apply a batch atomically: a reader sees all of it or none of it, and
/// after a crash either all of it or none of it is recovered.
pub trait Engine: Send + Sync + 'static {
    /// A short name for logs and INFO.
    fn name(&self) -> &'static str;
    /// The value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>, StorageError>;
    /// Applies every change atomically. Returns once the changes reached the operating system (or memory, for the
    /// in-memory engine); not necessarily the disk.
    fn apply(&self, changes: &[Change]) -> Result<(), StorageError>;
    /// As [`apply`](Self::apply), but the changes may wait in the process until the next [`flush`](Self::flush)
    /// (or `apply`, or `sync`): many writes then share one write to the operating system (group commit).
    fn apply_unflushed(&self, changes: &[Change]) -> Result<(), StorageError> {
        self.apply(changes)
    }
    /// Hands everything applied so far to the operating system (not necessarily the disk).
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Up to `limit` entries with keys in `range`, in key order.
    fn scan(&self, range: (Bound<&[u8]>, Bound<&[u8]>), limit: usize) -> Result<Vec<(Bytes, Bytes)>, StorageError>;
    /// Up to `limit` entries with keys in `range`, from the last down (a list's tail). The default reads the whole
    /// range forward: engines that can walk backwards override it.
    fn scan_rev(&self, range: (Bound<&[u8]>, Bound<&[u8]>), limit: usize) -> Result<Vec<(Bytes, Bytes)>, StorageError> {
        let mut all = self.scan(range, usize::MAX)?;
        all.reverse();
        all.truncate(limit);
        Ok(all)
    }
    /// Makes everything applied so far durable on disk (fsync).
    fn sync(&self) -> Result<(), StorageError>;
    /// Bytes used on disk (0 for the in-memory engine).
    fn disk_space(&self) -> u64;
    /// Sorted tables on disk: rises with flushes and falls with compactions (0 for the in-memory engine).
    fn table_count(&self) -> u64 {
        0
    }
    /// Bytes free for this engine's files on their file system (`None`: not on disk).
    fn free_space(&self) -> Option<u64> {
        None
    }
    /// Opens the engine again after a failed write left it unusable, replaying what it holds.
    fn reopen(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Writes what the engine holds only in memory (and in its journal) to its tables, so that the next start has
    /// nothing to replay. Blocking; called at a clean stop.
    fn flush_memtables(&self) -> Result<(), StorageError> {
        Ok(())
    }
}
