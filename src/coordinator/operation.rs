//! One quorum operation as a pure machine (paper §4.5, §4.6): planned from the key's preference list, fed each
//! replica's reply, it says when to answer the client (once), and what the answer leaves to do: the replicas to
//! repair after a read, the copies to keep as hints after a write. The coordinator's async code only sends what the
//! plan says, feeds back what arrives, and carries out the effects.

use super::plan::stand_ins;
use super::quorum::{Progress, ReadQuorum, State, WriteQuorum};
use crate::replication::replica::ReplicaRead;
use crate::rpc::RemoteErrorKind;
use crate::versioning::Siblings;

/// A node of the key's preference list, as the operation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// This node.
    pub local: bool,
    /// It can take part (the local node always can; another when the operation's liveness test says so:
    /// reachable for a read, reachable and taking writes for a write).
    pub usable: bool,
}

/// Why a quorum was not met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumFailure {
    /// Fewer replicas answered (or exist) than the quorum needs.
    Unavailable {
        /// Replies or acknowledgements required.
        needed: usize,
        /// Received.
        got: usize,
    },
    /// A read reached too few replicas that can vouch for a "not found" (see [`ReadQuorum`]).
    Unproven {
        /// Replies required.
        needed: usize,
        /// Replies that counted.
        got: usize,
        /// Not-found replies that did not count.
        unproven: usize,
    },
}

/// One replica a read asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    /// Its index in the preference list.
    pub node: usize,
    /// It stands in for an unusable replica: it answers from its hints, never from its own store (which may keep a
    /// stale copy from an older ring), and its "not found" proves nothing.
    pub as_fallback: bool,
}

/// What a read answers: the merge of what the replicas that counted hold (`None`: none holds the key), and the
/// preference-list index of the replica whose reply counted first (the preferred coordinator of a write back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAnswer<S = Siblings> {
    /// The merged state.
    pub merged: Option<S>,
    /// Who answered first.
    pub first: Option<usize>,
}

/// A read of one key: every one of the top N is asked, even one believed down (it may answer after all, and only
/// replicas can vouch that a key is absent), and each unusable one also gets a stand-in past the top N.
#[derive(Debug)]
pub struct ReadOperation<S = Siblings> {
    asks: Vec<Ask>,
    quorum: ReadQuorum<S>,
    replied: usize,
    answered: bool,
}

impl<S: State> ReadOperation<S> {
    /// Plans a read needing `r` replies over a preference list whose first `n` nodes are the replicas.
    pub fn plan(list: &[Candidate], n: usize, r: usize) -> Self {
        let top = &list[..n.min(list.len())];
        let asks: Vec<Ask> = if top.iter().all(|c| c.usable) {
            // No stand-ins to find (the usual case, planned without the lists that takes).
            (0..top.len()).map(|node| Ask { node, as_fallback: false }).collect()
        } else {
            let usable: Vec<bool> = list.iter().map(|c| c.usable).collect();
            let mut asks = Vec::with_capacity(2 * top.len());
            for (i, stand_in) in stand_ins(&usable, n).into_iter().enumerate() {
                asks.push(Ask { node: i, as_fallback: false });
                if let Some(f) = stand_in {
                    asks.push(Ask { node: f, as_fallback: true });
                }
            }
            asks
        };
        let quorum = ReadQuorum::new(r, asks.len());
        Self { asks, quorum, replied: 0, answered: false }
    }

    /// Whom to ask, in order; replies are fed back by index in this list.
    pub fn asks(&self) -> &[Ask] {
        &self.asks
    }

    /// Records ask `i`'s reply (`Err`: none came). Returns the client's answer the first time one is decided.
    pub fn on_reply(
        &mut self,
        i: usize,
        reply: Result<ReplicaRead<S>, ()>,
    ) -> Option<Result<ReadAnswer<S>, QuorumFailure>> {
        let reply = reply.map(|r| ReplicaRead { vouches: r.vouches && !self.asks[i].as_fallback, ..r });
        self.replied += 1;
        self.quorum.on_reply(i, reply);
        self.decide(false)
    }

