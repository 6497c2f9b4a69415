//! Cluster (L2): drives the gossip protocol over the network and keeps what the data path needs from it.
//!
//! * Every `membership_interval` the pure [`Gossip`] machine picks a live member (and now and then a seed); the
//!   whole state goes out and the peer's merged state comes back (push-pull).
//! * The state is persisted in the data directory whenever members or the ring change, so a restarted node comes
//!   back as itself with its view of the ring. The file is written (and fsynced) after the gossip lock is released:
//!   the view changes at once, the file follows.
//! * [`ClusterView`] is the routing snapshot: the current ring (reads and writes), the next ring during a
//!   transition (writes also reach its new replicas), and the member records.
//! * Liveness is local (paper §4.8): a member that does not answer is unreachable for routing and retried; it stays
//!   a member until an operator removes it. Gossip-heard heartbeats feed the admin views.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::membership::clock::SKEW_WARN_MS;
use crate::membership::{ClockReading, ClusterState, Gossip, MemberRecord, MemberStatus, PeerInfo, StateError, Target};
use crate::ring::Ring;
use crate::rpc::{PeerPool, RemoteError};
use crate::versioning::clock::now_ms;

/// File of the persisted cluster state.
const STATE_FILE: &str = "cluster.state";
/// How often a node that cannot serve yet logs why.
const WAIT_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Liveness probe of a peer (hint delivery asks it before streaming to a node it believed down).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Ping;

/// Answer to [`Ping`].
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Pong;

crate::rpc_message!(Ping => Pong, tag 1, "ping");

/// One gossip exchange (push-pull): the sender's whole cluster state.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GossipPush {
    /// The sender's state.
    pub state: Box<ClusterState>,
}

/// Answer to [`GossipPush`]: the receiver's state after merging.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GossipPull {
    /// The receiver's state after merging.
    pub state: Box<ClusterState>,
    /// The receiver's wall clock when it answered (ms since the Unix epoch): the sender measures the skew between
    /// their clocks from it.
    pub clock_ms: u64,
}

crate::rpc_message!(GossipPush => GossipPull, tag 2, "gossip");

