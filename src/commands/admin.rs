//! ADMIN MEMBERS | RING | KEY key | LOCALGET key: the operator's views of the cluster, also printed as tables by
//! `dynamo-kv admin`.

use bytes::Bytes;

use super::{NodeContext, check_key, context_token, coord_error, printable, wrong_arity};
use crate::resp::Reply;

/// ADMIN subcommands.
pub fn admin(node: &NodeContext, args: &[Bytes]) -> Reply {
    let sub = args[1].to_ascii_uppercase();
    match (sub.as_slice(), args.len()) {
        (b"MEMBERS", 2) => members(node),
        (b"RING", 2) => ring(node),
        (b"KEY", 3) => key(node, &args[2]),
        (b"LOCALGET", 3) => local_get(node, &args[2]),
        (b"MEMBERS" | b"RING" | b"KEY" | b"LOCALGET", _) => wrong_arity("admin"),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try ADMIN MEMBERS, RING, KEY key or LOCALGET key.",
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
    Reply::Array(
        cluster
            .statuses()
            .into_iter()
            .map(|s| {
                let info = &s.record.info;
                let id = info.member.id.clone();
                Reply::Map(vec![
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
                    pair("partitions", Reply::Integer(owned.get(id.as_str()).copied().unwrap_or(0) as i64)),
                    pair("weight", Reply::Integer(i64::from(info.member.weight))),
                    pair("zone", info.member.zone.clone().map_or(Reply::Nil, Reply::bulk)),
                ])
            })
            .collect(),
    )
}

/// One entry per partition: its number, first ring position (hex) and preference list.
fn ring(node: &NodeContext) -> Reply {
    let view = node.coordinator.cluster().view();
    let Some(ring) = &view.ring else { return Reply::Array(Vec::new()) };
    Reply::Array(
        (0..ring.partitions())
            .map(|p| {
                Reply::Array(vec![
                    Reply::Integer(p as i64),
                    Reply::bulk(format!("{:032x}", ring.partition_range(p).0)),
                    Reply::Array(ring.preference_list(p).map(|m| Reply::bulk(m.id.clone())).collect()),
                ])
            })
            .collect(),
    )
}

/// Where a key lives: partition, position, replicas (top N) and fallbacks.
fn key(node: &NodeContext, key: &Bytes) -> Reply {
    if let Err(r) = check_key(node, key) {
        return r;
    }
    let view = node.coordinator.cluster().view();
    let position = u128::from_be_bytes(md5::compute(key).0);
    let n = node.coordinator.quorum().n;
    let list: Vec<Reply> = view.preference_list(key).into_iter().map(|p| Reply::bulk(p.member.id.clone())).collect();
    let split = n.min(list.len());
    let (replicas, fallbacks) = list.split_at(split);
    let partition = view.ring.as_ref().map_or(Reply::Nil, |r| Reply::Integer(r.partition_of(position) as i64));
    Reply::Map(vec![
        pair("partition", partition),
        pair("position", Reply::bulk(format!("{position:032x}"))),
        pair("replicas", Reply::Array(replicas.to_vec())),
        pair("fallbacks", Reply::Array(fallbacks.to_vec())),
    ])
}

/// This node's own replica of a key, no quorum: [siblings, context], as GET shows them.
fn local_get(node: &NodeContext, key: &Bytes) -> Reply {
    if let Err(r) = check_key(node, key) {
        return r;
    }
    match node.coordinator.read_local(key) {
        Ok(state) => {
            let values =
                state.as_ref().map(|s| s.live_values().cloned().map(Reply::Bulk).collect()).unwrap_or_default();
            let me = node.coordinator.cluster().me().member.id.clone();
            Reply::Array(vec![
                Reply::Array(values),
                state.map_or(Reply::Nil, |s| context_token(node, key, s.context().clone(), Some(me))),
            ])
        }
        Err(e) => coord_error(e),
    }
}
