//! CLUSTER and the commands Redis Cluster clients send, so that stock cluster clients (redis-py's `RedisCluster`,
//! node-redis's `createCluster`, `redis-benchmark --cluster`) become partition-aware Dynamo clients (paper §6.4).
//!
//! The slot map (`CLUSTER SLOTS`, `SHARDS`, `NODES`) reports each run of slots with the first healthy replica of its
//! key range as the "master" and the other replicas as "replicas", so a client sends each key straight to a node
//! that holds it. Every node still coordinates every key, so a plain client works through any node, and a stale
//! map never costs an error. One exception: a connection that asked for the slot map is a cluster client, and some
//! (redis-rs) refresh their map only on an error or a `MOVED`. A single-key command such a connection sends to a
//! node that is not one of the key's replicas is answered `MOVED slot host:port`, naming the node `CLUSTER SLOTS`
//! now gives first; while the key's range moves the node coordinates instead. `CLUSTER NODES` can only say part
//! of it: in Redis each node is the master or
//! the replica of one set of slots, while here every node replicates ranges of several others, so it lists every
//! member as a master of the slots it coordinates first.

use bytes::Bytes;

use super::{NodeContext, Session, printable, wrong_arity};
use crate::cluster::SlotRange;
use crate::membership::PeerInfo;
use crate::resp::Reply;

/// A CLUSTER subcommand with its arguments read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterCall {
    /// SLOTS.
    Slots,
    /// SHARDS.
    Shards,
    /// NODES.
    Nodes,
    /// INFO.
    Info,
    /// MYID.
    MyId,
    /// KEYSLOT key: the key's slot.
    KeySlot(u16),
    /// COUNTKEYSINSLOT slot (`limit` none) | GETKEYSINSLOT slot count.
    KeysInSlot {
        /// The slot.
        slot: u16,
        /// How many keys to list (none: count them).
        limit: Option<usize>,
    },
}

impl ClusterCall {
    /// Reads CLUSTER's subcommand and arguments.
    pub fn parse(args: &[Bytes]) -> Result<ClusterCall, Reply> {
        let sub = args[1].to_ascii_uppercase();
        Ok(match (sub.as_slice(), args.len()) {
            (b"SLOTS", 2) => ClusterCall::Slots,
            (b"SHARDS", 2) => ClusterCall::Shards,
            (b"NODES", 2) => ClusterCall::Nodes,
            (b"INFO", 2) => ClusterCall::Info,
            (b"MYID", 2) => ClusterCall::MyId,
            (b"KEYSLOT", 3) => ClusterCall::KeySlot(crate::ring::slot::key_slot(&args[2])),
            (b"COUNTKEYSINSLOT", 3) => ClusterCall::KeysInSlot { slot: slot(&args[2])?, limit: None },
            (b"GETKEYSINSLOT", 4) => {
                let slot = slot(&args[2])?;
                match super::parse_int(&args[3]) {
                    Ok(n) if n >= 0 => ClusterCall::KeysInSlot { slot, limit: Some(n as usize) },
                    _ => return Err(Reply::error("ERR Invalid number of keys")),
                }
            }
            (
                b"SLOTS" | b"SHARDS" | b"NODES" | b"INFO" | b"MYID" | b"KEYSLOT" | b"COUNTKEYSINSLOT"
                | b"GETKEYSINSLOT",
                _,
            ) => {
                return Err(wrong_arity("cluster"));
            }
            _ => {
                return Err(Reply::error(format!(
                    "ERR unknown subcommand '{}'. Try CLUSTER SLOTS, SHARDS, NODES, INFO, MYID, KEYSLOT key, \
                     COUNTKEYSINSLOT slot or GETKEYSINSLOT slot count.",
                    printable(&args[1], 32)
                )));
            }
        })
    }
}

/// A slot number, below 16384.
fn slot(arg: &[u8]) -> Result<u16, Reply> {
    match std::str::from_utf8(arg).ok().and_then(|s| s.parse::<u16>().ok()) {
        Some(s) if usize::from(s) < crate::ring::slot::SLOTS => Ok(s),
        _ => Err(Reply::error("ERR Invalid slot")),
    }
}

