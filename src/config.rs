//! Configuration (L0): every setting of a node, from flags, `DYNAMO_KV_*` environment variables and a TOML file.
//!
//! Precedence: flag > environment > file > built-in default. Each setting is declared once, as a field of
//! [`ServeArgs`]: clap reads it from its flag or environment variable, serde from the file under the field's name.
//! [`Config::resolve`] lays what flags and environment set over the file, fills the rest from the `DEFAULT_*`
//! constants, and validates the whole into the typed [`Config`] the node uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a write is acknowledged; see [`crate::storage::store`] for what each mode can lose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Acknowledged after fsync; concurrent writes share one fsync (group commit).
    Fsync,
    /// Acknowledged once the write reached the OS (survives kill -9); fsync once a second.
    Os,
    /// Acknowledged from an in-memory buffer persisted by a background writer (paper §6.1).
    Buffered,
}

impl Durability {
    /// The lowercase name used in flags, files and INFO.
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Os => "os",
            Durability::Buffered => "buffered",
        }
    }
}

/// How GET and MGET answer a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ValueMode {
    /// `[siblings, context]`: every concurrent value and the token to write back with (the Dynamo contract).
    #[default]
    Versioned,
    /// Redis's bulk string (nil when absent), for applications that cannot change; siblings follow
    /// [`PlainSiblings`].
    Plain,
}

impl ValueMode {
    /// The lowercase name used in flags, files and CLIENT VALUES.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueMode::Versioned => "versioned",
            ValueMode::Plain => "plain",
        }
    }
}

/// What a plain-mode read answers when a key has more than one concurrent value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PlainSiblings {
    /// A `SIBLINGS` error naming the count: the application learns of the conflict and nothing is hidden.
    #[default]
    Error,
    /// The value whose write its coordinator accepted last (wall clock, then the write's dot): deterministic on
    /// every replica, but the other values are not shown and a blind SET then overwrites them.
    Newest,
}

/// Default threshold of the slow log, microseconds (Redis's `slowlog-log-slower-than`).
pub const DEFAULT_SLOWLOG_SLOWER_THAN_US: i64 = 10_000;
/// Default number of entries the slow log keeps (Redis's `slowlog-max-len`).
pub const DEFAULT_SLOWLOG_MAX_LEN: usize = 128;

/// Default client address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7001";
/// Default maximum key size.
pub const DEFAULT_MAX_KEY_BYTES: usize = 64 << 10;
/// Default maximum value size.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 << 20;
/// Default maximum size of one request frame.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 32 << 20;
/// Default maximum number of elements in one request array.
pub const DEFAULT_MAX_ARRAY_LEN: usize = 1 << 20;
/// Default maximum number of connected clients.
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;
/// Default time a started request has to arrive completely.
pub const DEFAULT_CLIENT_FRAME_TIMEOUT_SECS: u64 = 30;
/// Default time a client may leave its replies unread.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT_SECS: u64 = 30;
/// Default number of actors kept in a key's version vector (the paper's threshold).
pub const DEFAULT_MAX_VV_ENTRIES: usize = 10;
/// Default sibling count above which a write logs and counts a warning (Riak's default).
pub const DEFAULT_SIBLING_SOFT_LIMIT: usize = 25;
/// Default sibling count a write may not exceed (Riak's default).
pub const DEFAULT_SIBLING_HARD_LIMIT: usize = 100;
/// Default total bytes of a key's sibling values a write may leave.
pub const DEFAULT_MAX_SIBLINGS_BYTES: usize = 64 << 20;
/// Default cluster name (peers with another name are refused).
pub const DEFAULT_CLUSTER_NAME: &str = "dynamo-kv";
/// Default time a coordinator waits for replicas.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 2000;
/// Default interval of the membership exchange with seeds and peers.
pub const DEFAULT_MEMBERSHIP_INTERVAL_MS: u64 = 1000;
/// Offset of the default peer port from the client port.
pub const PEER_PORT_OFFSET: u16 = 10_000;
/// Default interval of the buffered writer.
pub const DEFAULT_BUFFER_FLUSH_MS: u64 = 50;
/// Default block-cache size of the storage engine.
pub const DEFAULT_CACHE_MB: u64 = 32;
/// Default budget of the row cache (hot keys' stored rows, ahead of the engine).
pub const DEFAULT_ROW_CACHE_MB: u64 = 64;
/// Most request threads `--worker-threads` takes.
pub const MAX_WORKER_THREADS: u16 = 1024;
/// Default durability mode: acknowledged once the write reached the OS, fsynced every second (Redis's
/// `appendfsync everysec`).
pub const DEFAULT_DURABILITY: Durability = Durability::Os;
/// Default replicas per key, and read and write quorums: the paper's common N=3, R=2, W=2. A cluster with fewer
/// members uses what it has (one node: 1/1/1).
pub const DEFAULT_N: usize = 3;
/// Default read quorum.
pub const DEFAULT_R: usize = 2;
/// Default write quorum.
pub const DEFAULT_W: usize = 2;
/// Default weight of a node in the claim of partitions.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Whether the claimant commits joins and leaves by itself, by default.
pub const DEFAULT_AUTO_COMMIT: bool = true;
/// Default pause between two anti-entropy exchanges.
pub const DEFAULT_ANTI_ENTROPY_INTERVAL_MS: u64 = 200;
/// Default time a tombstone is kept at least before it may be reaped (one day).
pub const DEFAULT_TOMBSTONE_GRACE_SECS: u64 = 86_400;
/// Protected mode is on by default, as in Redis.
pub const DEFAULT_PROTECTED_MODE: bool = true;
/// Idle clients are never disconnected by default (0), as in Redis.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT_SECS: u64 = 0;
/// Default floor of free disk space below which a node stops taking writes: room for the engine to flush its
/// memtables and compact while writes go elsewhere.
pub const DEFAULT_MIN_FREE_DISK_MB: u64 = 256;
/// Smallest non-zero floor: two of the engine's memtables, which it may still flush after writes stop.
pub const MIN_FREE_DISK_FLOOR: u64 = 32 << 20;

