//! Sign-random-projection LSH with query-directed multi-probe and bit sketches.
//!
//! # The scheme
//! * Every indexed vector is first *prepared*: for [`Metric::Cosine`] (and legacy
//!   [`Metric::InnerProduct`] indexes) it is scaled to unit length; inner-product indexes built by this
//!   version are *norm-augmented* instead (see below); then the index's mean vector (of prepared
//!   vectors, computed at build with [`MeanAccumulator`]) is subtracted. Centring matters for non-negative (ReLU) embeddings: they
//!   all live in one orthant, and uncentred hyperplanes through the origin would put most of them on
//!   the same side.
//! * `tables` (L) hash tables, each with `bits` (k ≤ 32) unit-length Gaussian hyperplanes. The bucket
//!   code of table t is a k-bit `u32`: bit i is 1 when the projection on plane i is > 0.
//! * A `sketch_bits`-bit sign sketch (another set of hyperplanes) packed into `u64` words, compared by
//!   Hamming distance to rank candidates cheaply before the exact rerank.
//! * Query-directed multi-probe (Lv et al., VLDB 2007): the cost of flipping bit i of the query's code
//!   is the squared distance of the (prepared) query to plane i, `pᵢ²`; a probe's score is the sum over
//!   the flipped bits. [`ProbeSequence`] yields `(table, code)` over all tables in increasing score,
//!   lazily, until every bucket of every table has been yielded.
//!
//! # InnerProduct: norm augmentation ("Simple LSH", Neyshabur & Srebro, ICML 2015)
//! With M = [`LshParams::max_norm`] (the largest norm of the rows indexed at build), a row x is
//! hashed as the unit vector x' = [x/M, √(max(0, 1 − |x|²/M²))] (dims + 1 values) and a query q as
//! q' = [q/|q|, 0]. Then q'·x' = q·x / (|q| M), so the angle between q' and x' grows as q·x falls,
//! and random-hyperplane codes and sketches of x' find the largest inner products (both are then
//! centred by the mean of the x', as for the other metrics). A row with |x| > M (inserted after the
//! build) gets last component 0 and |x/M| > 1: it is still hashed, only less precisely. The planes of
//! an augmented index have dims + 1 values ([`LshParams::hash_dims`]), and so has its mean.
//!
//! `max_norm == 0` is the previous scheme, kept for indexes written by earlier versions: maximum inner
//! product hashed like cosine (normalised vectors, centred by the mean of the normalised vectors),
//! which misses rows whose norm is far larger than their neighbours'. In both schemes the rerank uses
//! the exact negative inner product, so the result order is exact among the candidates.
//!
//! # Determinism and storage
//! [`Planes::generate`] derives every plane from the seed with ChaCha20 (pinned crate versions): table
//! t uses stream `t + 1`, the sketch uses stream 0, and plane i of a table is the i-th block of `dims`
//! normals of its stream. So the planes are a pure function of `(seed, dims, bits, tables,
//! sketch_bits)`, and an index with fewer bits / tables / sketch bits uses prefixes of the planes of a
//! bigger one (used by the parameter study; checked by tests). The index stores only the parameters
//! ([`LshParams::to_bytes`]) and the mean vector ([`f32s_to_le_bytes`]).

use crate::distance;
use crate::partition::Learned;
use crate::probing::{BucketProbing, Buckets, SketchScan, Superbuckets};
use crate::rescore::{take_best, SketchPass, RESCORE_FACTOR};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::sync::Arc;

/// Distance an index answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Metric {
    /// Euclidean distance (`<->`).
    L2 = 0,
    /// Cosine distance 1 − cos (`<=>`); NaN when a vector is zero.
    Cosine = 1,
    /// Negative inner product −a·b (`<#>`).
    InnerProduct = 2,
}

impl Metric {
    /// Exact distance for this metric (smaller is closer).
    #[inline]
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::L2 => distance::l2(a, b),
            Metric::Cosine => distance::cosine_distance(a, b),
            Metric::InnerProduct => distance::neg_inner_product(a, b),
        }
    }

    /// Whether vectors are scaled to unit length before centring and hashing.
    #[inline]
    pub fn normalizes(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// Byte code used by [`LshParams::to_bytes`].
    pub fn to_u8(self) -> u8 {
        self as u8
    }

    /// Inverse of [`Metric::to_u8`].
    pub fn from_u8(b: u8) -> Option<Metric> {
        match b {
            0 => Some(Metric::L2),
            1 => Some(Metric::Cosine),
            2 => Some(Metric::InnerProduct),
            _ => None,
        }
    }
}

/// Errors from parameter validation, decoding and building.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LshError {
    /// A parameter is out of range; the string says which and why.
    InvalidParams(String),
    /// A byte buffer is too short or carries an unknown version / metric.
    BadEncoding(String),
    /// A vector's length differs from `dims`.
    DimensionMismatch {
        /// `dims` of the index.
        expected: usize,
        /// length received.
        got: usize,
    },
}

impl fmt::Display for LshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LshError::InvalidParams(s) => write!(f, "invalid LSH parameters: {s}"),
            LshError::BadEncoding(s) => write!(f, "bad LSH encoding: {s}"),
            LshError::DimensionMismatch { expected, got } => {
                write!(f, "vector has {got} dimensions, index expects {expected}")
            }
        }
    }
}

impl std::error::Error for LshError {}

/// Index parameters. Everything the planes depend on is here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LshParams {
    /// Vector dimensionality (1 ..= [`LshParams::MAX_DIMS`]).
    pub dims: u32,
    /// Bits per table code, k (1 ..= 32).
    pub bits: u32,
    /// Number of hash tables, L (1 ..= [`LshParams::MAX_TABLES`]).
    pub tables: u32,
    /// Sketch length in bits: a multiple of 64 (64 ..= [`LshParams::MAX_SKETCH_BITS`]).
    pub sketch_bits: u32,
    /// Seed of the plane generator.
    pub seed: u64,
    /// Distance metric.
    pub metric: Metric,
    /// [`Metric::InnerProduct`] only: M of the norm augmentation (see the module docs), the largest
    /// row norm at build; `0` = no augmentation (the only value allowed for L2 and Cosine, and what an
    /// inner-product index written before augmentation existed decodes to).
    pub max_norm: f32,
}

/// Version of the plane-generation procedure written into [`LshParams::to_bytes`].
pub const PLANES_VERSION: u8 = 1;

/// Written instead of [`PLANES_VERSION`] by norm-augmented inner-product indexes (`max_norm > 0`,
/// planes of `dims + 1` values): a build without norm augmentation, which ignores bytes 26..32,
/// refuses such an index ("planes version 2") instead of hashing it wrongly.
pub const PLANES_VERSION_AUGMENTED: u8 = 2;

impl LshParams {
    /// Largest supported `dims`.
    pub const MAX_DIMS: u32 = 16_000;
    /// Largest `bits` (codes are `u32`).
    pub const MAX_BITS: u32 = 32;
    /// Largest `tables`.
    pub const MAX_TABLES: u32 = 64;
    /// Largest `sketch_bits`.
    pub const MAX_SKETCH_BITS: u32 = 4096;
    /// Length of [`LshParams::to_bytes`].
    pub const ENCODED_LEN: usize = 32;

    /// Tables of an index created without `WITH (tables = ...)`.
    pub const DEFAULT_TABLES: u32 = 8;
    /// Sketch bits of an index created without `WITH (sketch_bits = ...)`.
    pub const DEFAULT_SKETCH_BITS: u32 = 256;
    /// The fixed default seed: a dump/restore or REINDEX regenerates the same planes.
    pub const DEFAULT_SEED: u64 = 0x1d5_5eed;

    /// The bucket-probing layout at about 100k rows: 12 bits ([`LshParams::suggested_bits`]`(100_000)`),
    /// [`Self::DEFAULT_TABLES`] tables, [`Self::DEFAULT_SKETCH_BITS`]-bit sketch (what an index created
    /// without options got before `tables` and `sketch_bits` became automatic; the server's automatic
    /// choices now are [`LshParams::suggested_tables`] and [`LshParams::suggested_sketch_bits`]). Use
    /// [`LshParams::suggested_bits`] for other sizes.
    pub fn recommended(dims: u32, metric: Metric) -> LshParams {
        LshParams {
            dims,
            bits: 12,
            tables: Self::DEFAULT_TABLES,
            sketch_bits: Self::DEFAULT_SKETCH_BITS,
            seed: Self::DEFAULT_SEED,
            metric,
            max_norm: 0.0,
        }
    }

    /// Whether rows and queries are norm-augmented (inner product with `max_norm > 0`).
    #[inline]
    pub fn augmented(&self) -> bool {
        self.max_norm > 0.0
    }

