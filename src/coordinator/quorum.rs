//! Quorum tracking as pure state machines (paper §4.5): fed replies in any order, they say when R or W was
//! reached, when it can no longer be, and which replicas a read found stale.

use crate::crdt::rows::Rows;
pub use crate::replication::replica::ReplicaRead;
use crate::versioning::Siblings;

/// What a read collects from replicas: a key row's state, or rows of a collection. Replies merge by the join.
pub trait State: Clone + PartialEq + Default {
    /// Merges another replica's state into this one.
    fn join(&mut self, other: &Self);
}

impl State for Siblings {
    fn join(&mut self, other: &Self) {
        self.merge(other);
    }
}

impl State for Rows {
    fn join(&mut self, other: &Self) {
        self.merge(other);
    }
}

impl State for crate::replication::replica::Counted {
    fn join(&mut self, other: &Self) {
        crate::replication::replica::Counted::join(self, other);
    }
}

/// Where a quorum stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Not decided yet.
    Pending,
    /// Enough successes.
    Reached,
    /// Too many failures: `got` successes out of `needed`, and no more can come.
    Failed {
        /// Successes required.
        needed: usize,
        /// Successes received.
        got: usize,
    },
}

/// A read waiting for `needed` of `total` replicas.
///
/// The rule that keeps a read from reporting a stored key as absent: a reply counts toward R when it holds a state
/// (what a replica holds is never a lie, only possibly stale) or when its replica vouches for its not-found. A
/// not-found that cannot be vouched for counts for nothing: the read waits for a replica that can answer, and fails
/// with the number of such answers when none comes.
#[derive(Debug)]
pub struct ReadQuorum<S = Siblings> {
    needed: usize,
    total: usize,
    failures: usize,
    /// Replies that count toward `needed`.
    counted: usize,
    /// Not-found replies that could not be vouched for.
    unproven: usize,
    /// (replica index, its state) for every reply.
    replies: Vec<(usize, Option<S>)>,
    /// Index of the first replica whose reply counted.
    first: Option<usize>,
}

impl<S: State> ReadQuorum<S> {
    /// Starts a read of `total` replicas needing `needed` replies.
    pub fn new(needed: usize, total: usize) -> Self {
        Self { needed, total, failures: 0, counted: 0, unproven: 0, replies: Vec::with_capacity(total), first: None }
    }

    /// Records replica `idx`'s answer (`Err`: no answer).
    pub fn on_reply(&mut self, idx: usize, reply: Result<ReplicaRead<S>, ()>) -> Progress {
        match reply {
            Ok(ReplicaRead { state, vouches }) => {
                if state.is_some() || vouches {
                    self.counted += 1;
                    self.first.get_or_insert(idx);
                } else {
                    self.unproven += 1;
                }
                self.replies.push((idx, state));
            }
            Err(()) => self.failures += 1,
        }
        self.progress()
    }

    /// The current decision.
    pub fn progress(&self) -> Progress {
        let outstanding = self.total - self.replies.len() - self.failures;
        if self.counted >= self.needed {
            Progress::Reached
        } else if self.counted + outstanding < self.needed {
            Progress::Failed { needed: self.needed, got: self.counted }
        } else {
            Progress::Pending
        }
    }

    /// The merge of every state received; `None` when no replica had the key.
    pub fn merged(&self) -> Option<S> {
        let mut out: Option<S> = None;
        for (_, s) in &self.replies {
            if let Some(s) = s {
                out.get_or_insert_with(S::default).join(s);
            }
        }
        out
    }

    /// As [`merged`](Self::merged), but takes the states out: the quorum holds none afterwards, so only for an
    /// answer after which nothing asks it again (a read with no repair to make).
    pub fn take_merged(&mut self) -> Option<S> {
        let mut states = self.replies.iter_mut().filter_map(|(_, s)| s.take());
        let mut out = states.next()?;
        for s in states {
            out.join(&s);
        }
        Some(out)
    }

    /// Replies the read waits for (R).
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Replies that counted toward the quorum so far.
    pub fn successes(&self) -> usize {
        self.counted
    }

    /// Not-found replies that did not count: no replica could vouch for them.
    pub fn unproven(&self) -> usize {
        self.unproven
    }

    /// Index of the first replica whose reply counted.
    pub fn first_replier(&self) -> Option<usize> {
        self.first
    }

    /// Replicas that answered with a state other than `merged` (read repair targets).
    pub fn stale(&self, merged: &S) -> Vec<usize> {
        self.replies.iter().filter(|(_, s)| s.as_ref() != Some(merged)).map(|(i, _)| *i).collect()
    }
}

/// A write waiting for `needed` acknowledgements out of `total` replicas.
#[derive(Debug)]
pub struct WriteQuorum {
    needed: usize,
    total: usize,
    acks: usize,
    failures: usize,
}

impl WriteQuorum {
    /// Starts a write to `total` replicas needing `needed` acknowledgements.
    pub fn new(needed: usize, total: usize) -> Self {
        Self { needed, total, acks: 0, failures: 0 }
    }

    /// Records one replica's outcome.
    pub fn on_ack(&mut self, ok: bool) -> Progress {
        if ok {
            self.acks += 1;
        } else {
            self.failures += 1;
        }
        self.progress()
    }

    /// The current decision.
    pub fn progress(&self) -> Progress {
        if self.acks >= self.needed {
            Progress::Reached
        } else if self.total - self.failures < self.needed {
            Progress::Failed { needed: self.needed, got: self.acks }
        } else {
            Progress::Pending
        }
    }

    /// Acknowledgements the write waits for (W).
    pub fn needed(&self) -> usize {
        self.needed
    }

