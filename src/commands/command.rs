//! COMMAND [COUNT | LIST | INFO name... | DOCS name...].

use bytes::Bytes;

use super::table::{CommandSpec, TABLE, lookup};
use super::{printable, wrong_arity};
use crate::resp::Reply;

/// COMMAND and its subcommands, in the shapes redis-cli reads.
pub fn command(args: &[Bytes]) -> Reply {
    if args.len() == 1 {
        return Reply::Array(TABLE.iter().map(info).collect());
    }
    let named = |args: &[Bytes]| -> Vec<Option<&'static CommandSpec>> {
        args.iter().map(|a| lookup(&String::from_utf8_lossy(a).to_ascii_lowercase())).collect()
    };
    match args[1].to_ascii_uppercase().as_slice() {
        b"COUNT" if args.len() == 2 => Reply::Integer(TABLE.len() as i64),
        b"LIST" if args.len() == 2 => Reply::Array(TABLE.iter().map(|c| Reply::bulk(c.name)).collect()),
        b"INFO" => {
            let specs = if args.len() == 2 { TABLE.iter().map(Some).collect() } else { named(&args[2..]) };
            Reply::Array(specs.into_iter().map(|s| s.map_or(Reply::Nil, info)).collect())
        }
        b"DOCS" => {
            let specs: Vec<&CommandSpec> = if args.len() == 2 {
                TABLE.iter().collect()
            } else {
                named(&args[2..]).into_iter().flatten().collect()
            };
            Reply::Map(specs.into_iter().map(|s| (Reply::bulk(s.name), docs(s))).collect())
        }
        b"COUNT" | b"LIST" => wrong_arity("command"),
        _ => Reply::error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND COUNT, LIST, INFO or DOCS.",
            printable(&args[1], 32)
        )),
    }
}

/// `COMMAND INFO` entry: name, arity, flags, first key, last key, step, ACL categories, tips, key specs,
/// subcommands.
fn info(c: &CommandSpec) -> Reply {
    Reply::Array(vec![
        Reply::bulk(c.name),
        Reply::Integer(c.arity),
        Reply::Array(c.flags.iter().map(|f| Reply::Simple(Bytes::from_static(f.as_bytes()))).collect()),
        Reply::Integer(c.first_key),
        Reply::Integer(c.last_key),
        Reply::Integer(c.step),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// `COMMAND DOCS` entry.
fn docs(c: &CommandSpec) -> Reply {
    let args = c
        .args
        .iter()
        .map(|a| {
            let mut m = vec![
                (Reply::bulk("name"), Reply::bulk(a.name)),
                (Reply::bulk("type"), Reply::bulk(a.kind)),
                (Reply::bulk("display_text"), Reply::bulk(a.name)),
            ];
            if let Some(t) = a.token {
                m.push((Reply::bulk("token"), Reply::bulk(t)));
            }
            let mut flags = Vec::new();
            if a.optional {
                flags.push(Reply::Simple(Bytes::from_static(b"optional")));
            }
            if a.multiple {
                flags.push(Reply::Simple(Bytes::from_static(b"multiple")));
            }
            if !flags.is_empty() {
                m.push((Reply::bulk("flags"), Reply::Array(flags)));
            }
            Reply::Map(m)
        })
        .collect();
    Reply::Map(vec![
        (Reply::bulk("summary"), Reply::bulk(c.summary)),
        (Reply::bulk("since"), Reply::bulk("0.1.0")),
        (Reply::bulk("group"), Reply::bulk(c.group)),
        (Reply::bulk("complexity"), Reply::bulk(c.complexity)),
        (Reply::bulk("arguments"), Reply::Array(args)),
    ])
}