    /// Length of the prepared vectors, planes and mean: `dims`, plus 1 when [`Self::augmented`].
    #[inline]
    pub fn hash_dims(&self) -> u32 {
        self.dims + u32::from(self.augmented())
    }

    /// Suggested `sketch_bits` for `dims`-dimensional rows: 512 from 256 dimensions up, else 256.
    /// A sketch scan costs the sketch bytes of every row, the rerank the vector bytes of each
    /// reranked row: with large vectors a longer sketch pays for itself in fewer reranks (1280-d
    /// image embeddings at the automatic rerank: recall@10 0.960 → 0.987 at the same speed; GloVe
    /// 50-d: 0.971 → 0.999 at half the speed).
    pub fn suggested_sketch_bits(dims: u32) -> u32 {
        if dims >= 256 {
            512
        } else {
            Self::DEFAULT_SKETCH_BITS
        }
    }

    /// Suggested `tables` for `rows` rows with `sketch_bits`-bit sketches: 1 while a scan ranks every
    /// row by sketch ([`auto::sketch_scan_fits`], where more tables would only be written, never
    /// read), else [`Self::DEFAULT_TABLES`] for bucket probing.
    pub fn suggested_tables(rows: u64, sketch_bits: u32) -> u32 {
        if auto::sketch_scan_fits(rows as f64, sketch_bits) {
            1
        } else {
            Self::DEFAULT_TABLES
        }
    }

    /// Suggested `bits` for `rows` rows: `round(log2(rows / 25))` clamped to 6 ..= 16, i.e. about
    /// 25 rows per bucket on average (uniform data; clustered data has far fuller popular buckets).
    pub fn suggested_bits(rows: u64) -> u32 {
        let r = (rows.max(1) as f64 / 25.0).max(1.0);
        (r.log2().round() as u32).clamp(6, 16)
    }

    /// Checks every range; call before [`Planes::generate`].
    pub fn validate(&self) -> Result<(), LshError> {
        let bad = |s: String| Err(LshError::InvalidParams(s));
        if self.dims == 0 || self.dims > Self::MAX_DIMS {
            return bad(format!(
                "dims = {} not in 1..={}",
                self.dims,
                Self::MAX_DIMS
            ));
        }
        if self.bits == 0 || self.bits > Self::MAX_BITS {
            return bad(format!(
                "bits = {} not in 1..={}",
                self.bits,
                Self::MAX_BITS
            ));
        }
        if self.tables == 0 || self.tables > Self::MAX_TABLES {
            return bad(format!(
                "tables = {} not in 1..={}",
                self.tables,
                Self::MAX_TABLES
            ));
        }
        if self.sketch_bits == 0
            || !self.sketch_bits.is_multiple_of(64)
            || self.sketch_bits > Self::MAX_SKETCH_BITS
        {
            return bad(format!(
                "sketch_bits = {} must be a multiple of 64 in 64..={}",
                self.sketch_bits,
                Self::MAX_SKETCH_BITS
            ));
        }
        if !(self.max_norm >= 0.0 && self.max_norm.is_finite()) {
            return bad(format!(
                "max_norm = {} must be finite and >= 0",
                self.max_norm
            ));
        }
        if self.augmented() && self.metric != Metric::InnerProduct {
            return bad(format!(
                "max_norm = {} is only for inner product (metric {:?})",
                self.max_norm, self.metric
            ));
        }
        Ok(())
    }

    /// Number of `u64` words in a sketch.
    #[inline]
    pub fn sketch_words(&self) -> usize {
        (self.sketch_bits / 64) as usize
    }

    /// 32 little-endian bytes: dims u32, bits u32, tables u32, sketch_bits u32, seed u64, metric u8,
    /// [`PLANES_VERSION`] u8 ([`PLANES_VERSION_AUGMENTED`] when `max_norm > 0`), max_norm f32, 2 zero
    /// bytes. Bytes 26..30 were zero before norm augmentation existed, so older indexes decode with
    /// `max_norm == 0` (unchanged hashing).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[0..4].copy_from_slice(&self.dims.to_le_bytes());
        b[4..8].copy_from_slice(&self.bits.to_le_bytes());
        b[8..12].copy_from_slice(&self.tables.to_le_bytes());
        b[12..16].copy_from_slice(&self.sketch_bits.to_le_bytes());
        b[16..24].copy_from_slice(&self.seed.to_le_bytes());
        b[24] = self.metric.to_u8();
        b[25] = if self.augmented() {
            PLANES_VERSION_AUGMENTED
        } else {
            PLANES_VERSION
        };
        b[26..30].copy_from_slice(&self.max_norm.to_le_bytes());
        b
    }

    /// Decodes [`LshParams::to_bytes`] and validates the result.
    pub fn from_bytes(b: &[u8]) -> Result<LshParams, LshError> {
        if b.len() < Self::ENCODED_LEN {
            return Err(LshError::BadEncoding(format!(
                "params need {} bytes, got {}",
                Self::ENCODED_LEN,
                b.len()
            )));
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        if b[25] != PLANES_VERSION && b[25] != PLANES_VERSION_AUGMENTED {
            return Err(LshError::BadEncoding(format!(
                "planes version {} (this build knows {PLANES_VERSION} and {PLANES_VERSION_AUGMENTED})",
                b[25]
            )));
        }
        let metric = Metric::from_u8(b[24])
            .ok_or_else(|| LshError::BadEncoding(format!("unknown metric code {}", b[24])))?;
        let p = LshParams {
            dims: u32_at(0),
            bits: u32_at(4),
            tables: u32_at(8),
            sketch_bits: u32_at(12),
            seed: u64::from_le_bytes(b[16..24].try_into().unwrap()),
            metric,
            max_norm: f32::from_le_bytes(b[26..30].try_into().unwrap()),
        };
        p.validate()?;
        if (b[25] == PLANES_VERSION_AUGMENTED) != p.augmented() {
            return Err(LshError::BadEncoding(format!(
                "planes version {} with max_norm {}",
                b[25], p.max_norm
            )));
        }
        Ok(p)
    }
}

/// The hyperplanes of an index, regenerated from [`LshParams`] (never stored).
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    dims: usize,
    bits: usize,
    tables: usize,
    sketch_bits: usize,
    /// `tables * bits` unit vectors of `dims` floats, table-major.
    table_planes: Vec<f32>,
    /// `sketch_bits` unit vectors of `dims` floats.
    sketch_planes: Vec<f32>,
}

/// 32-byte ChaCha key: the seed (LE) followed by a fixed label, so that no other seed expansion
/// algorithm (which could change between crate versions) is involved.
fn chacha_key(seed: u64) -> [u8; 32] {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..32].copy_from_slice(b"pg_imgsim lsh planes v1\0");
    key
}

fn gaussian_unit_planes(seed: u64, stream: u64, count: usize, dims: usize) -> Vec<f32> {
    let mut rng = ChaCha20Rng::from_seed(chacha_key(seed));
    rng.set_stream(stream);
    let mut out = Vec::with_capacity(count * dims);
    for _ in 0..count {
        let start = out.len();
        for _ in 0..dims {
            let x: f32 = StandardNormal.sample(&mut rng);
            out.push(x);
        }
        // Norm in f64, sequentially: the planes are then bit-identical on every CPU (the dispatched
        // f32 kernels may use FMA or not).
        let n = out[start..]
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt();
        for x in &mut out[start..] {
            *x = (f64::from(*x) / n) as f32;
        }
    }
    out
}

impl Planes {
    /// Regenerates the planes of `params` (which must be valid), of [`LshParams::hash_dims`] values
    /// each (`dims`, or `dims + 1` for an augmented inner-product index).
    ///
    /// # Panics
    /// If `params` fails [`LshParams::validate`].
    pub fn generate(params: &LshParams) -> Planes {
        params.validate().expect("invalid LSH parameters");
        let dims = params.hash_dims() as usize;
        let bits = params.bits as usize;
        let tables = params.tables as usize;
        let sketch_bits = params.sketch_bits as usize;
        let mut table_planes = Vec::with_capacity(tables * bits * dims);
        for t in 0..tables {
            table_planes.extend(gaussian_unit_planes(params.seed, t as u64 + 1, bits, dims));
        }
        let sketch_planes = gaussian_unit_planes(params.seed, 0, sketch_bits, dims);
        Planes {
            dims,
            bits,
            tables,
            sketch_bits,
            table_planes,
            sketch_planes,
        }
    }

