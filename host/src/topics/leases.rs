//! Partition leases of a stream's readers, as a pure decision: which
//! partitions a reader holds after it asks, given who else is reading.
//!
//! Each active reader (one seen within the lease time) has a fair share of
//! the partitions: with `n` partitions and `r` readers, the first `n % r`
//! readers by name get one more. A reader over its share gives up the
//! extra partitions when it next asks; one under its share takes free (or
//! expired) ones. A partition is held by at most one reader at a time, so
//! one key is never handed to two readers at once; a silent reader's
//! partitions come free when its lease ends.

use std::collections::BTreeMap;

/// Who holds a partition, and until when (milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub reader: String,
    pub until: u64,
}

/// The leases of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases {
    /// One slot per stream partition.
    pub holders: Vec<Option<Lease>>,
    /// Reader → when it last asked.
    pub seen: BTreeMap<String, u64>,
}

impl Leases {
    pub fn new(partitions: usize) -> Leases {
        Leases {
            holders: vec![None; partitions],
            seen: BTreeMap::new(),
        }
    }

    /// `reader` asks at `now`: returns the partitions it holds now, with
    /// their leases renewed until `now + lease_ms`.
    pub fn acquire(&mut self, reader: &str, now: u64, lease_ms: u64) -> Vec<usize> {
        self.expire(now, lease_ms);
        self.seen.insert(reader.to_string(), now);
        let share = self.share(reader);
        let mut mine = self.held_by(reader);
        while mine.len() > share {
            let extra = mine.pop().expect("longer than its share");
            self.holders[extra] = None;
        }
        for (slot, holder) in self.holders.iter_mut().enumerate() {
            if mine.len() >= share {
                break;
            }
            if holder.is_none() {
                *holder = Some(Lease {
                    reader: reader.to_string(),
                    until: 0,
                });
                mine.push(slot);
            }
        }
        mine.sort_unstable();
        for &slot in &mine {
            if let Some(lease) = &mut self.holders[slot] {
                lease.until = now + lease_ms;
            }
        }
        mine
    }

    /// Renews what `reader` holds (on commit); returns it.
    pub fn renew(&mut self, reader: &str, now: u64, lease_ms: u64) -> Vec<usize> {
        self.expire(now, lease_ms);
        let mine = self.held_by(reader);
        if !mine.is_empty() {
            self.seen.insert(reader.to_string(), now);
        }
        for &slot in &mine {
            if let Some(lease) = &mut self.holders[slot] {
                lease.until = now + lease_ms;
            }
        }
        mine
    }

    /// Lets every partition go (after a seek, readers start again).
    pub fn release_all(&mut self) {
        self.holders.iter_mut().for_each(|h| *h = None);
    }

    fn held_by(&self, reader: &str) -> Vec<usize> {
        self.holders
            .iter()
            .enumerate()
            .filter(|(_, h)| h.as_ref().is_some_and(|l| l.reader == reader))
            .map(|(slot, _)| slot)
            .collect()
    }

    fn expire(&mut self, now: u64, lease_ms: u64) {
        for holder in &mut self.holders {
            if holder.as_ref().is_some_and(|l| l.until < now) {
                *holder = None;
            }
        }
        self.seen
            .retain(|_, at| now.saturating_sub(*at) <= lease_ms);
    }

    fn share(&self, reader: &str) -> usize {
        let readers = self.seen.len().max(1);
        let partitions = self.holders.len();
        let rank = self.seen.keys().position(|r| r == reader).unwrap_or(0);
        partitions / readers + usize::from(rank < partitions % readers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: u64 = 1_000;

    fn disjoint(leases: &Leases) -> bool {
        // A slot has one holder by construction; check nobody is missing.
        leases.holders.iter().all(|h| h.is_some())
    }

    #[test]
    fn readers_share_partitions_fairly_and_disjointly() {
        // (readers asking in order, partitions, what some of them hold)
        type Case<'a> = (&'a [&'a str], usize, &'a [(&'a str, usize)]);
        let cases: &[Case] = &[
            (&["a"], 4, &[("a", 4)]),
            (&["a", "b", "a", "b"], 4, &[("a", 2), ("b", 2)]),
            (
                &["a", "b", "c", "a", "b", "c"],
                4,
                &[("a", 2), ("b", 1), ("c", 1)],
            ),
            (
                &["a", "b", "c", "d", "e", "a", "b", "c", "d", "e"],
                4,
                &[("a", 1), ("e", 0)],
            ),
        ];
        for (asks, partitions, expected) in cases {
            let mut leases = Leases::new(*partitions);
            let mut held = BTreeMap::new();
            for (i, reader) in asks.iter().enumerate() {
                held.insert(*reader, leases.acquire(reader, i as u64, LEASE));
            }
            for (reader, count) in *expected {
                assert_eq!(
                    held[reader].len(),
                    *count,
                    "{asks:?}: {reader} holds {:?}",
                    held[reader]
                );
            }
            let mut all: Vec<usize> = held.values().flatten().copied().collect();
            all.sort_unstable();
            let before = all.len();
            all.dedup();
            assert_eq!(
                before,
                all.len(),
                "{asks:?}: a partition held twice: {held:?}"
            );
            assert!(all.len() <= *partitions);
        }
    }

    #[test]
    fn a_silent_readers_partitions_move_after_its_lease() {
        let mut leases = Leases::new(4);
        leases.acquire("a", 0, LEASE);
        leases.acquire("b", 10, LEASE);
        let a = leases.acquire("a", 20, LEASE);
        assert_eq!(a.len(), 2);
        // Within a's lease, b cannot take a's partitions.
        assert_eq!(leases.acquire("b", 500, LEASE).len(), 2);
        assert!(disjoint(&leases));
        // b keeps reading; a falls silent. After a's lease, b has them all.
        assert_eq!(leases.acquire("b", 1_000, LEASE).len(), 2);
        assert_eq!(leases.acquire("b", 1_021, LEASE).len(), 4);
        // A commit renews only what one holds.
        assert!(leases.renew("a", 1_022, LEASE).is_empty());
        assert_eq!(leases.renew("b", 1_022, LEASE).len(), 4);
    }

    #[test]
    fn a_new_reader_gets_its_share_when_the_others_give_up_theirs() {
        let mut leases = Leases::new(2);
        assert_eq!(leases.acquire("a", 0, LEASE), [0, 1]);
        // b's share is 1, but both are held: nothing yet.
        assert!(leases.acquire("b", 1, LEASE).is_empty());
        // a asks again: its share is now 1, so it lets one go...
        assert_eq!(leases.acquire("a", 2, LEASE), [0]);
        // ...which b takes.
        assert_eq!(leases.acquire("b", 3, LEASE), [1]);
        leases.release_all();
        assert!(leases.holders.iter().all(Option::is_none));
    }
}
