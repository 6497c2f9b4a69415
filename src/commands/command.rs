//! COMMAND [COUNT | LIST | INFO name... | DOCS name...].

use bytes::Bytes;

use super::session::Commands;
use super::table::{CommandSpec, TABLE, lookup};
use crate::resp::Reply;

/// COMMAND and its subcommands, in the shapes redis-cli reads.
pub fn command(call: Commands) -> Reply {
    let named = |names: &[Bytes]| -> Vec<Option<&'static CommandSpec>> {
        names.iter().map(|a| lookup(&String::from_utf8_lossy(a).to_ascii_lowercase())).collect()
    };
    match call {
        Commands::All => Reply::Array(TABLE.iter().map(info).collect()),
        Commands::Count => Reply::Integer(TABLE.len() as i64),
        Commands::List => Reply::Array(TABLE.iter().map(|c| Reply::bulk(c.name)).collect()),
        Commands::Info(names) => {
            let specs = if names.is_empty() { TABLE.iter().map(Some).collect() } else { named(&names) };
            Reply::Array(specs.into_iter().map(|s| s.map_or(Reply::Nil, info)).collect())
        }
        Commands::Docs(names) => {
            let specs: Vec<&CommandSpec> =
                if names.is_empty() { TABLE.iter().collect() } else { named(&names).into_iter().flatten().collect() };
            Reply::Map(specs.into_iter().map(|s| (Reply::bulk(s.name), docs(s))).collect())
        }
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