/// Why the cluster layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The persisted state could not be read or written.
    #[error("cluster state file {path}: {reason}")]
    StateFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Numbers the cluster handles of the process ([`Cluster::view`]'s per-thread copies are by handle).
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(0);

/// Cluster handles whose view a thread keeps a copy of: one per node of the process in dev mode, a few more in the
/// simulator, which runs node after node on one thread (the oldest copy goes first).
const THREAD_VIEWS_KEPT: usize = 8;

thread_local! {
    /// This thread's copies of views: (cluster handle, generation, view).
    static THREAD_VIEWS: std::cell::RefCell<Vec<(u64, u64, Arc<ClusterView>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The routing snapshot.
#[derive(Clone, Debug)]
pub struct ClusterView {
    /// The ring reads and writes use; `None` until a joining node has heard of one.
    pub ring: Option<Ring>,
    /// The ring after the transition in progress.
    pub next: Option<Ring>,
    /// Member records by id.
    pub members: BTreeMap<String, MemberRecord>,
    /// Version of the ring state.
    pub ring_version: u64,
    /// Who made that version (two plans of one version are told apart by their author).
    pub ring_author: String,
    /// Transfers of the transition in progress that are done: (partition, receiving node).
    pub done: std::collections::BTreeSet<(u32, String)>,
    /// Key ranges of the transition in progress whose every transfer is done: they already use the next ring's
    /// replicas, while the others still use the current ring's (ownership moves range by range, as Riak hands off
    /// vnode by vnode, instead of all at once when the last transfer ends).
    pub moved: std::collections::BTreeSet<u32>,
    /// The cluster's identity (0 while unknown).
    pub cluster_id: u64,
}

impl ClusterView {
    /// The ring positions `[first, last]` of key range `partition` in the current ring (`None`: no ring yet, or no
    /// such partition: a peer's request about a ring this node does not know).
    pub fn partition_range(&self, partition: u32) -> Option<(u128, u128)> {
        let ring = self.ring.as_ref()?;
        ((partition as usize) < ring.partitions()).then(|| ring.partition_range(partition as usize))
    }

    /// The ring whose preference lists key range `p` uses now: the next ring once the range has moved.
    pub fn ring_for(&self, p: usize) -> Option<&Ring> {
        if self.moved.contains(&(p as u32)) { self.next.as_ref() } else { self.ring.as_ref() }
    }

    /// Whether key range `p` is moving: a transition is in progress and its transfers are not all done.
    pub fn is_moving(&self, p: usize) -> bool {
        self.next.is_some() && !self.moved.contains(&(p as u32))
    }

    fn infos<'a>(&'a self, ring: Option<&'a Ring>, key: &[u8]) -> Vec<&'a PeerInfo> {
        ring.map(|r| {
            r.preference_list_for_key(key).filter_map(|m| self.members.get(&m.id).map(|rec| &rec.info)).collect()
        })
        .unwrap_or_default()
    }

    fn partition_of_key(&self, key: &[u8]) -> Option<usize> {
        self.ring.as_ref().map(|r| r.partition_of_key(key))
    }

    /// The whole preference list of `key` as its range uses it now (replicas first, then fallbacks).
    pub fn preference_list(&self, key: &[u8]) -> Vec<&PeerInfo> {
        self.infos(self.partition_of_key(key).and_then(|p| self.ring_for(p)), key)
    }

    /// The top `n` of `key` in the next ring that are not in the current top `n`, while its range is moving: they
    /// receive writes during a transition so nothing written while a range moves is missing when it flips.
    pub fn incoming_replicas(&self, key: &[u8], n: usize) -> Vec<&PeerInfo> {
        if !self.partition_of_key(key).is_some_and(|p| self.is_moving(p)) {
            return Vec::new();
        }
        let current: Vec<&str> = self.preference_list(key).iter().take(n).map(|p| p.member.id.as_str()).collect();
        self.infos(self.next.as_ref(), key)
            .into_iter()
            .take(n)
            .filter(|p| !current.contains(&p.member.id.as_str()))
            .collect()
    }

    /// The ids of key range `p`'s top `n` replicas as the range uses them now.
    pub fn replicas_of(&self, p: usize, n: usize) -> Vec<String> {
        self.ring_for(p).map(|r| r.preference_list(p).take(n).map(|m| m.id.clone()).collect()).unwrap_or_default()
    }

    /// Whether member `id` holds key range `p` in full by this view: it is one of the range's top `n` as the range
    /// uses them now, or, while the range moves, a next replica whose transfer is done (a coordinator whose view
    /// moved the range first reads from it).
    pub fn holds_range(&self, id: &str, p: u32, n: usize) -> bool {
        let Some(ring) = self.ring.as_ref() else { return false };
        if (p as usize) >= ring.partitions() {
            return false;
        }
        self.replicas_of(p as usize, n).iter().any(|m| m == id)
            || self.next.as_ref().is_some_and(|next| {
                next.preference_list(p as usize).take(n).any(|m| m.id == id) && self.done.contains(&(p, id.to_string()))
            })
    }

    /// The hash-slot map cluster clients route by (`CLUSTER SLOTS`): runs of consecutive slots whose key ranges
    /// have the same replicas, each with its nodes in the order a client should prefer. The first is the range's
    /// first replica that `healthy` accepts (the "master" to clients: a coordinator that holds the key), then the
    /// other replicas in preference order. Follows the ring as ranges move, and liveness through `healthy`.
    pub fn slot_map(&self, n: usize, healthy: impl Fn(&str) -> bool) -> Vec<SlotRange<'_>> {
        let Some(ring) = self.ring.as_ref() else { return Vec::new() };
        let q = ring.partitions();
        let per = crate::ring::slot::SLOTS / q;
        let mut out: Vec<SlotRange<'_>> = Vec::new();
        for p in 0..q {
            let mut nodes: Vec<&PeerInfo> =
                self.replicas_of(p, n).iter().filter_map(|id| self.members.get(id).map(|m| &m.info)).collect();
            if let Some(i) = nodes.iter().position(|m| healthy(&m.member.id)) {
                let first = nodes.remove(i);
                nodes.insert(0, first);
            }
            let (first, last) = ((p * per) as u16, ((p + 1) * per - 1) as u16);
            match out.last_mut() {
                Some(prev) if prev.nodes == nodes && prev.last + 1 == first => prev.last = last,
                _ => out.push(SlotRange { first, last, nodes }),
            }
        }
        out
    }

    /// Where a cluster client that sent a key of `slot` to member `me` should have sent it: the slot's first
    /// healthy replica, when `me` is not one of its replicas. `None` when `me` is a replica, when no replica is
    /// healthy, or while the slot's range moves (views may then disagree on its replicas, and a redirect could
    /// bounce: a forward is safer).
    pub fn redirect_for(&self, slot: u16, n: usize, me: &str, healthy: impl Fn(&str) -> bool) -> Option<&PeerInfo> {
        let ring = self.ring.as_ref()?;
        let p = usize::from(slot) / (crate::ring::slot::SLOTS / ring.partitions());
        if self.is_moving(p) {
            return None;
        }
        let replicas = self.replicas_of(p, n);
        if replicas.iter().any(|id| id == me) {
            return None;
        }
        let first = replicas.iter().find(|id| healthy(id))?;
        self.members.get(first).map(|m| &m.info)
    }

    /// Every key range member `id` holds in full (see [`holds_range`](Self::holds_range)); `None` without a ring.
    pub fn held_ranges(&self, id: &str, n: usize) -> Option<Vec<u32>> {
        let ring = self.ring.as_ref()?;
        Some((0..ring.partitions() as u32).filter(|&p| self.holds_range(id, p, n)).collect())
    }
}

/// A run of hash slots and the nodes that hold its keys, the preferred coordinator first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRange<'a> {
    /// First slot.
    pub first: u16,
    /// Last slot (inclusive).
    pub last: u16,
    /// Replicas, the preferred one first.
    pub nodes: Vec<&'a PeerInfo>,
}

/// What the admin views show about a member.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    /// The member record.
    pub record: MemberRecord,
    /// Whether it answers (always true for this node).
    pub reachable: bool,
    /// Since when it has been in that state.
    pub since: Instant,
    /// When it was last heard of, directly or through gossip.
    pub last_heard: Option<Instant>,
    /// Its clock against ours, from the last gossip exchange that measured it.
    pub clock: Option<ClockReading>,
}