    /// Plane `i` (< bits) of table `t` (< tables), a unit vector.
    #[inline]
    pub fn table_plane(&self, t: usize, i: usize) -> &[f32] {
        let off = (t * self.bits + i) * self.dims;
        &self.table_planes[off..off + self.dims]
    }

    /// Sketch plane `j` (< sketch_bits), a unit vector.
    #[inline]
    pub fn sketch_plane(&self, j: usize) -> &[f32] {
        &self.sketch_planes[j * self.dims..(j + 1) * self.dims]
    }

    /// All table planes, `tables * bits * dims` floats, table-major.
    pub fn table_planes(&self) -> &[f32] {
        &self.table_planes
    }

    /// All sketch planes, `sketch_bits * dims` floats.
    pub fn sketch_planes(&self) -> &[f32] {
        &self.sketch_planes
    }
}

/// Streaming mean of prepared vectors, summed in f64: raw for L2, normalised for Cosine (and legacy
/// InnerProduct, [`MeanAccumulator::new_legacy`]); zero vectors are skipped there (no direction).
///
/// For InnerProduct ([`MeanAccumulator::new`]) the prepared rows are the norm-augmented
/// x' = [x/M, √(1 − |x|²/M²)] whose M (the largest norm) is only known at the end: the accumulator
/// sums the raw x, keeps every row's norm (4 bytes per row) and the largest, and [`Self::finish`]
/// returns the mean of the x' (dims + 1 values) for M = [`Self::augment_norm`]. Zero vectors count
/// (x' = [0, 1]); rows with a non-finite norm are skipped.
#[derive(Debug, Clone)]
pub struct MeanAccumulator {
    metric: Metric,
    sum: Vec<f64>,
    count: u64,
    augment: bool,
    /// Norms of the rows added (augmented only).
    norms: Vec<f32>,
    max_norm: f32,
}

impl MeanAccumulator {
    /// Empty accumulator for `dims`-dimensional vectors; InnerProduct is norm-augmented (what a new
    /// build does).
    pub fn new(dims: usize, metric: Metric) -> Self {
        MeanAccumulator {
            metric,
            sum: vec![0.0; dims],
            count: 0,
            augment: metric == Metric::InnerProduct,
            norms: Vec::new(),
            max_norm: 0.0,
        }
    }

    /// As [`Self::new`], but InnerProduct normalises like Cosine (indexes with `max_norm == 0`).
    pub fn new_legacy(dims: usize, metric: Metric) -> Self {
        MeanAccumulator {
            augment: false,
            ..Self::new(dims, metric)
        }
    }

    /// The `max_norm` to store with the mean of [`Self::finish`]: 0 when not augmenting, else the
    /// largest norm added (1 when none was positive, e.g. no rows or only zero vectors).
    pub fn augment_norm(&self) -> f32 {
        if !self.augment {
            0.0
        } else if self.max_norm > 0.0 {
            self.max_norm
        } else {
            1.0
        }
    }

    /// Adds one vector.
    pub fn add(&mut self, v: &[f32]) -> Result<(), LshError> {
        if v.len() != self.sum.len() {
            return Err(LshError::DimensionMismatch {
                expected: self.sum.len(),
                got: v.len(),
            });
        }
        if self.augment {
            let n = distance::norm(v);
            if !n.is_finite() {
                return Ok(());
            }
            for (s, x) in self.sum.iter_mut().zip(v) {
                *s += f64::from(*x);
            }
            self.norms.push(n);
            self.max_norm = self.max_norm.max(n);
            self.count += 1;
            return Ok(());
        }
        let scale = if self.metric.normalizes() {
            let n = distance::norm(v);
            if !(n > 0.0 && n.is_finite()) {
                return Ok(());
            }
            1.0 / f64::from(n)
        } else {
            1.0
        };
        for (s, x) in self.sum.iter_mut().zip(v) {
            *s += f64::from(*x) * scale;
        }
        self.count += 1;
        Ok(())
    }

    /// Combines two partial accumulators (e.g. from parallel build workers).
    pub fn merge(&mut self, other: &MeanAccumulator) {
        assert_eq!(self.sum.len(), other.sum.len(), "dimension mismatch");
        assert_eq!(
            self.augment, other.augment,
            "augmented and plain accumulators"
        );
        for (a, b) in self.sum.iter_mut().zip(&other.sum) {
            *a += b;
        }
        self.count += other.count;
        self.norms.extend_from_slice(&other.norms);
        self.max_norm = self.max_norm.max(other.max_norm);
    }

    /// Vectors counted so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean (all zeros if nothing was added): `dims` values, or `dims + 1` when augmenting (the
    /// mean of the augmented rows for M = [`Self::augment_norm`]).
    pub fn finish(&self) -> Vec<f32> {
        let n = self.count.max(1) as f64;
        if !self.augment {
            return self.sum.iter().map(|s| (s / n) as f32).collect();
        }
        let m = f64::from(self.augment_norm());
        let mut mean: Vec<f32> = self.sum.iter().map(|s| (s / (n * m)) as f32).collect();
        let last: f64 = self.norms.iter().map(|&x| augment_last(x, m)).sum();
        mean.push((last / n) as f32);
        mean
    }
}

/// Last component of an augmented row of norm `norm`: √(max(0, 1 − norm²/M²)) (0 for a non-finite
/// norm or a row longer than M).
fn augment_last(norm: f32, m: f64) -> f64 {
    let r = f64::from(norm) / m;
    if r.is_finite() {
        (1.0 - r * r).max(0.0).sqrt()
    } else {
        0.0
    }
}

/// Rows per group that [`MemIndex::search`] offers to a sketch pass.
const SKETCH_BLOCK: usize = 4096;

/// Calls `f(j, k)` for each plane `j` of `planes` (`planes.len() / dims` planes of `dims` values) and
/// each row `k` of `batch` (rows of `dims` values) with the row on the plane's positive side
/// (`dot(plane, row) > thresholds[j]`, 0 past the end of `thresholds`). Four planes and two rows per pass ([`distance::dot4x2`]), bit-identical
/// to one `dot` per pair: each group of planes (20 kB at 1280 dims) stays in the L1 cache while the
/// batch streams by.
fn for_each_positive(
    planes: &[f32],
    thresholds: &[f32],
    batch: &[f32],
    dims: usize,
    mut f: impl FnMut(usize, usize),
) {
    // Plane j's split point (0 where `thresholds` has none: random planes through the centre).
    let th = |j: usize| thresholds.get(j).copied().unwrap_or(0.0);
    let rows = batch.len() / dims;
    let (quads, rest) = planes.split_at(planes.len() / (4 * dims) * 4 * dims);
    for (g, quad) in quads.chunks_exact(4 * dims).enumerate() {
        let p: [&[f32]; 4] = std::array::from_fn(|k| &quad[k * dims..(k + 1) * dims]);
        for (r, pair) in batch.chunks_exact(2 * dims).enumerate() {
            let sums = distance::dot4x2(p, &pair[..dims], &pair[dims..]);
            for (k, (a, b)) in sums.into_iter().enumerate() {
                if a > th(4 * g + k) {
                    f(4 * g + k, 2 * r);
                }
                if b > th(4 * g + k) {
                    f(4 * g + k, 2 * r + 1);
                }
            }
        }
        if rows % 2 == 1 {
            let last = &batch[(rows - 1) * dims..];
            for (k, plane) in p.into_iter().enumerate() {
                if distance::dot(plane, last) > th(4 * g + k) {
                    f(4 * g + k, rows - 1);
                }
            }
        }
    }
    let first = quads.len() / dims;
    for (j, plane) in rest.chunks_exact(dims).enumerate() {
        for (k, row) in batch.chunks_exact(dims).enumerate() {
            if distance::dot(plane, row) > th(first + j) {
                f(first + j, k);
            }
        }
    }
}

/// The hash functions of one index: parameters, regenerated planes, stored mean.
#[derive(Debug, Clone)]
pub struct LshModel {
    params: LshParams,
    planes: Planes,
    mean: Vec<f32>,
    /// Table-0 planes fitted to the data ([`crate::partition`]), stored by the index; they replace
    /// the random planes at the top bit positions of table 0.
    learned: Option<Learned>,
    /// Split point of each table plane, `tables * bits`, table-major: 0 for random planes, the
    /// learned median for learned ones.
    thresholds: Vec<f32>,
}

/// Codes and sketch of one stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowHash {
    /// One k-bit bucket code per table.
    pub codes: Vec<u32>,
    /// `sketch_bits / 64` words; bit j of the sketch is bit `j % 64` of word `j / 64`.
    pub sketch: Vec<u64>,
}

