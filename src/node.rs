//! Node (top): opens storage, wires the layers, serves clients, and shuts down cleanly.
//!
//! Shutdown order matters: stop accepting, let connections finish the request in hand, flush and fsync storage,
//! and only then mark the data directory clean (which lets the next start keep this node's actor).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sys::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::antientropy::{AntiEntropy, LocalReplica, tree::HashTree};
use crate::cluster::{Cluster, ClusterError, ClusterParams, Origin};
use crate::commands::{NodeContext, Stats};
use crate::config::Config;
use crate::coordinator::{Coordinator, CoordinatorParts};
use crate::replication::handoff::Handoff;
use crate::replication::hinted::{self, HintDelivery};
use crate::ring::Member;
use crate::rpc::{self, Answer, ClusterKey, Handler, Identity, Message, PeerInfo, PeerPool, answer};
use crate::storage::fjall_engine::FjallEngine;
use crate::storage::hints::HintStore;
use crate::storage::meta::{NodeMeta, StartKind};
use crate::storage::recovery::Recovery;
use crate::storage::store::StoreOptions;
use crate::storage::write_gate::WriteStop;
use crate::storage::{Engine, KvStore, StorageError};
use crate::tls::{Current, PeerTls};
use crate::versioning::ContextKey;

/// How long a leaving node tries to hand off what it still holds before it exits.
const EXIT_HANDOFF_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connections get to finish their request at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage failed to open, flush or sync.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The cluster state could not be loaded or saved.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The node cannot tell other nodes where to reach it.
    #[error("{listen} binds every interface: set --{flag} to the address other nodes reach this one at")]
    Advertise {
        /// The bound address.
        listen: String,
        /// The flag to set.
        flag: &'static str,
    },
    /// The client address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A TLS certificate, key or CA could not be loaded.
    #[error("{listener} TLS: {source}")]
    Tls {
        /// Which listener: "client" or "peer".
        listener: &'static str,
        /// What failed.
        source: crate::tls::TlsError,
    },
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Reloads the TLS certificates, keys and CA from their files on every SIGHUP, so certificates rotate without a
/// restart: connections that start afterwards use the new ones, established ones keep theirs. A file that does not
/// load is logged and the configuration in use stays.
async fn reload_tls_on_hangup(
    config: Arc<Config>,
    client: Option<Arc<Current<TlsAcceptor>>>,
    peer: Option<Arc<Current<PeerTls>>>,
    cancel: CancellationToken,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: TLS files are read again only on restart");
        return;
    };
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            received = hangup.recv() => if received.is_none() { return },
        }
        if let (Some(current), Some(files)) = (&client, &config.tls) {
            reload("client", current, crate::tls::client_port_acceptor(&files.cert_file, &files.key_file));
        }
        if let (Some(current), Some(files)) = (&peer, &config.cluster.peer_tls) {
            reload("peer", current, PeerTls::from_pem_files(&files.cert_file, &files.key_file, &files.ca_file));
        }
    }
}

fn reload<T: Clone>(listener: &'static str, current: &Current<T>, loaded: Result<T, crate::tls::TlsError>) {
    match loaded {
        Ok(config) => {
            current.set(config);
            metrics::counter!("dynamo_tls_reloads_total", "listener" => listener, "result" => "ok").increment(1);
            tracing::info!(listener, "TLS files reloaded: new connections use them");
        }
        Err(e) => {
            metrics::counter!("dynamo_tls_reloads_total", "listener" => listener, "result" => "failed").increment(1);
            tracing::warn!(listener, error = %e, "TLS reload failed; the configuration in use stays");
        }
    }
}

/// Where a node keeps its keys and hints.
pub enum Disk {
    /// fjall, in the data directory (every real node).
    Fjall,
    /// Engines the caller holds: a simulation's disks, which outlive a crashed node and are handed to the node that
    /// restarts on them. The data directory still holds the node's small state files.
    Given {
        /// The keys.
        data: Arc<dyn Engine>,
        /// The hints held for other nodes.
        hints: Arc<dyn Engine>,
    },
}

