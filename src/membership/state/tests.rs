use super::*;
use crate::membership::gossip::{Gossip, Target};

fn info(i: usize) -> PeerInfo {
    PeerInfo {
        member: Member { id: format!("n{i:02}"), weight: 1, zone: None },
        client_addr: format!("c{i}"),
        peer_addr: format!("p{i}"),
    }
}

const N: usize = 3;
const Q: usize = 64;

/// A simulated cluster: node 0 founds it, the others join through it; messages are lost at `loss` percent.
struct Sim {
    nodes: Vec<Gossip>,
    away: Vec<bool>,
    rng: u64,
    loss: u64,
}

impl Sim {
    fn new(count: usize, loss: u64, seed: u64) -> Sim {
        let mut nodes = vec![Gossip::new("n00", ClusterState::founder(info(0), Q), vec![], N, true, seed)];
        for i in 1..count {
            let id = format!("n{i:02}");
            nodes.push(Gossip::new(&id, ClusterState::joiner(info(i)), vec!["p0".into()], N, true, seed + i as u64));
        }
        Sim { away: vec![false; count], nodes, rng: seed | 1, loss }
    }

    /// `count` nodes started as joiners with `--bootstrap-expect expect`, each with the seeds `seeds(i)`; the nodes
    /// in `late` are away at first (started later).
    fn bootstrapping(count: usize, expect: usize, seeds: impl Fn(usize) -> Vec<String>, late: &[usize]) -> Sim {
        let nodes = (0..count)
            .map(|i| {
                let g =
                    Gossip::new(&format!("n{i:02}"), ClusterState::joiner(info(i)), seeds(i), N, true, 7 + i as u64);
                g.with_bootstrap(expect, Q)
            })
            .collect();
        let away = (0..count).map(|i| late.contains(&i)).collect();
        Sim { nodes, away, rng: 99, loss: 0 }
    }

    fn lost(&mut self) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % 100 < self.loss
    }

    fn index(&self, t: &Target) -> usize {
        match t {
            Target::Member(id) => id[1..].parse().unwrap(),
            Target::Seed(addr) => addr[1..].parse().unwrap(),
        }
    }

    /// One round: every present node completes its own transfers (as handoff would), ticks, and exchanges
    /// push-pull with its targets.
    fn round(&mut self) {
        for i in 0..self.nodes.len() {
            if self.away[i] {
                continue;
            }
            let me = format!("n{i:02}");
            let mine: Vec<u32> = self.nodes[i]
                .state()
                .required_transfers(N)
                .into_iter()
                .filter(|t| t.to == me)
                .map(|t| t.partition)
                .collect();
            if !mine.is_empty() {
                self.nodes[i]
                    .update(|s| {
                        for p in mine {
                            s.mark_done(p, &me);
                        }
                        Ok(())
                    })
                    .unwrap();
            }
            let away = self.away.clone();
            let targets = self.nodes[i].tick(|id| !away[id[1..].parse::<usize>().unwrap()]);
            for t in targets {
                let j = self.index(&t);
                if self.away[j] || self.lost() {
                    continue;
                }
                let push = self.nodes[i].state().clone();
                self.nodes[j].receive(&push);
                if self.lost() {
                    continue;
                }
                let reply = self.nodes[j].state().clone();
                self.nodes[i].receive(&reply);
            }
        }
    }

    /// True when every present node holds the same ring, every member is valid, and no transition is running.
    fn settled(&self) -> bool {
        let present: Vec<&Gossip> = self.nodes.iter().zip(&self.away).filter(|(_, a)| !**a).map(|(n, _)| n).collect();
        let first = present[0].state();
        present.iter().all(|n| {
            let s = n.state();
            s.ring == first.ring
                && s.ring.next.is_none()
                && s.members.len() == self.nodes.len()
                && s.members.values().all(|m| m.status == MemberStatus::Valid)
        })
    }

    fn run_until_settled(&mut self, max: usize) -> usize {
        for r in 1..=max {
            self.round();
            if self.settled() {
                return r;
            }
        }
        panic!("not settled after {max} rounds");
    }
}

