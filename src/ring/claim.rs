//! Partition claim: which member owns which partition.
//!
//! Three goals, in order: balance (each member owns its weighted share, within one partition), minimal movement
//! (starting from a previous assignment, only the partitions that balance requires change hands: on a join only
//! the newcomer gains, on a leave only the leaver loses), and spacing (the owners of any `spacing` consecutive
//! partitions are distinct nodes, and distinct zones where zones are given, so every preference list's first N
//! entries spread across nodes and zones). Balance and movement are guaranteed; spacing is best effort, because
//! some member sets cannot satisfy it (Q not divisible by S, or too few zones).

use super::Member;

/// Cost of one pair of same-node owners within the spacing window; dwarfs any zone cost.
const NODE_CONFLICT: usize = 1000;
/// Cost of one pair of same-zone owners within the spacing window.
const ZONE_CONFLICT: usize = 1;

/// Assigns `q` partitions to `members` (sorted by id, weights > 0). `previous[p]` is partition p's owner before,
/// as an index into `members`, or `None` when that owner left (or there was no previous ring).
pub fn claim(q: usize, members: &[Member], previous: Option<&[Option<u16>]>, spacing: usize) -> Vec<u16> {
    let mut owners: Vec<Option<u16>> = previous.map(<[_]>::to_vec).unwrap_or_else(|| vec![None; q]);
    let mut counts = vec![0usize; members.len()];
    for o in owners.iter().flatten() {
        counts[*o as usize] += 1;
    }
    let quotas = quotas(q, members, &counts);
    let ctx = Ctx { members, spacing: spacing.min(q) };

    // Members above their quota release partitions: conflicting ones first, the rest evenly spread so the
    // freed slots (and with them the gaining member's partitions) are spread around the ring.
    for m in 0..members.len() {
        let excess = counts[m].saturating_sub(quotas[m]);
        if excess == 0 {
            continue;
        }
        let mine: Vec<usize> = (0..q).filter(|&p| owners[p] == Some(m as u16)).collect();
        let (mut release, rest): (Vec<usize>, Vec<usize>) =
            mine.into_iter().partition(|&p| ctx.cost_at(&owners, p, m as u16) > 0);
        release.truncate(excess);
        let still = excess - release.len();
        if still > 0 {
            let step = rest.len() as f64 / still as f64;
            release.extend((0..still).map(|i| rest[((i as f64 + 0.5) * step) as usize]));
        }
        for p in release {
            owners[p] = None;
            counts[m] -= 1;
        }
    }

    // Free partitions go to members below quota: fewest conflicts first, then the most missing.
    let freed: Vec<usize> = (0..q).filter(|&p| owners[p].is_none()).collect();
    for &p in &freed {
        let best = (0..members.len())
            .filter(|&m| counts[m] < quotas[m])
            .min_by_key(|&m| (ctx.cost_at(&owners, p, m as u16), std::cmp::Reverse(quotas[m] - counts[m]), m))
            .expect("quotas sum to q, so a member below quota exists while a partition is free");
        owners[p] = Some(best as u16);
        counts[best] += 1;
    }

    let mut owners: Vec<u16> = owners.into_iter().map(|o| o.expect("every partition assigned")).collect();
    // Swaps among the partitions that moved anyway improve spacing without moving anything else.
    ctx.repair(&mut owners, &freed);
    owners
}

/// Each member's share of `q`, proportional to weight: the floor of its exact share, plus one for as many members
/// as rounding needs. Who gets the plus-one is chosen to move nothing needlessly: first members that already hold
/// more than the floor (they keep it), then members gaining anyway, then the rest; larger fractions first within
/// each group.
fn quotas(q: usize, members: &[Member], current: &[usize]) -> Vec<usize> {
    let total: u128 = members.iter().map(|m| u128::from(m.weight)).sum();
    let exact: Vec<(usize, u128)> = members
        .iter()
        .map(|m| {
            let num = q as u128 * u128::from(m.weight);
            ((num / total) as usize, num % total)
        })
        .collect();
    let mut quotas: Vec<usize> = exact.iter().map(|e| e.0).collect();
    let leftover = q - quotas.iter().sum::<usize>();
    let tier = |i: usize| match current[i].cmp(&exact[i].0) {
        std::cmp::Ordering::Greater => 0,
        std::cmp::Ordering::Less => 1,
        std::cmp::Ordering::Equal => 2,
    };
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| (tier(i), std::cmp::Reverse(exact[i].1), i));
    for &i in order.iter().take(leftover) {
        quotas[i] += 1;
    }
    quotas
}

struct Ctx<'a> {
    members: &'a [Member],
    spacing: usize,
}

impl Ctx<'_> {
    /// Conflicts member `m` would have at partition `p` with the owners within `spacing - 1` on either side.
    fn cost_at<T: Copy + Into<Option<u16>>>(&self, owners: &[T], p: usize, m: u16) -> usize {
        let q = owners.len();
        let zone = self.members[m as usize].zone.as_deref();
        let mut cost = 0;
        for d in 1..self.spacing {
            for n in [(p + d) % q, (p + q - d % q) % q] {
                if n == p {
                    continue;
                }
                if let Some(o) = owners[n].into() {
                    if o == m {
                        cost += NODE_CONFLICT;
                    } else if zone.is_some() && self.members[o as usize].zone.as_deref() == zone {
                        cost += ZONE_CONFLICT;
                    }
                }
            }
        }
        cost
    }

    fn repair(&self, owners: &mut [u16], movable: &[usize]) {
        if self.spacing < 2 {
            return;
        }
        for _pass in 0..3 {
            let mut improved = false;
            for (i, &a) in movable.iter().enumerate() {
                if self.cost_at(owners, a, owners[a]) == 0 {
                    continue;
                }
                for &b in &movable[i + 1..] {
                    let (oa, ob) = (owners[a], owners[b]);
                    if oa == ob {
                        continue;
                    }
                    let before = self.cost_at(owners, a, oa) + self.cost_at(owners, b, ob);
                    owners.swap(a, b);
                    let after = self.cost_at(owners, a, ob) + self.cost_at(owners, b, oa);
                    if after < before {
                        improved = true;
                        break;
                    }
                    owners.swap(a, b);
                }
            }
            if !improved {
                break;
            }
        }
    }
}
