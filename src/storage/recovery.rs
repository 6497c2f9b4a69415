//! Which key ranges this replica cannot vouch for yet: ranges whose copy here may lack writes it acknowledged.
//!
//! A read may report a key as absent only when the replicas that answered "not found" would hold it if it existed
//! (issue: the notfound problem of sloppy quorums). A replica stops being such a witness when it *forgets*: its
//! data directory was wiped (it comes back as the same member, owning the same partitions, empty), or it crashed
//! in `buffered` durability mode (the replica writes still in its write buffer are gone). Such a node marks every
//! partition it replicates as *recovering*. Its not-found answers for a recovering partition do not count toward R
//! (the coordinator's read decision); what it does hold still counts, since a found value is never a lie.
//!
//! A partition stops recovering once anti-entropy has exchanged it with every other current replica of it: each
//! exchange leaves this copy holding at least what that replica held, so afterwards it holds every write that any
//! replica besides itself acknowledged, as a replica that never forgot would.
//!
//! A range this node receives by handoff is as complete as its one source, which may lack writes that other
//! replicas took (W of N), and writes during the transition reach it best-effort: it recovers too
//! ([`RecoveryState::taint`]), by anti-entropy with every other replica after the flip.
//!
//! The state is persisted (atomic rewrite), so a restart in the middle of recovering does not forget that it forgot.
//! [`RecoveryState`] is the pure part; [`Recovery`] adds the file and a lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use super::StorageError;

/// File name inside the data directory.
const RECOVERY_FILE: &str = "recovery.state";

/// The pure recovery state of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryState {
    /// The node forgot, but knew no ring at the time to say which partitions it held: they are named at the first
    /// ring it sees ([`resolve`](Self::resolve)). Until then it vouches for nothing.
    pending: bool,
    /// Recovering partitions, each with the replicas it has been exchanged with since the node forgot.
    partitions: BTreeMap<u32, BTreeSet<String>>,
}

impl RecoveryState {
    /// The node may have lost acknowledged writes of every range it holds: whatever it had proven is void.
    pub fn forget_all(&mut self) {
        self.pending = true;
        self.partitions.clear();
    }

    /// Names the recovering partitions once a ring is known: every partition the node held when it forgot, as far
    /// as it can tell now (`held`). Returns whether the state changed.
    pub fn resolve(&mut self, held: impl IntoIterator<Item = u32>) -> bool {
        if !self.pending {
            return false;
        }
        self.pending = false;
        for p in held {
            self.partitions.entry(p).or_default();
        }
        true
    }

    /// Partition `p` was received from a replica that was itself recovering it: this copy is no better than its
    /// source's, so it recovers too. Returns whether the state changed.
    pub fn taint(&mut self, p: u32) -> bool {
        if self.partitions.contains_key(&p) {
            return false;
        }
        self.partitions.insert(p, BTreeSet::new());
        true
    }

    /// Records a completed anti-entropy exchange of partition `p` with replica `peer`; `others` are the other
    /// current replicas of `p`. The partition is recovered once every one of them was exchanged with. Returns
    /// whether the state changed.
    pub fn exchanged(&mut self, p: u32, peer: &str, others: &[String]) -> bool {
        let Some(done) = self.partitions.get_mut(&p) else { return false };
        let changed = done.insert(peer.to_string());
        if others.iter().all(|o| done.contains(o)) {
            self.partitions.remove(&p);
            return true;
        }
        changed
    }

    /// Whether this node's copy of partition `p` holds every write acknowledged to it (as far as recovery goes;
    /// the caller checks that it is a replica of `p` at all).
    pub fn vouches(&self, p: u32) -> bool {
        !self.pending && !self.partitions.contains_key(&p)
    }

    /// Whether the node waits for a ring to name its recovering partitions.
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// How many partitions are recovering.
    pub fn recovering(&self) -> usize {
        self.partitions.len()
    }

    /// Nothing to recover.
    pub fn is_clear(&self) -> bool {
        !self.pending && self.partitions.is_empty()
    }
}

/// The on-disk form (TOML keys must be strings, so partitions are a list).
#[derive(Serialize, Deserialize)]
struct RecoveryFile {
    pending: bool,
    #[serde(default)]
    partition: Vec<PartitionEntry>,
}

