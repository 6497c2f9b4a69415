//! Commands (L5): one handler per RESP command, over the coordinator. Commands never see a peer or a socket.
//!
//! [`TABLE`] describes every command (arity, flags, docs); `COMMAND` serves it to redis-cli for hints and
//! [`execute`] uses it to check arity before a handler runs.

mod admin;
pub mod client;
mod cluster;
mod command;
mod config_get;
mod connection;
mod counter;
mod del;
mod exists;
mod expire;
mod get;
mod hashes;
pub mod info;
mod lists;
mod parse;
mod pattern;
mod scan;
mod session;
mod set;
mod sets;
mod slowlog;
pub mod table;
mod transaction;
pub mod views;
mod zsets;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::config::{Config, ValueMode};
use crate::coordinator::{CoordError, Coordinator};
use crate::resp::{Protocol, Reply};
use crate::storage::StorageError;
use crate::versioning::{Token, VersionVector, context};

use session::Call;
pub use table::{CommandSpec, DataCommand, Run, SessionCommand, TABLE};

/// Counters INFO reports.
#[derive(Default)]
pub struct Stats {
    /// Connections accepted since start.
    pub connections_received: AtomicU64,
    /// Connections refused (max_clients).
    pub rejected_connections: AtomicU64,
    /// Clients connected now.
    pub connected_clients: AtomicUsize,
    /// Commands executed since start.
    pub commands_processed: AtomicU64,
    /// Commands that answered an error.
    pub error_replies: AtomicU64,
    /// Connections closed for a protocol error.
    pub protocol_errors: AtomicU64,
    /// Failed AUTH attempts.
    pub auth_failures: AtomicU64,
    /// Clients disconnected by the idle, incomplete-request or unread-replies timeouts.
    pub client_timeouts: AtomicU64,
    /// GETs that found a live value.
    pub keyspace_hits: AtomicU64,
    /// GETs that found none.
    pub keyspace_misses: AtomicU64,
}

/// What every connection of a node shares.
pub struct NodeContext {
    /// The resolved configuration.
    pub config: Arc<Config>,
    /// Reads and writes.
    pub coordinator: Arc<Coordinator>,
    /// Partition transfers of membership transitions.
    pub handoff: Arc<crate::replication::handoff::Handoff>,
    /// Merkle-tree anti-entropy.
    pub antientropy: Arc<crate::antientropy::AntiEntropy>,
    /// Counters.
    pub stats: Stats,
    /// The connected clients (CLIENT LIST, KILL).
    pub clients: client::Clients,
    /// Commands slower than the threshold (SLOWLOG).
    pub slowlog: slowlog::SlowLog,
    /// When the node started.
    pub started: Instant,
    /// The address clients actually reach (after binding port 0, the real port).
    pub client_addr: std::net::SocketAddr,
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    /// Client id (CLIENT ID).
    pub id: u64,
    /// Negotiated protocol.
    pub protocol: Protocol,
    /// Whether AUTH succeeded (or no password is required).
    pub authenticated: bool,
    /// The user this connection runs as (ACL WHOAMI): `default` until an AUTH names another.
    pub user: String,
    /// What the user may run (the `default` user: everything); commands above it answer NOPERM.
    pub access: crate::config::Access,
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Option<Bytes>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Option<Bytes>,
    /// Set by QUIT: close after this reply.
    pub closing: bool,
    /// Commands queued since MULTI, until EXEC or DISCARD.
    pub transaction: Option<transaction::Transaction>,
    /// How GET and MGET answer (the user's or node's setting, or CLIENT VALUES).
    pub values: ValueMode,
    /// Asked for the slot map (CLUSTER SLOTS, SHARDS or NODES): a cluster client, which gets `MOVED` for a key
    /// sent off its replicas.
    pub cluster_client: bool,
}

/// What a data command needs of its session.
#[derive(Clone, Copy, Debug)]
pub struct DataSession {
    /// How GET and MGET answer.
    pub values: ValueMode,
    /// Whether a single-key command off the key's replicas is answered `MOVED`.
    pub redirects: bool,
    /// The connection's id (for the slow log).
    pub client_id: u64,
}

impl Session {
    /// What data commands need of this session.
    pub fn data(&self) -> DataSession {
        DataSession {
            values: self.values,
            redirects: self.cluster_client && self.transaction.is_none(),
            client_id: self.id,
        }
    }
}