/// Size limits on client input, checked before anything is allocated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest key, bytes.
    pub max_key_bytes: usize,
    /// Largest value, bytes.
    pub max_value_bytes: usize,
    /// Largest single request frame, bytes.
    pub max_request_bytes: usize,
    /// Most elements in one request array.
    pub max_array_len: usize,
    /// Most clients connected at once.
    pub max_clients: usize,
    /// A client that sends nothing for this long is disconnected (Redis's `timeout`); zero: never.
    pub client_idle_timeout: Duration,
    /// A request that started arriving must be complete within this time (slow senders cannot hold a buffer and a
    /// task forever); zero: never.
    pub client_frame_timeout: Duration,
    /// A client that does not read its replies for this long is disconnected (like Redis's
    /// client-output-buffer-limit); zero: never.
    pub client_write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_array_len: DEFAULT_MAX_ARRAY_LEN,
            max_clients: DEFAULT_MAX_CLIENTS,
            client_idle_timeout: Duration::ZERO,
            client_frame_timeout: Duration::from_secs(DEFAULT_CLIENT_FRAME_TIMEOUT_SECS),
            client_write_timeout: Duration::from_secs(DEFAULT_CLIENT_WRITE_TIMEOUT_SECS),
        }
    }
}

/// Versioning tunables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersioningOptions {
    /// Actors kept per version vector before the oldest is pruned.
    pub max_vv_entries: usize,
    /// Siblings per key above which a warning is logged and counted.
    pub sibling_soft_limit: usize,
    /// Siblings per key a write may not exceed.
    pub sibling_hard_limit: usize,
    /// Total bytes of a key's sibling values a write may not exceed (bounds what one GET returns).
    pub max_siblings_bytes: usize,
    /// Which of several concurrent strings an INCR counts from (the plain-mode GET rule).
    pub plain_siblings: PlainSiblings,
}

impl Default for VersioningOptions {
    fn default() -> Self {
        Self {
            max_vv_entries: DEFAULT_MAX_VV_ENTRIES,
            sibling_soft_limit: DEFAULT_SIBLING_SOFT_LIMIT,
            sibling_hard_limit: DEFAULT_SIBLING_HARD_LIMIT,
            max_siblings_bytes: DEFAULT_MAX_SIBLINGS_BYTES,
            plain_siblings: PlainSiblings::default(),
        }
    }
}

/// Replication: N replicas per key, R replies per read, W acknowledgements per write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// Replicas per key.
    pub n: usize,
    /// Replies a read waits for.
    pub r: usize,
    /// Acknowledgements a write waits for.
    pub w: usize,
}

impl Quorum {
    /// Checks 1 <= R, W <= N.
    pub fn validate(&self) -> Result<(), String> {
        if self.n == 0 || self.r == 0 || self.w == 0 || self.r > self.n || self.w > self.n {
            return Err(format!("need 1 <= R, W <= N; got N={} R={} W={}", self.n, self.r, self.w));
        }
        Ok(())
    }
}

/// How this node finds and proves itself to the rest of the cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Address of the internal protocol.
    pub peer_listen: String,
    /// Address other nodes use to reach `peer_listen` (needed when it binds 0.0.0.0).
    pub peer_advertise: Option<String>,
    /// Address shown to operators for `listen` (admin views).
    pub client_advertise: Option<String>,
    /// Peer addresses contacted at start and periodically (static seeds).
    pub seeds: Vec<String>,
    /// Found the cluster once this many nodes (this one included) know each other, when no ring exists yet.
    pub bootstrap_expect: Option<usize>,
    /// Cluster name; peers with another name are refused.
    pub cluster_name: String,
    /// Shared secret peers prove in the handshake; `None` is open dev mode.
    pub cluster_secret: Option<String>,
    /// Run without a secret or peer TLS even where the peer port is reachable beyond loopback.
    pub insecure_open_cluster: bool,
    /// Mutual TLS on the internal protocol (certificate, key, cluster CA); `None` is plaintext.
    pub peer_tls: Option<PeerTlsFiles>,
    /// Partitions of the ring (Q), fixed when the cluster is created.
    pub partitions: usize,
    /// This node's relative capacity.
    pub weight: u32,
    /// This node's zone (rack or datacenter).
    pub zone: Option<String>,
    /// Replication defaults.
    pub quorum: Quorum,
    /// How long a coordinator waits for replicas.
    pub request_timeout: Duration,
    /// Interval of the membership exchange.
    pub membership_interval: Duration,
    /// Whether the claimant commits joins and leaves by itself (else: `admin plan` / `admin commit`).
    pub auto_commit: bool,
    /// Pause between two anti-entropy partition exchanges.
    pub anti_entropy_interval: Duration,
    /// How old a tombstone must be before it may be reaped (once every replica holds it).
    pub tombstone_grace: Duration,
}

