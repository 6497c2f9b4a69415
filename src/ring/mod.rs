//! The ring (L0, pure): Q equal partitions of the 128-bit position space owned by physical nodes (paper §4.2, §6.2
//! strategy 3).
//!
//! * A key's position starts with its Redis Cluster hash slot ([`slot`]); its partition is the top log2(Q) bits, so
//!   a partition is a whole number of slots (Q divides 16384).
//! * [`claim`] assigns partitions to members in proportion to their weight, explicitly balanced, moving as few
//!   partitions as possible from a previous assignment, and spacing owners so that nearby partitions belong to
//!   different nodes and, when members carry zones, different zones.
//! * A partition's preference list is every member met walking the ring clockwise from it, each once, taken in
//!   rounds of distinct zones (zones given): the first N are its replicas, the rest are fallbacks.

mod claim;
pub mod slot;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use claim::claim;

/// Default number of partitions.
pub const DEFAULT_PARTITIONS: usize = 256;
/// Default spacing of the claim: consecutive partitions with distinct owners (the usual N).
pub const DEFAULT_SPACING: usize = 3;
/// Largest number of partitions accepted: one per hash slot.
pub const MAX_PARTITIONS: usize = slot::SLOTS;

/// A physical node as the ring sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Node id.
    pub id: String,
    /// Relative capacity: a node of weight 2 owns twice the partitions of a node of weight 1.
    pub weight: u32,
    /// Rack or datacenter label; preference lists spread across zones when members have them.
    pub zone: Option<String>,
}

/// Why a ring cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// Q is not a power of two in range.
    #[error("partition count {q} must be a power of two between 1 and {MAX_PARTITIONS}")]
    PartitionCount {
        /// The value given.
        q: usize,
    },
    /// No members.
    #[error("a ring needs at least one member")]
    NoMembers,
    /// A member has weight 0.
    #[error("member {id} has weight 0")]
    ZeroWeight {
        /// The member.
        id: String,
    },
    /// An assignment names an owner that is not a member.
    #[error("partition owner {id} is not a member")]
    UnknownOwner {
        /// The owner.
        id: String,
    },
    /// Two members share an id.
    #[error("member {id} is listed twice")]
    Duplicate {
        /// The member.
        id: String,
    },
}

/// A partition assignment plus the preference list of every partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    members: Vec<Member>,
    /// Owner of each partition, as an index into `members`.
    owners: Vec<u16>,
    /// Preference list of each partition, as indices into `members`.
    preflists: Vec<Vec<u16>>,
}

impl Ring {
    /// Builds a ring of `q` partitions over `members`, keeping as much of `previous` as balance allows.
    /// `spacing` is how many consecutive partitions should have distinct owners (use the replication factor N).
    pub fn build(q: usize, members: Vec<Member>, previous: Option<&Ring>, spacing: usize) -> Result<Ring, RingError> {
        if !q.is_power_of_two() || q > MAX_PARTITIONS {
            return Err(RingError::PartitionCount { q });
        }
        let mut members = members;
        members.sort_by(|a, b| a.id.cmp(&b.id));
        if members.is_empty() {
            return Err(RingError::NoMembers);
        }
        for w in members.windows(2) {
            if w[0].id == w[1].id {
                return Err(RingError::Duplicate { id: w[0].id.clone() });
            }
        }
        if let Some(m) = members.iter().find(|m| m.weight == 0) {
            return Err(RingError::ZeroWeight { id: m.id.clone() });
        }
        let previous_owners: Option<Vec<Option<u16>>> = previous.filter(|p| p.owners.len() == q).map(|p| {
            let index: BTreeMap<&str, u16> =
                members.iter().enumerate().map(|(i, m)| (m.id.as_str(), i as u16)).collect();
            p.owners.iter().map(|&o| index.get(p.members[o as usize].id.as_str()).copied()).collect()
        });
        let owners = claim(q, &members, previous_owners.as_deref(), spacing.max(1));
        Ok(Ring::from_owners(members, owners))
    }

    /// A ring with an explicit assignment: `owners[p]` is the id of partition p's owner, one of `members`.
    pub fn from_assignment(members: Vec<Member>, owners: &[String]) -> Result<Ring, RingError> {
        let q = owners.len();
        if !q.is_power_of_two() || q > MAX_PARTITIONS {
            return Err(RingError::PartitionCount { q });
        }
        let mut members = members;
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let index: BTreeMap<&str, u16> = members.iter().enumerate().map(|(i, m)| (m.id.as_str(), i as u16)).collect();
        let owners = owners
            .iter()
            .map(|id| index.get(id.as_str()).copied().ok_or_else(|| RingError::UnknownOwner { id: id.clone() }))
            .collect::<Result<Vec<u16>, _>>()?;
        Ok(Ring::from_owners(members, owners))
    }

