//! Compact per-row codes scored by a full scan (no buckets): the kernels of the issue-10 study
//! (`benches/lsh_real.rs`).
//!
//! * [`SignEncoder`] — random-hyperplane sign codes of any multiple of 64 bits, with a per-bit
//!   threshold: 0, the mean projection (centring) or the median projection over a sample of rows
//!   (balanced bits). Compared by Hamming distance with [`hamming_scan`] (u64 popcount over
//!   contiguous row-major codes; compiled with `popcnt` / AVX-512 VPOPCNTDQ and chosen at run time).
//! * [`RabitqEncoder`] — a RaBitQ-style estimator (Gao & Long, SIGMOD 2024): rows are centred,
//!   normalised and rotated by a random orthonormal map into `dim_pad ≥ dims` dimensions; each rotated
//!   coordinate is quantised to `bits` ∈ {1, 2, 4, 8} bits (1 bit = the sign: plain RaBitQ; more bits =
//!   the "extended" variant, a uniform grid whose step is chosen per row to maximise the cosine between
//!   the code and the vector). Three f32 scalars per row (norm, scale, error factor) give the
//!   estimate of the inner product `⟨o, q⟩ ≈ ⟨x̄, q'⟩ / ⟨x̄, o'⟩` (x̄ the code, o' and q' the rotated
//!   unit vectors), which is unbiased over the random rotation, and its error bound
//!   `|est − ⟨o, q⟩| ≤ √(1 − c²)/c · ε₀ / √(dim_pad − 1)` (c = cos(x̄, o'); holds with probability
//!   ≥ 1 − 2·exp(−c₀ ε₀²); the slack term is asymptotically N(0, 1), so in practice the bound fails
//!   for about P(|Z| > ε₀) of the pairs: 5.7 % at the paper's ε₀ = 1.9, 0.27 % at ε₀ = 3 — a
//!   per-pair confidence, not a guarantee). A query is turned into one lookup table per code byte
//!   (256 f32 each), so scoring a row is `bytes` table lookups and adds ([`RabitqCodes::scan`]).
//!   The scan is scalar (about 1.3 ms for 400k rows of 8 bytes here); a SIMD "fast scan" (u8
//!   tables, shuffles) would be the next step.
//!
//! Both work on *prepared* vectors: for cosine the caller normalises rows and queries to unit length
//! first; the RaBitQ encoder then subtracts its centre (the mean of the prepared rows). The estimated
//! distance of [`RabitqCodes`] is the squared Euclidean distance between the prepared vectors (= 2 ×
//! the cosine distance for unit vectors).

