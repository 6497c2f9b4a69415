//! CLIENT ID | SETNAME | GETNAME | SETINFO.

use bytes::Bytes;

use super::{Session, printable, wrong_arity};
use crate::resp::Reply;

/// CLIENT subcommands clients send on connect.
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
        (b"ID" | b"GETNAME" | b"SETNAME" | b"SETINFO", _) => {
            wrong_arity(&format!("client|{}", String::from_utf8_lossy(&sub).to_ascii_lowercase()))
        }
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try CLIENT ID, SETNAME, GETNAME or SETINFO.",
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