impl Session {
    /// A new connection's session.
    pub fn new(id: u64, needs_auth: bool, values: ValueMode) -> Self {
        Self {
            id,
            protocol: Protocol::Resp2,
            authenticated: !needs_auth,
            user: "default".into(),
            access: crate::config::Access::Admin,
            name: None,
            lib_name: None,
            lib_ver: None,
            closing: false,
            transaction: None,
            values,
            cluster_client: false,
        }
    }
}

/// Runs one request (command name first) and returns its reply.
pub async fn execute(node: &NodeContext, session: &mut Session, args: Vec<Bytes>) -> Reply {
    node.stats.commands_processed.fetch_add(1, Ordering::Relaxed);
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let checked = match table::lookup(&name) {
        None => Err(("unknown", unknown_command(&args))),
        Some(spec) if !spec.arity_ok(args.len()) => Err(("arity", wrong_arity(&name))),
        Some(spec) if !session.authenticated && !spec.allowed_before_auth() => {
            Err(("noauth", Reply::error("NOAUTH Authentication required.")))
        }
        Some(spec) if spec.required_access() > session.access => Err(("noperm", no_permission(session, spec.name))),
        Some(spec) => Ok(spec),
    };
    let checked = checked.map_err(|(reason, reply)| {
        // One series per reason, never per name sent: a client's unknown command names must not grow the metrics
        // without bound (nor reach them: they are the client's bytes).
        metrics::counter!("dynamo_commands_refused_total", "reason" => reason).increment(1);
        reply
    });
    let reply = match (checked, &mut session.transaction) {
        // Inside MULTI: a refused command makes EXEC run nothing; a good one waits for EXEC.
        (Err(reply), Some(tx)) => {
            tx.aborted = true;
            reply
        }
        (Ok(spec), Some(tx)) if !spec.run.runs_at_once() => tx.queue(args, node.config.limits.max_request_bytes),
        (Err(reply), None) => reply,
        (Ok(spec), _) => {
            let (reply, took) = measured(spec.name, run(node, session, spec, &args)).await;
            // EXEC's own time is its commands', each logged on its own.
            if spec.name != "exec" {
                node.slowlog.record(node, session.id, &args, took);
            }
            reply
        }
    };
    if reply.is_error() {
        node.stats.error_replies.fetch_add(1, Ordering::Relaxed);
    }
    reply
}

/// EXEC: the queued commands in order, their replies as one array (or EXECABORT after an error while queuing).
fn exec<'a>(node: &'a NodeContext, session: &'a mut Session) -> BoxFuture<'a, Reply> {
    Box::pin(async move {
        let Some(tx) = session.transaction.take() else { return Reply::error("ERR EXEC without MULTI") };
        if tx.aborted {
            return transaction::exec_abort();
        }
        let mut replies = Vec::with_capacity(tx.queued.len());
        // A client cannot retry one command of a transaction elsewhere: the queue runs here, with no MOVED.
        let cluster_client = std::mem::take(&mut session.cluster_client);
        for args in tx.queued {
            replies.push(execute(node, session, args).await);
        }
        session.cluster_client |= cluster_client;
        Reply::Array(replies)
    })
}

/// The key of a request that may run concurrently with the requests pipelined around it: a well-formed,
/// authorised single-key data command. Such requests touch no session state, and the connection keeps them in
/// order with anything on the same key; every other request waits for the ones before it to finish.
pub fn concurrent_key<'a>(session: &Session, args: &'a [Bytes]) -> Option<(&'static CommandSpec, &'a Bytes)> {
    if !session.authenticated || session.transaction.is_some() || args.len() < 2 {
        return None;
    }
    let name = args[0].to_ascii_lowercase();
    let spec = table::lookup(std::str::from_utf8(&name).ok()?)?;
    (spec.arity_ok(args.len()) && spec.required_access() <= session.access)
        .then(|| single_key(spec, args).map(|key| (spec, key)))
        .flatten()
}

/// Runs a request [`concurrent_key`] accepted, with the spec it found and what it needs of the session.
pub async fn execute_data(
    node: &NodeContext,
    spec: &'static CommandSpec,
    args: Vec<Bytes>,
    data: DataSession,
) -> Reply {
    node.stats.commands_processed.fetch_add(1, Ordering::Relaxed);
    let (reply, took) = measured(spec.name, run_data(node, spec, &args, data)).await;
    node.slowlog.record(node, data.client_id, &args, took);
    if reply.is_error() {
        node.stats.error_replies.fetch_add(1, Ordering::Relaxed);
    }
    reply
}