/// Everything a query needs: its codes, sketch and per-plane projections (for multi-probe).
#[derive(Debug, Clone)]
pub struct QueryHash {
    /// One k-bit bucket code per table.
    pub codes: Vec<u32>,
    /// Sketch words, as in [`RowHash::sketch`].
    pub sketch: Vec<u64>,
    /// `tables * bits` signed distances of the prepared query to the table planes, table-major.
    pub projections: Vec<f32>,
    /// `sketch_bits` signed distances of the prepared query to the sketch planes (for
    /// [`crate::rescore::SketchScorer`]); the sketch holds their signs.
    pub sketch_projections: Vec<f32>,
    /// Bits per table (k).
    pub bits: u32,
}

impl LshModel {
    /// Builds the model from parameters and the stored mean vector ([`LshParams::hash_dims`] floats:
    /// `dims`, or `dims + 1` for an augmented index; pass zeros for no centring).
    pub fn new(params: LshParams, mean: Vec<f32>) -> Result<LshModel, LshError> {
        params.validate()?;
        if mean.len() != params.hash_dims() as usize {
            return Err(LshError::DimensionMismatch {
                expected: params.hash_dims() as usize,
                got: mean.len(),
            });
        }
        Ok(LshModel {
            planes: Planes::generate(&params),
            thresholds: vec![0.0; (params.tables * params.bits) as usize],
            params,
            mean,
            learned: None,
        })
    }

    /// Learned planes a model of `params` takes ([`LshModel::learn_partition`]): `min(bits,
    /// hash_dims)` for a one-table index, whose only table orders its sketch scans; none otherwise
    /// (bucket probing keeps its random, independent tables), nor for a norm-augmented inner-product
    /// index: its queries ([q/|q|, 0]) lie off the rows' manifold ([x/M, √(1 − |x|²/M²)]), so the
    /// superbuckets nearest a query are not those of its largest inner products (regress test
    /// lsh_ip: recall@10 fell below 0.9 at a fifth of the rows).
    pub fn partition_planes(params: &LshParams) -> usize {
        if params.tables == 1 && !params.augmented() {
            params.bits.min(params.hash_dims()) as usize
        } else {
            0
        }
    }

    /// This model with table 0's top `learned.count()` bit positions hashed by learned planes (plane
    /// 0, the sample's largest variance, at the top bit `bits - 1`, which superbuckets split first).
    pub fn with_learned(mut self, learned: Learned) -> Result<LshModel, LshError> {
        let (bits, hd) = (self.params.bits as usize, self.params.hash_dims() as usize);
        let c = learned.count();
        if c > bits || learned.planes.len() != c * hd {
            return Err(LshError::InvalidParams(format!(
                "{c} learned planes of {} values for {bits} bits of {hd} values",
                learned.planes.len()
            )));
        }
        for (j, plane) in learned.planes.chunks_exact(hd).enumerate() {
            let i = bits - 1 - j;
            self.planes.table_planes[i * hd..(i + 1) * hd].copy_from_slice(plane);
            self.thresholds[i] = learned.thresholds[j];
        }
        self.learned = Some(learned);
        Ok(self)
    }

    /// This model with learned planes fitted to `sample` (raw rows at
    /// [`crate::partition::sample_positions`], prepared in place) when it is a one-table model of at
    /// least [`crate::partition::MIN_ROWS`] rows (`rows`: the index's, not the sample's) and the fit
    /// is finite; else unchanged. Deterministic. `check` is called once per fit iteration.
    pub fn learn_partition(
        self,
        sample: &mut [f32],
        rows: usize,
        check: &mut dyn FnMut(),
    ) -> Result<LshModel, LshError> {
        let dims = self.params.dims as usize;
        let count = Self::partition_planes(&self.params);
        if count == 0 || rows < crate::partition::MIN_ROWS || sample.len() < dims {
            return Ok(self);
        }
        // Not norm-augmented (partition_planes): a prepared row has `dims` values too.
        let mut one = Vec::with_capacity(dims);
        for row in sample.chunks_exact_mut(dims) {
            self.prepare_row_into(row, &mut one)?;
            row.copy_from_slice(&one);
        }
        let learned = crate::partition::fit(sample, dims, count, self.params.seed, check);
        if !crate::partition::is_finite(&learned) {
            return Ok(self);
        }
        self.with_learned(learned)
    }

    /// The learned planes, if any.
    pub fn learned(&self) -> Option<&Learned> {
        self.learned.as_ref()
    }

    /// Parameters.
    pub fn params(&self) -> &LshParams {
        &self.params
    }

    /// Stored mean vector.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The regenerated planes.
    pub fn planes(&self) -> &Planes {
        &self.planes
    }

    fn check(&self, v: &[f32]) -> Result<(), LshError> {
        if v.len() != self.params.dims as usize {
            return Err(LshError::DimensionMismatch {
                expected: self.params.dims as usize,
                got: v.len(),
            });
        }
        Ok(())
    }

    /// Writes the prepared row (normalised for Cosine / legacy InnerProduct, augmented to
    /// [x/M, √(1 − |x|²/M²)] for augmented InnerProduct; then centred) into `out`.
    pub fn prepare_row_into(&self, v: &[f32], out: &mut Vec<f32>) -> Result<(), LshError> {
        self.check(v)?;
        out.clear();
        out.extend_from_slice(v);
        if self.params.augmented() {
            let m = self.params.max_norm;
            let last = augment_last(distance::norm(v), f64::from(m));
            let inv = 1.0 / m;
            for x in out.iter_mut() {
                *x *= inv;
            }
            out.push(last as f32);
        } else if self.params.metric.normalizes() {
            distance::normalize(out);
        }
        distance::sub_assign(out, &self.mean);
        Ok(())
    }

    /// Writes the prepared query (normalised for Cosine / InnerProduct, then [q/|q|, 0] for augmented
    /// InnerProduct; then centred) into `out`. Except for augmented indexes, the same as
    /// [`Self::prepare_row_into`].
    pub fn prepare_query_into(&self, v: &[f32], out: &mut Vec<f32>) -> Result<(), LshError> {
        self.check(v)?;
        out.clear();
        out.extend_from_slice(v);
        if self.params.metric.normalizes() {
            distance::normalize(out);
        }
        if self.params.augmented() {
            out.push(0.0);
        }
        distance::sub_assign(out, &self.mean);
        Ok(())
    }

    fn sketch_of(&self, prepared: &[f32], sketch: &mut [u64]) {
        sketch.fill(0);
        for j in 0..self.params.sketch_bits as usize {
            if distance::dot(self.planes.sketch_plane(j), prepared) > 0.0 {
                sketch[j / 64] |= 1u64 << (j % 64);
            }
        }
    }

    /// Codes and sketch of a row, written into caller buffers (`tables` codes, `sketch_words`
    /// words). `scratch` is reused between calls to avoid allocation.
    pub fn hash_into(
        &self,
        v: &[f32],
        scratch: &mut Vec<f32>,
        codes: &mut [u32],
        sketch: &mut [u64],
    ) -> Result<(), LshError> {
        self.prepare_row_into(v, scratch)?;
        let bits = self.params.bits as usize;
        assert_eq!(
            codes.len(),
            self.params.tables as usize,
            "codes buffer size"
        );
        assert_eq!(
            sketch.len(),
            self.params.sketch_words(),
            "sketch buffer size"
        );
        for (t, code) in codes.iter_mut().enumerate() {
            let mut c = 0u32;
            for i in 0..bits {
                if distance::dot(self.planes.table_plane(t, i), scratch)
                    > self.thresholds[t * bits + i]
                {
                    c |= 1 << i;
                }
            }
            *code = c;
        }
        self.sketch_of(scratch, sketch);
        Ok(())
    }

    /// Rows hashed together by [`Self::hash_many_into`].
    pub const HASH_BATCH: usize = 32;

