//! The node's identity in its data directory: node id, epoch and dot counter, plus a clean-shutdown marker.
//!
//! Why an epoch: a dot must never be issued twice for different values. A node whose directory was wiped, or that
//! crashed and may have lost the tail of its writes (buffered mode, power loss), no longer knows which counters it
//! issued; other replicas may hold versions stamped with them. Riak lost acknowledged writes this way (KV679).
//! So every start that is not preceded by a clean shutdown takes a fresh random epoch, and with it a new actor;
//! after a clean shutdown the node keeps its actor and resumes the counter it saved.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::StorageError;
use crate::versioning::{Actor, Dot};

/// File name inside the data directory.
const META_FILE: &str = "node.meta";
/// Format of the file, and of the data directory: 3 keeps collections as a row per element under length-prefixed
/// user keys (`storage::layout`); 2 placed keys by hash slot, one row each (upgraded at start, `storage::upgrade`);
/// 1 placed them by MD5 alone.
pub const META_FORMAT: u32 = 3;

#[derive(Serialize, Deserialize)]
struct MetaFile {
    format: u32,
    node_id: String,
    epoch: u64,
    counter: u64,
    clean: bool,
}

/// How this start relates to the previous one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartKind {
    /// No metadata: a new (or wiped) data directory.
    Fresh,
    /// The last run shut down cleanly: same actor, counter resumed.
    Clean,
    /// The last run crashed or was killed: new epoch, new actor.
    Unclean,
}

/// The node's persistent identity and its dot counter.
pub struct NodeMeta {
    path: PathBuf,
    /// The data directory's format: [`META_FORMAT`], or an older one until its upgrade is done.
    format: AtomicU64,
    node_id: String,
    epoch: u64,
    actor: Actor,
    counter: AtomicU64,
    start_kind: StartKind,
    /// Serializes file rewrites.
    write_lock: Mutex<()>,
}

