//! f32 distance kernels.
//!
//! Every kernel is written as a fixed-width "lane" loop (`LANES` independent f32 accumulators over
//! `as_chunks` arrays, so the compiler sees whole-register blocks), which the compiler turns into SIMD code without intrinsics. On x86-64 the kernels
//! are compiled twice: once for the baseline target (SSE2) and once with AVX2+FMA enabled; the AVX2
//! copy is chosen at run time when the CPU has it (one cached feature check per call). One exception:
//! [`dot4x2`] (the LSH build's projections, eight dot products at once) has a third copy written with
//! AVX-512 intrinsics, lane for lane the AVX2 `dot` (bit-identical, tested), used when the CPU has
//! AVX-512F/VL; without it, it is four [`dot2`] calls.
//!
//! Numerics: accumulation is in f32 (32 lanes, then a pairwise reduction), which keeps the relative
//! error well below 1e-5 for 512-d embeddings; tests compare against an f64 reference. The AVX2 path
//! uses fused multiply-add, so the last bits of a result may differ between a CPU with AVX2 and one
//! without. Nothing stored depends on exact equality: LSH sign bits of a vector lying within an ulp of a
//! hyperplane may differ, which only moves that vector to a neighbouring bucket.
//!
//! All binary kernels panic if the two slices differ in length.

/// Number of independent f32 accumulators (four AVX registers, eight SSE registers): enough
/// independent chains to hide the FMA latency.
const LANES: usize = 32;

#[inline(always)]
fn reduce(acc: [f32; LANES]) -> f32 {
    // `black_box` is an optimisation barrier: without it LLVM's SLP vectoriser starts from this
    // reduction tree and picks 2-wide vectors for the whole main loop (checked in the assembly);
    // with it the loop uses full-width registers. Cost: one 128-byte spill per call.
    // Pairwise reduction: 32 -> 16 -> ... -> 1 (keeps the rounding error small).
    let mut v = std::hint::black_box(acc);
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            v[i] += v[i + width];
        }
        width /= 2;
    }
    v[0]
}

#[inline(always)]
fn madd<const FMA: bool>(acc: f32, x: f32, y: f32) -> f32 {
    if FMA {
        x.mul_add(y, acc)
    } else {
        acc + x * y
    }
}

#[inline(always)]
fn dot_kernel<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let (ca, ra) = a.as_chunks::<LANES>();
    let (cb, rb) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..LANES {
            acc[i] = madd::<FMA>(acc[i], x[i], y[i]);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail = madd::<FMA>(tail, *x, *y);
    }
    reduce(acc) + tail
}

/// (p·a, p·b) in one pass over `p`: each lane of each result accumulates exactly as [`dot_kernel`]
/// does, so both are bit-identical to `dot(p, a)` and `dot(p, b)`; `p` is loaded once for both.
#[inline(always)]
fn dot2_kernel<const FMA: bool>(p: &[f32], a: &[f32], b: &[f32]) -> (f32, f32) {
    let (cp, rp) = p.as_chunks::<LANES>();
    let (ca, ra) = a.as_chunks::<LANES>();
    let (cb, rb) = b.as_chunks::<LANES>();
    let mut acc_a = [0.0f32; LANES];
    let mut acc_b = [0.0f32; LANES];
    for ((x, y), z) in cp.iter().zip(ca).zip(cb) {
        // Separate lane loops vectorise cleanly (as in dot_norms_kernel).
        for i in 0..LANES {
            acc_a[i] = madd::<FMA>(acc_a[i], x[i], y[i]);
        }
        for i in 0..LANES {
            acc_b[i] = madd::<FMA>(acc_b[i], x[i], z[i]);
        }
    }
    let (mut tail_a, mut tail_b) = (0.0f32, 0.0f32);
    for ((x, y), z) in rp.iter().zip(ra).zip(rb) {
        tail_a = madd::<FMA>(tail_a, *x, *y);
        tail_b = madd::<FMA>(tail_b, *x, *z);
    }
    (reduce(acc_a) + tail_a, reduce(acc_b) + tail_b)
}