/// Counts a command and its latency (and whether it answered an error) for the metrics endpoint; returns the
/// latency too, for the slow log (one clock reading each side serves both).
async fn measured(name: &'static str, handler: impl std::future::Future<Output = Reply>) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = handler.await;
    let took = started.elapsed();
    let (count, seconds) = command_metrics(name);
    count.increment(1);
    seconds.record(took.as_secs_f64());
    if reply.is_error() {
        metrics::counter!("dynamo_command_errors_total", "command" => name).increment(1);
    }
    (reply, took)
}

/// A command's count and latency series. The handles are kept per thread: looking a labelled series up in the
/// recorder on every request cost a tenth of a pipelined GET.
fn command_metrics(name: &'static str) -> (metrics::Counter, metrics::Histogram) {
    type Handles = std::collections::HashMap<&'static str, (metrics::Counter, metrics::Histogram)>;
    thread_local! {
        static HANDLES: std::cell::RefCell<Handles> = std::cell::RefCell::default();
    }
    HANDLES.with(|handles| {
        handles
            .borrow_mut()
            .entry(name)
            .or_insert_with(|| {
                (
                    metrics::counter!("dynamo_commands_total", "command" => name),
                    metrics::histogram!("dynamo_command_seconds", "command" => name),
                )
            })
            .clone()
    })
}

/// The data commands: they read and write keys and see nothing of the session but [`DataSession`]. Each is parsed
/// into a typed [`parse::Command`] (refused there when malformed) and then applied.
fn run_data<'a>(
    node: &'a NodeContext,
    spec: &'static CommandSpec,
    args: &'a [Bytes],
    data: DataSession,
) -> BoxFuture<'a, Reply> {
    if data.redirects
        && let Some(key) = single_key(spec, args)
        && let Some(moved) = cluster::moved(node, key)
    {
        return std::future::ready(moved).boxed();
    }
    let Run::Data(command) = spec.run else { unreachable!("'{}' is not a data command", spec.name) };
    match parse::Command::parse(command, spec.name, args, &node.config.limits) {
        Ok(command) => command.apply(node, data.values),
        Err(reply) => std::future::ready(reply).boxed(),
    }
}

/// The one key of a data command that names exactly one (by the table's key positions), if it does.
fn single_key<'a>(spec: &CommandSpec, args: &'a [Bytes]) -> Option<&'a Bytes> {
    if !matches!(spec.run, Run::Data(_)) || spec.first_key != 1 || args.len() < 2 {
        return None;
    }
    let last = if spec.last_key < 0 { args.len() as i64 + spec.last_key } else { spec.last_key };
    let keys = (last - spec.first_key) / spec.step.max(1) + 1;
    (keys == 1).then(|| &args[1])
}

async fn run(node: &NodeContext, session: &mut Session, spec: &'static CommandSpec, args: &[Bytes]) -> Reply {
    let command = match spec.run {
        Run::Data(_) => return run_data(node, spec, args, session.data()).await,
        Run::Session(command) => command,
    };
    let call = match session::Call::parse(command, args, &node.config.limits, session) {
        Ok(call) => call,
        Err(reply) => return reply,
    };
    match call {
        Call::DbSize => Reply::Integer(node.coordinator.store().live_keys() as i64),
        Call::Scan(scan) => scan::scan(node, scan).await,
        Call::Keys { pattern } => scan::keys(node, &pattern).await,
        Call::RandomKey => scan::randomkey(node).await,
        Call::Ping { message: None } => Reply::simple("PONG"),
        Call::Ping { message: Some(message) } | Call::Echo { message } => Reply::Bulk(message),
        Call::Quit => {
            session.closing = true;
            Reply::ok()
        }
        Call::Select { index } => connection::select(index),
        Call::Auth { user, pass } => connection::auth(node, session, user, &pass),
        Call::AclWhoAmI => Reply::bulk(session.user.clone()),
        Call::Hello(hello) => connection::hello(node, session, hello),
        Call::Client(call) => client::client(node, session, call),
        Call::ConfigGet { patterns } => config_get::config_get(node, &patterns),
        Call::ConfigResetStat => Reply::ok(),
        Call::Info { sections } => info::info(node, &sections),
        Call::Admin(call) => admin::admin(node, call),
        Call::Cluster(call) => cluster::cluster(node, session, call).await,
        Call::Command(call) => command::command(call),
        // Cluster clients send READONLY, READWRITE and ASKING; every node serves every key, so there is nothing to
        // switch. Nothing is ever watched, so UNWATCH (sent when a client resets a connection) has nothing to undo.
        Call::Accepted => Reply::ok(),
        Call::Time => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            Reply::Array(vec![Reply::bulk(now.as_secs().to_string()), Reply::bulk(now.subsec_micros().to_string())])
        }
        // No latency monitor runs (the Prometheus histograms are the latency record), so there are no events:
        // LATEST and HISTORY answer empty, RESET resets none.
        Call::LatencyEvents => Reply::Array(Vec::new()),
        Call::LatencyReset => Reply::Integer(0),
        Call::SlowLog(call) => slowlog::slowlog(node, call),
        Call::MemoryUsage { key } => get::memory_usage(node, &key).await,
        Call::Multi if session.transaction.is_some() => Reply::error("ERR MULTI calls can not be nested"),
        Call::Multi => {
            session.transaction = Some(transaction::Transaction::default());
            Reply::ok()
        }
        Call::Exec => exec(node, session).await,
        Call::Discard => match session.transaction.take() {
            Some(_) => Reply::ok(),
            None => Reply::error("ERR DISCARD without MULTI"),
        },
        Call::Watch if session.transaction.is_some() => Reply::error("ERR WATCH inside MULTI is not allowed"),
        Call::Watch => transaction::watch(),
    }
}

