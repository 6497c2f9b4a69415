//! Request framing: multibulk requests (`*N\r\n$len\r\n...`) and inline commands (`PING\r\n` typed in telnet).

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;
use tokio_util::codec::Decoder;

/// Longest inline command line, as in Redis (PROTO_INLINE_MAX_SIZE).
pub const MAX_INLINE_BYTES: usize = 64 << 10;
/// Longest `*N` / `$N` header line we wait for before calling it garbage.
const MAX_HEADER_LINE: usize = 32;

/// Limits the decoder enforces before allocating.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    /// Largest request frame in bytes.
    pub max_request_bytes: usize,
    /// Most elements in a request array.
    pub max_array_len: usize,
    /// Largest single bulk string.
    pub max_bulk_bytes: usize,
}

/// A request the client sent in a form we cannot accept. The connection answers with the message and closes, as
/// Redis does.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// `*N` with N not a number or above the limit.
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    /// `$N` with N not a number or above the limit.
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    /// Something other than a bulk string inside a request array.
    #[error("Protocol error: expected '$', got '{found}'")]
    ExpectedBulk {
        /// The byte found instead, as a character.
        found: char,
    },
    /// A bulk string not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    MissingCrlf,
    /// An inline command longer than [`MAX_INLINE_BYTES`].
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// An inline command with an unclosed quote.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A frame longer than `max_request_bytes`.
    #[error("Protocol error: request larger than {limit} bytes")]
    RequestTooBig {
        /// The configured limit.
        limit: usize,
    },
    /// redis-protocol refused a frame our pre-scan accepted.
    #[error("Protocol error: {message}")]
    Decode {
        /// The decoder's message.
        message: String,
    },
    /// The socket failed.
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Where the incremental scan of a partly received multibulk frame stopped.
#[derive(Clone, Copy, Debug)]
struct Progress {
    /// Offset just past the last complete element.
    offset: usize,
    /// Elements still to come.
    remaining: usize,
}

/// Decodes client requests into argument vectors (command name first). Empty requests are skipped.
#[derive(Debug)]
pub struct RequestCodec {
    limits: FrameLimits,
    progress: Option<Progress>,
    /// Bytes of a partial inline line already searched for its newline: a slow sender costs linear work.
    inline_scanned: usize,
}

impl RequestCodec {
    /// A decoder with these limits.
    pub fn new(limits: FrameLimits) -> Self {
        Self { limits, progress: None, inline_scanned: 0 }
    }

    /// Scans a multibulk frame at the start of `buf` without copying. Returns its total length once complete.
    fn scan_multibulk(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let mut p = match self.progress {
            Some(p) => p,
            None => {
                let Some((n, header_len)) = parse_header(buf, ProtocolError::MultibulkLength)? else {
                    return Ok(None);
                };
                if n > self.limits.max_array_len as i64 {
                    return Err(ProtocolError::MultibulkLength);
                }
                Progress { offset: header_len, remaining: n.max(0) as usize }
            }
        };
        while p.remaining > 0 {
            let rest = &buf[p.offset..];
            let Some(&first) = rest.first() else { break };
            if first != b'$' {
                return Err(ProtocolError::ExpectedBulk { found: first as char });
            }
            let Some((len, header_len)) = parse_header(rest, ProtocolError::BulkLength)? else {
                break;
            };
            if len < 0 || len as usize > self.limits.max_bulk_bytes {
                return Err(ProtocolError::BulkLength);
            }
            let end = header_len + len as usize + 2;
            if p.offset + end > self.limits.max_request_bytes {
                return Err(ProtocolError::RequestTooBig { limit: self.limits.max_request_bytes });
            }
            if rest.len() < end {
                break;
            }
            if &rest[end - 2..end] != b"\r\n" {
                return Err(ProtocolError::MissingCrlf);
            }
            p.offset += end;
            p.remaining -= 1;
        }
        if p.remaining == 0 {
            self.progress = None;
            Ok(Some(p.offset))
        } else {
            self.progress = Some(p);
            Ok(None)
        }
    }
}

/// Parses `<type byte><integer>\r\n`; returns the integer and the line length, or `None` if incomplete.
fn parse_header(buf: &[u8], err: ProtocolError) -> Result<Option<(i64, usize)>, ProtocolError> {
    let window = &buf[..buf.len().min(MAX_HEADER_LINE)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if buf.len() >= MAX_HEADER_LINE { Err(err) } else { Ok(None) };
    };
    if buf.len() < cr + 2 {
        return Ok(None);
    }
    if buf[cr + 1] != b'\n' {
        return Err(err);
    }
    let n = std::str::from_utf8(&buf[1..cr]).ok().and_then(|s| s.parse::<i64>().ok()).ok_or(err)?;
    Ok(Some((n, cr + 2)))
}