/// CLUSTER subcommands. A connection that asks for the slot map is a cluster client (see the module's docs).
pub async fn cluster(node: &NodeContext, session: &mut Session, call: ClusterCall) -> Reply {
    match call {
        ClusterCall::Slots => {
            session.cluster_client = true;
            slots(node)
        }
        ClusterCall::Shards => {
            session.cluster_client = true;
            shards(node)
        }
        ClusterCall::Nodes => {
            session.cluster_client = true;
            Reply::Bulk(Bytes::from(nodes(node)))
        }
        ClusterCall::Info => Reply::Bulk(Bytes::from(info(node))),
        ClusterCall::MyId => Reply::bulk(node.coordinator.cluster().me().member.id.clone()),
        ClusterCall::KeySlot(slot) => Reply::Integer(i64::from(slot)),
        ClusterCall::KeysInSlot { slot, limit } => keys_in_slot(node, slot, limit).await,
    }
}

/// CLUSTER COUNTKEYSINSLOT slot | GETKEYSINSLOT slot count: the keys of one slot, from the whole cluster (every
/// node answers the same, unlike Redis where a node answers for its own slots), by a scan of the slot's range.
async fn keys_in_slot(node: &NodeContext, slot: u16, limit: Option<usize>) -> Reply {
    let count_only = limit.is_none();
    let limit = limit.unwrap_or(usize::MAX);
    let first = u128::from(slot) << 114;
    let end = first + ((1u128 << 114) - 1);
    let mut cursor = crate::storage::layout::scan_cursor(first);
    let (mut keys, mut counted) = (Vec::new(), 0i64);
    while limit > keys.len() {
        let page = match node
            .coordinator
            .scan_until(cursor, crate::coordinator::scan::MAX_COUNT, end, |k, _| crate::ring::slot::key_slot(k) == slot)
            .await
        {
            Ok(page) => page,
            Err(e) => return super::coord_error(e),
        };
        counted += page.keys.len() as i64;
        if !count_only {
            keys.extend(page.keys.into_iter().take(limit - keys.len()).map(Reply::Bulk));
        }
        if page.next == 0 {
            break;
        }
        cursor = page.next;
    }
    if count_only { Reply::Integer(counted) } else { Reply::Array(keys) }
}

/// `MOVED slot host:port` when `key` reached this node although it is none of the key's replicas and another
/// node, healthy and a replica, should coordinate it (see the module's documentation).
pub fn moved(node: &NodeContext, key: &[u8]) -> Option<Reply> {
    let cluster = node.coordinator.cluster();
    let view = cluster.view();
    let slot = crate::ring::slot::key_slot(key);
    let me = &cluster.me().member.id;
    let to = view.redirect_for(slot, node.coordinator.quorum().n, me, |id| cluster.takes_writes(id))?;
    let (host, port) = host_port(to);
    node.coordinator.routing().redirects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    metrics::counter!("dynamo_redirects_total").increment(1);
    Some(Reply::error(format!("MOVED {slot} {host}:{port}")))
}