/// The resolved configuration of one node.
#[derive(Clone, Debug)]
pub struct Config {
    /// Stable identity of the node.
    pub node_id: String,
    /// Client address (RESP).
    pub listen: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Password clients must present with AUTH, if any (the `default` user's).
    pub requirepass: Option<String>,
    /// Named users (Redis 6 style `AUTH user pass`), from the config file.
    pub users: Vec<User>,
    /// Protected mode (Redis's): with no password and no users, only loopback clients are served.
    pub protected_mode: bool,
    /// A second client address that speaks TLS, with its certificate chain and key (PEM files).
    pub tls: Option<TlsListen>,
    /// When writes are acknowledged.
    pub durability: Durability,
    /// Interval of the buffered writer.
    pub buffer_flush_interval: Duration,
    /// Storage block cache, bytes.
    pub cache_bytes: u64,
    /// Budget of the row cache, bytes (0: none).
    pub row_cache_bytes: u64,
    /// Threads of the async runtime (`None`: one per CPU the process may use). A process setting: `main` reads it
    /// from the first node's config when it builds the runtime.
    pub worker_threads: Option<usize>,
    /// Free disk space below which the node stops taking writes, bytes (0: only a failed write stops them).
    pub min_free_disk_bytes: u64,
    /// Commands slower than this many microseconds enter the slow log (negative: none; 0: every command).
    pub slowlog_slower_than_us: i64,
    /// Entries the slow log keeps.
    pub slowlog_max_len: usize,
    /// How GET and MGET answer the default user and named users without a `values` of their own.
    pub values: ValueMode,
    /// What a plain-mode read answers for a key with siblings.
    pub plain_siblings: PlainSiblings,
    /// Address of the Prometheus `/metrics` endpoint, if any (a bare port is on 127.0.0.1).
    pub metrics_listen: Option<String>,
    /// Client input limits.
    pub limits: Limits,
    /// Versioning tunables.
    pub versioning: VersioningOptions,
    /// Cluster membership, ring and replication.
    pub cluster: ClusterOptions,
}

/// Every setting, declared once: its flag, its environment variable and its key in the config file (the field's
/// name), with its documentation. All optional: unset means "ask the next source" (flag, then environment, then
/// file), then the default named in its doc and defined as a constant.
#[derive(Clone, Debug, Default, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeArgs {
    /// Stable, unique id of this node (letters, digits, '-', '_', '.').
    #[arg(long, env = "DYNAMO_KV_NODE_ID")]
    pub node_id: Option<String>,
    /// Address for RESP clients, HOST:PORT [default: 127.0.0.1:7001].
    #[arg(long, env = "DYNAMO_KV_LISTEN")]
    pub listen: Option<String>,
    /// Directory for this node's data; created when missing.
    #[arg(long, env = "DYNAMO_KV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML file with any of these settings (snake_case names, e.g. `node_id = "n1"`).
    #[arg(long, env = "DYNAMO_KV_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Named users, in the config file only (`[[users]]` with `name`, `password` and `access`).
    #[arg(skip)]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<User>,
    /// Require clients to AUTH with this password.
    #[arg(long, env = "DYNAMO_KV_REQUIREPASS", hide_env_values = true)]
    pub requirepass: Option<String>,
    /// Also serve clients over TLS on HOST:PORT (needs --tls-cert-file and --tls-key-file).
    #[arg(long, env = "DYNAMO_KV_TLS_LISTEN")]
    pub tls_listen: Option<String>,
    /// PEM certificate chain of the TLS listener, leaf first.
    #[arg(long, env = "DYNAMO_KV_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS listener.
    #[arg(long, env = "DYNAMO_KV_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// When writes are acknowledged: fsync (on disk), os (reached the OS; fsync every second), buffered
    /// (in-memory buffer persisted in the background) [default: os].
    #[arg(long, env = "DYNAMO_KV_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// How GET and MGET answer: versioned ([siblings, context]) or plain (Redis's bulk string) [default:
    /// versioned]. Applies to the default user and to named users without their own `values`; a connection
    /// switches with CLIENT VALUES.
    #[arg(long, env = "DYNAMO_KV_VALUES", value_enum)]
    pub values: Option<ValueMode>,
    /// What a plain-mode GET answers for a key with concurrent values: error (a SIBLINGS error) or newest (the
    /// value written last by its coordinator's clock) [default: error].
    #[arg(long, env = "DYNAMO_KV_PLAIN_SIBLINGS", value_enum)]
    pub plain_siblings: Option<PlainSiblings>,
    /// Buffered mode: milliseconds between background writes [default: 50].
    #[arg(long, env = "DYNAMO_KV_BUFFER_FLUSH_MS")]
    pub buffer_flush_ms: Option<u64>,
    /// The HTTP port: the web console at http://HOST:PORT/, the JSON admin API under /api/ and Prometheus
    /// metrics at /metrics; a bare PORT serves on 127.0.0.1 (off by default). With a password or users
    /// configured, the console and the API ask for them (HTTP Basic); /metrics never does.
    #[arg(long, visible_alias = "http-listen", env = "DYNAMO_KV_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Protected mode, as in Redis: while no password and no users are configured, clients that do not connect
    /// from loopback get a DENIED error and are disconnected. `no` serves them all [default: yes].
    #[arg(long, env = "DYNAMO_KV_PROTECTED_MODE", value_parser = clap::builder::BoolishValueParser::new())]
    pub protected_mode: Option<bool>,
    /// Start even though the peer port is reachable beyond loopback with neither --cluster-secret nor peer TLS:
    /// any process that reaches it can then join the cluster, read and write every key and forge context tokens.
    #[arg(
        long,
        env = "DYNAMO_KV_INSECURE_OPEN_CLUSTER",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure_open_cluster: Option<bool>,
    /// Storage block cache in MiB: blocks of the tables on disk, behind the row cache [default: 32].
    #[arg(long, env = "DYNAMO_KV_CACHE_MB")]
    pub cache_mb: Option<u64>,
    /// Row cache in MiB: hot keys' stored rows, so their reads and writes skip the engine (0: none)
    /// [default: 64].
    #[arg(long, env = "DYNAMO_KV_ROW_CACHE_MB")]
    pub row_cache_mb: Option<u64>,
    /// Threads that run requests [default: one per CPU this process may use]. Give each node fewer when several
    /// share a machine: their threads then take turns on the same cores, and every turn costs a context switch.
    #[arg(
        long,
        env = "DYNAMO_KV_WORKER_THREADS",
        value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_WORKER_THREADS))
    )]
    pub worker_threads: Option<u16>,
    /// Stop taking writes when the data directory's disk has less than this many MiB free; writes resume by
    /// themselves when space returns (0: never stop for space) [default: 256].
    #[arg(long, env = "DYNAMO_KV_MIN_FREE_DISK_MB")]
    pub min_free_disk_mb: Option<u64>,
    /// Largest key in bytes [default: 65536].
    #[arg(long, env = "DYNAMO_KV_MAX_KEY_BYTES")]
    pub max_key_bytes: Option<usize>,
    /// Largest value in bytes [default: 16777216].
    #[arg(long, env = "DYNAMO_KV_MAX_VALUE_BYTES")]
    pub max_value_bytes: Option<usize>,
    /// Largest request frame in bytes [default: 33554432].
    #[arg(long, env = "DYNAMO_KV_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Most elements in one request [default: 1048576].
    #[arg(long, env = "DYNAMO_KV_MAX_ARRAY_LEN")]
    pub max_array_len: Option<usize>,
    /// Most clients connected at once [default: 10000].
    #[arg(long, env = "DYNAMO_KV_MAX_CLIENTS")]
    pub max_clients: Option<usize>,
    /// Disconnect a client idle for this many seconds; 0 never does (Redis's `timeout`) [default: 0].
    #[arg(long, env = "DYNAMO_KV_CLIENT_IDLE_TIMEOUT_SECS")]
    pub client_idle_timeout_secs: Option<u64>,
    /// Disconnect a client whose started request is not complete after this many seconds; 0: never [default: 30].
    #[arg(long, env = "DYNAMO_KV_CLIENT_FRAME_TIMEOUT_SECS")]
    pub client_frame_timeout_secs: Option<u64>,
    /// Disconnect a client that leaves its replies unread for this many seconds; 0: never [default: 30].
    #[arg(long, env = "DYNAMO_KV_CLIENT_WRITE_TIMEOUT_SECS")]
    pub client_write_timeout_secs: Option<u64>,
    /// Actors kept in a key's version vector before the oldest is pruned [default: 10].
    #[arg(long, env = "DYNAMO_KV_MAX_VV_ENTRIES")]
    pub max_vv_entries: Option<usize>,
    /// Commands that take longer than this many microseconds enter the slow log (SLOWLOG GET); negative turns it
    /// off, 0 logs every command [default: 10000].
    #[arg(long, env = "DYNAMO_KV_SLOWLOG_LOG_SLOWER_THAN", allow_negative_numbers = true)]
    pub slowlog_log_slower_than: Option<i64>,
    /// Entries the slow log keeps, the oldest dropped first [default: 128].
    #[arg(long, env = "DYNAMO_KV_SLOWLOG_MAX_LEN")]
    pub slowlog_max_len: Option<usize>,
    /// Siblings per key above which a warning is logged [default: 25].
    #[arg(long, env = "DYNAMO_KV_SIBLING_SOFT_LIMIT")]
    pub sibling_soft_limit: Option<usize>,
    /// Siblings per key a write may not exceed [default: 100].
    #[arg(long, env = "DYNAMO_KV_SIBLING_HARD_LIMIT")]
    pub sibling_hard_limit: Option<usize>,
    /// Total bytes of a key's sibling values a write may not exceed [default: 67108864].
    #[arg(long, env = "DYNAMO_KV_MAX_SIBLINGS_BYTES")]
    pub max_siblings_bytes: Option<usize>,
    /// Address of the internal protocol, HOST:PORT [default: client host, client port + 10000].
    #[arg(long, env = "DYNAMO_KV_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    /// Address other nodes reach the internal protocol at, when --peer-listen binds 0.0.0.0 (containers, NAT).
    #[arg(long, env = "DYNAMO_KV_PEER_ADVERTISE")]
    pub peer_advertise: Option<String>,
    /// Client address shown in admin views, when --listen binds 0.0.0.0.
    #[arg(long, env = "DYNAMO_KV_CLIENT_ADVERTISE")]
    pub client_advertise: Option<String>,
    /// Peer addresses (HOST:PORT of their internal protocol) to join through, comma-separated.
    #[arg(long, env = "DYNAMO_KV_SEEDS", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Form a new cluster by itself: once this many nodes started with the same seeds know each other, and no
    /// ring exists yet, the one with the smallest id founds it with all of them. Give every node of a new cluster
    /// the same value, the full number of nodes (fewer lets two groups cut apart at start found two clusters).
    /// Ignored by a node that already belongs to a cluster.
    #[arg(long, env = "DYNAMO_KV_BOOTSTRAP_EXPECT")]
    pub bootstrap_expect: Option<usize>,
    /// Cluster name; peers with another name are refused [default: dynamo-kv].
    #[arg(long, env = "DYNAMO_KV_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    /// Secret every node of the cluster shares; without it the node runs in open dev mode (anyone can join).
    #[arg(long, env = "DYNAMO_KV_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Run the internal protocol over mutual TLS: this node's PEM certificate chain, valid for both server and
    /// client use and naming the host other nodes dial (needs --peer-tls-key-file and --peer-tls-ca-file).
    #[arg(long, env = "DYNAMO_KV_PEER_TLS_CERT_FILE")]
    pub peer_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --peer-tls-cert-file.
    #[arg(long, env = "DYNAMO_KV_PEER_TLS_KEY_FILE")]
    pub peer_tls_key_file: Option<PathBuf>,
    /// PEM bundle of the cluster CA: peers must present a certificate it signed.
    #[arg(long, env = "DYNAMO_KV_PEER_TLS_CA_FILE")]
    pub peer_tls_ca_file: Option<PathBuf>,
    /// Partitions of the ring (Q, a power of two), fixed when the cluster is created [default: 256].
    #[arg(long, env = "DYNAMO_KV_PARTITIONS")]
    pub partitions: Option<usize>,
    /// This node's relative capacity: it owns partitions in proportion [default: 1].
    #[arg(long, env = "DYNAMO_KV_WEIGHT")]
    pub weight: Option<u32>,
    /// This node's zone (rack or datacenter); replicas spread across zones.
    #[arg(long, env = "DYNAMO_KV_ZONE")]
    pub zone: Option<String>,
    /// Replicas per key; a cluster with fewer members uses them all [default: 3].
    #[arg(long = "n", env = "DYNAMO_KV_N")]
    pub n: Option<usize>,
    /// Replies a read waits for, at most the member count [default: 2].
    #[arg(long = "r", env = "DYNAMO_KV_R")]
    pub r: Option<usize>,
    /// Acknowledgements a write waits for, at most the member count [default: 2].
    #[arg(long = "w", env = "DYNAMO_KV_W")]
    pub w: Option<usize>,
    /// Milliseconds a coordinator waits for replicas [default: 2000].
    #[arg(long, env = "DYNAMO_KV_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Milliseconds between gossip rounds [default: 1000].
    #[arg(long, env = "DYNAMO_KV_MEMBERSHIP_INTERVAL_MS")]
    pub membership_interval_ms: Option<u64>,
    /// Commit joins and leaves automatically (true), or only on `admin commit` after `admin plan` (false)
    /// [default: true].
    #[arg(long, env = "DYNAMO_KV_AUTO_COMMIT")]
    pub auto_commit: Option<bool>,
    /// Milliseconds between two anti-entropy partition exchanges (a full pass over Q=256 partitions at the
    /// default takes about a minute) [default: 200].
    #[arg(long, env = "DYNAMO_KV_ANTI_ENTROPY_INTERVAL_MS")]
    pub anti_entropy_interval_ms: Option<u64>,
    /// Seconds a tombstone is kept at least, even once every replica holds it; hints older than this are dropped
    /// (anti-entropy repairs their data) so they cannot bring back a reaped delete [default: 86400].
    #[arg(long, env = "DYNAMO_KV_TOMBSTONE_GRACE_SECS")]
    pub tombstone_grace_secs: Option<u64>,
}