use crate::distance;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// `count` Gaussian vectors of `dims` values scaled to unit length, from `seed`.
pub fn gaussian_unit_vectors(seed: u64, count: usize, dims: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(count * dims);
    for _ in 0..count {
        let start = out.len();
        for _ in 0..dims {
            let x: f32 = StandardNormal.sample(&mut rng);
            out.push(x);
        }
        distance::normalize(&mut out[start..]);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Hamming scan
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn scan_fixed<const W: usize>(q: &[u64], codes: &[u64], out: &mut [u32]) {
    let q: [u64; W] = q.try_into().expect("query words");
    let (rows, _) = codes.as_chunks::<W>();
    for (o, r) in out.iter_mut().zip(rows) {
        let mut s = 0u32;
        for i in 0..W {
            s += (r[i] ^ q[i]).count_ones();
        }
        *o = s;
    }
}

#[inline(always)]
fn scan_any(q: &[u64], codes: &[u64], out: &mut [u32]) {
    match q.len() {
        1 => scan_fixed::<1>(q, codes, out),
        2 => scan_fixed::<2>(q, codes, out),
        4 => scan_fixed::<4>(q, codes, out),
        8 => scan_fixed::<8>(q, codes, out),
        16 => scan_fixed::<16>(q, codes, out),
        w => {
            for (o, r) in out.iter_mut().zip(codes.chunks_exact(w)) {
                *o = r.iter().zip(q).map(|(a, b)| (a ^ b).count_ones()).sum();
            }
        }
    }
}

#[inline(always)]
fn at_fixed<const W: usize>(q: &[u64], bytes: &[u8], starts: &[u32], out: &mut [u32]) {
    let q: [u64; W] = q.try_into().expect("query words");
    for (o, &s) in out.iter_mut().zip(starts) {
        let (row, _) = bytes[s as usize..s as usize + 8 * W].as_chunks::<8>();
        let mut c = 0u32;
        for i in 0..W {
            c += (u64::from_le_bytes(row[i]) ^ q[i]).count_ones();
        }
        *o = c;
    }
}

#[inline(always)]
fn at_any(q: &[u64], bytes: &[u8], starts: &[u32], out: &mut [u32]) {
    match q.len() {
        1 => at_fixed::<1>(q, bytes, starts, out),
        2 => at_fixed::<2>(q, bytes, starts, out),
        4 => at_fixed::<4>(q, bytes, starts, out),
        8 => at_fixed::<8>(q, bytes, starts, out),
        16 => at_fixed::<16>(q, bytes, starts, out),
        w => {
            for (o, &s) in out.iter_mut().zip(starts) {
                let (row, _) = bytes[s as usize..s as usize + 8 * w].as_chunks::<8>();
                *o = row
                    .iter()
                    .zip(q)
                    .map(|(a, b)| (u64::from_le_bytes(*a) ^ b).count_ones())
                    .sum();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #[target_feature(enable = "popcnt")]
    pub(super) fn scan_popcnt(q: &[u64], codes: &[u64], out: &mut [u32]) {
        super::scan_any(q, codes, out)
    }
    #[target_feature(enable = "popcnt,avx2,avx512f,avx512vl,avx512bw,avx512vpopcntdq")]
    pub(super) fn scan_avx512(q: &[u64], codes: &[u64], out: &mut [u32]) {
        super::scan_any(q, codes, out)
    }
    #[target_feature(enable = "popcnt")]
    pub(super) fn at_popcnt(q: &[u64], bytes: &[u8], starts: &[u32], out: &mut [u32]) {
        super::at_any(q, bytes, starts, out)
    }
    #[target_feature(enable = "popcnt,avx2,avx512f,avx512vl,avx512bw,avx512vpopcntdq")]
    pub(super) fn at_avx512(q: &[u64], bytes: &[u8], starts: &[u32], out: &mut [u32]) {
        super::at_any(q, bytes, starts, out)
    }
}

/// Hamming distances of `query` (W words) to sketches stored in place in `bytes` (e.g. a page): the
/// sketch of row i is the `8 W` little-endian bytes at `starts[i]`, at any alignment:
/// `out[i] = popcount(query ^ sketch i)`. For codes that are not contiguous (one per index entry),
/// without copying them out first.
///
/// # Panics
/// If `starts` and `out` differ in length, `query` is empty, or a sketch runs past `bytes`.
pub fn hamming_at(query: &[u64], bytes: &[u8], starts: &[u32], out: &mut [u32]) {
    assert!(!query.is_empty(), "empty query code");
    assert_eq!(starts.len(), out.len(), "starts / out length");
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512_popcnt() {
            // SAFETY: every feature the function is compiled with was detected on this CPU just
            // above; the function has no other precondition.
            return unsafe { x86::at_avx512(query, bytes, starts, out) };
        }
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: popcnt was detected on this CPU; no other precondition.
            return unsafe { x86::at_popcnt(query, bytes, starts, out) };
        }
    }
    at_any(query, bytes, starts, out)
}

/// Which compiled copy of [`hamming_scan`] runs on this CPU ("avx512-vpopcntdq", "popcnt" or
/// "baseline").
pub fn hamming_scan_kernel() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512_popcnt() {
            return "avx512-vpopcntdq";
        }
        if std::arch::is_x86_feature_detected!("popcnt") {
            return "popcnt";
        }
    }
    "baseline"
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx512_popcnt() -> bool {
    std::arch::is_x86_feature_detected!("popcnt")
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
}

/// Hamming distances of `query` (W words) to every row of `codes` (row-major, W words per row):
/// `out[i] = popcount(query ^ row i)`.
///
/// # Panics
/// If `codes.len() != out.len() * query.len()` or `query` is empty.
pub fn hamming_scan(query: &[u64], codes: &[u64], out: &mut [u32]) {
    assert!(!query.is_empty(), "empty query code");
    assert_eq!(codes.len(), out.len() * query.len(), "codes / out length");
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512_popcnt() {
            // SAFETY: every feature the function is compiled with was detected on this CPU just
            // above; the function has no other precondition.
            return unsafe { x86::scan_avx512(query, codes, out) };
        }
        if std::arch::is_x86_feature_detected!("popcnt") {
            // SAFETY: popcnt was detected on this CPU; no other precondition.
            return unsafe { x86::scan_popcnt(query, codes, out) };
        }
    }
    scan_any(query, codes, out)
}

// ---------------------------------------------------------------------------------------------
// Sign codes
// ---------------------------------------------------------------------------------------------

/// How each bit's threshold is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    /// Bit j is `⟨pⱼ, x⟩ > 0` (hyperplanes through the origin).
    Zero,
    /// Threshold = the mean projection over the training sample (= centring by the sample mean).
    Mean,
    /// Threshold = the median projection over the training sample (each bit is 1 for half the rows).
    Median,
}

/// Random-hyperplane sign codes with per-bit thresholds (`bits` a multiple of 64).
#[derive(Debug, Clone)]
pub struct SignEncoder {
    dims: usize,
    bits: usize,
    /// `bits` unit Gaussian planes of `dims` values.
    planes: Vec<f32>,
    /// One threshold per bit.
    thresholds: Vec<f32>,
}