#[derive(Clone, Copy, Debug)]
struct Liveness {
    reachable: bool,
    since: Instant,
    last_heard: Option<Instant>,
    clock: Option<ClockReading>,
}

/// This node's membership.
pub struct Cluster {
    me: PeerInfo,
    n: usize,
    auto_commit: bool,
    pool: Arc<PeerPool>,
    interval: Duration,
    timeout: Duration,
    gossip: Mutex<Gossip>,
    view: RwLock<Arc<ClusterView>>,
    /// Bumped after each new view, so a thread's own copy of the view ([`Cluster::view`]) knows it is current.
    view_generation: AtomicU64,
    /// This cluster handle among the others of the process (dev mode and tests run several), for the threads'
    /// copies of its view.
    instance: u64,
    liveness: Mutex<BTreeMap<String, Liveness>>,
    /// Last heartbeat seen per member and when it rose.
    heartbeats: Mutex<BTreeMap<String, (u64, Instant)>>,
    state_path: PathBuf,
    /// Members and ring of the state last queued for saving, to skip writes for heartbeat-only changes.
    persisted: Mutex<Option<(BTreeMap<String, MemberRecord>, crate::membership::RingState)>>,
    /// The newest state waiting to be written to the state file ([`save_pending`](Self::save_pending)), which
    /// runs after the gossip lock is released: an fsync under it would stall every reader of the state.
    unsaved: Mutex<Option<ClusterState>>,
    /// Held while the state file is written, so saves never interleave.
    saving: Mutex<()>,
    removed: CancellationToken,
    /// When a node of another cluster was last reported.
    foreign_warned: Mutex<Option<Instant>>,
    /// Seed addresses, and what the last exchange with each gave (for the reason a node waits).
    seeds: Vec<String>,
    seed_status: Mutex<BTreeMap<String, String>>,
    bootstrap_expect: Option<usize>,
    /// Members that said they take no writes, with why (from the gossiped write notices).
    write_stops: RwLock<BTreeMap<String, String>>,
}

/// Where this run's cluster state came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The data directory held it: the node comes back as the member it was.
    Loaded,
    /// No state and no seeds: this node founded a new cluster (and so owns every range, all of them empty).
    Founded,
    /// No state, with seeds: this node joins through them, as a new member or as an existing one that forgot.
    Joining,
}

/// How a node enters the cluster.
#[derive(Clone, Debug)]
pub struct ClusterParams {
    /// This node.
    pub me: PeerInfo,
    /// Seed peer addresses.
    pub seeds: Vec<String>,
    /// Found the cluster once this many members know each other (when no ring exists yet).
    pub bootstrap_expect: Option<usize>,
    /// Partitions of a cluster this node founds.
    pub partitions: usize,
    /// Replicas per key.
    pub n: usize,
    /// Whether the claimant commits membership changes by itself.
    pub auto_commit: bool,
    /// Gossip interval.
    pub interval: Duration,
    /// Timeout of one exchange.
    pub timeout: Duration,
    /// Where the state is persisted.
    pub data_dir: PathBuf,
}

