//! CLIENT ID | SETNAME | GETNAME | SETINFO | NO-EVICT | NO-TOUCH | MAINT_NOTIFICATIONS: what client libraries send
//! on connect; and CLIENT VALUES, which switches how this connection's GET and MGET answer.

use bytes::Bytes;

use super::{NodeContext, Session, printable, wrong_arity};
use crate::config::ValueMode;
use crate::resp::Reply;

/// A CLIENT subcommand with its arguments read.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientCall {
    /// LIST [TYPE type] [ID id ...]: `normal` is false for a type no connection here has.
    List {
        /// Only connections of the `normal` type (all of them are).
        normal: bool,
        /// Only these ids.
        ids: Option<Vec<u64>>,
    },
    /// INFO.
    Info,
    /// KILL addr, or KILL with filters.
    Kill(Kill),
    /// ID.
    Id,
    /// GETNAME.
    GetName,
    /// SETNAME name (checked).
    SetName(Bytes),
    /// SETINFO LIB-NAME | LIB-VER value.
    SetInfo {
        /// LIB-VER (else LIB-NAME).
        version: bool,
        /// The value (checked).
        value: Bytes,
    },
    /// NO-EVICT, NO-TOUCH, MAINT_NOTIFICATIONS: nothing is evicted, nothing tracks access times, and no
    /// maintenance moves a client's endpoint, so every client already gets what these ask for.
    Accepted,
    /// VALUES: this connection's value mode.
    ShowValues,
    /// VALUES PLAIN | VERSIONED.
    Values(ValueMode),
}

/// Which connections CLIENT KILL closes.
#[derive(Clone, Debug, PartialEq)]
pub enum Kill {
    /// The old form: the one with this address (an error when none has it).
    Addr(String),
    /// Every connection matching all the filters given.
    Filters {
        /// ID.
        id: Option<u64>,
        /// ADDR.
        addr: Option<String>,
        /// LADDR.
        laddr: Option<String>,
        /// USER.
        user: Option<String>,
        /// SKIPME (yes unless told no): not this connection.
        skipme: bool,
        /// TYPE normal (false: a type no connection here has).
        normal: bool,
    },
}

impl ClientCall {
    /// Reads CLIENT's subcommand and arguments. KILL needs `admin` access, checked first (as Redis's ACL check of
    /// `client|kill` comes before the command reads its arguments).
    pub fn parse(session: &Session, args: &[Bytes]) -> Result<ClientCall, Reply> {
        let sub = args[1].to_ascii_uppercase();
        Ok(match (sub.as_slice(), args.len()) {
            (b"LIST", _) => list_filters(args)?,
            (b"INFO", 2) => ClientCall::Info,
            (b"KILL", n) if n >= 3 => {
                if session.access < crate::config::Access::Admin {
                    return Err(Reply::error(format!(
                        "NOPERM User {} has no permissions to run the 'client|kill' command",
                        session.user
                    )));
                }
                ClientCall::Kill(kill_filters(args)?)
            }
            (b"ID", 2) => ClientCall::Id,
            (b"GETNAME", 2) => ClientCall::GetName,
            (b"SETNAME", 3) => {
                valid_name(&args[2])?;
                ClientCall::SetName(args[2].clone())
            }
            (b"SETINFO", 4) => {
                let value = args[3].clone();
                if value.iter().any(|&b| b == b' ' || b == b'\n' || b == b'\r') {
                    return Err(Reply::error("ERR lib-name and lib-ver cannot contain spaces or newlines"));
                }
                let version = match args[2].to_ascii_uppercase().as_slice() {
                    b"LIB-NAME" => false,
                    b"LIB-VER" => true,
                    _ => return Err(Reply::error(format!("ERR Unrecognized option '{}'", printable(&args[2], 32)))),
                };
                ClientCall::SetInfo { version, value }
            }
            (b"NO-EVICT" | b"NO-TOUCH", 3) => match args[2].to_ascii_uppercase().as_slice() {
                b"ON" | b"OFF" => ClientCall::Accepted,
                _ => return Err(super::syntax_error()),
            },
            // redis-py 8 asks for maintenance notifications on connect. Nodes never send any (no failover moves a
            // client's endpoint here), so accepting is true and keeps it from counting as a failed command.
            (b"MAINT_NOTIFICATIONS", n) if n >= 3 => ClientCall::Accepted,
            // VALUES alone tells the mode; with PLAIN or VERSIONED it switches this connection until the next AUTH.
            (b"VALUES", 2) => ClientCall::ShowValues,
            (b"VALUES", 3) => match args[2].to_ascii_uppercase().as_slice() {
                b"PLAIN" => ClientCall::Values(ValueMode::Plain),
                b"VERSIONED" => ClientCall::Values(ValueMode::Versioned),
                _ => {
                    return Err(Reply::error(format!(
                        "ERR CLIENT VALUES takes PLAIN or VERSIONED, not '{}'",
                        printable(&args[2], 32)
                    )));
                }
            },
            (
                b"ID"
                | b"GETNAME"
                | b"SETNAME"
                | b"SETINFO"
                | b"NO-EVICT"
                | b"NO-TOUCH"
                | b"MAINT_NOTIFICATIONS"
                | b"VALUES",
                _,
            ) => return Err(wrong_arity(&format!("client|{}", String::from_utf8_lossy(&sub).to_ascii_lowercase()))),
            _ => {
                return Err(Reply::error(format!(
                    "ERR unknown subcommand '{}'. Try CLIENT ID, SETNAME, GETNAME, SETINFO, LIST, INFO, KILL, \
                     NO-EVICT, NO-TOUCH, MAINT_NOTIFICATIONS or VALUES.",
                    printable(&args[1], 32)
                )));
            }
        })
    }
}