impl SignEncoder {
    /// Planes from `seed`; thresholds from `sample` (prepared rows, `dims` values each; may be empty
    /// for [`Threshold::Zero`]).
    ///
    /// # Panics
    /// If `bits` is not a positive multiple of 64, or `sample` is empty for Mean / Median.
    pub fn train(dims: usize, bits: usize, seed: u64, kind: Threshold, sample: &[f32]) -> Self {
        assert!(
            bits > 0 && bits.is_multiple_of(64),
            "bits must be a multiple of 64"
        );
        let planes = gaussian_unit_vectors(seed, bits, dims);
        let mut enc = SignEncoder {
            dims,
            bits,
            planes,
            thresholds: vec![0.0; bits],
        };
        if kind != Threshold::Zero {
            let n = sample.len() / dims;
            assert!(n > 0, "thresholds need a sample");
            let mut proj = vec![0.0f32; n];
            for j in 0..bits {
                let p = &enc.planes[j * dims..(j + 1) * dims];
                for (x, row) in proj.iter_mut().zip(sample.chunks_exact(dims)) {
                    *x = distance::dot(p, row);
                }
                enc.thresholds[j] = match kind {
                    Threshold::Mean => {
                        (proj.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64) as f32
                    }
                    _ => {
                        let mid = n / 2;
                        *proj.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1
                    }
                };
            }
        }
        enc
    }

    /// The same planes with other thresholds (e.g. to compare threshold kinds on one projection).
    pub fn with_thresholds(&self, thresholds: Vec<f32>) -> Self {
        assert_eq!(thresholds.len(), self.bits);
        SignEncoder {
            thresholds,
            ..self.clone()
        }
    }

    /// Bits per code.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// u64 words per code.
    pub fn words(&self) -> usize {
        self.bits / 64
    }

    /// Per-bit thresholds.
    pub fn thresholds(&self) -> &[f32] {
        &self.thresholds
    }

    /// The encoder of the first `bits` planes (codes of it are prefixes of this one's codes).
    pub fn truncated(&self, bits: usize) -> Self {
        assert!(bits > 0 && bits.is_multiple_of(64) && bits <= self.bits);
        SignEncoder {
            dims: self.dims,
            bits,
            planes: self.planes[..bits * self.dims].to_vec(),
            thresholds: self.thresholds[..bits].to_vec(),
        }
    }

    /// Writes the `bits` projections of `v`.
    pub fn project(&self, v: &[f32], proj: &mut [f32]) {
        assert_eq!(v.len(), self.dims);
        for (x, p) in proj.iter_mut().zip(self.planes.chunks_exact(self.dims)) {
            *x = distance::dot(p, v);
        }
    }

    /// Packs projections into code words (bit j = proj[j] > threshold[j]).
    pub fn pack(&self, proj: &[f32], out: &mut [u64]) {
        assert_eq!(out.len(), self.words());
        out.fill(0);
        for (j, (&p, &t)) in proj.iter().zip(&self.thresholds).enumerate() {
            if p > t {
                out[j / 64] |= 1u64 << (j % 64);
            }
        }
    }

    /// Code of one prepared vector.
    pub fn encode(&self, v: &[f32], out: &mut [u64]) {
        let mut proj = vec![0.0f32; self.bits];
        self.project(v, &mut proj);
        self.pack(&proj, out);
    }

    /// Codes of every row of `data`, row-major.
    pub fn encode_all(&self, data: &[f32]) -> Vec<u64> {
        let w = self.words();
        let n = data.len() / self.dims;
        let mut out = vec![0u64; n * w];
        let mut proj = vec![0.0f32; self.bits];
        for (row, o) in data.chunks_exact(self.dims).zip(out.chunks_exact_mut(w)) {
            self.project(row, &mut proj);
            self.pack(&proj, o);
        }
        out
    }
}

/// The first `words` words of every `from_words`-word code (a contiguous copy).
pub fn truncate_codes(codes: &[u64], from_words: usize, words: usize) -> Vec<u64> {
    assert!(words <= from_words);
    codes
        .chunks_exact(from_words)
        .flat_map(|c| c[..words].iter().copied())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// RaBitQ-style estimator
// ---------------------------------------------------------------------------------------------

/// A random map from `dim_in` to `dim_out ≥ dim_in` dimensions with orthonormal columns (an
/// isometry: a random rotation of the zero-padded vector).
#[derive(Debug, Clone)]
pub struct Rotation {
    dim_in: usize,
    dim_out: usize,
    /// `dim_out × dim_in`, row-major: y = M x.
    m: Vec<f32>,
}

impl Rotation {
    /// Gram–Schmidt (twice, in f64) of `dim_in` Gaussian vectors of `dim_out` values: a uniformly
    /// random orthonormal frame.
    pub fn random(dim_in: usize, dim_out: usize, seed: u64) -> Rotation {
        assert!(
            dim_in >= 1 && dim_out >= dim_in,
            "need dim_out >= dim_in >= 1"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut cols: Vec<Vec<f64>> = Vec::with_capacity(dim_in);
        while cols.len() < dim_in {
            let mut v: Vec<f64> = (0..dim_out)
                .map(|_| StandardNormal.sample(&mut rng))
                .collect();
            for _ in 0..2 {
                for c in &cols {
                    let d: f64 = c.iter().zip(&v).map(|(a, b)| a * b).sum();
                    for (x, y) in v.iter_mut().zip(c) {
                        *x -= d * y;
                    }
                }
            }
            let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n < 1e-6 {
                continue;
            }
            v.iter_mut().for_each(|x| *x /= n);
            cols.push(v);
        }
        let mut m = vec![0.0f32; dim_out * dim_in];
        for (j, c) in cols.iter().enumerate() {
            for (i, &x) in c.iter().enumerate() {
                m[i * dim_in + j] = x as f32;
            }
        }
        Rotation { dim_in, dim_out, m }
    }

    /// Input dimensions.
    pub fn dim_in(&self) -> usize {
        self.dim_in
    }

    /// Output dimensions.
    pub fn dim_out(&self) -> usize {
        self.dim_out
    }

    /// y = M x.
    pub fn apply(&self, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), self.dim_in);
        assert_eq!(y.len(), self.dim_out);
        for (o, r) in y.iter_mut().zip(self.m.chunks_exact(self.dim_in)) {
            *o = distance::dot(r, x);
        }
    }
}

