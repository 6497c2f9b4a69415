//! `dynamo-kv admin ...`: the ADMIN views of a running node, printed as tables.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::BytesMut;
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame as Frame;

/// What to show.
#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Members: id, addresses, status and since when, last heard, partitions owned, weight, zone.
    Members,
    /// The ring: every partition with its first position and preference list.
    Ring,
    /// Where a key lives: its partition, replicas (top N) and fallbacks.
    Key {
        /// The key.
        key: String,
    },
    /// The transition in progress: transfers done and waiting, the active transfer with its rate and ETA.
    Status {
        /// Refresh every second until no transition is in progress.
        #[arg(long)]
        watch: bool,
    },
    /// Make the node at --host (empty, started without seeds) join the cluster of --seed.
    Join {
        /// Peer address (HOST:PORT) of any member of the cluster to join.
        #[arg(long)]
        seed: String,
    },
    /// Decommission the node at --host: it hands every partition off, then exits.
    Leave,
    /// Drop a dead member for good; its partitions are rebuilt from the other replicas.
    Remove {
        /// Node id of the member.
        #[arg(long)]
        node: String,
    },
    /// Show the partition moves a commit would start (with --auto-commit false).
    Plan,
    /// Start the planned transition.
    Commit,
    /// Run a full anti-entropy pass on the node at --host now.
    Repair,
}

