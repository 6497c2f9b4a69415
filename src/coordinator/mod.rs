//! Coordinator (L4): turns a client's get or put into versioned reads and writes.
//!
//! Today every key is coordinated by the local node (one node, N = 1). The cluster issue adds preference lists
//! and R/W quorums; the API here (read → siblings + context, write with a context) is the one it keeps.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::config::VersioningOptions;
use crate::storage::store::Decision;
use crate::storage::{KvStore, StorageError, meta::NodeMeta};
use crate::versioning::{Siblings, VersionVector};

/// Errors a client request can meet in the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// Storage failed; nothing was acknowledged.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The context claims writes of this node that it never made (it was not minted by a read).
    #[error("context covers writes this node never made")]
    ContextAhead,
    /// The write would leave more sibling bytes than allowed.
    #[error("write would leave {bytes} bytes of siblings, above max_siblings_bytes ({limit})")]
    SiblingsTooLarge {
        /// Bytes the surviving siblings and the new value would hold.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The write would leave more siblings than the hard limit allows.
    #[error("write would leave {count} siblings, above the hard limit of {limit}")]
    TooManySiblings {
        /// Siblings the write would leave.
        count: usize,
        /// The configured hard limit.
        limit: usize,
    },
}

/// What a read found.
#[derive(Clone, Debug)]
pub struct ReadResult {
    /// Values of the causally-maximal live versions (tombstones excluded).
    pub values: Vec<Bytes>,
    /// The causal context covering everything read; `None` when the key was never written here.
    pub context: Option<VersionVector>,
}

/// Which versions a write supersedes.
#[derive(Clone, Debug)]
pub enum WriteContext {
    /// Everything the coordinating replica holds now (plain Redis `SET` / `DEL`).
    Blind,
    /// Exactly what this context (from a previous read) covers.
    Covering(VersionVector),
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Live values the write superseded on the coordinator.
    pub superseded_live: usize,
    /// Whether anything was written (a blind delete of an absent key writes nothing).
    pub written: bool,
}

/// Coordinates reads and writes against this node's store.
pub struct Coordinator {
    store: Arc<KvStore>,
    meta: Arc<NodeMeta>,
    options: VersioningOptions,
}

impl Coordinator {
    /// A coordinator over `store`, stamping dots from `meta`.
    pub fn new(store: Arc<KvStore>, meta: Arc<NodeMeta>, options: VersioningOptions) -> Self {
        Self {
            store,
            meta,
            options,
        }
    }

    /// The node's metadata (identity, actor).
    pub fn meta(&self) -> &NodeMeta {
        &self.meta
    }

    /// The local store.
    pub fn store(&self) -> &KvStore {
        &self.store
    }

    /// The versioning settings.
    pub fn options(&self) -> &VersioningOptions {
        &self.options
    }

    /// Reads `key`: its live siblings and the context that covers them.
    pub fn get(&self, key: &[u8]) -> Result<ReadResult, CoordError> {
        Ok(match self.store.get(key)? {
            None => ReadResult {
                values: Vec::new(),
                context: None,
            },
            Some(s) => {
                metrics::histogram!("dynamo_read_siblings").record(s.live_values().count() as f64);
                ReadResult {
                    values: s.live_values().cloned().collect(),
                    context: Some(s.context().clone()),
                }
            }
        })
    }

    /// True when `key` has at least one live value.
    pub fn exists(&self, key: &[u8]) -> Result<bool, CoordError> {
        Ok(self.store.get(key)?.is_some_and(|s| s.has_live_value()))
    }

