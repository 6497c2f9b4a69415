//! PING, SELECT, AUTH, HELLO: connection handshakes as Redis clients expect them.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{NodeContext, Session, parse_int, syntax_error, wrong_arity};
use crate::resp::{Protocol, Reply};

/// Redis's compatibility level we announce in HELLO and INFO.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

/// PING [message].
pub fn ping(_session: &Session, args: &[Bytes]) -> Reply {
    match args.len() {
        1 => Reply::simple("PONG"),
        2 => Reply::Bulk(args[1].clone()),
        _ => wrong_arity("ping"),
    }
}

/// SELECT index: only database 0 exists.
pub fn select(args: &[Bytes]) -> Reply {
    match parse_int(&args[1]) {
        Ok(0) => Reply::ok(),
        Ok(_) => Reply::error("ERR DB index is out of range"),
        Err(r) => r,
    }
}

/// AUTH [username] password.
pub fn auth(node: &NodeContext, session: &mut Session, args: &[Bytes]) -> Reply {
    let (user, pass) = match args.len() {
        2 => (None, &args[1]),
        3 => (Some(&args[1]), &args[2]),
        _ => return syntax_error(),
    };
    if !node.config.auth_required() && user.is_none() {
        return Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your \
             configuration is correct?",
        );
    }
    check_credentials(node, session, user, pass)
}

/// Verifies credentials ([`crate::config::Config::grant`]); on success the session runs as that user and OK is
/// answered.
fn check_credentials(node: &NodeContext, session: &mut Session, user: Option<&Bytes>, pass: &[u8]) -> Reply {
    let name = user.map_or("default".into(), |u| String::from_utf8_lossy(u).into_owned());
    let granted = node.config.grant(&name, pass);
    match granted {
        Some((access, values)) => {
            session.authenticated = true;
            session.access = access;
            session.values = values;
            session.user = name;
            Reply::ok()
        }
        None => {
            node.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dynamo_auth_failures_total").increment(1);
            // The user name helps an operator spot a misconfigured client; the password is never logged.
            tracing::warn!(client_id = session.id, user = %super::printable(name.as_bytes(), 64), "failed AUTH attempt");
            Reply::error("WRONGPASS invalid username-password pair or user is disabled.")
        }
    }
}

/// ACL WHOAMI (the only ACL subcommand: users come from the config file).
pub fn acl(session: &Session, args: &[Bytes]) -> Reply {
    match (args[1].to_ascii_uppercase().as_slice(), args.len()) {
        (b"WHOAMI", 2) => Reply::bulk(session.user.clone()),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try ACL WHOAMI; users are defined in the config file",
            super::printable(&args[1], 32)
        )),
    }
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]].
pub fn hello(node: &NodeContext, session: &mut Session, args: &[Bytes]) -> Reply {
    let mut protocol = session.protocol;
    if args.len() >= 2 {
        protocol = match parse_int(&args[1]) {
            Ok(2) => Protocol::Resp2,
            Ok(3) => Protocol::Resp3,
            Ok(_) => return Reply::error("NOPROTO unsupported protocol version"),
            Err(_) => {
                return Reply::error("ERR Protocol version is not an integer or out of range");
            }
        };
    }
    let mut auth = None;
    let mut setname = None;
    let mut i = 2;
    while i < args.len() {
        match args[i].to_ascii_uppercase().as_slice() {
            b"AUTH" if i + 2 < args.len() => {
                auth = Some((&args[i + 1], &args[i + 2]));
                i += 3;
            }
            b"SETNAME" if i + 1 < args.len() => {
                setname = Some(&args[i + 1]);
                i += 2;
            }
            _ => {
                return Reply::error(format!("ERR Syntax error in HELLO option '{}'", super::printable(&args[i], 32)));
            }
        }
    }
    if let Some((user, pass)) = auth {
        let r = check_credentials(node, session, Some(user), pass);
        if r.is_error() {
            return r;
        }
    }
    if !session.authenticated {
        return Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH \
             <user> <pass> option can be used to authenticate the client and select the RESP protocol version at \
             the same time",
        );
    }
    if let Some(name) = setname {
        if let Err(r) = super::client::valid_name(name) {
            return r;
        }
        session.name = Some(name.clone());
    }
    session.protocol = protocol;
    Reply::Map(vec![
        (Reply::bulk("server"), Reply::bulk("dynamo-kv")),
        (Reply::bulk("version"), Reply::bulk(REDIS_COMPAT_VERSION)),
        (Reply::bulk("dynamo-kv-version"), Reply::bulk(env!("CARGO_PKG_VERSION"))),
        (Reply::bulk("proto"), Reply::Integer(if protocol == Protocol::Resp3 { 3 } else { 2 })),
        (Reply::bulk("id"), Reply::Integer(session.id as i64)),
        (Reply::bulk("mode"), Reply::bulk("standalone")),
        (Reply::bulk("role"), Reply::bulk("master")),
        (Reply::bulk("modules"), Reply::Array(Vec::new())),
    ])
}
