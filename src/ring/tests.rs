use proptest::prelude::*;

use super::*;

fn nodes(n: usize) -> Vec<Member> {
    (0..n).map(|i| Member { id: format!("n{i:02}"), weight: 1, zone: None }).collect()
}

fn max_over_mean(ring: &Ring) -> f64 {
    let counts = ring.ownership();
    let max = *counts.values().max().unwrap() as f64;
    let mean = ring.partitions() as f64 / counts.len() as f64;
    max / mean
}

#[test]
fn balance_q256_for_3_to_10_equal_nodes() {
    for s in 3..=10 {
        let ring = Ring::build(256, nodes(s), None, 3).unwrap();
        let r = max_over_mean(&ring);
        assert!(r <= 1.05, "S={s}: max/mean {r}");
        assert_eq!(ring.ownership().values().sum::<usize>(), 256);
    }
}

#[test]
fn weights_are_honoured() {
    let mut m = nodes(3);
    m[0].weight = 2;
    let ring = Ring::build(256, m, None, 3).unwrap();
    let c = ring.ownership();
    assert_eq!(c["n00"], 128);
    assert_eq!(c["n01"] + c["n02"], 128);
}

#[test]
fn preference_lists_hold_distinct_nodes_and_every_member() {
    let ring = Ring::build(64, nodes(5), None, 3).unwrap();
    for p in 0..64 {
        let list: Vec<&str> = ring.preference_list(p).map(|m| m.id.as_str()).collect();
        assert_eq!(list.len(), 5);
        let mut sorted = list.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 5, "partition {p}: {list:?}");
        assert_eq!(list[0], ring.owner(p).id, "without zones the owner comes first");
    }
}

#[test]
fn spacing_gives_distinct_consecutive_owners_when_possible() {
    // 4 equal nodes, Q=256 divisible by 4: every 3 consecutive partitions can have distinct owners.
    let ring = Ring::build(256, nodes(4), None, 3).unwrap();
    for p in 0..256 {
        let a = &ring.owner(p).id;
        let b = &ring.owner((p + 1) % 256).id;
        let c = &ring.owner((p + 2) % 256).id;
        assert!(a != b && b != c && a != c, "partition {p}");
    }
}

#[test]
fn zones_spread_preference_lists() {
    let members: Vec<Member> =
        (0..6).map(|i| Member { id: format!("n{i}"), weight: 1, zone: Some(format!("z{}", i % 3)) }).collect();
    let ring = Ring::build(64, members, None, 3).unwrap();
    let spread = (0..64)
        .filter(|&p| {
            let mut zones: Vec<_> = ring.preference_list(p).take(3).map(|m| m.zone.clone()).collect();
            zones.sort();
            zones.dedup();
            zones.len() == 3
        })
        .count();
    assert_eq!(spread, 64, "every top-3 spans the 3 zones");
}

#[test]
fn key_partitions_cover_the_space() {
    let ring = Ring::build(256, nodes(3), None, 3).unwrap();
    assert_eq!(ring.partition_of(0), 0);
    assert_eq!(ring.partition_of(u128::MAX), 255);
    let (s, e) = ring.partition_range(1);
    assert_eq!(ring.partition_of(s), 1);
    assert_eq!(ring.partition_of(e), 1);
    assert_eq!(ring.partition_of(e + 1), 2);
    let one = Ring::build(1, nodes(2), None, 3).unwrap();
    assert_eq!(one.partition_of(u128::MAX), 0);
    assert_eq!(one.partition_range(0), (0, u128::MAX));
}

#[test]
fn keys_spread_evenly_over_partitions_by_slot_and_tags_share_one() {
    let ring = Ring::build(256, nodes(5), None, 3).unwrap();
    let mut per_partition = vec![0usize; 256];
    for i in 0..200_000 {
        per_partition[ring.partition_of_key(format!("user:{i}").as_bytes())] += 1;
    }
    let mean = 200_000.0 / 256.0;
    let (min, max) = (*per_partition.iter().min().unwrap(), *per_partition.iter().max().unwrap());
    assert!(min as f64 > mean * 0.85 && (max as f64) < mean * 1.15, "min {min}, max {max}, mean {mean}");
    // Keys sharing a hash tag share a slot, and so a partition and its replicas.
    let p = ring.partition_of_key(b"{cart:7}.items");
    assert!((0..100).all(|i| ring.partition_of_key(format!("{{cart:7}}.{i}").as_bytes()) == p));
    // A partition is a whole run of slots: 16384 / 256 = 64 slots each.
    for slot in [0u16, 63, 64, 16383] {
        let position = u128::from(slot) << 114;
        assert_eq!(ring.partition_of(position), slot as usize / 64);
    }
}

