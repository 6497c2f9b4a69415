//! ADMIN: the operator's views and membership changes, also offered as tables by `dynamo-kv admin`.
//!
//! Views: MEMBERS, RING, KEY key, LOCALGET key, STATUS. Changes (paper §4.8: explicit, operator-driven; Riak's
//! plan/commit): JOIN seed (this node joins the cluster of `seed`), LEAVE (this node hands its partitions off and
//! exits), REMOVE id (a dead node is gone for good: its partitions are rebuilt from the other replicas), PLAN (the moves a commit would
//! start), COMMIT. With auto-commit on (the default) the claimant commits joins and leaves by itself.

use bytes::Bytes;

use super::{NodeContext, context_token, coord_error, printable, views, wrong_arity};
use crate::membership::{MemberStatus, StateError};
use crate::resp::Reply;

/// An ADMIN subcommand with its arguments read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCall {
    /// MEMBERS.
    Members,
    /// RING.
    Ring,
    /// KEY key: where the key lives.
    Key(Bytes),
    /// LOCALGET key: this node's own copy.
    LocalGet(Bytes),
    /// STATUS.
    Status,
    /// JOIN seed.
    Join(Bytes),
    /// LEAVE.
    Leave,
    /// REMOVE id.
    Remove(String),
    /// PLAN.
    Plan,
    /// REPAIR: an anti-entropy pass now.
    Repair,
    /// COMMIT.
    Commit,
}

impl AdminCall {
    /// Reads ADMIN's subcommand and arguments (a key within the configured limit).
    pub fn parse(args: &[Bytes], limits: &crate::config::Limits) -> Result<AdminCall, Reply> {
        let sub = args[1].to_ascii_uppercase();
        Ok(match (sub.as_slice(), args.len()) {
            (b"MEMBERS", 2) => AdminCall::Members,
            (b"RING", 2) => AdminCall::Ring,
            (b"KEY", 3) => {
                super::parse::key_within(limits, &args[2])?;
                AdminCall::Key(args[2].clone())
            }
            (b"LOCALGET", 3) => {
                super::parse::key_within(limits, &args[2])?;
                AdminCall::LocalGet(args[2].clone())
            }
            (b"STATUS", 2) => AdminCall::Status,
            (b"JOIN", 3) => AdminCall::Join(args[2].clone()),
            (b"LEAVE", 2) => AdminCall::Leave,
            (b"REMOVE", 3) => AdminCall::Remove(String::from_utf8_lossy(&args[2]).into_owned()),
            (b"PLAN", 2) => AdminCall::Plan,
            (b"REPAIR", 2) => AdminCall::Repair,
            (b"COMMIT", 2) => AdminCall::Commit,
            (
                b"MEMBERS" | b"RING" | b"KEY" | b"LOCALGET" | b"STATUS" | b"JOIN" | b"LEAVE" | b"REMOVE" | b"PLAN"
                | b"COMMIT" | b"REPAIR",
                _,
            ) => return Err(wrong_arity("admin")),
            _ => {
                return Err(Reply::error(format!(
                    "ERR unknown subcommand '{}'. Try ADMIN MEMBERS, RING, KEY key, LOCALGET key, STATUS, JOIN seed, \
                     LEAVE, REMOVE id, PLAN or COMMIT.",
                    printable(&args[1], 32)
                )));
            }
        })
    }
}

