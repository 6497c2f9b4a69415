//! The anti-entropy scheduler's decisions (pure): which partition a pass exchanges, whether it may reap, and whether
//! the next pass follows at once. The driver in [`super::AntiEntropy`] runs the exchanges between them.

/// Picks the partition of the next pass: the recovering ones first (each counts once it has met every other
/// replica), else every partition this node replicates, in turn by `cursor`. Returns it and whether this pass ends
/// a full round over the list (`None`: nothing to exchange).
pub fn pick(mine: &[usize], recovering: &[usize], cursor: usize) -> Option<(usize, bool)> {
    let list = if recovering.is_empty() { mine } else { recovering };
    if list.is_empty() {
        return None;
    }
    Some((list[cursor % list.len()], (cursor + 1).is_multiple_of(list.len())))
}

/// What the exchanges of one pass over a partition found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassFound {
    /// The partition's replicas, this node included.
    pub replicas: usize,
    /// Other replicas believed reachable, each of which was asked.
    pub asked: usize,
    /// Exchanges that completed.
    pub exchanged: usize,
    /// Of those, the ones that found every leaf equal.
    pub in_sync: usize,
}

impl PassFound {
    /// Tombstones may be reaped only on proof that every replica holds the same states: every other replica was
    /// asked and every exchange completed finding nothing to repair.
    pub fn may_reap(&self) -> bool {
        self.asked + 1 == self.replicas && self.exchanged == self.asked && self.in_sync == self.exchanged
    }

    /// Whether the next pass may follow at once (an urgent or recovering node's passes run back to back): never
    /// after a pass that reached no other replica, which would otherwise spin without ever awaiting.
    pub fn next_at_once(&self, wants_more: bool) -> bool {
        let lone = self.replicas <= 1;
        wants_more && (lone || self.exchanged > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovering_partitions_go_first_and_rounds_are_counted() {
        assert_eq!(pick(&[], &[], 0), None);
        assert_eq!(pick(&[1, 2, 3], &[], 0), Some((1, false)));
        assert_eq!(pick(&[1, 2, 3], &[], 2), Some((3, true)));
        assert_eq!(pick(&[1, 2, 3], &[], 4), Some((2, false)));
        assert_eq!(pick(&[1, 2, 3], &[7], 5), Some((7, true)));
    }

    #[test]
    fn reaping_needs_every_replica_reached_and_in_sync() {
        let all = PassFound { replicas: 3, asked: 2, exchanged: 2, in_sync: 2 };
        assert!(all.may_reap());
        assert!(!PassFound { asked: 1, exchanged: 1, in_sync: 1, ..all }.may_reap(), "one replica unreachable");
        assert!(!PassFound { exchanged: 1, in_sync: 1, ..all }.may_reap(), "one exchange failed");
        assert!(!PassFound { in_sync: 1, ..all }.may_reap(), "one exchange repaired something");
        assert!(PassFound { replicas: 1, ..PassFound::default() }.may_reap(), "the only replica");
    }

    #[test]
    fn a_pass_that_reached_nobody_waits_before_the_next() {
        let cut_off = PassFound { replicas: 3, asked: 0, exchanged: 0, in_sync: 0 };
        assert!(!cut_off.next_at_once(true));
        let backing_off = PassFound { replicas: 3, asked: 2, exchanged: 0, in_sync: 0 };
        assert!(!backing_off.next_at_once(true));
        let reached = PassFound { replicas: 3, asked: 2, exchanged: 1, in_sync: 0 };
        assert!(reached.next_at_once(true));
        assert!(!reached.next_at_once(false));
        assert!(PassFound { replicas: 1, ..PassFound::default() }.next_at_once(true), "the only replica");
    }
}