/// Redis's words for a command the user's access does not include.
fn no_permission(session: &Session, name: &str) -> Reply {
    Reply::error(format!("NOPERM User {} has no permissions to run the '{name}' command", session.user))
}

/// Redis's words for an unknown command.
fn unknown_command(args: &[Bytes]) -> Reply {
    let mut msg = format!("ERR unknown command '{}', with args beginning with: ", printable(&args[0], 128));
    for a in args.iter().skip(1).take(16) {
        msg.push_str(&format!("'{}' ", printable(a, 128)));
    }
    Reply::error(msg)
}

/// Redis's words for a wrong argument count.
pub fn wrong_arity(name: &str) -> Reply {
    Reply::error(format!("ERR wrong number of arguments for '{name}' command"))
}

/// Redis's syntax error.
pub fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

/// A client-supplied string made safe and short for an error message.
pub fn printable(b: &[u8], max: usize) -> String {
    let s: String =
        String::from_utf8_lossy(&b[..b.len().min(max)]).chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if b.len() > max { format!("{s}...") } else { s }
}

/// Parses a non-negative integer argument the way Redis words the failure.
pub fn parse_int(b: &[u8]) -> Result<i64, Reply> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| Reply::error("ERR value is not an integer or out of range"))
}

/// Decodes a client context token presented for `key`, or the `ERR invalid context` reply.
pub fn parse_context(node: &NodeContext, key: &[u8], token: &[u8]) -> Result<Token, Reply> {
    context::decode(node.coordinator.context_key(), &crate::ring::slot::key_digest(key), token)
        .map_err(|e| Reply::error(format!("ERR invalid context: {e}")))
}

/// The token for what a read of `key` returned.
pub fn context_token(node: &NodeContext, key: &[u8], clock: VersionVector, first_replier: Option<String>) -> Reply {
    let token = Token { clock, coordinator: first_replier };
    Reply::bulk(context::encode(node.coordinator.context_key(), &crate::ring::slot::key_digest(key), &token))
}

/// Checks a key against the configured limit (data commands' keys are checked as they are parsed).
pub fn check_key(node: &NodeContext, key: &[u8]) -> Result<(), Reply> {
    parse::key_within(&node.config.limits, key)
}

/// Parses a per-request quorum option's value (`R 1`, `W 3`).
pub fn parse_quorum(value: &[u8]) -> Result<usize, Reply> {
    match parse_int(value) {
        Ok(n) if n >= 1 => Ok(n as usize),
        _ => Err(Reply::error("ERR R and W must be positive integers")),
    }
}

/// A quorum read of rows of a collection key of kind `kind` (`crdt::rows`): its key row and the rows of
/// `elements` (`None`: every row), or the reply to give instead (WRONGTYPE, a failed read).
pub async fn read_collection(
    node: &NodeContext,
    key: &Bytes,
    kind: crate::versioning::RowKind,
    elements: Option<&[Bytes]>,
) -> Result<crate::crdt::rows::Rows, Reply> {
    let select = match elements {
        Some(e) => crate::crdt::rows::RowSelect::elements(kind, e),
        None => crate::crdt::rows::RowSelect::All,
    };
    let rows = node.coordinator.read_rows(key, select, None).await.map_err(coord_error)?;
    of_kind(rows, kind)
}

