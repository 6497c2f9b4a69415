//! The session commands (connection, keyspace and server commands) parsed into a typed [`Call`] before they run,
//! as the data commands are ([`super::parse::Command`]): every argument and subcommand is read here and refused in
//! Redis's words, and the handlers take typed values. What a handler still checks is what depends on the node or
//! the session (a password, the key limit's reply order), never the shape of the request.
//! CLIENT, CLUSTER and ADMIN read theirs with their handlers ([`ClientCall`], [`ClusterCall`], [`AdminCall`]).

use bytes::Bytes;

use super::admin::AdminCall;
use super::client::ClientCall;
use super::cluster::ClusterCall;
use super::table::SessionCommand;
use super::{Session, printable, syntax_error, wrong_arity};
use crate::config::Limits;
use crate::resp::{Protocol, Reply};

/// A session command with its arguments read.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// DBSIZE.
    DbSize,
    /// SCAN cursor [MATCH pattern] [COUNT n] [TYPE type].
    Scan(Scan),
    /// KEYS pattern.
    Keys {
        /// The glob.
        pattern: Bytes,
    },
    /// RANDOMKEY.
    RandomKey,
    /// PING [message].
    Ping {
        /// Echoed instead of PONG.
        message: Option<Bytes>,
    },
    /// ECHO message.
    Echo {
        /// Echoed.
        message: Bytes,
    },
    /// QUIT.
    Quit,
    /// SELECT index.
    Select {
        /// The database asked for (only 0 exists).
        index: i64,
    },
    /// AUTH [username] password.
    Auth {
        /// The user (`default` without one).
        user: Option<Bytes>,
        /// The password.
        pass: Bytes,
    },
    /// ACL WHOAMI.
    AclWhoAmI,
    /// HELLO [protover [AUTH username password] [SETNAME clientname]].
    Hello(Hello),
    /// TIME.
    Time,
    /// LATENCY LATEST | HISTORY event: no events are kept.
    LatencyEvents,
    /// LATENCY RESET.
    LatencyReset,
    /// SLOWLOG GET [count] | LEN | RESET.
    SlowLog(SlowLogCall),
    /// MEMORY USAGE key [SAMPLES n].
    MemoryUsage {
        /// The key.
        key: Bytes,
    },
    /// COMMAND [COUNT | LIST | INFO [name ...] | DOCS [name ...]].
    Command(Commands),
    /// MULTI.
    Multi,
    /// EXEC.
    Exec,
    /// DISCARD.
    Discard,
    /// WATCH key [key ...].
    Watch,
    /// READONLY, READWRITE, ASKING, UNWATCH: answered OK with nothing to do.
    Accepted,
    /// CONFIG GET pattern [pattern ...].
    ConfigGet {
        /// Globs over the settings' names.
        patterns: Vec<Bytes>,
    },
    /// CONFIG RESETSTAT: nothing keeps statistics to reset (the metrics are counters for Prometheus).
    ConfigResetStat,
    /// INFO [section ...].
    Info {
        /// The sections asked for, lowercased (none: the default ones).
        sections: Vec<String>,
    },
    /// CLIENT and its subcommands.
    Client(ClientCall),
    /// CLUSTER and its subcommands.
    Cluster(ClusterCall),
    /// ADMIN and its subcommands.
    Admin(AdminCall),
}

/// SCAN's arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Scan {
    /// Where the page starts (a ring position).
    pub cursor: u64,
    /// MATCH.
    pub pattern: Option<Bytes>,
    /// COUNT (10 without one, as in Redis).
    pub count: usize,
    /// TYPE, by Redis's name.
    pub only_type: Option<&'static str>,
}

/// HELLO's arguments.
#[derive(Clone, Debug, PartialEq)]
pub struct Hello {
    /// The protocol asked for (none: keep the session's).
    pub protocol: Option<Protocol>,
    /// AUTH username password.
    pub auth: Option<(Bytes, Bytes)>,
    /// SETNAME clientname.
    pub setname: Option<Bytes>,
}

/// SLOWLOG's subcommands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlowLogCall {
    /// GET [count]: the newest `count` entries (all for -1).
    Get(usize),
    /// LEN.
    Len,
    /// RESET.
    Reset,
}

