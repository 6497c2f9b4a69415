//! Cluster (L2): who the members are, the ring they form, and how this node learns about them.
//!
//! Membership here is by static seeds: every `membership_interval` the node exchanges its member list with its
//! seeds and every member it knows, so nodes started with different seeds still end up knowing each other. The
//! ring is a pure function of the member set ([`Ring::build`] from scratch, sorted by id), so nodes that know the
//! same members route identically. Liveness is local (paper §4.8): a member that does not answer is shown as
//! unreachable but stays a member; only an operator removes nodes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokio_util::sync::CancellationToken;

pub mod gossip;
pub mod state;

use crate::ring::{Ring, RingError};
use crate::rpc::{PeerInfo, PeerPool, Request, Response};

/// The members and the ring built from them, as this node sees them now.
#[derive(Debug)]
pub struct ClusterView {
    /// The ring over `peers`.
    pub ring: Ring,
    /// Every known member by id, this node included.
    pub peers: BTreeMap<String, PeerInfo>,
}

impl ClusterView {
    /// The preference list of `key` as peers: replicas first (the top N), then fallbacks.
    pub fn preference_list(&self, key: &[u8]) -> Vec<&PeerInfo> {
        self.ring.preference_list_for_key(key).map(|m| &self.peers[&m.id]).collect()
    }
}

/// What INFO and `admin members` show about a peer.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    /// The member.
    pub info: PeerInfo,
    /// Whether the last exchange with it succeeded (always true for this node).
    pub reachable: bool,
    /// Since when it has been in that state.
    pub since: Instant,
    /// When it last answered.
    pub last_heard: Option<Instant>,
}

/// This node's membership state.
pub struct Cluster {
    me: PeerInfo,
    seeds: Vec<String>,
    partitions: usize,
    spacing: usize,
    pool: Arc<PeerPool>,
    interval: Duration,
    timeout: Duration,
    view: RwLock<Arc<ClusterView>>,
    liveness: Mutex<HashMap<String, Liveness>>,
}

/// What this node last saw of a peer.
#[derive(Clone, Copy, Debug)]
struct Liveness {
    reachable: bool,
    since: Instant,
    last_heard: Option<Instant>,
}

impl Cluster {
    /// A cluster of one (this node) until exchanges teach it more.
    pub fn new(
        me: PeerInfo,
        seeds: Vec<String>,
        partitions: usize,
        spacing: usize,
        pool: Arc<PeerPool>,
        interval: Duration,
        timeout: Duration,
    ) -> Result<Arc<Self>, RingError> {
        let peers = BTreeMap::from([(me.member.id.clone(), me.clone())]);
        let ring = Ring::build(partitions, vec![me.member.clone()], None, spacing)?;
        Ok(Arc::new(Self {
            me,
            seeds,
            partitions,
            spacing,
            pool,
            interval,
            timeout,
            view: RwLock::new(Arc::new(ClusterView { ring, peers })),
            liveness: Mutex::new(HashMap::new()),
        }))
    }

    /// This node.
    pub fn me(&self) -> &PeerInfo {
        &self.me
    }

    /// The current view (cheap: an `Arc`).
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.read().expect("view lock").clone()
    }

    /// Every known member.
    pub fn known(&self) -> Vec<PeerInfo> {
        self.view().peers.values().cloned().collect()
    }

    /// Merges members heard from `from` (their own entry is authoritative for themselves); rebuilds the ring when
    /// the member set changed. Returns whether it changed.
    pub fn learn(&self, infos: Vec<PeerInfo>, from: Option<&str>) -> bool {
        let mut guard = self.view.write().expect("view lock");
        let mut peers = guard.peers.clone();
        let mut changed = false;
        for info in infos {
            let id = info.member.id.clone();
            if id == self.me.member.id {
                continue;
            }
            let authoritative = from == Some(id.as_str());
            match peers.get(&id) {
                Some(known) if known == &info => {}
                Some(_) if !authoritative => {}
                _ => {
                    peers.insert(id, info);
                    changed = true;
                }
            }
        }
        if !changed {
            return false;
        }
        let members = peers.values().map(|p| p.member.clone()).collect();
        match Ring::build(self.partitions, members, None, self.spacing) {
            Ok(ring) => {
                tracing::info!(members = peers.len(), "membership changed; ring rebuilt");
                metrics::counter!("dynamo_ring_rebuilds_total").increment(1);
                *guard = Arc::new(ClusterView { ring, peers });
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "membership update rejected");
                false
            }
        }
    }

    /// Records whether a member answered.
    pub fn note_reachable(&self, id: &str, reachable: bool) {
        let now = Instant::now();
        let mut l = self.liveness.lock().expect("liveness lock");
        let entry = l.entry(id.to_string()).or_insert(Liveness { reachable, since: now, last_heard: None });
        if entry.reachable != reachable {
            if reachable {
                tracing::info!(peer = id, "peer is reachable again");
            } else {
                tracing::warn!(peer = id, "peer is unreachable");
            }
            entry.reachable = reachable;
            entry.since = now;
        }
        if reachable {
            entry.last_heard = Some(now);
        }
    }

    /// Status of every member, this node first.
    pub fn statuses(&self) -> Vec<PeerStatus> {
        let view = self.view();
        let l = self.liveness.lock().expect("liveness lock");
        let now = Instant::now();
        let mut out: Vec<PeerStatus> = view
            .peers
            .values()
            .map(|info| {
                if info.member.id == self.me.member.id {
                    return PeerStatus { info: info.clone(), reachable: true, since: now, last_heard: Some(now) };
                }
                let seen = l.get(&info.member.id).copied().unwrap_or(Liveness {
                    reachable: false,
                    since: now,
                    last_heard: None,
                });
                PeerStatus {
                    info: info.clone(),
                    reachable: seen.reachable,
                    since: seen.since,
                    last_heard: seen.last_heard,
                }
            })
            .collect();
        out.sort_by_key(|s| s.info.member.id != self.me.member.id);
        out
    }

    /// One round: exchange member lists with every seed and every known member, in parallel.
    pub async fn exchange_once(&self) {
        let known = self.known();
        let mut targets: Vec<(Option<String>, String)> = known
            .iter()
            .filter(|p| p.member.id != self.me.member.id)
            .map(|p| (Some(p.member.id.clone()), p.peer_addr.clone()))
            .collect();
        for seed in &self.seeds {
            if *seed != self.me.peer_addr && !targets.iter().any(|(_, a)| a == seed) {
                targets.push((None, seed.clone()));
            }
        }
        let calls = targets.into_iter().map(|(id, addr)| {
            let known = known.clone();
            async move {
                let r = self.pool.call(&addr, Request::Members { known }, self.timeout).await;
                (id, addr, r)
            }
        });
        for (id, addr, result) in join_all(calls).await {
            match result {
                Ok(Response::Members { known }) => {
                    // The answering node's own entry tells us its id when we only knew a seed address.
                    let from = known.iter().find(|p| p.peer_addr == addr).map(|p| p.member.id.clone()).or(id);
                    if let Some(from) = &from {
                        self.note_reachable(from, true);
                    }
                    self.learn(known, from.as_deref());
                }
                Ok(other) => tracing::warn!(%addr, ?other, "unexpected answer to a membership exchange"),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "membership exchange failed");
                    if let Some(id) = id {
                        self.note_reachable(&id, false);
                    }
                }
            }
        }
    }

    /// Exchanges membership every interval until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => self.exchange_once().await,
            }
        }
    }
}