/// A node that has opened its storage and bound its port, ready to [`run`](Node::run).
pub struct Node {
    config: Arc<Config>,
    listener: TcpListener,
    tls_listener: Option<(TcpListener, Arc<Current<TlsAcceptor>>)>,
    peer_listener: TcpListener,
    /// The HTTP port (console, API, metrics), when configured.
    http_listener: Option<tokio::net::TcpListener>,
    identity: Identity,
    context: Arc<NodeContext>,
    cluster: Arc<Cluster>,
    handoff: Arc<Handoff>,
    hints: Arc<HintStore>,
    pool: Arc<PeerPool>,
    store: Arc<KvStore>,
    meta: Arc<NodeMeta>,
    tasks: TaskTracker,
}

impl Node {
    /// Opens the data directory and binds the client port.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        Self::start_on(config, Disk::Fjall).await
    }

    /// As [`start`](Node::start), keeping keys and hints on `disk`.
    pub async fn start_on(config: Config, disk: Disk) -> Result<Node, NodeError> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| NodeError::DataDir { path: config.data_dir.display().to_string(), source })?;
        let (engine, hints): (Arc<dyn Engine>, Arc<dyn Engine>) = match disk {
            Disk::Fjall => {
                // fjall locks its directory, so a second process on the same data directory stops here.
                let fjall = FjallEngine::open(&config.data_dir.join("db"), config.cache_bytes)?;
                // Hints live in their own keyspace of the same database: apart from this node's data, same journal.
                let hints = Arc::new(fjall.keyspace("hints")?);
                (Arc::new(fjall), hints)
            }
            Disk::Given { data, hints } => (data, hints),
        };
        let meta = Arc::new(NodeMeta::open(&config.data_dir, &config.node_id)?);
        if meta.format() < crate::storage::meta::META_FORMAT {
            tracing::warn!(format = meta.format(), "upgrading the data directory to the current layout");
            let started = std::time::Instant::now();
            let rewritten = crate::storage::upgrade::upgrade(engine.as_ref(), hints.as_ref())?;
            // A transfer's cursor is a storage key of the old layout: transfers start over.
            crate::replication::handoff::forget_cursors(&config.data_dir)?;
            engine.sync()?;
            meta.upgraded()?;
            tracing::warn!(keys = rewritten, took = ?started.elapsed(), "data directory upgraded");
        }
        let hints = Arc::new(HintStore::open(hints)?);
        match meta.start_kind() {
            StartKind::Fresh => {
                tracing::info!(actor = %meta.actor(), "new data directory: fresh actor")
            }
            StartKind::Clean => tracing::info!(actor = %meta.actor(), "clean restart: actor kept"),
            StartKind::Unclean => tracing::warn!(
                actor = %meta.actor(),
                "previous run did not shut down cleanly: new epoch and actor, so no dot can be reissued"
            ),
        }
        // A node that may have lost writes it acknowledged must not vouch that a key is absent until anti-entropy
        // has refilled its ranges: a new data directory (unless the node founds a cluster: then every range is
        // empty everywhere), or an unclean stop in a mode that may lose acknowledged writes (buffered: the write
        // buffer; os: a power loss). Decided and persisted before anything else can fail, so that a start that
        // fails after `node.meta` exists does not turn into an "unclean restart" of a node that never forgot.
        let c = &config.cluster;
        let forgot = match meta.start_kind() {
            StartKind::Fresh => {
                crate::cluster::origin_of(&config.data_dir, !c.seeds.is_empty(), c.bootstrap_expect.is_some())
                    != Origin::Founded
            }
            StartKind::Unclean => config.durability != crate::config::Durability::Fsync,
            StartKind::Clean => false,
        };
        let recovery = Arc::new(Recovery::open(&config.data_dir, forgot)?);
        if !recovery.state().is_clear() {
            tracing::warn!(
                "this node may lack writes it acknowledged (new data directory or a crash): its not-found answers \
                 do not count toward read quorums until anti-entropy has exchanged each of its partitions with \
                 every other replica"
            );
        }
        let options = StoreOptions {
            durability: config.durability,
            buffer_flush_interval: config.buffer_flush_interval,
            min_free_disk: config.min_free_disk_bytes,
            row_cache_bytes: config.row_cache_bytes,
        };
        // The anti-entropy tree is built by the store's count of what it holds, in the background so that start-up
        // time does not grow with the data, and kept current by every write. Anti-entropy waits for it.
        let tree = Arc::new(HashTree::new());
        let store = KvStore::open_unbuilt(engine, options, Some(tree.clone()));
        store.spawn_build();
        let bind_error = |addr: &str| {
            let addr = addr.to_string();
            move |source| NodeError::Bind { addr, source }
        };
        let listener = TcpListener::bind(&config.listen).await.map_err(bind_error(&config.listen))?;
        let client_addr = listener.local_addr().map_err(bind_error(&config.listen))?;
        let c = &config.cluster;
        let tls_listener = match &config.tls {
            Some(tls) => {
                let acceptor = crate::tls::client_port_acceptor(&tls.cert_file, &tls.key_file)
                    .map_err(|source| NodeError::Tls { listener: "client", source })?;
                Some((
                    TcpListener::bind(&tls.listen).await.map_err(bind_error(&tls.listen))?,
                    Current::shared(acceptor),
                ))
            }
            None => None,
        };
        let peer_listener = TcpListener::bind(&c.peer_listen).await.map_err(bind_error(&c.peer_listen))?;
        let peer_addr = peer_listener.local_addr().map_err(bind_error(&c.peer_listen))?;
        let http_listener = match &config.metrics_listen {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(bind_error(addr))?),
            None => None,
        };

        let key = ClusterKey::derive_with_replicas(&c.cluster_name, c.cluster_secret.as_deref(), c.quorum.n as u8);
        match (key.authenticated, c.peer_tls.is_some()) {
            (true, _) => {}
            (false, false) => tracing::warn!(
                "no cluster secret: open dev mode, any process that can reach {peer_addr} can join and write; set \
                 --cluster-secret in production"
            ),
            (false, true) => tracing::warn!(
                "no cluster secret: only nodes with a certificate from the peer CA can join, but clients can forge \
                 context tokens; set --cluster-secret in production"
            ),
        }
        // Every node must verify every other node's tokens, so the token key derives from the cluster key. Without
        // a secret (open dev mode) anyone can derive it, as anyone can join: production sets --cluster-secret.
        let context_key = ContextKey::from_bytes(key.subkey("context"));
        let tls = match &c.peer_tls {
            Some(files) => Some(Current::shared(
                PeerTls::from_pem_files(&files.cert_file, &files.key_file, &files.ca_file)
                    .map_err(|source| NodeError::Tls { listener: "peer", source })?,
            )),
            None => None,
        };
        let identity = Identity { node_id: config.node_id.clone(), key, tls };
        let pool = Arc::new(PeerPool::new(identity.clone()));
        let advertised_peer = advertise(c.peer_advertise.as_deref(), peer_addr, "peer")?;
        let me = PeerInfo {
            member: Member { id: config.node_id.clone(), weight: c.weight, zone: c.zone.clone() },
            client_addr: c.client_advertise.clone().unwrap_or_else(|| client_addr.to_string()),
            peer_addr: advertised_peer,
        };
        let cluster = Cluster::open(
            ClusterParams {
                me,
                seeds: c.seeds.clone(),
                bootstrap_expect: c.bootstrap_expect,
                partitions: c.partitions,
                n: c.quorum.n,
                auto_commit: c.auto_commit,
                interval: c.membership_interval,
                timeout: c.request_timeout,
                data_dir: config.data_dir.clone(),
            },
            pool.clone(),
        )?;
        let handoff = Handoff::new(
            cluster.clone(),
            store.clone(),
            recovery.clone(),
            pool.clone(),
            c.request_timeout,
            config.data_dir.clone(),
        );
        let antientropy = AntiEntropy::new(
            cluster.clone(),
            LocalReplica { store: store.clone(), tree, recovery: recovery.clone() },
            pool.clone(),
            c.request_timeout,
            c.anti_entropy_interval,
            c.tombstone_grace,
        );
        // The node's background work, joined at shutdown before the final flush: its duties (gossip, handoff, hints,
        // anti-entropy), its accept loops, and what requests leave behind (read repair, late replication).
        let tasks = TaskTracker::new();
        let coordinator = Coordinator::new(CoordinatorParts {
            store: store.clone(),
            meta: meta.clone(),
            options: config.versioning.clone(),
            cluster: cluster.clone(),
            pool: pool.clone(),
            quorum: c.quorum,
            timeout: c.request_timeout,
            context_key,
            hints: hints.clone(),
            recovery,
            tasks: tasks.clone(),
        });
        let context = Arc::new(NodeContext {
            config: config.clone(),
            coordinator,
            handoff: handoff.clone(),
            antientropy: antientropy.clone(),
            stats: Stats::default(),
            clients: Default::default(),
            slowlog: Default::default(),
            started: Instant::now(),
            client_addr,
        });
        Ok(Node {
            config,
            listener,
            tls_listener,
            peer_listener,
            http_listener,
            identity,
            context,
            cluster,
            handoff,
            hints,
            pool,
            store,
            meta,
            tasks,
        })
    }

    /// What commands run against: the coordinator, settings and counters. Serving a client stream outside the
    /// listeners (the fuzz target) takes it before [`run`](Node::run).
    pub fn context(&self) -> Arc<NodeContext> {
        self.context.clone()
    }

    /// The address clients connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.context.client_addr
    }

    /// The address of the HTTP console, API and metrics, when they are served.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address peers connect to.
    pub fn peer_addr(&self) -> &str {
        &self.cluster.me().peer_addr
    }

    /// Serves until `shutdown` completes, then drains connections, flushes storage and marks the directory clean.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        // The node's background work (see `start_on`): stopped by `cancel` and joined at shutdown, so none still
        // writes when the storage is flushed.
        let tasks = self.tasks;
        let storage_cancel = CancellationToken::new();
        let background = tokio::spawn(self.store.clone().run_background(storage_cancel.clone()));
        tracing::info!(
            node_id = %self.config.node_id,
            clients = %self.context.client_addr,
            peers = %self.cluster.me().peer_addr,
            durability = self.config.durability.as_str(),
            auth = self.config.auth_required(),
            "serving"
        );
        let client_tls = self.tls_listener.as_ref().map(|(_, current)| current.clone());
        if client_tls.is_some() || self.identity.tls.is_some() {
            let peer_tls = self.identity.tls.clone();
            tasks.spawn(reload_tls_on_hangup(self.config.clone(), client_tls, peer_tls, cancel.clone()));
        }
        let service = Arc::new(PeerService { node: self.context.clone(), handoff: self.handoff.clone() });
        tasks.spawn(rpc::transport::serve(self.peer_listener, self.identity, service, cancel.clone(), tracker.clone()));
        tasks.spawn(self.cluster.clone().run(cancel.clone()));
        tasks.spawn(self.handoff.clone().run(cancel.clone()));
        let local = crate::replication::replica::LocalReplica::new(
            self.store.clone(),
            self.hints.clone(),
            self.context.coordinator.recovery().clone(),
            self.cluster.clone(),
            self.cluster.n(),
        );
        let delivery = Arc::new(HintDelivery::new(
            self.cluster.clone(),
            self.hints.clone(),
            local,
            self.pool.clone(),
            self.config.cluster.request_timeout,
            hinted::DEFAULT_RATE,
            self.config.cluster.tombstone_grace,
        ));
        tasks.spawn(delivery.clone().run(cancel.clone()));
        tasks.spawn(self.context.antientropy.clone().run(cancel.clone()));
        tasks.spawn(report_gauges(self.context.clone(), self.cluster.clone(), cancel.clone()));
        tasks.spawn(announce_write_stops(self.context.clone(), self.cluster.clone(), cancel.clone()));
        let server = tokio::spawn(crate::server::serve(
            self.listener,
            None,
            self.context.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        if let Some(listener) = self.http_listener {
            tasks.spawn(crate::http::serve(listener, self.context.clone(), cancel.clone(), tracker.clone()));
        }
        if let Some((listener, acceptor)) = self.tls_listener {
            tracing::info!(addr = ?listener.local_addr().ok(), "serving TLS clients");
            tasks.spawn(crate::server::serve(
                listener,
                Some(acceptor),
                self.context.clone(),
                cancel.clone(),
                tracker.clone(),
            ));
        }
        let removed = self.cluster.removed();
        tokio::select! {
            biased;
            _ = shutdown => {}
            _ = removed.cancelled() => {
                // Before exiting: whatever this node still holds goes to the current replicas, and its hints to
                // their targets, so nothing acknowledged leaves with it.
                let swept = self.handoff.sweep_until_empty(EXIT_HANDOFF_TIMEOUT).await;
                delivery.deliver_all().await;
                let hints_left: u64 = self.hints.backlog().values().map(|b| b.count).sum();
                if !swept || hints_left > 0 {
                    tracing::warn!(hints_left, "left the cluster with data not handed off; anti-entropy covers it");
                }
                tracing::info!("left the cluster: every partition was handed off");
            }
        }
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        cancel.cancel();
        let _ = server.await;
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
            tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
        }
        tasks.close();
        if tokio::time::timeout(BACKGROUND_STOP_TIMEOUT, tasks.wait()).await.is_err() {
            tracing::warn!("some background tasks did not stop within {BACKGROUND_STOP_TIMEOUT:?}");
        }
        // Close the write gate before the final flush: a connection that outlived the drain can no longer take a
        // dot or buffer a write after it, so "clean" below is true.
        let store = self.store.clone();
        crate::sys::blocking(move || store.close_writes()).await;
        storage_cancel.cancel();
        background.await.expect("storage background task panicked")?;
        // Memtables to tables, so the next start has no journal to replay (bounded: a disk that cannot flush must
        // not keep the node from stopping; the journal then replays at start instead).
        let store = self.store.clone();
        let flush = crate::sys::blocking(move || store.flush_memtables());
        match tokio::time::timeout(MEMTABLE_FLUSH_TIMEOUT, flush).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not flush memtables; the next start replays them"),
            Err(_) => {
                tracing::warn!("memtable flush took over {MEMTABLE_FLUSH_TIMEOUT:?}; the next start replays them")
            }
        }
        self.meta.mark_clean()?;
        tracing::info!("storage flushed and synced; clean shutdown");
        Ok(())
    }
}

