//! Lists: LPUSH, RPUSH, LPOP, RPOP, LREM and LTRIM over items ordered by rank, each in a row of its own
//! (`crdt::rows`: `item_row`, and the two homes of a removed item).
//!
//! Each item is a version `Value::Item { rank, value }` under its own dot, in a row named by (rank, dot); the list
//! is the live items in row order. A push to the head takes ranks below the lowest item its coordinator read (the
//! first live item of each replica it asked), a push to the tail ranks above the highest. So:
//!
//! * concurrent pushes through different nodes all land; two that took the same rank are ordered by dot, the same
//!   way on every replica;
//! * a pop, LREM or LTRIM removes the items its read saw, exactly (by dot); an item pushed concurrently survives.
//!   **Two clients popping at once through different nodes, or under a partition, may both get the same item**: a
//!   pop is a read and a remove, not a consensus;
//! * a removed item's row keeps a tombstone (in the removed items' home), reaped like a deleted key.
//!
//! Metadata is one dot and one rank per item, and the row's context.

/// Redis's inclusive index range `[start, stop]` (negative from the end) over a list of `len`, as a half-open
/// range of positions (empty when nothing is in range).
pub fn index_range(start: i64, stop: i64, len: usize) -> std::ops::Range<usize> {
    let len = len as i64;
    let start = if start < 0 { (len + start).max(0) } else { start };
    let stop = if stop < 0 { len + stop } else { stop.min(len - 1) };
    if start > stop || start >= len { 0..0 } else { start as usize..stop as usize + 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::rows::{self, Rows};
    use crate::crdt::{Op, OpReply};
    use bytes::Bytes;
    use std::cell::Cell;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn run(state: &mut Rows, actor: u64, counter: &Cell<u64>, op: Op) -> OpReply {
        crate::crdt::apply_rows_as(state, actor, counter, counter.get(), &op).unwrap()
    }

    fn push(head: bool, vs: &[&str]) -> Op {
        Op::ListPush { head, values: vs.iter().map(|v| b(v)).collect() }
    }

    fn strs(s: &Rows) -> Vec<String> {
        rows::items(s, 0).iter().map(|(_, v)| String::from_utf8_lossy(v).into_owned()).collect()
    }

    #[test]
    fn pushes_pops_and_trims_answer_as_redis_does() {
        let (mut s, c) = (Rows::new(), Cell::new(0));
        assert_eq!(run(&mut s, 1, &c, push(true, &["a", "b", "c"])), OpReply::Integer(3));
        assert_eq!(run(&mut s, 1, &c, push(false, &["x", "y"])), OpReply::Integer(5));
        assert_eq!(strs(&s), ["c", "b", "a", "x", "y"]);
        assert_eq!(run(&mut s, 1, &c, Op::ListPop { head: true, count: 1 }), OpReply::Members(vec![b("c")]));
        assert_eq!(run(&mut s, 1, &c, Op::ListPop { head: false, count: 2 }), OpReply::Members(vec![b("y"), b("x")]));
        run(&mut s, 1, &c, push(false, &["a", "b", "a"]));
        assert_eq!(strs(&s), ["b", "a", "a", "b", "a"]);
        assert_eq!(run(&mut s, 1, &c, Op::ListRemove { count: -2, value: b("a") }), OpReply::Integer(2));
        assert_eq!(strs(&s), ["b", "a", "b"]);
        assert_eq!(run(&mut s, 1, &c, Op::ListTrim { start: 1, stop: -1 }), OpReply::Integer(1));
        assert_eq!(strs(&s), ["a", "b"]);
        assert_eq!(run(&mut s, 1, &c, Op::ListTrim { start: 5, stop: 10 }), OpReply::Integer(2));
        assert_eq!(rows::kind_of(&s, 0), None, "an emptied list is no key");
    }

    #[test]
    fn index_ranges_follow_redis() {
        assert_eq!(index_range(0, -1, 5), 0..5);
        assert_eq!(index_range(-2, -1, 5), 3..5);
        assert_eq!(index_range(1, 100, 5), 1..5);
        assert_eq!(index_range(-100, 1, 5), 0..2);
        assert_eq!(index_range(3, 1, 5), 0..0);
        assert_eq!(index_range(5, 6, 5), 0..0);
        assert_eq!(index_range(0, -1, 0), 0..0);
    }

    #[test]
    fn concurrent_pushes_all_land_in_one_order() {
        let (mut r1, mut r2) = (Rows::new(), Rows::new());
        let (c1, c2) = (Cell::new(0), Cell::new(0));
        run(&mut r1, 1, &c1, push(false, &["base"]));
        r2.merge(&r1);
        run(&mut r1, 1, &c1, push(false, &["from-1"]));
        run(&mut r2, 2, &c2, push(false, &["from-2"]));
        run(&mut r2, 2, &c2, push(true, &["head-2"]));
        let mut m1 = r1.clone();
        m1.merge(&r2);
        let mut m2 = r2.clone();
        m2.merge(&r1);
        assert_eq!(m1, m2);
        assert_eq!(strs(&m1), ["head-2", "base", "from-1", "from-2"]);
        // A pop that saw only the base keeps the concurrent pushes.
        let mut p = Rows::new();
        let c3 = Cell::new(0);
        p.merge(&r1);
        run(&mut p, 3, &c3, Op::ListPop { head: true, count: 1 });
        let mut all = m1.clone();
        all.merge(&p);
        assert_eq!(strs(&all), ["head-2", "from-1", "from-2"]);
    }
}