/// COMMAND's subcommands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Commands {
    /// COMMAND: every command's info.
    All,
    /// COUNT.
    Count,
    /// LIST.
    List,
    /// INFO [name ...] (no names: every command).
    Info(Vec<Bytes>),
    /// DOCS [name ...] (no names: every command).
    Docs(Vec<Bytes>),
}

/// Key types SCAN's TYPE knows (Redis's names; counters are strings).
const SCAN_TYPES: &[&str] = &["string", "list", "set", "zset", "hash", "stream"];

/// SCAN's COUNT when none is given, as in Redis.
const SCAN_DEFAULT_COUNT: usize = 10;

impl Call {
    /// Reads a session command's arguments (`args[0]` is its name; the table checked its arity, so a command of
    /// fixed arity has its arguments).
    pub fn parse(command: SessionCommand, args: &[Bytes], limits: &Limits, session: &Session) -> Result<Call, Reply> {
        use SessionCommand as S;
        Ok(match command {
            S::DbSize => Call::DbSize,
            S::RandomKey => Call::RandomKey,
            S::Quit => Call::Quit,
            S::Time => Call::Time,
            S::Multi => Call::Multi,
            S::Exec => Call::Exec,
            S::Discard => Call::Discard,
            S::Watch => Call::Watch,
            S::Accepted => Call::Accepted,
            S::Cluster => Call::Cluster(ClusterCall::parse(args)?),
            S::Admin => Call::Admin(AdminCall::parse(args, limits)?),
            S::Client => Call::Client(ClientCall::parse(session, args)?),
            S::Config => config(args)?,
            S::Info => Call::Info {
                sections: args[1..].iter().map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect(),
            },
            S::Scan => Call::Scan(scan(args)?),
            S::Keys => Call::Keys { pattern: args[1].clone() },
            S::Ping => match args.len() {
                1 | 2 => Call::Ping { message: args.get(1).cloned() },
                _ => return Err(wrong_arity("ping")),
            },
            S::Echo => Call::Echo { message: args[1].clone() },
            S::Select => Call::Select { index: super::parse_int(&args[1])? },
            S::Auth => match args {
                [_, pass] => Call::Auth { user: None, pass: pass.clone() },
                [_, user, pass] => Call::Auth { user: Some(user.clone()), pass: pass.clone() },
                _ => return Err(syntax_error()),
            },
            S::Acl => match (args[1].to_ascii_uppercase().as_slice(), args.len()) {
                (b"WHOAMI", 2) => Call::AclWhoAmI,
                _ => {
                    return Err(Reply::error(format!(
                        "ERR unknown subcommand '{}'. Try ACL WHOAMI; users are defined in the config file",
                        printable(&args[1], 32)
                    )));
                }
            },
            S::Hello => Call::Hello(hello(args)?),
            S::Latency => match (args[1].to_ascii_uppercase().as_slice(), args.len()) {
                (b"LATEST", 2) | (b"HISTORY", 3) => Call::LatencyEvents,
                (b"RESET", _) => Call::LatencyReset,
                (b"LATEST" | b"HISTORY", _) => return Err(wrong_arity("latency")),
                _ => {
                    return Err(Reply::error(format!(
                        "ERR unknown subcommand '{}'. Try LATENCY LATEST, HISTORY event or RESET.",
                        printable(&args[1], 32)
                    )));
                }
            },
            S::SlowLog => Call::SlowLog(slowlog(args)?),
            S::Memory => memory(args, limits)?,
            S::Command => Call::Command(commands(args)?),
        })
    }
}

