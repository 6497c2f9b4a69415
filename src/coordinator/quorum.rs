//! Quorum tracking as pure state machines (paper §4.5): fed replies in any order, they say when R or W was
//! reached, when it can no longer be, and which replicas a read found stale.

use crate::versioning::Siblings;

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
#[derive(Debug)]
pub struct ReadQuorum {
    needed: usize,
    total: usize,
    failures: usize,
    /// (replica index, its state) for every successful reply.
    replies: Vec<(usize, Option<Siblings>)>,
    /// Index of the first replica that answered.
    first: Option<usize>,
}

impl ReadQuorum {
    /// Starts a read of `total` replicas needing `needed` replies.
    pub fn new(needed: usize, total: usize) -> Self {
        Self { needed, total, failures: 0, replies: Vec::with_capacity(total), first: None }
    }

    /// Records replica `idx`'s answer (`None` state: it never stored the key; `Err`: no answer).
    pub fn on_reply(&mut self, idx: usize, reply: Result<Option<Siblings>, ()>) -> Progress {
        match reply {
            Ok(state) => {
                self.first.get_or_insert(idx);
                self.replies.push((idx, state));
            }
            Err(()) => self.failures += 1,
        }
        self.progress()
    }

    /// The current decision.
    pub fn progress(&self) -> Progress {
        if self.replies.len() >= self.needed {
            Progress::Reached
        } else if self.total - self.failures < self.needed {
            Progress::Failed { needed: self.needed, got: self.replies.len() }
        } else {
            Progress::Pending
        }
    }

    /// The merge of every state received; `None` when no replica had the key.
    pub fn merged(&self) -> Option<Siblings> {
        let mut out: Option<Siblings> = None;
        for (_, s) in &self.replies {
            if let Some(s) = s {
                out.get_or_insert_with(Siblings::new).merge(s);
            }
        }
        out
    }

    /// Successful replies so far.
    pub fn successes(&self) -> usize {
        self.replies.len()
    }

    /// Index of the first replica that answered.
    pub fn first_replier(&self) -> Option<usize> {
        self.first
    }

    /// Replicas that answered with a state other than `merged` (read repair targets).
    pub fn stale(&self, merged: &Siblings) -> Vec<usize> {
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

    /// Acknowledgements so far.
    pub fn acks(&self) -> usize {
        self.acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::versioning::{Actor, Dot, VersionVector};
    use bytes::Bytes;

    /// A state holding one version written by `actor` (distinct actors: concurrent states).
    fn state(actor: u64) -> Siblings {
        let mut s = Siblings::new();
        s.update(
            &VersionVector::new(),
            Dot { actor: Actor(actor), counter: 1 },
            0,
            Some(Bytes::from(actor.to_string())),
        );
        s
    }

    #[test]
    fn read_reaches_r_and_finds_stale_replicas() {
        let mut q = ReadQuorum::new(2, 3);
        assert_eq!(q.on_reply(2, Ok(Some(state(1)))), Progress::Pending);
        assert_eq!(q.on_reply(0, Ok(None)), Progress::Reached);
        let merged = q.merged().unwrap();
        assert_eq!(q.stale(&merged), vec![0]);
        assert_eq!(q.first_replier(), Some(2));
        // A late, newer reply joins the merge; both earlier replicas are now stale.
        q.on_reply(1, Ok(Some(state(2))));
        let merged = q.merged().unwrap();
        assert_eq!(merged.sibling_count(), 2);
        assert_eq!(q.stale(&merged), vec![2, 0, 1]);
    }

    #[test]
    fn read_fails_when_r_is_out_of_reach() {
        let mut q = ReadQuorum::new(2, 3);
        assert_eq!(q.on_reply(0, Err(())), Progress::Pending);
        assert_eq!(q.on_reply(1, Err(())), Progress::Failed { needed: 2, got: 0 });
        let q = ReadQuorum::new(2, 1);
        assert_eq!(q.progress(), Progress::Failed { needed: 2, got: 0 }, "fewer replicas than R");
        assert!(ReadQuorum::new(1, 1).merged().is_none());
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
