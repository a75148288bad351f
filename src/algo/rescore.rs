//! A second, finer look at the rows the sketch Hamming distance ranks best, before the exact rerank.
//!
//! Hamming distance compares the row's sign bits with the query's sign bits: it throws away how far the
//! query lies from each sketch plane. The *asymmetric* estimate keeps the query's projections and only
//! the row is quantised: `S = Σ_j sign_j(row) · ⟨plane_j, query⟩`. For random unit planes in d
//! dimensions, `E[S] = B · √(2 / (π d)) · ⟨row / |row|, query⟩` (B planes), so a larger S means a
//! smaller angle between the (prepared, centred) row and query, with less noise than Hamming distance
//! (which is the same sum with every projection replaced by ±1).
//!
//! Scoring a row costs one table lookup per sketch byte (`B / 8` lookups, about 27 ns for 512 bits
//! where Hamming distance costs 4 ns), so it is spent on a shortlist: the best
//! [`RESCORE_FACTOR`] × R rows by Hamming distance are rescored and the best R of those go to the
//! exact rerank. Measured in memory (`benches/sketch_rescore.rs`, images 100,210 × 1280, 512-bit
//! sketches, all 208 queries): recall@10 with R = 300 reranks 0.905 by Hamming distance alone, 0.950
//! rescored; R = 500: 0.945 → 0.973 (Hamming alone needs R = 1000 for 0.970); GloVe 400k × 50-d,
//! 256 bits, 200 queries: R = 300 0.892 → 0.964, R = 500 0.945 → 0.985. Rescoring every row instead of
//! the shortlist gains nothing.

use crate::topk::f32_key;

/// Rows kept by Hamming distance per row that goes to the exact rerank.
pub const RESCORE_FACTOR: usize = 4;

/// The asymmetric estimate for one query: one 256-entry table per sketch byte.
#[derive(Debug, Clone)]
pub struct SketchScorer {
    /// `lut[b * 256 + v]`: the sum of the projections of the bits set in value `v` of byte `b`.
    lut: Vec<f32>,
    /// Sum of all projections.
    total: f32,
    /// False when a projection is not finite (a query whose values overflow f32): then every score
    /// is 0 and [`SketchPass::finish`] keeps the Hamming order.
    finite: bool,
}

impl SketchScorer {
    /// The scorer for a query with these projections on the sketch planes (sketch bit j ↔
    /// `projections[j]`; bit j is bit `j % 64` of word `j / 64`, as in the sketches).
    ///
    /// # Panics
    /// If the number of projections is not a multiple of 64.
    pub fn new(projections: &[f32]) -> SketchScorer {
        assert!(
            projections.len().is_multiple_of(64),
            "sketch projections must fill whole words"
        );
        let bytes = projections.len() / 8;
        let mut lut = vec![0f32; bytes * 256];
        // Scaled to at most 1 in magnitude: the order of the scores is the same, and sums of huge
        // (finite) projections cannot overflow.
        let finite = projections.iter().all(|p| p.is_finite());
        let max = projections.iter().fold(0f32, |m, p| m.max(p.abs()));
        let scale = if finite && max > 0.0 { 1.0 / max } else { 0.0 };
        let scaled: Vec<f32> = projections.iter().map(|p| p * scale).collect();
        for (b, table) in lut.chunks_exact_mut(256).enumerate() {
            let p = &scaled[b * 8..b * 8 + 8];
            // Each value = the value without its lowest set bit, plus that bit's projection.
            for v in 1..256usize {
                table[v] = table[v & (v - 1)] + p[v.trailing_zeros() as usize];
            }
        }
        SketchScorer {
            lut,
            total: scaled.iter().sum(),
            finite,
        }
    }

    /// Whether the scores order rows (false for a query with non-finite projections).
    pub fn is_finite(&self) -> bool {
        self.finite
    }

    /// Sketch words this scorer reads.
    pub fn words(&self) -> usize {
        self.lut.len() / (256 * 8)
    }

    /// `Σ_j sign_j · projection_j / max_j |projection_j|` (sign +1 for a set bit): larger is closer.
    ///
    /// # Panics
    /// If `sketch` does not have [`Self::words`] words.
    #[inline]
    pub fn score(&self, sketch: &[u64]) -> f32 {
        assert_eq!(sketch.len(), self.words(), "sketch words");
        let mut s = 0.0f32;
        for (tables, &word) in self.lut.chunks_exact(256 * 8).zip(sketch) {
            for (k, byte) in word.to_le_bytes().into_iter().enumerate() {
                s += tables[k * 256 + byte as usize];
            }
        }
        2.0 * s - self.total
    }