    /// [`Self::hash_into`] for `rows.len() / dims` rows (row-major), with the same results bit for bit
    /// (the same dot products), but each plane is read once per [`Self::HASH_BATCH`] rows instead of
    /// once per row (with 512 planes of 1280 floats, 2.6 MB, more than a core's cache, the per-row
    /// loop waits on memory), four planes by two rows at a time ([`distance::dot4x2`]): 1280-d rows
    /// on 524 planes, 100k rows in 2.1 s instead of 3.5 s with two rows per plane
    /// (`benches/sketch_rescore.rs`, "hashed in"). `codes` holds `tables` codes per row, `sketches`
    /// `sketch_words` words.
    pub fn hash_many_into(
        &self,
        rows: &[f32],
        scratch: &mut Vec<f32>,
        codes: &mut [u32],
        sketches: &mut [u64],
    ) -> Result<(), LshError> {
        let dims = self.params.dims as usize;
        let (tables, words) = (self.params.tables as usize, self.params.sketch_words());
        assert!(rows.len().is_multiple_of(dims), "rows buffer size");
        let n = rows.len() / dims;
        assert_eq!(codes.len(), n * tables, "codes buffer size");
        assert_eq!(sketches.len(), n * words, "sketch buffer size");
        let hd = self.params.hash_dims() as usize;
        let mut one = Vec::with_capacity(hd);
        for start in (0..n).step_by(Self::HASH_BATCH) {
            let end = (start + Self::HASH_BATCH).min(n);
            scratch.clear();
            for r in start..end {
                self.prepare_row_into(&rows[r * dims..(r + 1) * dims], &mut one)?;
                scratch.extend_from_slice(&one);
            }
            let batch = &scratch[..];
            let bits = self.params.bits as usize;
            for t in 0..tables {
                for r in start..end {
                    codes[r * tables + t] = 0;
                }
                let planes = &self.planes.table_planes()[t * bits * hd..(t + 1) * bits * hd];
                let th = &self.thresholds[t * bits..(t + 1) * bits];
                for_each_positive(planes, th, batch, hd, |i, k| {
                    codes[(start + k) * tables + t] |= 1 << i
                });
            }
            sketches[start * words..end * words].fill(0);
            for_each_positive(self.planes.sketch_planes(), &[], batch, hd, |j, k| {
                sketches[(start + k) * words + j / 64] |= 1u64 << (j % 64)
            });
        }
        Ok(())
    }

    /// Codes and sketch of a row.
    pub fn hash(&self, v: &[f32]) -> Result<RowHash, LshError> {
        let mut codes = vec![0u32; self.params.tables as usize];
        let mut sketch = vec![0u64; self.params.sketch_words()];
        let mut scratch = Vec::with_capacity(v.len() + 1);
        self.hash_into(v, &mut scratch, &mut codes, &mut sketch)?;
        Ok(RowHash { codes, sketch })
    }

    /// Codes, sketch and projections of a query.
    pub fn query(&self, v: &[f32]) -> Result<QueryHash, LshError> {
        let mut prepared = Vec::with_capacity(v.len() + 1);
        self.prepare_query_into(v, &mut prepared)?;
        let bits = self.params.bits as usize;
        let tables = self.params.tables as usize;
        let mut projections = Vec::with_capacity(tables * bits);
        let mut codes = Vec::with_capacity(tables);
        for t in 0..tables {
            let mut c = 0u32;
            for i in 0..bits {
                // Signed distance to the split (exactly the dot product for a random plane).
                let p = distance::dot(self.planes.table_plane(t, i), &prepared)
                    - self.thresholds[t * bits + i];
                if p > 0.0 {
                    c |= 1 << i;
                }
                projections.push(p);
            }
            codes.push(c);
        }
        let mut sketch = vec![0u64; self.params.sketch_words()];
        let sketch_projections: Vec<f32> = (0..self.params.sketch_bits as usize)
            .map(|j| distance::dot(self.planes.sketch_plane(j), &prepared))
            .collect();
        for (j, p) in sketch_projections.iter().enumerate() {
            if *p > 0.0 {
                sketch[j / 64] |= 1u64 << (j % 64);
            }
        }
        Ok(QueryHash {
            codes,
            sketch,
            projections,
            sketch_projections,
            bits: self.params.bits,
        })
    }
}

impl QueryHash {
    /// The asymmetric sketch estimate for this query ([`crate::rescore`]).
    pub fn sketch_scorer(&self) -> crate::rescore::SketchScorer {
        crate::rescore::SketchScorer::new(&self.sketch_projections)
    }

    /// The query-directed probing sequence over all tables (see [`ProbeSequence`]).
    pub fn probes(&self) -> ProbeSequence {
        ProbeSequence::new(&self.codes, &self.projections, self.bits)
    }
}

/// One bucket to visit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Table index.
    pub table: u32,
    /// Bucket code in that table.
    pub code: u32,
    /// Score: sum of squared projections of the flipped bits (0 for the query's own bucket).
    pub score: f64,
}

#[derive(Debug, Clone, Copy)]
struct HeapEntry {
    score: f64,
    table: u32,
    /// Perturbation set as a bit mask over *sorted positions* (position 0 = smallest margin).
    set: u32,
}

impl PartialEq for HeapEntry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for HeapEntry {}
impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for HeapEntry {
    /// Reversed so that `BinaryHeap` (a max-heap) pops the smallest (score, table, set) first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.score
            .total_cmp(&self.score)
            .then(o.table.cmp(&self.table))
            .then(o.set.cmp(&self.set))
    }
}

/// Lazy, unbounded query-directed probing sequence across all tables, in non-decreasing score with
/// ties broken by (table, perturbation set). First the query's own bucket in every table (score 0),
/// then perturbed buckets. Each table's perturbation sets are generated with the shift / expand
/// heap of Lv et al.: over positions sorted by margin, `shift` replaces the largest position m by
/// m+1 and `expand` adds m+1; starting from {0} this reaches every non-empty subset exactly once,
/// and children never score lower than their parent. The sequence ends after yielding all
/// `tables · 2^bits` buckets. Memory grows by at most one heap entry per yielded probe.
#[derive(Debug, Clone)]
pub struct ProbeSequence {
    bits: u32,
    codes: Vec<u32>,
    /// Per table: bit index at each sorted position.
    order: Vec<u32>,
    /// Per table: squared margin at each sorted position (non-decreasing).
    sq: Vec<f64>,
    heap: BinaryHeap<HeapEntry>,
}

impl ProbeSequence {
    /// `codes`: the query's code per table; `projections`: `codes.len() * bits` signed projections,
    /// table-major.
    pub fn new(codes: &[u32], projections: &[f32], bits: u32) -> ProbeSequence {
        assert!((1..=32).contains(&bits), "bits must be in 1..=32");
        let k = bits as usize;
        assert_eq!(projections.len(), codes.len() * k, "projections length");
        let mut order = Vec::with_capacity(projections.len());
        let mut sq = Vec::with_capacity(projections.len());
        let mut heap = BinaryHeap::with_capacity(codes.len() * 4);
        for t in 0..codes.len() {
            let p = &projections[t * k..(t + 1) * k];
            let mut idx: Vec<u32> = (0..bits).collect();
            let m2 = |i: u32| {
                let x = f64::from(p[i as usize]);
                x * x
            };
            idx.sort_by(|&a, &b| m2(a).total_cmp(&m2(b)).then(a.cmp(&b)));
            sq.extend(idx.iter().map(|&i| m2(i)));
            order.extend(idx);
            heap.push(HeapEntry {
                score: 0.0,
                table: t as u32,
                set: 0,
            });
        }
        ProbeSequence {
            bits,
            codes: codes.to_vec(),
            order,
            sq,
            heap,
        }
    }

    fn score(&self, table: usize, set: u32) -> f64 {
        // Summed in ascending position order, so a child's score is never below its parent's even
        // after rounding (monotonicity of floating-point addition).
        let k = self.bits as usize;
        let mut s = 0.0;
        let mut m = set;
        while m != 0 {
            let pos = m.trailing_zeros() as usize;
            s += self.sq[table * k + pos];
            m &= m - 1;
        }
        s
    }

    fn code(&self, table: usize, set: u32) -> u32 {
        let k = self.bits as usize;
        let mut flip = 0u32;
        let mut m = set;
        while m != 0 {
            let pos = m.trailing_zeros() as usize;
            flip |= 1u32 << self.order[table * k + pos];
            m &= m - 1;
        }
        self.codes[table] ^ flip
    }
}

impl Iterator for ProbeSequence {
    type Item = Probe;

    fn next(&mut self) -> Option<Probe> {
        let e = self.heap.pop()?;
        let t = e.table as usize;
        let k = self.bits;
        if e.set == 0 {
            let child = 1u32;
            self.heap.push(HeapEntry {
                score: self.score(t, child),
                table: e.table,
                set: child,
            });
        } else {
            let m = 31 - e.set.leading_zeros(); // largest position in the set
            if m + 1 < k {
                let next = 1u32 << (m + 1);
                let shifted = (e.set & !(1u32 << m)) | next;
                let expanded = e.set | next;
                for set in [shifted, expanded] {
                    self.heap.push(HeapEntry {
                        score: self.score(t, set),
                        table: e.table,
                        set,
                    });
                }
            }
        }
        Some(Probe {
            table: e.table,
            code: self.code(t, e.set),
            score: e.score,
        })
    }
}