#[inline(always)]
fn l2sq_kernel<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let (ca, ra) = a.as_chunks::<LANES>();
    let (cb, rb) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in ca.iter().zip(cb) {
        for i in 0..LANES {
            let d = x[i] - y[i];
            acc[i] = madd::<FMA>(acc[i], d, d);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        let d = *x - *y;
        tail = madd::<FMA>(tail, d, d);
    }
    reduce(acc) + tail
}

/// (a·b, |a|², |b|²) in one pass.
#[inline(always)]
fn dot_norms_kernel<const FMA: bool>(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    let (ca, ra) = a.as_chunks::<LANES>();
    let (cb, rb) = b.as_chunks::<LANES>();
    let mut ab = [0.0f32; LANES];
    let mut aa = [0.0f32; LANES];
    let mut bb = [0.0f32; LANES];
    for (x, y) in ca.iter().zip(cb) {
        // Three separate lane loops (one per accumulator) vectorise cleanly; an interleaved body
        // does not.
        for i in 0..LANES {
            ab[i] = madd::<FMA>(ab[i], x[i], y[i]);
        }
        for i in 0..LANES {
            aa[i] = madd::<FMA>(aa[i], x[i], x[i]);
        }
        for i in 0..LANES {
            bb[i] = madd::<FMA>(bb[i], y[i], y[i]);
        }
    }
    let (mut tab, mut taa, mut tbb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in ra.iter().zip(rb) {
        tab = madd::<FMA>(tab, *x, *y);
        taa = madd::<FMA>(taa, *x, *x);
        tbb = madd::<FMA>(tbb, *y, *y);
    }
    (reduce(ab) + tab, reduce(aa) + taa, reduce(bb) + tbb)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
        super::dot_kernel::<true>(a, b)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot2(p: &[f32], a: &[f32], b: &[f32]) -> (f32, f32) {
        super::dot2_kernel::<true>(p, a, b)
    }
    /// `reduce` of the 32 lanes `lo ++ hi` in registers: the same pairwise tree (lane i plus lane
    /// i + width for width 16, 8, 4, 2, 1), so the same sum bit for bit, without a store and 31
    /// scalar additions.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    fn reduce512(lo: std::arch::x86_64::__m512, hi: std::arch::x86_64::__m512) -> f32 {
        use std::arch::x86_64::*;
        let v16 = _mm512_add_ps(lo, hi);
        let v8 = _mm256_add_ps(
            _mm512_castps512_ps256(v16),
            _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v16))),
        );
        let v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps::<1>(v8));
        let v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
        let v1 = _mm_add_ss(v2, _mm_shuffle_ps::<1>(v2, v2));
        _mm_cvtss_f32(v1)
    }
    /// Eight `dot_kernel::<true>` sums at once, with AVX-512 intrinsics (a generic 4 × 2 kernel was
    /// not kept in registers by the compiler: 6× slower): the 4 × 2 accumulators of 32 lanes take 16
    /// of the 32 vector registers, lanes 0..16 in one and 16..32 in the other, each lane updated by
    /// one fused multiply-add per chunk exactly as `dot_kernel` does, then the same reduction tree
    /// (in registers, [`reduce512`]: 29 → 25 ns per 1280-d product, 11 → 6 ns at 50-d, `benches/
    /// distance.rs`) and scalar tail, so the sums are bit-identical to `dot`'s.
    ///
    /// # Safety
    /// Every slice has the length of `a` (checked by the caller).
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    pub(super) unsafe fn dot4x2_avx512(p: [&[f32]; 4], a: &[f32], b: &[f32]) -> [(f32, f32); 4] {
        use std::arch::x86_64::*;
        let n = a.len();
        let chunks = n / super::LANES;
        let mut acc = [[_mm512_setzero_ps(); 4]; 4];
        for c in 0..chunks {
            let o = c * super::LANES;
            // SAFETY: o + 32 <= n, and every slice holds n values (the caller's contract).
            unsafe {
                let a0 = _mm512_loadu_ps(a.as_ptr().add(o));
                let a1 = _mm512_loadu_ps(a.as_ptr().add(o + 16));
                let b0 = _mm512_loadu_ps(b.as_ptr().add(o));
                let b1 = _mm512_loadu_ps(b.as_ptr().add(o + 16));
                for k in 0..4 {
                    let p0 = _mm512_loadu_ps(p[k].as_ptr().add(o));
                    let p1 = _mm512_loadu_ps(p[k].as_ptr().add(o + 16));
                    acc[k][0] = _mm512_fmadd_ps(p0, a0, acc[k][0]);
                    acc[k][1] = _mm512_fmadd_ps(p1, a1, acc[k][1]);
                    acc[k][2] = _mm512_fmadd_ps(p0, b0, acc[k][2]);
                    acc[k][3] = _mm512_fmadd_ps(p1, b1, acc[k][3]);
                }
            }
        }
        let mut out = [(0.0f32, 0.0f32); 4];
        let rest = chunks * super::LANES;
        for k in 0..4 {
            let (mut tail_a, mut tail_b) = (0.0f32, 0.0f32);
            for i in rest..n {
                tail_a = p[k][i].mul_add(a[i], tail_a);
                tail_b = p[k][i].mul_add(b[i], tail_b);
            }
            out[k] = (
                reduce512(acc[k][0], acc[k][1]) + tail_a,
                reduce512(acc[k][2], acc[k][3]) + tail_b,
            );
        }
        out
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn l2sq(a: &[f32], b: &[f32]) -> f32 {
        super::l2sq_kernel::<true>(a, b)
    }
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn dot_norms(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
        super::dot_norms_kernel::<true>(a, b)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn has_avx512() -> bool {
    has_avx2_fma()
        && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

#[inline]
fn check_len(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "vectors differ in length");
}

/// Dot product a·b.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    check_len(a, b);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU supports avx2 and fma (checked just above), which is all that the
        // target_feature function requires; it is otherwise an ordinary safe function.
        return unsafe { avx2::dot(a, b) };
    }
    dot_kernel::<false>(a, b)
}