impl Cluster {
    /// Loads the persisted state, or starts one: a node without seeds (other than itself) founds a cluster, a node
    /// with seeds joins through them.
    pub fn open(p: ClusterParams, pool: Arc<PeerPool>) -> Result<Arc<Self>, ClusterError> {
        let state_path = p.data_dir.join(STATE_FILE);
        let seeds: Vec<String> = p.seeds.into_iter().filter(|s| *s != p.me.peer_addr).collect();
        let state = match load(&state_path)? {
            Some(mut s) => {
                s.upsert_self(p.me.clone());
                s
            }
            None if seeds.is_empty() && p.bootstrap_expect.is_none() => {
                let id = random_cluster_id()?;
                tracing::warn!(
                    cluster_id = %format!("{id:016x}"),
                    "no seeds and no cluster state: founding a new cluster. If this node belonged to a cluster and \
                     lost its data directory, stop it and start it with --seeds of that cluster instead"
                );
                ClusterState::founder(p.me.clone(), p.partitions).with_cluster_id(id)
            }
            None => ClusterState::joiner(p.me.clone()),
        };
        let seed = u64::from_le_bytes(md5::compute(p.me.member.id.as_bytes()).0[..8].try_into().expect("8 bytes"));
        let mut gossip = Gossip::new(&p.me.member.id, state, seeds.clone(), p.n, p.auto_commit, seed ^ now_nanos());
        if let Some(expect) = p.bootstrap_expect {
            gossip = gossip.with_bootstrap(expect, p.partitions);
        }
        let cluster = Arc::new(Self {
            me: p.me,
            n: p.n,
            auto_commit: p.auto_commit,
            pool,
            interval: p.interval,
            timeout: p.timeout,
            view: RwLock::new(Arc::new(build_view(gossip.state(), p.n))),
            view_generation: AtomicU64::new(0),
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            gossip: Mutex::new(gossip),
            liveness: Mutex::new(BTreeMap::new()),
            heartbeats: Mutex::new(BTreeMap::new()),
            state_path,
            persisted: Mutex::new(None),
            unsaved: Mutex::new(None),
            saving: Mutex::new(()),
            removed: CancellationToken::new(),
            foreign_warned: Mutex::new(None),
            seeds,
            seed_status: Mutex::new(BTreeMap::new()),
            bootstrap_expect: p.bootstrap_expect,
            write_stops: RwLock::new(BTreeMap::new()),
        });
        let g = cluster.gossip.lock().expect("gossip lock");
        cluster.refresh(&g);
        drop(g);
        cluster.save_pending()?;
        Ok(cluster)
    }

    /// This node.
    pub fn me(&self) -> &PeerInfo {
        &self.me
    }