/// The address other nodes should use: the configured one, else the bound one unless it is a wildcard (0.0.0.0
/// or ::), which would make peers dial themselves.
fn advertise(configured: Option<&str>, bound: SocketAddr, kind: &'static str) -> Result<String, NodeError> {
    match configured {
        Some(a) => Ok(a.to_string()),
        None if bound.ip().is_unspecified() => Err(NodeError::Advertise {
            listen: bound.to_string(),
            flag: if kind == "peer" { "peer-advertise" } else { "client-advertise" },
        }),
        None => Ok(bound.to_string()),
    }
}

/// Answers the internal protocol: each message goes to the handler of the subsystem that owns it.
struct PeerService {
    node: Arc<NodeContext>,
    handoff: Arc<Handoff>,
}

impl Handler for PeerService {
    async fn handle(&self, from: &str, tag: u8, body: bytes::Bytes) -> Answer {
        use crate::antientropy::{MergeStates, RangeStates, Reap, TreeLeaves};
        use crate::cluster::{GossipPush, Ping, Pong};
        use crate::commands::views::{self, NodeLoad};
        use crate::coordinator::{Coordinate, scan::ScanKeys};
        use crate::replication::handoff::{DigestRange, HandoffPull};
        use crate::replication::replica::{KeepHint, Read, ReadRows, ReadTally, Replicate};

        let coordinator = &self.node.coordinator;
        let cluster = coordinator.cluster();
        let replica = coordinator.replica();
        let trees = self.node.antientropy.local();
        cluster.note_reachable(from, true);
        // One arm per message; a tag used twice would make an arm unreachable, which the build refuses.
        match tag {
            Ping::TAG => answer(&body, |_: Ping| async { Ok(Pong) }).await,
            GossipPush::TAG => answer(&body, |m| async { cluster.serve_gossip(m) }).await,
            Read::TAG => answer(&body, |m| async { replica.serve_read(m) }).await,
            ReadRows::TAG => answer(&body, |m| async { replica.serve_read_rows(m) }).await,
            ReadTally::TAG => answer(&body, |m| async { replica.serve_read_tally(m) }).await,
            Replicate::TAG => answer(&body, |m| replica.serve_replicate(m)).await,
            KeepHint::TAG => answer(&body, |m| async { replica.serve_keep_hint(m) }).await,
            Coordinate::TAG => answer(&body, |m| coordinator.serve_coordinate(m)).await,
            ScanKeys::TAG => answer(&body, |m| async { coordinator.serve_scan_keys(m) }).await,
            HandoffPull::TAG => answer(&body, |m| async { self.handoff.serve_pull(m) }).await,
            DigestRange::TAG => answer(&body, |m| async { self.handoff.serve_digest(m) }).await,
            TreeLeaves::TAG => answer(&body, |m| trees.serve_tree_leaves(m)).await,
            RangeStates::TAG => answer(&body, |m| async { trees.serve_range_states(m) }).await,
            MergeStates::TAG => answer(&body, |m| trees.serve_merge_states(m)).await,
            Reap::TAG => answer(&body, |m| async { trees.serve_reap(m) }).await,
            NodeLoad::TAG => answer(&body, |_: NodeLoad| async { Ok(views::load(&self.node)) }).await,
            tag => Answer::Malformed(rpc::message::Malformed { reason: format!("unknown message tag {tag}") }),
        }
    }
}

