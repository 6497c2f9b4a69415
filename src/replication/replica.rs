//! A node as a replica of one key (paper §4.5, §4.6): the messages coordinators, read repair and hint delivery send
//! it ([`Read`], [`Replicate`], [`KeepHint`]), and their handler ([`LocalReplica`]), which also serves the
//! coordinator's own local reads and merges.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cluster::Cluster;
use crate::crdt::rows::{RowSelect, Rows, Tally, TallyReply};
use crate::crdt::zorder::ZQuery;
use crate::rpc::{RemoteError, RemoteErrorKind};
use crate::storage::hints::HintStore;
use crate::storage::recovery::Recovery;
use crate::storage::store::Decision;
use crate::storage::{KvStore, StorageError};
use crate::versioning::Siblings;

/// Read the receiver's replica of a key, or, as a fallback, what it holds as hints for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Read {
    /// User key.
    pub key: Bytes,
    /// The receiver stands in for an unreachable replica: answer from hints only (its own store may hold a stale
    /// copy from an older ring).
    pub as_fallback: bool,
    /// The asking node's cluster identity: a node of another cluster (one that lost its disk and founded anew)
    /// never vouches for a not-found of this one.
    pub cluster_id: u64,
}

/// One replica's answer to a read: of a key's key row ([`Read`]), or of rows of a collection ([`ReadRows`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRead<S = Siblings> {
    /// Its state of the key (or of the rows asked); `None` when it holds none.
    pub state: Option<S>,
    /// Whether its "not found" is evidence: it is a replica holding the key's whole range, with nothing to recover
    /// (see `storage::recovery`). A fallback answering from hints, a replica still recovering from a wipe, or a node
    /// whose view no longer (or not yet) has it holding the range cannot vouch that the key was never written.
    pub vouches: bool,
}

crate::rpc_message!(Read => ReplicaRead, tag 10, "read");

/// Read rows of a collection kept as a row per element (`crdt::rows`): the key row and the rows named, or every row
/// of the key; or, as a fallback, what the receiver holds as hints for them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadRows {
    /// User key.
    pub key: Bytes,
    /// The rows besides the key row.
    pub rows: RowSelect,
    /// As [`Read::as_fallback`].
    pub as_fallback: bool,
    /// As [`Read::cluster_id`].
    pub cluster_id: u64,
}

crate::rpc_message!(ReadRows => ReplicaRead<Rows>, tag 13, "read_rows");

/// Read the receiver's key row of a collection and its tally of the element rows ([`Tally`]): what a count
/// (LLEN, SCARD, HLEN, ZCARD) asks R replicas for instead of every element row.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReadTally {
    /// User key.
    pub key: Bytes,
    /// As [`Read::as_fallback`].
    pub as_fallback: bool,
    /// As [`Read::cluster_id`].
    pub cluster_id: u64,
    /// A read of the sorted set's order to answer with the tally ([`TallyReply::answer`]): ZRANGE, ZRANK, ZCOUNT.
    pub ranked: Option<ZQuery>,
}

/// What replicas answered to [`ReadTally`], joined: nothing yet, the distinct replies of replicas holding the key
/// (`crdt::rows::merged_count` counts their merge), or that one could not tally (a fallback answering from hints),
/// which stays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Counted {
    /// No reply joined yet.
    #[default]
    Nothing,
    /// Key rows and tallies, each distinct reply once.
    Tallied(Vec<TallyReply>),
    /// A reply without a tally: only a read of the rows can count.
    Untallied,
}

impl Counted {
    /// Joins another replica's answer (or a join of answers).
    pub fn join(&mut self, other: &Counted) {
        match (&mut *self, other) {
            (_, Counted::Nothing) | (Counted::Untallied, _) => {}
            (Counted::Nothing, _) | (_, Counted::Untallied) => *self = other.clone(),
            (Counted::Tallied(mine), Counted::Tallied(theirs)) => {
                for reply in theirs {
                    if !mine.contains(reply) {
                        mine.push(reply.clone());
                    }
                }
            }
        }
    }
}