/// RaBitQ-style encoder: centre, rotation, bits per rotated dimension.
#[derive(Debug, Clone)]
pub struct RabitqEncoder {
    rot: Rotation,
    bits: u32,
    centre: Vec<f32>,
}

/// Per-row data of an encoded row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowFactors {
    /// |x − c|: distance of the prepared row to the centre.
    pub norm: f32,
    /// Δ / ⟨x̄, o'⟩: multiplies the code–query sum into the inner-product estimate.
    pub scale: f32,
    /// √(1 − c²)/c, c = cos(x̄, o'): the error factor of the bound (0 for a zero row).
    pub err: f32,
}

/// Encoded rows: `bytes` code bytes per row (row-major) and three f32 per row.
#[derive(Debug, Clone)]
pub struct RabitqCodes {
    /// Code bytes per row.
    pub bytes: usize,
    /// `rows * bytes` code bytes.
    pub codes: Vec<u8>,
    /// Per-row factors.
    pub factors: Vec<RowFactors>,
}

/// A query prepared for scanning [`RabitqCodes`]: one 256-entry table per code byte.
#[derive(Debug, Clone)]
pub struct QueryLut {
    /// `bytes * 256` values: lut[b][v] = Σ over the dims packed in byte b of level(v) · q'ᵢ.
    pub lut: Vec<f32>,
    /// |q − c|.
    pub norm: f32,
    /// (0.5 − 2^(bits−1)) · Σ q'ᵢ: the constant part of ⟨x̄, q'⟩ / Δ.
    pub offset: f32,
    /// ε₀ / √(dim_pad − 1), the bound's multiplier of [`RowFactors::err`].
    pub eps: f32,
}

impl RabitqEncoder {
    /// Encoder for `dims`-dimensional prepared vectors: centre = mean of `sample` (rows of `dims`
    /// values; empty = no centring), rotation into `dim_pad` dims from `seed`, `bits` per dimension.
    ///
    /// # Panics
    /// If `bits` is not 1, 2, 4 or 8, `dim_pad < dims`, or `dim_pad * bits` is not a multiple of 8.
    pub fn train(dims: usize, dim_pad: usize, bits: u32, seed: u64, sample: &[f32]) -> Self {
        assert!(matches!(bits, 1 | 2 | 4 | 8), "bits must be 1, 2, 4 or 8");
        assert!(
            (dim_pad * bits as usize).is_multiple_of(8),
            "dim_pad * bits must be whole bytes"
        );
        let mut centre = vec![0.0f64; dims];
        let n = sample.len() / dims;
        for row in sample.chunks_exact(dims) {
            for (c, x) in centre.iter_mut().zip(row) {
                *c += f64::from(*x);
            }
        }
        RabitqEncoder {
            rot: Rotation::random(dims, dim_pad, seed),
            bits,
            centre: centre
                .iter()
                .map(|c| (c / n.max(1) as f64) as f32)
                .collect(),
        }
    }

    /// Code bytes per row.
    pub fn bytes(&self) -> usize {
        self.rot.dim_out * self.bits as usize / 8
    }

    /// Bits per rotated dimension.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Rotated dimensions.
    pub fn dim_pad(&self) -> usize {
        self.rot.dim_out
    }

    fn levels(&self) -> usize {
        1 << self.bits
    }

    /// Centred, normalised, rotated unit vector of `v` into `y`; returns |v − c|.
    fn rotate_unit(&self, v: &[f32], y: &mut [f32]) -> f32 {
        let x = distance::sub(v, &self.centre);
        let n = distance::norm(&x);
        if n > 0.0 && n.is_finite() {
            let u: Vec<f32> = x.iter().map(|a| a / n).collect();
            self.rot.apply(&u, y);
        } else {
            y.fill(0.0);
        }
        n
    }