/// CLIENT subcommands.
pub fn client(node: &NodeContext, session: &mut Session, call: ClientCall) -> Reply {
    match call {
        ClientCall::List { normal, ids } => list(node, session, normal, ids),
        ClientCall::Info => info(node, session),
        ClientCall::Kill(kill) => self::kill(node, session, kill),
        ClientCall::Id => Reply::Integer(session.id as i64),
        ClientCall::GetName => session.name.clone().map_or(Reply::Nil, Reply::Bulk),
        ClientCall::SetName(name) => {
            session.name = (!name.is_empty()).then_some(name);
            Reply::ok()
        }
        ClientCall::SetInfo { version: false, value } => {
            session.lib_name = Some(value);
            Reply::ok()
        }
        ClientCall::SetInfo { version: true, value } => {
            session.lib_ver = Some(value);
            Reply::ok()
        }
        ClientCall::Accepted => Reply::ok(),
        ClientCall::ShowValues => Reply::bulk(session.values.as_str()),
        ClientCall::Values(mode) => {
            session.values = mode;
            Reply::ok()
        }
    }
}

/// Redis refuses connection names with spaces or newlines.
pub fn valid_name(name: &Bytes) -> Result<(), Reply> {
    if name.iter().any(|&b| b <= b' ' || b > b'~') {
        return Err(Reply::error("ERR Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}

/// The connected clients, for CLIENT LIST, INFO and KILL. The server registers each connection with its
/// addresses and a token that closes it; the connection refreshes what it shows after each batch of requests.
#[derive(Default)]
pub struct Clients {
    by_id: std::sync::Mutex<std::collections::BTreeMap<u64, ClientEntry>>,
}

/// One connected client.
#[derive(Clone, Debug)]
pub struct ClientEntry {
    /// The client's address.
    pub addr: String,
    /// The address it connected to.
    pub laddr: String,
    /// When it connected.
    pub connected: std::time::Instant,
    /// Cancelled to close the connection (CLIENT KILL).
    pub kill: tokio_util::sync::CancellationToken,
    /// What the connection last reported of itself.
    pub seen: ClientSeen,
}

/// What a connection reports of itself after each batch.
#[derive(Clone, Debug)]
pub struct ClientSeen {
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// The user it runs as.
    pub user: String,
    /// CLIENT SETINFO.
    pub lib_name: Option<Bytes>,
    /// CLIENT SETINFO.
    pub lib_ver: Option<Bytes>,
    /// The last command it ran (lower case).
    pub cmd: String,
    /// When it last sent a request.
    pub active: std::time::Instant,
    /// RESP version.
    pub resp: u8,
    /// Commands queued in MULTI, or -1 outside it.
    pub multi: i64,
}

impl Clients {
    /// Registers a new connection.
    pub fn register(&self, id: u64, addr: String, laddr: String, kill: tokio_util::sync::CancellationToken) {
        let now = std::time::Instant::now();
        let seen = ClientSeen {
            name: None,
            user: "default".into(),
            lib_name: None,
            lib_ver: None,
            cmd: "NULL".into(),
            active: now,
            resp: 2,
            multi: -1,
        };
        self.lock().insert(id, ClientEntry { addr, laddr, connected: now, kill, seen });
    }

    /// Forgets a closed connection.
    pub fn unregister(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Refreshes what a connection shows (nothing for a connection the server did not register).
    pub fn update(&self, session: &Session, cmd: Option<&[u8]>) {
        if let Some(entry) = self.lock().get_mut(&session.id) {
            let seen = &mut entry.seen;
            seen.name.clone_from(&session.name);
            seen.user.clone_from(&session.user);
            seen.lib_name.clone_from(&session.lib_name);
            seen.lib_ver.clone_from(&session.lib_ver);
            if let Some(cmd) = cmd {
                seen.cmd = String::from_utf8_lossy(cmd).to_ascii_lowercase();
                seen.active = std::time::Instant::now();
            }
            seen.resp = if session.protocol == crate::resp::Protocol::Resp3 { 3 } else { 2 };
            seen.multi = session.transaction.as_ref().map_or(-1, |t| t.queued.len() as i64);
        }
    }

    /// A connection's address and name, as the slow log records them (empty for one not registered).
    pub fn address_and_name(&self, id: u64) -> (String, String) {
        self.lock().get(&id).map_or_else(Default::default, |e| {
            let name = e.seen.name.as_ref().map(|n| String::from_utf8_lossy(n).into_owned()).unwrap_or_default();
            (e.addr.clone(), name)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, ClientEntry>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshot(&self) -> Vec<(u64, ClientEntry)> {
        self.lock().iter().map(|(id, e)| (*id, e.clone())).collect()
    }
}

/// One client's line of CLIENT LIST, in Redis's `key=value` form.
fn client_line(id: u64, e: &ClientEntry) -> String {
    let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let s = &e.seen;
    format!(
        "id={id} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi={} watch=0 \
         qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} \
         user={} redir=-1 resp={} lib-name={} lib-ver={}\n",
        e.addr,
        e.laddr,
        text(&s.name),
        e.connected.elapsed().as_secs(),
        s.active.elapsed().as_secs(),
        s.multi,
        s.cmd,
        s.user,
        s.resp,
        text(&s.lib_name),
        text(&s.lib_ver),
    )
}

/// CLIENT LIST [TYPE normal|master|replica|pubsub] [ID id ...].
fn list_filters(args: &[Bytes]) -> Result<ClientCall, Reply> {
    let mut ids: Option<Vec<u64>> = None;
    let mut normal = true;
    let mut i = 2;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"TYPE" if i + 1 < args.len() => {
                match args[i + 1].to_ascii_lowercase().as_slice() {
                    b"normal" => {}
                    b"master" | b"replica" | b"slave" | b"pubsub" => normal = false,
                    _ => {
                        return Err(Reply::error(format!("ERR Unknown client type '{}'", printable(&args[i + 1], 32))));
                    }
                }
                i += 2;
            }
            b"ID" if i + 1 < args.len() => {
                let mut wanted = Vec::new();
                for a in &args[i + 1..] {
                    match std::str::from_utf8(a).ok().and_then(|s| s.parse::<u64>().ok()) {
                        Some(id) => wanted.push(id),
                        None => return Err(Reply::error("ERR Invalid client ID")),
                    }
                }
                ids = Some(wanted);
                i = args.len();
            }
            _ => return Err(super::syntax_error()),
        }
    }
    Ok(ClientCall::List { normal, ids })
}

/// CLIENT LIST: every connection matching the filters (all of them are `normal`).
fn list(node: &NodeContext, session: &Session, normal: bool, ids: Option<Vec<u64>>) -> Reply {
    node.clients.update(session, Some(b"client|list"));
    let mut out = String::new();
    for (id, e) in node.clients.snapshot() {
        if normal && ids.as_ref().is_none_or(|w| w.contains(&id)) {
            out.push_str(&client_line(id, &e));
        }
    }
    Reply::Bulk(Bytes::from(out))
}

/// CLIENT INFO: this connection's line.
pub fn info(node: &NodeContext, session: &Session) -> Reply {
    node.clients.update(session, Some(b"client|info"));
    let entry = node.clients.lock().get(&session.id).cloned();
    match entry {
        Some(e) => Reply::Bulk(Bytes::from(client_line(session.id, &e))),
        None => Reply::Bulk(Bytes::from(format!("id={} addr= laddr= name= user={}\n", session.id, session.user))),
    }
}

/// CLIENT KILL addr | CLIENT KILL [ID id] [ADDR addr] [LADDR addr] [USER name] [TYPE type] [SKIPME yes|no].
fn kill_filters(args: &[Bytes]) -> Result<Kill, Reply> {
    if args.len() == 3 {
        return Ok(Kill::Addr(String::from_utf8_lossy(&args[2]).into_owned()));
    }
    if !args.len().is_multiple_of(2) {
        return Err(super::syntax_error());
    }
    let (mut id, mut addr, mut laddr, mut user, mut skipme, mut normal) = (None, None, None, None, true, true);
    for pair in args[2..].chunks_exact(2) {
        let value = String::from_utf8_lossy(&pair[1]).into_owned();
        match pair[0].to_ascii_uppercase().as_slice() {
            b"ID" => match value.parse::<u64>() {
                Ok(v) => id = Some(v),
                Err(_) => return Err(Reply::error("ERR client-id should be greater than 0")),
            },
            b"ADDR" => addr = Some(value),
            b"LADDR" => laddr = Some(value),
            b"USER" => user = Some(value),
            b"TYPE" => match value.to_ascii_lowercase().as_str() {
                "normal" => {}
                "master" | "replica" | "slave" | "pubsub" => normal = false,
                _ => return Err(Reply::error(format!("ERR Unknown client type '{}'", printable(&pair[1], 32)))),
            },
            b"SKIPME" => match value.to_ascii_lowercase().as_str() {
                "yes" => skipme = true,
                "no" => skipme = false,
                _ => return Err(super::syntax_error()),
            },
            _ => return Err(super::syntax_error()),
        }
    }
    Ok(Kill::Filters { id, addr, laddr, user, skipme, normal })
}

/// CLIENT KILL: closes the matching connections (after the request they are running, if any).
fn kill(node: &NodeContext, session: &Session, kill: Kill) -> Reply {
    let clients = node.clients.snapshot();
    let (id, addr, laddr, user, skipme, normal) = match kill {
        // The old form: one address, an error when no client has it.
        Kill::Addr(addr) => {
            return match clients.iter().find(|(_, e)| e.addr == addr) {
                Some((_, e)) => {
                    e.kill.cancel();
                    Reply::ok()
                }
                None => Reply::error("ERR No such client"),
            };
        }
        Kill::Filters { id, addr, laddr, user, skipme, normal } => (id, addr, laddr, user, skipme, normal),
    };
    let mut killed = 0;
    for (cid, e) in &clients {
        let matches = normal
            && id.is_none_or(|v| v == *cid)
            && addr.as_ref().is_none_or(|a| a == &e.addr)
            && laddr.as_ref().is_none_or(|a| a == &e.laddr)
            && user.as_ref().is_none_or(|u| u == &e.seen.user)
            && !(skipme && *cid == session.id);
        if matches {
            e.kill.cancel();
            killed += 1;
        }
    }
    Reply::Integer(killed)
}
