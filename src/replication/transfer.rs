//! One pull of a key range from one source, as a pure state machine (the handoff driver in [`super::handoff`]
//! performs what it asks for and reports what came back):
//!
//! 1. stream the range batch by batch, from the saved cursor if a crash broke an earlier pull, saving the cursor
//!    after every batch;
//! 2. compare this node's digest of the range with the source's;
//! 3. if they differ (this node may hold newer or extra states, or writes raced the stream), stream the whole range
//!    once more: that check pass must change nothing, or the transfer fails and is retried later.
//!
//! The source failing at any step ends the pull with [`Next::SourceFailed`]: the driver tries another source. A
//! ring change (a new plan replaced the one the transfer belongs to) ends it with [`Next::Superseded`]: the new
//! plan's transfers start afresh.

use bytes::Bytes;

/// What the driver does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// Ask the source for the batch after storage key `after` (`None`: from the start of the range), and merge it.
    Batch {
        /// The last key already received.
        after: Option<Bytes>,
    },
    /// Compare this node's digest of the range with the source's.
    Compare,
    /// The range is here and verified.
    Done,
    /// The source failed (or this node could not take a batch): another source may serve.
    SourceFailed,
    /// The check pass still changed keys: the transfer did not verify.
    Unverified {
        /// Keys the check pass changed.
        changed: u64,
    },
    /// The ring changed under the pull: the transfer belongs to a plan that no longer stands.
    Superseded,
}

/// What the driver records on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Persist the cursor: a pull broken after this resumes from this key.
    SaveCursor(Bytes),
    /// The pull is over: forget its cursor.
    ForgetCursor,
}

/// Which step a pull is at (what the admin views show).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Receiving the range.
    Streaming,
    /// Comparing digests, or passing over the range again to check it.
    Verifying,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Streaming { after: Option<Bytes> },
    Comparing,
    Checking { after: Option<Bytes>, changed: u64 },
    Over(Next),
}

/// One pull of one range from one source.
#[derive(Clone, Debug)]
pub struct Pull {
    state: State,
}

impl Pull {
    /// A pull starting after `resume` (the cursor an earlier, broken pull saved), or from the start.
    pub fn new(resume: Option<Bytes>) -> Pull {
        Pull { state: State::Streaming { after: resume } }
    }

    /// What to do next.
    pub fn next(&self) -> Next {
        match &self.state {
            State::Streaming { after } | State::Checking { after, .. } => Next::Batch { after: after.clone() },
            State::Comparing => Next::Compare,
            State::Over(next) => next.clone(),
        }
    }

    /// Which step the pull is at.
    pub fn step(&self) -> Step {
        match self.state {
            State::Streaming { .. } => Step::Streaming,
            _ => Step::Verifying,
        }
    }

    /// The batch asked for arrived and was merged: `last` is its last storage key (`None`: it was empty), `done`
    /// whether the range ended with it, `changed` how many keys merging it changed here.
    pub fn on_batch(&mut self, last: Option<Bytes>, done: bool, changed: u64) -> Vec<Effect> {
        if !matches!(self.state, State::Streaming { .. } | State::Checking { .. }) {
            return Vec::new();
        }
        let mut effects: Vec<Effect> = last.iter().cloned().map(Effect::SaveCursor).collect();
        self.state = match std::mem::replace(&mut self.state, State::Comparing) {
            State::Streaming { after } if !done => State::Streaming { after: last.or(after) },
            State::Streaming { .. } => State::Comparing,
            State::Checking { after, changed: before } if !done => {
                State::Checking { after: last.or(after), changed: before + changed }
            }
            State::Checking { changed: before, .. } => match before + changed {
                0 => {
                    effects.push(Effect::ForgetCursor);
                    State::Over(Next::Done)
                }
                changed => State::Over(Next::Unverified { changed }),
            },
            other => other,
        };
        effects
    }

    /// The digests were compared: equal, the range is verified; different, a check pass follows.
    pub fn on_compare(&mut self, equal: bool) -> Vec<Effect> {
        if self.state != State::Comparing {
            return Vec::new();
        }
        if equal {
            self.state = State::Over(Next::Done);
            vec![Effect::ForgetCursor]
        } else {
            self.state = State::Checking { after: None, changed: 0 };
            Vec::new()
        }
    }

    /// The ring moved on (a new plan, or another plan won) while the pull ran: it ends, and its cursor goes (a
    /// cursor belongs to one plan's transfer). What it merged stays merged: merging is never wrong.
    pub fn on_ring_changed(&mut self) -> Vec<Effect> {
        if matches!(self.state, State::Over(_)) {
            return Vec::new();
        }
        self.state = State::Over(Next::Superseded);
        vec![Effect::ForgetCursor]
    }

