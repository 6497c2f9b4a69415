//! The operator's views of a node and its cluster, as typed values: `ADMIN` renders them as RESP maps, and the
//! HTTP API (`/api/...`, which the console reads) as JSON. One source for each view, so the two never disagree.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;

use super::NodeContext;

/// How long the load view waits for each member.
const LOAD_TIMEOUT: Duration = Duration::from_secs(1);

/// A member as this node sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    /// Node id.
    pub id: String,
    /// Address RESP clients use.
    pub client: String,
    /// Address of the internal protocol.
    pub peer: String,
    /// Membership status: `joining`, `valid`, `leaving` or `removed`.
    pub member: &'static str,
    /// `up` or `unreachable` (this node's own liveness view).
    pub status: &'static str,
    /// Seconds in that status.
    pub since_s: u64,
    /// Seconds since it was last heard of, directly or through gossip.
    pub last_heard_s: Option<u64>,
    /// Its clock minus ours, from the last gossip exchange (none for this node and unmeasured peers).
    pub clock_offset_ms: Option<i64>,
    /// Partitions it is the primary owner of.
    pub partitions: usize,
    /// Ring weight.
    pub weight: u32,
    /// Zone, if any.
    pub zone: Option<String>,
    /// `ok`, or `stopped: why` when its storage stopped taking writes (as it gossips).
    pub writes: String,
    /// Whether this is the node answering.
    pub this_node: bool,
}

/// Every member, this node first.
pub fn members(node: &NodeContext) -> Vec<Member> {
    let cluster = node.coordinator.cluster();
    let view = cluster.view();
    let owned = view.ring.as_ref().map(|r| r.ownership()).unwrap_or_default();
    let me = &cluster.me().member.id;
    cluster
        .statuses()
        .into_iter()
        .map(|s| {
            let info = &s.record.info;
            let id = info.member.id.clone();
            Member {
                client: info.client_addr.clone(),
                peer: info.peer_addr.clone(),
                member: s.record.status.as_str(),
                status: if s.reachable { "up" } else { "unreachable" },
                since_s: s.since.elapsed().as_secs(),
                last_heard_s: s.last_heard.map(|t| t.elapsed().as_secs()),
                clock_offset_ms: s.clock.map(|c| c.offset_ms),
                partitions: owned.get(id.as_str()).copied().unwrap_or(0),
                weight: info.member.weight,
                zone: info.member.zone.clone(),
                writes: cluster.write_stop(&id).map_or("ok".to_string(), |w| format!("stopped: {w}")),
                this_node: id == *me,
                id,
            }
        })
        .collect()
}

/// One partition of the ring.
#[derive(Clone, Debug, Serialize)]
pub struct Partition {
    /// Its number.
    pub partition: usize,
    /// Its first ring position, 32 hex digits.
    pub start: String,
    /// Its preference list as reads and writes use it now (the first N are its replicas).
    pub preference_list: Vec<String>,
    /// Its preference list in the next ring, during a transition.
    pub next: Option<Vec<String>>,
    /// `stable` (no transition), `moving` (transfers pending: the current ring's list serves) or `moved`
    /// (transfers done: the next ring's list serves).
    pub state: &'static str,
}

/// The ring: its version and every partition (empty while the node knows no ring).
#[derive(Clone, Debug, Serialize)]
pub struct Ring {
    /// Ring version.
    pub version: u64,
    /// Whether a transition to a next ring is in progress.
    pub transition: bool,
    /// Replicas per key.
    pub n: usize,
    /// The partitions, in ring order.
    pub partitions: Vec<Partition>,
}

/// The ring as this node knows it.
pub fn ring(node: &NodeContext) -> Ring {
    let view = node.coordinator.cluster().view();
    let n = node.coordinator.quorum().n;
    let list = |r: &crate::ring::Ring, p: usize| r.preference_list(p).map(|m| m.id.clone()).collect::<Vec<_>>();
    let partitions = view.ring.as_ref().map_or_else(Vec::new, |ring| {
        (0..ring.partitions())
            .map(|p| Partition {
                partition: p,
                start: format!("{:032x}", ring.partition_range(p).0),
                preference_list: list(view.ring_for(p).unwrap_or(ring), p),
                next: view.next.as_ref().map(|next| list(next, p)),
                state: match (view.next.is_some(), view.is_moving(p)) {
                    (false, _) => "stable",
                    (true, true) => "moving",
                    (true, false) => "moved",
                },
            })
            .collect()
    });
    Ring { version: view.ring_version, transition: view.next.is_some(), n, partitions }
}

