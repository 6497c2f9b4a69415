//! The hash tree of a node's data (paper §4.7), kept incrementally.
//!
//! Leaves partition the ring positions into `LEAVES` equal ranges (the top `LEAF_BITS` bits of a key's MD5
//! position), so every partition of any Q ≤ `LEAVES` owns a contiguous run of leaves. A leaf's hash is the XOR of
//! MD5(storage key ‖ stored value) over its keys: a write changes it by XOR-ing out the old entry and in the new one,
//! in O(1), with no rebuild before an exchange (Riak users lost a third of their throughput to tree rebuilds).
//! Inner nodes are XORs of their children, computed on demand from the leaves of one partition.

use std::sync::Mutex;

use crate::storage::WriteObserver;

/// Bits of the ring position that pick a leaf.
pub const LEAF_BITS: u32 = 14;
/// Leaves over the whole ring.
pub const LEAVES: usize = 1 << LEAF_BITS;

/// One 128-bit hash.
pub type Hash = u128;

/// The leaf of a storage key (its first 16 bytes are the ring position).
pub fn leaf_of(storage_key: &[u8]) -> usize {
    let mut pos = [0u8; 16];
    let n = storage_key.len().min(16);
    pos[..n].copy_from_slice(&storage_key[..n]);
    (u128::from_be_bytes(pos) >> (128 - LEAF_BITS)) as usize
}

/// The hash of one stored entry.
pub fn entry_hash(storage_key: &[u8], value: &[u8]) -> Hash {
    let mut ctx = md5::Context::new();
    ctx.consume(storage_key);
    ctx.consume(value);
    u128::from_be_bytes(ctx.finalize().0)
}

/// The leaves of every stored key.
pub struct HashTree {
    leaves: Mutex<Vec<Hash>>,
}

impl Default for HashTree {
    fn default() -> Self {
        Self { leaves: Mutex::new(vec![0; LEAVES]) }
    }
}

impl HashTree {
    /// An empty tree (no keys).
    pub fn new() -> Self {
        Self::default()
    }

    /// The leaves of partition `p` of a ring of `q` partitions; `None` when `q` is not a power of two up to
    /// [`LEAVES`] or `p` is not one of its partitions (peer input is checked before the lock is taken).
    pub fn partition_leaves(&self, p: usize, q: usize) -> Option<Vec<Hash>> {
        if !q.is_power_of_two() || q > LEAVES || p >= q {
            return None;
        }
        let per = LEAVES / q;
        let range = p * per..(p + 1) * per;
        Some(self.leaves.lock().expect("tree lock")[range].to_vec())
    }

    /// The root of a run of leaves: the XOR of all.
    pub fn root(leaves: &[Hash]) -> Hash {
        leaves.iter().fold(0, |a, b| a ^ b)
    }

    /// Ring positions covered by leaf `leaf` (first, last inclusive).
    pub fn leaf_range(leaf: usize) -> (u128, u128) {
        let width = 1u128 << (128 - LEAF_BITS);
        let first = leaf as u128 * width;
        (first, first + (width - 1))
    }

    /// First leaf of partition `p` of `q`.
    pub fn first_leaf(p: usize, q: usize) -> usize {
        p * (LEAVES / q.clamp(1, LEAVES))
    }

    /// Forgets everything (before a rebuild).
    pub fn clear(&self) {
        self.leaves.lock().expect("tree lock").iter_mut().for_each(|l| *l = 0);
    }
}

impl WriteObserver for HashTree {
    fn digest(&self, storage_key: &[u8], value: &[u8]) -> u128 {
        entry_hash(storage_key, value)
    }

    fn on_change(&self, storage_key: &[u8], old: Option<u128>, new: Option<u128>) {
        let delta = old.unwrap_or(0) ^ new.unwrap_or(0);
        self.leaves.lock().expect("tree lock")[leaf_of(storage_key)] ^= delta;
    }

    fn reset(&self) {
        self.clear();
    }
}