    /// No more replies will come before the answer is due (the deadline passed): answers now if not yet.
    pub fn give_up(&mut self) -> Option<Result<ReadAnswer<S>, QuorumFailure>> {
        self.decide(true)
    }

    fn decide(&mut self, now: bool) -> Option<Result<ReadAnswer<S>, QuorumFailure>> {
        if self.answered {
            return None;
        }
        let answer = match self.quorum.progress() {
            Progress::Reached => {
                let first = self.quorum.first_replier().map(|i| self.asks[i].node);
                // The lone reply of a read with nothing else to come is the answer itself: there is nothing to
                // merge it with, and nothing left to repair (`settled`), so it is moved out, not copied.
                let merged = match self.complete() && self.replied == 1 {
                    true => self.quorum.take_merged(),
                    false => self.quorum.merged(),
                };
                Ok(ReadAnswer { merged, first })
            }
            Progress::Pending if !now => return None,
            Progress::Pending | Progress::Failed { .. } => Err(self.failure()),
        };
        self.answered = true;
        Some(answer)
    }

    fn failure(&self) -> QuorumFailure {
        let (needed, got, unproven) = (self.quorum.needed(), self.quorum.successes(), self.quorum.unproven());
        if unproven > 0 {
            QuorumFailure::Unproven { needed, got, unproven }
        } else {
            QuorumFailure::Unavailable { needed, got }
        }
    }

    /// Whether every ask has been answered.
    pub fn complete(&self) -> bool {
        self.replied == self.asks.len()
    }

    /// Whether nothing is left to do after the answer: every ask answered, all with the same state.
    pub fn settled(&self) -> bool {
        // One reply has nothing to differ from (and merging it again for the comparison was a tenth of a read).
        self.complete() && (self.replied <= 1 || self.repairs().is_empty())
    }

    /// Read repair, once the replies are in: each replica (never a stand-in) that answered with less than the merge
    /// of every reply, with the state to merge into it (preference-list index, state).
    pub fn repairs(&self) -> Vec<(usize, S)> {
        let Some(merged) = self.quorum.merged() else { return Vec::new() };
        let stale = self.quorum.stale(&merged).into_iter().filter(|&i| !self.asks[i].as_fallback);
        stale.map(|i| (self.asks[i].node, merged.clone())).collect()
    }
}

/// One copy a write sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Send {
    /// The target's index (the preference list, then the incoming replicas).
    pub to: usize,
    /// The replica the copy is for: `to` itself, or the unusable replica `to` stands in for (then `to` keeps it as
    /// a hint).
    pub intended: usize,
    /// Its acknowledgement counts toward W (a top-N replica or its stand-in; not an incoming replica).
    pub counts: bool,
}

impl Send {
    /// Whether the target stands in for another replica.
    pub fn stands_in(&self) -> bool {
        self.to != self.intended
    }
}

/// A write of one key, coordinated by one of its replicas: the local replica writes first, then the new state goes
/// to the other top-N replicas (a stand-in for each unusable one, which keeps a hint and counts toward W) and to
/// the replicas a transition is adding (which get every write but do not count until the flip). Every copy that
/// could not be delivered is kept here as a hint.
#[derive(Debug)]
pub struct WriteOperation {
    sends: Vec<Send>,
    quorum: WriteQuorum,
    /// Replicas to keep hints for: those without a stand-in at once, those whose copy failed as the acks arrive.
    hints: Vec<usize>,
    outstanding: usize,
    answered: bool,
}

