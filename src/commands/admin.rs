//! ADMIN: the operator's views and membership changes, also offered as tables by `dynamo-kv admin`.
//!
//! Views: MEMBERS, RING, KEY key, LOCALGET key, STATUS. Changes (paper §4.8: explicit, operator-driven; Riak's
//! plan/commit): JOIN seed (this node joins the cluster of `seed`), LEAVE (this node hands its partitions off and
//! exits), REMOVE id (a dead node is gone for good: its partitions are rebuilt from the other replicas), PLAN (the moves a commit would
//! start), COMMIT. With auto-commit on (the default) the claimant commits joins and leaves by itself.

use bytes::Bytes;

use super::{NodeContext, check_key, context_token, coord_error, printable, wrong_arity};
use crate::membership::{MemberStatus, StateError};
use crate::resp::Reply;

/// ADMIN subcommands.
pub fn admin(node: &NodeContext, args: &[Bytes]) -> Reply {
    let sub = args[1].to_ascii_uppercase();
    match (sub.as_slice(), args.len()) {
        (b"MEMBERS", 2) => members(node),
        (b"RING", 2) => ring(node),
        (b"KEY", 3) => key(node, &args[2]),
        (b"LOCALGET", 3) => local_get(node, &args[2]),
        (b"STATUS", 2) => status(node),
        (b"JOIN", 3) => join(node, &args[2]),
        (b"LEAVE", 2) => {
            let me = node.coordinator.cluster().me().member.id.clone();
            change_status(node, &me, MemberStatus::Leaving)
        }
        (b"REMOVE", 3) => {
            let id = String::from_utf8_lossy(&args[2]).into_owned();
            let cluster = node.coordinator.cluster();
            if id == cluster.me().member.id {
                return Reply::error("ERR use ADMIN LEAVE to take this node out of the cluster");
            }
            // Removed means gone for good: never a source of its ranges again. A node that still answers must hand
            // its data off itself, or writes only it took would go with it.
            if cluster.view().members.contains_key(&id) && cluster.is_reachable(&id) {
                return Reply::error(format!(
                    "ERR node '{id}' answers: run ADMIN LEAVE on it (it hands its data off, then exits); REMOVE is \
                     for a node that is gone. If it was just stopped, retry once it shows as unreachable"
                ));
            }
            change_status(node, &id, MemberStatus::Removed)
        }
        (b"PLAN", 2) => plan(node),
        (b"REPAIR", 2) => {
            node.antientropy.repair_now();
            Reply::ok()
        }
        (b"COMMIT", 2) => commit(node),
        (
            b"MEMBERS" | b"RING" | b"KEY" | b"LOCALGET" | b"STATUS" | b"JOIN" | b"LEAVE" | b"REMOVE" | b"PLAN"
            | b"COMMIT" | b"REPAIR",
            _,
        ) => wrong_arity("admin"),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try ADMIN MEMBERS, RING, KEY key, LOCALGET key, STATUS, JOIN seed, LEAVE, \
             REMOVE id, PLAN or COMMIT.",
            printable(&args[1], 32)
        )),
    }
}

fn pair(k: &'static str, v: Reply) -> (Reply, Reply) {
    (Reply::bulk(k), v)
}

/// One map per member: id, addresses, status and since when, last heard, partitions owned, weight, zone.
fn members(node: &NodeContext) -> Reply {
    let cluster = node.coordinator.cluster();
    let view = cluster.view();
    let owned = view.ring.as_ref().map(|r| r.ownership()).unwrap_or_default();
    let me = &cluster.me().member.id;
    let waiting = cluster.waiting();
    Reply::Array(
        cluster
            .statuses()
            .into_iter()
            .map(|s| {
                let info = &s.record.info;
                let id = info.member.id.clone();
                let mut fields = vec![
                    pair("id", Reply::bulk(id.clone())),
                    pair("client", Reply::bulk(info.client_addr.clone())),
                    pair("peer", Reply::bulk(info.peer_addr.clone())),
                    pair("member", Reply::bulk(s.record.status.as_str())),
                    pair("status", Reply::bulk(if s.reachable { "up" } else { "unreachable" })),
                    pair("since_s", Reply::Integer(s.since.elapsed().as_secs() as i64)),
                    pair(
                        "last_heard_s",
                        s.last_heard.map_or(Reply::Nil, |t| Reply::Integer(t.elapsed().as_secs() as i64)),
                    ),
                    // Its clock minus ours, from the last gossip exchange (nil for this node and unmeasured peers).
                    pair("clock_offset_ms", s.clock.map_or(Reply::Nil, |c| Reply::Integer(c.offset_ms))),
                    pair("partitions", Reply::Integer(owned.get(id.as_str()).copied().unwrap_or(0) as i64)),
                    pair("weight", Reply::Integer(i64::from(info.member.weight))),
                    pair("zone", info.member.zone.clone().map_or(Reply::Nil, Reply::bulk)),
                    // A member whose storage stopped writes (full or failing disk), as it gossips.
                    pair(
                        "writes",
                        Reply::bulk(cluster.write_stop(&id).map_or("ok".to_string(), |w| format!("stopped: {w}"))),
                    ),
                ];
                if id == *me {
                    // Only this node knows whether it can serve, and why not.
                    fields.push(pair("cluster_state", Reply::bulk(if waiting.is_some() { "waiting" } else { "ok" })));
                    if let Some(reason) = &waiting {
                        fields.push(pair("cluster_state_reason", Reply::bulk(reason.clone())));
                    }
                }
                Reply::Map(fields)
            })
            .collect(),
    )
}

