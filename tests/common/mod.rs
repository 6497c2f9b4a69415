//! Test harness: real `dynamo-kv` processes on free loopback ports, driven over RESP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A node process with its own data directory.
pub struct TestNode {
    pub node_id: String,
    pub data_dir: PathBuf,
    pub extra: Vec<String>,
    pub port: u16,
    pub peer_port: u16,
    /// The port of the HTTP console and metrics, when the node serves them (`--http-listen 0` picks a free one).
    pub http_port: Option<u16>,
    /// The host the client port binds (the peer port always binds 127.0.0.1).
    pub listen_host: String,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl TestNode {
    /// Starts a node on a fresh data directory with extra `serve` flags.
    pub fn start(extra: &[&str]) -> TestNode {
        Self::start_named("t1", extra)
    }

    /// Starts node `node_id` on a fresh data directory with extra `serve` flags.
    pub fn start_named(node_id: &str, extra: &[&str]) -> TestNode {
        Self::start_on("127.0.0.1", node_id, extra)
    }

    /// Starts node `node_id` with its client port on `host` (0.0.0.0: every interface).
    pub fn start_on(host: &str, node_id: &str, extra: &[&str]) -> TestNode {
        let mut n = Self::unstarted(host, node_id, extra);
        n.spawn(0, 0);
        n
    }

    /// Starts node `node_id` on the given client and peer ports (for seed lists known before any node starts).
    pub fn start_on_ports(node_id: &str, port: u16, peer_port: u16, extra: &[&str]) -> TestNode {
        let mut n = Self::unstarted("127.0.0.1", node_id, extra);
        n.spawn(port, peer_port);
        n
    }

    fn unstarted(host: &str, node_id: &str, extra: &[&str]) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        TestNode {
            node_id: node_id.into(),
            data_dir: dir.path().join("data"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            port: 0,
            peer_port: 0,
            http_port: None,
            listen_host: host.into(),
            child: None,
            _dir: Some(dir),
        }
    }

    /// Whether the process has exited by itself (a node that left the cluster); reaps it.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut().map(|c| c.try_wait().unwrap()) {
            Some(Some(_)) => {
                self.child = None;
                true
            }
            Some(None) => false,
            None => true,
        }
    }

    /// The resident memory of the node process, in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("node running").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node running").id()
    }

    /// The address of its internal protocol.
    pub fn peer_addr(&self) -> String {
        format!("127.0.0.1:{}", self.peer_port)
    }

    /// Starts the process on `port` and `peer_port` (0: any free port) and waits for its ready line.
    fn spawn(&mut self, port: u16, peer_port: u16) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dynamo-kv"))
            .arg("serve")
            .args(["--node-id", &self.node_id])
            .args(["--listen", &format!("{}:{port}", self.listen_host)])
            .args(["--peer-listen", &format!("127.0.0.1:{peer_port}")])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra)
            // NODE_LOG=dynamo_kv=debug shows what the nodes of a failing test did (on the test's stderr).
            .env("RUST_LOG", std::env::var("NODE_LOG").unwrap_or_else(|_| "error".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning dynamo-kv");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let (client, peer) = parse_ready(&line);
        let words: Vec<&str> = line.split_whitespace().collect();
        self.http_port = words.windows(3).find(|w| w[..2] == ["http", "on"]).map(|w| port_of(w[2]));
        self.port = client.rsplit(':').next().unwrap().parse().unwrap();
        self.peer_port = peer.rsplit(':').next().unwrap().parse().unwrap();
        self.child = Some(child);
    }

    /// The redis URL of the node.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A redis-rs connection.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        connect(&redis::Client::open(self.url()).unwrap()).await
    }

    /// SIGTERM and wait: a graceful shutdown.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("node running");
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
        wait_timeout(&mut child, Duration::from_secs(30))
    }

    /// kill -9: no flush, no clean marker.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("node running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Starts the same node again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill the node first");
        let (port, peer_port) = (self.port, self.peer_port);
        self.spawn(port, peer_port);
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    eventually_blocking(timeout, "the node exits", || child.try_wait().unwrap().ok_or_else(|| "running".into()))
}

/// Sends raw bytes and reads until `expect` bytes arrived or the peer closed; returns what was read.
pub async fn raw_exchange(port: u16, send: &[u8], expect: usize) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(send).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut closed = false;
    while out.len() < expect {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => break,
        }
    }
    if !closed {
        // Check whether the server closes shortly after.
        closed =
            matches!(tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await, Ok(Ok(0)) | Ok(Err(_)));
    }
    (out, closed)
}

