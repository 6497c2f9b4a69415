//! INFO [section ...]: Redis-style sections `server`, `clients`, `memory`, `stats`, `keyspace`, and `dynamo` for this
//! store. Field names follow Redis where the meaning is the same, so Redis dashboards and exporters can read them.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::NodeContext;
use super::connection::REDIS_COMPAT_VERSION;
use crate::resp::Reply;

const SECTIONS: &[&str] = &["server", "clients", "memory", "stats", "replication", "cluster", "keyspace", "dynamo"];

/// INFO: the requested sections (default and `all`: every section).
pub fn info(node: &NodeContext, wanted: &[String]) -> Reply {
    let all = wanted.is_empty() || wanted.iter().any(|w| matches!(w.as_str(), "all" | "default" | "everything"));
    let mut out = String::new();
    for section in SECTIONS {
        if all || wanted.iter().any(|w| w == section) {
            if !out.is_empty() {
                out.push_str("\r\n");
            }
            render(node, section, &mut out);
        }
    }
    Reply::Bulk(Bytes::from(out))
}

fn kv(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = write!(out, "{key}:{value}\r\n");
}

fn render(node: &NodeContext, section: &str, out: &mut String) {
    let s = &node.stats;
    let c = &node.config;
    let meta = node.coordinator.meta();
    let store = node.coordinator.store();
    let uptime = node.started.elapsed().as_secs();
    match section {
        "server" => {
            out.push_str("# Server\r\n");
            kv(out, "redis_version", REDIS_COMPAT_VERSION);
            kv(out, "dynamo_kv_version", env!("CARGO_PKG_VERSION"));
            // Cluster mode: stock cluster clients read the slot map (CLUSTER SLOTS) and route by it.
            kv(out, "redis_mode", "cluster");
            kv(out, "os", std::env::consts::OS);
            kv(out, "arch_bits", usize::BITS);
            kv(out, "process_id", std::process::id());
            kv(out, "run_id", run_id());
            kv(out, "tcp_port", node.client_addr.port());
            kv(out, "uptime_in_seconds", uptime);
            kv(out, "uptime_in_days", uptime / 86_400);
        }
        "clients" => {
            out.push_str("# Clients\r\n");
            kv(out, "connected_clients", s.connected_clients.load(Ordering::Relaxed));
            // No command blocks (no BLPOP and the like): tools such as `redis-cli --stat` read these.
            kv(out, "blocked_clients", 0);
            kv(out, "tracking_clients", 0);
            kv(out, "maxclients", c.limits.max_clients);
            kv(out, "client_timeouts", s.client_timeouts.load(Ordering::Relaxed));
        }
        "memory" => {
            // Allocations are not tracked; the resident set is the honest figure (it includes caches and
            // memtables, as Redis's used_memory_rss does).
            let mem = process_memory();
            out.push_str("# Memory\r\n");
            kv(out, "used_memory", mem.rss);
            kv(out, "used_memory_human", human(mem.rss));
            kv(out, "used_memory_rss", mem.rss);
            kv(out, "used_memory_rss_human", human(mem.rss));
            kv(out, "used_memory_peak", mem.peak);
            kv(out, "used_memory_peak_human", human(mem.peak));
            kv(out, "maxmemory", 0);
            kv(out, "storage_cache_bytes", c.cache_bytes);
        }
        "replication" => {
            // Every node is a primary for the keys it coordinates; replication is the quorum's, not Redis's
            // primary-replica link, so there are no replicas to list here (see `INFO cluster` and CLUSTER SLOTS).
            out.push_str("# Replication\r\n");
            kv(out, "role", "master");
            kv(out, "connected_slaves", 0);
        }
        "cluster" => {
            out.push_str("# Cluster\r\n");
            out.push_str(&super::cluster::info(node));
        }
        "stats" => {
            out.push_str("# Stats\r\n");
            kv(out, "total_connections_received", s.connections_received.load(Ordering::Relaxed));
            kv(out, "total_commands_processed", s.commands_processed.load(Ordering::Relaxed));
            kv(out, "rejected_connections", s.rejected_connections.load(Ordering::Relaxed));
            kv(out, "total_error_replies", s.error_replies.load(Ordering::Relaxed));
            kv(out, "protocol_errors", s.protocol_errors.load(Ordering::Relaxed));
            kv(out, "auth_failures", s.auth_failures.load(Ordering::Relaxed));
            kv(out, "keyspace_hits", s.keyspace_hits.load(Ordering::Relaxed));
            kv(out, "keyspace_misses", s.keyspace_misses.load(Ordering::Relaxed));
            let routing = node.coordinator.routing();
            kv(out, "writes_forwarded", routing.writes_forwarded.load(Ordering::Relaxed));
            kv(out, "reads_off_replica", routing.reads_off_replica.load(Ordering::Relaxed));
            kv(out, "redirects_sent", routing.redirects.load(Ordering::Relaxed));
        }
        "keyspace" => {
            out.push_str("# Keyspace\r\n");
            let keys = store.live_keys();
            if keys > 0 {
                kv(out, "db0", format!("keys={keys},expires=0,avg_ttl=0"));
            }
        }
        "dynamo" => {
            out.push_str("# Dynamo\r\n");
            kv(out, "node_id", meta.node_id());
            kv(out, "actor", meta.actor());
            kv(out, "epoch", format!("{:016x}", meta.epoch()));
            kv(out, "start", format!("{:?}", meta.start_kind()).to_ascii_lowercase());
            kv(out, "storage_engine", store.engine_name());
            kv(out, "durability", c.durability.as_str());
            kv(out, "disk_bytes", store.disk_space());
            kv(out, "storage_tables", store.table_count());
            kv(out, "local_live_keys", store.live_keys());
            // After a start, the count of local keys (and the anti-entropy trees) is built in the background.
            kv(out, "storage_counted", u8::from(store.is_built()));
            // Writes stop below the free-space floor and after a failed write; reads go on.
            match store.write_stop() {
                None => kv(out, "storage_writes", "ok"),
                Some(stop) => {
                    kv(out, "storage_writes", "stopped");
                    kv(out, "storage_writes_stop", stop.kind());
                    kv(out, "storage_writes_reason", &stop);
                }
            }
            kv(out, "storage_free_bytes", store.free_space().map_or(-1, |f| f as i64));
            kv(out, "storage_min_free_bytes", store.min_free_disk());
            // Hot keys' stored rows, ahead of the engine (`--row-cache-mb`; budget 0: none).
            let rc = store.row_cache_stats();
            kv(out, "row_cache_budget_bytes", rc.map_or(0, |s| s.budget));
            kv(out, "row_cache_bytes", rc.map_or(0, |s| s.bytes));
            kv(out, "row_cache_rows", rc.map_or(0, |s| s.rows));
            kv(out, "row_cache_hits", rc.map_or(0, |s| s.hits));
            kv(out, "row_cache_misses", rc.map_or(0, |s| s.misses));
            kv(out, "max_vv_entries", c.versioning.max_vv_entries);
            kv(out, "sibling_soft_limit", c.versioning.sibling_soft_limit);
            kv(out, "sibling_hard_limit", c.versioning.sibling_hard_limit);
            let cluster = node.coordinator.cluster();
            let view = cluster.view();
            let q = node.coordinator.quorum();
            // Not `cluster_*`: exporters read INFO fields with that prefix as Redis Cluster numbers.
            kv(out, "dynamo_cluster_name", &c.cluster.cluster_name);
            kv(out, "peer_auth", if c.cluster.cluster_secret.is_some() { "secret" } else { "open (dev mode)" });
            kv(out, "peer_addr", &cluster.me().peer_addr);
            kv(out, "members", view.members.len());
            let statuses = cluster.statuses();
            kv(out, "members_unreachable", statuses.iter().filter(|s| !s.reachable).count());
            for s in &statuses {
                let heard = s.last_heard.map_or("-1".to_string(), |t| t.elapsed().as_secs().to_string());
                let id = &s.record.info.member.id;
                // The peer's clock minus ours, within ± the error (this node itself: 0).
                let clock = s.clock.map_or(String::new(), |c| {
                    format!(",clock_offset_ms={},clock_error_ms={}", c.offset_ms, c.error_ms)
                });
                kv(
                    out,
                    &format!("peer_{id}"),
                    format!(
                        "member={},status={},since_s={},last_heard_s={heard},writes={}{clock}",
                        s.record.status.as_str(),
                        if s.reachable { "up" } else { "unreachable" },
                        s.since.elapsed().as_secs(),
                        if cluster.write_stop(id).is_some() { "stopped" } else { "ok" }
                    ),
                );
            }
            kv(out, "clock_skew_max_ms", cluster.clock_skew_bound_ms());
            match cluster.waiting() {
                None => kv(out, "cluster_state", "ok"),
                Some(reason) => {
                    kv(out, "cluster_state", "waiting");
                    kv(out, "waiting_reason", reason);
                }
            }
            kv(out, "ring_version", view.ring_version);
            kv(out, "ring_transition", if view.next.is_some() { "in progress" } else { "none" });
            kv(out, "partitions", view.ring.as_ref().map_or(0, |r| r.partitions()));
            kv(
                out,
                "partitions_owned",
                view.ring.as_ref().and_then(|r| r.ownership().get(meta.node_id()).copied()).unwrap_or(0),
            );
            let state = cluster.state();
            let required = state.required_transfers(cluster.n());
            let done = required.iter().filter(|t| state.ring.done.contains(&(t.partition, t.to.clone()))).count();
            kv(out, "transfers_total", required.len());
            kv(out, "transfers_done", done);
            let active = node.handoff.active();
            kv(out, "handoff_active_partition", active.as_ref().map_or(-1, |p| i64::from(p.partition)));
            kv(out, "handoff_active_keys", active.as_ref().map_or(0, |p| p.keys));
            kv(out, "handoff_completed_here", node.handoff.completed().len());
            let backlog = node.coordinator.hints().backlog();
            kv(out, "hints_total", backlog.values().map(|b| b.count).sum::<u64>());
            for (target, b) in &backlog {
                let oldest = b.oldest_ms.map_or(0, |o| crate::coordinator::now_ms().saturating_sub(o) / 1000);
                kv(
                    out,
                    &format!("hints_for_{target}"),
                    format!("count={},bytes={},oldest_s={oldest}", b.count, b.bytes),
                );
            }
            let ae = node.antientropy.stats();
            kv(out, "antientropy_exchanges", ae.exchanges);
            kv(out, "antientropy_keys_repaired", ae.keys_repaired);
            kv(out, "antientropy_bytes", ae.bytes);
            kv(out, "antientropy_full_passes", ae.full_passes);
            kv(out, "tombstones_reaped", ae.tombstones_reaped);
            // A node that lost its disk (or buffered writes in a crash) vouches for no not-found in these partitions
            // until anti-entropy has exchanged each with every other replica; "waiting_for_ring" until it knows which.
            let recovery = node.coordinator.recovery().state();
            kv(out, "recovering_partitions", recovery.recovering());
            kv(
                out,
                "recovery",
                if recovery.is_pending() {
                    "waiting_for_ring"
                } else if recovery.is_clear() {
                    "none"
                } else {
                    "in_progress"
                },
            );
            kv(
                out,
                "antientropy_oldest_partition_s",
                ae.last_exchange.values().map(|t| t.elapsed().as_secs()).max().map_or(-1, |s| s as i64),
            );
            kv(out, "n", q.n);
            kv(out, "r", q.r);
            kv(out, "w", q.w);
        }
        _ => {}
    }
}

/// Resident and peak resident memory of this process, in bytes (0 where /proc is missing).
pub struct ProcessMemory {
    /// VmRSS.
    pub rss: u64,
    /// VmHWM: the largest resident set so far.
    pub peak: u64,
}

/// Reads this process's memory from /proc/self/status.
pub fn process_memory() -> ProcessMemory {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    ProcessMemory { rss: field("VmRSS:"), peak: field("VmHWM:") }
}

/// Redis's human-readable sizes (1.50M).
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "K", "M", "G"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes}B") } else { format!("{v:.2}{}", UNITS[unit]) }
}

/// This process's run id: 40 random hex characters drawn at start, as Redis's (tools key their series on it).
fn run_id() -> &'static str {
    static RUN_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN_ID.get_or_init(|| {
        let mut bytes = [0u8; 20];
        crate::sys::fill_random(&mut bytes).expect("the OS provides randomness");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}