/// A tally read repairs nothing: it holds no rows to send.
impl From<Counted> for Rows {
    fn from(_: Counted) -> Rows {
        Rows::new()
    }
}

crate::rpc_message!(ReadTally => ReplicaRead<Counted>, tag 14, "read_tally");

/// Merge rows of a key into the receiver's replica (replication, read repair, hint delivery): the key row of a
/// string, or the rows a write of a collection changed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Replicate {
    /// User key.
    pub key: Bytes,
    /// Rows to merge.
    pub rows: Rows,
}

/// The receiver took the state (merged it, or kept it as a hint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack;

crate::rpc_message!(Replicate => Ack, tag 11, "replicate");

/// Keep a state as a hint for an unreachable replica the receiver stands in for (sloppy quorum).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeepHint {
    /// The replica the copy is meant for.
    pub target: String,
    /// User key.
    pub key: Bytes,
    /// Rows to deliver later.
    pub rows: Rows,
}

crate::rpc_message!(KeepHint => Ack, tag 12, "keep_hint");

/// How a peer hears of a local storage failure.
pub fn refusal(e: StorageError) -> RemoteError {
    let kind = match e {
        StorageError::Closed => RemoteErrorKind::Unavailable,
        StorageError::WritesStopped { .. } => RemoteErrorKind::WritesStopped,
        _ => RemoteErrorKind::Storage,
    };
    RemoteError::new(kind, e.to_string())
}

/// This node's replicas and hints, as a replica serves them.
pub struct LocalReplica {
    store: Arc<KvStore>,
    hints: Arc<HintStore>,
    recovery: Arc<Recovery>,
    cluster: Arc<Cluster>,
    /// Replicas per key (N), for which ranges this node holds.
    n: usize,
}

impl LocalReplica {
    /// The replica side of this node.
    pub fn new(
        store: Arc<KvStore>,
        hints: Arc<HintStore>,
        recovery: Arc<Recovery>,
        cluster: Arc<Cluster>,
        n: usize,
    ) -> Self {
        Self { store, hints, recovery, cluster, n }
    }

    /// This node's answer as a replica of `key` to a coordinator of cluster `cluster_id`: its state, and whether it
    /// vouches for a not-found (same cluster, it holds the key's whole range in its own view, and has nothing to
    /// recover there).
    pub fn read(&self, key: &[u8], cluster_id: u64) -> Result<ReplicaRead, StorageError> {
        let state = self.store.get(key)?;
        let same_cluster = cluster_id == self.cluster.view().cluster_id;
        let vouches = state.is_some() || (same_cluster && self.vouches_for(key));
        Ok(ReplicaRead { state, vouches })
    }

    /// Whether this node's "not found" for `key` is evidence that no write of it was ever acknowledged here.
    fn vouches_for(&self, key: &[u8]) -> bool {
        let view = self.cluster.view();
        let Some(ring) = view.ring.as_ref() else { return false };
        let p = ring.partition_of_key(key) as u32;
        // A coordinator with an older ring may ask a node that already handed the range off and swept it, or one
        // with a newer ring a node that has not received it: neither holds the range by its own view.
        view.holds_range(&self.cluster.me().member.id, p, self.n) && self.recovery.vouches(p)
    }

    /// What this node can answer for `key` as a fallback: the hints it holds for it, never its own store (which may
    /// keep a stale copy of a range it replicated under an older ring). Never evidence of absence.
    pub fn read_as_fallback(&self, key: &[u8]) -> Result<ReplicaRead, StorageError> {
        Ok(ReplicaRead { state: self.hints.get_any(key)?, vouches: false })
    }