    /// Acknowledgements so far.
    pub fn acks(&self) -> usize {
        self.acks
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::versioning::{Actor, Dot, VersionVector};
    use bytes::Bytes;

    /// A state holding one version written by `actor` (distinct actors: concurrent states).
    pub(crate) fn state(actor: u64) -> Siblings {
        let mut s = Siblings::new();
        s.update(
            &VersionVector::new(),
            Dot { actor: Actor(actor), counter: 1 },
            0,
            Some(Bytes::from(actor.to_string())),
        );
        s
    }

    pub(crate) fn found(actor: u64) -> Result<ReplicaRead, ()> {
        Ok(ReplicaRead { state: Some(state(actor)), vouches: true })
    }

    /// A replica that holds its range in full and does not have the key.
    pub(crate) fn absent() -> Result<ReplicaRead, ()> {
        Ok(ReplicaRead { state: None, vouches: true })
    }

    /// A fallback without a hint, or a replica recovering from a wipe: "not found" proves nothing.
    fn unproven() -> Result<ReplicaRead, ()> {
        Ok(ReplicaRead { state: None, vouches: false })
    }

    #[test]
    fn read_reaches_r_and_finds_stale_replicas() {
        let mut q = ReadQuorum::<Siblings>::new(2, 3);
        assert_eq!(q.on_reply(2, found(1)), Progress::Pending);
        assert_eq!(q.on_reply(0, absent()), Progress::Reached);
        let merged = q.merged().unwrap();
        assert_eq!(q.stale(&merged), vec![0]);
        assert_eq!(q.first_replier(), Some(2));
        // A late, newer reply joins the merge; both earlier replicas are now stale.
        q.on_reply(1, found(2));
        let merged = q.merged().unwrap();
        assert_eq!(merged.sibling_count(), 2);
        assert_eq!(q.stale(&merged), vec![2, 0, 1]);
    }

    #[test]
    fn read_fails_when_r_is_out_of_reach() {
        let mut q = ReadQuorum::<Siblings>::new(2, 3);
        assert_eq!(q.on_reply(0, Err(())), Progress::Pending);
        assert_eq!(q.on_reply(1, Err(())), Progress::Failed { needed: 2, got: 0 });
        let q = ReadQuorum::<Siblings>::new(2, 1);
        assert_eq!(q.progress(), Progress::Failed { needed: 2, got: 0 }, "fewer replicas than R");
        assert!(ReadQuorum::<Siblings>::new(1, 1).merged().is_none());
    }

    #[test]
    fn absent_only_when_replicas_that_could_hold_the_key_say_so() {
        let mut q = ReadQuorum::<Siblings>::new(2, 3);
        assert_eq!(q.on_reply(0, absent()), Progress::Pending);
        assert_eq!(q.on_reply(1, absent()), Progress::Reached);
        assert!(q.merged().is_none(), "two vouched not-founds: the key is absent");
    }

    #[test]
    fn fallback_not_founds_are_no_quorum() {
        // The minority side of a partition: one primary answers, two fallbacks without hints stand in for the rest.
        let mut q = ReadQuorum::<Siblings>::new(2, 3);
        assert_eq!(q.on_reply(1, unproven()), Progress::Pending);
        let out_of_reach = Progress::Failed { needed: 2, got: 0 };
        assert_eq!(q.on_reply(2, unproven()), out_of_reach, "two hint-less fallbacks can never make R=2");
        assert_eq!(q.on_reply(0, found(1)), Progress::Failed { needed: 2, got: 1 });
        assert_eq!(q.unproven(), 2);
        assert_eq!(q.first_replier(), Some(0), "a reply that did not count is nobody's preferred coordinator");
        // A fallback that holds a hint answers with what it holds, and that counts.
        let mut q = ReadQuorum::<Siblings>::new(2, 3);
        q.on_reply(1, Ok(ReplicaRead { state: Some(state(7)), vouches: false }));
        assert_eq!(q.on_reply(0, absent()), Progress::Reached);
        assert_eq!(q.merged().unwrap().sibling_count(), 1);
    }

    #[test]
    fn a_primary_that_answers_late_is_waited_for() {
        // Three primaries and one fallback asked (a primary was believed down). The fallback and one primary answer
        // first, both not-found; only the vouched one counts, so the read waits for the late primary, whose value
        // then is the answer rather than a false "absent".
        let mut q = ReadQuorum::<Siblings>::new(2, 4);
        assert_eq!(q.on_reply(3, unproven()), Progress::Pending);
        assert_eq!(q.on_reply(0, absent()), Progress::Pending);
        assert_eq!(q.on_reply(1, found(5)), Progress::Reached);
        assert_eq!(q.merged().unwrap().live_values().count(), 1);
        assert_eq!(q.stale(&q.merged().unwrap()), vec![3, 0], "both not-found repliers are repair targets");
    }

    #[test]
    fn a_wiped_primary_does_not_make_a_key_absent() {
        // The wiped primary (recovering) and a primary that missed the write answer; the one that has it is cut off.
        let mut q = ReadQuorum::<Siblings>::new(2, 3);
        assert_eq!(q.on_reply(1, unproven()), Progress::Pending);
        assert_eq!(q.on_reply(2, absent()), Progress::Pending);
        assert_eq!(q.on_reply(0, Err(())), Progress::Failed { needed: 2, got: 1 });
        assert_eq!(q.unproven(), 1);
    }

    #[test]
    fn write_counts_acks() {
        let mut q = WriteQuorum::new(2, 3);
        assert_eq!(q.on_ack(true), Progress::Pending);
        assert_eq!(q.on_ack(false), Progress::Pending);
        assert_eq!(q.on_ack(true), Progress::Reached);
        let mut q = WriteQuorum::new(3, 3);
        q.on_ack(true);
        assert_eq!(q.on_ack(false), Progress::Failed { needed: 3, got: 1 });
    }
}