/// One entry per partition: its number, first ring position (hex), preference list as the range uses it now, and
/// its state in the transition: `stable` (none in progress), `moving` (transfers pending, the current ring's list)
/// or `moved` (transfers done, the next ring's list).
fn ring(node: &NodeContext) -> Reply {
    let view = node.coordinator.cluster().view();
    let Some(ring) = &view.ring else { return Reply::Array(Vec::new()) };
    Reply::Array(
        (0..ring.partitions())
            .map(|p| {
                let list = view.ring_for(p).unwrap_or(ring).preference_list(p);
                let state = match (view.next.is_some(), view.is_moving(p)) {
                    (false, _) => "stable",
                    (true, true) => "moving",
                    (true, false) => "moved",
                };
                Reply::Array(vec![
                    Reply::Integer(p as i64),
                    Reply::bulk(format!("{:032x}", ring.partition_range(p).0)),
                    Reply::Array(list.map(|m| Reply::bulk(m.id.clone())).collect()),
                    Reply::bulk(state),
                ])
            })
            .collect(),
    )
}

/// Where a key lives: partition, hash slot, position, replicas (top N) and fallbacks.
fn key(node: &NodeContext, key: &Bytes) -> Reply {
    if let Err(r) = check_key(node, key) {
        return r;
    }
    let view = node.coordinator.cluster().view();
    let position = crate::ring::slot::key_position(key);
    let n = node.coordinator.quorum().n;
    let list: Vec<Reply> = view.preference_list(key).into_iter().map(|p| Reply::bulk(p.member.id.clone())).collect();
    let split = n.min(list.len());
    let (replicas, fallbacks) = list.split_at(split);
    let partition = view.ring.as_ref().map_or(Reply::Nil, |r| Reply::Integer(r.partition_of(position) as i64));
    Reply::Map(vec![
        pair("partition", partition),
        pair("slot", Reply::Integer(i64::from(crate::ring::slot::key_slot(key)))),
        pair("position", Reply::bulk(format!("{position:032x}"))),
        pair("replicas", Reply::Array(replicas.to_vec())),
        pair("fallbacks", Reply::Array(fallbacks.to_vec())),
    ])
}

/// This node's own replica of a key, no quorum: [siblings, context] as GET shows them, plus the state's digest.
fn local_get(node: &NodeContext, key: &Bytes) -> Reply {
    if let Err(r) = check_key(node, key) {
        return r;
    }
    match node.coordinator.read_local(key) {
        Ok(state) => {
            let values =
                state.as_ref().map(|s| s.live_values().cloned().map(Reply::Bulk).collect()).unwrap_or_default();
            let me = node.coordinator.cluster().me().member.id.clone();
            // The digest of the stored state lets a checker compare replicas exactly (tokens differ per node).
            let digest = state.as_ref().map_or(Reply::Nil, |s| {
                Reply::bulk(format!("{:032x}", u128::from_be_bytes(md5::compute(crate::storage::store::encode(s)).0)))
            });
            Reply::Array(vec![
                Reply::Array(values),
                state.map_or(Reply::Nil, |s| context_token(node, key, s.context().clone(), Some(me))),
                digest,
            ])
        }
        Err(e) => coord_error(e),
    }
}

fn state_error(e: StateError) -> Reply {
    Reply::error(format!("ERR {e}"))
}

/// This node joins the cluster `seed` (a peer address) belongs to; it must hold no data.
fn join(node: &NodeContext, seed: &Bytes) -> Reply {
    if !node.coordinator.store().is_built() {
        // The count of what this node holds is not done: it might hold data of its own cluster.
        return Reply::error("ERR this node is still counting its keys after a start; retry ADMIN JOIN in a moment");
    }
    let keys = node.coordinator.store().live_keys();
    if keys > 0 {
        return state_error(StateError::HoldsData { keys });
    }
    match node.coordinator.cluster().rejoin(&String::from_utf8_lossy(seed)) {
        Ok(()) => Reply::ok(),
        Err(e) => state_error(e),
    }
}

/// Marks a member as leaving, after checking that the plan without it is possible.
fn change_status(node: &NodeContext, id: &str, status: MemberStatus) -> Reply {
    let cluster = node.coordinator.cluster();
    let n = cluster.n();
    let mut probe = cluster.state();
    if let Err(e) = probe.set_status(id, status).and_then(|_| probe.plan(n)) {
        return state_error(e);
    }
    match cluster.update(|s| s.set_status(id, status)) {
        Ok(()) => Reply::ok(),
        Err(e) => state_error(e),
    }
}

