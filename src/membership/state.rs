//! The gossiped cluster state (pure): members with their status, and the ring with its pending transition.
//!
//! Every part merges as a join-semilattice, so gossip can deliver states in any order, any number of times:
//! * a member record is replaced only by a higher `(version, status)`; `Removed` outranks everything at equal
//!   version, so a removed node never comes back by old news;
//! * the ring is replaced only by a higher `(version, author)`; at equal `(version, author)` the content is the same
//!   by construction and the completed-transfer sets are unioned.
//!
//! A membership change is a *transition* (paper §4.9, Riak's plan/commit): `commit` sets `next` owners; every replica
//! that `next` adds to a key range must receive that range (handoff) and mark it `done`; once every required
//! transfer is done any node may `flip` (`owners := next`). A flip is a pure function of the state, with a fixed
//! author, so nodes that flip concurrently produce identical states.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::PeerInfo;
use crate::ring::{Member, Ring, RingError};

/// Prefix of the author recorded by a flip: "flip:" and the commit's author, the same on every node that completes
/// that commit (so their flips agree), and different for flips of different commits (so those never look equal).
const FLIP_AUTHOR: &str = "flip:";

/// Where a member is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Known, not yet owning partitions; included in the next plan.
    Joining,
    /// Owns partitions.
    Valid,
    /// Handing its partitions off (leave, or removal of a dead node); excluded from the next plan.
    Leaving,
    /// Gone for good.
    Removed,
}

impl MemberStatus {
    /// Lower-case name for views.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Joining => "joining",
            MemberStatus::Valid => "valid",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Removed => "removed",
        }
    }
}

/// One member as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Identity and addresses.
    pub info: PeerInfo,
    /// Life-cycle status.
    pub status: MemberStatus,
    /// Bumped by every change of this record.
    pub version: u64,
}

/// The ring and its pending transition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingState {
    /// Bumped by every commit and flip.
    pub version: u64,
    /// Who made this version (the committing node; empty for flips).
    pub author: String,
    /// Owner id of each partition; empty until the cluster has a ring.
    pub owners: Vec<String>,
    /// Owners after the transition in progress.
    pub next: Option<Vec<String>>,
    /// Transfers of the transition completed: (key range = partition, receiving node).
    pub done: BTreeSet<(u32, String)>,
}

/// A transfer a transition needs: `to` must receive key range `partition` from one of `sources`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// The key range (a partition of the ring).
    pub partition: u32,
    /// The receiving node.
    pub to: String,
    /// Nodes holding the range now (its current replicas).
    pub sources: Vec<String>,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    /// A transition is already in progress.
    #[error("a transition (ring version {version}) is in progress; wait for it to finish")]
    InProgress {
        /// Its ring version.
        version: u64,
    },
    /// Nothing to change.
    #[error("no membership change is pending: the plan moves no partition")]
    NothingToDo,
    /// Unknown member.
    #[error("no member '{id}'")]
    UnknownMember {
        /// The id.
        id: String,
    },
    /// The change would leave no member to own partitions.
    #[error("the change would leave no member owning partitions")]
    NoMembersLeft,
    /// The ring could not be built.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// A node that already belongs to a cluster of several members cannot join another.
    #[error("this node already belongs to a cluster of {members} members")]
    AlreadyInCluster {
        /// Members of its cluster.
        members: usize,
    },
    /// The node holds data of its own cluster; joining another would hide it.
    #[error("this node holds {keys} keys; only an empty node can join a cluster")]
    HoldsData {
        /// Live keys stored.
        keys: u64,
    },
    /// The state could not be persisted.
    #[error("could not persist the cluster state: {reason}")]
    Persist {
        /// Why.
        reason: String,
    },
}