/// The TLS client listener: address, certificate chain and private key (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsListen {
    /// HOST:PORT of the TLS listener.
    pub listen: String,
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Mutual TLS of the internal protocol: this node's certificate chain and key, and the CA bundle peers must chain
/// to (all PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTlsFiles {
    /// PEM certificate chain, leaf first, for both server and client authentication.
    pub cert_file: PathBuf,
    /// PEM private key of the certificate.
    pub key_file: PathBuf,
    /// PEM CA certificates that sign every node's certificate.
    pub ca_file: PathBuf,
}

/// What a user may run; each level includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Reads and connection and server-information commands: no writes, no ADMIN.
    Read,
    /// Also the data commands that write (SET, DEL, DELCTX): an application's user.
    Write,
    /// Every command, ADMIN included (membership, repair, debug views). The `default` user's level, and what the
    /// older `full` means.
    #[serde(alias = "full")]
    Admin,
}

impl Access {
    /// The lower-case name of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
            Access::Admin => "admin",
        }
    }
}

/// A named user of the config file (`[[users]]` with `name`, `password`, `access` and optionally `values`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The name given to AUTH.
    pub name: String,
    /// The password given to AUTH.
    pub password: String,
    /// What the user may run.
    pub access: Access,
    /// How GET and MGET answer this user (unset: the node's `values`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<ValueMode>,
}