    /// Replicas per key.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Why this node cannot serve yet, or `None` once it knows a ring: it waits for bootstrap (how many of the
    /// expected nodes it sees), or for a ring from its seeds (what each seed answered last).
    pub fn waiting(&self) -> Option<String> {
        if self.view().ring.is_some() {
            return None;
        }
        let status = self.seed_status.lock().expect("seed status lock");
        let seeds = if self.seeds.is_empty() {
            "none configured".to_string()
        } else {
            self.seeds
                .iter()
                .map(|s| format!("{s} ({})", status.get(s).map_or("not contacted yet", String::as_str)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Some(match self.bootstrap_expect {
            Some(expect) => {
                let state = self.state();
                let seen = state.bootstrap_waiting();
                format!(
                    "waiting for bootstrap: {} of {expect} expected nodes know each other ({}); seeds: {seeds}",
                    seen.len(),
                    seen.join(",")
                )
            }
            None => format!(
                "waiting for a ring from the seeds (a member of a running cluster among them, or start every node of \
                 a new cluster with --bootstrap-expect); seeds: {seeds}"
            ),
        })
    }

    /// The current routing snapshot. Every request asks for it, so each thread keeps its own copy of the view and
    /// hands out clones of that: the shared one behind a lock cost every request two atomic writes to cache lines
    /// both runtime threads write (the lock's and the `Arc`'s count), 4% of a pipelined GET. A thread refreshes its
    /// copy when the view's generation moved.
    pub fn view(&self) -> Arc<ClusterView> {
        let generation = self.view_generation.load(Ordering::Acquire);
        THREAD_VIEWS.with(|views| {
            let mut views = views.borrow_mut();
            if let Some((_, seen, view)) = views.iter().find(|(instance, _, _)| *instance == self.instance)
                && *seen == generation
            {
                return view.clone();
            }
            // Read after the generation: the view is at least that new (a newer one only refreshes again).
            let view = Arc::new(ClusterView::clone(&self.view.read().expect("view lock")));
            views.retain(|(instance, _, _)| *instance != self.instance);
            if views.len() >= THREAD_VIEWS_KEPT {
                views.remove(0);
            }
            views.push((self.instance, generation, view.clone()));
            view
        })
    }

    /// A copy of the whole gossiped state.
    pub fn state(&self) -> ClusterState {
        self.gossip.lock().expect("gossip lock").state().clone()
    }

    /// Fires when this node has been removed from the cluster (after leaving).
    pub fn removed(&self) -> CancellationToken {
        self.removed.clone()
    }

    /// Applies a local change to the state (join, leave, remove, commit, transfer done) and spreads it.
    pub fn update<T>(&self, f: impl FnOnce(&mut ClusterState) -> Result<T, StateError>) -> Result<T, StateError> {
        let mut g = self.gossip.lock().expect("gossip lock");
        let out = g.update(f)?;
        self.refresh(&g);
        drop(g);
        if let Err(e) = self.save_pending() {
            tracing::error!(error = %e, "could not persist the cluster state");
        }
        Ok(out)
    }

    /// Makes this node, founder of a cluster of its own, join the cluster that `seed` belongs to. Refused when
    /// this node already has other members (it would split a cluster).
    pub fn rejoin(&self, seed: &str) -> Result<(), StateError> {
        let mut g = self.gossip.lock().expect("gossip lock");
        let others = g.state().members.keys().filter(|id| **id != self.me.member.id).count();
        if others > 0 {
            return Err(StateError::AlreadyInCluster { members: others + 1 });
        }
        let seed_hash = u64::from_le_bytes(md5::compute(seed.as_bytes()).0[..8].try_into().expect("8 bytes"));
        *g = Gossip::new(
            &self.me.member.id,
            ClusterState::joiner(self.me.clone()),
            vec![seed.to_string()],
            self.n,
            self.auto_commit,
            seed_hash ^ now_nanos(),
        );
        self.refresh(&g);
        drop(g);
        self.save_pending().map_err(|e| StateError::Persist { reason: e.to_string() })?;
        tracing::info!(%seed, "joining a cluster through a seed");
        Ok(())
    }

    /// Answers a peer's gossip: merges its state, and sends back ours with our clock.
    pub fn serve_gossip(&self, push: GossipPush) -> Result<GossipPull, RemoteError> {
        Ok(GossipPull { state: Box::new(self.receive(&push.state)), clock_ms: now_ms() })
    }

    /// Merges a state a peer pushed; returns ours to send back.
    pub fn receive(&self, theirs: &ClusterState) -> ClusterState {
        let mut g = self.gossip.lock().expect("gossip lock");
        if g.state().is_foreign(theirs) {
            self.warn_foreign(g.state().cluster_id, theirs);
        }
        if g.receive(theirs) {
            self.refresh(&g);
        }
        self.note_heartbeats(g.state());
        let ours = g.state().clone();
        drop(g);
        if let Err(e) = self.save_pending() {
            tracing::error!(error = %e, "could not persist the cluster state");
        }
        ours
    }

    /// Says (at most every ten seconds) that a node of another cluster gossips with this one.
    fn warn_foreign(&self, ours: u64, theirs: &ClusterState) {
        let mut last = self.foreign_warned.lock().expect("warn lock");
        if last.is_some_and(|t| t.elapsed() < WAIT_REPORT_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let members: Vec<&String> = theirs.members.keys().collect();
        tracing::error!(
            ours = %format!("{ours:016x}"),
            theirs = %format!("{:016x}", theirs.cluster_id),
            ?members,
            "gossip from a node of another cluster, ignored: a node that lost its data directory and founded a new \
             cluster where it was a member? Stop it, and start it with --seeds of its cluster"
        );
        metrics::counter!("dynamo_foreign_gossip_total").increment(1);
    }

    /// Rebuilds the view when members or the ring changed, and queues the state for
    /// [`save_pending`](Self::save_pending) (call it once the gossip lock is released).
    fn refresh(&self, g: &Gossip) {
        let s = g.state();
        let stops: BTreeMap<String, String> =
            s.write_notices.iter().filter_map(|(id, n)| Some((id.clone(), n.stopped.clone()?))).collect();
        let mut known = self.write_stops.write().expect("write stops lock");
        if *known != stops {
            for (id, why) in &stops {
                if known.get(id) != Some(why) && *id != self.me.member.id {
                    tracing::warn!(peer = %id, reason = %why, "peer takes no writes; its replicas get hints");
                }
            }
            for id in known.keys().filter(|id| !stops.contains_key(*id) && **id != self.me.member.id) {
                tracing::info!(peer = %id, "peer takes writes again");
            }
            *known = stops;
        }
        drop(known);
        let mut persisted = self.persisted.lock().expect("persist lock");
        let fingerprint = (s.members.clone(), s.ring.clone());
        if persisted.as_ref() == Some(&fingerprint) {
            return;
        }
        *self.unsaved.lock().expect("unsaved lock") = Some(s.clone());
        let old_version = self.view().ring_version;
        *self.view.write().expect("view lock") = Arc::new(build_view(s, self.n));
        self.view_generation.fetch_add(1, Ordering::Release);
        if s.ring.version != old_version {
            tracing::info!(
                version = s.ring.version,
                transition = s.ring.next.is_some(),
                members = s.members.len(),
                "ring state changed"
            );
            metrics::counter!("dynamo_ring_changes_total").increment(1);
        }
        if s.members.get(&self.me.member.id).is_some_and(|m| m.status == MemberStatus::Removed) {
            tracing::info!("this node has been removed from the cluster");
            self.removed.cancel();
        }
        *persisted = Some(fingerprint);
    }

    /// Writes the newest state [`refresh`](Self::refresh) queued, if any, to the state file (with an fsync). A save
    /// that fails is queued again unless a newer state was queued meanwhile, so the next call retries it.
    fn save_pending(&self) -> Result<(), ClusterError> {
        let _saving = self.saving.lock().expect("saving lock");
        let Some(state) = self.unsaved.lock().expect("unsaved lock").take() else { return Ok(()) };
        match save(&self.state_path, &state) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.unsaved.lock().expect("unsaved lock").get_or_insert(state);
                Err(e)
            }
        }
    }

    fn note_heartbeats(&self, s: &ClusterState) {
        let now = Instant::now();
        let mut h = self.heartbeats.lock().expect("heartbeat lock");
        for (id, &beat) in &s.heartbeats {
            let e = h.entry(id.clone()).or_insert((beat, now));
            if beat > e.0 {
                *e = (beat, now);
            }
        }
    }

    /// Records whether a member answered a direct request.
    pub fn note_reachable(&self, id: &str, reachable: bool) {
        let now = Instant::now();
        let mut l = self.liveness.lock().expect("liveness lock");
        let entry =
            l.entry(id.to_string()).or_insert(Liveness { reachable, since: now, last_heard: None, clock: None });
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
        metrics::gauge!("dynamo_peer_up", "peer" => id.to_string()).set(if entry.reachable { 1.0 } else { 0.0 });
    }

    /// Records a peer's clock reading; says so when the peer's clock drifts beyond [`SKEW_WARN_MS`] and when it
    /// comes back.
    fn note_clock(&self, id: &str, reading: ClockReading) {
        let mut l = self.liveness.lock().expect("liveness lock");
        let Some(entry) = l.get_mut(id) else { return };
        let was_off = entry.clock.is_some_and(|c| c.least_ms() > SKEW_WARN_MS);
        let off = reading.least_ms() > SKEW_WARN_MS;
        if off && !was_off {
            tracing::warn!(
                peer = id,
                offset_ms = reading.offset_ms,
                error_ms = reading.error_ms,
                "peer's clock differs from ours by more than {SKEW_WARN_MS} ms: key deadlines and last-writer-wins \
                 registers are off by as much; synchronise the clocks (NTP)"
            );
        } else if was_off && !off {
            tracing::info!(peer = id, offset_ms = reading.offset_ms, "peer's clock is back within {SKEW_WARN_MS} ms");
        }
        entry.clock = Some(reading);
        metrics::gauge!("dynamo_peer_clock_offset_ms", "peer" => id.to_string()).set(reading.offset_ms as f64);
    }

    /// The most this node's clock can differ from any reachable peer's, by the last readings (0 alone).
    pub fn clock_skew_bound_ms(&self) -> u64 {
        let l = self.liveness.lock().expect("liveness lock");
        l.values().filter(|p| p.reachable).filter_map(|p| p.clock.map(|c| c.bound_ms())).max().unwrap_or(0)
    }

    /// Whether a member is believed reachable (unknown members are tried).
    pub fn is_reachable(&self, id: &str) -> bool {
        id == self.me.member.id || self.liveness.lock().expect("liveness lock").get(id).is_none_or(|l| l.reachable)
    }

    /// Whether a member can take a write now: believed reachable, not stopped by its storage (as it gossips), and
    /// not removed (a removed member still owns its partitions until the plan that rebuilds them elsewhere flips).
    pub fn takes_writes(&self, id: &str) -> bool {
        self.is_reachable(id)
            && !self.write_stops.read().expect("write stops lock").contains_key(id)
            && self.view().members.get(id).is_none_or(|m| m.status != MemberStatus::Removed)
    }

    /// Why member `id` takes no writes, if it said so.
    pub fn write_stop(&self, id: &str) -> Option<String> {
        self.write_stops.read().expect("write stops lock").get(id).cloned()
    }

    /// Tells the cluster whether this node takes writes (`stopped`: why not).
    pub fn set_write_stop(&self, stopped: Option<String>) {
        let me = self.me.member.id.clone();
        let now = now_nanos() / 1_000_000;
        let _ = self.update(|s| Ok(s.set_write_stop(&me, stopped, now)));
    }

    /// Status of every member, this node first.
    pub fn statuses(&self) -> Vec<PeerStatus> {
        let view = self.view();
        let l = self.liveness.lock().expect("liveness lock");
        let h = self.heartbeats.lock().expect("heartbeat lock");
        let now = Instant::now();
        let mut out: Vec<PeerStatus> = view
            .members
            .values()
            .map(|rec| {
                let id = &rec.info.member.id;
                if *id == self.me.member.id {
                    return PeerStatus {
                        record: rec.clone(),
                        reachable: true,
                        since: now,
                        last_heard: Some(now),
                        clock: None,
                    };
                }
                let seen = l.get(id).copied().unwrap_or(Liveness {
                    reachable: false,
                    since: now,
                    last_heard: None,
                    clock: None,
                });
                let gossiped = h.get(id).map(|(_, t)| *t);
                PeerStatus {
                    record: rec.clone(),
                    reachable: seen.reachable,
                    since: seen.since,
                    last_heard: seen.last_heard.max(gossiped),
                    clock: seen.clock,
                }
            })
            .collect();
        out.sort_by_key(|s| s.record.info.member.id != self.me.member.id);
        out
    }

    /// One gossip round.
    pub async fn gossip_once(&self) {
        let (targets, state) = {
            let mut g = self.gossip.lock().expect("gossip lock");
            let targets = g.tick(|id| self.is_reachable(id));
            self.refresh(&g);
            (targets, Box::new(g.state().clone()))
        };
        if let Err(e) = self.save_pending() {
            tracing::error!(error = %e, "could not persist the cluster state");
        }
        for target in targets {
            let (id, addr) = match &target {
                Target::Member(id) => match self.view().members.get(id) {
                    Some(rec) => (Some(id.clone()), rec.info.peer_addr.clone()),
                    None => continue,
                },
                Target::Seed(addr) => (None, addr.clone()),
            };
            let seed = matches!(target, Target::Seed(_)).then(|| addr.clone());
            let request = GossipPush { state: state.clone() };
            let sent_ms = now_ms();
            let answer = match &id {
                Some(id) => self.pool.call_node(id, &addr, request, self.timeout).await,
                None => self.pool.call(&addr, request, self.timeout).await,
            };
            if let Some(seed) = seed {
                let said = match &answer {
                    Ok(_) => "answered".to_string(),
                    Err(e) => e.to_string(),
                };
                self.seed_status.lock().expect("seed status lock").insert(seed, said);
            }
            match answer {
                Ok(GossipPull { state: theirs, clock_ms }) => {
                    let reading = ClockReading::from_exchange(sent_ms, clock_ms, now_ms());
                    self.receive(&theirs);
                    let from = id.or_else(|| {
                        theirs.members.values().find(|m| m.info.peer_addr == addr).map(|m| m.info.member.id.clone())
                    });
                    if let Some(from) = from {
                        self.note_reachable(&from, true);
                        self.note_clock(&from, reading);
                    }
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "gossip exchange failed");
                    if let Some(id) = id {
                        self.note_reachable(&id, false);
                    }
                }
            }
        }
    }

    /// Gossips every interval until `cancel` fires; while the node cannot serve, says why every ten seconds.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut said = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => self.gossip_once().await,
            }
            if said.elapsed() >= WAIT_REPORT_EVERY
                && let Some(reason) = self.waiting()
            {
                tracing::warn!("this node knows no ring yet and cannot serve: {reason}");
                said = Instant::now();
            }
        }
    }
}