    /// Merges a state sent by another replica (replication, read repair, hint delivery) into the local key row.
    pub async fn merge(&self, key: &[u8], state: &Siblings) -> Result<(), StorageError> {
        self.store
            .update(key, |s: &mut Siblings, _| {
                let before = s.clone();
                s.merge(state);
                Ok::<_, StorageError>(if *s == before { Decision::Keep(()) } else { Decision::Write(()) })
            })
            .await
    }

    /// Merges rows sent by another replica into the local ones, in one write.
    pub async fn merge_rows(&self, key: &[u8], rows: &Rows) -> Result<(), StorageError> {
        if let [(row, state)] = rows.rows()
            && row.is_empty()
        {
            return self.merge(key, state).await;
        }
        let names: Vec<Bytes> = rows.rows().iter().map(|(r, _)| r.clone()).collect();
        self.store
            .update_rows(key, &names, false, |current: &mut Rows| {
                let before = current.clone();
                current.merge(rows);
                Ok::<_, StorageError>(if *current == before { Decision::Keep(()) } else { Decision::Write(()) })
            })
            .await
    }

    /// This node's answer as a replica of rows of `key` to a coordinator of cluster `cluster_id`, as
    /// [`LocalReplica::read`].
    pub fn read_rows(&self, key: &[u8], rows: &RowSelect, cluster_id: u64) -> Result<ReplicaRead<Rows>, StorageError> {
        let found = match rows {
            RowSelect::Named { rows, first_live } => {
                let mut found = self.store.get_rows(key, rows)?;
                if *first_live > 0 {
                    found.merge(&self.store.first_live_rows(key, *first_live as usize)?);
                }
                found
            }
            RowSelect::All => self.store.scan_rows(key)?,
            RowSelect::End { head, count } => self.store.end_items(key, *head, *count as usize)?,
            RowSelect::Sample { seed, count } => self.store.sample_live_rows(key, *seed, *count as usize)?,
            RowSelect::Live => self.store.all_live_rows(key)?,
        };
        let state = (!found.is_empty()).then_some(found);
        let same_cluster = cluster_id == self.cluster.view().cluster_id;
        let vouches = state.is_some() || (same_cluster && self.vouches_for(key));
        Ok(ReplicaRead { state, vouches })
    }

    /// What this node can answer for rows of `key` as a fallback: the hints it holds for them.
    pub fn read_rows_as_fallback(&self, key: &[u8], rows: &RowSelect) -> Result<ReplicaRead<Rows>, StorageError> {
        let found = match rows {
            RowSelect::All | RowSelect::Live | RowSelect::End { .. } | RowSelect::Sample { .. } => {
                self.hints.get_rows(key, None)?
            }
            RowSelect::Named { rows, .. } => self.hints.get_rows(key, Some(rows))?,
        };
        Ok(ReplicaRead { state: (!found.is_empty()).then_some(found), vouches: false })
    }

    /// This node's answer as a replica of `key` to a count, as [`LocalReplica::read`]: its key row and tally
    /// (nothing when it holds no row of the key), and with `ranked` its answer to that read of the sorted set.
    pub fn read_tally(
        &self,
        key: &[u8],
        cluster_id: u64,
        ranked: Option<&ZQuery>,
    ) -> Result<ReplicaRead<Counted>, StorageError> {
        let state = match self.store.tally(key, ranked)? {
            Some(TallyReply { key_row: None, tally, .. }) if tally == Tally::default() => None,
            Some(reply) => Some(Counted::Tallied(vec![reply])),
            None => Some(Counted::Untallied),
        };
        let same_cluster = cluster_id == self.cluster.view().cluster_id;
        let vouches = state.is_some() || (same_cluster && self.vouches_for(key));
        Ok(ReplicaRead { state, vouches })
    }

    /// What this node can answer to a count as a fallback: that it cannot tally hints, when it holds some for `key`.
    pub fn read_tally_as_fallback(&self, key: &[u8]) -> Result<ReplicaRead<Counted>, StorageError> {
        let held = !self.hints.get_rows(key, None)?.is_empty();
        Ok(ReplicaRead { state: held.then_some(Counted::Untallied), vouches: false })
    }

