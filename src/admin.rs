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
            let header = ["id", "client", "peer", "status", "since_s", "last_heard_s", "partitions", "weight", "zone"];
            let mut table = vec![header.iter().map(|h| h.to_uppercase()).collect::<Vec<_>>()];
            for row in array(rows)? {
                let fields = array(row)?;
                let get = |name: &str| -> String {
                    fields.chunks(2).find(|kv| text(&kv[0]) == name).map(|kv| text(&kv[1])).unwrap_or_default()
                };
                table.push(header.iter().map(|h| get(h)).collect());
            }
            print_table(&table);
        }
        AdminCommand::Ring => {
            let mut table = vec![vec!["PARTITION".into(), "START".into(), "PREFERENCE LIST".into()]];
            for row in array(conn.call(&["ADMIN", "RING"])?)? {
                let cols = array(row)?;
                let list: Vec<String> = array(cols[2].clone())?.iter().map(text).collect();
                table.push(vec![text(&cols[0]), text(&cols[1]), list.join(" ")]);
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
    }
    Ok(())
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

fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.len())).max().unwrap_or(0)).collect();
    let mut out = std::io::stdout().lock();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        // A closed pipe (`| head`) ends the listing quietly.
        if writeln!(out, "{}", line.join("  ").trim_end()).is_err() {
            return;
        }
    }
}