    /// Quantises the unit vector y into levels u (one per dim) for step `delta`, returns
    /// (⟨x̄, y⟩, |x̄|²) with x̄ᵢ = delta · (uᵢ + 0.5 − L/2).
    fn quantise(&self, y: &[f32], delta: f32, u: &mut [u8]) -> (f64, f64) {
        let l = self.levels() as f32;
        let half = l / 2.0;
        let (mut ip, mut nn) = (0.0f64, 0.0f64);
        for (ui, &yi) in u.iter_mut().zip(y) {
            let q = (yi / delta + half).floor().clamp(0.0, l - 1.0);
            *ui = q as u8;
            let xv = f64::from(delta) * (f64::from(q) + 0.5 - f64::from(half));
            ip += xv * f64::from(yi);
            nn += xv * xv;
        }
        (ip, nn)
    }

    /// Encodes one prepared vector: code bytes into `code` ([`Self::bytes`] long) and its factors.
    pub fn encode(&self, v: &[f32], code: &mut [u8]) -> RowFactors {
        assert_eq!(code.len(), self.bytes());
        let d = self.rot.dim_out;
        let mut y = vec![0.0f32; d];
        let norm = self.rotate_unit(v, &mut y);
        let mut u = vec![0u8; d];
        code.fill(0);
        if !(norm > 0.0 && norm.is_finite()) {
            return RowFactors {
                norm: if norm.is_finite() { norm } else { 0.0 },
                scale: 0.0,
                err: 0.0,
            };
        }
        let (delta, ip, nn) = if self.bits == 1 {
            let (ip, nn) = self.quantise(&y, 1.0, &mut u);
            (1.0f32, ip, nn)
        } else {
            // Step search: the grid's top level at t × max|yᵢ|, t in (0.3, 1.2]; keep the step with
            // the largest cos(x̄, y).
            let ymax = y.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let top = (self.levels() as f32 - 1.0) / 2.0;
            let mut best = (f64::MIN, 1.0f32, 0.0f64, 0.0f64);
            const STEPS: usize = 48;
            for s in 1..=STEPS {
                let t = 0.3 + 0.9 * s as f32 / STEPS as f32;
                let delta = (t * ymax / top).max(f32::MIN_POSITIVE);
                let (ip, nn) = self.quantise(&y, delta, &mut u);
                let cos = if nn > 0.0 { ip / nn.sqrt() } else { f64::MIN };
                if cos > best.0 {
                    best = (cos, delta, ip, nn);
                }
            }
            let (ip, nn) = self.quantise(&y, best.1, &mut u);
            (best.1, ip, nn)
        };
        let per = 8 / self.bits as usize;
        for (i, &ui) in u.iter().enumerate() {
            code[i / per] |= ui << ((i % per) * self.bits as usize);
        }
        let cos = (ip / nn.sqrt()).clamp(1e-9, 1.0);
        RowFactors {
            norm,
            scale: (f64::from(delta) / ip) as f32,
            err: ((1.0 - cos * cos).max(0.0).sqrt() / cos) as f32,
        }
    }

    /// Encodes every row of `data` (prepared rows, `dims` values each).
    pub fn encode_all(&self, data: &[f32]) -> RabitqCodes {
        let b = self.bytes();
        let n = data.len() / self.rot.dim_in;
        let mut codes = vec![0u8; n * b];
        let factors = data
            .chunks_exact(self.rot.dim_in)
            .zip(codes.chunks_exact_mut(b))
            .map(|(row, c)| self.encode(row, c))
            .collect();
        RabitqCodes {
            bytes: b,
            codes,
            factors,
        }
    }

    /// Lookup tables of a prepared query, with bound multiplier ε₀ / √(dim_pad − 1).
    pub fn query(&self, q: &[f32], eps0: f32) -> QueryLut {
        let d = self.rot.dim_out;
        let mut y = vec![0.0f32; d];
        let norm = self.rotate_unit(q, &mut y);
        let bits = self.bits as usize;
        let per = 8 / bits;
        let mask = (1usize << bits) - 1;
        let mut lut = vec![0.0f32; self.bytes() * 256];
        for (b, t) in lut.chunks_exact_mut(256).enumerate() {
            let ys = &y[b * per..(b + 1) * per];
            for (v, e) in t.iter_mut().enumerate() {
                let mut s = 0.0f32;
                for (j, &yj) in ys.iter().enumerate() {
                    s += ((v >> (j * bits)) & mask) as f32 * yj;
                }
                *e = s;
            }
        }
        let sum: f32 = y.iter().sum();
        QueryLut {
            lut,
            norm,
            offset: (0.5 - (self.levels() / 2) as f32) * sum,
            eps: eps0 / ((d.max(2) - 1) as f32).sqrt(),
        }
    }
}