impl NodeMeta {
    /// Loads the identity from `dir` (creating it when missing), decides the epoch, and marks the directory as in
    /// use (not clean) before returning, so a crash from here on is detected at the next start.
    pub fn open(dir: &Path, node_id: &str) -> Result<Self, StorageError> {
        let path = dir.join(META_FILE);
        let previous = match fs::read_to_string(&path) {
            Ok(text) => Some(toml::from_str::<MetaFile>(&text).map_err(|e| StorageError::DataDir {
                path: dir.display().to_string(),
                reason: format!("{META_FILE} is unreadable: {e}"),
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(StorageError::Io { action: "reading", path: path.display().to_string(), source });
            }
        };
        let dir_error = |reason: String| StorageError::DataDir { path: dir.display().to_string(), reason };
        let format = previous.as_ref().map_or(META_FORMAT, |m| m.format);
        let (epoch, counter, start_kind) = match previous {
            None => (random_u64()?, 0, StartKind::Fresh),
            Some(m) if m.format == 1 => {
                return Err(dir_error(
                    "it was written by an older dynamo-kv that placed keys by MD5 alone; this version places them by \
                     Redis Cluster hash slot and cannot read it. There are no deployments to migrate: remove the \
                     directory, or start with another --data-dir"
                        .into(),
                ));
            }
            Some(m) if m.format != META_FORMAT && m.format != 2 => {
                return Err(dir_error(format!(
                    "{META_FILE} has format {} but this build reads {META_FORMAT}",
                    m.format
                )));
            }
            Some(m) if m.node_id != node_id => {
                return Err(dir_error(format!("it belongs to node '{}', not '{node_id}'", m.node_id)));
            }
            Some(m) if m.clean => (m.epoch, m.counter, StartKind::Clean),
            Some(_) => (random_u64()?, 0, StartKind::Unclean),
        };
        let meta = NodeMeta {
            path,
            format: AtomicU64::new(u64::from(format)),
            node_id: node_id.to_string(),
            epoch,
            actor: Actor::derive(node_id, epoch),
            counter: AtomicU64::new(counter),
            start_kind,
            write_lock: Mutex::new(()),
        };
        meta.write(false)?;
        Ok(meta)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The epoch of this run's actor.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The actor stamped into this node's dots.
    pub fn actor(&self) -> Actor {
        self.actor
    }

    /// The data directory's format (older than [`META_FORMAT`] until [`NodeMeta::upgraded`]).
    pub fn format(&self) -> u32 {
        self.format.load(Ordering::Relaxed) as u32
    }

    /// Records that the data directory was upgraded to [`META_FORMAT`].
    pub fn upgraded(&self) -> Result<(), StorageError> {
        self.format.store(u64::from(META_FORMAT), Ordering::Relaxed);
        self.write(false)
    }

    /// How this start relates to the previous run.
    pub fn start_kind(&self) -> StartKind {
        self.start_kind
    }

    /// The highest counter issued so far: no genuine context can cover more of this node's dots.
    pub fn issued_counter(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    /// Issues a fresh dot. Call it under the key's lock, so a key's dots are applied in the order issued.
    pub fn next_dot(&self) -> Dot {
        Dot { actor: self.actor, counter: self.counter.fetch_add(1, Ordering::Relaxed) + 1 }
    }

    /// Records a clean shutdown: the counter is saved and the next start keeps this actor. Call it only after
    /// storage was flushed and synced.
    pub fn mark_clean(&self) -> Result<(), StorageError> {
        self.write(true)
    }

    fn write(&self, clean: bool) -> Result<(), StorageError> {
        let _guard = self.write_lock.lock().expect("meta lock");
        let file = MetaFile {
            format: self.format(),
            node_id: self.node_id.clone(),
            epoch: self.epoch,
            counter: self.counter.load(Ordering::Relaxed),
            clean,
        };
        let text = toml::to_string(&file).expect("node metadata serializes");
        let tmp = self.path.with_extension("meta.tmp");
        let io = |action: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| StorageError::Io { action, path, source }
        };
        let mut f = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(text.as_bytes()).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io("renaming", &self.path))?;
        if let Some(dir) = self.path.parent() {
            // The rename is durable only once the directory entry is.
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing", dir))?;
        }
        Ok(())
    }
}

/// A random epoch from the operating system: unique for all practical purposes.
fn random_u64() -> Result<u64, StorageError> {
    crate::sys::random_u64().map_err(|e| StorageError::DataDir {
        path: String::new(),
        reason: format!("no randomness from the OS for a new epoch: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_restart_keeps_actor_unclean_and_wiped_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let m = NodeMeta::open(dir.path(), "n1").unwrap();
        assert_eq!(m.start_kind(), StartKind::Fresh);
        let d1 = m.next_dot();
        m.mark_clean().unwrap();
        drop(m);

        let m = NodeMeta::open(dir.path(), "n1").unwrap();
        assert_eq!(m.start_kind(), StartKind::Clean);
        assert_eq!(m.actor(), d1.actor);
        assert!(m.next_dot().counter > d1.counter, "counter resumes after a clean stop");
        drop(m); // no mark_clean: a crash

        let m = NodeMeta::open(dir.path(), "n1").unwrap();
        assert_eq!(m.start_kind(), StartKind::Unclean);
        assert_ne!(m.actor(), d1.actor, "a crash must change the actor");
        drop(m);

        fs::remove_file(dir.path().join(META_FILE)).unwrap();
        let m = NodeMeta::open(dir.path(), "n1").unwrap();
        assert_eq!(m.start_kind(), StartKind::Fresh);
        assert_ne!(m.actor(), d1.actor);
    }

    #[test]
    fn refuses_another_nodes_directory() {
        let dir = tempfile::tempdir().unwrap();
        NodeMeta::open(dir.path(), "n1").unwrap();
        let err = NodeMeta::open(dir.path(), "n2").err().unwrap();
        assert!(err.to_string().contains("belongs to node 'n1'"), "{err}");
    }

    #[test]
    fn refuses_a_directory_of_the_md5_placement() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(META_FILE),
            "format = 1\nnode_id = \"n1\"\nepoch = 7\ncounter = 3\nclean = true\n",
        )
        .unwrap();
        let err = NodeMeta::open(dir.path(), "n1").err().unwrap();
        assert!(err.to_string().contains("placed keys by MD5 alone"), "{err}");
    }

    #[test]
    fn a_format_2_directory_keeps_its_format_until_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(META_FILE),
            "format = 2\nnode_id = \"n1\"\nepoch = 7\ncounter = 3\nclean = true\n",
        )
        .unwrap();
        let m = NodeMeta::open(dir.path(), "n1").unwrap();
        assert_eq!((m.format(), m.start_kind()), (2, StartKind::Clean));
        drop(m);
        // A start that stopped before the upgrade finished upgrades again.
        let m = NodeMeta::open(dir.path(), "n1").unwrap();
        assert_eq!(m.format(), 2);
        m.upgraded().unwrap();
        drop(m);
        assert_eq!(NodeMeta::open(dir.path(), "n1").unwrap().format(), META_FORMAT);
    }
}
