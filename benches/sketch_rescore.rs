//! Issue 10 study: how many exact reranks does the sketch scan need for recall@10, and does a second
//! look at the best rows by Hamming distance cut that number?
//!
//! In memory, one thread, on an `.npy` base and query file (default: the image embeddings of
//! `benches/lsh_vs_pgvector.sh --dataset images`, `.cache/data/images/{base,queries}.npy`; cosine).
//! The model is the one the server builds for that size (one table, `suggested_sketch_bits` bits,
//! centred on the mean). For each rerank budget R it prints recall@10 of:
//! * `hamming`    — top R rows by sketch Hamming distance, exact rerank (what the server does);
//! * `asym xM`    — top M·R rows by Hamming distance, rescored by the asymmetric estimate
//!   `Σ_j sign_j(row) · ⟨plane_j, query⟩` (the query's projections instead of its sign bits), top R of
//!   those reranked exactly;
//! * `asym+n xM`  — the same, with the row's centred norm r: estimated squared distance
//!   `r² − 2 r · S / (B c)` (c = √(2 / (π d)), the mean |projection| of a unit vector on a random unit
//!   plane), which needs one more float per row in the index;
//! * `asym all`   — the asymmetric estimate over every row (no Hamming pass).
//!
//! Run: `cargo bench -p imgsim-algo --bench sketch_rescore -- [--npy BASE] [--query-npy Q]
//! [--queries 200] [--max-rows N] [--holdout Q] [--sketch-bits B]` (`--holdout Q`: the last Q rows of the base are the
//! queries, e.g. `--npy .cache/data/glove/glove_6B_50d_emb.npy --holdout 200`).

use imgsim_algo::distance;
use imgsim_algo::estimator::hamming_scan;
use imgsim_algo::lsh::{exact_knn, LshModel, LshParams, MeanAccumulator, Metric};
use imgsim_algo::topk::{f32_key, TopK};
use std::time::Instant;

#[path = "npy.rs"]
mod npy;
#[path = "vectors_cli.rs"]
mod vectors_cli;
use vectors_cli::{arg, base_and_queries};

const K: usize = 10;
const RERANKS: [usize; 8] = [100, 200, 300, 400, 500, 600, 800, 1000];
const MULTS: [usize; 3] = [2, 4, 8];