    /// Writes `value` (or a tombstone, for `None`) superseding what `context` covers. Returns once the write is as
    /// durable as the node's mode promises.
    pub async fn put(
        &self,
        key: &[u8],
        value: Option<Bytes>,
        context: WriteContext,
    ) -> Result<WriteOutcome, CoordError> {
        let opts = &self.options;
        let meta = &self.meta;
        self.store
            .update(key, |s: &mut Siblings, _existed| {
                let covered = match context {
                    WriteContext::Blind => {
                        // A blind delete of nothing live has nothing to supersede: write nothing.
                        if value.is_none() && !s.has_live_value() {
                            return Ok(Decision::Keep(WriteOutcome { superseded_live: 0, written: false }));
                        }
                        s.context().clone()
                    }
                    WriteContext::Covering(c) => {
                        // Tokens are authenticated, so this only trips on a bug or a leaked secret; it keeps a bad
                        // context from marking this node's future dots as already superseded.
                        if c.get(meta.actor()) > meta.issued_counter() {
                            return Err(CoordError::ContextAhead);
                        }
                        c
                    }
                };
                let superseded_live =
                    s.versions().iter().filter(|v| !v.is_tombstone() && covered.covers(v.dot)).count();
                let survivors = s.versions().iter().filter(|v| !covered.covers(v.dot)).count();
                if survivors + 1 > opts.sibling_hard_limit {
                    metrics::counter!("dynamo_sibling_limit_rejections_total").increment(1);
                    return Err(CoordError::TooManySiblings { count: survivors + 1, limit: opts.sibling_hard_limit });
                }
                let bytes = value.as_ref().map_or(0, Bytes::len)
                    + s.versions()
                        .iter()
                        .filter(|v| !covered.covers(v.dot))
                        .filter_map(|v| v.value.as_ref().map(Bytes::len))
                        .sum::<usize>();
                if bytes > opts.max_siblings_bytes {
                    metrics::counter!("dynamo_sibling_limit_rejections_total").increment(1);
                    return Err(CoordError::SiblingsTooLarge { bytes, limit: opts.max_siblings_bytes });
                }
                s.update(&covered, meta.next_dot(), now_ms(), value);
                s.prune_context(opts.max_vv_entries);
                if s.sibling_count() > opts.sibling_soft_limit {
                    metrics::counter!("dynamo_sibling_soft_limit_warnings_total").increment(1);
                    tracing::warn!(
                        key = %String::from_utf8_lossy(&key[..key.len().min(64)]),
                        siblings = s.sibling_count(),
                        soft_limit = opts.sibling_soft_limit,
                        "key has many siblings: read it and write back with its context to resolve them"
                    );
                }
                Ok(Decision::Write(WriteOutcome { superseded_live, written: true }))
            })
            .await
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryEngine;
    use crate::storage::store::StoreOptions;

    fn coordinator(options: VersioningOptions) -> (Coordinator, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = KvStore::open(Arc::new(MemoryEngine::new()), StoreOptions::default()).unwrap();
        let meta = Arc::new(NodeMeta::open(dir.path(), "n1").unwrap());
        (Coordinator::new(store, meta, options), dir)
    }

    fn vals(r: &ReadResult) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = r.values.iter().map(|b| b.as_ref()).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn shopping_cart() {
        let (c, _d) = coordinator(VersioningOptions::default());
        assert!(c.get(b"cart").unwrap().context.is_none());
        c.put(
            b"cart",
            Some(Bytes::from_static(b"[]")),
            WriteContext::Blind,
        )
        .await
        .unwrap();
        let read = c.get(b"cart").unwrap();
        let ctx = read.context.unwrap();
        c.put(
            b"cart",
            Some(Bytes::from_static(b"[book]")),
            WriteContext::Covering(ctx.clone()),
        )
        .await
        .unwrap();
        c.put(
            b"cart",
            Some(Bytes::from_static(b"[pen]")),
            WriteContext::Covering(ctx),
        )
        .await
        .unwrap();
        let read = c.get(b"cart").unwrap();
        assert_eq!(vals(&read), vec![b"[book]".as_ref(), b"[pen]".as_ref()]);
        c.put(
            b"cart",
            Some(Bytes::from_static(b"[book,pen]")),
            WriteContext::Covering(read.context.unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(vals(&c.get(b"cart").unwrap()), vec![b"[book,pen]".as_ref()]);
    }

    #[tokio::test]
    async fn hard_limit_refuses_without_writing() {
        let opts = VersioningOptions {
            sibling_soft_limit: 2,
            sibling_hard_limit: 3,
            ..Default::default()
        };
        let (c, _d) = coordinator(opts);
        let empty = VersionVector::new();
        for i in 0..3 {
            c.put(
                b"k",
                Some(Bytes::from(format!("v{i}"))),
                WriteContext::Covering(empty.clone()),
            )
            .await
            .unwrap();
        }
        let err = c
            .put(
                b"k",
                Some(Bytes::from_static(b"v3")),
                WriteContext::Covering(empty),
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            CoordError::TooManySiblings { count: 4, limit: 3 }
        ));
        assert_eq!(c.get(b"k").unwrap().values.len(), 3);
        // A blind write still resolves them.
        c.put(b"k", Some(Bytes::from_static(b"one")), WriteContext::Blind)
            .await
            .unwrap();
        assert_eq!(c.get(b"k").unwrap().values.len(), 1);
    }

    #[tokio::test]
    async fn sibling_bytes_limit_refuses_without_writing() {
        let opts = VersioningOptions {
            max_siblings_bytes: 10,
            ..Default::default()
        };
        let (c, _d) = coordinator(opts);
        let empty = VersionVector::new();
        c.put(
            b"k",
            Some(Bytes::from_static(b"123456")),
            WriteContext::Covering(empty.clone()),
        )
        .await
        .unwrap();
        let err = c
            .put(
                b"k",
                Some(Bytes::from_static(b"78901")),
                WriteContext::Covering(empty),
            )
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            CoordError::SiblingsTooLarge {
                bytes: 11,
                limit: 10
            }
        ));
        // Superseding the big sibling makes room.
        let ctx = c.get(b"k").unwrap().context.unwrap();
        c.put(
            b"k",
            Some(Bytes::from_static(b"78901")),
            WriteContext::Covering(ctx),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn context_claiming_unissued_local_dots_is_refused() {
        let (c, _d) = coordinator(VersioningOptions::default());
        c.put(b"k", Some(Bytes::from_static(b"v")), WriteContext::Blind)
            .await
            .unwrap();
        let mut ahead = VersionVector::new();
        ahead.advance(c.meta().actor(), c.meta().issued_counter() + 1000, 0);
        let err = c
            .put(
                b"k",
                Some(Bytes::from_static(b"w")),
                WriteContext::Covering(ahead),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, CoordError::ContextAhead));
        assert_eq!(vals(&c.get(b"k").unwrap()), vec![b"v".as_ref()]);
    }

    #[tokio::test]
    async fn blind_delete_of_absent_key_writes_nothing() {
        let (c, _d) = coordinator(VersioningOptions::default());
        let out = c.put(b"nope", None, WriteContext::Blind).await.unwrap();
        assert!(!out.written);
        assert!(c.get(b"nope").unwrap().context.is_none());
        c.put(b"k", Some(Bytes::from_static(b"v")), WriteContext::Blind)
            .await
            .unwrap();
        let out = c.put(b"k", None, WriteContext::Blind).await.unwrap();
        assert_eq!(out.superseded_live, 1);
        let r = c.get(b"k").unwrap();
        assert!(r.values.is_empty() && r.context.is_some());
    }
}