fn build_view(s: &ClusterState, n: usize) -> ClusterView {
    ClusterView {
        ring: s.current_ring(),
        next: s.next_ring(),
        members: s.members.clone(),
        ring_version: s.ring.version,
        ring_author: s.ring.author.clone(),
        done: s.ring.done.clone(),
        moved: s.moved_ranges(n),
        cluster_id: s.cluster_id,
    }
}

fn now_nanos() -> u64 {
    crate::sys::now_nanos()
}

/// Where a start's cluster state will come from, before the cluster layer opens: the state file, or a new
/// cluster this node founds (no seeds, no bootstrap), or a cluster it joins. A seed list naming only this node
/// counts as seeds here, which errs on the side of "joining".
pub fn origin_of(data_dir: &Path, has_seeds: bool, bootstrap: bool) -> Origin {
    if data_dir.join(STATE_FILE).exists() {
        Origin::Loaded
    } else if !has_seeds && !bootstrap {
        Origin::Founded
    } else {
        Origin::Joining
    }
}

/// A random cluster identity (never 0, which means "unknown").
fn random_cluster_id() -> Result<u64, ClusterError> {
    crate::sys::random_u64().map(|id| id | 1).map_err(|e| ClusterError::StateFile {
        path: String::new(),
        reason: format!("no randomness for a cluster id: {e}"),
    })
}