/// A transfer this node is receiving now.
#[derive(Clone, Debug, Serialize)]
pub struct ActiveTransfer {
    /// The partition.
    pub partition: u32,
    /// The source replica.
    pub from: String,
    /// This node.
    pub to: String,
    /// `streaming`, `verifying` or `empty`.
    pub phase: &'static str,
    /// Keys received.
    pub keys: u64,
    /// Keys the source holds in the range, when known.
    pub total_keys: Option<u64>,
    /// Bytes received.
    pub bytes: u64,
    /// Keys per second so far.
    pub keys_per_s: u64,
    /// Seconds left at that rate, when the total is known.
    pub eta_s: Option<u64>,
}

/// One transfer the transition requires: a partition to a new replica.
#[derive(Clone, Debug, Serialize)]
pub struct Transfer {
    /// The partition.
    pub partition: u32,
    /// The node receiving it.
    pub to: String,
    /// Whether it is done (as gossiped).
    pub done: bool,
}

/// The transition in progress, if any, and its transfers.
#[derive(Clone, Debug, Serialize)]
pub struct Transition {
    /// Ring version.
    pub ring_version: u64,
    /// Whether a transition is in progress.
    pub in_progress: bool,
    /// Transfers it requires.
    pub transfers_total: usize,
    /// Transfers done.
    pub transfers_done: usize,
    /// Every transfer, done or not.
    pub transfers: Vec<Transfer>,
    /// The transfer this node is receiving, if any.
    pub active: Option<ActiveTransfer>,
    /// Transfers this node completed since it started.
    pub completed_here: usize,
}

/// The transition as gossiped, with this node's active transfer.
pub fn transition(node: &NodeContext) -> Transition {
    let cluster = node.coordinator.cluster();
    let state = cluster.state();
    let transfers: Vec<Transfer> = state
        .required_transfers(cluster.n())
        .into_iter()
        .map(|t| Transfer {
            done: state.ring.done.contains(&(t.partition, t.to.clone())),
            partition: t.partition,
            to: t.to,
        })
        .collect();
    let active = node.handoff.active().map(|p| {
        let secs = p.started.elapsed().as_secs_f64().max(0.001);
        let rate = p.keys as f64 / secs;
        ActiveTransfer {
            eta_s: p.total_keys.filter(|_| rate > 0.0).map(|t| (t.saturating_sub(p.keys) as f64 / rate).round() as u64),
            keys_per_s: rate.round() as u64,
            partition: p.partition,
            from: p.from,
            to: p.to,
            phase: p.phase.as_str(),
            keys: p.keys,
            total_keys: p.total_keys,
            bytes: p.bytes,
        }
    });
    Transition {
        ring_version: state.ring.version,
        in_progress: state.ring.next.is_some(),
        transfers_total: transfers.len(),
        transfers_done: transfers.iter().filter(|t| t.done).count(),
        transfers,
        active,
        completed_here: node.handoff.completed().len(),
    }
}

/// Hints this node holds for one target.
#[derive(Clone, Debug, Serialize)]
pub struct Hints {
    /// The node they are for.
    pub target: String,
    /// Hints held.
    pub count: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Age of the oldest, seconds.
    pub oldest_s: u64,
}

/// The hint backlog per target.
pub fn hints(node: &NodeContext) -> Vec<Hints> {
    let now = crate::coordinator::now_ms();
    node.coordinator
        .hints()
        .backlog()
        .into_iter()
        .map(|(target, b)| Hints {
            target,
            count: b.count,
            bytes: b.bytes,
            oldest_s: b.oldest_ms.map_or(0, |o| now.saturating_sub(o) / 1000),
        })
        .collect()
}

/// Anti-entropy on this node.
#[derive(Clone, Debug, Serialize)]
pub struct AntiEntropy {
    /// Exchanges completed.
    pub exchanges: u64,
    /// Keys changed by exchanges.
    pub keys_repaired: u64,
    /// Bytes exchanged.
    pub bytes: u64,
    /// Full passes over every partition this node replicates.
    pub full_passes: u64,
    /// Tombstones reaped.
    pub tombstones_reaped: u64,
    /// Seconds since each partition's last exchange with all its other replicas: (partition, seconds).
    pub last_exchange_s: Vec<(u32, u64)>,
}