    /// The owner id of every partition, in partition order.
    pub fn assignment(&self) -> Vec<String> {
        self.owners.iter().map(|&o| self.members[o as usize].id.clone()).collect()
    }

    fn from_owners(members: Vec<Member>, owners: Vec<u16>) -> Ring {
        let q = owners.len();
        // A member without a zone is a zone of its own.
        let zone_of = |m: u16| -> &str {
            let member = &members[m as usize];
            member.zone.as_deref().unwrap_or(member.id.as_str())
        };
        let preflists = (0..q)
            .map(|p| {
                // Every member once, in clockwise order from p (paper §4.3)...
                let mut seen = vec![false; members.len()];
                let mut clockwise = Vec::with_capacity(members.len());
                for i in 0..q {
                    let o = owners[(p + i) % q];
                    if !seen[o as usize] {
                        seen[o as usize] = true;
                        clockwise.push(o);
                        if clockwise.len() == members.len() {
                            break;
                        }
                    }
                }
                // ...then reordered in rounds that take each zone at most once, keeping clockwise order within a
                // round, so the first N span as many zones as exist (the paper spreads replicas across
                // datacenters). Without zones this is the clockwise order itself.
                let mut list = Vec::with_capacity(clockwise.len());
                while !clockwise.is_empty() {
                    let mut used: Vec<&str> = Vec::new();
                    clockwise.retain(|&m| {
                        let z = zone_of(m);
                        if used.contains(&z) {
                            true
                        } else {
                            used.push(z);
                            list.push(m);
                            false
                        }
                    });
                }
                list
            })
            .collect();
        Ring { members, owners, preflists }
    }

    /// Number of partitions (Q).
    pub fn partitions(&self) -> usize {
        self.owners.len()
    }

    /// Members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The partition holding ring position `position`.
    pub fn partition_of(&self, position: u128) -> usize {
        let bits = self.owners.len().trailing_zeros();
        if bits == 0 { 0 } else { (position >> (128 - bits)) as usize }
    }

    /// The partition of a user key.
    pub fn partition_of_key(&self, key: &[u8]) -> usize {
        self.partition_of(slot::key_position(key))
    }

    /// First ring position of partition `p` (inclusive) and its last (inclusive).
    pub fn partition_range(&self, p: usize) -> (u128, u128) {
        let bits = self.owners.len().trailing_zeros();
        if bits == 0 {
            return (0, u128::MAX);
        }
        let width = 1u128 << (128 - bits);
        let start = (p as u128) * width;
        (start, start + (width - 1))
    }

    /// Owner of partition `p`.
    pub fn owner(&self, p: usize) -> &Member {
        &self.members[self.owners[p] as usize]
    }

    /// The preference list of partition `p`: every member once, clockwise from `p`, taking each zone once per round
    /// so the first N span as many zones as there are.
    pub fn preference_list(&self, p: usize) -> impl Iterator<Item = &Member> {
        self.preflists[p].iter().map(|&i| &self.members[i as usize])
    }

    /// The preference list of a key.
    pub fn preference_list_for_key(&self, key: &[u8]) -> impl Iterator<Item = &Member> {
        self.preference_list(self.partition_of_key(key))
    }

    /// Partitions owned per member id.
    pub fn ownership(&self) -> BTreeMap<&str, usize> {
        let mut counts: BTreeMap<&str, usize> = self.members.iter().map(|m| (m.id.as_str(), 0)).collect();
        for &o in &self.owners {
            *counts.get_mut(self.members[o as usize].id.as_str()).expect("owner is a member") += 1;
        }
        counts
    }

    /// Partitions whose owner differs between `self` and `next`: (partition, old owner, new owner).
    pub fn moves_to<'a>(&'a self, next: &'a Ring) -> Vec<(usize, &'a str, &'a str)> {
        (0..self.partitions().min(next.partitions()))
            .filter_map(|p| {
                let (a, b) = (self.owner(p).id.as_str(), next.owner(p).id.as_str());
                (a != b).then_some((p, a, b))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