/// The state file as written before clusters had an identity: the same, without `cluster_id` (and the write
/// notices).
#[derive(serde::Deserialize)]
struct StateWithoutId {
    members: BTreeMap<String, MemberRecord>,
    ring: crate::membership::RingState,
    heartbeats: BTreeMap<String, u64>,
}

/// The state file as written before write notices.
#[derive(serde::Deserialize)]
struct StateWithoutNotices {
    members: BTreeMap<String, MemberRecord>,
    ring: crate::membership::RingState,
    heartbeats: BTreeMap<String, u64>,
    cluster_id: u64,
}

fn load(path: &Path) -> Result<Option<ClusterState>, ClusterError> {
    let older = |s: StateWithoutNotices| ClusterState {
        members: s.members,
        ring: s.ring,
        heartbeats: s.heartbeats,
        cluster_id: s.cluster_id,
        write_notices: BTreeMap::new(),
    };
    match std::fs::read(path) {
        Ok(bytes) => postcard::from_bytes::<ClusterState>(&bytes)
            .or_else(|e| postcard::from_bytes::<StateWithoutNotices>(&bytes).map(older).map_err(|_| e))
            .or_else(|e| {
                // A state from before cluster identities takes the first identity gossip brings.
                postcard::from_bytes::<StateWithoutId>(&bytes)
                    .map(|s| {
                        older(StateWithoutNotices {
                            members: s.members,
                            ring: s.ring,
                            heartbeats: s.heartbeats,
                            cluster_id: 0,
                        })
                    })
                    .map_err(|_| e)
            })
            .map(Some)
            .map_err(|e| ClusterError::StateFile { path: path.display().to_string(), reason: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClusterError::StateFile { path: path.display().to_string(), reason: e.to_string() }),
    }
}

/// Writes the state atomically (temp file, fsync, rename): a crash leaves the old or the new state, never half.
fn save(path: &Path, s: &ClusterState) -> Result<(), ClusterError> {
    use std::io::Write;
    let err = |e: std::io::Error| ClusterError::StateFile { path: path.display().to_string(), reason: e.to_string() };
    let tmp = path.with_extension("state.tmp");
    let bytes = postcard::to_stdvec(s).expect("cluster state serializes");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(&bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Member;

    fn info(i: usize) -> PeerInfo {
        PeerInfo {
            member: Member { id: format!("n{i}"), weight: 1, zone: None },
            client_addr: format!("127.0.0.1:{}", 7000 + i),
            peer_addr: format!("127.0.0.1:{}", 17000 + i),
        }
    }

    /// A settled cluster of `members` nodes over `q` partitions.
    fn settled(members: usize, q: usize) -> ClusterState {
        let mut s = ClusterState::founder(info(0), q);
        for i in 1..members {
            s.merge(&ClusterState::joiner(info(i)));
        }
        let next = s.plan(3).unwrap().unwrap();
        s.commit("n0", next).unwrap();
        for t in s.required_transfers(3) {
            s.mark_done(t.partition, &t.to);
        }
        assert!(s.try_flip(3));
        s
    }

    #[test]
    fn the_slot_map_covers_every_slot_with_the_replicas_healthy_first() {
        let view = build_view(&settled(5, 64), 3);
        let map = view.slot_map(3, |_| true);
        assert_eq!(map.first().unwrap().first, 0);
        assert_eq!(map.last().unwrap().last as usize, crate::ring::slot::SLOTS - 1);
        assert!(map.windows(2).all(|w| w[0].last + 1 == w[1].first), "contiguous");
        for r in &map {
            let p = r.first as usize / (crate::ring::slot::SLOTS / 64);
            let ids: Vec<String> = r.nodes.iter().map(|n| n.member.id.clone()).collect();
            assert_eq!(ids, view.replicas_of(p, 3), "slots {}-{}", r.first, r.last);
        }
        // A node believed down is never the one a client is sent to first, while another replica is healthy.
        let map = view.slot_map(3, |id| id != "n2");
        assert!(map.iter().all(|r| r.nodes[0].member.id != "n2" && r.nodes.len() == 3));
        assert!(map.iter().any(|r| r.nodes.iter().any(|n| n.member.id == "n2")), "still listed as a replica");
    }

    #[test]
    fn a_key_sent_off_its_replicas_is_redirected_to_the_first_healthy_one_the_slot_map_names() {
        let view = build_view(&settled(5, 64), 3);
        let healthy = |id: &str| id != "n2";
        let map = view.slot_map(3, healthy);
        let mut redirected = 0;
        for r in &map {
            for slot in [r.first, r.last] {
                for me in (0..5).map(|i| format!("n{i}")) {
                    let to = view.redirect_for(slot, 3, &me, healthy).map(|p| p.member.id.clone());
                    if r.nodes.iter().any(|n| n.member.id == me) {
                        assert_eq!(to, None, "a replica serves its own slots");
                    } else {
                        assert_eq!(to.as_deref(), Some(r.nodes[0].member.id.as_str()), "where CLUSTER SLOTS points");
                        redirected += 1;
                    }
                }
            }
        }
        assert!(redirected > 0);
        // No healthy replica: nothing to send the client to, so this node coordinates.
        let slot = map[0].first;
        let outsider = (0..5).map(|i| format!("n{i}")).find(|id| map[0].nodes.iter().all(|n| &n.member.id != id));
        assert_eq!(view.redirect_for(slot, 3, &outsider.unwrap(), |_| false), None);
    }

    #[test]
    fn no_redirect_while_a_range_moves() {
        let mut s = settled(5, 64);
        s.merge(&ClusterState::joiner(info(5)));
        let next = s.plan(3).unwrap().unwrap();
        s.commit("n0", next).unwrap();
        let view = build_view(&s, 3);
        assert!((0..64).any(|p| view.is_moving(p)) && (0..64).any(|p| !view.is_moving(p)));
        let per = crate::ring::slot::SLOTS / 64;
        for p in 0..64 {
            let slot = (p * per) as u16;
            let off: Vec<String> =
                (0..6).map(|i| format!("n{i}")).filter(|id| !view.replicas_of(p, 3).contains(id)).collect();
            let to = view.redirect_for(slot, 3, &off[0], |_| true);
            assert_eq!(to.is_none(), view.is_moving(p), "partition {p}");
        }
    }
}