impl Config {
    /// Whether clients must AUTH before running commands: a default password or any named user is configured.
    pub fn auth_required(&self) -> bool {
        self.requirepass.is_some() || !self.users.is_empty()
    }

    /// What `user` (`default` for the default user) with `password` may do, and how its reads answer; `None` for
    /// wrong credentials. The `default` user has the `requirepass` password, or accepts any password when no
    /// authentication is configured at all (as in Redis); with named users but no `requirepass`, it is disabled.
    /// Passwords are compared in constant time.
    pub fn grant(&self, user: &str, password: &[u8]) -> Option<(Access, ValueMode)> {
        if user == "default" {
            return match &self.requirepass {
                Some(expected) => {
                    constant_time_eq(expected.as_bytes(), password).then_some((Access::Admin, self.values))
                }
                None => (!self.auth_required()).then_some((Access::Admin, self.values)),
            };
        }
        self.users
            .iter()
            .find(|u| u.name == user)
            .filter(|u| constant_time_eq(u.password.as_bytes(), password))
            .map(|u| (u.access, u.values.unwrap_or(self.values)))
    }
}

/// Compares secrets without an early exit, so timing does not reveal a matching prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for our settings.
    #[error("config file {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A required setting is missing.
    #[error("{setting} is required (flag --{flag}, environment {env}, or `{setting}` in the config file)")]
    Missing {
        /// Setting name as in the file.
        setting: &'static str,
        /// Flag name.
        flag: &'static str,
        /// Environment variable.
        env: &'static str,
    },
    /// A setting has a value outside its range.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// Setting name.
        setting: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl Config {
    /// Lays `args` (flags and environment) over the config file they name, if any, and the defaults.
    pub fn resolve(args: &ServeArgs) -> Result<Config, ConfigError> {
        let s = match &args.config {
            Some(path) => layered(args, path)?,
            None => args.clone(),
        };
        let node_id = s.node_id.clone().ok_or(ConfigError::Missing {
            setting: "node_id",
            flag: "node-id",
            env: "DYNAMO_KV_NODE_ID",
        })?;
        let data_dir = s.data_dir.clone().ok_or(ConfigError::Missing {
            setting: "data_dir",
            flag: "data-dir",
            env: "DYNAMO_KV_DATA_DIR",
        })?;
        let listen = s.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into());
        let peer_listen = match s.peer_listen.clone() {
            Some(p) => p,
            None => default_peer_listen(&listen)?,
        };
        let seeds: Vec<String> = s
            .seeds
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let cluster = ClusterOptions {
            peer_listen,
            peer_advertise: s.peer_advertise.clone(),
            client_advertise: s.client_advertise.clone(),
            cluster_name: s.cluster_name.clone().unwrap_or_else(|| DEFAULT_CLUSTER_NAME.into()),
            cluster_secret: s.cluster_secret.clone(),
            insecure_open_cluster: s.insecure_open_cluster.unwrap_or_default(),
            peer_tls: all_or_none(
                "peer_tls_cert_file",
                "peer TLS needs all three of --peer-tls-cert-file, --peer-tls-key-file and --peer-tls-ca-file",
                (s.peer_tls_cert_file.clone(), s.peer_tls_key_file.clone(), s.peer_tls_ca_file.clone()),
            )?
            .map(|(cert_file, key_file, ca_file)| PeerTlsFiles { cert_file, key_file, ca_file }),
            partitions: s.partitions.unwrap_or(crate::ring::DEFAULT_PARTITIONS),
            weight: s.weight.unwrap_or(DEFAULT_WEIGHT),
            zone: s.zone.clone(),
            quorum: Quorum { n: s.n.unwrap_or(DEFAULT_N), r: s.r.unwrap_or(DEFAULT_R), w: s.w.unwrap_or(DEFAULT_W) },
            request_timeout: Duration::from_millis(s.request_timeout_ms.unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS)),
            membership_interval: Duration::from_millis(
                s.membership_interval_ms.unwrap_or(DEFAULT_MEMBERSHIP_INTERVAL_MS),
            ),
            auto_commit: s.auto_commit.unwrap_or(DEFAULT_AUTO_COMMIT),
            anti_entropy_interval: Duration::from_millis(
                s.anti_entropy_interval_ms.unwrap_or(DEFAULT_ANTI_ENTROPY_INTERVAL_MS).max(1),
            ),
            tombstone_grace: Duration::from_secs(s.tombstone_grace_secs.unwrap_or(DEFAULT_TOMBSTONE_GRACE_SECS)),
            seeds,
            bootstrap_expect: s.bootstrap_expect,
        };
        let config = Config {
            node_id,
            listen,
            data_dir,
            requirepass: s.requirepass.clone(),
            users: s.users.clone(),
            protected_mode: s.protected_mode.unwrap_or(DEFAULT_PROTECTED_MODE),
            tls: all_or_none(
                "tls_listen",
                "TLS needs all three of --tls-listen, --tls-cert-file and --tls-key-file",
                (s.tls_listen.clone(), s.tls_cert_file.clone(), s.tls_key_file.clone()),
            )?
            .map(|(listen, cert_file, key_file)| TlsListen { listen, cert_file, key_file }),
            durability: s.durability.unwrap_or(DEFAULT_DURABILITY),
            buffer_flush_interval: Duration::from_millis(s.buffer_flush_ms.unwrap_or(DEFAULT_BUFFER_FLUSH_MS)),
            cache_bytes: s.cache_mb.unwrap_or(DEFAULT_CACHE_MB) << 20,
            row_cache_bytes: s.row_cache_mb.unwrap_or(DEFAULT_ROW_CACHE_MB).saturating_mul(1 << 20),
            worker_threads: s.worker_threads.map(usize::from),
            min_free_disk_bytes: s.min_free_disk_mb.unwrap_or(DEFAULT_MIN_FREE_DISK_MB).saturating_mul(1 << 20),
            slowlog_slower_than_us: s.slowlog_log_slower_than.unwrap_or(DEFAULT_SLOWLOG_SLOWER_THAN_US),
            slowlog_max_len: s.slowlog_max_len.unwrap_or(DEFAULT_SLOWLOG_MAX_LEN),
            values: s.values.unwrap_or_default(),
            plain_siblings: s.plain_siblings.unwrap_or_default(),
            metrics_listen: s.metrics_listen.clone().map(|m| on_loopback_if_bare_port(&m)),
            limits: Limits {
                max_key_bytes: s.max_key_bytes.unwrap_or(DEFAULT_MAX_KEY_BYTES),
                max_value_bytes: s.max_value_bytes.unwrap_or(DEFAULT_MAX_VALUE_BYTES),
                max_request_bytes: s.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES),
                max_array_len: s.max_array_len.unwrap_or(DEFAULT_MAX_ARRAY_LEN),
                max_clients: s.max_clients.unwrap_or(DEFAULT_MAX_CLIENTS),
                client_idle_timeout: Duration::from_secs(
                    s.client_idle_timeout_secs.unwrap_or(DEFAULT_CLIENT_IDLE_TIMEOUT_SECS),
                ),
                client_frame_timeout: Duration::from_secs(
                    s.client_frame_timeout_secs.unwrap_or(DEFAULT_CLIENT_FRAME_TIMEOUT_SECS),
                ),
                client_write_timeout: Duration::from_secs(
                    s.client_write_timeout_secs.unwrap_or(DEFAULT_CLIENT_WRITE_TIMEOUT_SECS),
                ),
            },
            versioning: VersioningOptions {
                max_vv_entries: s.max_vv_entries.unwrap_or(DEFAULT_MAX_VV_ENTRIES),
                sibling_soft_limit: s.sibling_soft_limit.unwrap_or(DEFAULT_SIBLING_SOFT_LIMIT),
                sibling_hard_limit: s.sibling_hard_limit.unwrap_or(DEFAULT_SIBLING_HARD_LIMIT),
                max_siblings_bytes: s.max_siblings_bytes.unwrap_or(DEFAULT_MAX_SIBLINGS_BYTES),
                plain_siblings: s.plain_siblings.unwrap_or_default(),
            },
            cluster,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, reason: String| Err(ConfigError::Invalid { setting, reason });
        let id_ok = !self.node_id.is_empty()
            && self.node_id.len() <= 64
            && self.node_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !id_ok {
            return invalid("node_id", format!("'{}': use 1-64 letters, digits, '-', '_' or '.'", self.node_id));
        }
        // The flag's parser bounds it; the config file's value arrives here unchecked.
        if let Some(n) = self.worker_threads.filter(|n| !(1..=usize::from(MAX_WORKER_THREADS)).contains(n)) {
            return invalid("worker_threads", format!("{n}: use 1 to {MAX_WORKER_THREADS} threads"));
        }
        if self.min_free_disk_bytes != 0 && self.min_free_disk_bytes < MIN_FREE_DISK_FLOOR {
            return invalid(
                "min_free_disk_mb",
                format!(
                    "{} MiB is too little: the storage engine needs room to flush its memory tables after writes stop; \
                     use 0 (never stop for space) or at least {} MiB",
                    self.min_free_disk_bytes >> 20,
                    MIN_FREE_DISK_FLOOR >> 20
                ),
            );
        }
        for (i, u) in self.users.iter().enumerate() {
            if u.name.is_empty() || u.name == "default" || u.name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return invalid("users", format!("user name '{}': use a non-empty name other than 'default'", u.name));
            }
            if u.password.is_empty() {
                return invalid("users", format!("user '{}' has an empty password", u.name));
            }
            if self.users[..i].iter().any(|o| o.name == u.name) {
                return invalid("users", format!("user '{}' is defined twice", u.name));
            }
        }
        let l = &self.limits;
        for (setting, v) in [
            ("max_key_bytes", l.max_key_bytes),
            ("max_value_bytes", l.max_value_bytes),
            ("max_array_len", l.max_array_len),
            ("max_clients", l.max_clients),
            ("max_vv_entries", self.versioning.max_vv_entries),
        ] {
            if v == 0 {
                return invalid(setting, "must be at least 1".into());
            }
        }
        if l.max_request_bytes < l.max_key_bytes + l.max_value_bytes + 1024 {
            return invalid(
                "max_request_bytes",
                format!(
                    "{} cannot hold a SET of the largest key and value ({} + {} bytes plus framing)",
                    l.max_request_bytes, l.max_key_bytes, l.max_value_bytes
                ),
            );
        }
        let v = &self.versioning;
        if v.sibling_soft_limit == 0 || v.sibling_hard_limit < v.sibling_soft_limit {
            return invalid(
                "sibling_hard_limit",
                format!(
                    "need 1 <= sibling_soft_limit ({}) <= sibling_hard_limit ({})",
                    v.sibling_soft_limit, v.sibling_hard_limit
                ),
            );
        }
        if v.max_siblings_bytes < l.max_value_bytes {
            return invalid(
                "max_siblings_bytes",
                format!(
                    "{} is below max_value_bytes ({}): a single value could never be written",
                    v.max_siblings_bytes, l.max_value_bytes
                ),
            );
        }
        let c = &self.cluster;
        if let Err(reason) = c.quorum.validate() {
            return invalid("n/r/w", reason);
        }
        if c.quorum.n > 16 {
            return invalid("n", format!("{} replicas per key is more than the supported 16", c.quorum.n));
        }
        // Anti-entropy trees give every partition at least one leaf.
        let max_q = crate::ring::MAX_PARTITIONS.min(crate::antientropy::tree::LEAVES);
        if !c.partitions.is_power_of_two() || c.partitions > max_q {
            return invalid("partitions", format!("{} must be a power of two up to {max_q}", c.partitions));
        }
        if c.bootstrap_expect == Some(0) {
            return invalid("bootstrap_expect", "must be at least 1 (the number of nodes of the new cluster)".into());
        }
        if c.weight == 0 || c.weight > 1000 {
            return invalid("weight", format!("{} must be between 1 and 1000", c.weight));
        }
        if c.request_timeout.is_zero() || c.membership_interval.is_zero() {
            return invalid("request_timeout_ms", "timeouts and intervals must be at least 1 ms".into());
        }
        if self.buffer_flush_interval.is_zero() {
            return invalid("buffer_flush_ms", "must be at least 1".into());
        }
        // No open cluster on a reachable address: without a secret or peer TLS, anyone who reaches the peer port
        // joins as a node, reads and writes every key, and forges context tokens.
        if c.cluster_secret.is_none() && c.peer_tls.is_none() && !c.insecure_open_cluster {
            let exposed =
                [Some(&c.peer_listen), c.peer_advertise.as_ref()].into_iter().flatten().find(|a| !is_loopback(a));
            if let Some(addr) = exposed {
                return invalid(
                    "cluster_secret",
                    format!(
                        "the peer port ({addr}) is reachable beyond loopback, and with no cluster secret any process \
                         that reaches it can join the cluster, read and write every key and forge context tokens: \
                         set --cluster-secret (the same on every node) or peer TLS (--peer-tls-*), or pass \
                         --insecure-open-cluster to run an open cluster on purpose"
                    ),
                );
            }
        }
        Ok(())
    }
}