/// Serialises f32s as little-endian bytes (e.g. the mean vector).
pub fn f32s_to_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Inverse of [`f32s_to_le_bytes`]; the length must be a multiple of 4.
pub fn f32s_from_le_bytes(b: &[u8]) -> Result<Vec<f32>, LshError> {
    if !b.len().is_multiple_of(4) {
        return Err(LshError::BadEncoding(format!(
            "{} bytes is not a whole number of f32",
            b.len()
        )));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

/// Serialises u64 sketch words as little-endian bytes.
pub fn u64s_to_le_bytes(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Inverse of [`u64s_to_le_bytes`]; the length must be a multiple of 8.
pub fn u64s_from_le_bytes(b: &[u8]) -> Result<Vec<u64>, LshError> {
    if !b.len().is_multiple_of(8) {
        return Err(LshError::BadEncoding(format!(
            "{} bytes is not a whole number of u64",
            b.len()
        )));
    }
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect())
}

impl RowHash {
    /// `tables` u32 codes then the sketch words, all little-endian (4·L + 8·W bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.codes.len() * 4 + self.sketch.len() * 8);
        for c in &self.codes {
            b.extend_from_slice(&c.to_le_bytes());
        }
        b.extend(u64s_to_le_bytes(&self.sketch));
        b
    }

    /// Inverse of [`RowHash::to_bytes`] for an index with `tables` tables and `sketch_words` words.
    pub fn from_bytes(b: &[u8], tables: usize, sketch_words: usize) -> Result<RowHash, LshError> {
        let need = tables * 4 + sketch_words * 8;
        if b.len() != need {
            return Err(LshError::BadEncoding(format!(
                "row hash needs {need} bytes, got {}",
                b.len()
            )));
        }
        let codes = b[..tables * 4]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok(RowHash {
            codes,
            sketch: u64s_from_le_bytes(&b[tables * 4..])?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// In-memory reference index
// ---------------------------------------------------------------------------------------------

/// Query-time knobs of the search plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchParams {
    /// Neighbours to return.
    pub k: usize,
    /// Stop probing once this many distinct rows have been collected (the bucket being read is
    /// finished, so the count may overshoot).
    pub max_candidates: usize,
    /// Stop after this many bucket probes (counting empty buckets), whatever the count.
    pub max_probes: usize,
    /// Rows whose exact distance is computed (best by sketch Hamming distance; in a sketch scan, the
    /// best by the asymmetric estimate among [`crate::rescore::RESCORE_FACTOR`] × as many best by
    /// Hamming distance); clamped to ≥ k.
    pub rerank: usize,
    /// Where candidates come from: probed buckets, or every row's sketch.
    pub mode: ScanMode,
    /// Sketch scan of an index with learned planes: share of the rows read (superbuckets nearest the
    /// query first, [`superbucket_order`], at least [`phase_rows`]); 1 reads every row. Ignored
    /// without learned planes (every row is read).
    pub scan_fraction: f64,
}

/// The superbuckets (top `dir_bits` bits of table-0 codes) of an index in the order a sketch scan
/// visits them: query-directed multi-probe order over those bits (the query's own superbucket first;
/// [`ProbeSequence`] on the top bits), every superbucket once.
pub fn superbucket_order(qh: &QueryHash, dir_bits: u32) -> Box<dyn Iterator<Item = u32>> {
    if dir_bits == 0 {
        return Box::new(std::iter::once(0));
    }
    let bits = qh.bits;
    let shift = bits - dir_bits;
    let seq = ProbeSequence::new(
        &[qh.codes[0] >> shift],
        &qh.projections[shift as usize..bits as usize],
        dir_bits,
    );
    Box::new(seq.map(|p| p.code))
}

/// Rows a sketch scan reads in its next phase (a run of superbuckets in [`superbucket_order`]) after
/// `visited` rows: the first phase `max(fraction × rows, shortlist)` (so that the shortlist of
/// `shortlist` rows can fill), each later one as many as all phases before (so that a query whose
/// filter rejects most rows reaches the end in a few phases).
pub fn phase_rows(rows: usize, fraction: f64, shortlist: usize, visited: usize) -> usize {
    if visited > 0 {
        return visited;
    }
    let f = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        1.0
    };
    ((rows as f64 * f).ceil() as usize).max(shortlist).max(1)
}

/// How a search finds its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanMode {
    /// Probe buckets of every table in multi-probe order (`max_probes`, `max_candidates`).
    Buckets,
    /// Rank every row by sketch Hamming distance (one sequential pass over one table's entries, each
    /// row once); `max_probes` and `max_candidates` are not used. Up to
    /// [`auto::SKETCH_SCAN_MAX_BYTES`] of sketches this costs about what probing does, and it loses no
    /// true neighbour to bucket boundaries.
    Sketches,
}

/// Automatic scan settings: the ones an index scan uses where `lsh.probes`, `lsh.max_candidates` and
/// `lsh.rerank` are 0 (the server calls these; [`SearchParams::auto`] is the in-memory twin, so the
/// simulations and the server cannot drift apart). Measured with benches/lsh_vs_pgvector.sh (512-d
/// clustered: recall@10 0.96-0.99 at 100k rows, 0.965-0.98 at 1M).
pub mod auto {
    use super::ScanMode;

    /// Indexes whose sketches take up to this many bytes in all are scanned by sketch
    /// ([`ScanMode::Sketches`]): 1,000,000 rows of 256-bit sketches, 500,000 of 512-bit ones; larger
    /// ones probe buckets. A sketch scan reads every row's sketch once, where bucket probing at these
    /// sizes collects `max_candidates` = rows / 25 rows from 8 tables and reads their chains whole:
    /// the pages read are of the same order, at much higher recall on hard data (GloVe 400k × 50:
    /// benches/results/lsh_vs_pgvector_glove.txt). Beyond it a scan's cost keeps growing with the
    /// table; bucket probing at 1M × 512-d was measured at 0.98 (README).
    pub const SKETCH_SCAN_MAX_BYTES: f64 = 32_000_000.0;

    /// Whether `rows` sketches of `sketch_bits` bits are within [`SKETCH_SCAN_MAX_BYTES`].
    pub fn sketch_scan_fits(rows: f64, sketch_bits: u32) -> bool {
        rows.max(0.0) * f64::from(sketch_bits) / 8.0 <= SKETCH_SCAN_MAX_BYTES
    }

    /// The scan mode for about `rows` rows in an index of `tables` tables with `sketch_bits`-bit
    /// sketches: one table's buckets alone cannot find enough neighbours, so such an index (built
    /// small, grown past the limit but not yet rebuilt) is scanned by sketch at any size.
    pub fn mode(rows: f64, tables: u32, sketch_bits: u32) -> ScanMode {
        if tables <= 1 || sketch_scan_fits(rows, sketch_bits) {
            ScanMode::Sketches
        } else {
            ScanMode::Buckets
        }
    }

    /// Share of the rows a sketch scan reads before its first rerank: the superbuckets of a
    /// one-table index with learned planes ([`crate::partition`]) nearest the query first, at least
    /// the shortlist's size ([`super::phase_rows`]); the other rows come in later batches. 1 (every
    /// row) for an index without learned planes, whose superbuckets are random slices.
    pub fn scan_fraction(learned: bool) -> f64 {
        if learned {
            SCAN_FRACTION
        } else {
            1.0
        }
    }

    /// The automatic [`scan_fraction`] of an index with learned planes: recall@10 at rerank 500
    /// (`benches/scan_fraction.rs`, 200 queries) 0.975 of the full scan's 0.975 on 100k image
    /// embeddings, 0.965 of 0.980 on GloVe 400k × 50 (0.952 at 0.2: too close to 0.95).
    pub const SCAN_FRACTION: f64 = 0.25;

    /// Directory bits for `rows` rows in `tables` tables: superbuckets of at least 128 rows (one or
    /// two pages of entries, read whole by a probe); in a one-table index with `learned` planes, of
    /// at least 64 rows: a sketch scan reads them nearest the query first and stops early, and finer
    /// regions need fewer rows read for the same recall (GloVe 400k, 500 reranks, a fifth of the
    /// rows: recall@10 0.936 with 256-row superbuckets, 0.944 with 128, 0.952 with 64; the
    /// part-filled last page of each chain adds about 10 % to the index); in a one-table index
    /// without (every chain is read by every scan), of at least 1024 rows, so that part-filled last
    /// pages are a small share of what a scan reads.
    pub fn dir_bits(rows: usize, bits: u32, tables: u32, learned: bool) -> u32 {
        let min_rows = match (tables <= 1, learned) {
            (true, true) => 64,
            (true, false) => 1024,
            (false, _) => 128,
        };
        let mut d = 0;
        while d < bits && (rows >> (d + 1)) >= min_rows {
            d += 1;
        }
        d
    }

    /// Buckets probed per table in the first batch: 2^(bits − 7), at least 16.
    pub fn probes_per_table(bits: u32) -> usize {
        (1usize << bits.saturating_sub(7)).max(16)
    }
    /// Distinct rows collected before ranking: max(8000, rows / 25).
    pub fn max_candidates(rows: f64) -> usize {
        (rows.max(0.0) / 25.0).max(8000.0) as usize
    }
    /// Candidates (best by sketch) given an exact distance per batch: max(500, rows / 1000) when
    /// probing buckets; 500 for a sketch scan, whose candidates are the best of every row (a fixed
    /// number suffices), reordered by the asymmetric estimate ([`crate::rescore`]): recall@10 0.973
    /// on the 100k × 1280-d image embeddings and 0.985 on GloVe 400k × 50-d, where Hamming distance
    /// alone needed 1000 for 0.970 and 0.972 (`benches/sketch_rescore.rs`).
    pub fn rerank(rows: f64, mode: ScanMode) -> usize {
        match mode {
            ScanMode::Buckets => (rows.max(0.0) / 1000.0).max(500.0) as usize,
            ScanMode::Sketches => 500,
        }
    }
}

impl SearchParams {
    /// The server's automatic settings for an index of `bits` bits per table, `tables` tables and
    /// `sketch_bits`-bit sketches over about `rows` rows ([`auto`]): scan mode, probes of all tables,
    /// candidates, rerank (at least `k`).
    pub fn auto(bits: u32, tables: u32, sketch_bits: u32, rows: u64, k: usize) -> SearchParams {
        let mode = auto::mode(rows as f64, tables, sketch_bits);
        SearchParams {
            k,
            max_candidates: auto::max_candidates(rows as f64),
            max_probes: auto::probes_per_table(bits) * tables as usize,
            rerank: auto::rerank(rows as f64, mode).max(k),
            mode,
            scan_fraction: auto::SCAN_FRACTION,
        }
    }

    /// [`SearchParams::for_rows`]`(100_000, k)`: the server's automatic settings at 100k rows.
    pub fn recommended(k: usize) -> SearchParams {
        Self::for_rows(100_000, k)
    }

    /// The server's automatic settings for an index of `rows` rows created without options
    /// ([`LshParams::suggested_bits`]`(rows)` bits, [`LshParams::suggested_tables`] tables) of
    /// fewer than 256 dimensions ([`LshParams::DEFAULT_SKETCH_BITS`]-bit sketches).
    pub fn for_rows(rows: u64, k: usize) -> SearchParams {
        let sketch_bits = LshParams::DEFAULT_SKETCH_BITS;
        Self::auto(
            LshParams::suggested_bits(rows),
            LshParams::suggested_tables(rows, sketch_bits),
            sketch_bits,
            rows,
            k,
        )
    }
}

/// One result row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbor {
    /// Row number in the order rows were given to [`MemIndex::build`].
    pub id: u32,
    /// Exact distance for the index's metric.
    pub distance: f32,
}

/// Result of [`MemIndex::search`], with the work it took.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Up to k neighbours, closest first (ties by id).
    pub neighbors: Vec<Neighbor>,
    /// Buckets probed (including empty ones).
    pub probes: usize,
    /// Distinct rows collected from the probed buckets.
    pub candidates: usize,
    /// Bucket entries read, duplicates across tables included (the index-page work).
    pub entries: usize,
    /// Rows whose exact distance was computed.
    pub reranked: usize,
}

