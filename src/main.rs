//! The `dynamo-kv` binary: command line → config → tracing → node.

use std::path::PathBuf;
use std::process::ExitCode;

mod admin;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dynamo_kv::config::{Config, Durability, ServeArgs};
use dynamo_kv::node::Node;

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers across two
/// threads, and glibc's malloc (with its consolidations) was a sixth of a write's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, as redis-server does (its `disable-thp yes`). With them on
/// (Debian's default is `always`), the allocator's free pages and the engine's memtables fault back in as whole
/// 2 MiB pages, each zeroed first: 7% of a 3-node cluster's CPU under `SET -c 50`, and a 1M-key node held 227 MiB
/// resident instead of 196 MiB (docs/PERFORMANCE.md). A failure costs only memory and CPU, so it is a warning.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::warn!(error = %e, "could not turn transparent huge pages off; the node may use more memory");
    }
}

/// A Dynamo-style, highly available key-value store that speaks RESP (use redis-cli or any Redis client).
#[derive(Parser)]
#[command(name = "dynamo-kv", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node. Every flag can also be set by its DYNAMO_KV_* environment variable or in the --config file;
    /// flags win over the environment, the environment over the file.
    Serve(Box<ServeArgs>),
    /// Run a whole local cluster in one process: node i serves clients on PORT+i-1 and peers on that + 10000,
    /// over real TCP, with N/R/W set to what the node count allows (1 node: 1/1/1; 3 or more: 3/2/2).
    Dev {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// Client port of the first node.
        #[arg(long, default_value_t = 7001)]
        port: u16,
        /// Where the nodes keep their data (one directory per node, kept between runs).
        #[arg(long, default_value = "dynamo-dev-data")]
        data_dir: PathBuf,
        /// Require clients to AUTH with this password.
        #[arg(long)]
        requirepass: Option<String>,
        /// When writes are acknowledged (fsync, os, buffered).
        #[arg(long, value_enum)]
        durability: Option<Durability>,
        /// The HTTP port of the first node: the console at http://HOST:PORT/ (the cluster as dev1 sees it), the
        /// admin API under /api/, and Prometheus metrics of the whole dev cluster at /metrics.
        #[arg(long, visible_alias = "http-listen")]
        metrics_listen: Option<String>,
        /// Nodes talk mutual TLS with this certificate (valid for 127.0.0.1, server and client use); needs the
        /// two flags below.
        #[arg(long)]
        peer_tls_cert_file: Option<PathBuf>,
        /// PEM key of --peer-tls-cert-file.
        #[arg(long)]
        peer_tls_key_file: Option<PathBuf>,
        /// PEM CA that signed --peer-tls-cert-file.
        #[arg(long)]
        peer_tls_ca_file: Option<PathBuf>,
    },
    /// Show a running cluster: members, the ring, where a key lives.
    Admin(admin::AdminArgs),
    /// Send one command to the node at --host and print the reply (for images without a shell or redis-cli).
    Call {
        /// Client address of the node.
        #[arg(long, default_value = "127.0.0.1:7001")]
        host: String,
        /// The command and its arguments, e.g. `SET k v W 1`.
        #[arg(required = true, num_args = 1.., allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Exit 0 when the node at --host answers PING (container health checks: a scratch image has no shell).
    Health {
        /// Client address of the node.
        #[arg(long, default_value = "127.0.0.1:7001")]
        host: String,
        /// Password, when the node requires AUTH.
        #[arg(long, env = "DYNAMO_KV_REQUIREPASS", hide_env_values = true)]
        password: Option<String>,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable line (with its causes), not a backtrace: these are operator errors.
            eprintln!("dynamo-kv: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,fjall=warn,lsm_tree=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    disable_transparent_huge_pages();
    let configs = match cli.command {
        Command::Serve(args) => vec![Config::resolve(&args)?],
        Command::Dev {
            nodes,
            port,
            data_dir,
            requirepass,
            durability,
            metrics_listen,
            peer_tls_cert_file,
            peer_tls_key_file,
            peer_tls_ca_file,
        } => {
            // What every dev node shares; dev_configs adds each one's id, ports, data directory and seeds.
            let shared = ServeArgs {
                requirepass,
                durability,
                peer_tls_cert_file,
                peer_tls_key_file,
                peer_tls_ca_file,
                membership_interval_ms: Some(300),
                ..Default::default()
            };
            let mut configs = dev_configs(nodes, port, &data_dir, &shared)?;
            configs[0].metrics_listen = metrics_listen.as_deref().map(dynamo_kv::config::on_loopback_if_bare_port);
            configs
        }
        Command::Admin(args) => return admin::run(args),
        Command::Health { host, password } => return admin::health(&host, password.as_deref()),
        Command::Call { host, args } => return admin::call(&host, &args),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = configs.first().and_then(|c| c.worker_threads) {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build().context("starting the async runtime")?;
    // One recorder per process: the first node's HTTP port serves the metrics of every node of a `dev` cluster.
    if configs.iter().any(|c| c.metrics_listen.is_some()) {
        dynamo_kv::http::install_recorder()?;
    }
    runtime.block_on(async move {
        let mut started = Vec::new();
        for config in configs {
            let id = config.node_id.clone();
            let node = Node::start(config).await.with_context(|| format!("starting node {id}"))?;
            // One stable line per node on stdout for scripts and tests; logs go to stderr. The HTTP address, last,
            // tells a node started on port 0 where its console and metrics are.
            let http = node.http_addr().map(|a| format!(" http on {a}")).unwrap_or_default();
            println!(
                "dynamo-kv ready: node {id} clients on {} peers on {}{http}",
                node.client_addr(),
                node.peer_addr()
            );
            started.push(node);
        }
        let shutdown = tokio_util::sync::CancellationToken::new();
        let runs: Vec<_> = started
            .into_iter()
            .map(|node| {
                let token = shutdown.clone();
                tokio::spawn(async move { node.run(token.cancelled_owned()).await })
            })
            .collect();
        // The process ends on a signal, or by itself once every node has stopped (a node that left the cluster).
        let mut all = std::pin::pin!(futures::future::join_all(runs));
        let results = tokio::select! {
            biased;
            _ = shutdown_signal() => {
                shutdown.cancel();
                all.await
            }
            results = &mut all => results,
        };
        for r in results {
            r.context("node task panicked")??;
        }
        Ok(())
    })
}

/// The configurations of a local cluster of `nodes` nodes.
fn dev_configs(nodes: u16, port: u16, data_dir: &std::path::Path, shared: &ServeArgs) -> anyhow::Result<Vec<Config>> {
    anyhow::ensure!((1..=64).contains(&nodes), "--nodes must be between 1 and 64");
    anyhow::ensure!(
        u32::from(port) + u32::from(nodes) + 10_000 <= 65_535,
        "--port {port} leaves no room for {nodes} nodes and their peer ports (port + 10000)"
    );
    let peer = |i: u16| format!("127.0.0.1:{}", port + i + 10_000);
    (0..nodes)
        .map(|i| {
            let id = format!("dev{}", i + 1);
            Config::resolve(&ServeArgs {
                data_dir: Some(data_dir.join(&id)),
                node_id: Some(id),
                listen: Some(format!("127.0.0.1:{}", port + i)),
                peer_listen: Some(peer(i)),
                // dev1 founds the cluster; the others join through it.
                seeds: Some(if i == 0 { Vec::new() } else { vec![peer(0)] }),
                ..shared.clone()
            })
            .map_err(anyhow::Error::from)
        })
        .collect()
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
