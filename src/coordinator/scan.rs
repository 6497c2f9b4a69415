//! SCAN over the whole cluster, through any node.
//!
//! Storage keys sort by ring position (slot, then MD5), so a cursor is a position: the top 63 bits of the next one
//! to visit ([`layout::scan_cursor`]), which fit Redis's integer cursor even where a client parses it as signed. A page walks partitions from the cursor; for each it asks R of the
//! range's N replicas for their keys from there on, and merges them:
//! - a replica that stopped at its limit bounds the page at its last cursor (it sent every key sharing that cursor,
//!   see [`ScanKeys`]), so keys beyond it wait for the next page and none is skipped;
//! - the states are merged per key, so a key some replica saw deleted is dropped when the deletion covers it.
//!
//! Any key acknowledged before the scan began is on W replicas, and R + W > N replicas answered, so it is
//! returned (Redis's guarantee); keys written or deleted during the scan may or may not be. Progress needs R
//! replicas of each range, not any one node. Each call does bounded work: up to `count` keys (at most
//! [`MAX_COUNT`]) from at most [`MAX_PARTITIONS_PER_CALL`] partitions.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::{CoordError, Coordinator, Replica};
use crate::cluster::ClusterView;
use crate::rpc::RemoteError;
use crate::storage::layout;
use crate::versioning::Siblings;

/// Most keys one page returns (and asks of a replica), whatever COUNT says.
pub const MAX_COUNT: usize = 1000;

/// Most partitions one page visits: an empty keyspace still answers in bounded time, with a cursor to go on.
pub const MAX_PARTITIONS_PER_CALL: usize = 16;

/// One page of a scan.
#[derive(Debug)]
pub struct ScanPage {
    /// The cursor of the next page; 0 when the scan is complete.
    pub next: u64,
    /// Live user keys found, in ring order (repeats across pages are possible, as in Redis).
    pub keys: Vec<Bytes>,
}

/// What one replica answered for a range: its keys in storage order and whether it reached the range's end.
type Answer = (Vec<(Bytes, Siblings)>, bool);

/// The stored keys with ring positions in `[first, last]`, in storage order, their states without values: at least
/// `limit` of them when there are, and then every further key that shares the last one's scan cursor (the top 63
/// bits of its position), so a cursor never splits keys.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ScanKeys {
    /// First position.
    pub first: u128,
    /// Last position (inclusive).
    pub last: u128,
    /// Keys wanted (at most [`MAX_COUNT`] are sent, whatever the asker says).
    pub limit: u32,
}

/// Answer to [`ScanKeys`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Keys {
    /// (storage key, state without values) of each key, in storage order.
    pub items: Vec<(Bytes, Siblings)>,
    /// Whether the range is exhausted.
    pub done: bool,
}

crate::rpc_message!(ScanKeys => Keys, tag 50, "scan_keys");

impl Coordinator {
    /// Answers [`ScanKeys`] from this node's replicas.
    pub fn serve_scan_keys(&self, m: ScanKeys) -> Result<Keys, RemoteError> {
        let (items, done) = self.local_keys(m.first, m.last, (m.limit as usize).clamp(1, MAX_COUNT))?;
        Ok(Keys { items, done })
    }

    /// This node's keys in `[first, last]`, without values (see [`ScanKeys`]).
    fn local_keys(&self, first: u128, last: u128, limit: usize) -> Result<Answer, CoordError> {
        let (items, done) = self.store.scan_page(first, last, limit)?;
        Ok((items.into_iter().map(|(k, s)| (k, s.without_values())).collect(), done))
    }

    /// One page of a cluster-wide key scan from `cursor`, keeping the live keys `keep` accepts.
    pub async fn scan(
        self: &Arc<Self>,
        cursor: u64,
        count: usize,
        keep: impl Fn(&[u8], crate::crdt::Kind) -> bool,
    ) -> Result<ScanPage, CoordError> {
        self.scan_until(cursor, count, u128::MAX, keep).await
    }

    /// One page of a key scan from `cursor` that stops at ring position `end` (inclusive; its last cursor must end
    /// there, as a slot's or a partition's last position does): the next cursor is 0 once `end` is passed.
    pub async fn scan_until(
        self: &Arc<Self>,
        cursor: u64,
        count: usize,
        end: u128,
        keep: impl Fn(&[u8], crate::crdt::Kind) -> bool,
    ) -> Result<ScanPage, CoordError> {
        let r = self.check(super::QuorumOf::Reads, None)?;
        let view = self.cluster.view();
        let Some(ring) = view.ring.as_ref() else {
            return Err(CoordError::NoRing { reason: self.cluster.waiting().unwrap_or_default() });
        };
        let count = count.clamp(1, MAX_COUNT);
        let mut position = layout::cursor_position(cursor);
        let mut keys = Vec::new();
        for _ in 0..MAX_PARTITIONS_PER_CALL {
            if position > end {
                return Ok(ScanPage { next: 0, keys });
            }
            let p = ring.partition_of(position);
            let last = ring.partition_range(p).1.min(end);
            let answers = self.scan_replicas(&view, p, position, last, count - keys.len(), r).await?;
            let (found, resume) = merge_answers(answers);
            keys.extend(found.into_iter().filter(|(k, kind)| keep(k, *kind)).map(|(k, _)| k));
            position = match resume {
                Some(next) if next <= last => next,
                _ if last == u128::MAX => return Ok(ScanPage { next: 0, keys }),
                _ => last + 1,
            };
            if keys.len() >= count {
                break;
            }
        }
        let next = if position > end { 0 } else { layout::scan_cursor(position) };
        Ok(ScanPage { next, keys })
    }

