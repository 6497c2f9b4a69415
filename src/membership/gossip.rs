//! Gossip (pure): every tick this node raises its heartbeat, sends its whole state to one random live member
//! (and now and then to a seed, so nodes joined through different seeds meet), and merges what comes back
//! (push-pull). Housekeeping after each change: the claimant commits a pending membership change when automatic
//! commits are on, and any node flips a completed transition.

use super::state::{ClusterState, StateError};

/// Every this many ticks a seed is contacted even when members are known.
pub const SEED_EVERY: u64 = 5;

/// Where a gossip message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A member, by id.
    Member(String),
    /// A seed, by peer address.
    Seed(String),
}

/// The gossip protocol of one node.
#[derive(Debug)]
pub struct Gossip {
    me: String,
    state: ClusterState,
    seeds: Vec<String>,
    rng: u64,
    round: u64,
    n: usize,
    auto_commit: bool,
    /// `--bootstrap-expect`: (members to wait for, partitions of the ring to found).
    bootstrap: Option<(usize, usize)>,
}

impl Gossip {
    /// A node's gossip over its initial `state`. `seed` makes peer choice reproducible.
    pub fn new(me: &str, state: ClusterState, seeds: Vec<String>, n: usize, auto_commit: bool, seed: u64) -> Self {
        let mut g = Self { me: me.to_string(), state, seeds, rng: seed | 1, round: 0, n, auto_commit, bootstrap: None };
        g.housekeeping();
        g
    }

    /// Founds the cluster by itself once `expect` members know each other and none knows a ring (see
    /// [`ClusterState::bootstrap_due`]), with `partitions` partitions. A node whose state has a ring ignores it.
    pub fn with_bootstrap(mut self, expect: usize, partitions: usize) -> Self {
        self.bootstrap = Some((expect, partitions));
        self.housekeeping();
        self
    }

    /// The current state.
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Applies a local change (join, leave, commit, transfer done) and runs housekeeping. Returns its result.
    pub fn update<T>(&mut self, f: impl FnOnce(&mut ClusterState) -> Result<T, StateError>) -> Result<T, StateError> {
        let out = f(&mut self.state)?;
        self.housekeeping();
        Ok(out)
    }

    /// One round: heartbeat, housekeeping, and the messages to send (each carries the whole state).
    pub fn tick(&mut self, live: impl Fn(&str) -> bool) -> Vec<Target> {
        self.round += 1;
        self.state.beat(&self.me);
        self.housekeeping();
        let peers: Vec<String> = self
            .state
            .members
            .iter()
            .filter(|(id, m)| **id != self.me && m.status != super::state::MemberStatus::Removed && live(id))
            .map(|(id, _)| id.clone())
            .collect();
        let mut out = Vec::new();
        if !peers.is_empty() {
            let i = (self.next_random() % peers.len() as u64) as usize;
            out.push(Target::Member(peers[i].clone()));
        }
        if !self.seeds.is_empty() && (peers.is_empty() || self.round.is_multiple_of(SEED_EVERY)) {
            let i = (self.next_random() % self.seeds.len() as u64) as usize;
            out.push(Target::Seed(self.seeds[i].clone()));
        }
        out
    }

    /// Merges a state received from a peer (a push, or the reply to ours). Returns whether ours changed.
    pub fn receive(&mut self, theirs: &ClusterState) -> bool {
        let changed = self.state.merge(theirs);
        if changed {
            self.housekeeping();
        }
        changed
    }

    fn housekeeping(&mut self) {
        if let Some((expect, q)) = self.bootstrap
            && self.state.bootstrap_due(&self.me, expect)
        {
            let members = self.state.bootstrap_waiting().join(",");
            let id = self.next_random() | 1;
            match self.state.bootstrap(&self.me, q, self.n, id) {
                Ok(()) => tracing::info!(%members, "bootstrap: founded the cluster with the expected members"),
                Err(e) => tracing::warn!(error = %e, "bootstrap failed"),
            }
        }
        if self.state.claimant() == Some(self.me.as_str()) && self.state.remove_idle_leavers() {
            tracing::info!("removed a member that left before it owned a key range");
        }
        let stale = self.state.transition_stale();
        if self.auto_commit
            && (stale || self.state.ring.next.is_none())
            && !self.state.ring.owners.is_empty()
            && self.state.claimant() == Some(self.me.as_str())
            && (stale || self.state.change_pending())
            && let Ok(Some(next)) = self.state.plan(self.n)
        {
            match self.state.commit(&self.me, next) {
                Ok(()) => tracing::info!(version = self.state.ring.version, "committed a membership change"),
                Err(e) => tracing::warn!(error = %e, "automatic commit failed"),
            }
        }
        self.state.try_flip(self.n);
    }

    /// xorshift64: deterministic and good enough to pick peers.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}
