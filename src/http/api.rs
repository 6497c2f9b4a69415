//! The JSON admin API under `/api/`: the views of [`crate::commands::views`] and a summary of the node, as the
//! console reads them. Every answer is one JSON document; docs/HTTP.md gives their shapes.

use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::commands::{NodeContext, views};

/// Why an API request was not answered.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No such API.
    #[error("no API at /api/{path}")]
    NotFound {
        /// The path asked for, after `/api/`.
        path: String,
    },
    /// The request lacks something it needs.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is missing or wrong.
        reason: String,
    },
}

/// The node answering, and the cluster as it sees it.
#[derive(Debug, Serialize)]
struct NodeSummary {
    node_id: String,
    version: &'static str,
    uptime_s: u64,
    client_addr: String,
    /// `ok`, or `waiting` (with `waiting_reason`) while it cannot serve.
    cluster_state: &'static str,
    waiting_reason: Option<String>,
    cluster_name: String,
    n: usize,
    r: usize,
    w: usize,
    ring_version: u64,
    partitions: usize,
    members: usize,
    members_unreachable: usize,
    /// The most this node's clock can differ from a reachable peer's.
    clock_skew_max_ms: u64,
    local_live_keys: u64,
    connected_clients: usize,
    commands_processed: u64,
    hints_total: u64,
    /// Free disk space below which writes stop, and whether they have (with why).
    writes: String,
}

fn node_summary(node: &NodeContext) -> NodeSummary {
    let cluster = node.coordinator.cluster();
    let view = cluster.view();
    let statuses = cluster.statuses();
    let q = node.coordinator.quorum();
    let waiting = cluster.waiting();
    let me = &cluster.me().member.id;
    NodeSummary {
        node_id: me.clone(),
        version: env!("CARGO_PKG_VERSION"),
        uptime_s: node.started.elapsed().as_secs(),
        client_addr: node.client_addr.to_string(),
        cluster_state: if waiting.is_some() { "waiting" } else { "ok" },
        waiting_reason: waiting,
        cluster_name: node.config.cluster.cluster_name.clone(),
        n: q.n,
        r: q.r,
        w: q.w,
        ring_version: view.ring_version,
        partitions: view.ring.as_ref().map_or(0, |r| r.partitions()),
        members: view.members.len(),
        members_unreachable: statuses.iter().filter(|s| !s.reachable).count(),
        clock_skew_max_ms: cluster.clock_skew_bound_ms(),
        local_live_keys: node.coordinator.store().live_keys(),
        connected_clients: node.stats.connected_clients.load(Ordering::Relaxed),
        commands_processed: node.stats.commands_processed.load(Ordering::Relaxed),
        hints_total: node.coordinator.hints().backlog().values().map(|b| b.count).sum(),
        writes: cluster.write_stop(me).map_or("ok".to_string(), |w| format!("stopped: {w}")),
    }
}

/// Answers `/api/{path}?{query}` with a JSON document.
pub async fn answer(node: &NodeContext, path: &str, query: &str) -> Result<String, ApiError> {
    let json = match path {
        "load" => serde_json::to_string(&views::cluster_load(node).await),
        "node" => serde_json::to_string(&node_summary(node)),
        "members" => serde_json::to_string(&views::members(node)),
        "ring" => serde_json::to_string(&views::ring(node)),
        "transition" => serde_json::to_string(&views::transition(node)),
        "hints" => serde_json::to_string(&views::hints(node)),
        "antientropy" => serde_json::to_string(&views::antientropy(node)),
        "key" => {
            let key = form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "key")
                .map(|(_, value)| value.into_owned())
                .filter(|k| !k.is_empty())
                .ok_or_else(|| ApiError::BadRequest { reason: "give the key as ?key=...".into() })?;
            if key.len() > node.config.limits.max_key_bytes {
                return Err(ApiError::BadRequest { reason: "key longer than max_key_bytes".into() });
            }
            serde_json::to_string(&views::key(node, key.as_bytes()))
        }
        _ => return Err(ApiError::NotFound { path: path.to_string() }),
    };
    // Serializing these plain structs cannot fail.
    Ok(json.expect("API views serialize"))
}