/// A sample of the live members of the set at `key` ([`crate::crdt::rows::RowSelect::Sample`]): `count` picked at
/// random from across the set, each confirmed by a quorum read (`Coordinator::read_live`), or the whole set when
/// some of the picks turned out removed and too few are left. Errors as [`read_collection`].
pub async fn read_set_sample(
    node: &NodeContext,
    key: &Bytes,
    count: u32,
    seed: u64,
) -> Result<crate::crdt::rows::Rows, Reply> {
    let select = crate::crdt::rows::RowSelect::Sample { seed, count };
    let rows = node.coordinator.read_live(key, select).await.map_err(coord_error)?;
    of_kind(rows, crate::versioning::RowKind::Set)
}

/// `rows` when the key holds a collection of `kind` (or nothing), else WRONGTYPE.
fn of_kind(rows: crate::crdt::rows::Rows, kind: crate::versioning::RowKind) -> Result<crate::crdt::rows::Rows, Reply> {
    check_row_kind(rows.key_row(), kind).map(|()| rows)
}

/// WRONGTYPE unless the key row (`None`: absent) is of a collection of `kind` or of nothing live.
pub fn check_row_kind(
    key_row: Option<&crate::versioning::Siblings>,
    kind: crate::versioning::RowKind,
) -> Result<(), Reply> {
    let mut key_row = key_row.cloned().unwrap_or_default();
    key_row.drop_expired(crate::coordinator::now_ms());
    match crate::crdt::kind(&key_row) {
        Some(k) if k != crate::crdt::Kind::from(kind) => Err(Reply::error(crate::crdt::OpError::WrongType.to_string())),
        _ => Ok(()),
    }
}

/// SCARD, HLEN, ZCARD and LLEN: how many live elements the collection of `kind` at `key` holds, from R replicas'
/// tallies when they agree (`Coordinator::read_count`), or WRONGTYPE.
async fn card(node: &NodeContext, key: Bytes, kind: crate::versioning::RowKind) -> Reply {
    match node.coordinator.read_count(&key, kind).await {
        Ok((count, key_row)) => match check_row_kind(key_row.as_ref(), kind) {
            Ok(()) => Reply::Integer(i64::try_from(count).unwrap_or(i64::MAX)),
            Err(reply) => reply,
        },
        Err(e) => coord_error(e),
    }
}

/// The reply to a typed write that answers a count (or the write's failure).
pub fn integer_reply(outcome: Result<crate::crdt::OpReply, CoordError>) -> Reply {
    match outcome {
        Ok(crate::crdt::OpReply::Integer(n)) => Reply::Integer(n),
        Ok(other) => unreachable!("expected a count, got {other:?}"),
        Err(e) => coord_error(e),
    }
}

/// The reply for a coordinator failure.
pub fn coord_error(e: CoordError) -> Reply {
    if let CoordError::Storage(inner) = &e
        && !matches!(inner, StorageError::Closed)
    {
        tracing::error!(error = %inner, "storage failure serving a request");
    }
    Reply::error(e.client_text())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_command_once_and_single_keys_follow_its_positions() {
        for (i, spec) in TABLE.iter().enumerate() {
            assert!(TABLE[..i].iter().all(|other| other.name != spec.name), "{} is in the table twice", spec.name);
            assert!(std::ptr::eq(table::lookup(spec.name).unwrap(), spec));
            if matches!(spec.run, Run::Data(_)) {
                assert!(spec.first_key >= 1, "the data command {} names no key", spec.name);
            }
        }
        let args = |words: &[&str]| words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect::<Vec<_>>();
        let spec = |name| table::lookup(name).unwrap();
        assert!(single_key(spec("get"), &args(&["get", "k"])).is_some());
        assert!(single_key(spec("del"), &args(&["del", "k"])).is_some());
        assert!(single_key(spec("del"), &args(&["del", "k", "j"])).is_none());
        assert!(single_key(spec("mset"), &args(&["mset", "k", "v"])).is_some());
        assert!(single_key(spec("mset"), &args(&["mset", "k", "v", "j", "w"])).is_none());
        assert!(single_key(spec("hset"), &args(&["hset", "k", "f", "v", "g", "w"])).is_some());
        assert!(single_key(spec("ping"), &args(&["ping", "x"])).is_none());
    }
}