/// Everything gossiped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Members by id.
    pub members: BTreeMap<String, MemberRecord>,
    /// The ring.
    pub ring: RingState,
    /// Heartbeat counter of each member (each raises its own; max-merged).
    pub heartbeats: BTreeMap<String, u64>,
    /// The cluster's identity, drawn at random when it is founded; 0 until a joining node learns it. States of
    /// two clusters never merge: a node whose data directory was lost and that founded a new cluster where it used
    /// to be a member must not take over, or answer for, the old one.
    pub cluster_id: u64,
    /// Each member's word on whether it takes writes (a full or failing disk stops them); set by that member only,
    /// the higher version wins.
    pub write_notices: BTreeMap<String, WriteNotice>,
}

/// A member's word on whether it takes writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteNotice {
    /// Raised by every change: milliseconds since the epoch (or the last version and one), so it keeps rising
    /// across the member's restarts.
    pub version: u64,
    /// Why it takes no writes; `None`: it takes them.
    pub stopped: Option<String>,
}

impl ClusterState {
    /// The state of a node that founds a cluster: it owns every one of `q` partitions.
    pub fn founder(me: PeerInfo, q: usize) -> Self {
        let id = me.member.id.clone();
        let ring = RingState {
            version: 1,
            author: id.clone(),
            owners: vec![id.clone(); q],
            next: None,
            done: BTreeSet::new(),
        };
        let members = BTreeMap::from([(id, MemberRecord { info: me, status: MemberStatus::Valid, version: 1 })]);
        Self { members, ring, heartbeats: BTreeMap::new(), cluster_id: 1, write_notices: BTreeMap::new() }
    }

    /// The same state under the cluster identity `id` (a founder draws it at random).
    pub fn with_cluster_id(mut self, id: u64) -> Self {
        self.cluster_id = id;
        self
    }

    /// Whether `other` is the state of another cluster (both identities known and different).
    pub fn is_foreign(&self, other: &ClusterState) -> bool {
        self.cluster_id != 0 && other.cluster_id != 0 && self.cluster_id != other.cluster_id
    }

    /// The state of a node that joins through a seed: it knows only itself, as joining, and no ring yet.
    pub fn joiner(me: PeerInfo) -> Self {
        let id = me.member.id.clone();
        let members = BTreeMap::from([(id, MemberRecord { info: me, status: MemberStatus::Joining, version: 1 })]);
        Self {
            members,
            ring: RingState::default(),
            heartbeats: BTreeMap::new(),
            cluster_id: 0,
            write_notices: BTreeMap::new(),
        }
    }

    /// Merges another node's state into this one; returns whether anything changed. The state of another cluster
    /// ([`is_foreign`](Self::is_foreign)) changes nothing.
    pub fn merge(&mut self, other: &ClusterState) -> bool {
        if self.is_foreign(other) {
            return false;
        }
        let mut changed = false;
        if self.cluster_id == 0 && other.cluster_id != 0 {
            self.cluster_id = other.cluster_id;
            changed = true;
        }
        for (id, theirs) in &other.members {
            let replace = match self.members.get(id) {
                None => true,
                Some(mine) => (theirs.version, theirs.status) > (mine.version, mine.status),
            };
            if replace {
                self.members.insert(id.clone(), theirs.clone());
                changed = true;
            }
        }
        let (mine, theirs) = (&mut self.ring, &other.ring);
        if (theirs.version, &theirs.author) > (mine.version, &mine.author) {
            *mine = theirs.clone();
            changed = true;
        } else if (theirs.version, &theirs.author) == (mine.version, &mine.author) {
            for d in &theirs.done {
                changed |= mine.done.insert(d.clone());
            }
        }
        for (id, &beat) in &other.heartbeats {
            let e = self.heartbeats.entry(id.clone()).or_insert(0);
            if beat > *e {
                *e = beat;
                changed = true;
            }
        }
        for (id, theirs) in &other.write_notices {
            if self.write_notices.get(id).is_none_or(|mine| theirs.version > mine.version) {
                self.write_notices.insert(id.clone(), theirs.clone());
                changed = true;
            }
        }
        changed
    }