    /// Keeps rows meant for `target` as hints (this node stands in for it).
    pub fn keep_hint(&self, target: &str, key: &[u8], rows: &Rows) -> Result<(), StorageError> {
        // Hints live on the same disk as the data: a node whose storage stopped writes keeps none.
        self.store.check_writes()?;
        self.hints.put(target, key, rows, crate::versioning::clock::now_ms())
    }

    /// Answers [`Read`].
    pub fn serve_read(&self, m: Read) -> Result<ReplicaRead, RemoteError> {
        match m.as_fallback {
            true => self.read_as_fallback(&m.key),
            false => self.read(&m.key, m.cluster_id),
        }
        .map_err(refusal)
    }

    /// Answers [`ReadRows`].
    pub fn serve_read_rows(&self, m: ReadRows) -> Result<ReplicaRead<Rows>, RemoteError> {
        match m.as_fallback {
            true => self.read_rows_as_fallback(&m.key, &m.rows),
            false => self.read_rows(&m.key, &m.rows, m.cluster_id),
        }
        .map_err(refusal)
    }

    /// Answers [`ReadTally`].
    pub fn serve_read_tally(&self, m: ReadTally) -> Result<ReplicaRead<Counted>, RemoteError> {
        match m.as_fallback {
            true => self.read_tally_as_fallback(&m.key),
            false => self.read_tally(&m.key, m.cluster_id, m.ranked.as_ref()),
        }
        .map_err(refusal)
    }

    /// Answers [`Replicate`].
    pub async fn serve_replicate(&self, m: Replicate) -> Result<Ack, RemoteError> {
        self.merge_rows(&m.key, &m.rows).await.map(|()| Ack).map_err(refusal)
    }

    /// Answers [`KeepHint`].
    pub fn serve_keep_hint(&self, m: KeepHint) -> Result<Ack, RemoteError> {
        self.keep_hint(&m.target, &m.key, &m.rows).map(|()| Ack).map_err(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The join of tally replies is a semilattice up to the order of the replies it keeps: `Nothing` is its
    /// identity, `Untallied` absorbs, and tallied replies gather, each distinct one once; so the quorum's fold
    /// holds every distinct reply, whatever order they came in.
    #[test]
    fn tally_replies_join_as_a_set() {
        let reply = |n: u64| TallyReply {
            key_row: None,
            tally: Tally { counts: [n, 0, 0, 0], digest: 7 },
            recent: vec![],
            answer: None,
        };
        let tallied = |ns: &[u64]| Counted::Tallied(ns.iter().map(|&n| reply(n)).collect());
        let all = [Counted::Nothing, tallied(&[1]), tallied(&[2]), tallied(&[1, 2]), Counted::Untallied];
        let join = |a: &Counted, b: &Counted| {
            let mut out = a.clone();
            out.join(b);
            // As a set: the order the replies came in does not matter.
            if let Counted::Tallied(replies) = &mut out {
                replies.sort_by_key(|r| r.tally.counts);
            }
            out
        };
        for a in &all {
            assert_eq!(join(a, a), join(a, &Counted::Nothing), "idempotent");
            assert_eq!(join(&Counted::Nothing, a), join(a, &Counted::Nothing), "identity");
            for b in &all {
                assert_eq!(join(a, b), join(b, a), "commutative");
                for c in &all {
                    assert_eq!(join(&join(a, b), c), join(a, &join(b, c)), "associative");
                }
            }
        }
        assert_eq!(join(&tallied(&[1]), &tallied(&[1])), tallied(&[1]));
        assert_eq!(join(&tallied(&[2]), &tallied(&[1])), tallied(&[1, 2]));
        assert_eq!(join(&Counted::Untallied, &tallied(&[1])), Counted::Untallied);
    }
}
