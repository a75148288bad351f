//! ns per distance, vectorised kernels vs naive single-accumulator loops.
//!
//! Run: `cargo bench -p imgsim-algo --bench distance` (release profile of the workspace root).
//! Optional: `-- --dims 512,1280 --rounds 5`.

use imgsim_algo::distance as d;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;
use std::time::Instant;

type Kernel = fn(&[f32], &[f32]) -> f32;

/// Vectors compared against one query per pass: 16 (32 KB at 512-d, L1/L2-resident: pure compute)
/// and 1024 (2 MB at 512-d: the cache-miss-bound case of a rerank over many rows).
const POOLS: [usize; 2] = [16, 1024];

fn time_ns(
    pool: &[f32],
    q: &[f32],
    dims: usize,
    rounds: usize,
    f: fn(&[f32], &[f32]) -> f32,
) -> f64 {
    let n = pool.len() / dims;
    // Warm up, then take the best of `rounds` passes of ~20 ms each.
    let mut sink = 0.0f32;
    for v in pool.chunks_exact(dims) {
        sink += f(q, v);
    }
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let reps = 20_000_000 / (dims * n) + 1;
        let t = Instant::now();
        for _ in 0..reps {
            for v in pool.chunks_exact(dims) {
                sink += f(black_box(q), black_box(v));
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / (reps * n) as f64;
        best = best.min(ns);
    }
    black_box(sink);
    best
}

fn main() {
    let mut dims_list = vec![512usize, 1280];
    let mut rounds = 7usize;
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--dims" => {
                dims_list = args[i + 1].split(',').map(|s| s.parse().unwrap()).collect();
                i += 1;
            }
            "--rounds" => {
                rounds = args[i + 1].parse().unwrap();
                i += 1;
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    #[cfg(target_arch = "x86_64")]
    let path = if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
    {
        "AVX2+FMA (runtime dispatch)"
    } else {
        "baseline SSE2"
    };
    #[cfg(not(target_arch = "x86_64"))]
    let path = "portable";
    println!(
        "distance kernels: vectorised path = {path}; best of {rounds} passes; ns per distance"
    );
    println!(
        "{:>5} {:<7} {:>7} {:>10} {:>14} {:>8}",
        "dims", "kernel", "pool", "naive ns", "vectorised ns", "speedup"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &dims in &dims_list {
        let q: Vec<f32> = (0..dims).map(|_| rng.random_range(0.0f32..1.0)).collect();
        for pool_n in POOLS {
            let pool: Vec<f32> = (0..pool_n * dims)
                .map(|_| rng.random_range(0.0f32..1.0))
                .collect();
            let rows: [(&str, Kernel, Kernel); 3] = [
                ("l2sq", d::naive::l2_squared, d::l2_squared),
                ("dot", d::naive::dot, d::dot),
                ("cosine", d::naive::cosine_distance, d::cosine_distance),
            ];
            for (name, naive, fast) in rows {
                let n = time_ns(&pool, &q, dims, rounds, naive);
                let f = time_ns(&pool, &q, dims, rounds, fast);
                let kb = pool_n * dims * 4 / 1024;
                println!(
                    "{dims:>5} {name:<7} {:>7} {n:>10.1} {f:>14.1} {:>7.1}x",
                    format!("{kb}KB"),
                    n / f
                );
            }
        }
        // Sketch Hamming distance (256 bits = 4 words), the candidate ranking step.
        const POOL: usize = 1024;
        let words: Vec<u64> = (0..POOL * 4).map(|_| rng.random()).collect();
        let qw: Vec<u64> = (0..4).map(|_| rng.random()).collect();
        let reps = 2000;
        let t = Instant::now();
        let mut s = 0u32;
        for _ in 0..reps {
            for w in words.chunks_exact(4) {
                s += d::hamming(black_box(&qw), black_box(w));
            }
        }
        black_box(s);
        if dims == dims_list[0] {
            println!(
                "hamming distance of 256-bit sketches: {:.1} ns",
                t.elapsed().as_nanos() as f64 / (reps * POOL) as f64
            );
        }
        projections(dims, rounds, &mut rng);
    }
}

/// The LSH build's projections: 512 planes × a batch of 32 rows in `LshModel::hash_many_into`'s
/// loop order (four planes against every pair of rows of the batch, `dot4x2`); ns per plane-row
/// product.
fn projections(dims: usize, rounds: usize, rng: &mut ChaCha8Rng) {
    const PLANES: usize = 512;
    const BATCH: usize = 32;
    let planes: Vec<f32> = (0..PLANES * dims)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let batch: Vec<f32> = (0..BATCH * dims)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut best = f64::INFINITY;
    let mut sink = 0.0f32;
    for _ in 0..rounds {
        let t = Instant::now();
        for g in planes.chunks_exact(4 * dims) {
            let p: [&[f32]; 4] = std::array::from_fn(|k| &g[k * dims..(k + 1) * dims]);
            for pair in batch.chunks_exact(2 * dims) {
                let (a, b) = pair.split_at(dims);
                sink += d::dot4x2(p, black_box(a), black_box(b))[3].1;
            }
        }
        best = best.min(t.elapsed().as_nanos() as f64 / (PLANES * BATCH) as f64);
    }
    black_box(sink);
    println!("{dims:>5} projections (512 planes x 32 rows, dot4x2): {best:.1} ns per product");
}