/// SCAN cursor [MATCH pattern] [COUNT n] [TYPE type].
fn scan(args: &[Bytes]) -> Result<Scan, Reply> {
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Reply::error("ERR invalid cursor"))?;
    let mut scan = Scan { cursor, pattern: None, count: SCAN_DEFAULT_COUNT, only_type: None };
    for option in args[2..].chunks(2) {
        let [name, value] = option else { return Err(syntax_error()) };
        match name.to_ascii_uppercase().as_slice() {
            b"MATCH" => scan.pattern = Some(value.clone()),
            b"COUNT" => match super::parse_int(value)? {
                n if n >= 1 => scan.count = n as usize,
                _ => return Err(syntax_error()),
            },
            b"TYPE" => {
                let name = value.to_ascii_lowercase();
                let known = SCAN_TYPES.iter().find(|t| t.as_bytes() == name.as_slice());
                scan.only_type = Some(
                    known.ok_or_else(|| Reply::error(format!("ERR unknown type name '{}'", printable(value, 32))))?,
                );
            }
            _ => return Err(syntax_error()),
        }
    }
    Ok(scan)
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]].
fn hello(args: &[Bytes]) -> Result<Hello, Reply> {
    let protocol = match args.get(1).map(|a| super::parse_int(a)) {
        None => None,
        Some(Ok(2)) => Some(Protocol::Resp2),
        Some(Ok(3)) => Some(Protocol::Resp3),
        Some(Ok(_)) => return Err(Reply::error("NOPROTO unsupported protocol version")),
        Some(Err(_)) => return Err(Reply::error("ERR Protocol version is not an integer or out of range")),
    };
    let mut hello = Hello { protocol, auth: None, setname: None };
    let mut i = 2;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"AUTH" if i + 2 < args.len() => {
                hello.auth = Some((args[i + 1].clone(), args[i + 2].clone()));
                i += 3;
            }
            b"SETNAME" if i + 1 < args.len() => {
                hello.setname = Some(args[i + 1].clone());
                i += 2;
            }
            _ => return Err(Reply::error(format!("ERR Syntax error in HELLO option '{}'", printable(&args[i], 32)))),
        }
    }
    Ok(hello)
}

/// CONFIG GET pattern [pattern ...] | RESETSTAT; CONFIG SET is refused: settings come from flags, the environment
/// or the config file.
fn config(args: &[Bytes]) -> Result<Call, Reply> {
    match args[1].to_ascii_uppercase().as_slice() {
        b"GET" if args.len() >= 3 => Ok(Call::ConfigGet { patterns: args[2..].to_vec() }),
        b"GET" => Err(wrong_arity("config|get")),
        b"SET" => Err(Reply::error(
            "ERR CONFIG SET is not supported: settings come from flags, DYNAMO_KV_* environment variables or the \
             config file, and take effect at restart",
        )),
        b"RESETSTAT" => Ok(Call::ConfigResetStat),
        _ => Err(Reply::error(format!("ERR unknown subcommand '{}'. Try CONFIG GET.", printable(&args[1], 32)))),
    }
}

/// SLOWLOG GET [count] | LEN | RESET.
fn slowlog(args: &[Bytes]) -> Result<SlowLogCall, Reply> {
    match (args[1].to_ascii_uppercase().as_slice(), args.len()) {
        (b"GET", 2) => Ok(SlowLogCall::Get(10)),
        (b"GET", 3) => match super::parse_int(&args[2]) {
            Ok(-1) => Ok(SlowLogCall::Get(usize::MAX)),
            Ok(n) if n >= 0 => Ok(SlowLogCall::Get(n as usize)),
            _ => Err(Reply::error("ERR count should be greater than or equal to -1")),
        },
        (b"LEN", 2) => Ok(SlowLogCall::Len),
        (b"RESET", 2) => Ok(SlowLogCall::Reset),
        (b"GET" | b"LEN" | b"RESET", _) => Err(wrong_arity("slowlog")),
        _ => Err(Reply::error(format!(
            "ERR unknown subcommand '{}'. Try SLOWLOG GET [count], LEN or RESET.",
            printable(&args[1], 32)
        ))),
    }
}

/// MEMORY USAGE key [SAMPLES n] (every row is counted, so SAMPLES changes nothing).
fn memory(args: &[Bytes], limits: &Limits) -> Result<Call, Reply> {
    if !args[1].eq_ignore_ascii_case(b"USAGE") {
        return Err(Reply::error(format!(
            "ERR unknown subcommand '{}'. Try MEMORY USAGE key.",
            printable(&args[1], 32)
        )));
    }
    let Some(key) = args.get(2) else { return Err(wrong_arity("memory|usage")) };
    match args.len() {
        3 => {}
        5 if args[3].eq_ignore_ascii_case(b"SAMPLES") && super::parse_int(&args[4]).is_ok() => {}
        _ => return Err(syntax_error()),
    }
    super::parse::key_within(limits, key)?;
    Ok(Call::MemoryUsage { key: key.clone() })
}