/// How often the state gauges of the metrics endpoint are refreshed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// Sets the gauges that describe state rather than events (storage size, keys, hint backlog, transfers, memory),
/// labelled by node so that a dev cluster's nodes, which share one endpoint, stay apart.
/// Longest a stop waits for the background tasks (a transfer or an exchange in progress ends first).
const BACKGROUND_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a clean stop waits for the storage engine to write its memtables to tables.
const MEMTABLE_FLUSH_TIMEOUT: Duration = Duration::from_secs(20);

/// Tells the cluster, through gossip, whenever this node's storage stops or resumes taking writes, so that
/// coordinators send its copies to fallbacks as hints instead. After a failed write the node also stops vouching
/// for its ranges until anti-entropy has exchanged each with the other replicas: whatever the failure cost (a write
/// the disk reported lost) is then repaired before a read counts this node's "not found".
async fn announce_write_stops(node: Arc<NodeContext>, cluster: Arc<Cluster>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut reopens_seen = 0;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let store = node.coordinator.store();
        let now = store.write_stop();
        let reopens = store.reopens();
        if reopens > reopens_seen {
            let held = cluster.view().held_ranges(&cluster.me().member.id, cluster.n()).unwrap_or_default();
            if let Err(e) = node.coordinator.recovery().taint(&held) {
                tracing::error!(error = %e, "could not mark this node's ranges as recovering after a storage failure");
                continue;
            }
            tracing::info!(partitions = held.len(), "ranges recover by anti-entropy after the storage failure");
            reopens_seen = reopens;
        }
        // Compared with what the cluster holds, not with the last tick: a word of a previous run (a restart while
        // stopped) is corrected too.
        let word = now.as_ref().map(WriteStop::summary);
        if cluster.write_stop(&cluster.me().member.id) != word {
            cluster.set_write_stop(word);
        }
    }
}