#[inline(always)]
fn lut_sum_fixed<const B: usize>(lut: &[f32], code: &[u8]) -> f32 {
    let code: &[u8; B] = code.try_into().expect("code bytes");
    let (tabs, _) = lut.as_chunks::<1024>();
    let (quads, rest) = code.as_chunks::<4>();
    // Four named partial sums (independent add chains, kept in registers: an array indexed by
    // `i % 4` was kept on the stack and stalled on store forwarding).
    let (mut s0, mut s1, mut s2, mut s3) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    for (c, t) in quads.iter().zip(tabs) {
        s0 += t[c[0] as usize];
        s1 += t[256 + c[1] as usize];
        s2 += t[512 + c[2] as usize];
        s3 += t[768 + c[3] as usize];
    }
    let base = quads.len() * 4;
    for (j, &c) in rest.iter().enumerate() {
        s0 += lut[(base + j) * 256 + c as usize];
    }
    (s0 + s1) + (s2 + s3)
}

#[inline(always)]
fn lut_sum(lut: &[f32], code: &[u8]) -> f32 {
    match code.len() {
        8 => lut_sum_fixed::<8>(lut, code),
        16 => lut_sum_fixed::<16>(lut, code),
        32 => lut_sum_fixed::<32>(lut, code),
        64 => lut_sum_fixed::<64>(lut, code),
        _ => code
            .iter()
            .zip(lut.chunks_exact(256))
            .map(|(&c, t)| t[c as usize])
            .sum(),
    }
}

impl RabitqCodes {
    /// Rows encoded.
    pub fn len(&self) -> usize {
        self.factors.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.factors.is_empty()
    }

    /// Row `i`'s code bytes.
    pub fn code(&self, i: usize) -> &[u8] {
        &self.codes[i * self.bytes..(i + 1) * self.bytes]
    }

    /// Estimated ⟨o, q⟩ of the unit (centred) row and query directions.
    #[inline]
    pub fn estimate_ip(&self, q: &QueryLut, i: usize) -> f32 {
        let f = &self.factors[i];
        f.scale * (lut_sum(&q.lut, self.code(i)) + q.offset)
    }

    /// Estimated squared distance between the prepared row and query, and its lower bound.
    #[inline]
    pub fn estimate(&self, q: &QueryLut, i: usize) -> (f32, f32) {
        let f = &self.factors[i];
        let ip = f.scale * (lut_sum(&q.lut, self.code(i)) + q.offset);
        let base = f.norm * f.norm + q.norm * q.norm;
        let nn2 = 2.0 * f.norm * q.norm;
        (base - nn2 * ip, base - nn2 * (ip + f.err * q.eps))
    }

    /// Estimated squared distances of rows `start .. start + out.len()`.
    pub fn scan(&self, q: &QueryLut, start: usize, out: &mut [f32]) {
        let b = self.bytes;
        let codes = &self.codes[start * b..(start + out.len()) * b];
        let fs = &self.factors[start..start + out.len()];
        scan_dispatch::<false>(q, b, codes, fs, out);
    }

    /// Lower bounds (at the query's ε₀) of the squared distances of rows
    /// `start .. start + out.len()`.
    pub fn scan_lower_bounds(&self, q: &QueryLut, start: usize, out: &mut [f32]) {
        let b = self.bytes;
        let codes = &self.codes[start * b..(start + out.len()) * b];
        let fs = &self.factors[start..start + out.len()];
        scan_dispatch::<true>(q, b, codes, fs, out);
    }
}

/// One dispatch per call (not per row): the code length is a constant in each copy.
#[inline(always)]
fn scan_dispatch<const LB: bool>(
    q: &QueryLut,
    b: usize,
    codes: &[u8],
    fs: &[RowFactors],
    out: &mut [f32],
) {
    match b {
        8 => scan_rows::<8, LB>(q, codes, fs, out),
        16 => scan_rows::<16, LB>(q, codes, fs, out),
        32 => scan_rows::<32, LB>(q, codes, fs, out),
        64 => scan_rows::<64, LB>(q, codes, fs, out),
        _ => {
            let qn2 = q.norm * q.norm;
            for ((o, c), f) in out.iter_mut().zip(codes.chunks_exact(b)).zip(fs) {
                let mut ip = f.scale * (lut_sum(&q.lut, c) + q.offset);
                if LB {
                    ip += f.err * q.eps;
                }
                *o = f.norm * f.norm + qn2 - 2.0 * f.norm * q.norm * ip;
            }
        }
    }
}