    /// [`Self::score`] as an ascending key (smaller is closer), for [`crate::topk::TopK`].
    #[inline]
    pub fn key(&self, sketch: &[u64]) -> u32 {
        f32_key(-self.score(sketch))
    }
}

/// The `cap` smallest keys offered, with their sketches: the shortlist to rescore. Keys are any u64
/// (unique per row; e.g. Hamming distance in the high bits, the row's address below). Memory stays
/// within about twice `cap` sketches whatever the order keys come in.
///
/// Rows below the current threshold are appended; when twice `cap` (+ 64) are held, the `cap`-th
/// smallest key (a linear-time selection) becomes the threshold and the rest are dropped. So an
/// offered row costs one comparison, an entering one an append, instead of a sift through a heap
/// of `cap` keys (a tenth of a GloVe query's sketch pass); the rows kept are the same.
#[derive(Debug)]
pub struct Shortlist {
    cap: usize,
    words: usize,
    /// A row enters iff its key is below this: the `cap`-th smallest key at the last compaction
    /// (`u64::MAX` before).
    threshold: u64,
    /// Keys offered while they were below the threshold, and their sketches (`words` each).
    keys: Vec<u64>,
    sketches: Vec<u64>,
    /// Room for the selection of the threshold.
    scratch: Vec<u64>,
}

impl Shortlist {
    /// An empty shortlist of at most `cap` rows with `words`-word sketches.
    pub fn new(cap: usize, words: usize) -> Shortlist {
        Shortlist {
            cap,
            words,
            threshold: u64::MAX,
            keys: Vec::new(),
            sketches: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The key a row must be below to enter (`u64::MAX` until the first compaction).
    #[inline]
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// Offers a row.
    ///
    /// # Panics
    /// If `sketch` does not have the shortlist's number of words.
    #[inline]
    pub fn push(&mut self, key: u64, sketch: &[u64]) {
        assert_eq!(sketch.len(), self.words, "sketch words");
        if self.cap == 0 || key >= self.threshold {
            return;
        }
        if self.keys.len() == self.keys.capacity() {
            // Grow by doubling, but never past the compaction bound (what the caller budgets for).
            let add = self.keys.len().max(16).min(self.bound() - self.keys.len());
            self.keys.reserve_exact(add);
            self.sketches.reserve_exact(add * self.words);
        }
        self.keys.push(key);
        self.sketches.extend_from_slice(sketch);
        if self.keys.len() >= self.bound() {
            self.compact();
        }
    }

    /// Remembered rows at which [`Self::compact`] runs.
    fn bound(&self) -> usize {
        2 * self.cap + 64
    }

    /// Keeps the `cap` smallest keys held (and their sketches); their largest becomes the threshold.
    fn compact(&mut self) {
        if self.keys.len() > self.cap {
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.keys);
            let (_, kth, _) = self.scratch.select_nth_unstable(self.cap - 1);
            self.threshold = *kth;
        }
        let t = self.threshold;
        let w = self.words;
        let mut kept = 0;
        for i in 0..self.keys.len() {
            // `t` itself is the worst key kept (when full): it stays.
            if self.keys[i] <= t {
                self.keys[kept] = self.keys[i];
                self.sketches.copy_within(i * w..(i + 1) * w, kept * w);
                kept += 1;
            }
        }
        self.keys.truncate(kept);
        self.sketches.truncate(kept * w);
    }

    /// Rows kept so far.
    pub fn len(&self) -> usize {
        self.keys.len().min(self.cap)
    }

    /// Whether no row was kept.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The kept rows as (score key, row key), in no particular order, and the largest row key kept
    /// (None when empty).
    pub fn rescore(mut self, scorer: &SketchScorer) -> (Vec<(u32, u64)>, Option<u64>) {
        self.compact();
        let w = self.words;
        let out: Vec<(u32, u64)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, &k)| (scorer.key(&self.sketches[i * w..(i + 1) * w]), k))
            .collect();
        let last = out.iter().map(|&(_, k)| k).max();
        (out, last)
    }
}