/// A connection of `client` that waits for replies as long as a test may: redis-rs gives up after 500 ms by
/// default, too tight for a 2-core CI machine running several clusters (and a timed-out request leaves the
/// connection broken); these tests check correctness, not latency.
pub async fn connect(client: &redis::Client) -> redis::aio::MultiplexedConnection {
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    c.set_response_timeout(Duration::from_secs(10));
    c
}

/// GET through redis-rs: (sorted sibling values, context token or None).
pub async fn get(con: &mut redis::aio::MultiplexedConnection, key: &str) -> (Vec<String>, Option<String>) {
    let v: redis::Value = redis::cmd("GET").arg(key).query_async(con).await.unwrap();
    parse_get(v)
}

pub fn parse_get(v: redis::Value) -> (Vec<String>, Option<String>) {
    let redis::Value::Array(parts) = v else { panic!("GET reply is not an array: {v:?}") };
    assert_eq!(parts.len(), 2, "GET reply has two elements");
    let redis::Value::Array(vals) = &parts[0] else { panic!("siblings not an array: {parts:?}") };
    let mut values: Vec<String> = vals
        .iter()
        .map(|x| match x {
            redis::Value::BulkString(b) => String::from_utf8(b.clone()).unwrap(),
            other => panic!("sibling not a bulk string: {other:?}"),
        })
        .collect();
    values.sort();
    let ctx = match &parts[1] {
        redis::Value::Nil => None,
        redis::Value::BulkString(b) => Some(String::from_utf8(b.clone()).unwrap()),
        other => panic!("context not bulk or nil: {other:?}"),
    };
    (values, ctx)
}

/// The port of an address `host:port`.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// Splits a ready line (`dynamo-kv ready: node ID clients on ADDR peers on ADDR [http on ADDR]`) into the client
/// and peer addresses.
pub fn parse_ready(line: &str) -> (String, String) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |w: &str| words.iter().position(|x| *x == w).map(|i| words[i + 2].to_string());
    match (after("clients"), after("peers")) {
        (Some(c), Some(p)) if line.starts_with("dynamo-kv ready:") => (c, p),
        _ => panic!("unexpected ready line: {line:?}"),
    }
}

const QUORUM: [&str; 6] = ["--n", "3", "--r", "2", "--w", "2"];

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(100);

/// Waits for something the cluster does on its own time: runs `check` every [`POLL`] until it returns `Ok`, for at
/// most `within`, then fails with `what` and the last thing `check` saw (its `Err`). Tests wait for a condition,
/// never for a fixed time: a fixed sleep is either too long on a fast machine or too short on a loaded one. What
/// must be shown *not* to happen over time belongs in the simulator (tests/sim), where time is simulated.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    eventually_every(POLL, within, what, check).await
}

/// [`eventually`], looking every `poll`: for a test that must catch a state the cluster passes through quickly.
pub async fn eventually_every<T, F, Fut>(poll: Duration, within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(seen) => assert!(Instant::now() < deadline, "{what}: not within {within:?}; last seen: {seen}"),
        }
        tokio::time::sleep(poll).await;
    }
}

/// The blocking form of [`eventually`], for tests outside a runtime.
pub fn eventually_blocking<T>(within: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + within;
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) => assert!(Instant::now() < deadline, "{what}: not within {within:?}; last seen: {seen}"),
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `node`, which knows no ring, heard back from its seeds: its `waiting_reason` says what each answered
/// (a refused handshake, a TLS failure) rather than "not contacted yet".
pub async fn wait_seeds_answered(node: &TestNode) {
    eventually(Duration::from_secs(10), &format!("{}'s seeds answer", node.node_id), || async {
        let mut c = node.conn().await;
        let info: String = redis::cmd("INFO").arg("dynamo").query_async(&mut c).await.unwrap();
        match info.lines().find(|l| l.starts_with("waiting_reason:")) {
            Some(l) if !l.contains("not contacted yet") => Ok(()),
            _ => Err(info),
        }
    })
    .await
}

/// Starts `n` nodes (c1..cn) that join through c1, and waits until every node knows every other.
pub async fn start_cluster(n: usize, extra: &[&str]) -> Vec<TestNode> {
    let mut flags: Vec<&str> = QUORUM.to_vec();
    flags.extend_from_slice(&["--membership-interval-ms", "200", "--request-timeout-ms", "1000"]);
    flags.extend_from_slice(extra);
    let mut nodes = vec![TestNode::start_named("c1", &flags)];
    let seed = nodes[0].peer_addr();
    for i in 2..=n {
        let mut f = flags.clone();
        f.extend_from_slice(&["--seeds", &seed]);
        nodes.push(TestNode::start_named(&format!("c{i}"), &f));
    }
    wait_members(&nodes, n).await;
    nodes
}

