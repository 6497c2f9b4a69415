//! SLOWLOG GET [count] | LEN | RESET: the commands that took longer than `slowlog_log_slower_than`, as Redis
//! keeps them (id, start time, microseconds, arguments, client address and name), newest first.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::NodeContext;
use super::session::SlowLogCall;
use crate::resp::Reply;

/// Arguments kept per entry, as in Redis; the rest is summarised.
const MAX_ARGS: usize = 32;
/// Bytes kept per argument, as in Redis.
const MAX_ARG_BYTES: usize = 128;

/// One slow command.
#[derive(Clone, Debug)]
struct Entry {
    id: u64,
    started: u64,
    micros: u64,
    args: Vec<Bytes>,
    client: String,
    name: String,
}

/// The slow log of one node.
#[derive(Default)]
pub struct SlowLog {
    inner: Mutex<(u64, VecDeque<Entry>)>,
}

impl SlowLog {
    /// Records `args` if it took longer than the threshold.
    pub fn record(&self, node: &NodeContext, client_id: u64, args: &[Bytes], took: Duration) {
        let threshold = node.config.slowlog_slower_than_us;
        let micros = took.as_micros() as u64;
        if threshold < 0 || micros < threshold as u64 || node.config.slowlog_max_len == 0 {
            return;
        }
        let mut kept: Vec<Bytes> = args.iter().take(MAX_ARGS).map(shorten).collect();
        if args.len() > MAX_ARGS {
            kept[MAX_ARGS - 1] = Bytes::from(format!("... ({} more arguments)", args.len() - MAX_ARGS + 1));
        }
        let (client, name) = node.clients.address_and_name(client_id);
        let started = SystemTime::now().checked_sub(took).unwrap_or(UNIX_EPOCH);
        let started = started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let id = inner.0;
        inner.0 += 1;
        inner.1.push_front(Entry { id, started, micros, args: kept, client, name });
        inner.1.truncate(node.config.slowlog_max_len);
        metrics::counter!("dynamo_slowlog_entries_total").increment(1);
    }
}

fn shorten(arg: &Bytes) -> Bytes {
    if arg.len() <= MAX_ARG_BYTES {
        return arg.clone();
    }
    let mut s = arg[..MAX_ARG_BYTES].to_vec();
    s.extend_from_slice(format!("... ({} more bytes)", arg.len() - MAX_ARG_BYTES).as_bytes());
    Bytes::from(s)
}

/// SLOWLOG subcommands.
pub fn slowlog(node: &NodeContext, call: SlowLogCall) -> Reply {
    let log = &node.slowlog;
    let mut inner = log.inner.lock().unwrap_or_else(|e| e.into_inner());
    match call {
        SlowLogCall::Get(count) => Reply::Array(
            inner
                .1
                .iter()
                .take(count)
                .map(|e| {
                    Reply::Array(vec![
                        Reply::Integer(e.id as i64),
                        Reply::Integer(e.started as i64),
                        Reply::Integer(e.micros as i64),
                        Reply::Array(e.args.iter().cloned().map(Reply::Bulk).collect()),
                        Reply::bulk(e.client.clone()),
                        Reply::bulk(e.name.clone()),
                    ])
                })
                .collect(),
        ),
        SlowLogCall::Len => Reply::Integer(inner.1.len() as i64),
        SlowLogCall::Reset => {
            inner.1.clear();
            Reply::ok()
        }
    }
}