impl Decoder for RequestCodec {
    type Item = Vec<Bytes>;
    type Error = ProtocolError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        loop {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first != b'*' {
                match self.decode_inline(buf)? {
                    Some(args) if args.is_empty() => continue,
                    other => return Ok(other),
                }
            }
            let Some(len) = self.scan_multibulk(buf)? else {
                // Ask the reader for exactly what is missing, never for what a header merely claims.
                return Ok(None);
            };
            let (frame, amt, _) = decode_bytes_mut(buf)
                .map_err(|e| ProtocolError::Decode { message: e.to_string() })?
                .ok_or_else(|| ProtocolError::Decode { message: "frame incomplete after scan".into() })?;
            debug_assert_eq!(amt, len);
            let args = match frame {
                BytesFrame::Array(items) => items
                    .into_iter()
                    .map(|f| match f {
                        BytesFrame::BulkString(b) => Ok(b),
                        other => Err(ProtocolError::Decode { message: format!("unexpected {other:?} in request") }),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                // `*-1` is a null array: Redis ignores it like `*0`.
                BytesFrame::Null => Vec::new(),
                other => {
                    return Err(ProtocolError::Decode { message: format!("unexpected {other:?} request") });
                }
            };
            if !args.is_empty() {
                return Ok(Some(args));
            }
        }
    }
}

impl RequestCodec {
    /// Splits one inline command line, with Redis's quoting rules (double quotes with escapes, single quotes
    /// literal).
    fn decode_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let max = MAX_INLINE_BYTES.min(self.limits.max_request_bytes);
        let from = self.inline_scanned.min(buf.len());
        let window = &buf[from..buf.len().min(max + 1)];
        let Some(nl) = window.iter().position(|&b| b == b'\n').map(|i| i + from) else {
            self.inline_scanned = buf.len();
            return if buf.len() > max { Err(ProtocolError::InlineTooBig) } else { Ok(None) };
        };
        self.inline_scanned = 0;
        let line = buf.split_to(nl + 1);
        let line = line.strip_suffix(b"\n").unwrap_or(&line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let args = split_args(line)?;
        if args.len() > self.limits.max_array_len {
            return Err(ProtocolError::MultibulkLength);
        }
        Ok(Some(args))
    }
}

/// Redis's `sdssplitargs`, the parts inline commands use.
pub fn split_args(line: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    i += 1;
                    match c {
                        b'"' => break,
                        b'\\' if i < line.len() => {
                            let e = line[i];
                            i += 1;
                            let hex = |b: u8| (b as char).to_digit(16);
                            match e {
                                b'x' if i + 2 <= line.len() => match (hex(line[i]), hex(line[i + 1])) {
                                    (Some(h), Some(l)) => {
                                        arg.push((h * 16 + l) as u8);
                                        i += 2;
                                    }
                                    _ => arg.push(b'x'),
                                },
                                b'n' => arg.push(b'\n'),
                                b'r' => arg.push(b'\r'),
                                b't' => arg.push(b'\t'),
                                b'b' => arg.push(8),
                                b'a' => arg.push(7),
                                other => arg.push(other),
                            }
                        }
                        c => arg.push(c),
                    }
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(ProtocolError::UnbalancedQuotes);
                    };
                    i += 1;
                    match c {
                        b'\'' => break,
                        b'\\' if line.get(i) == Some(&b'\'') => {
                            arg.push(b'\'');
                            i += 1;
                        }
                        c => arg.push(c),
                    }
                }
                if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec() -> RequestCodec {
        RequestCodec::new(FrameLimits { max_request_bytes: 1 << 20, max_array_len: 16, max_bulk_bytes: 1000 })
    }

    fn strs(v: Vec<Bytes>) -> Vec<String> {
        v.into_iter().map(|b| String::from_utf8(b.to_vec()).unwrap()).collect()
    }

    #[test]
    fn multibulk_pipelined_and_split() {
        let mut c = codec();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET"[..]);
        assert_eq!(strs(c.decode(&mut buf).unwrap().unwrap()), ["GET", "k"]);
        assert_eq!(strs(c.decode(&mut buf).unwrap().unwrap()), ["PING"]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"\r\n$1\r\nk\r\n$2\r\n");
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"v1\r\n");
        assert_eq!(strs(c.decode(&mut buf).unwrap().unwrap()), ["SET", "k", "v1"]);
        assert!(buf.is_empty());
    }

    #[test]
    fn inline_commands() {
        let mut c = codec();
        let mut buf = BytesMut::from(&b"PING\r\n\r\nset k \"a b\\x41\" 'c d'\n"[..]);
        assert_eq!(strs(c.decode(&mut buf).unwrap().unwrap()), ["PING"]);
        assert_eq!(strs(c.decode(&mut buf).unwrap().unwrap()), ["set", "k", "a bA", "c d"]);
        let mut buf = BytesMut::from(&b"ECHO \"open\r\n"[..]);
        assert!(matches!(c.decode(&mut buf), Err(ProtocolError::UnbalancedQuotes)));
        let mut buf = BytesMut::from(vec![b'a'; MAX_INLINE_BYTES + 10].as_slice());
        assert!(matches!(c.decode(&mut buf), Err(ProtocolError::InlineTooBig)));
        // A line trickling in byte by byte is found once complete.
        let mut c = codec();
        let mut buf = BytesMut::new();
        for &b in b"ECHO trickle\r" {
            buf.extend_from_slice(&[b]);
            assert!(c.decode(&mut buf).unwrap().is_none());
        }
        buf.extend_from_slice(b"\n");
        assert_eq!(strs(c.decode(&mut buf).unwrap().unwrap()), ["ECHO", "trickle"]);
    }

    #[test]
    fn limits_are_checked_before_the_payload_arrives() {
        let mut buf = BytesMut::from(&b"*17\r\n"[..]);
        assert!(matches!(codec().decode(&mut buf), Err(ProtocolError::MultibulkLength)));
        let mut buf = BytesMut::from(&b"*1\r\n$1001\r\n"[..]);
        assert!(matches!(codec().decode(&mut buf), Err(ProtocolError::BulkLength)));
        let mut buf = BytesMut::from(&b"*1\r\n$99999999999999999999\r\n"[..]);
        assert!(matches!(codec().decode(&mut buf), Err(ProtocolError::BulkLength)));
        let mut buf = BytesMut::from(&b"*1\r\n:5\r\n"[..]);
        assert!(matches!(codec().decode(&mut buf), Err(ProtocolError::ExpectedBulk { found: ':' })));
        let mut buf = BytesMut::from(&b"*1\r\n$1\r\nab\r\n"[..]);
        assert!(matches!(codec().decode(&mut buf), Err(ProtocolError::MissingCrlf)));
        let mut buf = BytesMut::from(&b"*abc\r\n"[..]);
        assert!(matches!(codec().decode(&mut buf), Err(ProtocolError::MultibulkLength)));
        let mut buf = BytesMut::from(vec![b'*'; 100].as_slice());
        assert!(matches!(codec().decode(&mut buf), Err(ProtocolError::MultibulkLength)));
        let mut small =
            RequestCodec::new(FrameLimits { max_request_bytes: 100, max_array_len: 16, max_bulk_bytes: 1000 });
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$200\r\n"[..]);
        assert!(matches!(small.decode(&mut buf), Err(ProtocolError::RequestTooBig { .. })));
    }

    #[test]
    fn empty_requests_are_skipped() {
        let mut buf = BytesMut::from(&b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n"[..]);
        assert_eq!(strs(codec().decode(&mut buf).unwrap().unwrap()), ["PING"]);
    }

    #[test]
    fn large_frame_in_many_pieces_is_scanned_incrementally() {
        let mut c = RequestCodec::new(FrameLimits {
            max_request_bytes: 64 << 20,
            max_array_len: 200_000,
            max_bulk_bytes: 1000,
        });
        let n = 100_000;
        let mut whole = format!("*{n}\r\n").into_bytes();
        for i in 0..n {
            let s = i.to_string();
            whole.extend_from_slice(format!("${}\r\n{}\r\n", s.len(), s).as_bytes());
        }
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in whole.chunks(whole.len() / 16 + 1) {
            buf.extend_from_slice(chunk);
            if let Some(args) = c.decode(&mut buf).unwrap() {
                got = Some(args);
            }
        }
        let args = got.expect("frame decoded");
        assert_eq!(args.len(), n);
        assert_eq!(&args[n - 1][..], (n - 1).to_string().as_bytes());
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut c = codec();
            let mut buf = BytesMut::from(data.as_slice());
            for _ in 0..50 {
                match c.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
    }
}