#[test]
fn rejects_bad_input() {
    assert_eq!(Ring::build(100, nodes(3), None, 3).unwrap_err(), RingError::PartitionCount { q: 100 });
    assert_eq!(Ring::build(64, vec![], None, 3).unwrap_err(), RingError::NoMembers);
    let mut m = nodes(2);
    m[1].id = "n00".into();
    assert!(matches!(Ring::build(64, m, None, 3), Err(RingError::Duplicate { .. })));
    let mut m = nodes(2);
    m[0].weight = 0;
    assert!(matches!(Ring::build(64, m, None, 3), Err(RingError::ZeroWeight { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Adding a node moves partitions only to the newcomer, and only as many as its share; removing one moves only
    /// the leaver's partitions. Exactly so with equal weights. With weights, strict balance (every member within one
    /// partition of its exact share) can force a rounding move, so there at most one extra partition per member may
    /// move. Balance holds throughout.
    #[test]
    fn minimal_movement_on_add_and_remove(s in 2usize..12, q_bits in 6u32..10, weighted in any::<bool>(), weights in proptest::collection::vec(1u32..4, 12)) {
        let q = 1usize << q_bits;
        let weight = |i: usize| if weighted { weights[i] } else { 1 };
        let mut members: Vec<Member> = (0..s).map(|i| Member { id: format!("n{i:02}"), weight: weight(i), zone: None }).collect();
        let before = Ring::build(q, members.clone(), None, 3).unwrap();

        members.push(Member { id: "new".into(), weight: weight(s), zone: None });
        let after = Ring::build(q, members.clone(), Some(&before), 3).unwrap();
        let moves = before.moves_to(&after);
        let gained = after.ownership()["new"];
        let stray = moves.iter().filter(|(_, _, to)| *to != "new").count();
        prop_assert_eq!(moves.len() - stray, gained, "the newcomer gets exactly its share");
        if weighted {
            prop_assert!(stray <= s, "{} rounding moves for {} members", stray, s);
        } else {
            prop_assert_eq!(stray, 0, "only the newcomer gains");
        }
        check_balance(&after);

        members.retain(|m| m.id != "n00");
        let shrunk = Ring::build(q, members, Some(&after), 3).unwrap();
        let moves = after.moves_to(&shrunk);
        let lost = after.ownership()["n00"];
        let stray = moves.iter().filter(|(_, from, _)| *from != "n00").count();
        prop_assert_eq!(moves.len() - stray, lost, "every partition of the leaver moves");
        if weighted {
            prop_assert!(stray <= s, "{} rounding moves for {} members", stray, s);
        } else {
            prop_assert_eq!(stray, 0, "only the leaver loses");
        }
        check_balance(&shrunk);
    }

    /// Claim is a pure function: the same inputs give the same ring on every node.
    #[test]
    fn deterministic(s in 1usize..9) {
        let a = Ring::build(128, nodes(s), None, 3).unwrap();
        let mut reversed = nodes(s);
        reversed.reverse();
        let b = Ring::build(128, reversed, None, 3).unwrap();
        prop_assert_eq!(a, b);
    }
}

fn check_balance(ring: &Ring) {
    let total: u64 = ring.members().iter().map(|m| u64::from(m.weight)).sum();
    let counts = ring.ownership();
    for m in ring.members() {
        let exact = ring.partitions() as f64 * f64::from(m.weight) / total as f64;
        let got = counts[m.id.as_str()] as f64;
        assert!((got - exact).abs() < 1.0 + 1e-9, "{}: {got} vs {exact}", m.id);
    }
}