#[test]
fn merge_is_commutative_idempotent_and_ignores_stale_news() {
    let mut a = ClusterState::founder(info(0), Q);
    let b = ClusterState::joiner(info(1));
    let mut ab = a.clone();
    ab.merge(&b);
    let mut ba = b.clone();
    ba.merge(&a);
    assert_eq!(ab, ba);
    let snapshot = ab.clone();
    assert!(!ab.merge(&snapshot), "merging the same state twice changes nothing");
    // A newer status is not undone by older news.
    a.merge(&b);
    let old = a.clone();
    a.set_status("n01", MemberStatus::Leaving).unwrap();
    assert!(!a.merge(&old));
    assert_eq!(a.members["n01"].status, MemberStatus::Leaving);
}

#[test]
fn a_join_moves_about_a_share_and_flips_when_transfers_are_done() {
    let mut s = ClusterState::founder(info(0), Q);
    s.merge(&ClusterState::joiner(info(1)));
    s.merge(&ClusterState::joiner(info(2)));
    let next = s.plan(N).unwrap().unwrap();
    s.commit("n00", next).unwrap();
    assert!(s.commit("n00", vec![]).is_err(), "one transition at a time");
    let transfers = s.required_transfers(N);
    assert!(!transfers.is_empty());
    assert!(!s.try_flip(N));
    for t in &transfers {
        assert!(t.sources.contains(&"n00".to_string()));
        s.mark_done(t.partition, &t.to.clone());
    }
    assert!(s.try_flip(N));
    assert!(s.members.values().all(|m| m.status == MemberStatus::Valid));
    let ring = s.current_ring().unwrap();
    let counts = ring.ownership();
    assert!(counts.values().all(|&c| c == 21 || c == 22), "{counts:?}");
    // A fourth joins: only it gains partitions, about a quarter of them.
    s.merge(&ClusterState::joiner(info(3)));
    let before = s.ring.owners.clone();
    let next = s.plan(N).unwrap().unwrap();
    let moved = before.iter().zip(&next).filter(|(a, b)| a != b).count();
    assert!(next.iter().zip(&before).all(|(n, b)| n == b || n == "n03"));
    assert_eq!(moved, 16);
}

/// A cluster of `members` nodes founded by n00, with its first transition done.
fn settled(members: usize) -> ClusterState {
    let mut s = ClusterState::founder(info(0), Q);
    for i in 1..members {
        s.merge(&ClusterState::joiner(info(i)));
    }
    let next = s.plan(N).unwrap().unwrap();
    s.commit("n00", next).unwrap();
    for t in s.required_transfers(N) {
        s.mark_done(t.partition, &t.to);
    }
    assert!(s.try_flip(N));
    s
}

#[test]
fn leave_hands_everything_off_then_removes_the_member() {
    let mut s = settled(4);
    s.set_status("n02", MemberStatus::Leaving).unwrap();
    assert!(s.change_pending());
    let next = s.plan(N).unwrap().unwrap();
    assert!(!next.contains(&"n02".to_string()));
    s.commit("n00", next).unwrap();
    for t in s.required_transfers(N) {
        assert_ne!(t.to, "n02");
        s.mark_done(t.partition, &t.to);
    }
    assert!(s.try_flip(N));
    assert_eq!(s.members["n02"].status, MemberStatus::Removed);
    assert!(!s.change_pending());
}

#[test]
fn a_member_that_leaves_before_it_owned_anything_is_removed_at_once() {
    let mut s = settled(3);
    s.merge(&ClusterState::joiner(info(3)));
    assert!(s.change_pending());
    s.set_status("n03", MemberStatus::Leaving).unwrap();
    // Nothing to plan (it owns nothing), so no transition would ever remove it.
    assert!(!s.change_pending());
    assert!(s.remove_idle_leavers());
    assert_eq!(s.members["n03"].status, MemberStatus::Removed);
    // A leaver that owns partitions waits for its transition.
    s.set_status("n02", MemberStatus::Leaving).unwrap();
    assert!(!s.remove_idle_leavers());
    assert_eq!(s.members["n02"].status, MemberStatus::Leaving);
}

#[test]
fn concurrent_flips_agree() {
    let mut s = ClusterState::founder(info(0), Q);
    s.merge(&ClusterState::joiner(info(1)));
    let next = s.plan(N).unwrap().unwrap();
    s.commit("n00", next).unwrap();
    for t in s.required_transfers(N) {
        s.mark_done(t.partition, &t.to);
    }
    let (mut a, mut b) = (s.clone(), s.clone());
    assert!(a.try_flip(N) && b.try_flip(N));
    assert_eq!(a, b);
}

