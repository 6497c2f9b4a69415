//! CLIENT ID | SETNAME | GETNAME | SETINFO | NO-EVICT | NO-TOUCH | MAINT_NOTIFICATIONS: what client libraries send
//! on connect; and CLIENT VALUES, which switches how this connection's GET and MGET answer.

use bytes::Bytes;

use super::{Session, printable, wrong_arity};
use crate::config::ValueMode;
use crate::resp::Reply;

/// CLIENT subcommands.
pub fn client(session: &mut Session, args: &[Bytes]) -> Reply {
    let sub = args[1].to_ascii_uppercase();
    match (sub.as_slice(), args.len()) {
        (b"ID", 2) => Reply::Integer(session.id as i64),
        (b"GETNAME", 2) => session.name.clone().map_or(Reply::Nil, Reply::Bulk),
        (b"SETNAME", 3) => match valid_name(&args[2]) {
            Ok(()) => {
                session.name = (!args[2].is_empty()).then(|| args[2].clone());
                Reply::ok()
            }
            Err(r) => r,
        },
        (b"SETINFO", 4) => {
            let value = args[3].clone();
            if value.iter().any(|&b| b == b' ' || b == b'\n' || b == b'\r') {
                return Reply::error("ERR lib-name and lib-ver cannot contain spaces or newlines");
            }
            match args[2].to_ascii_uppercase().as_slice() {
                b"LIB-NAME" => session.lib_name = Some(value),
                b"LIB-VER" => session.lib_ver = Some(value),
                _ => {
                    return Reply::error(format!("ERR Unrecognized option '{}'", printable(&args[2], 32)));
                }
            }
            Reply::ok()
        }
        // Nothing is evicted and nothing tracks access times: both modes are what every client already gets.
        (b"NO-EVICT" | b"NO-TOUCH", 3) => match args[2].to_ascii_uppercase().as_slice() {
            b"ON" | b"OFF" => Reply::ok(),
            _ => super::syntax_error(),
        },
        // redis-py 8 asks for maintenance notifications on connect. Nodes never send any (no failover moves a
        // client's endpoint here), so accepting is true and keeps it from counting as a failed command.
        (b"MAINT_NOTIFICATIONS", n) if n >= 3 => Reply::ok(),
        // VALUES alone tells the mode; with PLAIN or VERSIONED it switches this connection until the next AUTH.
        (b"VALUES", 2) => Reply::bulk(session.values.as_str()),
        (b"VALUES", 3) => match args[2].to_ascii_uppercase().as_slice() {
            b"PLAIN" => {
                session.values = ValueMode::Plain;
                Reply::ok()
            }
            b"VERSIONED" => {
                session.values = ValueMode::Versioned;
                Reply::ok()
            }
            _ => Reply::error(format!("ERR CLIENT VALUES takes PLAIN or VERSIONED, not '{}'", printable(&args[2], 32))),
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
        ) => wrong_arity(&format!("client|{}", String::from_utf8_lossy(&sub).to_ascii_lowercase())),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try CLIENT ID, SETNAME, GETNAME, SETINFO, NO-EVICT, NO-TOUCH, \
             MAINT_NOTIFICATIONS or VALUES.",
            printable(&args[1], 32)
        )),
    }
}

/// Redis refuses connection names with spaces or newlines.
pub fn valid_name(name: &Bytes) -> Result<(), Reply> {
    if name.iter().any(|&b| b <= b' ' || b > b'~') {
        return Err(Reply::error("ERR Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}
