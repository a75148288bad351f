//! Learned partition planes of a one-table index (a sketch-scanned index: `tables = 1`).
//!
//! A sketch scan reads the entries of table 0 superbucket by superbucket (the top `dir_bits` bits of
//! the table-0 code). With random planes a superbucket is a random slice of the space, and a query's
//! neighbours are spread over most of them, so a scan must read every row. Planes fitted to the data
//! (the principal directions of a sample of centred rows, each split at the sample's median) make a
//! superbucket a compact region: visiting the superbuckets in query-directed multi-probe order, the
//! true top 10 of a query are found after a small share of the rows (a numpy study of 100k real image
//! embeddings, 8–12 partition bits: 93–96 % of them in the nearest 10 % of the rows, against 44–61 %
//! with random planes; GloVe 400k × 50: 81–91 % in 10 %, 92–96 % in 20 %). The scan then stops
//! early ([`crate::lsh::auto::scan_fraction`]) and returns the remaining superbuckets in later
//! batches (`benches/scan_fraction.rs` measures recall against the share read).
//!
//! The planes are fitted at build on a sample of up to [`SAMPLE_ROWS`] rows by subspace iteration
//! (no dense eigensolver, no covariance matrix: `dims × dims` would be 6.5 MB at 1280 dims), and are
//! stored in the index, since they cannot be regenerated from the parameters.

use crate::distance;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, StandardNormal};

/// Rows a fit looks at, at most (evenly spaced over the rows).
pub const SAMPLE_ROWS: usize = 8192;
/// Values a sample holds, at most (16 MB of f32: 3,276 rows of 1280 dimensions, 262 of 16,000), so
/// that the memory of a fit (done inside an INSERT that rebuilds the layout, too) stays bounded.
pub const SAMPLE_VALUES: usize = 4 << 20;
/// Fewer rows than this are not worth a learned partition: the index keeps its random planes.
pub const MIN_ROWS: usize = 1000;
/// Subspace iterations of a fit.
const ITERATIONS: usize = 8;
/// Extra directions iterated along with the wanted ones (faster, steadier convergence of the last
/// wanted ones); dropped at the end.
const OVERSAMPLE: usize = 4;

/// Learned planes: `planes.len() / dims` unit vectors, in decreasing order of the sample's variance
/// along them, and the sample's median projection on each (the split point).
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    /// Row-major, `count × dims` floats.
    pub planes: Vec<f32>,
    /// One split point per plane.
    pub thresholds: Vec<f32>,
}

impl Learned {
    /// Number of planes.
    pub fn count(&self) -> usize {
        self.thresholds.len()
    }

    /// Planes then thresholds, as stored in the index (`count × (dims + 1)` floats).
    pub fn to_f32s(&self) -> Vec<f32> {
        let mut out = self.planes.clone();
        out.extend_from_slice(&self.thresholds);
        out
    }

    /// The inverse of [`Learned::to_f32s`]; None when the length does not match or a value is not
    /// finite (a damaged index).
    pub fn from_f32s(count: usize, dims: usize, v: &[f32]) -> Option<Learned> {
        if v.len() != count.checked_mul(dims + 1)? || v.iter().any(|x| !x.is_finite()) {
            return None;
        }
        Some(Learned {
            planes: v[..count * dims].to_vec(),
            thresholds: v[count * dims..].to_vec(),
        })
    }
}

