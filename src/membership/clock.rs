//! How far a peer's wall clock is from ours, read off one gossip exchange as NTP reads it off one sample.
//!
//! Deadlines (expiry) and last-writer-wins registers compare wall clocks of different nodes, so what they promise
//! holds up to the skew between those clocks. The skew is not controlled here (NTP's job) but measured, so that an
//! operator sees the bound the documentation states and a node warns when a peer drifts.

use serde::{Deserialize, Serialize};

/// When a peer's clock certainly differs from ours by more than this, the node logs a warning: expiry and
/// last-writer-wins are then off by more than half a second.
pub const SKEW_WARN_MS: u64 = 500;

/// One measurement of a peer's clock against ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReading {
    /// The peer's clock minus ours, in ms (positive: the peer is ahead).
    pub offset_ms: i64,
    /// How far the true offset may be from `offset_ms`: half the exchange's round trip, since the peer read its
    /// clock at some moment between our send and our receive.
    pub error_ms: u64,
}

impl ClockReading {
    /// The reading of one exchange: we sent at `sent_ms` and received at `received_ms` (our clock), and the peer
    /// answered with its clock at `remote_ms`. Assumes the peer read its clock halfway through the round trip.
    pub fn from_exchange(sent_ms: u64, remote_ms: u64, received_ms: u64) -> Self {
        // Our clock may step back between the two reads (NTP): the round trip is then taken as zero.
        let round_trip = received_ms.saturating_sub(sent_ms);
        let midpoint = sent_ms + round_trip / 2;
        ClockReading { offset_ms: remote_ms as i64 - midpoint as i64, error_ms: round_trip.div_ceil(2) }
    }

    /// The most the two clocks can differ, given this reading.
    pub fn bound_ms(&self) -> u64 {
        self.offset_ms.unsigned_abs() + self.error_ms
    }

    /// The least the two clocks differ, given this reading: a slow exchange widens the error, not this.
    pub fn least_ms(&self) -> u64 {
        self.offset_ms.unsigned_abs().saturating_sub(self.error_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_ahead_by_a_second_reads_as_plus_a_second_within_half_the_round_trip() {
        // Sent at 10_000, the peer (1 s ahead) answered at its 11_003, received at 10_006.
        let r = ClockReading::from_exchange(10_000, 11_003, 10_006);
        assert_eq!(r, ClockReading { offset_ms: 1_000, error_ms: 3 });
        assert_eq!(r.bound_ms(), 1_003);
        assert_eq!(r.least_ms(), 997);
    }

    #[test]
    fn a_peer_behind_reads_negative_and_the_bound_is_its_magnitude() {
        let r = ClockReading::from_exchange(10_000, 9_751, 10_002);
        assert_eq!(r, ClockReading { offset_ms: -250, error_ms: 1 });
        assert_eq!(r.bound_ms(), 251);
        assert_eq!(ClockReading { offset_ms: 3, error_ms: 40 }.least_ms(), 0);
    }

    #[test]
    fn an_odd_round_trip_rounds_the_error_up_and_a_clock_step_back_counts_as_no_round_trip() {
        assert_eq!(ClockReading::from_exchange(0, 1, 3).error_ms, 2);
        assert_eq!(ClockReading::from_exchange(100, 100, 90), ClockReading { offset_ms: 0, error_ms: 0 });
    }
}