/// (p·a, p·b), bit-identical to `(dot(p, a), dot(p, b))` but reading `p` once (the LSH build projects
/// many rows on each plane).
#[inline]
pub fn dot2(p: &[f32], a: &[f32], b: &[f32]) -> (f32, f32) {
    check_len(p, a);
    check_len(p, b);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: avx2 and fma are present (checked above); the function has no other requirement.
        return unsafe { avx2::dot2(p, a, b) };
    }
    dot2_kernel::<false>(p, a, b)
}

/// `[(p[k]·a, p[k]·b) for k in 0..4]`, bit-identical to eight `dot` calls, reading each plane and
/// row once (the LSH build's projections). With AVX-512 the eight sums stay in registers; otherwise
/// this is four [`dot2`] calls.
#[inline]
pub fn dot4x2(p: [&[f32]; 4], a: &[f32], b: &[f32]) -> [(f32, f32); 4] {
    for x in p {
        check_len(x, a);
    }
    check_len(a, b);
    #[cfg(target_arch = "x86_64")]
    if has_avx512() {
        // SAFETY: avx2, fma, avx512f and avx512vl are present (checked above), and every slice has
        // the length of `a` (checked at the top).
        return unsafe { avx2::dot4x2_avx512(p, a, b) };
    }
    p.map(|x| dot2(x, a, b))
}

/// Squared Euclidean distance Σ (aᵢ − bᵢ)².
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    check_len(a, b);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: avx2 and fma are present (checked above); the function has no other requirement.
        return unsafe { avx2::l2sq(a, b) };
    }
    l2sq_kernel::<false>(a, b)
}

/// Euclidean distance √Σ (aᵢ − bᵢ)².
#[inline]
pub fn l2(a: &[f32], b: &[f32]) -> f32 {
    l2_squared(a, b).sqrt()
}

/// (a·b, |a|², |b|²) computed in a single pass over both slices.
#[inline]
pub fn dot_and_norms_squared(a: &[f32], b: &[f32]) -> (f32, f32, f32) {
    check_len(a, b);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: avx2 and fma are present (checked above); the function has no other requirement.
        return unsafe { avx2::dot_norms(a, b) };
    }
    dot_norms_kernel::<false>(a, b)
}