/// Pure in-memory implementation of the index and its full query plan: probe buckets in
/// multi-probe order until `max_candidates` distinct rows (or `max_probes` probes, or the end of the
/// sequence), rank the candidates by sketch Hamming distance, compute exact distances for the best
/// `rerank`, return the top k. The PostgreSQL access method implements the same plan on pages; this
/// is its oracle and the tool to choose defaults.
#[derive(Debug, Clone)]
pub struct MemIndex {
    model: LshModel,
    data: Arc<[f32]>,
    rows: usize,
    /// `rows * tables` codes, row-major.
    codes: Vec<u32>,
    /// `rows * sketch_words` words, row-major.
    sketches: Vec<u64>,
    /// Per table: code -> row ids (ascending).
    buckets: Vec<HashMap<u32, Vec<u32>>>,
    /// Superbucket bits of table 0, as the server's build chooses them ([`auto::dir_bits`]).
    dir_bits: u32,
    /// Row ids (ascending) per table-0 superbucket: what the server's chain of that superbucket holds.
    superbuckets: Vec<Vec<u32>>,
}

impl MemIndex {
    /// Builds an index over `data` (`rows * dims` floats, row-major): computes the mean, hashes every
    /// row, fills the bucket tables. As the server's build, an InnerProduct index is norm-augmented
    /// with `max_norm` = the largest row norm (whatever `params.max_norm` says).
    pub fn build(params: LshParams, data: &[f32]) -> Result<MemIndex, LshError> {
        Self::build_with(
            params,
            data,
            MeanAccumulator::new(params.dims as usize, params.metric),
        )
    }

    /// As [`MemIndex::build`], but an InnerProduct index is hashed like cosine (`max_norm == 0`), as
    /// indexes written before norm augmentation existed.
    pub fn build_legacy(params: LshParams, data: &[f32]) -> Result<MemIndex, LshError> {
        let acc = MeanAccumulator::new_legacy(params.dims as usize, params.metric);
        Self::build_with(params, data, acc)
    }

    fn build_with(
        mut params: LshParams,
        data: &[f32],
        mut acc: MeanAccumulator,
    ) -> Result<MemIndex, LshError> {
        params.max_norm = 0.0;
        params.validate()?;
        let dims = params.dims as usize;
        if !data.len().is_multiple_of(dims) {
            return Err(LshError::InvalidParams(format!(
                "data length {} is not a multiple of dims {dims}",
                data.len()
            )));
        }
        for row in data.chunks_exact(dims) {
            acc.add(row)?;
        }
        params.max_norm = acc.augment_norm();
        let rows = data.len() / dims;
        let mut sample: Vec<f32> = crate::partition::sample_positions(rows, dims)
            .flat_map(|r| data[r * dims..(r + 1) * dims].iter().copied())
            .collect();
        let model =
            LshModel::new(params, acc.finish())?.learn_partition(&mut sample, rows, &mut || {})?;
        Self::with_model(model, Arc::from(data))
    }

    /// Builds an index with a given model (e.g. a mean computed elsewhere).
    pub fn with_model(model: LshModel, data: Arc<[f32]>) -> Result<MemIndex, LshError> {
        let p = *model.params();
        let dims = p.dims as usize;
        let tables = p.tables as usize;
        let words = p.sketch_words();
        if !data.len().is_multiple_of(dims) {
            return Err(LshError::InvalidParams(format!(
                "data length {} is not a multiple of dims {dims}",
                data.len()
            )));
        }
        let rows = data.len() / dims;
        if rows > u32::MAX as usize {
            return Err(LshError::InvalidParams("too many rows".into()));
        }
        let mut codes = vec![0u32; rows * tables];
        let mut sketches = vec![0u64; rows * words];
        let mut scratch = Vec::with_capacity(dims + 1);
        for (r, row) in data.chunks_exact(dims).enumerate() {
            model.hash_into(
                row,
                &mut scratch,
                &mut codes[r * tables..(r + 1) * tables],
                &mut sketches[r * words..(r + 1) * words],
            )?;
        }
        Ok(Self::from_parts(model, data, codes, sketches))
    }

    fn from_parts(model: LshModel, data: Arc<[f32]>, codes: Vec<u32>, sketches: Vec<u64>) -> Self {
        let p = *model.params();
        let tables = p.tables as usize;
        let rows = data.len() / p.dims as usize;
        let mut buckets: Vec<HashMap<u32, Vec<u32>>> = vec![HashMap::new(); tables];
        for r in 0..rows {
            for (t, b) in buckets.iter_mut().enumerate() {
                b.entry(codes[r * tables + t]).or_default().push(r as u32);
            }
        }
        let dir_bits = auto::dir_bits(rows, p.bits, p.tables, model.learned().is_some());
        let mut superbuckets = vec![Vec::new(); 1 << dir_bits];
        for r in 0..rows {
            let sb = codes[r * tables]
                .checked_shr(p.bits - dir_bits)
                .unwrap_or(0);
            superbuckets[sb as usize].push(r as u32);
        }
        MemIndex {
            model,
            data,
            rows,
            codes,
            sketches,
            buckets,
            dir_bits,
            superbuckets,
        }
    }