#[derive(Serialize, Deserialize)]
struct PartitionEntry {
    p: u32,
    exchanged_with: Vec<String>,
}

/// The node's recovery state, persisted in its data directory.
pub struct Recovery {
    path: PathBuf,
    state: Mutex<RecoveryState>,
    /// Fast path for the common case: nothing to recover, so every read skips the lock.
    clear: AtomicBool,
}

impl Recovery {
    /// Loads the state from `dir`; `forgot` (a wiped directory, a crash that lost buffered writes) voids it and
    /// starts recovery of every partition the node holds.
    pub fn open(dir: &Path, forgot: bool) -> Result<Self, StorageError> {
        let path = dir.join(RECOVERY_FILE);
        let mut state = match fs::read_to_string(&path) {
            Ok(text) => {
                let f: RecoveryFile = toml::from_str(&text).map_err(|e| StorageError::DataDir {
                    path: dir.display().to_string(),
                    reason: format!("{RECOVERY_FILE} is unreadable: {e}"),
                })?;
                RecoveryState {
                    pending: f.pending,
                    partitions: f
                        .partition
                        .into_iter()
                        .map(|e| (e.p, e.exchanged_with.into_iter().collect()))
                        .collect(),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RecoveryState::default(),
            Err(source) => {
                return Err(StorageError::Io { action: "reading", path: path.display().to_string(), source });
            }
        };
        if forgot {
            state.forget_all();
        }
        let r = Recovery { path, clear: AtomicBool::new(state.is_clear()), state: Mutex::new(state) };
        if forgot {
            r.save(&r.state.lock().expect("recovery lock"), true)?;
        }
        Ok(r)
    }

    /// Nothing to recover (cheap: no lock).
    pub fn is_clear(&self) -> bool {
        self.clear.load(Ordering::Acquire)
    }

    /// Whether partition `p` is vouched for (false for every partition while recovery waits for a ring).
    pub fn vouches(&self, p: u32) -> bool {
        self.clear.load(Ordering::Acquire) || self.state.lock().expect("recovery lock").vouches(p)
    }

    /// Names the recovering partitions if recovery still waits for a ring: `held` gives the partitions the node
    /// holds by the ring it knows now (`None`: no ring yet). Call it as soon as a ring is known: a new member that
    /// later receives ranges by verified transfers must not count them as forgotten.
    pub fn resolve(&self, held: impl FnOnce() -> Option<Vec<u32>>) {
        if self.clear.load(Ordering::Acquire) {
            return;
        }
        self.change(|s| (s.is_pending() && held().is_some_and(|held| s.resolve(held)), ()));
    }

    /// Marks partitions `ps` as recovering (see [`RecoveryState::taint`]), durably: an error means none is.
    pub fn taint(&self, ps: &[u32]) -> Result<(), StorageError> {
        let mut s = self.state.lock().expect("recovery lock");
        let before = s.clone();
        let mut changed = false;
        for &p in ps {
            changed |= s.taint(p);
        }
        if changed {
            self.clear.store(false, Ordering::Release);
            if let Err(e) = self.save(&s, true) {
                *s = before;
                self.clear.store(s.is_clear(), Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Forgets recovering partitions this node no longer holds (`held`, by a ring with no transition running): a
    /// range that comes back later arrives by a transfer, which makes it recover again.
    pub fn retain_held(&self, held: &[u32]) {
        if self.clear.load(Ordering::Acquire) {
            return;
        }
        self.change(|s| {
            let before = s.partitions.len();
            s.partitions.retain(|p, _| held.contains(p));
            (s.partitions.len() != before, ())
        });
    }

    /// Records a completed exchange (see [`RecoveryState::exchanged`]).
    pub fn exchanged(&self, p: u32, peer: &str, others: &[String]) {
        if self.clear.load(Ordering::Acquire) {
            return;
        }
        self.change(|s| (s.exchanged(p, peer, others), ()));
    }

    /// A copy of the state (INFO, tests).
    pub fn state(&self) -> RecoveryState {
        self.state.lock().expect("recovery lock").clone()
    }

    fn change<T>(&self, f: impl FnOnce(&mut RecoveryState) -> (bool, T)) -> T {
        let mut s = self.state.lock().expect("recovery lock");
        let (changed, out) = f(&mut s);
        if changed {
            // Progress (resolving, exchanges) need not reach the disk at once: a restart that loses it redoes it.
            if let Err(e) = self.save(&s, false) {
                tracing::error!(error = %e, "could not persist the recovery state");
            }
            if s.is_clear() {
                tracing::info!("every partition recovered: this node's not-found answers count again");
            }
            self.clear.store(s.is_clear(), Ordering::Release);
        }
        out
    }

    /// Rewrites the file (atomically); `durable` waits until it is on disk.
    fn save(&self, s: &RecoveryState, durable: bool) -> Result<(), StorageError> {
        let file = RecoveryFile {
            pending: s.pending,
            partition: s
                .partitions
                .iter()
                .map(|(p, done)| PartitionEntry { p: *p, exchanged_with: done.iter().cloned().collect() })
                .collect(),
        };
        let text = toml::to_string(&file).expect("recovery state serializes");
        let io = |action: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| StorageError::Io { action, path, source }
        };
        let tmp = self.path.with_extension("state.tmp");
        let mut f = fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(text.as_bytes()).map_err(io("writing", &tmp))?;
        if durable {
            f.sync_all().map_err(io("syncing", &tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(io("renaming", &self.path))?;
        if durable && let Some(dir) = self.path.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("syncing", dir))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_node_that_forgot_vouches_for_nothing_until_each_partition_met_every_other_replica() {
        let mut s = RecoveryState::default();
        assert!(s.vouches(3), "a node that never forgot vouches");
        s.forget_all();
        assert!(!s.vouches(3) && !s.vouches(9), "no ring yet: nothing is vouched for");
        assert!(s.resolve([3, 4]));
        assert!(!s.resolve([5]), "resolved once");
        assert!(s.vouches(9), "a partition it did not hold arrives by a verified transfer later");
        assert!(!s.vouches(3));
        let others = ids(&["n2", "n3"]);
        assert!(s.exchanged(3, "n2", &others));
        assert!(!s.vouches(3), "one replica is not enough: the write may be on the other");
        assert!(!s.exchanged(3, "n2", &others), "the same exchange again changes nothing");
        assert!(s.exchanged(3, "n3", &others));
        assert!(s.vouches(3));
        assert!(!s.vouches(4) && s.recovering() == 1);
        assert!(s.exchanged(4, "n1", &[]), "the only replica of a partition has no one to recover from");
        assert!(s.vouches(4));
        // A range received from a recovering replica recovers too.
        assert!(s.taint(9) && !s.vouches(9) && !s.taint(9));
        // Forgetting again voids what was proven.
        s.forget_all();
        assert!(s.is_pending() && !s.vouches(3));
    }

    #[test]
    fn the_state_survives_a_restart_and_a_new_loss_voids_it() {
        let dir = tempfile::tempdir().unwrap();
        let r = Recovery::open(dir.path(), false).unwrap();
        r.resolve(|| panic!("a clear state never asks for the ring"));
        assert!(r.vouches(1));
        drop(r);
        let r = Recovery::open(dir.path(), true).unwrap();
        r.resolve(|| None);
        assert!(!r.vouches(1) && !r.vouches(7), "no ring yet: nothing vouched for");
        r.resolve(|| Some(vec![1, 2]));
        assert!(!r.vouches(1) && r.vouches(7));
        r.exchanged(1, "n2", &ids(&["n2", "n3"]));
        drop(r);
        let r = Recovery::open(dir.path(), false).unwrap();
        let s = r.state();
        assert_eq!(s.recovering(), 2);
        assert!(!s.vouches(1) && !s.vouches(2) && s.vouches(7));
        r.exchanged(1, "n3", &ids(&["n2", "n3"]));
        r.exchanged(2, "n2", &ids(&["n2"]));
        assert!(r.vouches(1) && r.vouches(2));
        drop(r);
        assert!(Recovery::open(dir.path(), false).unwrap().state().is_clear());
    }
}