impl WriteOperation {
    /// Plans a write needing `w` acknowledgements over a preference list whose first `n` nodes are the replicas,
    /// plus `incoming` replicas of a transition (numbered after the list). Refuses, before anything is written,
    /// when fewer replicas exist than W.
    pub fn plan(list: &[Candidate], n: usize, w: usize, incoming: usize) -> Result<Self, QuorumFailure> {
        let n = n.min(list.len());
        let mut quorum = WriteQuorum::new(w, n);
        if let Progress::Failed { needed, got } = quorum.progress() {
            return Err(QuorumFailure::Unavailable { needed, got });
        }
        let (mut sends, mut hints) = (Vec::new(), Vec::new());
        if list[..n].iter().all(|c| c.usable) {
            // No stand-ins to find (the usual case, planned without the lists that takes): a copy to each replica
            // but this node.
            sends.extend((0..n).filter(|&i| !list[i].local).map(|i| Send { to: i, intended: i, counts: true }));
            sends.extend((list.len()..list.len() + incoming).map(|i| Send { to: i, intended: i, counts: false }));
            let outstanding = sends.len();
            return Ok(Self { sends, quorum, hints, outstanding, answered: false });
        }
        let usable: Vec<bool> = list.iter().map(|c| c.usable).collect();
        for (i, stand_in) in stand_ins(&usable, n).into_iter().enumerate() {
            match (list[i].local, list[i].usable, stand_in) {
                // The local replica is the coordinator's own write: see `on_local_write`.
                (true, _, _) => {}
                (false, true, _) => sends.push(Send { to: i, intended: i, counts: true }),
                (false, false, Some(f)) => sends.push(Send { to: f, intended: i, counts: true }),
                (false, false, None) => {
                    // No fallback node left: the hint stays here and does not count toward W.
                    hints.push(i);
                    quorum.on_ack(false);
                }
            }
        }
        sends.extend((list.len()..list.len() + incoming).map(|i| Send { to: i, intended: i, counts: false }));
        let outstanding = sends.len();
        Ok(Self { sends, quorum, hints, outstanding, answered: false })
    }

    /// The copies to send; acknowledgements are fed back by index in this list.
    pub fn sends(&self) -> &[Send] {
        &self.sends
    }

    /// The local replica wrote (it is one of the top N): its acknowledgement.
    pub fn on_local_write(&mut self) -> Option<Result<(), QuorumFailure>> {
        self.quorum.on_ack(true);
        self.decide(false)
    }

    /// Records send `i`'s outcome. Returns the client's answer the first time one is decided.
    pub fn on_ack(&mut self, i: usize, ok: bool) -> Option<Result<(), QuorumFailure>> {
        let send = self.sends[i];
        self.outstanding -= 1;
        if !ok {
            self.hints.push(send.intended);
        }
        if send.counts {
            self.quorum.on_ack(ok);
        }
        self.decide(false)
    }

    /// No more acknowledgements will come before the answer is due: answers now if not yet.
    pub fn give_up(&mut self) -> Option<Result<(), QuorumFailure>> {
        self.decide(true)
    }

    fn decide(&mut self, now: bool) -> Option<Result<(), QuorumFailure>> {
        if self.answered {
            return None;
        }
        let answer = match self.quorum.progress() {
            Progress::Reached => Ok(()),
            Progress::Pending if !now && self.outstanding > 0 => return None,
            Progress::Failed { needed, got } => Err(QuorumFailure::Unavailable { needed, got }),
            Progress::Pending => {
                Err(QuorumFailure::Unavailable { needed: self.quorum.needed(), got: self.quorum.acks() })
            }
        };
        self.answered = true;
        Some(answer)
    }

    /// Whether every copy's outcome is known.
    pub fn complete(&self) -> bool {
        self.outstanding == 0
    }

    /// Takes the replicas to keep hints for so far (each returned once).
    pub fn take_hints(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.hints)
    }
}

/// Where a client write goes: coordinated here, or forwarded to the replicas in this order (an entry that is the
/// local node means: coordinate here after all, the replicas tried before it having failed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node is a replica taking writes, and no other replica is preferred.
    Here,
    /// Try these top-N indices in order.
    Forward(Vec<usize>),
}