/// An HTTP listen address: a bare port means that port on 127.0.0.1, the safe default for endpoints without
/// authentication.
pub fn on_loopback_if_bare_port(addr: &str) -> String {
    if addr.parse::<u16>().is_ok() { format!("127.0.0.1:{addr}") } else { addr.to_string() }
}

/// Whether a HOST:PORT address can be reached only from this machine: a loopback IP or `localhost`. Any other host
/// name counts as reachable, since it may resolve to anything.
pub fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The client address with its port raised by [`PEER_PORT_OFFSET`] (port 0 stays 0: pick any free port).
fn default_peer_listen(listen: &str) -> Result<String, ConfigError> {
    let (host, port) = listen
        .rsplit_once(':')
        .ok_or_else(|| ConfigError::Invalid { setting: "listen", reason: format!("'{listen}' is not HOST:PORT") })?;
    let port: u16 = port
        .parse()
        .map_err(|_| ConfigError::Invalid { setting: "listen", reason: format!("'{listen}' has no valid port") })?;
    let peer = if port == 0 {
        0
    } else {
        port.checked_add(PEER_PORT_OFFSET).ok_or_else(|| ConfigError::Invalid {
            setting: "peer_listen",
            reason: format!("client port {port} + {PEER_PORT_OFFSET} exceeds 65535; set peer_listen"),
        })?
    };
    Ok(format!("{host}:{peer}"))
}