/// The moves a commit would start, or the transition in progress.
fn plan(node: &NodeContext) -> Reply {
    let cluster = node.coordinator.cluster();
    let state = cluster.state();
    if state.ring.next.is_some() {
        return Reply::error(format!(
            "ERR a transition (ring version {}) is in progress; see ADMIN STATUS",
            state.ring.version
        ));
    }
    let next = match state.plan(cluster.n()) {
        Ok(Some(next)) => next,
        Ok(None) => return Reply::Map(vec![pair("moves", Reply::Array(Vec::new()))]),
        Err(e) => return state_error(e),
    };
    let moves: Vec<Reply> = state
        .ring
        .owners
        .iter()
        .zip(&next)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(p, (a, b))| Reply::Array(vec![Reply::Integer(p as i64), Reply::bulk(a.clone()), Reply::bulk(b.clone())]))
        .collect();
    let mut after = std::collections::BTreeMap::<&str, i64>::new();
    for o in &next {
        *after.entry(o.as_str()).or_default() += 1;
    }
    Reply::Map(vec![
        pair("moves", Reply::Array(moves)),
        pair(
            "partitions_after",
            Reply::Map(after.into_iter().map(|(k, v)| (Reply::bulk(k), Reply::Integer(v))).collect()),
        ),
    ])
}

/// Starts the planned transition.
fn commit(node: &NodeContext) -> Reply {
    let cluster = node.coordinator.cluster();
    let (n, me) = (cluster.n(), cluster.me().member.id.clone());
    match cluster.update(|s| {
        let next = s.plan(n)?.ok_or(StateError::NothingToDo)?;
        s.commit(&me, next)
    }) {
        Ok(()) => Reply::ok(),
        Err(e) => state_error(e),
    }
}

/// The ring version, the transition in progress with its transfers, and this node's active transfer.
fn status(node: &NodeContext) -> Reply {
    let cluster = node.coordinator.cluster();
    let state = cluster.state();
    let required = state.required_transfers(cluster.n());
    let done = required.iter().filter(|t| state.ring.done.contains(&(t.partition, t.to.clone()))).count();
    let waiting: Vec<Reply> = required
        .iter()
        .filter(|t| !state.ring.done.contains(&(t.partition, t.to.clone())))
        .take(64)
        .map(|t| Reply::Array(vec![Reply::Integer(i64::from(t.partition)), Reply::bulk(t.to.clone())]))
        .collect();
    let active = node.handoff.active().map_or(Reply::Nil, |p| {
        let secs = p.started.elapsed().as_secs_f64().max(0.001);
        let rate = p.keys as f64 / secs;
        let eta = p.total_keys.filter(|_| rate > 0.0).map(|t| (t.saturating_sub(p.keys) as f64 / rate).round() as i64);
        Reply::Map(vec![
            pair("partition", Reply::Integer(i64::from(p.partition))),
            pair("from", Reply::bulk(p.from)),
            pair("to", Reply::bulk(p.to)),
            pair("phase", Reply::bulk(p.phase)),
            pair("keys", Reply::Integer(p.keys as i64)),
            pair("total_keys", p.total_keys.map_or(Reply::Nil, |t| Reply::Integer(t as i64))),
            pair("bytes", Reply::Integer(p.bytes as i64)),
            pair("keys_per_s", Reply::Integer(rate.round() as i64)),
            pair("eta_s", eta.map_or(Reply::Nil, Reply::Integer)),
        ])
    });
    Reply::Map(vec![
        pair("ring_version", Reply::Integer(state.ring.version as i64)),
        pair("transition", Reply::bulk(if state.ring.next.is_some() { "in progress" } else { "none" })),
        pair("transfers_total", Reply::Integer(required.len() as i64)),
        pair("transfers_done", Reply::Integer(done as i64)),
        pair("transfers_waiting", Reply::Array(waiting)),
        pair("active", active),
        pair("completed_here", Reply::Integer(node.handoff.completed().len() as i64)),
        pair("antientropy", antientropy(node)),
    ])
}

/// Anti-entropy figures: exchanges, keys repaired, bytes, passes, and seconds since each partition's last exchange.
fn antientropy(node: &NodeContext) -> Reply {
    let s = node.antientropy.stats();
    Reply::Map(vec![
        pair("exchanges", Reply::Integer(s.exchanges as i64)),
        pair("keys_repaired", Reply::Integer(s.keys_repaired as i64)),
        pair("bytes", Reply::Integer(s.bytes as i64)),
        pair("full_passes", Reply::Integer(s.full_passes as i64)),
        pair("tombstones_reaped", Reply::Integer(s.tombstones_reaped as i64)),
        pair(
            "last_exchange_s",
            Reply::Array(
                s.last_exchange
                    .iter()
                    .map(|(p, t)| {
                        Reply::Array(vec![Reply::Integer(i64::from(*p)), Reply::Integer(t.elapsed().as_secs() as i64)])
                    })
                    .collect(),
            ),
        ),
    ])
}