/// The `count` leading principal directions of `sample` (rows of `dims` prepared, i.e. centred,
/// values) with their median splits; deterministic for the same sample and `seed`. Directions the
/// sample does not span (fewer independent rows than `count`) come out as unit vectors orthogonal to
/// the others, split at their median too.
///
/// # Panics
/// If `sample` is not a whole number of rows, or `count > dims`.
///
/// `check` is called once per iteration (the server checks for query cancel there).
pub fn fit(
    sample: &[f32],
    dims: usize,
    count: usize,
    seed: u64,
    check: &mut dyn FnMut(),
) -> Learned {
    assert!(dims > 0 && sample.len().is_multiple_of(dims), "sample size");
    assert!(count <= dims, "more planes than dimensions");
    let n = sample.len() / dims;
    let m = (count + OVERSAMPLE).min(dims);
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x7061_7274_6974_696f);
    let mut basis: Vec<f32> = (0..m * dims)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let fallback = basis.clone();
    orthonormalise(&mut basis, &fallback, dims);
    let mut proj = vec![0f32; n * m];
    for _ in 0..ITERATIONS {
        check();
        // basis ← orth(Xᵀ X basis), accumulated in f32 (a vectorised multiply-add; the directions
        // need no more precision than the median splits they feed).
        project(sample, &basis, dims, &mut proj);
        basis.fill(0.0);
        for (row, p) in sample.chunks_exact(dims).zip(proj.chunks_exact(m)) {
            for (acc, &pj) in basis.chunks_exact_mut(dims).zip(p) {
                for (a, &x) in acc.iter_mut().zip(row) {
                    *a += pj * x;
                }
            }
        }
        orthonormalise(&mut basis, &fallback, dims);
    }
    // Order by the variance along each direction, keep `count`, split at the median.
    project(sample, &basis, dims, &mut proj);
    let mut var: Vec<(f64, usize)> = (0..m)
        .map(|j| {
            let s: f64 = (0..n)
                .map(|r| f64::from(proj[r * m + j]).powi(2))
                .sum::<f64>();
            (s, j)
        })
        .collect();
    var.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut planes = Vec::with_capacity(count * dims);
    let mut thresholds = Vec::with_capacity(count);
    let mut col = vec![0f32; n];
    for &(_, j) in var.iter().take(count) {
        planes.extend_from_slice(&basis[j * dims..(j + 1) * dims]);
        for (r, c) in col.iter_mut().enumerate() {
            *c = proj[r * m + j];
        }
        thresholds.push(median(&mut col));
    }
    Learned { planes, thresholds }
}

/// `proj[r * m + j] = ⟨row r, basis j⟩`.
fn project(sample: &[f32], basis: &[f32], dims: usize, proj: &mut [f32]) {
    let m = basis.len() / dims;
    for (row, p) in sample.chunks_exact(dims).zip(proj.chunks_exact_mut(m)) {
        for (j, b) in basis.chunks_exact(dims).enumerate() {
            p[j] = distance::dot(b, row);
        }
    }
}

/// Modified Gram–Schmidt in f64 over the rows of `basis`; a row that vanishes (or is not finite) is
/// replaced by the matching row of `fallback` orthogonalised against the rows before it.
fn orthonormalise(basis: &mut [f32], fallback: &[f32], dims: usize) {
    let m = basis.len() / dims;
    let mut done: Vec<Vec<f64>> = Vec::with_capacity(m);
    for j in 0..m {
        let mut v = None;
        for src in [
            &basis[j * dims..(j + 1) * dims],
            &fallback[j * dims..(j + 1) * dims],
        ] {
            let mut w: Vec<f64> = src.iter().map(|&x| f64::from(x)).collect();
            let scale = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            for u in &done {
                let d: f64 = w.iter().zip(u).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(u).for_each(|(a, b)| *a -= d * b);
            }
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm.is_finite() && norm > 1e-6 * scale && norm > 0.0 {
                w.iter_mut().for_each(|a| *a /= norm);
                v = Some(w);
                break;
            }
        }
        // Both vanished (dims < m cannot happen: m ≤ dims, and the fallback rows are random):
        // a unit axis not yet spanned.
        let w = v.unwrap_or_else(|| {
            let mut e = vec![0f64; dims];
            e[j % dims] = 1.0;
            e
        });
        done.push(w);
    }
    for (j, w) in done.iter().enumerate() {
        for (dst, &x) in basis[j * dims..(j + 1) * dims].iter_mut().zip(w) {
            *dst = x as f32;
        }
    }
}

/// The median of `v` (the lower middle value for an even count); 0 for an empty slice.
fn median(v: &mut [f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mid = (v.len() - 1) / 2;
    *v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b)).1
}

/// Evenly spaced sample positions among `0..rows` for rows of `dims` values: at most [`SAMPLE_ROWS`]
/// rows and [`SAMPLE_VALUES`] values (at least one row when there is one).
pub fn sample_positions(rows: usize, dims: usize) -> impl Iterator<Item = usize> {
    let s = rows
        .min(SAMPLE_ROWS)
        .min((SAMPLE_VALUES / dims.max(1)).max(1));
    (0..s).map(move |i| i * rows / s)
}

