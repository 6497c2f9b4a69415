//! Node (top): opens storage, wires the layers, serves clients, and shuts down cleanly.
//!
//! Shutdown order matters: stop accepting, let connections finish the request in hand, flush and fsync storage,
//! and only then mark the data directory clean (which lets the next start keep this node's actor).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::commands::{NodeContext, Stats};
use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::storage::fjall_engine::FjallEngine;
use crate::storage::meta::{NodeMeta, StartKind};
use crate::storage::store::StoreOptions;
use crate::storage::{KvStore, StorageError};

/// How long connections get to finish their request at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a node could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage failed to open, flush or sync.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The client address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
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

/// A node that has opened its storage and bound its port, ready to [`run`](Node::run).
pub struct Node {
    config: Arc<Config>,
    listener: TcpListener,
    context: Arc<NodeContext>,
    store: Arc<KvStore>,
    meta: Arc<NodeMeta>,
}

impl Node {
    /// Opens the data directory and binds the client port.
    pub async fn start(config: Config) -> Result<Node, NodeError> {
        let config = Arc::new(config);
        std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        // fjall locks its directory, so a second process on the same data directory stops here.
        let engine = Arc::new(FjallEngine::open(
            &config.data_dir.join("db"),
            config.cache_bytes,
        )?);
        let meta = Arc::new(NodeMeta::open(&config.data_dir, &config.node_id)?);
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
        let options = StoreOptions {
            durability: config.durability,
            buffer_flush_interval: config.buffer_flush_interval,
        };
        let store = KvStore::open(engine, options)?;
        let coordinator = Arc::new(Coordinator::new(
            store.clone(),
            meta.clone(),
            config.versioning.clone(),
        ));
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| NodeError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        let client_addr = listener.local_addr().map_err(|source| NodeError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let context = Arc::new(NodeContext {
            config: config.clone(),
            coordinator,
            stats: Stats::default(),
            started: Instant::now(),
            client_addr,
        });
        Ok(Node {
            config,
            listener,
            context,
            store,
            meta,
        })
    }

    /// The address clients connect to.
    pub fn client_addr(&self) -> SocketAddr {
        self.context.client_addr
    }

    /// Serves until `shutdown` completes, then drains connections, flushes storage and marks the directory clean.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let storage_cancel = CancellationToken::new();
        let background = tokio::spawn(self.store.clone().run_background(storage_cancel.clone()));
        tracing::info!(
            node_id = %self.config.node_id,
            clients = %self.context.client_addr,
            durability = self.config.durability.as_str(),
            auth = self.config.requirepass.is_some(),
            "serving"
        );
        let server = tokio::spawn(crate::server::serve(
            self.listener,
            self.context.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        cancel.cancel();
        let _ = server.await;
        tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not finish within {DRAIN_TIMEOUT:?}");
        }
        // Close the write gate before the final flush: a connection that outlived the drain can no longer take a
        // dot or buffer a write after it, so "clean" below is true.
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.close_writes())
            .await
            .expect("closing writes panicked");
        storage_cancel.cancel();
        background
            .await
            .expect("storage background task panicked")?;
        self.meta.mark_clean()?;
        tracing::info!("storage flushed and synced; clean shutdown");
        Ok(())
    }
}