/// Bits of a row's address in a [`SketchPass`] key (the server's `block << 16 | offset`).
pub const ROW_BITS: u32 = 48;

/// A sketch-pass key: (Hamming distance, row) packed so that integer order is key order.
#[inline]
pub fn pass_key(hamming: u32, row: u64) -> u64 {
    (u64::from(hamming) << ROW_BITS) | row
}

/// One pass of a sketch scan, the engine that the index scan (over its bucket pages) and
/// `MemIndex::search` (over its arrays) share: rows are offered in groups (an index page, a block of
/// rows), each with its sketch in place; the pass keeps the `cap` smallest keys (Hamming distance, row)
/// from `from` on with their sketches ([`Shortlist`]), and [`Self::finish`] orders them by the
/// asymmetric estimate. Rows are addresses below 2^[`ROW_BITS`], unique within the pass.
#[derive(Debug)]
pub struct SketchPass<'q> {
    query: &'q [u64],
    from: u64,
    cap: usize,
    short: Shortlist,
    hams: Vec<u32>,
    sketch: Vec<u64>,
}

impl<'q> SketchPass<'q> {
    /// A pass for the query sketch `query`, taking the `cap` best keys from `from` on (0 for the
    /// first pass, then what the pass before returned).
    pub fn new(query: &'q [u64], from: u64, cap: usize) -> SketchPass<'q> {
        SketchPass {
            query,
            from,
            cap,
            short: Shortlist::new(cap, query.len()),
            hams: Vec::new(),
            sketch: vec![0; query.len()],
        }
    }

    /// Offers a group of rows: the sketch of `rows[i]` is the `8 × words` little-endian bytes at
    /// `starts[i]` in `bytes` ([`crate::estimator::hamming_at`]); only the sketches of rows that enter
    /// the shortlist are copied.
    ///
    /// # Panics
    /// If `starts` and `rows` differ in length or a sketch runs past `bytes`.
    pub fn offer(&mut self, bytes: &[u8], starts: &[u32], rows: &[u64]) {
        assert_eq!(starts.len(), rows.len(), "starts / rows length");
        debug_assert!(
            rows.iter().all(|&r| r >> ROW_BITS == 0),
            "row address too large"
        );
        if rows.is_empty() {
            return;
        }
        let w = self.query.len();
        self.hams.resize(rows.len(), 0);
        crate::estimator::hamming_at(self.query, bytes, starts, &mut self.hams);
        for ((&h, &row), &at) in self.hams.iter().zip(rows).zip(starts) {
            let key = pass_key(h, row);
            if key >= self.from && key < self.short.threshold() {
                let (words, _) = bytes[at as usize..at as usize + 8 * w].as_chunks::<8>();
                for (x, c) in self.sketch.iter_mut().zip(words) {
                    *x = u64::from_le_bytes(*c);
                }
                self.short.push(key, &self.sketch);
            }
        }
    }

    /// The kept rows as (asymmetric-estimate key, row), in no particular order, and the key the next
    /// pass starts from: None when this pass kept fewer than `cap` rows (it took every row left).
    pub fn finish(self, scorer: &SketchScorer) -> (Vec<(u32, u64)>, Option<u64>) {
        let exhausted = self.short.len() < self.cap;
        let (scored, last) = self.short.rescore(scorer);
        let finite = scorer.is_finite();
        let rows = scored
            .into_iter()
            .map(|(s, k)| {
                // Without a usable estimate, the Hamming distance ranks.
                let rank = if finite { s } else { (k >> ROW_BITS) as u32 };
                (rank, k & ((1u64 << ROW_BITS) - 1))
            })
            .collect();
        (rows, last.filter(|_| !exhausted).map(|k| k + 1))
    }
}

/// Removes the `n` best entries (rank key, row) of `pending` by (key, row) and returns their rows,
/// in no particular order; the rest stay in `pending` for later batches.
pub fn take_best(pending: &mut Vec<(u32, u64)>, n: usize) -> Vec<u64> {
    let len = pending.len();
    let take = n.min(len);
    if take < len {
        // The best `take` move to the end, without sorting the rest.
        pending.select_nth_unstable_by(len - take - 1, |a, b| b.cmp(a));
    }
    pending.drain(len - take..).map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn naive(proj: &[f32], sketch: &[u64]) -> f32 {
        proj.iter()
            .enumerate()
            .map(|(j, p)| {
                if sketch[j / 64] >> (j % 64) & 1 == 1 {
                    *p
                } else {
                    -*p
                }
            })
            .sum()
    }

    #[test]
    fn score_is_the_signed_sum_of_projections() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for words in [1usize, 4, 8] {
            let proj: Vec<f32> = (0..words * 64)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            // Scores are scaled by the largest projection's magnitude.
            let max = proj.iter().fold(0f32, |m, p| m.max(p.abs()));
            let s = SketchScorer::new(&proj);
            assert_eq!(s.words(), words);
            assert!(s.is_finite());
            for _ in 0..50 {
                let sk: Vec<u64> = (0..words).map(|_| rng.random()).collect();
                let (a, b) = (s.score(&sk) * max, naive(&proj, &sk));
                assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
            }
            // All bits set: the total; none set: minus the total.
            let total: f32 = proj.iter().sum();
            assert!((s.score(&vec![u64::MAX; words]) * max - total).abs() < 1e-3);
            assert!((s.score(&vec![0; words]) * max + total).abs() < 1e-3);
        }
    }

