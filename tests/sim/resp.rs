//! A small RESP2 client over the simulated network: what the workload and the checker speak to the nodes.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

/// A RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bulk strings of an array reply (nil and non-bulk entries skipped).
    pub fn strings(&self) -> Vec<String> {
        match self {
            Reply::Array(Some(items)) => items
                .iter()
                .filter_map(|i| match i {
                    Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The text of a bulk or status reply.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Reply::Status(s) => Some(s.clone()),
            _ => None,
        }
    }
}

/// Why a request got no reply.
#[derive(Debug)]
pub enum Failed {
    /// The connection failed or closed (the request may or may not have run).
    Io(std::io::Error),
    /// No reply within the client's timeout (the request may or may not have run).
    Timeout,
    /// The node answered bytes that are not RESP.
    Protocol(String),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Io(e) => write!(f, "connection failed: {e}"),
            Failed::Timeout => write!(f, "no reply in time"),
            Failed::Protocol(why) => write!(f, "not RESP: {why}"),
        }
    }
}

/// What a request came to, for the trace: the reply, or why there was none.
pub fn show(result: &Result<Reply, Failed>) -> String {
    match result {
        Ok(reply) => format!("{reply:?}"),
        Err(e) => e.to_string(),
    }
}

/// One client connection to one node.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    /// Connects to `addr` (a simulated host name and port).
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Conn, Failed> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Failed::Timeout)?
            .map_err(Failed::Io)?;
        Ok(Conn { stream, buf: Vec::new(), timeout })
    }

    /// Sends one command and waits for its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, Failed> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let exchange = async {
            self.stream.write_all(&out).await.map_err(Failed::Io)?;
            loop {
                if let Some((reply, used)) = parse(&self.buf)? {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.map_err(Failed::Io)?;
                if n == 0 {
                    return Err(Failed::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        };
        tokio::time::timeout(self.timeout, exchange).await.map_err(|_| Failed::Timeout)?
    }

    /// [`call`](Self::call) with string arguments.
    pub async fn cmd(&mut self, args: &[&str]) -> Result<Reply, Failed> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&args).await
    }
}

/// One reply from the front of `buf` and the bytes it took, or `None` when it is not complete yet.
fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, Failed> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
    let line = String::from_utf8_lossy(&buf[1..end]).into_owned();
    let after = end + 2;
    let int = |s: &str| s.parse::<i64>().map_err(|_| Failed::Protocol(format!("bad integer {s:?}")));
    match buf.first() {
        Some(b'+') => Ok(Some((Reply::Status(line), after))),
        Some(b'-') => Ok(Some((Reply::Error(line), after))),
        Some(b':') => Ok(Some((Reply::Integer(int(&line)?), after))),
        Some(b'$') => {
            let len = int(&line)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let len = len as usize;
            if buf.len() < after + len + 2 {
                return Ok(None);
            }
            Ok(Some((Reply::Bulk(Some(buf[after..after + len].to_vec())), after + len + 2)))
        }
        Some(b'*') => {
            let len = int(&line)?;
            if len < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let mut items = Vec::with_capacity(len as usize);
            let mut at = after;
            for _ in 0..len {
                match parse(&buf[at..])? {
                    Some((item, used)) => {
                        items.push(item);
                        at += used;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), at)))
        }
        other => Err(Failed::Protocol(format!("unexpected reply type {other:?}"))),
    }
}
