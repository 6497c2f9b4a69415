//! Membership (L0, pure): who the members are and how they agree on it.
//!
//! * [`PeerInfo`]: a member's identity and addresses.
//! * [`state::ClusterState`]: the gossiped state (member records, the versioned ring and its transition), a
//!   join-semilattice so gossip converges whatever the delivery order.
//! * [`gossip::Gossip`]: the I/O-free protocol (tick / receive) that spreads it; the `cluster` module drives it
//!   over the network.
//! * [`clock::ClockReading`]: a peer's clock offset, measured on each gossip exchange.

pub mod clock;
pub mod gossip;
pub mod state;

use serde::{Deserialize, Serialize};

use crate::ring::Member;

pub use clock::ClockReading;
pub use gossip::{Gossip, Target};
pub use state::{ClusterState, MemberRecord, MemberStatus, RingState, StateError, Transfer, WriteNotice};

/// How a peer is reached and what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// Ring identity: id, weight, zone.
    pub member: Member,
    /// Address RESP clients use.
    pub client_addr: String,
    /// Address of the internal protocol.
    pub peer_addr: String,
}
