//! Hinted handoff delivery (paper §4.6): hints held for a replica are sent to it once it answers again, in
//! batches and rate-limited, and deleted only after it acknowledged them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::replica::{Ack, LocalReplica, Replicate};
use crate::cluster::Cluster;
use crate::cluster::{Ping, Pong};
use crate::crdt::rows::Rows;
use crate::membership::MemberStatus;
use crate::rpc::{PeerPool, RpcError};
use crate::storage::hints::{Hint, HintStore};

/// How often the deliverer looks at the backlog.
const POLL: Duration = Duration::from_millis(250);
/// Hints sent per batch.
const BATCH: usize = 64;
/// Default delivery rate: hints per second per node, so a returning node is not flooded.
pub const DEFAULT_RATE: u32 = 2000;

/// Sends held hints to their replicas.
pub struct HintDelivery {
    cluster: Arc<Cluster>,
    hints: Arc<HintStore>,
    /// This node as a replica: a removed node's hints for keys it replicates merge here.
    local: LocalReplica,
    pool: Arc<PeerPool>,
    timeout: Duration,
    rate: u32,
    max_age: Duration,
}

impl HintDelivery {
    /// A deliverer of `hints`, at most `rate` hints per second. Hints older than `max_age` (the tombstone grace)
    /// are dropped instead: delivering one could bring back a delete whose tombstone was reaped meanwhile, and
    /// anti-entropy repairs the data it held.
    pub fn new(
        cluster: Arc<Cluster>,
        hints: Arc<HintStore>,
        local: LocalReplica,
        pool: Arc<PeerPool>,
        timeout: Duration,
        rate: u32,
        max_age: Duration,
    ) -> Self {
        Self { cluster, hints, local, pool, timeout, rate: rate.max(1), max_age }
    }

    /// One round over every target (a leaving node calls it before exiting).
    pub async fn deliver_all(&self) {
        for target in self.hints.backlog().into_keys() {
            self.deliver_to(&target).await;
        }
    }

    /// Delivers until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(POLL) => {}
            }
            for (target, backlog) in self.hints.backlog() {
                metrics::gauge!("dynamo_hints_backlog", "target" => target.clone()).set(backlog.count as f64);
                if cancel.is_cancelled() {
                    return;
                }
                self.deliver_to(&target).await;
            }
        }
    }

    /// Drops `hint` if it is older than the tombstone grace (see [`HintDelivery::new`]); returns whether it was.
    fn expired(&self, target: &str, hint: &Hint) -> bool {
        let age_ms = crate::versioning::clock::now_ms().saturating_sub(hint.stored_ms);
        if u128::from(age_ms) <= self.max_age.as_millis() {
            return false;
        }
        tracing::warn!(%target, age_s = age_ms / 1000, "dropping a hint older than the tombstone grace");
        metrics::counter!("dynamo_hints_expired_total").increment(1);
        let _ = self.hints.delete_delivered(target, hint);
        true
    }

    /// Hints held for a node that was removed go to their keys' current replicas instead. Its ranges were rebuilt
    /// from the other replicas, but a hint may be the last copy of a write: one acknowledged by this hint and a
    /// replica that later lost its disk. A hint is dropped once every current replica took it; one that does not
    /// answer keeps it for the next round.
    async fn redirect(&self, target: &str) {
        let n = self.cluster.n();
        loop {
            let batch = match self.hints.batch(target, BATCH) {
                Ok(b) if !b.is_empty() => b,
                _ => return,
            };
            let started = tokio::time::Instant::now();
            let sent = batch.len();
            for hint in batch {
                if self.expired(target, &hint) {
                    continue;
                }
                let replicas: Vec<(String, String)> = {
                    let view = self.cluster.view();
                    let list = view.preference_list(&hint.user_key);
                    list.iter().take(n).map(|p| (p.member.id.clone(), p.peer_addr.clone())).collect()
                };
                if replicas.is_empty() {
                    return;
                }
                let me = self.cluster.me().member.id.clone();
                let rows = Rows::from_rows([(hint.row.clone(), hint.state.clone())]);
                for (id, addr) in &replicas {
                    let took = if *id == me {
                        self.local.merge_rows(&hint.user_key, &rows).await.is_ok()
                    } else {
                        let req = Replicate { key: hint.user_key.clone(), rows: rows.clone() };
                        matches!(self.pool.call_node(id, addr, req, self.timeout).await, Ok(Ack))
                    };
                    if !took {
                        return;
                    }
                }
                if let Err(e) = self.hints.delete_delivered(target, &hint) {
                    tracing::error!(error = %e, "could not delete a redirected hint");
                    return;
                }
                metrics::counter!("dynamo_hints_redirected_total").increment(1);
            }
            let budget = Duration::from_secs_f64(sent as f64 / f64::from(self.rate));
            tokio::time::sleep_until(started + budget).await;
        }
    }

    /// Sends batches to `target` while it answers and hints remain.
    async fn deliver_to(&self, target: &str) {
        let view = self.cluster.view();
        let Some(member) = view.members.get(target) else { return };
        if member.status == MemberStatus::Removed {
            self.redirect(target).await;
            return;
        }
        if self.cluster.write_stop(target).is_some() {
            // Its storage takes no writes (a full or failing disk): the hints wait until it says it does again.
            return;
        }
        let addr = member.info.peer_addr.clone();
        // A node marked unreachable gets a ping first: that is how it comes back into routing.
        if !self.cluster.is_reachable(target) {
            match self.pool.call_node(target, &addr, Ping, self.timeout).await {
                Ok(Pong) => self.cluster.note_reachable(target, true),
                _ => return,
            }
        }
        loop {
            let batch = match self.hints.batch(target, BATCH) {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(error = %e, "could not read hints");
                    return;
                }
            };
            let started = tokio::time::Instant::now();
            let sent = batch.len();
            for hint in batch {
                if self.expired(target, &hint) {
                    continue;
                }
                let rows = Rows::from_rows([(hint.row.clone(), hint.state.clone())]);
                let req = Replicate { key: hint.user_key.clone(), rows };
                match self.pool.call_node(target, &addr, req, self.timeout).await {
                    Ok(Ack) => {
                        if let Err(e) = self.hints.delete_delivered(target, &hint) {
                            tracing::error!(error = %e, "could not delete a delivered hint");
                            return;
                        }
                    }
                    Err(RpcError::Refused { refusal, .. }) => {
                        // It answered, and refused (its disk stopped writes before it could tell us): try later.
                        tracing::debug!(%target, %refusal, "hint refused; keeping it");
                        return;
                    }
                    _ => {
                        self.cluster.note_reachable(target, false);
                        return;
                    }
                }
            }
            tracing::debug!(%target, sent, "delivered hints");
            // Rate limit: a batch of `sent` hints takes at least sent/rate seconds.
            let budget = Duration::from_secs_f64(sent as f64 / f64::from(self.rate));
            tokio::time::sleep_until(started + budget).await;
        }
    }
}