/// Connection flags of every admin command.
#[derive(clap::Args)]
pub struct AdminArgs {
    /// Client address (HOST:PORT) of any node.
    #[arg(long, default_value = "127.0.0.1:7001", global = true)]
    pub host: String,
    /// Password, when the node requires AUTH.
    #[arg(long, env = "DYNAMO_KV_REQUIREPASS", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// What to show.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Runs one admin command and prints its table.
pub fn run(args: AdminArgs) -> anyhow::Result<()> {
    let mut conn = Conn::open(&args.host)?;
    if let Some(p) = &args.password {
        conn.call(&["AUTH", p])?;
    }
    match args.command {
        AdminCommand::Members => {
            let rows = conn.call(&["ADMIN", "MEMBERS"])?;
            let header = [
                "id",
                "client",
                "peer",
                "member",
                "status",
                "since_s",
                "last_heard_s",
                "clock_offset_ms",
                "partitions",
                "weight",
                "zone",
            ];
            let mut table = vec![header.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>()];
            let mut waiting = None;
            for row in array(rows)? {
                let fields = array(row)?;
                let get = |name: &str| -> String {
                    fields.chunks(2).find(|kv| text(&kv[0]) == name).map(|kv| text(&kv[1])).unwrap_or_default()
                };
                table.push(header.iter().map(|h| get(h)).collect());
                waiting = waiting.or_else(|| Some(get("cluster_state_reason")).filter(|r| !r.is_empty()));
            }
            print_table(&table);
            if let Some(reason) = waiting {
                println!("\nthis node cannot serve yet: {reason}");
            }
        }
        AdminCommand::Ring => {
            let mut table = vec![vec!["PARTITION".into(), "START".into(), "PREFERENCE LIST".into(), "STATE".into()]];
            for row in array(conn.call(&["ADMIN", "RING"])?)? {
                let cols = array(row)?;
                let list: Vec<String> = array(cols[2].clone())?.iter().map(text).collect();
                let state = cols.get(3).map(text).unwrap_or_default();
                table.push(vec![text(&cols[0]), text(&cols[1]), list.join(" "), state]);
            }
            print_table(&table);
        }
        AdminCommand::Key { key } => {
            let fields = array(conn.call(&["ADMIN", "KEY", &key])?)?;
            let mut table = vec![vec!["FIELD".to_string(), "VALUE".to_string()]];
            for kv in fields.chunks(2) {
                let value = match &kv[1] {
                    Frame::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
                    other => text(other),
                };
                table.push(vec![text(&kv[0]), value]);
            }
            print_table(&table);
        }
        AdminCommand::Status { watch } => loop {
            let fields = array(conn.call(&["ADMIN", "STATUS"])?)?;
            let get = |name: &str| fields.chunks(2).find(|kv| text(&kv[0]) == name).map(|kv| kv[1].clone());
            let total: i64 = get("transfers_total").map(|f| text(&f).parse().unwrap_or(0)).unwrap_or(0);
            let done: i64 = get("transfers_done").map(|f| text(&f).parse().unwrap_or(0)).unwrap_or(0);
            let transition = get("transition").map(|f| text(&f)).unwrap_or_default();
            let version = get("ring_version").map(|f| text(&f)).unwrap_or_default();
            let mut out = format!("ring version {version}, transition: {transition}\n");
            if total > 0 {
                out.push_str(&format!("transfers: {done}/{total} {}\n", bar(done, total)));
            }
            if let Some(Frame::Array(active)) = get("active") {
                let mut table = vec![
                    ["partition", "from", "to", "phase", "keys", "total_keys", "bytes", "keys_per_s", "eta_s"]
                        .iter()
                        .map(|h| h.to_uppercase())
                        .collect::<Vec<_>>(),
                ];
                let row = ["partition", "from", "to", "phase", "keys", "total_keys", "bytes", "keys_per_s", "eta_s"]
                    .iter()
                    .map(|h| active.chunks(2).find(|kv| text(&kv[0]) == *h).map(|kv| text(&kv[1])).unwrap_or_default())
                    .collect();
                table.push(row);
                out.push_str("active transfer on this node:\n");
                out.push_str(&render(&table));
            }
            if let Some(Frame::Array(waiting)) = get("transfers_waiting")
                && !waiting.is_empty()
            {
                let list: Vec<String> = waiting.iter().map(|w| text(w).replace(' ', "->")).collect();
                out.push_str(&format!("waiting (partition->receiver): {}\n", list.join(" ")));
            }
            if let Some(Frame::Array(ae)) = get("antientropy") {
                let field = |name: &str| {
                    ae.chunks(2).find(|kv| text(&kv[0]) == name).map(|kv| text(&kv[1])).unwrap_or_default()
                };
                out.push_str(&format!(
                    "anti-entropy: {} exchanges, {} keys repaired, {} bytes, {} full passes, {} tombstones reaped\n",
                    field("exchanges"),
                    field("keys_repaired"),
                    field("bytes"),
                    field("full_passes"),
                    field("tombstones_reaped")
                ));
            }
            print!("{out}");
            if !watch || transition == "none" {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        },
        AdminCommand::Join { seed } => {
            conn.call(&["ADMIN", "JOIN", &seed])?;
            println!("joining through {seed}; `dynamo-kv admin status --watch` follows the transfers");
        }
        AdminCommand::Leave => {
            conn.call(&["ADMIN", "LEAVE"])?;
            println!("leaving: the node exits once every partition is handed off");
        }
        AdminCommand::Remove { node } => {
            conn.call(&["ADMIN", "REMOVE", &node])?;
            println!("removing {node}: its partitions are rebuilt from the other replicas");
        }
        AdminCommand::Plan => {
            let fields = array(conn.call(&["ADMIN", "PLAN"])?)?;
            let moves = fields.chunks(2).find(|kv| text(&kv[0]) == "moves").map(|kv| kv[1].clone());
            let moves = moves.map(array).transpose()?.unwrap_or_default();
            if moves.is_empty() {
                println!("nothing to do: no partition would move");
            } else {
                let mut table = vec![vec!["PARTITION".to_string(), "FROM".into(), "TO".into()]];
                for m in moves {
                    table.push(array(m)?.iter().map(text).collect());
                }
                print!("{}", render(&table));
                if let Some(after) = fields.chunks(2).find(|kv| text(&kv[0]) == "partitions_after") {
                    println!("partitions after: {}", text(&after[1]));
                }
                println!("`dynamo-kv admin commit` starts it");
            }
        }
        AdminCommand::Repair => {
            conn.call(&["ADMIN", "REPAIR"])?;
            println!("anti-entropy pass started; `dynamo-kv admin status` shows its figures");
        }
        AdminCommand::Commit => {
            conn.call(&["ADMIN", "COMMIT"])?;
            println!("committed; `dynamo-kv admin status --watch` follows the transfers");
        }
    }
    Ok(())
}

/// Sends one command and prints the reply, one line per element (as redis-cli does when not in a terminal).
pub fn call(host: &str, args: &[String]) -> anyhow::Result<()> {
    let mut conn = Conn::open(host)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fn lines(f: &Frame, out: &mut String) {
        match f {
            Frame::Array(items) => items.iter().for_each(|i| lines(i, out)),
            other => {
                out.push_str(&text(other));
                out.push('\n');
            }
        }
    }
    let mut out = String::new();
    lines(&conn.call(&args)?, &mut out);
    print!("{out}");
    Ok(())
}

/// Succeeds when the node at `host` answers PING with PONG and its storage takes writes.
pub fn health(host: &str, password: Option<&str>) -> anyhow::Result<()> {
    let mut conn = Conn::open(host)?;
    if let Some(p) = password {
        conn.call(&["AUTH", p])?;
    }
    match conn.call(&["PING"])? {
        Frame::SimpleString(s) if &s[..] == b"PONG" => {}
        other => bail!("unexpected answer to PING: {other:?}"),
    }
    let info = match conn.call(&["INFO", "dynamo"])? {
        Frame::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => bail!("unexpected answer to INFO: {other:?}"),
    };
    let field =
        |name: &str| info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(str::trim);
    if field("storage_writes") == Some("stopped") {
        bail!("storage takes no writes: {}", field("storage_writes_reason").unwrap_or("no reason given"));
    }
    Ok(())
}

/// A progress bar when stdout is a terminal, a percentage otherwise.
fn bar(done: i64, total: i64) -> String {
    let pct = if total > 0 { done * 100 / total } else { 100 };
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        let filled = (pct / 5) as usize;
        format!("[{}{}] {pct}%", "#".repeat(filled), ".".repeat(20 - filled))
    } else {
        format!("({pct}%)")
    }
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

impl Conn {
    fn open(host: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Conn { stream, buf: BytesMut::new() })
    }

    fn call(&mut self, args: &[&str]) -> anyhow::Result<Frame> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a.as_bytes());
            req.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&req)?;
        loop {
            if let Some((frame, _, _)) =
                decode_bytes_mut(&mut self.buf).map_err(|e| anyhow::anyhow!("bad reply: {e}"))?
            {
                if let Frame::Error(e) = &frame {
                    bail!("{}", &**e);
                }
                return Ok(frame);
            }
            let mut chunk = [0u8; 16 << 10];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the node closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

fn array(f: Frame) -> anyhow::Result<Vec<Frame>> {
    match f {
        Frame::Array(items) => Ok(items),
        other => bail!("expected an array, got {other:?}"),
    }
}

fn text(f: &Frame) -> String {
    match f {
        Frame::BulkString(b) | Frame::SimpleString(b) => String::from_utf8_lossy(b).into_owned(),
        Frame::Integer(i) => i.to_string(),
        Frame::Null => "-".into(),
        Frame::Error(e) => e.to_string(),
        Frame::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
    }
}

fn render(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.len())).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn print_table(rows: &[Vec<String>]) {
    // A closed pipe (`| head`) ends the listing quietly.
    let _ = std::io::stdout().lock().write_all(render(rows).as_bytes());
}