/// Whether every value of `l` is finite (a sample of extreme values can overflow f32 projections:
/// such planes are not used).
pub fn is_finite(l: &Learned) -> bool {
    l.planes.iter().chain(&l.thresholds).all(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows with variance 100, 25, 4, 1 along four orthogonal directions of a 16-d space (rotated by
    /// a fixed orthonormal basis), centred.
    fn anisotropic(n: usize) -> (Vec<f32>, Vec<f32>) {
        let dims = 16;
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut axes: Vec<f32> = (0..4 * dims)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect();
        let fb = axes.clone();
        orthonormalise(&mut axes, &fb, dims);
        let sd = [10.0f32, 5.0, 2.0, 1.0];
        let mut data = vec![0f32; n * dims];
        for r in 0..n {
            for (k, s) in sd.iter().enumerate() {
                let z: f32 = StandardNormal.sample(&mut rng);
                for d in 0..dims {
                    data[r * dims + d] += s * z * axes[k * dims + d];
                }
            }
        }
        (data, axes)
    }

    #[test]
    fn finds_the_principal_directions_in_order() {
        let (data, axes) = anisotropic(4000);
        let l = fit(&data, 16, 3, 1, &mut || {});
        assert_eq!(l.count(), 3);
        for k in 0..3 {
            let p = &l.planes[k * 16..(k + 1) * 16];
            let cos = distance::dot(p, &axes[k * 16..(k + 1) * 16]).abs();
            assert!(cos > 0.99, "direction {k}: |cos| {cos}");
            assert!((distance::norm(p) - 1.0).abs() < 1e-5);
            // The median of a centred Gaussian projection is near 0, and splits the sample in two.
            let above = data
                .chunks_exact(16)
                .filter(|r| distance::dot(p, r) > l.thresholds[k])
                .count();
            assert!((1990..=2010).contains(&above), "{above}");
        }
        // Deterministic.
        assert_eq!(l, fit(&data, 16, 3, 1, &mut || {}));
    }

    #[test]
    fn degenerate_samples_give_orthonormal_planes() {
        // Every row the same direction (rank 1), a single row, all zeros, and as many planes as dims.
        let dims = 8;
        let one: Vec<f32> = (0..dims).map(|i| i as f32).collect();
        let rank1: Vec<f32> = (0..50)
            .flat_map(|r| one.iter().map(move |x| x * r as f32))
            .collect();
        for (sample, count) in [
            (rank1.clone(), 5),
            (one.clone(), 8),
            (vec![0f32; 10 * dims], 8),
            (Vec::new(), 3),
        ] {
            let l = fit(&sample, dims, count, 9, &mut || {});
            assert_eq!(l.count(), count);
            assert!(l.planes.iter().chain(&l.thresholds).all(|x| x.is_finite()));
            for a in 0..count {
                let pa = &l.planes[a * dims..(a + 1) * dims];
                assert!((distance::norm(pa) - 1.0).abs() < 1e-4);
                for b in 0..a {
                    let pb = &l.planes[b * dims..(b + 1) * dims];
                    assert!(distance::dot(pa, pb).abs() < 1e-4);
                }
            }
        }
    }

    #[test]
    fn overflowing_samples_give_non_finite_planes_that_are_detected() {
        // Projections of ±3e38 values overflow f32: the median split is infinite.
        let dims = 4;
        let sample: Vec<f32> = (0..2000)
            .flat_map(|r| {
                let s = if r % 5 < 3 { 3e38f32 } else { -3e38 };
                [s, -s, s, s]
            })
            .collect();
        let l = fit(&sample, dims, 2, 4, &mut || {});
        assert!(!is_finite(&l));
        let (data, _) = anisotropic(500);
        assert!(is_finite(&fit(&data, 16, 4, 2, &mut || {})));
    }

    #[test]
    fn stored_form_round_trips_and_refuses_damage() {
        let (data, _) = anisotropic(500);
        let l = fit(&data, 16, 4, 2, &mut || {});
        let v = l.to_f32s();
        assert_eq!(Learned::from_f32s(4, 16, &v), Some(l));
        assert_eq!(Learned::from_f32s(3, 16, &v), None);
        let mut bad = v.clone();
        bad[7] = f32::NAN;
        assert_eq!(Learned::from_f32s(4, 16, &bad), None);
        assert_eq!(Learned::from_f32s(usize::MAX, 16, &v), None);
    }

    #[test]
    fn sample_positions_are_spread_and_bounded() {
        assert_eq!(
            sample_positions(5, 8).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        let p: Vec<usize> = sample_positions(100_000, 50).collect();
        assert_eq!(p.len(), SAMPLE_ROWS);
        assert!(p.windows(2).all(|w| w[0] < w[1]) && *p.last().unwrap() < 100_000);
        assert_eq!(
            sample_positions(100_000, 1280).count(),
            SAMPLE_VALUES / 1280
        );
        assert_eq!(sample_positions(100_000, 16_000).count(), 262);
        assert_eq!(sample_positions(0, 16_000).count(), 0);
    }
}
