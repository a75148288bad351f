//! The scan engine, written once for both of its implementations: the server's index scan
//! (`src/pg/am/scan.rs`, buckets and superbuckets read from chains of PostgreSQL pages) and the
//! in-memory [`crate::lsh::MemIndex`] (hash maps and row arrays), which differ only in how rows are
//! read ([`Buckets`], [`Superbuckets`]).
//!
//! - Bucket probing ([`BucketProbing`]): a probe visits the next bucket of the query-directed
//!   multi-probe order over all tables ([`ProbeSequence`]); each row is a candidate once, keyed by its
//!   sketch Hamming distance to the query; a batch then reranks the best candidates by (distance, row)
//!   ([`crate::rescore::take_best`]).
//! - Sketch scans ([`SketchScan`]): passes of [`SketchPass`] over the superbuckets of table 0, in
//!   phases: every superbucket in one phase, or with learned planes the superbuckets nearest the query
//!   first ([`crate::lsh::superbucket_order`]), [`crate::lsh::phase_rows`] rows per phase; a phase's
//!   passes take the next keys until the phase is exhausted, then the next phase begins, so every row
//!   is ranked exactly once.

use crate::lsh::{phase_rows, superbucket_order, ProbeSequence, QueryHash};
use crate::rescore::{SketchPass, SketchScorer};
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

/// Where a sketch scan reads a superbucket's rows.
pub trait Superbuckets {
    /// Offers every row of table-0 superbucket `sb` to `pass` (in any order, each row once across all
    /// superbuckets) and returns how many it offered; None when the index changed under the scan (a
    /// standby replaying a layout rebuild): the pass ranks what it was offered and the scan ends.
    fn offer(&mut self, sb: u32, pass: &mut SketchPass<'_>) -> Option<usize>;
}

/// The state of a sketch scan between passes (see the module docs).
pub struct SketchScan {
    sketch: Vec<u64>,
    scorer: SketchScorer,
    /// The superbuckets not yet in a phase, nearest the query first (learned planes); None once
    /// every superbucket is in a phase.
    order: Option<Box<dyn Iterator<Item = u32>>>,
    /// Superbuckets of the current phase; empty when the next pass begins a phase.
    phase: Vec<u32>,
    /// Rows of all phases begun.
    visited_rows: usize,
    /// The key the next pass of the current phase starts from.
    from: u64,
    /// Rows of the index (estimate) and the share the first phase reads.
    rows: usize,
    fraction: f64,
    done: bool,
}

impl SketchScan {
    /// A scan of a table-0 layout of `dir_bits` superbucket bits over about `rows` rows: with
    /// `learned` planes the first phase reads `fraction` of the rows nearest `qh`; without, every
    /// superbucket is in one phase.
    pub fn new(
        qh: &QueryHash,
        dir_bits: u32,
        learned: bool,
        rows: usize,
        fraction: f64,
    ) -> SketchScan {
        let order: Box<dyn Iterator<Item = u32>> = if learned {
            superbucket_order(qh, dir_bits)
        } else {
            Box::new((0..1u64 << dir_bits).map(|sb| sb as u32))
        };
        SketchScan {
            sketch: qh.sketch.clone(),
            scorer: qh.sketch_scorer(),
            order: Some(order),
            phase: Vec::new(),
            visited_rows: 0,
            from: 0,
            rows,
            fraction: if learned { fraction } else { 1.0 },
            done: false,
        }
    }

    /// Whether every row was ranked (or the scan was stopped).
    pub fn done(&self) -> bool {
        self.done
    }

    /// Ends the scan (the layout changed between batches).
    pub fn stop(&mut self) {
        self.done = true;
    }