    /// A query whose projections are huge still gets finite scores in the same order; one whose
    /// projections are not finite gets none, and a pass then ranks by Hamming distance.
    #[test]
    fn huge_and_non_finite_projections() {
        let huge: Vec<f32> = (0..64)
            .map(|j| if j % 2 == 0 { 3e38 } else { -3e38 })
            .collect();
        let s = SketchScorer::new(&huge);
        let even = [0x5555_5555_5555_5555u64];
        assert!(s.is_finite() && s.score(&even).is_finite());
        assert!(s.score(&even) > s.score(&[!even[0]]));
        let mut bad = huge.clone();
        bad[3] = f32::INFINITY;
        let s = SketchScorer::new(&bad);
        assert!(!s.is_finite());
        // Rows 1, 2, 3 at Hamming distances 3, 1, 2 from the query 0: ranked 2, 3, 1.
        let q = [0u64];
        let sketches = [0b111u64, 0b1, 0b11];
        let bytes: Vec<u8> = sketches.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut pass = SketchPass::new(&q, 0, 10);
        pass.offer(&bytes, &[0, 8, 16], &[1, 2, 3]);
        let (mut scored, next) = pass.finish(&s);
        assert_eq!(next, None);
        scored.sort_unstable();
        assert_eq!(scored, vec![(1, 2), (2, 3), (3, 1)]);
    }

    #[test]
    fn key_orders_by_descending_score() {
        let proj: Vec<f32> = (0..64).map(|j| j as f32 - 20.0).collect();
        let s = SketchScorer::new(&proj);
        let hi = [u64::MAX << 21]; // the positive projections set
        let lo = [!(u64::MAX << 21)];
        assert!(s.score(&hi) > s.score(&lo));
        assert!(s.key(&hi) < s.key(&lo));
    }