#[test]
fn gossip_converges_for_3_to_20_nodes() {
    for count in [3usize, 5, 10, 20] {
        let mut sim = Sim::new(count, 0, 7);
        let rounds = sim.run_until_settled(400);
        println!("{count} nodes: settled after {rounds} rounds");
    }
}

#[test]
fn gossip_converges_despite_message_loss() {
    for count in [5usize, 10] {
        let mut sim = Sim::new(count, 30, 11);
        let rounds = sim.run_until_settled(800);
        println!("{count} nodes, 30% loss: settled after {rounds} rounds");
    }
}

#[test]
fn a_node_away_while_the_ring_changed_catches_up() {
    let mut sim = Sim::new(5, 0, 3);
    sim.run_until_settled(400);
    // n04 goes away; n02 leaves meanwhile. The transition may need n04 to receive ranges, so it can only finish
    // once n04 is back; after that everyone agrees.
    sim.away[4] = true;
    let leaver = "n02";
    sim.nodes[0].update(|s| s.set_status(leaver, MemberStatus::Leaving)).unwrap();
    for _ in 0..50 {
        sim.round();
    }
    sim.away[4] = false;
    for r in 1..=400 {
        sim.round();
        let done = sim.nodes.iter().enumerate().filter(|(i, _)| *i != 2).all(|(_, n)| {
            let s = n.state();
            s.ring == sim.nodes[0].state().ring
                && s.ring.next.is_none()
                && s.members[leaver].status == MemberStatus::Removed
        });
        if done {
            println!("away node caught up {r} rounds after returning");
            return;
        }
    }
    panic!("the cluster did not settle after the away node returned");
}

#[test]
fn a_transition_waiting_for_a_receiver_that_left_can_be_replaced() {
    let mut s = ClusterState::founder(info(0), Q);
    s.merge(&ClusterState::joiner(info(1)));
    s.merge(&ClusterState::joiner(info(2)));
    let next = s.plan(N).unwrap().unwrap();
    s.commit("n00", next).unwrap();
    // n02 dies before receiving anything and is removed: the transition can never finish as planned.
    assert!(!s.transition_stale());
    s.set_status("n02", MemberStatus::Leaving).unwrap();
    assert!(s.transition_stale());
    let replan = s.plan(N).unwrap().unwrap();
    assert!(!replan.contains(&"n02".to_string()));
    s.commit("n00", replan).unwrap();
    for t in s.required_transfers(N) {
        assert_ne!(t.to, "n02");
        s.mark_done(t.partition, &t.to);
    }
    assert!(s.try_flip(N));
    assert_eq!(s.members["n02"].status, MemberStatus::Removed);
}

#[test]
fn nodes_sharing_one_seed_list_bootstrap_one_ring_whatever_their_start_order() {
    for late in [vec![], vec![0], vec![0, 3], vec![4, 2, 1]] {
        let all: Vec<String> = (0..5).map(|i| format!("p{i}")).collect();
        let mut sim = Sim::bootstrapping(5, 5, |_| all.clone(), &late);
        for _ in 0..10 {
            sim.round();
        }
        assert!(
            late.is_empty() || sim.nodes.iter().all(|n| n.state().ring.owners.is_empty()),
            "with {late:?} not started, fewer than 5 see each other: no ring"
        );
        sim.away = vec![false; 5];
        sim.run_until_settled(200);
        for n in &sim.nodes {
            let ring = &n.state().ring;
            assert_eq!((ring.version, ring.author.as_str()), (1, "n00"), "exactly one founding, by the smallest id");
            assert_eq!(ring.owners.iter().collect::<BTreeSet<_>>().len(), 5, "every expected node owns partitions");
        }
    }
}

#[test]
fn halves_cut_apart_at_start_found_nothing_until_they_meet() {
    let half = |i: usize| if i < 2 { 0..2 } else { 2..5 };
    let mut sim = Sim::bootstrapping(5, 5, |i| half(i).map(|j| format!("p{j}")).collect(), &[]);
    for _ in 0..100 {
        sim.round();
    }
    for n in &sim.nodes {
        assert!(n.state().ring.owners.is_empty(), "a half of 2 or 3 out of 5 expected founded a ring");
        assert!(n.state().bootstrap_waiting().len() < 5);
    }
    // The halves meet: one message across.
    let across = sim.nodes[3].state().clone();
    sim.nodes[1].receive(&across);
    sim.run_until_settled(200);
    assert!(sim.nodes.iter().all(|n| n.state().ring.version == 1 && n.state().ring.author == "n00"));
}