/// Cosine distance `1 − a·b / (|a| |b|)`, in [0, 2] up to rounding.
///
/// If either vector has norm 0 the cosine is undefined and the result is **NaN** (callers that sort
/// by distance should treat NaN as "farthest"; `f32::total_cmp` already orders positive NaN last).
#[inline]
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let (ab, aa, bb) = dot_and_norms_squared(a, b);
    if aa == 0.0 || bb == 0.0 {
        return f32::NAN;
    }
    // Divide in f64: |a|²|b|² can overflow f32 for large-magnitude inputs.
    let cos = f64::from(ab) / (f64::from(aa) * f64::from(bb)).sqrt();
    (1.0 - cos) as f32
}

/// Negative inner product `−a·b` (smaller is more similar), the distance used for
/// [`crate::lsh::Metric::InnerProduct`].
#[inline]
pub fn neg_inner_product(a: &[f32], b: &[f32]) -> f32 {
    -dot(a, b)
}

/// Euclidean norm |a|.
#[inline]
pub fn norm(a: &[f32]) -> f32 {
    dot(a, a).sqrt()
}

/// Scales `a` in place to unit length and returns its original norm. A zero vector (or one whose
/// norm is not finite) is left unchanged and its norm is returned as is.
#[inline]
pub fn normalize(a: &mut [f32]) -> f32 {
    let n = norm(a);
    if n > 0.0 && n.is_finite() {
        let inv = 1.0 / n;
        for x in a.iter_mut() {
            *x *= inv;
        }
    }
    n
}

/// Unit-length copy of `a` (see [`normalize`] for the zero-vector rule).
pub fn normalized(a: &[f32]) -> Vec<f32> {
    let mut v = a.to_vec();
    normalize(&mut v);
    v
}

/// Element-wise a + b.
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    check_len(a, b);
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// Element-wise a − b.
pub fn sub(a: &[f32], b: &[f32]) -> Vec<f32> {
    check_len(a, b);
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// Element-wise a · b (Hadamard product).
pub fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    check_len(a, b);
    a.iter().zip(b).map(|(x, y)| x * y).collect()
}

/// In place: acc += x.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "vectors differ in length");
    for (a, b) in acc.iter_mut().zip(x) {
        *a += *b;
    }
}

/// In place: acc −= x.
pub fn sub_assign(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len(), "vectors differ in length");
    for (a, b) in acc.iter_mut().zip(x) {
        *a -= *b;
    }
}

/// Writes a − b into `out` (no allocation).
pub fn sub_into(out: &mut [f32], a: &[f32], b: &[f32]) {
    check_len(a, b);
    assert_eq!(out.len(), a.len(), "vectors differ in length");
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x - y;
    }
}

