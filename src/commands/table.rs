//! The command table: arity and flags as Redis reports them in `COMMAND INFO`, docs as in `COMMAND DOCS`.

/// One argument, as `COMMAND DOCS` describes it (redis-cli builds its hints from these).
#[derive(Debug)]
pub struct Arg {
    /// Argument name.
    pub name: &'static str,
    /// Redis's argument type: key, string, integer, pure-token.
    pub kind: &'static str,
    /// A literal token that precedes the value, if any (`CONTEXT`).
    pub token: Option<&'static str>,
    /// May be left out.
    pub optional: bool,
    /// May repeat.
    pub multiple: bool,
}

/// One command.
#[derive(Debug)]
pub struct CommandSpec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity: N means exactly N arguments (name included), -N at least N.
    pub arity: i64,
    /// Redis command flags.
    pub flags: &'static [&'static str],
    /// Position of the first key (0: none).
    pub first_key: i64,
    /// Position of the last key (-1: the last argument).
    pub last_key: i64,
    /// Step between keys.
    pub step: i64,
    /// One-line summary.
    pub summary: &'static str,
    /// Redis group.
    pub group: &'static str,
    /// Complexity, as Redis documents it.
    pub complexity: &'static str,
    /// Arguments after the name.
    pub args: &'static [Arg],
}

impl CommandSpec {
    /// True when `n` arguments (name included) satisfy the arity.
    pub fn arity_ok(&self, n: usize) -> bool {
        let n = n as i64;
        if self.arity >= 0 { n == self.arity } else { n >= -self.arity }
    }

    /// Commands a client may send before AUTH (Redis's `no-auth` flag).
    pub fn allowed_before_auth(&self) -> bool {
        self.flags.contains(&"no_auth")
    }

    /// The access level a user needs to run it: `admin` for administrative commands (membership, repair, debug
    /// views), `write` for data commands that write, `read` for the rest.
    pub fn required_access(&self) -> crate::config::Access {
        use crate::config::Access;
        if self.flags.contains(&"admin") {
            Access::Admin
        } else if self.flags.contains(&"write") {
            Access::Write
        } else {
            Access::Read
        }
    }
}

const fn arg(name: &'static str, kind: &'static str) -> Arg {
    Arg { name, kind, token: None, optional: false, multiple: false }
}
const fn opt(name: &'static str, kind: &'static str, token: &'static str) -> Arg {
    Arg { name, kind, token: Some(token), optional: true, multiple: false }
}
const fn many(name: &'static str, kind: &'static str) -> Arg {
    Arg { name, kind, token: None, optional: false, multiple: true }
}
const fn optional(name: &'static str, kind: &'static str) -> Arg {
    Arg { name, kind, token: None, optional: true, multiple: false }
}