fn main() {
    let nq: usize = arg("--queries").map_or(200, |s| s.parse().expect("--queries"));
    let max_rows: usize = arg("--max-rows").map_or(usize::MAX, |s| s.parse().expect("rows"));
    let (mut data, mut n, dims, qdata, qn) = base_and_queries();
    if n > max_rows {
        n = max_rows;
        data.truncate(n * dims);
    }
    let nq = nq.min(qn);
    let metric = Metric::Cosine;
    let mut acc = MeanAccumulator::new(dims, metric);
    for r in data.chunks_exact(dims) {
        acc.add(r).unwrap();
    }
    let mut params = LshParams::recommended(dims as u32, metric);
    params.tables = 1;
    params.sketch_bits = arg("--sketch-bits")
        .map_or(LshParams::suggested_sketch_bits(dims as u32), |s| {
            s.parse().expect("--sketch-bits")
        });
    params.bits = LshParams::suggested_bits(n as u64);
    let model = LshModel::new(params, acc.finish()).unwrap();
    let words = params.sketch_words();
    let bits = params.sketch_bits as usize;
    let t = Instant::now();
    let mut codes = vec![0u32; n];
    let mut sketches = vec![0u64; n * words];
    let mut scratch = Vec::new();
    model
        .hash_many_into(&data, &mut scratch, &mut codes, &mut sketches)
        .unwrap();
    let mut norms = Vec::with_capacity(n);
    for r in data.chunks_exact(dims) {
        model.prepare_row_into(r, &mut scratch).unwrap();
        norms.push(distance::norm(&scratch));
    }
    eprintln!(
        "{n} rows x {dims}, {bits}-bit sketch, hashed in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let c = (2.0 / (std::f64::consts::PI * params.hash_dims() as f64)).sqrt() as f32;
    // Per variant and R: summed recall.
    let names: Vec<String> = std::iter::once("hamming".to_string())
        .chain(MULTS.iter().map(|m| format!("asym x{m}")))
        .chain(MULTS.iter().map(|m| format!("asym+n x{m}")))
        .chain(["hamming+n x4".to_string(), "asym all".to_string()])
        .collect();
    let mut sums = vec![vec![0.0f64; RERANKS.len()]; names.len()];
    let mut hams = vec![0u32; n];
    let mut prepared = Vec::new();
    for qi in 0..nq {
        let q = &qdata[qi * dims..(qi + 1) * dims];
        let truth: Vec<u32> = exact_knn(&data, dims, q, K, metric)
            .iter()
            .map(|x| x.id)
            .collect();
        let qh = model.query(q).unwrap();
        model.prepare_query_into(q, &mut prepared).unwrap();
        let qnorm = distance::norm(&prepared);
        let proj: Vec<f32> = (0..bits)
            .map(|j| distance::dot(model.planes().sketch_plane(j), &prepared))
            .collect();
        // Byte lookup tables: lut[b][v] = Σ of proj over the set bits of byte value v at byte b.
        let mut lut = vec![0f32; bits / 8 * 256];
        for b in 0..bits / 8 {
            for v in 0..256usize {
                let mut s = 0.0;
                for k in 0..8 {
                    if v >> k & 1 == 1 {
                        s += proj[b * 8 + k];
                    }
                }
                lut[b * 256 + v] = s;
            }
        }
        let total: f32 = proj.iter().sum();
        // S = Σ_j sign_j · proj_j = 2 Σ_{set} proj − Σ proj.
        let asym = |i: usize| -> f32 {
            let mut s = 0.0;
            for (w, &word) in sketches[i * words..(i + 1) * words].iter().enumerate() {
                for (k, byte) in word.to_le_bytes().iter().enumerate() {
                    s += lut[(w * 8 + k) * 256 + *byte as usize];
                }
            }
            2.0 * s - total
        };
        hamming_scan(&qh.sketch, &sketches, &mut hams);
        let recall_of = |ids: &[u32]| -> f64 {
            let mut got: Vec<(f32, u32)> = ids
                .iter()
                .map(|&i| {
                    (
                        metric.distance(q, &data[i as usize * dims..(i as usize + 1) * dims]),
                        i,
                    )
                })
                .collect();
            got.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            got.iter()
                .take(K)
                .filter(|(_, i)| truth.contains(i))
                .count() as f64
                / K as f64
        };
        let top_by = |keys: &mut dyn Iterator<Item = (u32, u32)>, cap: usize| -> Vec<u32> {
            let mut t = TopK::new(cap);
            for (k, i) in keys {
                t.push(k, i);
            }
            t.ids().collect()
        };
        for (ri, &r) in RERANKS.iter().enumerate() {
            let mut v = 0;
            let h = top_by(&mut hams.iter().enumerate().map(|(i, &h)| (h, i as u32)), r);
            sums[v][ri] += recall_of(&h);
            v += 1;
            for &m in &MULTS {
                let pre = top_by(
                    &mut hams.iter().enumerate().map(|(i, &h)| (h, i as u32)),
                    m * r,
                );
                let ids = top_by(&mut pre.iter().map(|&i| (f32_key(-asym(i as usize)), i)), r);
                sums[v][ri] += recall_of(&ids);
                v += 1;
            }
            for &m in &MULTS {
                let pre = top_by(
                    &mut hams.iter().enumerate().map(|(i, &h)| (h, i as u32)),
                    m * r,
                );
                let ids = top_by(
                    &mut pre.iter().map(|&i| {
                        let ro = norms[i as usize];
                        let est = ro * ro - 2.0 * ro * asym(i as usize) / (bits as f32 * c);
                        (f32_key(est), i)
                    }),
                    r,
                );
                sums[v][ri] += recall_of(&ids);
                v += 1;
            }
            {
                let pre = top_by(
                    &mut hams.iter().enumerate().map(|(i, &h)| (h, i as u32)),
                    4 * r,
                );
                let ids = top_by(
                    &mut pre.iter().map(|&i| {
                        let ro = norms[i as usize];
                        let cos =
                            (std::f32::consts::PI * hams[i as usize] as f32 / bits as f32).cos();
                        (f32_key(ro * ro - 2.0 * ro * qnorm * cos), i)
                    }),
                    r,
                );
                sums[v][ri] += recall_of(&ids);
                v += 1;
            }
            let all = top_by(
                &mut (0..n as u32).map(|i| (f32_key(-asym(i as usize)), i)),
                r,
            );
            sums[v][ri] += recall_of(&all);
        }
    }
    print!("{:<14}", "recall@10 \\ R");
    for r in RERANKS {
        print!("{r:>8}");
    }
    println!();
    for (name, s) in names.iter().zip(&sums) {
        print!("{name:<14}");
        for x in s {
            print!("{:>8.3}", x / nq as f64);
        }
        println!();
    }
    // Cost of the asymmetric estimate per row (byte tables), for scale.
    let t = Instant::now();
    let mut acc = 0.0f32;
    let lut = vec![0.5f32; bits / 8 * 256];
    for i in 0..n {
        let mut s = 0.0;
        for (w, &word) in sketches[i * words..(i + 1) * words].iter().enumerate() {
            for (k, byte) in word.to_le_bytes().iter().enumerate() {
                s += lut[(w * 8 + k) * 256 + *byte as usize];
            }
        }
        acc += s;
    }
    let asym_ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    let t = Instant::now();
    hamming_scan(&sketches[..words], &sketches, &mut hams);
    let ham_ns = t.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!("per row: asymmetric estimate {asym_ns:.1} ns, Hamming {ham_ns:.1} ns ({acc:.0})");
}