    /// The source did not answer (or answered something else), or this node could not merge what it sent.
    pub fn on_failure(&mut self) {
        if !matches!(self.state, State::Over(_)) {
            self.state = State::Over(Next::SourceFailed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn a_clean_pull_streams_compares_equal_and_forgets_its_cursor() {
        let mut p = Pull::new(None);
        assert_eq!(p.next(), Next::Batch { after: None });
        assert_eq!(p.on_batch(Some(k("a")), false, 3), vec![Effect::SaveCursor(k("a"))]);
        assert_eq!(p.next(), Next::Batch { after: Some(k("a")) });
        assert_eq!(p.step(), Step::Streaming);
        assert_eq!(p.on_batch(Some(k("b")), true, 2), vec![Effect::SaveCursor(k("b"))]);
        assert_eq!(p.next(), Next::Compare);
        assert_eq!(p.step(), Step::Verifying);
        assert_eq!(p.on_compare(true), vec![Effect::ForgetCursor]);
        assert_eq!(p.next(), Next::Done);
    }

    #[test]
    fn a_broken_pull_resumes_after_its_saved_cursor() {
        let mut p = Pull::new(Some(k("m")));
        assert_eq!(p.next(), Next::Batch { after: Some(k("m")) });
        // An empty last batch keeps the cursor where it was.
        assert_eq!(p.on_batch(None, false, 0), vec![]);
        assert_eq!(p.next(), Next::Batch { after: Some(k("m")) });
    }

    #[test]
    fn a_digest_mismatch_passes_over_the_whole_range_again_and_verifies_when_it_changes_nothing() {
        let mut p = Pull::new(None);
        p.on_batch(Some(k("z")), true, 5);
        assert_eq!(p.on_compare(false), vec![]);
        assert_eq!(p.next(), Next::Batch { after: None }, "the check pass starts from the beginning");
        p.on_batch(Some(k("m")), false, 0);
        assert_eq!(p.next(), Next::Batch { after: Some(k("m")) });
        assert_eq!(p.on_batch(Some(k("z")), true, 0), vec![Effect::SaveCursor(k("z")), Effect::ForgetCursor]);
        assert_eq!(p.next(), Next::Done);
    }

    #[test]
    fn a_check_pass_that_changes_keys_does_not_verify() {
        let mut p = Pull::new(None);
        p.on_batch(Some(k("z")), true, 5);
        p.on_compare(false);
        p.on_batch(Some(k("m")), false, 2);
        p.on_batch(Some(k("z")), true, 1);
        assert_eq!(p.next(), Next::Unverified { changed: 3 });
    }

    #[test]
    fn a_source_failing_at_any_step_ends_the_pull_for_another_source() {
        for failing_step in 0..4 {
            let mut p = Pull::new(None);
            let steps: [&dyn Fn(&mut Pull); 3] =
                [&|p| drop(p.on_batch(Some(k("a")), false, 1)), &|p| drop(p.on_batch(Some(k("b")), true, 1)), &|p| {
                    drop(p.on_compare(false))
                }];
            for step in steps.iter().take(failing_step) {
                step(&mut p);
            }
            p.on_failure();
            assert_eq!(p.next(), Next::SourceFailed, "failure after {failing_step} steps");
            // Nothing revives it.
            p.on_batch(Some(k("c")), true, 0);
            p.on_compare(true);
            assert_eq!(p.next(), Next::SourceFailed);
        }
    }

    #[test]
    fn a_ring_change_mid_pull_ends_it_at_any_step_and_drops_its_cursor() {
        for step in 0..3 {
            let mut p = Pull::new(None);
            if step >= 1 {
                p.on_batch(Some(k("a")), false, 1);
            }
            if step >= 2 {
                p.on_batch(Some(k("b")), true, 1);
                p.on_compare(false);
            }
            assert_eq!(p.on_ring_changed(), vec![Effect::ForgetCursor], "after {step} steps");
            assert_eq!(p.next(), Next::Superseded);
            // Late answers of the old plan's source change nothing.
            assert_eq!(p.on_batch(Some(k("c")), true, 0), vec![]);
            p.on_failure();
            assert_eq!(p.next(), Next::Superseded);
        }
        let mut done = Pull::new(None);
        done.on_batch(None, true, 0);
        done.on_compare(true);
        assert_eq!(done.on_ring_changed(), vec![], "a verified pull stays done");
        assert_eq!(done.next(), Next::Done);
    }

    #[test]
    fn a_finished_pull_stays_finished() {
        let mut p = Pull::new(None);
        p.on_batch(None, true, 0);
        p.on_compare(true);
        p.on_failure();
        assert_eq!(p.next(), Next::Done);
    }
}