#[test]
fn a_node_that_knows_a_ring_never_bootstraps_another() {
    let mut s = ClusterState::founder(info(0), Q);
    s.merge(&ClusterState::joiner(info(1)));
    assert!(!s.bootstrap_due("n00", 1) && s.bootstrap_waiting().is_empty());
    assert!(s.bootstrap("n00", Q, N, 5).is_err());
    let plain = Gossip::new("n00", s.clone(), vec![], N, true, 1);
    let g = Gossip::new("n00", s, vec![], N, true, 1).with_bootstrap(1, Q);
    assert_eq!(g.state(), plain.state(), "the setting is ignored by a node that belongs to a cluster");
}

#[test]
fn states_of_two_clusters_never_merge() {
    let old = ClusterState::founder(info(0), Q).with_cluster_id(11);
    let mut joined = ClusterState::joiner(info(1));
    assert!(joined.merge(&old) && joined.cluster_id == 11, "a joiner learns the cluster it joins");
    // n00 lost its disk and founded anew: its members must not adopt that ring, nor it theirs.
    let mut refounded = ClusterState::founder(info(0), Q).with_cluster_id(22);
    let before = joined.clone();
    assert!(joined.is_foreign(&refounded) && !joined.merge(&refounded));
    assert_eq!(joined, before);
    assert!(!refounded.merge(&before));
}

#[test]
fn a_members_word_on_writes_spreads_and_the_newest_wins() {
    let mut a = ClusterState::founder(info(1), 8);
    let mut b = a.clone();
    // Only a change bumps the version; saying the same twice is no news.
    assert!(a.set_write_stop("n1", Some("disk below min_free_disk".into()), 1000));
    assert!(!a.set_write_stop("n1", Some("disk below min_free_disk".into()), 2000));
    assert!(b.merge(&a));
    assert_eq!(b.write_stop("n1"), Some("disk below min_free_disk"));
    // The resume is newer, even from a clock that went back: versions only rise.
    assert!(a.set_write_stop("n1", None, 500));
    let stale = b.clone();
    assert!(b.merge(&a));
    assert_eq!(b.write_stop("n1"), None);
    assert!(!b.merge(&stale), "an older word never overrides a newer one");
    assert_eq!(b.write_stop("n1"), None);
}

#[test]
fn ranges_move_one_by_one_as_their_transfers_finish() {
    let mut s = settled(3);
    assert!(s.moved_ranges(N).is_empty(), "no transition, nothing moving");
    s.merge(&ClusterState::joiner(info(3)));
    let next = s.plan(N).unwrap().unwrap();
    s.commit("n00", next).unwrap();
    let transfers = s.required_transfers(N);
    let moving: BTreeSet<u32> = transfers.iter().map(|t| t.partition).collect();
    let unchanged = s.moved_ranges(N);
    // Ranges whose replicas do not change have nothing to wait for; every other one waits for its transfers.
    assert_eq!(unchanged.len() + moving.len(), Q);
    assert!(moving.iter().all(|p| !unchanged.contains(p)));
    let first = transfers[0].clone();
    for t in transfers.iter().filter(|t| t.partition == first.partition) {
        s.mark_done(t.partition, &t.to);
    }
    let moved = s.moved_ranges(N);
    assert!(moved.contains(&first.partition), "a range moves as soon as its own transfers are done");
    assert_eq!(moved.len(), unchanged.len() + 1, "and no other range moves with it");
    assert!(!s.try_flip(N), "the ring flips only once every range has moved");
}

#[test]
fn a_removed_member_is_never_a_source_and_its_ranges_are_replanned() {
    let mut s = settled(4);
    s.set_status("n03", MemberStatus::Removed).unwrap();
    assert!(s.change_pending(), "a removed member that still owns partitions needs a plan");
    let next = s.plan(N).unwrap().unwrap();
    assert!(!next.contains(&"n03".to_string()));
    s.commit("n00", next).unwrap();
    let transfers = s.required_transfers(N);
    assert!(!transfers.is_empty());
    assert!(transfers.iter().all(|t| !t.sources.contains(&"n03".to_string())), "rebuilt from the others only");
    for t in &transfers {
        s.mark_done(t.partition, &t.to);
    }
    assert!(s.try_flip(N));
    assert!(!s.change_pending());
    assert_eq!(s.members["n03"].status, MemberStatus::Removed);
}