    /// The same index with fewer bits, tables or sketch bits, derived without rehashing (plane
    /// prefixes, see the module docs). Equal to a fresh [`MemIndex::build`] with those parameters.
    pub fn truncated(
        &self,
        bits: u32,
        tables: u32,
        sketch_bits: u32,
    ) -> Result<MemIndex, LshError> {
        let old = *self.model.params();
        let p = LshParams {
            bits,
            tables,
            sketch_bits,
            ..old
        };
        p.validate()?;
        if bits > old.bits || tables > old.tables || sketch_bits > old.sketch_bits {
            return Err(LshError::InvalidParams(
                "truncated() can only shrink bits, tables and sketch_bits".into(),
            ));
        }
        let mut model = LshModel::new(p, self.model.mean.clone())?;
        if let Some(l) = self.model.learned() {
            // Learned planes sit at the top bits of table 0: kept only while those stay.
            if bits != old.bits {
                return Err(LshError::InvalidParams(
                    "truncated() cannot change bits of a model with learned planes".into(),
                ));
            }
            model = model.with_learned(l.clone())?;
        }
        let (ot, ow) = (old.tables as usize, old.sketch_words());
        let (nt, nw) = (tables as usize, p.sketch_words());
        let mask = if bits == 32 {
            u32::MAX
        } else {
            (1u32 << bits) - 1
        };
        let mut codes = Vec::with_capacity(self.rows * nt);
        let mut sketches = Vec::with_capacity(self.rows * nw);
        for r in 0..self.rows {
            codes.extend(self.codes[r * ot..r * ot + nt].iter().map(|c| c & mask));
            sketches.extend_from_slice(&self.sketches[r * ow..r * ow + nw]);
        }
        Ok(Self::from_parts(model, self.data.clone(), codes, sketches))
    }

    /// The hash model.
    pub fn model(&self) -> &LshModel {
        &self.model
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the index has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Row `id`'s vector.
    pub fn row(&self, id: u32) -> &[f32] {
        let d = self.model.params.dims as usize;
        &self.data[id as usize * d..(id as usize + 1) * d]
    }

    /// Row `id`'s codes (one per table).
    pub fn row_codes(&self, id: u32) -> &[u32] {
        let t = self.model.params.tables as usize;
        &self.codes[id as usize * t..(id as usize + 1) * t]
    }

    /// Row `id`'s sketch words.
    pub fn row_sketch(&self, id: u32) -> &[u64] {
        let w = self.model.params.sketch_words();
        &self.sketches[id as usize * w..(id as usize + 1) * w]
    }

    /// Number of non-empty buckets per table.
    pub fn bucket_counts(&self) -> Vec<usize> {
        self.buckets.iter().map(|b| b.len()).collect()
    }

    /// Runs the full query plan.
    pub fn search(&self, q: &[f32], sp: &SearchParams) -> Result<SearchResult, LshError> {
        let qh = self.model.query(q)?;
        let mut cands: Vec<u32> = Vec::new();
        let mut probes = 0usize;
        let mut entries = 0usize;
        let rerank = sp.rerank.max(sp.k);
        let mut candidates = 0usize;
        if sp.mode == ScanMode::Sketches {
            // The best `RESCORE_FACTOR × rerank` by Hamming distance, then the best `rerank` of those
            // by the asymmetric estimate: the server's sketch pass (scan.rs), the same engine, fed
            // blocks of rows instead of pages.
            let cap = rerank.saturating_mul(RESCORE_FACTOR).min(self.rows);
            // The first pass of the server's first batch: every row, or with learned planes the
            // superbuckets nearest the query until the first phase's rows.
            let mut scan = SketchScan::new(
                &qh,
                self.dir_bits,
                self.model.learned().is_some(),
                self.rows,
                sp.scan_fraction,
            );
            let mut src = MemSuperbuckets {
                index: self,
                bytes: Vec::new(),
                entries: 0,
            };
            let mut scored = Vec::new();
            scan.pass(&mut src, cap, cap, &mut scored);
            entries = src.entries;
            candidates = entries;
            cands = take_best(&mut scored, rerank)
                .into_iter()
                .map(|r| r as u32)
                .collect();
            cands.sort_unstable();
        } else if sp.max_candidates > 0 && sp.max_probes > 0 {
            // The server's bucket probing (the same engine), then the best `rerank` by (Hamming
            // distance, id).
            let mut src = MemBuckets {
                index: self,
                sketch: &qh.sketch,
                entries: 0,
            };
            let mut probing = BucketProbing::new(qh.probes());
            let mut pending = Vec::new();
            probing.probe(
                &mut src,
                &mut pending,
                sp.max_probes,
                sp.max_candidates,
                usize::MAX,
            );
            (probes, entries) = (probing.probes(), src.entries);
            cands = take_best(&mut pending, rerank)
                .into_iter()
                .map(|r| r as u32)
                .collect();
            candidates = probing.seen();
        }
        let metric = self.model.params.metric;
        let mut scored: Vec<Neighbor> = cands
            .iter()
            .map(|&id| Neighbor {
                id,
                distance: metric.distance(q, self.row(id)),
            })
            .collect();
        let reranked = scored.len();
        sort_neighbors(&mut scored);
        scored.truncate(sp.k);
        Ok(SearchResult {
            neighbors: scored,
            probes,
            candidates,
            entries,
            reranked,
        })
    }

    /// Exact top-k by scanning every row (ground truth).
    pub fn exact_search(&self, q: &[f32], k: usize) -> Vec<Neighbor> {
        exact_knn(
            &self.data,
            self.model.params.dims as usize,
            q,
            k,
            self.model.params.metric,
        )
    }
}

/// [`MemIndex`]'s superbuckets for [`SketchScan`]: the rows of each, their sketches as bytes.
struct MemSuperbuckets<'a> {
    index: &'a MemIndex,
    bytes: Vec<u8>,
    /// Rows offered.
    entries: usize,
}

impl Superbuckets for MemSuperbuckets<'_> {
    fn offer(&mut self, sb: u32, pass: &mut SketchPass<'_>) -> Option<usize> {
        let ids = &self.index.superbuckets[sb as usize];
        let words = self.index.model.params.sketch_words();
        for block in ids.chunks(SKETCH_BLOCK) {
            self.bytes.clear();
            self.bytes.extend(block.iter().flat_map(|&r| {
                self.index
                    .row_sketch(r)
                    .iter()
                    .flat_map(|w| w.to_le_bytes())
            }));
            let starts: Vec<u32> = (0..block.len()).map(|i| (i * 8 * words) as u32).collect();
            let rows: Vec<u64> = block.iter().map(|&r| u64::from(r)).collect();
            pass.offer(&self.bytes, &starts, &rows);
        }
        self.entries += ids.len();
        Some(ids.len())
    }
}

/// [`MemIndex`]'s buckets for [`BucketProbing`]: hash-map lookups, Hamming distances to `sketch`.
struct MemBuckets<'a> {
    index: &'a MemIndex,
    sketch: &'a [u64],
    /// Rows of the buckets read.
    entries: usize,
}

impl Buckets for MemBuckets<'_> {
    fn bucket(&mut self, table: u32, code: u32, out: &mut Vec<(u32, u64)>) {
        if let Some(ids) = self.index.buckets[table as usize].get(&code) {
            self.entries += ids.len();
            out.extend(ids.iter().map(|&id| {
                let ham = distance::hamming(self.sketch, self.index.row_sketch(id));
                (ham, u64::from(id))
            }));
        }
    }
}

fn sort_neighbors(v: &mut [Neighbor]) {
    v.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id)));
}

/// Exact top-k of `q` among the rows of `data` (`dims` floats each), closest first, ties by id.
pub fn exact_knn(data: &[f32], dims: usize, q: &[f32], k: usize, metric: Metric) -> Vec<Neighbor> {
    let mut all: Vec<Neighbor> = data
        .chunks_exact(dims)
        .enumerate()
        .map(|(i, row)| Neighbor {
            id: i as u32,
            distance: metric.distance(q, row),
        })
        .collect();
    if k == 0 {
        return Vec::new();
    }
    if all.len() > k {
        all.select_nth_unstable_by(k - 1, |a, b| {
            a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id))
        });
        all.truncate(k);
    }
    sort_neighbors(&mut all);
    all
}

/// Fraction of `truth` ids found in `got` (recall@|truth|).
pub fn recall(got: &[Neighbor], truth: &[Neighbor]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let hits = truth
        .iter()
        .filter(|t| got.iter().any(|g| g.id == t.id))
        .count();
    hits as f64 / truth.len() as f64
}

#[cfg(test)]
#[path = "lsh_tests.rs"]
mod tests;
