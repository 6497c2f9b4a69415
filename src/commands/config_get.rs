//! CONFIG GET pattern [pattern ...]: the settings Redis tools ask about, plus ours (CONFIG SET is refused when
//! parsed, [`super::session::Call::parse`]).

use bytes::Bytes;

use super::NodeContext;
use crate::config::Durability;
use crate::resp::Reply;

/// CONFIG GET pattern [pattern ...]: the settings whose names match a pattern.
pub fn config_get(node: &NodeContext, patterns: &[Bytes]) -> Reply {
    let settings = settings(node);
    let mut out = Vec::new();
    for (name, value) in &settings {
        if patterns.iter().any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes())) {
            out.push((Reply::bulk(*name), Reply::bulk(value.clone())));
        }
    }
    Reply::Map(out)
}

fn settings(node: &NodeContext) -> Vec<(&'static str, String)> {
    let c = &node.config;
    let appendonly = if c.durability == Durability::Buffered { "no" } else { "yes" };
    let appendfsync = match c.durability {
        Durability::Fsync => "always",
        Durability::Os => "everysec",
        Durability::Buffered => "no",
    };
    vec![
        ("save", String::new()),
        ("appendonly", appendonly.into()),
        ("appendfsync", appendfsync.into()),
        ("databases", "1".into()),
        ("protected-mode", if c.protected_mode { "yes" } else { "no" }.into()),
        ("maxclients", c.limits.max_clients.to_string()),
        ("proto-max-bulk-len", c.limits.max_value_bytes.to_string()),
        ("port", node.client_addr.port().to_string()),
        ("bind", node.client_addr.ip().to_string()),
        ("dir", c.data_dir.display().to_string()),
        ("durability", c.durability.as_str().into()),
        ("max-key-bytes", c.limits.max_key_bytes.to_string()),
        ("max-value-bytes", c.limits.max_value_bytes.to_string()),
        ("max-request-bytes", c.limits.max_request_bytes.to_string()),
        ("max-array-len", c.limits.max_array_len.to_string()),
        ("max-vv-entries", c.versioning.max_vv_entries.to_string()),
        ("sibling-soft-limit", c.versioning.sibling_soft_limit.to_string()),
        ("sibling-hard-limit", c.versioning.sibling_hard_limit.to_string()),
        ("slowlog-log-slower-than", c.slowlog_slower_than_us.to_string()),
        ("slowlog-max-len", c.slowlog_max_len.to_string()),
    ]
}

/// Redis-style glob: `*`, `?`, `[abc]` and `\\x` escapes. Single-star backtracking keeps it O(pattern × text)
/// whatever a client sends.
pub fn glob_match(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if p.get(pi) == Some(&b'*') {
            star = Some((pi, ti));
            pi += 1;
            continue;
        }
        if let Some(next) = match_one(p, pi, t[ti]) {
            pi = next;
            ti += 1;
            continue;
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi.min(p.len())..].iter().all(|&b| b == b'*')
}

/// Matches one pattern element at `pi` against `c`; returns the index after the element.
fn match_one(p: &[u8], pi: usize, c: u8) -> Option<usize> {
    match *p.get(pi)? {
        b'?' => Some(pi + 1),
        b'[' => match p[pi + 1..].iter().position(|&b| b == b']') {
            Some(close) => p[pi + 1..pi + 1 + close].contains(&c).then_some(pi + close + 2),
            None => (c == b'[').then_some(pi + 1),
        },
        b'\\' if pi + 1 < p.len() => (p[pi + 1] == c).then_some(pi + 2),
        lit => (lit == c).then_some(pi + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(b"*", b"save"));
        assert!(glob_match(b"append*", b"appendonly"));
        assert!(glob_match(b"s?ve", b"save"));
        assert!(glob_match(b"[sx]ave", b"save"));
        assert!(!glob_match(b"appendonly", b"appendfsync"));
        assert!(!glob_match(b"save?", b"save"));
        assert!(glob_match(b"*a*e*", b"appendonly-save"));
        // A hostile pattern finishes at once.
        let hostile = b"*a".repeat(60);
        assert!(!glob_match(&hostile, b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab"));
    }
}