/// Paper §6.4: the replica that answered the client's read first (`preferred`) coordinates its write, so the
/// client's next read likely sees it. Without such a hint (or when it is this node, or not usable), this node
/// coordinates when it is a replica taking writes, and forwards otherwise. A replica that is unreachable or whose
/// storage stopped writes (`usable` false) is tried only after every other: a forward to a partitioned peer would
/// wait out the whole timeout, for every write, until the partition heals.
pub fn route(replicas: &[Candidate], preferred: Option<usize>) -> Route {
    let hinted = preferred.filter(|&p| replicas.get(p).is_some_and(|c| !c.local && c.usable));
    if hinted.is_none() && replicas.iter().any(|c| c.local && c.usable) {
        return Route::Here;
    }
    let mut order: Vec<usize> = (0..replicas.len()).collect();
    if let Some(p) = hinted {
        order.retain(|&i| i != p);
        order.insert(0, p);
    }
    order.sort_by_key(|&i| !replicas[i].usable);
    Route::Forward(order)
}

/// How a write forwarded to one replica failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardFailure {
    /// The request never left this node (no connection, a failed handshake): the replica cannot have applied it.
    NotSent,
    /// The replica answered that it did not take the write.
    Refused(RemoteErrorKind),
    /// No answer came: the replica may have applied it.
    NoAnswer,
}

/// What follows a forward that failed at one replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterForward {
    /// Try the next replica of the route.
    TryNext,
    /// Give the client the failure: trying another replica could apply the write twice, or would be refused the
    /// same way.
    Fail,
}

/// The rule for a failed forward: another replica is tried only when this one certainly applied nothing and
/// another may do better (its ring view differs while a transition spreads, or its storage stopped writes).
pub fn after_forward(failure: ForwardFailure) -> AfterForward {
    match failure {
        ForwardFailure::NotSent => AfterForward::TryNext,
        ForwardFailure::Refused(RemoteErrorKind::Misdirected | RemoteErrorKind::WritesStopped) => AfterForward::TryNext,
        ForwardFailure::Refused(_) | ForwardFailure::NoAnswer => AfterForward::Fail,
    }
}

#[cfg(test)]
mod tests {
    use super::super::quorum::tests::{absent, found as holds, state};
    use super::*;

    fn node(local: bool, usable: bool) -> Candidate {
        Candidate { local, usable }
    }
    const ME: Candidate = Candidate { local: true, usable: true };
    const UP: Candidate = Candidate { local: false, usable: true };
    const DOWN: Candidate = Candidate { local: false, usable: false };

    #[test]
    fn a_read_asks_every_replica_and_a_stand_in_for_each_one_down() {
        let op = ReadOperation::<Siblings>::plan(&[ME, DOWN, UP, UP, UP], 3, 2);
        let asks = [
            Ask { node: 0, as_fallback: false },
            Ask { node: 1, as_fallback: false },
            Ask { node: 3, as_fallback: true },
            Ask { node: 2, as_fallback: false },
        ];
        assert_eq!(op.asks(), &asks);
    }

    #[test]
    fn a_read_answers_once_then_repairs_stale_replicas_but_never_a_stand_in() {
        let mut op = ReadOperation::<Siblings>::plan(&[ME, DOWN, UP, UP], 3, 2);
        // Asks: 0 (me), 1 (down), 2 (node 3 standing in for 1), 3 (node 2).
        assert_eq!(op.on_reply(0, holds(1)), None);
        let answer = op.on_reply(3, absent()).expect("R=2 reached").unwrap();
        assert_eq!(answer.first, Some(0));
        assert_eq!(answer.merged.unwrap().sibling_count(), 1);
        assert!(!op.settled(), "two asks outstanding");
        // The stand-in answers late with a newer hint, and the replica believed down answers after all: the answer
        // is not given twice, and the merge goes to every replica that lacks part of it, never to the stand-in.
        assert_eq!(op.on_reply(2, Ok(ReplicaRead { state: Some(state(2)), vouches: false })), None);
        assert_eq!(op.on_reply(1, Err(())), None);
        assert!(op.complete());
        let repaired: Vec<usize> = op
            .repairs()
            .into_iter()
            .map(|(node, s)| {
                assert_eq!(s.sibling_count(), 2);
                node
            })
            .collect();
        assert_eq!(repaired, vec![0, 2], "me and node 2; not node 3, the stand-in, nor node 1, which never answered");
    }

