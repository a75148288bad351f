//! Synthetic data for tests and benchmarks: clustered, non-negative (ReLU-like) vectors.
//!
//! Three levels: `clusters` centres `cᵢ ~ N(0, 1)^dims`, `subclusters` sub-centres per centre
//! `sᵢⱼ = cᵢ + sub_spread · N(0, 1)`, and points `max(0, sᵢⱼ + noise · N(0, 1))`. Nearest neighbours
//! of a point are mostly in its sub-cluster, where distances differ by only a few per cent (as in
//! real embeddings, where many images are "about equally similar"), so the sketch must be good and
//! the rerank big enough to resolve them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Shape of a clustered data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClusterSpec {
    /// Dimensionality.
    pub dims: usize,
    /// Top-level clusters.
    pub clusters: usize,
    /// Sub-clusters per cluster.
    pub subclusters: usize,
    /// Standard deviation of sub-centres around their centre.
    pub sub_spread: f32,
    /// Standard deviation of points around their sub-centre (before the ReLU).
    pub noise: f32,
    /// Seed of the centres (the same spec and seed give the same centres).
    pub seed: u64,
}

impl ClusterSpec {
    /// 512-d, 100 clusters × 10 sub-clusters, sub_spread 0.5, noise 0.5.
    pub fn default_512() -> ClusterSpec {
        ClusterSpec {
            dims: 512,
            clusters: 100,
            subclusters: 10,
            sub_spread: 0.5,
            noise: 0.5,
            seed: 42,
        }
    }
}

/// Generator holding the sub-centres; draws any number of points from any point stream.
#[derive(Debug, Clone)]
pub struct Clustered {
    spec: ClusterSpec,
    centres: Vec<f32>,
}

impl Clustered {
    /// Draws the centres and sub-centres of `spec`.
    pub fn new(spec: ClusterSpec) -> Clustered {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let d = spec.dims;
        let mut centres = Vec::with_capacity(spec.clusters * spec.subclusters * d);
        for _ in 0..spec.clusters {
            let c: Vec<f32> = (0..d).map(|_| StandardNormal.sample(&mut rng)).collect();
            for _ in 0..spec.subclusters {
                for &x in &c {
                    let e: f32 = StandardNormal.sample(&mut rng);
                    centres.push(x + spec.sub_spread * e);
                }
            }
        }
        Clustered { spec, centres }
    }

    /// `n` points (row-major, `n * dims` floats) from point stream `stream` (use different streams
    /// for the indexed rows and the queries).
    pub fn points(&self, n: usize, stream: u64) -> Vec<f32> {
        let d = self.spec.dims;
        let nsub = self.spec.clusters * self.spec.subclusters;
        let mut rng = ChaCha8Rng::seed_from_u64(self.spec.seed ^ 0x9e37_79b9_7f4a_7c15);
        rng.set_stream(stream + 1);
        let mut out = Vec::with_capacity(n * d);
        for _ in 0..n {
            let s = rng.random_range(0..nsub);
            let c = &self.centres[s * d..(s + 1) * d];
            for &x in c {
                let e: f32 = StandardNormal.sample(&mut rng);
                out.push((x + self.spec.noise * e).max(0.0));
            }
        }
        out
    }
}

/// How [`scale_norms`] spreads the norms of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormSpread {
    /// Rows unchanged.
    None,
    /// Every row scaled to unit length (all norms 1).
    Unit,
    /// Each row scaled by a factor uniform in [0.5, 2].
    Uniform,
    /// Each row scaled by exp(0.5 · N(0, 1)) (log-normal; about 0.37 ..= 2.7 for 95 % of rows).
    LogNormal,
}

/// Scales every row of `data` (`dims` floats each) by a random factor drawn as `spread` says (seeded
/// by `seed`): inner-product test data whose norms vary, with the directions of `data`.
pub fn scale_norms(data: &mut [f32], dims: usize, spread: NormSpread, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for row in data.chunks_exact_mut(dims) {
        let f: f32 = match spread {
            NormSpread::None => return,
            NormSpread::Unit => {
                let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                if n > 0.0 {
                    1.0 / n
                } else {
                    1.0
                }
            }
            NormSpread::Uniform => rng.random_range(0.5f32..=2.0),
            NormSpread::LogNormal => {
                let z: f32 = StandardNormal.sample(&mut rng);
                (0.5 * z).exp()
            }
        };
        for x in row {
            *x *= f;
        }
    }
}
