//! SELECT, AUTH, HELLO: connection handshakes as Redis clients expect them (their arguments read by
//! [`super::session::Call::parse`]).

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::session::Hello;
use super::{NodeContext, Session};
use crate::resp::{Protocol, Reply};

/// Redis's compatibility level we announce in HELLO and INFO.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

/// SELECT index: only database 0 exists.
pub fn select(index: i64) -> Reply {
    match index {
        0 => Reply::ok(),
        _ => Reply::error("ERR DB index is out of range"),
    }
}

/// AUTH [username] password.
pub fn auth(node: &NodeContext, session: &mut Session, user: Option<Bytes>, pass: &[u8]) -> Reply {
    if !node.config.auth_required() && user.is_none() {
        return Reply::error(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your \
             configuration is correct?",
        );
    }
    check_credentials(node, session, user.as_ref(), pass)
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

/// HELLO [protover [AUTH username password] [SETNAME clientname]].
pub fn hello(node: &NodeContext, session: &mut Session, hello: Hello) -> Reply {
    let Hello { protocol, auth, setname } = hello;
    let protocol = protocol.unwrap_or(session.protocol);
    if let Some((user, pass)) = auth {
        let r = check_credentials(node, session, Some(&user), &pass);
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
        if let Err(r) = super::client::valid_name(&name) {
            return r;
        }
        session.name = Some(name);
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