/// Hamming distance between two packed bit strings of equal word count.
#[inline]
pub fn hamming(a: &[u64], b: &[u64]) -> u32 {
    assert_eq!(a.len(), b.len(), "sketches differ in length");
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Plain one-accumulator loops, kept as the baseline for `benches/distance.rs` and as a readable
/// specification. Not used by the index.
pub mod naive {
    /// Σ aᵢbᵢ with a single sequential accumulator.
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut s = 0.0f32;
        for i in 0..a.len() {
            s += a[i] * b[i];
        }
        s
    }

    /// Σ (aᵢ − bᵢ)² with a single sequential accumulator.
    pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
        let mut s = 0.0f32;
        for i in 0..a.len() {
            let d = a[i] - b[i];
            s += d * d;
        }
        s
    }

    /// 1 − a·b/(|a||b|) with sequential accumulators (NaN if a norm is 0).
    pub fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
        let (mut ab, mut aa, mut bb) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..a.len() {
            ab += a[i] * b[i];
            aa += a[i] * a[i];
            bb += b[i] * b[i];
        }
        if aa == 0.0 || bb == 0.0 {
            return f32::NAN;
        }
        1.0 - ab / (aa.sqrt() * bb.sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn vecs(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
        let mut r = ChaCha8Rng::seed_from_u64(seed);
        let a = (0..n).map(|_| r.random_range(-2.0f32..2.0)).collect();
        let b = (0..n).map(|_| r.random_range(-2.0f32..2.0)).collect();
        (a, b)
    }

    fn ref_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
    }
    fn ref_l2sq(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum()
    }
    fn close(got: f32, want: f64, scale: f64) -> bool {
        // Error bound relative to the magnitude of the summed terms, not the (possibly cancelling) sum.
        (got as f64 - want).abs() <= 1e-5 * scale.max(1e-30)
    }

    const LENGTHS: [usize; 12] = [1, 2, 3, 7, 8, 15, 16, 17, 31, 512, 513, 1280];

    #[test]
    fn kernels_match_f64_reference() {
        for (i, &n) in LENGTHS.iter().enumerate() {
            let (a, b) = vecs(n, i as u64);
            let abs_scale: f64 = a.iter().zip(&b).map(|(x, y)| (*x * *y).abs() as f64).sum();
            let l2_ref = ref_l2sq(&a, &b);
            assert!(close(dot(&a, &b), ref_dot(&a, &b), abs_scale), "dot n={n}");
            assert!(
                close(naive::dot(&a, &b), ref_dot(&a, &b), abs_scale),
                "naive dot n={n}"
            );
            assert!(close(l2_squared(&a, &b), l2_ref, l2_ref), "l2sq n={n}");
            assert!(
                close(naive::l2_squared(&a, &b), l2_ref, l2_ref),
                "naive l2sq n={n}"
            );
            assert!(((l2(&a, &b) as f64) - l2_ref.sqrt()).abs() <= 1e-5 * l2_ref.sqrt());
            let na = ref_dot(&a, &a).sqrt();
            assert!(((norm(&a) as f64) - na).abs() <= 1e-5 * na, "norm n={n}");
            let cos_ref = 1.0 - ref_dot(&a, &b) / (na * ref_dot(&b, &b).sqrt());
            assert!(
                ((cosine_distance(&a, &b) as f64) - cos_ref).abs() <= 2e-5,
                "cos n={n}: {} vs {cos_ref}",
                cosine_distance(&a, &b)
            );
            assert!(((naive::cosine_distance(&a, &b) as f64) - cos_ref).abs() <= 2e-5);
            let (ab, aa, bb) = dot_and_norms_squared(&a, &b);
            assert!(close(ab, ref_dot(&a, &b), abs_scale));
            assert!(close(aa, ref_dot(&a, &a), ref_dot(&a, &a)));
            assert!(close(bb, ref_dot(&b, &b), ref_dot(&b, &b)));
        }
    }

    #[test]
    fn dot4x2_is_bit_identical_to_eight_dots() {
        for (i, &n) in LENGTHS.iter().enumerate() {
            let planes: Vec<Vec<f32>> =
                (0..4).map(|k| vecs(n, 400 + 10 * i as u64 + k).0).collect();
            let (a, b) = vecs(n, 500 + i as u64);
            let p = [&planes[0][..], &planes[1], &planes[2], &planes[3]];
            for (k, (x, y)) in dot4x2(p, &a, &b).into_iter().enumerate() {
                assert_eq!(x.to_bits(), dot(p[k], &a).to_bits(), "n={n} plane {k}");
                assert_eq!(y.to_bits(), dot(p[k], &b).to_bits(), "n={n} plane {k}");
            }
        }
    }

    #[test]
    fn dot2_is_bit_identical_to_two_dots() {
        for (i, &n) in LENGTHS.iter().enumerate() {
            let (p, a) = vecs(n, 200 + i as u64);
            let (b, _) = vecs(n, 300 + i as u64);
            let (x, y) = dot2(&p, &a, &b);
            assert_eq!(x.to_bits(), dot(&p, &a).to_bits(), "n={n}");
            assert_eq!(y.to_bits(), dot(&p, &b).to_bits(), "n={n}");
            let (x, y) = dot2_kernel::<false>(&p, &a, &b);
            assert_eq!(
                x.to_bits(),
                dot_kernel::<false>(&p, &a).to_bits(),
                "portable n={n}"
            );
            assert_eq!(
                y.to_bits(),
                dot_kernel::<false>(&p, &b).to_bits(),
                "portable n={n}"
            );
        }
    }

    #[test]
    fn portable_kernel_matches_reference_too() {
        // The dispatched path may be AVX2; check the baseline path explicitly as well.
        for (i, &n) in LENGTHS.iter().enumerate() {
            let (a, b) = vecs(n, 100 + i as u64);
            let abs_scale: f64 = a.iter().zip(&b).map(|(x, y)| (*x * *y).abs() as f64).sum();
            assert!(close(
                dot_kernel::<false>(&a, &b),
                ref_dot(&a, &b),
                abs_scale
            ));
            assert!(close(
                dot_kernel::<true>(&a, &b),
                ref_dot(&a, &b),
                abs_scale
            ));
            let r = ref_l2sq(&a, &b);
            assert!(close(l2sq_kernel::<false>(&a, &b), r, r));
            assert!(close(l2sq_kernel::<true>(&a, &b), r, r));
        }
    }

    #[test]
    fn exact_small_values() {
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
        assert_eq!(l2_squared(&[1.0, 2.0, 3.0], &[4.0, 6.0, 3.0]), 25.0);
        assert_eq!(l2(&[0.0, 0.0, 0.0], &[3.0, 4.0, 0.0]), 5.0);
        assert_eq!(norm(&[3.0, 4.0]), 5.0);
        assert_eq!(cosine_distance(&[1.0, 0.0], &[0.0, 1.0]), 1.0);
        assert_eq!(cosine_distance(&[1.0, 0.0], &[-2.0, 0.0]), 2.0);
        assert!(cosine_distance(&[2.0, 2.0], &[1.0, 1.0]).abs() < 1e-7);
        assert_eq!(neg_inner_product(&[1.0, 2.0], &[3.0, 4.0]), -11.0);
        assert_eq!(add(&[1.0, 2.0], &[3.0, 4.0]), vec![4.0, 6.0]);
        assert_eq!(sub(&[1.0, 2.0], &[3.0, 5.0]), vec![-2.0, -3.0]);
        assert_eq!(mul(&[1.0, 2.0], &[3.0, 5.0]), vec![3.0, 10.0]);
        let mut acc = vec![1.0, 1.0];
        add_assign(&mut acc, &[2.0, 3.0]);
        assert_eq!(acc, vec![3.0, 4.0]);
        sub_assign(&mut acc, &[1.0, 1.0]);
        assert_eq!(acc, vec![2.0, 3.0]);
        let mut out = vec![0.0; 2];
        sub_into(&mut out, &[5.0, 5.0], &[1.0, 2.0]);
        assert_eq!(out, vec![4.0, 3.0]);
        assert_eq!(hamming(&[0b1011, u64::MAX], &[0b0001, 0]), 2 + 64);
    }

    #[test]
    fn cosine_of_zero_vector_is_nan() {
        assert!(cosine_distance(&[0.0; 5], &[1.0; 5]).is_nan());
        assert!(cosine_distance(&[1.0; 5], &[0.0; 5]).is_nan());
        assert!(naive::cosine_distance(&[0.0; 3], &[1.0; 3]).is_nan());
    }

    #[test]
    fn normalize_gives_unit_length_and_keeps_zero() {
        let (mut a, _) = vecs(513, 9);
        let n0 = norm(&a);
        let n = normalize(&mut a);
        assert_eq!(n, n0);
        assert!((norm(&a) - 1.0).abs() < 1e-6);
        let mut z = vec![0.0f32; 4];
        assert_eq!(normalize(&mut z), 0.0);
        assert_eq!(z, vec![0.0; 4]);
        assert!((norm(&normalized(&[3.0, 4.0])) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn empty_vectors() {
        assert_eq!(dot(&[], &[]), 0.0);
        assert_eq!(l2_squared(&[], &[]), 0.0);
        assert!(cosine_distance(&[], &[]).is_nan());
    }

    #[test]
    #[should_panic(expected = "differ in length")]
    fn length_mismatch_panics() {
        dot(&[1.0, 2.0], &[1.0]);
    }
}
