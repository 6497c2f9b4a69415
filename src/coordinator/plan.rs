//! Who a quorum operation sends to (pure): the key's top N replicas, and for each one that cannot take part a
//! stand-in from past the top N of the preference list (sloppy quorum, paper §4.6). Reads and writes share this one
//! rule; they differ only in what makes a node usable (reachable for a read; reachable and taking writes for a
//! write) and in what they do with a replica that has no stand-in (a read asks it anyway, a write keeps a hint).

/// For each of the first `n` nodes of a preference list (the replicas) in order, given which nodes can take part
/// (`usable`: the local node always, another when the operation's liveness test says so), the index of the node
/// that stands in for it,
/// `None` for a usable replica or when no stand-in is left: each unusable replica in turn takes the next usable
/// candidate past the first `n` that no earlier replica took.
pub fn stand_ins(usable: &[bool], n: usize) -> Vec<Option<usize>> {
    let n = n.min(usable.len());
    let mut fallbacks = (n..usable.len()).filter(|&i| usable[i]);
    usable[..n].iter().map(|&ok| if ok { None } else { fallbacks.next() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_replicas_need_no_stand_in() {
        assert_eq!(stand_ins(&[true, true, true, true], 3), vec![None, None, None]);
    }

    #[test]
    fn each_unusable_replica_takes_the_next_usable_fallback_once() {
        let list = [false, true, false, false, true, true];
        assert_eq!(stand_ins(&list, 3), vec![Some(4), None, Some(5)]);
    }

    #[test]
    fn replicas_beyond_the_fallbacks_get_none() {
        let list = [false, false, true, true];
        assert_eq!(stand_ins(&list, 3), vec![Some(3), None, None]);
        assert_eq!(stand_ins(&list[..3], 3), vec![None, None, None]);
    }

    #[test]
    fn a_short_list_or_a_zero_n_plans_what_exists() {
        assert_eq!(stand_ins(&[], 3), Vec::<Option<usize>>::new());
        assert_eq!(stand_ins(&[false, true], 0), Vec::<Option<usize>>::new());
        assert_eq!(stand_ins(&[false, true], 3), vec![None, None]);
    }

    #[test]
    fn an_unusable_fallback_is_skipped() {
        assert_eq!(stand_ins(&[false, true, true, false, true], 3), vec![Some(4), None, None]);
    }
}