/// Three settings that only work together (a TLS listener or peer TLS): all of them, or none.
fn all_or_none<A, B, C>(
    setting: &'static str,
    reason: &str,
    values: (Option<A>, Option<B>, Option<C>),
) -> Result<Option<(A, B, C)>, ConfigError> {
    match values {
        (None, None, None) => Ok(None),
        (Some(a), Some(b), Some(c)) => Ok(Some((a, b, c))),
        _ => Err(ConfigError::Invalid { setting, reason: reason.into() }),
    }
}

/// `args` (flags and environment) laid over the config file at `path`: each setting the arguments leave unset
/// comes from the file. One struct reads both, so a setting is declared once.
fn layered(args: &ServeArgs, path: &Path) -> Result<ServeArgs, ConfigError> {
    let parse = |message: String| ConfigError::Parse { path: path.display().to_string(), message };
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
    // The file on its own first: a bad value in it is an error even where a flag overrides it.
    let _checked: ServeArgs = toml::from_str(&text).map_err(|e: toml::de::Error| parse(e.to_string()))?;
    let mut merged: toml::Table = toml::from_str(&text).map_err(|e: toml::de::Error| parse(e.to_string()))?;
    // Unset arguments serialize to nothing, so only what flags or the environment set overrides the file.
    let set = toml::Table::try_from(args).map_err(|e| parse(format!("settings do not serialize: {e}")))?;
    merged.extend(set);
    let mut out: ServeArgs = merged.try_into().map_err(|e: toml::de::Error| parse(e.to_string()))?;
    out.config = args.config.clone();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ServeArgs {
        ServeArgs { node_id: Some("n1".into()), data_dir: Some("/tmp/x".into()), ..Default::default() }
    }

    #[test]
    fn defaults() {
        let c = Config::resolve(&args()).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.durability, Durability::Os);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.cluster.peer_listen, "127.0.0.1:17001");
        assert_eq!(c.cluster.quorum, Quorum { n: 3, r: 2, w: 2 });
        let mut a = args();
        a.r = Some(4);
        assert!(Config::resolve(&a).is_err(), "R > N is refused");
    }

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "node_id = \"file-node\"\nlisten = \"127.0.0.1:9000\"\ndurability = \"fsync\"\n")
            .unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        a.listen = Some("127.0.0.1:9100".into());
        let c = Config::resolve(&a).unwrap();
        assert_eq!(c.node_id, "n1");
        assert_eq!(c.listen, "127.0.0.1:9100");
        assert_eq!(c.durability, Durability::Fsync);

        std::fs::write(&path, "listen = 5\n").unwrap();
        assert!(matches!(Config::resolve(&a), Err(ConfigError::Parse { .. })));
        std::fs::write(&path, "no_such_setting = 1\n").unwrap();
        assert!(matches!(Config::resolve(&a), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn worker_threads_default_to_the_runtime_s_choice_and_zero_is_refused() {
        assert_eq!(Config::resolve(&args()).unwrap().worker_threads, None);
        let mut a = args();
        a.worker_threads = Some(1);
        assert_eq!(Config::resolve(&a).unwrap().worker_threads, Some(1));
        // The flag's parser refuses 0; a config file's value is checked by `validate`.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "worker_threads = 0\n").unwrap();
        let err = Config::resolve(&args_with(&path)).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { setting: "worker_threads", .. }), "{err}");
        assert!(<Cli as clap::Parser>::try_parse_from(["t", "--worker-threads", "0"]).is_err());
        let parsed = <Cli as clap::Parser>::try_parse_from(["t", "--worker-threads", "3"]).unwrap();
        assert_eq!(parsed.args.worker_threads, Some(3));
    }

    /// The serve flags alone, for parser checks.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn rejects_bad_values() {
        let mut a = args();
        a.node_id = Some("bad id".into());
        assert!(Config::resolve(&a).is_err());
        let mut a = args();
        a.sibling_soft_limit = Some(10);
        a.sibling_hard_limit = Some(5);
        assert!(Config::resolve(&a).is_err());
        let mut a = args();
        a.node_id = None;
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("--node-id") && err.contains("DYNAMO_KV_NODE_ID"), "{err}");
    }

    #[test]
    fn peer_tls_from_the_file_with_a_flag_overriding_one_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let toml = "peer_tls_cert_file = \"/pki/n1.pem\"\npeer_tls_key_file = \"/pki/n1.key\"\n\
                    peer_tls_ca_file = \"/pki/ca.pem\"\n";
        std::fs::write(&path, toml).unwrap();
        let mut a = args();
        a.config = Some(path.clone());
        a.peer_tls_ca_file = Some("/other/ca.pem".into());
        let files = Config::resolve(&a).unwrap().cluster.peer_tls.expect("peer TLS configured");
        assert_eq!(files.cert_file, PathBuf::from("/pki/n1.pem"));
        assert_eq!(files.ca_file, PathBuf::from("/other/ca.pem"));
        std::fs::write(&path, "peer_tls_cert_file = \"/pki/n1.pem\"\n").unwrap();
        let err = Config::resolve(&args_with(&path)).unwrap_err().to_string();
        assert!(err.contains("peer TLS needs all three"), "{err}");
    }

    fn args_with(config: &Path) -> ServeArgs {
        ServeArgs { config: Some(config.to_path_buf()), ..args() }
    }

    #[test]
    fn an_open_cluster_needs_loopback_or_an_explicit_choice() {
        let mut a = args();
        a.listen = Some("0.0.0.0:7001".into());
        a.peer_advertise = Some("10.0.0.1:17001".into());
        let err = Config::resolve(&a).unwrap_err().to_string();
        assert!(err.contains("--cluster-secret") && err.contains("--insecure-open-cluster"), "{err}");
        a.cluster_secret = Some("s3cret".into());
        assert!(Config::resolve(&a).is_ok(), "a secret closes the cluster");
        a.cluster_secret = None;
        a.insecure_open_cluster = Some(true);
        assert!(Config::resolve(&a).unwrap().cluster.insecure_open_cluster, "open on purpose");
        // An address only this machine reaches needs no secret, whatever the advertised one says about loopback.
        let mut a = args();
        a.peer_advertise = Some("localhost:17001".into());
        assert!(Config::resolve(&a).is_ok());
        a.peer_advertise = Some("db1.example:17001".into());
        assert!(Config::resolve(&a).is_err(), "a host name may resolve beyond loopback");
        assert!(is_loopback("[::1]:17001") && !is_loopback("[::]:17001"));
    }

    #[test]
    fn protected_mode_on_by_default_and_metrics_on_loopback_for_a_bare_port() {
        let c = Config::resolve(&args()).unwrap();
        assert!(c.protected_mode);
        let mut a = args();
        a.protected_mode = Some(false);
        a.metrics_listen = Some("9100".into());
        let c = Config::resolve(&a).unwrap();
        assert!(!c.protected_mode);
        assert_eq!(c.metrics_listen.as_deref(), Some("127.0.0.1:9100"));
    }

    #[test]
    fn access_levels_order_and_full_means_admin() {
        assert!(Access::Read < Access::Write && Access::Write < Access::Admin);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        let users = "[[users]]\nname = \"ops\"\npassword = \"p\"\naccess = \"full\"\n\n\
                     [[users]]\nname = \"app\"\npassword = \"q\"\naccess = \"write\"\nvalues = \"plain\"\n";
        std::fs::write(&path, users).unwrap();
        let c = Config::resolve(&args_with(&path)).unwrap();
        assert_eq!(c.users.iter().map(|u| u.access).collect::<Vec<_>>(), vec![Access::Admin, Access::Write]);
        assert_eq!(c.users.iter().map(|u| u.values).collect::<Vec<_>>(), vec![None, Some(ValueMode::Plain)]);
        assert_eq!((c.values, c.plain_siblings), (ValueMode::Versioned, PlainSiblings::Error));
    }
}