    #[test]
    fn a_stand_in_never_vouches_for_a_not_found() {
        // A fallback claiming to vouch (an older node, a bug) is not believed: its "not found" counts for nothing.
        let mut op = ReadOperation::<Siblings>::plan(&[DOWN, ME, UP, UP], 3, 2);
        // Asks: 0 (down), 1 (node 3 for 0), 2 (me), 3 (node 2).
        assert_eq!(op.on_reply(1, absent()), None);
        assert_eq!(op.on_reply(2, absent()), None);
        assert_eq!(op.on_reply(0, Err(())), None);
        let failure = QuorumFailure::Unproven { needed: 2, got: 1, unproven: 1 };
        assert_eq!(op.on_reply(3, Err(())), Some(Err(failure)));
    }

    #[test]
    fn a_read_past_its_deadline_fails_with_what_it_got() {
        let mut op = ReadOperation::<Siblings>::plan(&[ME, UP, UP], 3, 2);
        assert_eq!(op.on_reply(0, absent()), None);
        assert_eq!(op.give_up(), Some(Err(QuorumFailure::Unavailable { needed: 2, got: 1 })));
        assert_eq!(op.give_up(), None, "answered once");
        assert!(op.repairs().is_empty(), "nothing holds the key");
    }

    #[test]
    fn a_healthy_read_whose_replies_agree_is_settled() {
        let mut op = ReadOperation::<Siblings>::plan(&[ME, UP, UP], 3, 3);
        op.on_reply(1, holds(1));
        op.on_reply(2, holds(1));
        assert!(op.on_reply(0, holds(1)).is_some());
        assert!(op.settled());
    }

    #[test]
    fn a_lone_reply_is_the_answer_as_the_replica_holds_it_and_leaves_nothing_to_repair() {
        let mut op = ReadOperation::<Siblings>::plan(&[ME], 1, 1);
        assert_eq!(op.asks(), &[Ask { node: 0, as_fallback: false }]);
        let answer = op.on_reply(0, holds(3)).expect("R=1 reached").unwrap();
        assert_eq!(answer.merged, Some(state(3)));
        assert_eq!(answer.first, Some(0));
        assert!(op.settled());
        assert!(op.repairs().is_empty());
        // R=1 of N=3: the first reply answers, but the others are still to come and to compare, so it is kept.
        let mut op = ReadOperation::<Siblings>::plan(&[ME, UP, UP], 3, 1);
        assert_eq!(op.on_reply(0, holds(1)).expect("R=1 reached").unwrap().merged, Some(state(1)));
        op.on_reply(1, holds(1));
        op.on_reply(2, absent());
        assert_eq!(op.repairs(), vec![(2, state(1))], "the lone early answer is still there to repair with");
    }

    #[test]
    fn a_write_sends_to_every_replica_or_its_stand_in_and_to_incoming_ones() {
        let op = WriteOperation::plan(&[ME, DOWN, UP, UP], 3, 2, 1).unwrap();
        let sends = [
            Send { to: 3, intended: 1, counts: true },
            Send { to: 2, intended: 2, counts: true },
            Send { to: 4, intended: 4, counts: false },
        ];
        assert_eq!(op.sends(), &sends);
        assert!(sends[0].stands_in() && !sends[1].stands_in());
    }

    #[test]
    fn a_write_is_refused_before_writing_when_fewer_replicas_exist_than_w() {
        assert_eq!(
            WriteOperation::plan(&[ME, UP], 3, 3, 0).unwrap_err(),
            QuorumFailure::Unavailable { needed: 3, got: 0 }
        );
    }

    #[test]
    fn a_write_answers_at_w_and_hints_every_copy_not_delivered() {
        let mut op = WriteOperation::plan(&[ME, UP, UP, UP], 3, 2, 1).unwrap();
        // Sends: 0 → node 1, 1 → node 2, 2 → incoming node 4.
        assert_eq!(op.on_local_write(), None);
        assert_eq!(op.on_ack(2, true), None, "an incoming replica does not count toward W");
        assert_eq!(op.on_ack(0, false), None);
        assert_eq!(op.on_ack(1, true), Some(Ok(())));
        assert!(op.complete());
        assert_eq!(op.take_hints(), vec![1]);
        assert!(op.take_hints().is_empty(), "each hint once");
    }