    /// Records `me`'s word on writes (`stopped`: why it takes none) at time `now_ms`; returns whether it changed.
    pub fn set_write_stop(&mut self, me: &str, stopped: Option<String>, now_ms: u64) -> bool {
        let last = self.write_notices.get(me);
        if last.map_or(stopped.is_none(), |n| n.stopped == stopped) {
            return false;
        }
        let version = now_ms.max(last.map_or(0, |n| n.version + 1));
        self.write_notices.insert(me.to_string(), WriteNotice { version, stopped });
        true
    }

    /// Why member `id` takes no writes, if it said so.
    pub fn write_stop(&self, id: &str) -> Option<&str> {
        self.write_notices.get(id).and_then(|n| n.stopped.as_deref())
    }

    /// Whether `me` should found the cluster now (`--bootstrap-expect`): no ring exists yet, at least `expect`
    /// members are known, and `me` has the smallest id among them. Nodes that see the same members agree on that
    /// one founder; nodes that see fewer than `expect` (two halves of a cluster cut apart at start, each below
    /// `expect`) found nothing, so two rings cannot start unless `expect` is below a majority of the nodes started.
    pub fn bootstrap_due(&self, me: &str, expect: usize) -> bool {
        let waiting = self.bootstrap_waiting();
        self.ring.owners.is_empty() && waiting.len() >= expect && waiting.first() == Some(&me)
    }

    /// The members a bootstrap would found the ring with, smallest id first (empty once a ring exists).
    pub fn bootstrap_waiting(&self) -> Vec<&str> {
        if !self.ring.owners.is_empty() {
            return Vec::new();
        }
        self.members
            .values()
            .filter(|m| matches!(m.status, MemberStatus::Joining | MemberStatus::Valid))
            .map(|m| m.info.member.id.as_str())
            .collect()
    }

    /// Founds the cluster with every member known now (bootstrap): the ring's first version, authored by `me`,
    /// claims `q` partitions over them, and each becomes valid.
    pub fn bootstrap(&mut self, me: &str, q: usize, spacing: usize, cluster_id: u64) -> Result<(), StateError> {
        if !self.ring.owners.is_empty() {
            return Err(StateError::AlreadyInCluster { members: self.members.len() });
        }
        let owners = Ring::build(q, self.claimants(), None, spacing)?.assignment();
        for rec in self.members.values_mut() {
            if rec.status == MemberStatus::Joining {
                rec.status = MemberStatus::Valid;
                rec.version += 1;
            }
        }
        self.ring = RingState { version: 1, author: me.to_string(), owners, next: None, done: BTreeSet::new() };
        self.cluster_id = cluster_id;
        Ok(())
    }

    /// Members that can own partitions (joining or valid), as the ring sees them.
    fn claimants(&self) -> Vec<Member> {
        self.members
            .values()
            .filter(|m| matches!(m.status, MemberStatus::Joining | MemberStatus::Valid))
            .map(|m| m.info.member.clone())
            .collect()
    }