/// The slot map as this node sees it: a replica is healthy when it is believed reachable and takes writes.
fn with_slot_map<T>(node: &NodeContext, f: impl FnOnce(&[SlotRange<'_>]) -> T) -> T {
    let cluster = node.coordinator.cluster();
    let view = cluster.view();
    let map = view.slot_map(node.coordinator.quorum().n, |id| cluster.takes_writes(id));
    f(&map)
}

/// Host and port of a member's client address (an address without a port gets Redis's default).
fn host_port(p: &PeerInfo) -> (String, i64) {
    match p.client_addr.rsplit_once(':') {
        Some((host, port)) => {
            (host.trim_start_matches('[').trim_end_matches(']').to_string(), port.parse().unwrap_or(6379))
        }
        None => (p.client_addr.clone(), 6379),
    }
}

fn slots(node: &NodeContext) -> Reply {
    with_slot_map(node, |map| {
        Reply::Array(
            map.iter()
                .map(|r| {
                    let mut entry = vec![Reply::Integer(i64::from(r.first)), Reply::Integer(i64::from(r.last))];
                    for p in &r.nodes {
                        let (host, port) = host_port(p);
                        entry.push(Reply::Array(vec![
                            Reply::bulk(host),
                            Reply::Integer(port),
                            Reply::bulk(p.member.id.clone()),
                        ]));
                    }
                    Reply::Array(entry)
                })
                .collect(),
        )
    })
}

fn shards(node: &NodeContext) -> Reply {
    with_slot_map(node, |map| {
        // A shard is one list of nodes; its slots are every run that has that list.
        let mut shards: Vec<(Vec<&PeerInfo>, Vec<Reply>)> = Vec::new();
        for r in map {
            let slots = [Reply::Integer(i64::from(r.first)), Reply::Integer(i64::from(r.last))];
            match shards.iter_mut().find(|(nodes, _)| *nodes == r.nodes) {
                Some((_, s)) => s.extend(slots),
                None => shards.push((r.nodes.clone(), slots.into())),
            }
        }
        let cluster = node.coordinator.cluster();
        Reply::Array(
            shards
                .into_iter()
                .map(|(nodes, slots)| {
                    let nodes = nodes
                        .iter()
                        .enumerate()
                        .map(|(i, p)| {
                            let (host, port) = host_port(p);
                            let healthy = cluster.takes_writes(&p.member.id);
                            Reply::Map(vec![
                                (Reply::bulk("id"), Reply::bulk(p.member.id.clone())),
                                (Reply::bulk("port"), Reply::Integer(port)),
                                (Reply::bulk("ip"), Reply::bulk(host.clone())),
                                (Reply::bulk("endpoint"), Reply::bulk(host)),
                                (Reply::bulk("role"), Reply::bulk(if i == 0 { "master" } else { "replica" })),
                                (Reply::bulk("replication-offset"), Reply::Integer(0)),
                                (Reply::bulk("health"), Reply::bulk(if healthy { "online" } else { "failed" })),
                            ])
                        })
                        .collect();
                    Reply::Map(vec![
                        (Reply::bulk("slots"), Reply::Array(slots)),
                        (Reply::bulk("nodes"), Reply::Array(nodes)),
                    ])
                })
                .collect(),
        )
    })
}

/// `CLUSTER NODES`: one line per member, each a master of the slots it coordinates first.
fn nodes(node: &NodeContext) -> String {
    let cluster = node.coordinator.cluster();
    let me = cluster.me().member.id.clone();
    let epoch = cluster.view().ring_version;
    with_slot_map(node, |map| {
        let mut out = String::new();
        for status in cluster.statuses() {
            let p = &status.record.info;
            let (host, port) = host_port(p);
            let cport = p.peer_addr.rsplit_once(':').map_or("0", |(_, port)| port);
            let mut flags = if p.member.id == me { "myself,master".to_string() } else { "master".to_string() };
            if !status.reachable {
                flags.push_str(",fail");
            }
            let link = if status.reachable { "connected" } else { "disconnected" };
            out.push_str(&format!("{} {host}:{port}@{cport} {flags} - 0 0 {epoch} {link}", p.member.id));
            // Its runs of slots, adjacent runs joined (they differ only in the order of the other replicas).
            let mut runs: Vec<(u16, u16)> = Vec::new();
            for r in map.iter().filter(|r| r.nodes.first().is_some_and(|f| f.member.id == p.member.id)) {
                match runs.last_mut() {
                    Some(last) if last.1 + 1 == r.first => last.1 = r.last,
                    _ => runs.push((r.first, r.last)),
                }
            }
            for (first, last) in runs {
                if first == last {
                    out.push_str(&format!(" {first}"));
                } else {
                    out.push_str(&format!(" {first}-{last}"));
                }
            }
            out.push('\n');
        }
        out
    })
}

/// `CLUSTER INFO`, and the `cluster` section of INFO.
pub fn info(node: &NodeContext) -> String {
    let cluster = node.coordinator.cluster();
    let view = cluster.view();
    let statuses = cluster.statuses();
    let ok = view.ring.is_some() && cluster.waiting().is_none();
    let (slots_ok, size) = with_slot_map(node, |map| {
        let ok: usize = map
            .iter()
            .filter(|r| r.nodes.first().is_some_and(|f| cluster.takes_writes(&f.member.id)))
            .map(|r| usize::from(r.last - r.first) + 1)
            .sum();
        let masters: std::collections::BTreeSet<&str> =
            map.iter().filter_map(|r| r.nodes.first().map(|f| f.member.id.as_str())).collect();
        (ok, masters.len())
    });
    let assigned = if view.ring.is_some() { crate::ring::slot::SLOTS } else { 0 };
    let mut out = String::new();
    for (k, v) in [
        ("cluster_enabled", "1".to_string()),
        ("cluster_state", if ok { "ok" } else { "fail" }.to_string()),
        ("cluster_slots_assigned", assigned.to_string()),
        ("cluster_slots_ok", slots_ok.to_string()),
        ("cluster_slots_pfail", "0".to_string()),
        ("cluster_slots_fail", (assigned - slots_ok.min(assigned)).to_string()),
        ("cluster_known_nodes", statuses.len().to_string()),
        ("cluster_size", size.to_string()),
        ("cluster_current_epoch", view.ring_version.to_string()),
        ("cluster_my_epoch", view.ring_version.to_string()),
    ] {
        out.push_str(&format!("{k}:{v}\r\n"));
    }
    out
}