    /// One pass: the `cap` smallest (Hamming distance, row) keys left in the current phase (a new
    /// phase reads its superbuckets as it chooses them: at least `shortlist` rows in the first),
    /// pushed to `pending` keyed by the asymmetric estimate. Returns false when the scan ended with
    /// this pass or before it.
    pub fn pass(
        &mut self,
        src: &mut impl Superbuckets,
        cap: usize,
        shortlist: usize,
        pending: &mut Vec<(u32, u64)>,
    ) -> bool {
        if self.done {
            return false;
        }
        let mut pass = SketchPass::new(&self.sketch, self.from, cap);
        let mut complete = true;
        if self.phase.is_empty() {
            // Begin a phase: superbuckets in order until its rows were read.
            let want = if self.fraction >= 1.0 {
                usize::MAX
            } else {
                phase_rows(self.rows, self.fraction, shortlist, self.visited_rows)
            };
            let mut count = 0usize;
            while count < want && complete {
                let Some(sb) = self.order.as_mut().and_then(|o| o.next()) else {
                    self.order = None;
                    break;
                };
                self.phase.push(sb);
                match src.offer(sb, &mut pass) {
                    Some(n) => count += n,
                    None => complete = false,
                }
            }
            self.visited_rows += count;
        } else {
            for &sb in &self.phase {
                if src.offer(sb, &mut pass).is_none() {
                    complete = false;
                    break;
                }
            }
        }
        let (scored, last) = pass.finish(&self.scorer);
        pending.extend(scored);
        match last {
            Some(next) if complete => self.from = next,
            _ => {
                // The phase is exhausted: the next pass begins the next phase, if any.
                self.phase.clear();
                self.from = 0;
                self.done = !complete || self.order.is_none();
            }
        }
        !self.done
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

    /// 16 superbuckets of 4 + sb % 3 rows each, sketches that make every row's key distinct.
    struct ToySuper {
        sketches: Vec<Vec<u8>>,
        /// Superbuckets read, in order.
        reads: Vec<u32>,
        /// Superbucket whose read fails (a layout changed under the scan).
        fail: Option<u32>,
    }

    impl ToySuper {
        fn new() -> ToySuper {
            let sketches = (0..16u32)
                .map(|sb| {
                    (0..4 + sb % 3)
                        .flat_map(|i| {
                            ((sb * 7 + i * 13) as u64)
                                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                                .to_le_bytes()
                        })
                        .collect()
                })
                .collect();
            ToySuper {
                sketches,
                reads: Vec::new(),
                fail: None,
            }
        }
    }

    impl Superbuckets for ToySuper {
        fn offer(&mut self, sb: u32, pass: &mut SketchPass<'_>) -> Option<usize> {
            self.reads.push(sb);
            let b = &self.sketches[sb as usize];
            let n = b.len() / 8;
            let starts: Vec<u32> = (0..n as u32).map(|i| i * 8).collect();
            let rows: Vec<u64> = (0..n as u64).map(|i| u64::from(sb) * 100 + i).collect();
            pass.offer(b, &starts, &rows);
            (self.fail != Some(sb)).then_some(n)
        }
    }

    fn query(bits: u32) -> QueryHash {
        QueryHash {
            codes: vec![5 << (bits - 4)],
            sketch: vec![0x0F0F],
            projections: (0..bits).map(|i| 0.1 + i as f32 * 0.05).collect(),
            sketch_projections: (0..64).map(|j| (j as f32 - 31.5) / 32.0).collect(),
            bits,
        }
    }

    #[test]
    fn sketch_scan_ranks_every_row_once_through_phases_and_passes() {
        let total: usize = (0..16).map(|sb| 4 + sb % 3).sum();
        for (learned, fraction, cap) in [
            (true, 0.2, 3),
            (true, 0.01, 50),
            (false, 0.2, 7),
            (true, 1.0, 5),
        ] {
            let mut src = ToySuper::new();
            let mut scan = SketchScan::new(&query(6), 4, learned, total, fraction);
            let mut pending = Vec::new();
            let mut passes = 0;
            while scan.pass(&mut src, cap, cap, &mut pending) {
                passes += 1;
                assert!(passes < 1000);
            }
            assert!(scan.done());
            let mut rows: Vec<u64> = pending.iter().map(|p| p.1).collect();
            rows.sort_unstable();
            rows.dedup();
            assert_eq!(
                (rows.len(), pending.len()),
                (total, total),
                "{learned} {fraction} {cap}"
            );
            // Without learned planes the superbuckets are read in index order; with them the query's
            // own superbucket (code 5) comes first.
            if learned {
                assert_eq!(src.reads[0], 5);
            } else {
                assert_eq!(src.reads[..16], (0..16).collect::<Vec<u32>>()[..]);
            }
            assert!(!scan.pass(&mut src, cap, cap, &mut pending));
        }
    }

    #[test]
    fn sketch_scan_first_phase_reads_its_share_and_stops_on_a_changed_layout() {
        let mut src = ToySuper::new();
        let mut scan = SketchScan::new(&query(6), 4, true, 80, 0.2);
        let mut pending = Vec::new();
        assert!(scan.pass(&mut src, 1000, 4, &mut pending));
        let read: usize = src.reads.iter().map(|&sb| 4 + sb as usize % 3).sum();
        assert!(
            (16..16 + 6).contains(&read),
            "{read} rows for a share of 16"
        );
        assert_eq!(pending.len(), read);
        // A failed read: what was offered is ranked, and the scan ends.
        let mut src = ToySuper::new();
        src.fail = Some(5);
        let mut scan = SketchScan::new(&query(6), 4, true, 80, 0.5);
        let mut pending = Vec::new();
        assert!(!scan.pass(&mut src, 1000, 4, &mut pending));
        assert_eq!((src.reads.len(), pending.len()), (1, 6));
        // stop() ends a scan between batches.
        let mut scan = SketchScan::new(&query(6), 4, false, 80, 1.0);
        scan.stop();
        assert!(!scan.pass(&mut ToySuper::new(), 10, 10, &mut pending));
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
