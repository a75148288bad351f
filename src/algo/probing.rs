//! The bucket-probing half of the scan engine, written once for both of its implementations: the
//! server's index scan (`src/pg/am/scan.rs`, buckets read from chains of PostgreSQL pages) and the
//! in-memory [`crate::lsh::MemIndex`] (buckets in hash maps), which differ only in how a bucket's rows
//! are read ([`Buckets`]). The sketch-scan half is [`crate::rescore::SketchPass`] with
//! [`crate::lsh::superbucket_order`] and [`crate::lsh::phase_rows`].
//!
//! A probe visits the next bucket of the query-directed multi-probe order over all tables
//! ([`ProbeSequence`]); each row is a candidate once, keyed by its sketch Hamming distance to the
//! query; a batch then reranks the best candidates by (distance, row) ([`crate::rescore::take_best`]).

use crate::lsh::ProbeSequence;
use std::collections::HashSet;

/// Where a probe reads a bucket's rows.
pub trait Buckets {
    /// Appends `(sketch Hamming distance to the query, row)` for every row of bucket `code` of table
    /// `table` to `out` (in any order; a row may repeat, it is a candidate once).
    fn bucket(&mut self, table: u32, code: u32, out: &mut Vec<(u32, u64)>);
}

/// Why [`BucketProbing::probe`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeStop {
    /// `max_probes` buckets probed or `max_new` new candidates found: the scan may probe on later.
    Enough,
    /// Every bucket of every table was probed.
    Exhausted,
    /// The candidates reached `max_seen` before a probe (the scan's memory budget): no more probing.
    Budget,
}

/// The state of a bucket-probing scan: the probe order, the rows seen, probes made.
#[derive(Debug, Clone)]
pub struct BucketProbing {
    seq: ProbeSequence,
    seen: HashSet<u64>,
    probes: usize,
    rows: Vec<(u32, u64)>,
}

impl BucketProbing {
    /// A scan that probes in `seq`'s order.
    pub fn new(seq: ProbeSequence) -> BucketProbing {
        BucketProbing {
            seq,
            seen: HashSet::new(),
            probes: 0,
            rows: Vec::new(),
        }
    }

    /// Probes up to `max_probes` more buckets, or until `max_new` new candidates were found (the
    /// bucket being read is finished, so it may overshoot), pushing each new candidate
    /// `(Hamming distance, row)` to `pending`; stops before a probe once `max_seen` rows were seen.
    pub fn probe(
        &mut self,
        src: &mut impl Buckets,
        pending: &mut Vec<(u32, u64)>,
        max_probes: usize,
        max_new: usize,
        max_seen: usize,
    ) -> ProbeStop {
        let (mut done, mut new) = (0, 0);
        while done < max_probes && new < max_new {
            if self.seen.len() >= max_seen {
                return ProbeStop::Budget;
            }
            let Some(p) = self.seq.next() else {
                return ProbeStop::Exhausted;
            };
            done += 1;
            self.probes += 1;
            self.rows.clear();
            src.bucket(p.table, p.code, &mut self.rows);
            for &(ham, row) in &self.rows {
                if self.seen.insert(row) {
                    pending.push((ham, row));
                    new += 1;
                }
            }
        }
        ProbeStop::Enough
    }

    /// Distinct rows seen so far.
    pub fn seen(&self) -> usize {
        self.seen.len()
    }

    /// Buckets probed so far.
    pub fn probes(&self) -> usize {
        self.probes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Two tables of 3 bits; bucket (t, c) holds rows c and c + 8·t (so rows repeat across tables).
    struct Toy {
        reads: usize,
    }

    impl Buckets for Toy {
        fn bucket(&mut self, table: u32, code: u32, out: &mut Vec<(u32, u64)>) {
            self.reads += 1;
            out.push((code, u64::from(code)));
            out.push((code + 1, u64::from(code + 8 * table)));
        }
    }

    fn seq() -> ProbeSequence {
        ProbeSequence::new(&[0, 0], &[0.1, 0.2, 0.3, 0.15, 0.25, 0.35], 3)
    }

    #[test]
    fn probes_every_bucket_once_and_rows_once() {
        let mut p = BucketProbing::new(seq());
        let mut src = Toy { reads: 0 };
        let mut pending = Vec::new();
        let stop = p.probe(&mut src, &mut pending, usize::MAX, usize::MAX, usize::MAX);
        assert_eq!(stop, ProbeStop::Exhausted);
        assert_eq!((src.reads, p.probes()), (16, 16));
        let mut rows: Vec<u64> = pending.iter().map(|r| r.1).collect();
        rows.sort_unstable();
        rows.dedup();
        assert_eq!(rows.len(), pending.len(), "a row is a candidate once");
        assert_eq!(rows, (0..16).collect::<Vec<u64>>());
        assert_eq!(p.seen(), 16);
    }

    #[test]
    fn limits_stop_and_resume() {
        let mut p = BucketProbing::new(seq());
        let mut src = Toy { reads: 0 };
        let mut pending = Vec::new();
        assert_eq!(
            p.probe(&mut src, &mut pending, 3, usize::MAX, usize::MAX),
            ProbeStop::Enough
        );
        assert_eq!(p.probes(), 3);
        // max_new: the bucket read is finished (2 rows per bucket here).
        let before = pending.len();
        assert_eq!(
            p.probe(&mut src, &mut pending, usize::MAX, 1, usize::MAX),
            ProbeStop::Enough
        );
        assert!(pending.len() > before);
        // The budget stops before a probe.
        let probes = p.probes();
        assert_eq!(
            p.probe(&mut src, &mut pending, usize::MAX, usize::MAX, p.seen()),
            ProbeStop::Budget
        );
        assert_eq!(p.probes(), probes);
        // Nothing is lost over the resumed calls.
        p.probe(&mut src, &mut pending, usize::MAX, usize::MAX, usize::MAX);
        let distinct: HashMap<u64, u32> = pending.iter().map(|&(h, r)| (r, h)).collect();
        assert_eq!((distinct.len(), pending.len()), (16, 16));
    }
}