/// COMMAND [COUNT | LIST | INFO [name ...] | DOCS [name ...]].
fn commands(args: &[Bytes]) -> Result<Commands, Reply> {
    let Some(sub) = args.get(1) else { return Ok(Commands::All) };
    match (sub.to_ascii_uppercase().as_slice(), args.len()) {
        (b"COUNT", 2) => Ok(Commands::Count),
        (b"LIST", 2) => Ok(Commands::List),
        (b"INFO", _) => Ok(Commands::Info(args[2..].to_vec())),
        (b"DOCS", _) => Ok(Commands::Docs(args[2..].to_vec())),
        (b"COUNT" | b"LIST", _) => Err(wrong_arity("command")),
        _ => Err(Reply::error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND COUNT, LIST, INFO or DOCS.",
            printable(sub, 32)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Result<Call, Reply> {
        let args: Vec<Bytes> = words.iter().map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        let spec = super::super::table::lookup(&words[0].to_ascii_lowercase()).expect("a known command");
        let super::super::Run::Session(command) = spec.run else { panic!("{} is a data command", words[0]) };
        Call::parse(command, &args, &Limits::default(), &Session::new(1, false, crate::config::ValueMode::Versioned))
    }

    fn error(r: Result<Call, Reply>) -> String {
        match r {
            Err(Reply::Error(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn session_commands_parse_into_typed_calls() {
        assert_eq!(parse(&["PING"]).unwrap(), Call::Ping { message: None });
        assert_eq!(parse(&["ping", "hi"]).unwrap(), Call::Ping { message: Some(Bytes::from_static(b"hi")) });
        assert_eq!(parse(&["SELECT", "3"]).unwrap(), Call::Select { index: 3 });
        assert_eq!(
            parse(&["AUTH", "u", "p"]).unwrap(),
            Call::Auth { user: Some(Bytes::from_static(b"u")), pass: Bytes::from_static(b"p") }
        );
        assert_eq!(
            parse(&["SCAN", "5", "count", "7", "TYPE", "HASH", "MATCH", "a*"]).unwrap(),
            Call::Scan(Scan { cursor: 5, pattern: Some(Bytes::from_static(b"a*")), count: 7, only_type: Some("hash") })
        );
        assert_eq!(
            parse(&["HELLO", "3", "SETNAME", "n", "AUTH", "u", "p"]).unwrap(),
            Call::Hello(Hello {
                protocol: Some(Protocol::Resp3),
                auth: Some((Bytes::from_static(b"u"), Bytes::from_static(b"p"))),
                setname: Some(Bytes::from_static(b"n")),
            })
        );
        assert_eq!(parse(&["SLOWLOG", "get", "-1"]).unwrap(), Call::SlowLog(SlowLogCall::Get(usize::MAX)));
        assert_eq!(parse(&["COMMAND"]).unwrap(), Call::Command(Commands::All));
        assert_eq!(parse(&["COMMAND", "DOCS", "get"]).unwrap(), Call::Command(Commands::Docs(vec!["get".into()])));
        assert_eq!(parse(&["LATENCY", "HISTORY", "x"]).unwrap(), Call::LatencyEvents);
        assert_eq!(parse(&["MEMORY", "USAGE", "k", "SAMPLES", "5"]).unwrap(), Call::MemoryUsage { key: "k".into() });
        assert_eq!(parse(&["CLIENT", "ID"]).unwrap(), Call::Client(ClientCall::Id));
        assert_eq!(
            parse(&["CLIENT", "SETINFO", "lib-ver", "1.2"]).unwrap(),
            Call::Client(ClientCall::SetInfo { version: true, value: "1.2".into() })
        );
        assert_eq!(
            parse(&["CLIENT", "LIST", "ID", "3", "4"]).unwrap(),
            Call::Client(ClientCall::List { normal: true, ids: Some(vec![3, 4]) })
        );
        assert_eq!(
            parse(&["CLIENT", "KILL", "ID", "7", "SKIPME", "no"]).unwrap(),
            Call::Client(ClientCall::Kill(super::super::client::Kill::Filters {
                id: Some(7),
                addr: None,
                laddr: None,
                user: None,
                skipme: false,
                normal: true
            }))
        );
        assert_eq!(parse(&["CLUSTER", "INFO"]).unwrap(), Call::Cluster(ClusterCall::Info));
        assert_eq!(
            parse(&["CLUSTER", "getkeysinslot", "12", "5"]).unwrap(),
            Call::Cluster(ClusterCall::KeysInSlot { slot: 12, limit: Some(5) })
        );
        assert_eq!(parse(&["ADMIN", "key", "k"]).unwrap(), Call::Admin(AdminCall::Key("k".into())));
        assert_eq!(
            parse(&["CONFIG", "get", "a*", "b"]).unwrap(),
            Call::ConfigGet { patterns: vec!["a*".into(), "b".into()] }
        );
        assert_eq!(
            parse(&["INFO", "Server", "dynamo"]).unwrap(),
            Call::Info { sections: vec!["server".into(), "dynamo".into()] }
        );
    }

    #[test]
    fn malformed_session_commands_are_refused_in_redis_words() {
        assert_eq!(error(parse(&["PING", "a", "b"])), "ERR wrong number of arguments for 'ping' command");
        assert_eq!(error(parse(&["SELECT", "x"])), "ERR value is not an integer or out of range");
        assert_eq!(error(parse(&["AUTH", "a", "b", "c"])), "ERR syntax error");
        assert_eq!(error(parse(&["SCAN", "x"])), "ERR invalid cursor");
        assert_eq!(error(parse(&["SCAN", "0", "COUNT"])), "ERR syntax error");
        assert_eq!(error(parse(&["SCAN", "0", "COUNT", "0"])), "ERR syntax error");
        assert_eq!(error(parse(&["SCAN", "0", "TYPE", "blob"])), "ERR unknown type name 'blob'");
        assert_eq!(error(parse(&["HELLO", "4"])), "NOPROTO unsupported protocol version");
        assert_eq!(error(parse(&["HELLO", "3", "AUTH", "u"])), "ERR Syntax error in HELLO option 'AUTH'");
        assert_eq!(error(parse(&["SLOWLOG", "GET", "-2"])), "ERR count should be greater than or equal to -1");
        assert_eq!(error(parse(&["SLOWLOG", "LEN", "1"])), "ERR wrong number of arguments for 'slowlog' command");
        assert!(error(parse(&["ACL", "LIST"])).starts_with("ERR unknown subcommand 'LIST'"));
        assert!(error(parse(&["COMMAND", "X"])).starts_with("ERR unknown subcommand 'X'"));
        assert_eq!(error(parse(&["MEMORY", "USAGE"])), "ERR wrong number of arguments for 'memory|usage' command");
        assert_eq!(error(parse(&["MEMORY", "USAGE", "k", "SAMPLES", "x"])), "ERR syntax error");
        assert!(error(parse(&["LATENCY", "DOCTOR"])).starts_with("ERR unknown subcommand 'DOCTOR'"));
        assert_eq!(
            error(parse(&["CLIENT", "SETNAME", "a b"])),
            "ERR Client names cannot contain spaces, newlines or special characters."
        );
        assert_eq!(error(parse(&["CLIENT", "KILL", "ID", "x"])), "ERR client-id should be greater than 0");
        assert_eq!(error(parse(&["CLIENT", "ID", "x"])), "ERR wrong number of arguments for 'client|id' command");
        assert_eq!(error(parse(&["CLUSTER", "COUNTKEYSINSLOT", "16384"])), "ERR Invalid slot");
        assert_eq!(error(parse(&["CLUSTER", "GETKEYSINSLOT", "1", "-1"])), "ERR Invalid number of keys");
        assert_eq!(error(parse(&["CLUSTER", "SLOTS", "x"])), "ERR wrong number of arguments for 'cluster' command");
        assert_eq!(error(parse(&["ADMIN", "REMOVE"])), "ERR wrong number of arguments for 'admin' command");
        // A user without admin access is refused CLIENT KILL before its arguments are read, as Redis's ACL check is.
        let mut reader = Session::new(1, false, crate::config::ValueMode::Versioned);
        reader.access = crate::config::Access::Read;
        let kill: Vec<Bytes> = ["CLIENT", "KILL", "BOGUS", "x", "y"].iter().map(|w| Bytes::from(*w)).collect();
        assert!(error(Call::parse(SessionCommand::Client, &kill, &Limits::default(), &reader)).starts_with("NOPERM"));
        assert_eq!(error(parse(&["CONFIG", "GET"])), "ERR wrong number of arguments for 'config|get' command");
        assert!(error(parse(&["CONFIG", "SET", "maxmemory", "1"])).starts_with("ERR CONFIG SET is not supported"));
    }
}