/// Anti-entropy figures of this node.
pub fn antientropy(node: &NodeContext) -> AntiEntropy {
    let s = node.antientropy.stats();
    AntiEntropy {
        exchanges: s.exchanges,
        keys_repaired: s.keys_repaired,
        bytes: s.bytes,
        full_passes: s.full_passes,
        tombstones_reaped: s.tombstones_reaped,
        last_exchange_s: s.last_exchange.iter().map(|(p, t)| (*p, t.elapsed().as_secs())).collect(),
    }
}

/// Where a key lives.
#[derive(Clone, Debug, Serialize)]
pub struct KeyPlacement {
    /// Its partition (none while the node knows no ring).
    pub partition: Option<usize>,
    /// Its Redis Cluster hash slot.
    pub slot: u16,
    /// Its ring position, 32 hex digits.
    pub position: String,
    /// The nodes that hold it (the first N of its preference list).
    pub replicas: Vec<String>,
    /// The rest of its preference list: where its writes go when replicas do not answer.
    pub fallbacks: Vec<String>,
}

/// Where `key` lives.
pub fn key(node: &NodeContext, key: &[u8]) -> KeyPlacement {
    let view = node.coordinator.cluster().view();
    let position = crate::ring::slot::key_position(key);
    let mut list: Vec<String> = view.preference_list(key).into_iter().map(|p| p.member.id.clone()).collect();
    let fallbacks = list.split_off(node.coordinator.quorum().n.min(list.len()));
    KeyPlacement {
        partition: view.ring.as_ref().map(|r| r.partition_of(position)),
        slot: crate::ring::slot::key_slot(key),
        position: format!("{position:032x}"),
        replicas: list,
        fallbacks,
    }
}

/// Ask a node what it is carrying (the console's per-member load).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeLoad;

/// What a node is carrying, as counted by the node itself: the answer to [`NodeLoad`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Load {
    /// Commands run since it started (clients' and forwarded ones).
    pub commands_processed: u64,
    /// Clients connected now.
    pub connected_clients: u64,
    /// Keys with a live value it stores.
    pub live_keys: u64,
    /// Bytes its storage takes on disk.
    pub disk_bytes: u64,
    /// Hints it holds for other nodes.
    pub hints_held: u64,
}

crate::rpc_message!(NodeLoad => Load, tag 60, "node_load");

/// What this node is carrying.
pub fn load(node: &NodeContext) -> Load {
    let store = node.coordinator.store();
    Load {
        commands_processed: node.stats.commands_processed.load(Ordering::Relaxed),
        connected_clients: node.stats.connected_clients.load(Ordering::Relaxed) as u64,
        live_keys: store.live_keys(),
        disk_bytes: store.disk_space(),
        hints_held: node.coordinator.hints().backlog().values().map(|b| b.count).sum(),
    }
}

/// One member's load, as it reported it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberLoad {
    /// Node id.
    pub id: String,
    /// What it reported; none when it did not answer.
    pub load: Option<Load>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// Every member's load: this node's own, and each other member's over the peer protocol (concurrently, waiting
/// at most [`LOAD_TIMEOUT`] for each). Members this node sees as unreachable are not asked.
pub async fn cluster_load(node: &NodeContext) -> Vec<MemberLoad> {
    let cluster = node.coordinator.cluster();
    let pool = node.coordinator.pool();
    let asks = cluster.statuses().into_iter().map(|s| async move {
        let (id, addr) = (s.record.info.member.id.clone(), s.record.info.peer_addr.clone());
        if id == cluster.me().member.id {
            return MemberLoad { id, load: Some(load(node)), error: None };
        }
        if !s.reachable {
            return MemberLoad { id, load: None, error: Some("unreachable".into()) };
        }
        match pool.call_node(&id, &addr, NodeLoad, LOAD_TIMEOUT).await {
            Ok(l) => MemberLoad { id, load: Some(l), error: None },
            Err(e) => MemberLoad { id, load: None, error: Some(e.to_string()) },
        }
    });
    futures::future::join_all(asks).await
}