async fn report_gauges(node: Arc<NodeContext>, cluster: Arc<Cluster>, cancel: CancellationToken) {
    let id = node.config.node_id.clone();
    let mut tick = tokio::time::interval(GAUGE_INTERVAL);
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let store = node.coordinator.store();
        let backlog = node.coordinator.hints().backlog();
        let state = cluster.state();
        let required = state.required_transfers(cluster.n());
        let done = required.iter().filter(|t| state.ring.done.contains(&(t.partition, t.to.clone()))).count();
        let mem = crate::commands::info::process_memory();
        let label = [("node", id.clone())];
        metrics::gauge!("dynamo_storage_disk_bytes", &label).set(store.disk_space() as f64);
        metrics::gauge!("dynamo_storage_tables", &label).set(store.table_count() as f64);
        metrics::gauge!("dynamo_local_live_keys", &label).set(store.live_keys() as f64);
        metrics::gauge!("dynamo_hints_held", &label).set(backlog.values().map(|b| b.count).sum::<u64>() as f64);
        metrics::gauge!("dynamo_hints_held_bytes", &label).set(backlog.values().map(|b| b.bytes).sum::<u64>() as f64);
        metrics::gauge!("dynamo_transfers_required", &label).set(required.len() as f64);
        metrics::gauge!("dynamo_transfers_done", &label).set(done as f64);
        metrics::gauge!("dynamo_ring_version", &label).set(state.ring.version as f64);
        metrics::gauge!("dynamo_antientropy_full_passes", &label).set(node.antientropy.stats().full_passes as f64);
        metrics::gauge!("dynamo_process_resident_bytes", &label).set(mem.rss as f64);
    }
}