    #[test]
    fn shortlist_keeps_the_smallest_keys_with_their_sketches() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 5000u64;
        let cap = 100;
        // Adversarial order first (descending: every row enters), then random.
        for order in 0..2 {
            let mut keys: Vec<u64> = (0..n).map(|i| i * 7 + 1).collect();
            if order == 0 {
                keys.reverse();
            } else {
                for i in (1..keys.len()).rev() {
                    keys.swap(i, rng.random_range(0..=i));
                }
            }
            let mut sl = Shortlist::new(cap, 2);
            for &k in &keys {
                sl.push(k, &[k, !k]);
                assert!(sl.keys.len() < 2 * cap + 64);
            }
            assert_eq!(sl.len(), cap);
            // A scorer that reads the first word's lowest bits: the key itself decides the score.
            let proj: Vec<f32> = (0..128).map(|j| if j < 64 { 1.0 } else { 0.0 }).collect();
            let (scored, last) = sl.rescore(&SketchScorer::new(&proj));
            let mut got: Vec<u64> = scored.iter().map(|&(_, k)| k).collect();
            got.sort_unstable();
            let want: Vec<u64> = (0..cap as u64).map(|i| i * 7 + 1).collect();
            assert_eq!(got, want);
            assert_eq!(last, Some((cap as u64 - 1) * 7 + 1));
            for &(sk, k) in &scored {
                assert_eq!(sk, f32_key(-(2.0 * k.count_ones() as f32 - 64.0)));
            }
        }
        let (empty, last) = Shortlist::new(10, 1).rescore(&SketchScorer::new(&[0.0; 64]));
        assert!(empty.is_empty() && last.is_none());
        // Ascending order, cap 1, and fewer rows than cap: the same smallest keys.
        for (cap, n, rev) in [
            (1usize, 300u64, false),
            (1, 300, true),
            (50, 30, true),
            (64, 64, false),
        ] {
            let mut sl = Shortlist::new(cap, 1);
            let keys: Vec<u64> = if rev {
                (0..n).rev().collect()
            } else {
                (0..n).collect()
            };
            for &k in &keys {
                sl.push(k, &[k]);
            }
            assert_eq!(sl.len(), cap.min(n as usize));
            let (scored, last) = sl.rescore(&SketchScorer::new(&[0.0; 64]));
            let mut got: Vec<u64> = scored.iter().map(|&(_, k)| k).collect();
            got.sort_unstable();
            assert_eq!(
                got,
                (0..(cap as u64).min(n)).collect::<Vec<_>>(),
                "cap {cap} n {n}"
            );
            assert_eq!(last, Some((cap as u64).min(n) - 1));
        }
    }

    /// Passes over rows offered in uneven groups, each starting after the last key of the one
    /// before, return every row exactly once (row 0 with Hamming distance 0 included: key 0); each pass keeps the best keys left, ordered by the
    /// estimate; batches taken with `take_best` come best estimate first.
    #[test]
    fn passes_cover_every_row_once() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (w, n) = (4usize, 1000usize);
        let mut sketches: Vec<u64> = (0..n * w).map(|_| rng.random()).collect();
        let q: Vec<u64> = (0..w).map(|_| rng.random()).collect();
        sketches[..w].copy_from_slice(&q);
        let proj: Vec<f32> = (0..64 * w).map(|_| rng.random_range(-1.0..1.0)).collect();
        let scorer = SketchScorer::new(&proj);
        // Rows are addresses 3 i, stored after a 5-byte header each; row 0's sketch is the query's.
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for row in sketches.chunks_exact(w) {
            bytes.extend_from_slice(&[1; 5]);
            starts.push(bytes.len() as u32);
            bytes.extend(row.iter().flat_map(|x| x.to_le_bytes()));
        }
        let rows: Vec<u64> = (0..n as u64).map(|i| 3 * i).collect();
        let key_of = |i: usize| {
            let h = crate::distance::hamming(&q, &sketches[i * w..(i + 1) * w]);
            pass_key(h, rows[i])
        };
        let mut all: Vec<u64> = (0..n).map(key_of).collect();
        all.sort_unstable();
        let (mut from, mut cap, mut seen) = (0u64, 64usize, Vec::new());
        loop {
            let mut pass = SketchPass::new(&q, from, cap);
            for g in [0usize, 7, 300, 301, 999, 1000].windows(2) {
                pass.offer(&bytes, &starts[g[0]..g[1]], &rows[g[0]..g[1]]);
            }
            let (mut scored, next) = pass.finish(&scorer);
            // This pass holds the best keys left.
            let mut keys: Vec<u64> = scored
                .iter()
                .map(|&(_, r)| key_of((r / 3) as usize))
                .collect();
            keys.sort_unstable();
            assert_eq!(keys, all[seen.len()..seen.len() + keys.len()]);
            // Batches come best estimate first.
            let mut last_worst = None;
            while !scored.is_empty() {
                let batch = take_best(&mut scored, 50);
                let est: Vec<u32> = batch
                    .iter()
                    .map(|&r| {
                        let i = (r / 3) as usize;
                        scorer.key(&sketches[i * w..(i + 1) * w])
                    })
                    .collect();
                if let Some(prev) = last_worst {
                    assert!(est.iter().all(|&e| e >= prev));
                }
                last_worst = est.iter().copied().max();
                seen.extend(batch);
            }
            match next {
                Some(k) => {
                    assert_eq!(k, *keys.last().unwrap() + 1);
                    from = k;
                    cap *= 2;
                }
                None => break,
            }
        }
        seen.sort_unstable();
        assert_eq!(seen, rows);
    }
}