    #[test]
    fn a_replica_without_a_stand_in_is_hinted_at_once_and_counts_as_a_failure() {
        let mut op = WriteOperation::plan(&[ME, DOWN, DOWN], 3, 2, 0).unwrap();
        assert!(op.sends().is_empty());
        assert_eq!(op.take_hints(), vec![1, 2]);
        assert_eq!(op.on_local_write(), Some(Err(QuorumFailure::Unavailable { needed: 2, got: 1 })));
        // With W=1 the local write alone answers.
        let mut op = WriteOperation::plan(&[ME, DOWN, DOWN], 3, 1, 0).unwrap();
        assert_eq!(op.on_local_write(), Some(Ok(())));
    }

    #[test]
    fn a_failed_copy_to_a_stand_in_is_hinted_for_the_replica_it_stood_in_for() {
        let mut op = WriteOperation::plan(&[ME, DOWN, UP, UP], 3, 3, 0).unwrap();
        op.on_local_write();
        assert_eq!(op.on_ack(0, false), Some(Err(QuorumFailure::Unavailable { needed: 3, got: 1 })));
        assert_eq!(op.on_ack(1, true), None);
        assert_eq!(op.take_hints(), vec![1], "for node 1, not for node 3 which stood in");
    }

    #[test]
    fn a_write_past_its_deadline_fails_with_the_acks_it_got() {
        let mut op = WriteOperation::plan(&[ME, UP, UP], 3, 3, 0).unwrap();
        op.on_local_write();
        op.on_ack(0, true);
        assert_eq!(op.give_up(), Some(Err(QuorumFailure::Unavailable { needed: 3, got: 2 })));
        assert!(!op.complete());
        assert_eq!(op.on_ack(1, false), None);
        assert_eq!(op.take_hints(), vec![2]);
    }

    #[test]
    fn a_forward_moves_on_only_when_nothing_can_have_been_applied_and_another_may_take_it() {
        use ForwardFailure::*;
        assert_eq!(after_forward(NotSent), AfterForward::TryNext);
        assert_eq!(after_forward(Refused(RemoteErrorKind::Misdirected)), AfterForward::TryNext);
        assert_eq!(after_forward(Refused(RemoteErrorKind::WritesStopped)), AfterForward::TryNext);
        // A timeout or a dropped connection: the write may have landed; a second coordinator would apply it again.
        assert_eq!(after_forward(NoAnswer), AfterForward::Fail);
        // Refused for a reason every replica shares (sibling limits, a bad context, no quorum).
        assert_eq!(after_forward(Refused(RemoteErrorKind::Refused)), AfterForward::Fail);
        assert_eq!(after_forward(Refused(RemoteErrorKind::Unavailable)), AfterForward::Fail);
    }

    #[test]
    fn routing_prefers_the_first_replier_and_tries_unusable_replicas_last() {
        // A replica coordinates its own writes.
        assert_eq!(route(&[UP, ME, UP], None), Route::Here);
        // Unless the client's read named another replica first.
        assert_eq!(route(&[UP, ME, UP], Some(2)), Route::Forward(vec![2, 0, 1]));
        // A preferred replica that is down, or this node itself, is no preference.
        assert_eq!(route(&[DOWN, ME, UP], Some(0)), Route::Here);
        assert_eq!(route(&[UP, ME, UP], Some(1)), Route::Here);
        // Not a replica: forward, reachable replicas first.
        assert_eq!(route(&[DOWN, UP, DOWN], None), Route::Forward(vec![1, 0, 2]));
        // A replica whose own storage stopped writes forwards too, and tries itself last.
        assert_eq!(route(&[node(true, false), UP, DOWN], None), Route::Forward(vec![1, 0, 2]));
    }
}