/// ADMIN subcommands.
pub fn admin(node: &NodeContext, call: AdminCall) -> Reply {
    match call {
        AdminCall::Members => members(node),
        AdminCall::Ring => ring(node),
        AdminCall::Key(k) => key(node, &k),
        AdminCall::LocalGet(k) => local_get(node, &k),
        AdminCall::Status => status(node),
        AdminCall::Join(seed) => join(node, &seed),
        AdminCall::Leave => {
            let me = node.coordinator.cluster().me().member.id.clone();
            change_status(node, &me, MemberStatus::Leaving)
        }
        AdminCall::Remove(id) => {
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
        AdminCall::Plan => plan(node),
        AdminCall::Repair => {
            node.antientropy.repair_now();
            Reply::ok()
        }
        AdminCall::Commit => commit(node),
    }
}

fn pair(k: &'static str, v: Reply) -> (Reply, Reply) {
    (Reply::bulk(k), v)
}

fn int(v: impl TryInto<i64>) -> Reply {
    Reply::Integer(v.try_into().unwrap_or(i64::MAX))
}

fn bulks(items: &[String]) -> Reply {
    Reply::Array(items.iter().map(|i| Reply::bulk(i.clone())).collect())
}

/// One map per member ([`views::members`]); this node's own entry adds whether it can serve, and why not.
fn members(node: &NodeContext) -> Reply {
    let waiting = node.coordinator.cluster().waiting();
    Reply::Array(
        views::members(node)
            .into_iter()
            .map(|m| {
                let mut fields = vec![
                    pair("id", Reply::bulk(m.id)),
                    pair("client", Reply::bulk(m.client)),
                    pair("peer", Reply::bulk(m.peer)),
                    pair("member", Reply::bulk(m.member)),
                    pair("status", Reply::bulk(m.status)),
                    pair("since_s", int(m.since_s)),
                    pair("last_heard_s", m.last_heard_s.map_or(Reply::Nil, int)),
                    pair("clock_offset_ms", m.clock_offset_ms.map_or(Reply::Nil, int)),
                    pair("partitions", int(m.partitions)),
                    pair("weight", int(m.weight)),
                    pair("zone", m.zone.map_or(Reply::Nil, Reply::bulk)),
                    pair("writes", Reply::bulk(m.writes)),
                ];
                if m.this_node {
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

/// One entry per partition ([`views::ring`]): its number, first ring position (hex), preference list as the range
/// uses it now, and its state in the transition (`stable`, `moving` or `moved`).
fn ring(node: &NodeContext) -> Reply {
    Reply::Array(
        views::ring(node)
            .partitions
            .into_iter()
            .map(|p| {
                Reply::Array(vec![
                    int(p.partition),
                    Reply::bulk(p.start),
                    bulks(&p.preference_list),
                    Reply::bulk(p.state),
                ])
            })
            .collect(),
    )
}

/// Where a key lives ([`views::key`]): partition, hash slot, position, replicas (top N) and fallbacks.
fn key(node: &NodeContext, key: &Bytes) -> Reply {
    let k = views::key(node, key);
    Reply::Map(vec![
        pair("partition", k.partition.map_or(Reply::Nil, int)),
        pair("slot", int(k.slot)),
        pair("position", Reply::bulk(k.position)),
        pair("replicas", bulks(&k.replicas)),
        pair("fallbacks", bulks(&k.fallbacks)),
    ])
}

/// This node's own replica of a key, no quorum: [siblings, context] as GET shows them, plus the state's digest.
fn local_get(node: &NodeContext, key: &Bytes) -> Reply {
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

/// The ring version, the transition in progress with its transfers ([`views::transition`]), and this node's
/// active transfer.
fn status(node: &NodeContext) -> Reply {
    let t = views::transition(node);
    let waiting: Vec<Reply> = t
        .transfers
        .iter()
        .filter(|x| !x.done)
        .take(64)
        .map(|x| Reply::Array(vec![int(x.partition), Reply::bulk(x.to.clone())]))
        .collect();
    let active = t.active.map_or(Reply::Nil, |p| {
        Reply::Map(vec![
            pair("partition", int(p.partition)),
            pair("from", Reply::bulk(p.from)),
            pair("to", Reply::bulk(p.to)),
            pair("phase", Reply::bulk(p.phase)),
            pair("keys", int(p.keys)),
            pair("total_keys", p.total_keys.map_or(Reply::Nil, int)),
            pair("bytes", int(p.bytes)),
            pair("keys_per_s", int(p.keys_per_s)),
            pair("eta_s", p.eta_s.map_or(Reply::Nil, int)),
        ])
    });
    Reply::Map(vec![
        pair("ring_version", int(t.ring_version)),
        pair("transition", Reply::bulk(if t.in_progress { "in progress" } else { "none" })),
        pair("transfers_total", int(t.transfers_total)),
        pair("transfers_done", int(t.transfers_done)),
        pair("transfers_waiting", Reply::Array(waiting)),
        pair("active", active),
        pair("completed_here", int(t.completed_here)),
        pair("antientropy", antientropy(node)),
    ])
}

/// Anti-entropy figures ([`views::antientropy`]): exchanges, keys repaired, bytes, passes, and seconds since each
/// partition's last exchange.
fn antientropy(node: &NodeContext) -> Reply {
    let s = views::antientropy(node);
    Reply::Map(vec![
        pair("exchanges", int(s.exchanges)),
        pair("keys_repaired", int(s.keys_repaired)),
        pair("bytes", int(s.bytes)),
        pair("full_passes", int(s.full_passes)),
        pair("tombstones_reaped", int(s.tombstones_reaped)),
        pair(
            "last_exchange_s",
            Reply::Array(s.last_exchange_s.into_iter().map(|(p, t)| Reply::Array(vec![int(p), int(t)])).collect()),
        ),
    ])
}