#[inline(always)]
fn scan_rows<const B: usize, const LB: bool>(
    q: &QueryLut,
    codes: &[u8],
    fs: &[RowFactors],
    out: &mut [f32],
) {
    let qn2 = q.norm * q.norm;
    let (rows, _) = codes.as_chunks::<B>();
    for ((o, c), f) in out.iter_mut().zip(rows).zip(fs) {
        let mut ip = f.scale * (lut_sum_fixed::<B>(&q.lut, c) + q.offset);
        if LB {
            ip += f.err * q.eps;
        }
        *o = f.norm * f.norm + qn2 - 2.0 * f.norm * q.norm * ip;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn gaussian(seed: u64, n: usize, d: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect()
    }

    #[test]
    fn hamming_scan_equals_naive() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for w in [1usize, 2, 3, 4, 5, 8, 16, 17] {
            let n = 301;
            let codes: Vec<u64> = (0..n * w).map(|_| rng.random()).collect();
            let q: Vec<u64> = (0..w).map(|_| rng.random()).collect();
            let mut out = vec![0u32; n];
            hamming_scan(&q, &codes, &mut out);
            for (i, row) in codes.chunks_exact(w).enumerate() {
                let naive: u32 = row
                    .iter()
                    .zip(&q)
                    .map(|(a, b)| {
                        let mut x = a ^ b;
                        let mut c = 0;
                        while x != 0 {
                            c += (x & 1) as u32;
                            x >>= 1;
                        }
                        c
                    })
                    .sum();
                assert_eq!(out[i], naive, "w={w} row {i}");
                assert_eq!(out[i], distance::hamming(&q, row));
            }
            // The portable copy agrees with the dispatched one.
            let mut base = vec![0u32; n];
            scan_any(&q, &codes, &mut base);
            assert_eq!(base, out);
            // The same codes stored in place at odd byte offsets (entries with a 13-byte header).
            let mut bytes = Vec::new();
            let mut starts = Vec::new();
            for row in codes.chunks_exact(w) {
                bytes.extend_from_slice(&[0xA5; 13]);
                starts.push(bytes.len() as u32);
                for x in row {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
            }
            let mut at = vec![0u32; n];
            hamming_at(&q, &bytes, &starts, &mut at);
            assert_eq!(at, out, "w={w}: in place");
            at_any(&q, &bytes, &starts, &mut at);
            assert_eq!(at, out, "w={w}: in place, portable");
        }
    }

    #[test]
    fn sign_thresholds_and_prefixes() {
        let d = 20;
        let data: Vec<f32> = gaussian(5, 2001, d).iter().map(|x| x + 3.0).collect();
        let med = SignEncoder::train(d, 128, 9, Threshold::Median, &data);
        let codes = med.encode_all(&data);
        // Median thresholds: every bit is set for about half of the rows.
        for j in 0..128 {
            let ones = codes
                .chunks_exact(2)
                .filter(|c| c[j / 64] >> (j % 64) & 1 == 1)
                .count();
            assert!((ones as i64 - 1000).abs() <= 1, "bit {j}: {ones}");
        }
        let t = med.truncated(64);
        assert_eq!(t.encode_all(&data), truncate_codes(&codes, 2, 1));
        let zero = SignEncoder::train(d, 64, 9, Threshold::Zero, &[]);
        assert!(zero.thresholds().iter().all(|&x| x == 0.0));
        let mean = SignEncoder::train(d, 64, 9, Threshold::Mean, &data);
        let mut one = vec![0u64; 1];
        mean.encode(&data[..d], &mut one);
        assert_eq!(one, mean.encode_all(&data[..d]));
    }

    #[test]
    fn rotation_is_isometry() {
        for (din, dout) in [(50, 50), (50, 64), (7, 256)] {
            let r = Rotation::random(din, dout, 11);
            let x = gaussian(1, 2, din);
            let (a, b) = x.split_at(din);
            let (mut ya, mut yb) = (vec![0.0; dout], vec![0.0; dout]);
            r.apply(a, &mut ya);
            r.apply(b, &mut yb);
            assert!((distance::dot(a, b) - distance::dot(&ya, &yb)).abs() < 1e-4);
            assert!((distance::norm(a) - distance::norm(&ya)).abs() < 1e-4);
        }
    }

    /// Exact ⟨o, q⟩ of the centred unit directions (what estimate_ip estimates).
    fn true_ip(enc: &RabitqEncoder, a: &[f32], b: &[f32]) -> f32 {
        let x = distance::sub(a, &enc.centre);
        let y = distance::sub(b, &enc.centre);
        distance::dot(&x, &y) / (distance::norm(&x) * distance::norm(&y))
    }

    #[test]
    fn scan_equals_per_dimension_sum() {
        let d = 30;
        let data = gaussian(2, 200, d);
        for (pad, bits) in [(32, 1), (64, 1), (40, 2), (64, 4), (32, 8), (48, 1)] {
            let enc = RabitqEncoder::train(d, pad, bits, 4, &data);
            let codes = enc.encode_all(&data);
            let q = enc.query(&data[..d], 1.9);
            let mut out = vec![0.0f32; codes.len()];
            codes.scan(&q, 0, &mut out);
            let mut lbs = vec![0.0f32; codes.len()];
            codes.scan_lower_bounds(&q, 0, &mut lbs);
            // Reference: decode the levels and sum per dimension.
            let mut y = vec![0.0f32; pad];
            enc.rotate_unit(&data[..d], &mut y);
            let per = 8 / bits as usize;
            let mask = ((1u16 << bits) - 1) as u8;
            for i in 0..codes.len() {
                let c = codes.code(i);
                let mut s = 0.0f64;
                for (k, &yk) in y.iter().enumerate() {
                    let u = (c[k / per] >> ((k % per) * bits as usize)) & mask;
                    s += f64::from(u) * f64::from(yk);
                }
                let ip = codes.factors[i].scale as f64 * (s + f64::from(q.offset));
                assert!((ip - f64::from(codes.estimate_ip(&q, i))).abs() < 1e-4);
                let (e, lb) = codes.estimate(&q, i);
                assert!((e - out[i]).abs() < 1e-4 * (1.0 + e.abs()));
                assert!(lb <= e);
                assert!((lb - lbs[i]).abs() < 1e-4 * (1.0 + lb.abs()));
            }
        }
    }

    /// Mean error ~0 over many random rotations for fixed vectors (the expectation the paper's
    /// unbiasedness is about), and over many vector pairs for one rotation.
    #[test]
    fn estimator_is_unbiased() {
        let d = 50;
        let data = gaussian(8, 2, d);
        let (a, b) = data.split_at(d);
        for (pad, bits) in [(64, 1), (64, 4)] {
            let mut errs = Vec::new();
            for seed in 0..3000 {
                let enc = RabitqEncoder::train(d, pad, bits, seed, &[]);
                let mut c = vec![0u8; enc.bytes()];
                let f = enc.encode(a, &mut c);
                let codes = RabitqCodes {
                    bytes: enc.bytes(),
                    codes: c,
                    factors: vec![f],
                };
                let q = enc.query(b, 1.9);
                errs.push(f64::from(codes.estimate_ip(&q, 0) - true_ip(&enc, a, b)));
            }
            let n = errs.len() as f64;
            let mean = errs.iter().sum::<f64>() / n;
            let sd = (errs.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n).sqrt();
            assert!(sd > 0.0);
            assert!(
                mean.abs() < 4.0 * sd / n.sqrt(),
                "pad {pad} bits {bits}: mean {mean} sd {sd}"
            );
        }
        // One rotation, many pairs of random vectors.
        let rows = gaussian(9, 400, d);
        let enc = RabitqEncoder::train(d, 64, 1, 77, &[]);
        let codes = enc.encode_all(&rows);
        let qs = gaussian(10, 50, d);
        let mut errs = Vec::new();
        for q in qs.chunks_exact(d) {
            let lut = enc.query(q, 1.9);
            for (i, r) in rows.chunks_exact(d).enumerate() {
                errs.push(f64::from(codes.estimate_ip(&lut, i) - true_ip(&enc, r, q)));
            }
        }
        let mean = errs.iter().sum::<f64>() / errs.len() as f64;
        assert!(mean.abs() < 0.005, "mean error {mean}");
    }

    /// |est − true| ≤ err · ε₀/√(D − 1) at the confidence the bound states. The bound's slack term
    /// ⟨e, q⊥⟩√(D − 1) (e the unit quantisation error direction, q⊥ the part of the query orthogonal
    /// to the row) is, over the random rotation, a coordinate of a uniform point on the sphere of
    /// the complement, ≈ N(0, 1) for large D: so the bound fails for at most about
    /// P(|Z| > ε₀) of the pairs (5.7 % at ε₀ = 1.9, 0.27 % at ε₀ = 3). More bits per dimension give a
    /// smaller error.
    #[test]
    fn error_bound_holds() {
        let d = 50;
        let rows: Vec<f32> = gaussian(12, 500, d).iter().map(|x| x + 0.5).collect();
        let qs: Vec<f32> = gaussian(13, 40, d).iter().map(|x| x + 0.5).collect();
        let mut rms = Vec::new();
        for (pad, bits) in [(64, 1), (256, 1), (64, 2), (64, 4), (64, 8)] {
            let enc = RabitqEncoder::train(d, pad, bits, 5, &rows);
            let codes = enc.encode_all(&rows);
            let (mut bad19, mut bad3, mut n, mut sq) = (0usize, 0usize, 0usize, 0.0f64);
            for q in qs.chunks_exact(d) {
                let lut = enc.query(q, 1.9);
                for (i, r) in rows.chunks_exact(d).enumerate() {
                    let e = codes.estimate_ip(&lut, i) - true_ip(&enc, r, q);
                    sq += f64::from(e) * f64::from(e);
                    n += 1;
                    let b = codes.factors[i].err * lut.eps;
                    bad19 += usize::from(e.abs() > b);
                    bad3 += usize::from(e.abs() > b * 3.0 / 1.9);
                }
            }
            let (f19, f3) = (bad19 as f64 / n as f64, bad3 as f64 / n as f64);
            assert!(
                f19 < 0.0574 * 1.15,
                "pad {pad} bits {bits}: ε₀ 1.9 failed for {f19}"
            );
            assert!(
                f3 < 0.0027 * 1.5 + 0.001,
                "pad {pad} bits {bits}: ε₀ 3 failed for {f3}"
            );
            rms.push((sq / n as f64).sqrt());
        }
        // 1 bit at 64 > 2 bits > 4 bits > 8 bits (indexes 0, 2, 3, 4).
        assert!(
            rms[0] > rms[2] && rms[2] > rms[3] && rms[3] > rms[4],
            "{rms:?}"
        );
    }
}