/// Waits until every running node lists `n` members, all up and valid, with the same ring, no transition and
/// nothing left to recover. The window is wide: with the other cluster tests running beside it on 2 cores, a
/// 4-node start took over 30 s to finish its handoffs here (it returns as soon as the cluster settles).
pub async fn wait_members(nodes: &[TestNode], n: usize) {
    eventually(Duration::from_secs(90), &format!("the cluster settles with {n} members"), || settled(nodes, n)).await
}

/// Whether every node lists `n` members, all up and valid, with the same ring, no transition and nothing to recover.
async fn settled(nodes: &[TestNode], n: usize) -> Result<(), String> {
    let mut versions = Vec::new();
    for node in nodes {
        let mut c = node.conn().await;
        let members: Vec<redis::Value> = redis::cmd("ADMIN").arg("MEMBERS").query_async(&mut c).await.unwrap();
        // Removed members stay listed as tombstones; they are not part of the cluster.
        let members: Vec<String> =
            members.iter().map(|m| format!("{m:?}")).filter(|t| !t.contains("\"removed\"")).collect();
        let up = members.iter().filter(|t| t.contains("\"up\"")).count();
        let valid = members.iter().filter(|t| t.contains("\"valid\"")).count();
        let info: String = redis::cmd("INFO").arg("dynamo").query_async(&mut c).await.unwrap();
        // Settled also means every received range has been checked against the other replicas: until then a node
        // does not vouch for not-found answers (reads of missing keys could be refused).
        let settled = info.contains("ring_transition:none") && info.contains("recovery:none");
        versions.push(info.lines().find(|l| l.starts_with("ring_version:")).unwrap_or("").to_string());
        if members.len() != n || up != n || valid != n || !settled {
            return Err(format!("{}: members {members:?}, info {info}", node.node_id));
        }
    }
    match versions.windows(2).all(|w| w[0] == w[1]) {
        true => Ok(()),
        false => Err(format!("ring versions differ: {versions:?}")),
    }
}

/// A node's own replica of `key` (ADMIN LOCALGET), sorted sibling values.
pub async fn local_get(node: &TestNode, key: &str) -> Vec<String> {
    let mut c = node.conn().await;
    let v: redis::Value = redis::cmd("ADMIN").arg("LOCALGET").arg(key).query_async(&mut c).await.unwrap();
    parse_local_get(v).0
}

/// An ADMIN LOCALGET reply: sorted siblings, context, and the digest of the stored version set (nil: absent).
pub fn parse_local_get(v: redis::Value) -> (Vec<String>, Option<String>, Option<String>) {
    let redis::Value::Array(mut parts) = v else { panic!("LOCALGET reply is not an array: {v:?}") };
    assert_eq!(parts.len(), 3, "LOCALGET answers siblings, context and digest");
    let digest = match parts.pop().unwrap() {
        redis::Value::BulkString(b) => Some(String::from_utf8(b).unwrap()),
        redis::Value::Nil => None,
        other => panic!("digest not a bulk string: {other:?}"),
    };
    let (values, ctx) = parse_get(redis::Value::Array(parts));
    (values, ctx, digest)
}

/// `count` loopback ports free right now (bound, then released), for nodes that must know each other's addresses
/// before they start.
pub fn free_ports(count: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A tmpfs mounted for one test (it needs root), unmounted when dropped: a small disk that fills.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `path` (created if missing).
    pub fn mount(path: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a tmpfs at {} failed: this test needs root", path.display());
        Tmpfs { path: path.to_path_buf() }
    }

    /// Changes its size (a disk that grows: space comes back).
    pub fn resize(&self, mib: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.path)
            .status()
            .expect("running mount");
        assert!(status.success(), "resizing the tmpfs at {} failed", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the node may still hold files open while it is being killed.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

impl TestNode {
    /// Starts node `node_id` with its data directory on a tmpfs of `mib` MiB.
    pub fn start_on_tmpfs(node_id: &str, mib: u64, extra: &[&str]) -> (TestNode, Tmpfs) {
        let mut n = Self::unstarted("127.0.0.1", node_id, extra);
        let fs = Tmpfs::mount(&n.data_dir, mib);
        n.spawn(0, 0);
        (n, fs)
    }

    /// One field of `INFO dynamo`, if present.
    pub async fn info_field(&self, field: &str) -> Option<String> {
        let mut c = self.conn().await;
        let info: String = redis::cmd("INFO").arg("all").query_async(&mut c).await.unwrap();
        info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(|v| v.trim().to_string()))
    }
}
