//! The `dynamo-kv` binary: command line → config → tracing → node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use dynamo_kv::config::{Config, ServeArgs};
use dynamo_kv::node::Node;

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
    /// Run a local development node in one command: 127.0.0.1:PORT, data under --data-dir.
    Dev {
        /// Client port.
        #[arg(long, default_value_t = 7001)]
        port: u16,
        /// Where the node keeps its data (kept between runs).
        #[arg(long, default_value = "dynamo-dev-data")]
        data_dir: PathBuf,
        /// Require clients to AUTH with this password.
        #[arg(long)]
        requirepass: Option<String>,
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
    let config = match cli.command {
        Command::Serve(args) => Config::resolve(&args)?,
        Command::Dev {
            port,
            data_dir,
            requirepass,
        } => Config::resolve(&ServeArgs {
            node_id: Some("dev1".into()),
            listen: Some(format!("127.0.0.1:{port}")),
            data_dir: Some(data_dir.join("dev1")),
            requirepass,
            ..Default::default()
        })?,
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let node = Node::start(config).await?;
        // One stable line on stdout for scripts and tests; logs go to stderr.
        println!("dynamo-kv ready: clients on {}", node.client_addr());
        node.run(shutdown_signal()).await?;
        Ok(())
    })
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