/// Every command this node serves.
pub static TABLE: &[CommandSpec] = &[
    CommandSpec {
        name: "get",
        arity: -2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        summary: "Returns [siblings, context]: every causally-concurrent value of the key and the context to write back with.",
        group: "string",
        complexity: "O(siblings)",
        args: &[arg("key", "key"), opt("r", "integer", "R")],
    },
    CommandSpec {
        name: "set",
        arity: -3,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: 1,
        step: 1,
        summary: "Writes a value superseding what CONTEXT covers (without CONTEXT: every version this node holds); NX/XX: only if a quorum read finds the key absent/present.",
        group: "string",
        complexity: "O(siblings)",
        args: &[
            arg("key", "key"),
            arg("value", "string"),
            opt("context", "string", "CONTEXT"),
            opt("condition", "pure-token", "NX|XX"),
            opt("w", "integer", "W"),
        ],
    },
    CommandSpec {
        name: "setnx",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        summary: "SET NX answering 1 or 0: writes when a quorum read finds no value (not a lock: see SET NX).",
        group: "string",
        complexity: "O(siblings)",
        args: &[arg("key", "key"), arg("value", "string")],
    },
    CommandSpec {
        name: "type",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        summary: "The key's type: string when it has a live value, none otherwise.",
        group: "generic",
        complexity: "O(1)",
        args: &[arg("key", "key")],
    },
    CommandSpec {
        name: "strlen",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        summary: "The length of the value a plain-mode GET answers (0 when missing; siblings as plain_siblings says).",
        group: "string",
        complexity: "O(1)",
        args: &[arg("key", "key")],
    },
    CommandSpec {
        name: "mget",
        arity: -2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: -1,
        step: 1,
        summary: "Reads keys concurrently: per key what GET answers in this connection's mode (versioned: [siblings, context]; plain: the value or nil).",
        group: "string",
        complexity: "O(keys)",
        args: &[many("key", "key")],
    },
    CommandSpec {
        name: "mset",
        arity: -3,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: -1,
        step: 2,
        summary: "Writes each pair as SET without CONTEXT, concurrently; not atomic across keys.",
        group: "string",
        complexity: "O(keys)",
        args: &[many("key value", "string")],
    },
    CommandSpec {
        name: "del",
        arity: -2,
        flags: &["write"],
        first_key: 1,
        last_key: -1,
        step: 1,
        summary: "Deletes keys blindly (a tombstone superseding every version this node holds); returns how many had a value.",
        group: "generic",
        complexity: "O(keys)",
        args: &[many("key", "key")],
    },
    CommandSpec {
        name: "unlink",
        arity: -2,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: -1,
        step: 1,
        summary: "The same as DEL (deletes are tombstone writes; nothing is freed in the background).",
        group: "generic",
        complexity: "O(keys)",
        args: &[many("key", "key")],
    },
    CommandSpec {
        name: "delctx",
        arity: -3,
        flags: &["write"],
        first_key: 1,
        last_key: 1,
        step: 1,
        summary: "Deletes exactly the versions a context covers (a versioned tombstone); returns 1 if a live value was superseded.",
        group: "generic",
        complexity: "O(siblings)",
        args: &[arg("key", "key"), arg("context", "string"), opt("w", "integer", "W")],
    },
    CommandSpec {
        name: "exists",
        arity: -2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: -1,
        step: 1,
        summary: "Counts the given keys that have at least one live value.",
        group: "generic",
        complexity: "O(keys)",
        args: &[many("key", "key")],
    },
    CommandSpec {
        name: "scan",
        arity: -2,
        flags: &["readonly"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Iterates the whole cluster's keys from a cursor (a ring position); any node continues a scan.",
        group: "generic",
        complexity: "O(1) for every call. O(N) for a complete iteration.",
        args: &[
            arg("cursor", "integer"),
            opt("pattern", "pattern", "MATCH"),
            opt("count", "integer", "COUNT"),
            opt("type", "string", "TYPE"),
        ],
    },
    CommandSpec {
        name: "keys",
        arity: 2,
        flags: &["readonly"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Every key of the cluster matching a pattern: a full scan (use SCAN on a large keyspace).",
        group: "generic",
        complexity: "O(N) with N the number of keys in the cluster.",
        args: &[arg("pattern", "pattern")],
    },
    CommandSpec {
        name: "randomkey",
        arity: 1,
        flags: &["readonly"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "A key of the cluster from a random cursor on, or nil when there is none.",
        group: "generic",
        complexity: "O(1) on a populated keyspace.",
        args: &[],
    },
    CommandSpec {
        name: "dbsize",
        arity: 1,
        flags: &["readonly", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Number of keys with a live value stored on this node (local count, not cluster-wide).",
        group: "server",
        complexity: "O(1)",
        args: &[],
    },
    CommandSpec {
        name: "memory",
        arity: -2,
        flags: &["readonly"],
        first_key: 2,
        last_key: 2,
        step: 1,
        summary: "MEMORY USAGE key [SAMPLES n]: bytes the key takes on each replica (an estimate from a quorum read).",
        group: "server",
        complexity: "O(siblings)",
        args: &[arg("subcommand", "string"), optional("key", "key")],
    },
    CommandSpec {
        name: "slowlog",
        arity: -2,
        flags: &["admin"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "SLOWLOG GET [count] | LEN | RESET: commands slower than slowlog_log_slower_than microseconds.",
        group: "server",
        complexity: "O(entries)",
        args: &[arg("subcommand", "string"), optional("count", "integer")],
    },
    CommandSpec {
        name: "ping",
        arity: -1,
        flags: &["fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Returns PONG, or the message.",
        group: "connection",
        complexity: "O(1)",
        args: &[optional("message", "string")],
    },
    CommandSpec {
        name: "echo",
        arity: 2,
        flags: &["fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Returns the message.",
        group: "connection",
        complexity: "O(1)",
        args: &[arg("message", "string")],
    },
    CommandSpec {
        name: "quit",
        arity: -1,
        flags: &["no_auth", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Closes the connection.",
        group: "connection",
        complexity: "O(1)",
        args: &[],
    },
    CommandSpec {
        name: "cluster",
        arity: -2,
        flags: &["loading", "stale"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "The slot map for cluster clients: SLOTS, SHARDS, NODES, INFO, MYID, KEYSLOT key.",
        group: "cluster",
        complexity: "O(N) where N is the number of slot ranges",
        args: &[arg("subcommand", "string"), optional("argument", "string")],
    },
    CommandSpec {
        name: "time",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "The node's clock: seconds and microseconds since the Unix epoch.",
        group: "server",
        complexity: "O(1)",
        args: &[],
    },
    CommandSpec {
        name: "latency",
        arity: -2,
        flags: &["admin", "noscript", "loading", "stale"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "No latency monitor runs: LATEST and HISTORY are empty (see the Prometheus histograms).",
        group: "server",
        complexity: "O(1)",
        args: &[arg("subcommand", "string"), optional("event", "string")],
    },
    CommandSpec {
        name: "readonly",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Does nothing: every node serves reads of every key.",
        group: "cluster",
        complexity: "O(1)",
        args: &[],
    },
    CommandSpec {
        name: "readwrite",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Does nothing: every node serves reads of every key.",
        group: "cluster",
        complexity: "O(1)",
        args: &[],
    },
    CommandSpec {
        name: "asking",
        arity: 1,
        flags: &["fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Does nothing: no slot is ever migrating away from a node that serves it.",
        group: "cluster",
        complexity: "O(1)",
        args: &[],
    },
    CommandSpec {
        name: "multi",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Starts a transaction: later commands are queued until EXEC (no isolation across keys).",
        group: "transactions",
        complexity: "O(1)",
        args: &[],
    },
    CommandSpec {
        name: "exec",
        arity: 1,
        flags: &["noscript", "loading", "stale", "skip_slowlog"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Runs the queued commands in order; EXECABORT (nothing run) after an error while queuing.",
        group: "transactions",
        complexity: "Depends on the queued commands",
        args: &[],
    },
    CommandSpec {
        name: "discard",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Drops the queued commands.",
        group: "transactions",
        complexity: "O(N) where N is the number of queued commands",
        args: &[],
    },
    CommandSpec {
        name: "watch",
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 1,
        last_key: -1,
        step: 1,
        summary: "Refused: a leaderless store cannot check at EXEC that a key is unchanged; use CONTEXT tokens.",
        group: "transactions",
        complexity: "O(1)",
        args: &[many("key", "key")],
    },
    CommandSpec {
        name: "unwatch",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Does nothing: no key is ever watched.",
        group: "transactions",
        complexity: "O(1)",
        args: &[],
    },
    CommandSpec {
        name: "select",
        arity: 2,
        flags: &["fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Selects database 0 (the only one).",
        group: "connection",
        complexity: "O(1)",
        args: &[arg("index", "integer")],
    },
    CommandSpec {
        name: "auth",
        arity: -2,
        flags: &["no_auth", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Authenticates the connection.",
        group: "connection",
        complexity: "O(1)",
        args: &[optional("username", "string"), arg("password", "string")],
    },
    CommandSpec {
        name: "acl",
        arity: -2,
        flags: &["fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "ACL WHOAMI: the user this connection runs as.",
        group: "server",
        complexity: "O(1)",
        args: &[arg("subcommand", "string")],
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        flags: &["no_auth", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Negotiates RESP2 or RESP3, optionally authenticating and naming the connection.",
        group: "connection",
        complexity: "O(1)",
        args: &[optional("protover", "integer"), opt("auth", "string", "AUTH"), opt("clientname", "string", "SETNAME")],
    },
    CommandSpec {
        name: "client",
        arity: -2,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "CLIENT ID | SETNAME name | GETNAME | SETINFO LIB-NAME|LIB-VER value | VALUES [PLAIN|VERSIONED].",
        group: "connection",
        complexity: "O(1)",
        args: &[arg("subcommand", "string"), optional("arg", "string")],
    },
    CommandSpec {
        name: "command",
        arity: -1,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "COMMAND [COUNT | LIST | INFO name... | DOCS name...]: describes the commands.",
        group: "server",
        complexity: "O(commands)",
        args: &[optional("subcommand", "string")],
    },
    CommandSpec {
        name: "config",
        arity: -2,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "CONFIG GET pattern...: reads settings (they are set by flags, environment or the config file).",
        group: "server",
        complexity: "O(settings)",
        args: &[arg("subcommand", "string"), many("pattern", "string")],
    },
    CommandSpec {
        name: "info",
        arity: -1,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "Server, clients, stats, keyspace and dynamo sections, Redis-style.",
        group: "server",
        complexity: "O(1)",
        args: &[optional("section", "string")],
    },
    CommandSpec {
        name: "admin",
        arity: -2,
        flags: &["admin"],
        first_key: 0,
        last_key: 0,
        step: 0,
        summary: "ADMIN MEMBERS | RING | KEY key | LOCALGET key | STATUS | JOIN seed | LEAVE | REMOVE id | PLAN | COMMIT | REPAIR: cluster views, membership changes, anti-entropy.",
        group: "server",
        complexity: "O(partitions)",
        args: &[arg("subcommand", "string"), optional("key", "key")],
    },
];

/// Finds a command by lower-case name.
pub fn lookup(name: &str) -> Option<&'static CommandSpec> {
    TABLE.iter().find(|c| c.name == name)
}