    /// Asks the replicas of partition `p` for their keys in `[first, last]` until R answered.
    async fn scan_replicas(
        self: &Arc<Self>,
        view: &ClusterView,
        p: usize,
        first: u128,
        last: u128,
        limit: usize,
        r: usize,
    ) -> Result<Vec<Answer>, CoordError> {
        let replicas: Vec<Replica> = view
            .replicas_of(p, self.quorum.n)
            .iter()
            .filter_map(|id| view.members.get(id))
            .map(|m| self.replica_of(&m.info))
            .collect();
        let needed = r.min(replicas.len()).max(1);
        let mut answers = Vec::new();
        let mut pending = FuturesUnordered::new();
        for rep in &replicas {
            if rep.local {
                answers.push(self.local_keys(first, last, limit)?);
            } else {
                let request = ScanKeys { first, last, limit: limit as u32 };
                let (pool, cluster, timeout, rep) =
                    (self.pool.clone(), self.cluster.clone(), self.timeout, rep.clone());
                pending.push(async move {
                    match pool.call_node(&rep.id, &rep.addr, request, timeout).await {
                        Ok(Keys { items, done }) => Some((items, done)),
                        Err(crate::rpc::RpcError::Refused { refusal, .. }) => {
                            tracing::warn!(replica = %rep.id, %refusal, "a replica refused a key scan");
                            None
                        }
                        Err(_) => {
                            cluster.note_reachable(&rep.id, false);
                            None
                        }
                    }
                });
            }
        }
        while answers.len() < needed {
            match pending.next().await {
                Some(Some(answer)) => answers.push(answer),
                Some(None) => {}
                None => return Err(CoordError::Unavailable { needed, got: answers.len() }),
            }
        }
        Ok(answers)
    }
}

/// Merges replicas' answers for one range: the live keys every answer covers, and where the next page resumes
/// (`None`: the range is done). An answer that stopped at its limit covers keys up to its last cursor.
fn merge_answers(answers: Vec<Answer>) -> (Vec<(Bytes, crate::crdt::Kind)>, Option<u128>) {
    let cursor_of = |k: &Bytes| layout::position(k).map_or(0, layout::scan_cursor);
    let bound: Option<u64> =
        answers.iter().filter(|(_, done)| !done).filter_map(|(items, _)| items.last().map(|(k, _)| cursor_of(k))).min();
    let mut merged: BTreeMap<Bytes, Siblings> = BTreeMap::new();
    for (items, _) in answers {
        for (k, state) in items {
            if bound.is_some_and(|b| cursor_of(&k) > b) {
                continue;
            }
            match merged.get_mut(&k) {
                Some(s) => s.merge(&state),
                None => {
                    merged.insert(k, state);
                }
            }
        }
    }
    // An expired key is not returned (`drop_expired` leaves it without a live value).
    let now = crate::coordinator::now_ms();
    let keys = merged
        .into_iter()
        .filter_map(|(k, mut s)| {
            s.drop_expired(now);
            Some((Bytes::copy_from_slice(layout::user_key(&k)?), crate::crdt::kind(&s)?))
        })
        .collect();
    // Past the ring's last cursor there is nothing left to resume at.
    let resume = bound.filter(|&b| b < layout::scan_cursor(u128::MAX)).map(|b| layout::cursor_position(b + 1));
    (keys, resume)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioning::{Actor, Dot, VersionVector};

    fn live(n: u64) -> Siblings {
        let mut s = Siblings::new();
        s.update(&VersionVector::new(), Dot { actor: Actor(1), counter: n }, n, Some(Bytes::new()));
        s
    }

    fn key(name: &str) -> Bytes {
        layout::storage_key(name.as_bytes())
    }

    fn sorted(names: &[&str]) -> Vec<(Bytes, Siblings)> {
        let mut v: Vec<(Bytes, Siblings)> = names.iter().map(|n| (key(n), live(1))).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn a_replica_that_stopped_early_bounds_the_page_so_nothing_is_skipped() {
        let all = sorted(&["a", "b", "c", "d", "e", "f"]);
        // One replica missed a write; the other stopped after three keys.
        let full: Vec<_> = all.iter().filter(|(k, _)| k != &key("d")).cloned().collect();
        let partial: Vec<_> = all[..3].to_vec();
        let (keys, resume) = merge_answers(vec![(full, true), (partial.clone(), false)]);
        let expected: Vec<(Bytes, crate::crdt::Kind)> = partial
            .iter()
            .map(|(k, _)| (Bytes::copy_from_slice(layout::user_key(k).unwrap()), crate::crdt::Kind::String))
            .collect();
        assert_eq!(keys, expected, "only what both answers cover");
        let last = layout::position(&partial[2].0).unwrap();
        assert_eq!(resume, Some(layout::cursor_position(layout::scan_cursor(last) + 1)));
        // Both done: the union, and the range is finished.
        let (keys, resume) = merge_answers(vec![(all[..4].to_vec(), true), (all[2..].to_vec(), true)]);
        assert_eq!(keys.len(), 6);
        assert_eq!(resume, None);
    }

    #[test]
    fn a_deletion_one_replica_saw_hides_the_key() {
        let k = key("gone");
        let value = live(1);
        let mut deleted = value.clone();
        let ctx = deleted.context().clone();
        deleted.update(&ctx, Dot { actor: Actor(2), counter: 1 }, 2, None);
        let (keys, _) = merge_answers(vec![(vec![(k.clone(), value)], true), (vec![(k, deleted)], true)]);
        assert!(keys.is_empty());
    }
}