    fn ring_of(&self, owners: &[String]) -> Result<Ring, RingError> {
        let ids: BTreeSet<&String> = owners.iter().collect();
        let members = ids
            .into_iter()
            .map(|id| {
                self.members.get(id).map(|m| m.info.member.clone()).ok_or(RingError::UnknownOwner { id: id.clone() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ring::from_assignment(members, owners)
    }

    /// The ring reads and writes use now; `None` before this node has heard of any ring.
    pub fn current_ring(&self) -> Option<Ring> {
        (!self.ring.owners.is_empty()).then(|| self.ring_of(&self.ring.owners).ok()).flatten()
    }

    /// The ring after the transition in progress, if any.
    pub fn next_ring(&self) -> Option<Ring> {
        self.ring.next.as_ref().and_then(|n| self.ring_of(n).ok())
    }

    /// The assignment a commit would start now: claim over joining and valid members, moving as little as
    /// possible from the current ring. `None` when it equals the current one.
    pub fn plan(&self, spacing: usize) -> Result<Option<Vec<String>>, StateError> {
        let q = self.ring.owners.len();
        let members = self.claimants();
        if members.is_empty() {
            return Err(StateError::NoMembersLeft);
        }
        // Partitions of leaving members become free slots of `previous`: only they move.
        let current = self.current_ring();
        let next = Ring::build(q, members, current.as_ref(), spacing)?.assignment();
        Ok((next != self.ring.owners).then_some(next))
    }

    /// A transition whose next owners include a member now leaving or removed can never complete (that member
    /// will not receive its ranges): it may be replaced by a new plan.
    pub fn transition_stale(&self) -> bool {
        self.ring.next.as_ref().is_some_and(|next| {
            next.iter().any(|id| {
                self.members.get(id).is_none_or(|m| matches!(m.status, MemberStatus::Leaving | MemberStatus::Removed))
            })
        })
    }

    /// Starts a transition to `next`, authored by `me` (replacing a stale one).
    pub fn commit(&mut self, me: &str, next: Vec<String>) -> Result<(), StateError> {
        if self.ring.next.is_some() && !self.transition_stale() {
            return Err(StateError::InProgress { version: self.ring.version });
        }
        if next == self.ring.owners {
            return Err(StateError::NothingToDo);
        }
        self.ring_of(&next)?;
        self.ring = RingState {
            version: self.ring.version + 1,
            author: me.to_string(),
            owners: self.ring.owners.clone(),
            next: Some(next),
            done: BTreeSet::new(),
        };
        Ok(())
    }

    /// The transfers the transition in progress needs, given N.
    pub fn required_transfers(&self, n: usize) -> Vec<Transfer> {
        let (Some(cur), Some(next)) = (self.current_ring(), self.next_ring()) else { return Vec::new() };
        let mut out = Vec::new();
        for p in 0..cur.partitions() {
            let before: Vec<String> = cur.preference_list(p).take(n).map(|m| m.id.clone()).collect();
            // A removed member is gone for good (`admin remove` of a dead node): never a source. A range whose
            // every replica was removed has no source left, and its transfer completes empty.
            let sources: Vec<String> = before
                .iter()
                .filter(|id| self.members.get(*id).is_some_and(|m| m.status != MemberStatus::Removed))
                .cloned()
                .collect();
            for m in next.preference_list(p).take(n) {
                if !before.contains(&m.id) {
                    out.push(Transfer { partition: p as u32, to: m.id.clone(), sources: sources.clone() });
                }
            }
        }
        out
    }

    /// Key ranges of the transition in progress whose every required transfer is done (ranges no transfer is needed
    /// for included): reads and writes of such a range already use the next ring's replicas. Empty without a
    /// transition. A pure function of the state, so every node that knows the same transfers agrees.
    pub fn moved_ranges(&self, n: usize) -> BTreeSet<u32> {
        let Some(cur) = self.current_ring() else { return BTreeSet::new() };
        if self.next_ring().is_none() {
            return BTreeSet::new();
        }
        let mut moved: BTreeSet<u32> = (0..cur.partitions() as u32).collect();
        for t in self.required_transfers(n) {
            if !self.ring.done.contains(&(t.partition, t.to.clone())) {
                moved.remove(&t.partition);
            }
        }
        moved
    }

    /// Records that `to` received key range `partition` for the transition in progress.
    pub fn mark_done(&mut self, partition: u32, to: &str) -> bool {
        self.ring.next.is_some() && self.ring.done.insert((partition, to.to_string()))
    }

    /// As [`mark_done`](Self::mark_done), only if the transition is still the one `(version, author)` the transfer
    /// ran for: a transfer for a replaced commit proves nothing about its replacement.
    pub fn mark_done_for(&mut self, version: u64, author: &str, partition: u32, to: &str) -> bool {
        self.ring.version == version && self.ring.author == author && self.mark_done(partition, to)
    }

    /// Completes the transition when every required transfer is done: the next owners become current, joining
    /// members that own partitions become valid, and leaving members that own none are removed. Deterministic.
    pub fn try_flip(&mut self, n: usize) -> bool {
        let Some(next) = self.ring.next.clone() else { return false };
        if self.required_transfers(n).iter().any(|t| !self.ring.done.contains(&(t.partition, t.to.clone()))) {
            return false;
        }
        let owning: BTreeSet<&String> = next.iter().collect();
        for (id, rec) in self.members.iter_mut() {
            let status = match rec.status {
                MemberStatus::Joining if owning.contains(id) => MemberStatus::Valid,
                MemberStatus::Leaving if !owning.contains(id) => MemberStatus::Removed,
                s => s,
            };
            if status != rec.status {
                rec.status = status;
                rec.version += 1;
            }
        }
        self.ring = RingState {
            version: self.ring.version + 1,
            author: format!("{FLIP_AUTHOR}{}", self.ring.author),
            owners: next,
            next: None,
            done: BTreeSet::new(),
        };
        true
    }

    /// Members told to leave before they owned a partition (a join not yet planned, then a leave) have nothing to
    /// hand off, and no transition will ever remove them: they are removed here. Returns whether one was.
    pub fn remove_idle_leavers(&mut self) -> bool {
        if self.ring.owners.is_empty() {
            return false;
        }
        let owning: BTreeSet<String> =
            self.ring.owners.iter().chain(self.ring.next.iter().flatten()).cloned().collect();
        let mut removed = false;
        for (id, rec) in self.members.iter_mut() {
            if rec.status == MemberStatus::Leaving && !owning.contains(id) {
                rec.status = MemberStatus::Removed;
                rec.version += 1;
                removed = true;
            }
        }
        removed
    }

    /// Changes a member's status (join, leave, remove), bumping its version.
    pub fn set_status(&mut self, id: &str, status: MemberStatus) -> Result<(), StateError> {
        let rec = self.members.get_mut(id).ok_or_else(|| StateError::UnknownMember { id: id.to_string() })?;
        if rec.status != status {
            rec.status = status;
            rec.version += 1;
        }
        Ok(())
    }

    /// Adds or updates a member's addresses as the member itself reports them (a restart on new addresses).
    pub fn upsert_self(&mut self, info: PeerInfo) {
        let id = info.member.id.clone();
        match self.members.get_mut(&id) {
            Some(rec) if rec.info != info => {
                rec.info = info;
                rec.version += 1;
            }
            Some(_) => {}
            None => {
                self.members.insert(id, MemberRecord { info, status: MemberStatus::Joining, version: 1 });
            }
        }
    }

    /// Raises this node's heartbeat.
    pub fn beat(&mut self, me: &str) {
        *self.heartbeats.entry(me.to_string()).or_insert(0) += 1;
    }

    /// Whether a change is waiting for a commit: a joining member, or a leaving or removed one that still owns
    /// partitions.
    pub fn change_pending(&self) -> bool {
        let owning: BTreeSet<&String> = self.ring.owners.iter().collect();
        self.members.values().any(|m| match m.status {
            MemberStatus::Joining => !owning.contains(&m.info.member.id),
            MemberStatus::Leaving | MemberStatus::Removed => owning.contains(&m.info.member.id),
            _ => false,
        })
    }

    /// The claimant (Riak's word): the valid member with the smallest id. Only it commits automatically, so
    /// automatic commits do not race.
    pub fn claimant(&self) -> Option<&str> {
        self.members.values().find(|m| m.status == MemberStatus::Valid).map(|m| m.info.member.id.as_str())
    }
}

#[cfg(test)]
mod tests;
