//! LSH parameter study: recall@10 vs exact, candidates touched, probes and query time for
//! bits × tables × sketch_bits × max_candidates × rerank, on
//!  (a) clustered synthetic data (100k × 512-d non-negative, 100 clusters × 10 sub-clusters), and
//!  (b) every `.cache/emb/*.npy` file (f32 little-endian, shape [N, D]) if any exist.
//!
//! Run: `cargo bench -p imgsim-algo --bench lsh_recall` (about 2–3 minutes on 2 busy cores).
//! Options (after `--`): `--rows N` (default 100000), `--queries Q` (200), `--metric l2|cosine|ip`
//! (synthetic set; npy files are measured with cosine), `--npy FILE` (instead of .cache/emb/*.npy;
//! repeatable), `--no-npy`, `--npy-only`, `--max-rows N` (cap for npy files, default 200000),
//! `--norms none|unit|uniform|lognormal` (synthetic rows normalised, or scaled by a factor uniform in
//! [0.5, 2] or exp(0.5·N(0, 1)), for inner product with varying norms; default none), `--defaults-only` (skip
//! the sweep: build and measure only the recommended defaults), `--ip-legacy` (inner product hashed
//! like cosine, as indexes written before norm augmentation).
//! Swept: bits = suggested_bits(rows) + {-4, -2, 0, +2}, tables {4, 8, 16}, sketch {256, 512},
//! max_candidates {1, 2, 4, 8} % of rows ({10, 20, 40, 80} % under 10k rows), rerank {50, 100,
//! 200, 400}.
//!
//! Every configuration is derived from one index built at the largest parameters with
//! `MemIndex::truncated` (plane prefixes), so the sweep hashes the data only once.

use imgsim_algo::lsh::{
    exact_knn, recall, LshParams, MemIndex, Metric, Neighbor, ScanMode, SearchParams,
};
use imgsim_algo::synth::{scale_norms, ClusterSpec, Clustered, NormSpread};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "npy.rs"]
mod npy;
use npy::read_npy;

const K: usize = 10;
/// Swept bits: `LshParams::suggested_bits(rows)` plus these offsets (8, 10, 12, 14 at 100k rows).
const BITS_OFFSETS: [i32; 4] = [-4, -2, 0, 2];
const TABLES: [u32; 3] = [4, 8, 16];
const SKETCH: [u32; 2] = [256, 512];
/// Swept max_candidates, in per cent of the rows (1000, 2000, 4000, 8000 at 100k rows).
const MAX_CANDIDATES_PCT: [f64; 4] = [1.0, 2.0, 4.0, 8.0];
const RERANK: [usize; 4] = [50, 100, 200, 400];
/// Probe cap for the main sweep (high enough that `max_candidates` decides).
const SWEEP_MAX_PROBES: usize = 20_000;

struct Opts {
    rows: usize,
    queries: usize,
    metric: Metric,
    npy: bool,
    synthetic: bool,
    max_rows: usize,
    npy_files: Vec<PathBuf>,
    norms: NormSpread,
    defaults_only: bool,
    ip_legacy: bool,
}

fn parse() -> Opts {
    let mut o = Opts {
        rows: 100_000,
        queries: 200,
        metric: Metric::L2,
        npy: true,
        synthetic: true,
        max_rows: 200_000,
        npy_files: Vec::new(),
        norms: NormSpread::None,
        defaults_only: false,
        ip_legacy: false,
    };
    let a: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < a.len() {
        let val = |i: usize| a.get(i + 1).cloned().unwrap_or_default();
        match a[i].as_str() {
            "--rows" => {
                o.rows = val(i).parse().expect("--rows N");
                i += 1;
            }
            "--queries" => {
                o.queries = val(i).parse().expect("--queries Q");
                i += 1;
            }
            "--max-rows" => {
                o.max_rows = val(i).parse().expect("--max-rows N");
                i += 1;
            }
            "--metric" => {
                o.metric = match val(i).as_str() {
                    "l2" => Metric::L2,
                    "cosine" => Metric::Cosine,
                    "ip" => Metric::InnerProduct,
                    m => panic!("unknown metric {m}"),
                };
                i += 1;
            }
            "--npy" => {
                o.npy_files.push(PathBuf::from(val(i)));
                i += 1;
            }
            "--norms" => {
                o.norms = match val(i).as_str() {
                    "none" => NormSpread::None,
                    "unit" => NormSpread::Unit,
                    "uniform" => NormSpread::Uniform,
                    "lognormal" => NormSpread::LogNormal,
                    m => panic!("unknown norm spread {m}"),
                };
                i += 1;
            }
            "--defaults-only" => o.defaults_only = true,
            "--ip-legacy" => o.ip_legacy = true,
            "--no-npy" => o.npy = false,
            "--npy-only" => o.synthetic = false,
            _ => {} // --bench from cargo
        }
        i += 1;
    }
    o
}

struct Row {
    bits: u32,
    tables: u32,
    sketch: u32,
    max_cand: usize,
    rerank: usize,
    recall: f64,
    cand: f64,
    probes: f64,
    entries: f64,
    us: f64,
}

/// A rough cost in "buffer accesses" for the PostgreSQL plan: a bucket probe ~1 (directory
/// lookup), a bucket entry read ~0.01 (≈100 entries with sketches per 8 KB page), an exact rerank
/// ~3 (heap tuple + out-of-line 2 KB vector). Used only to rank configurations that reach the
/// recall target.
fn cost(r: &Row) -> f64 {
    r.probes + 0.01 * r.entries + 3.0 * r.rerank as f64
}

fn run_set(name: &str, data: Vec<f32>, queries: &[f32], dims: usize, metric: Metric, o: &Opts) {
    let rows = data.len() / dims;
    let nq = queries.len() / dims;
    let sb = LshParams::suggested_bits(rows as u64) as i32;
    let mut bits_list: Vec<u32> = BITS_OFFSETS
        .iter()
        .map(|o| (sb + o).clamp(4, 20) as u32)
        .collect();
    bits_list.dedup();
    let max_bits = *bits_list.last().unwrap();
    // Small sets (real-embedding samples): 10x the percentages, so the sweep is not all at 2k.
    let scale = if rows < 10_000 { 10.0 } else { 1.0 };
    let mut cand_list: Vec<usize> = MAX_CANDIDATES_PCT
        .iter()
        .map(|p| ((rows as f64 * scale * p / 100.0).round() as usize).max(2 * K))
        .collect();
    cand_list.dedup();
    println!("\n=== {name}: {rows} rows x {dims}-d, {nq} queries, metric {metric:?}, recall@{K} vs exact ===");
    let t = Instant::now();
    let truth: Vec<Vec<Neighbor>> = queries
        .chunks_exact(dims)
        .map(|q| exact_knn(&data, dims, q, K, metric))
        .collect();
    let exact_ms = t.elapsed().as_secs_f64() * 1e3 / nq as f64;
    let build = |p: LshParams, data: &[f32]| {
        if o.ip_legacy {
            MemIndex::build_legacy(p, data)
        } else {
            MemIndex::build(p, data)
        }
        .expect("build")
    };
    let mut rec = LshParams::recommended(dims as u32, metric);
    rec.bits = LshParams::suggested_bits(rows as u64).min(max_bits);
    if o.defaults_only {
        let t = Instant::now();
        let idx = build(rec, &data);
        println!(
            "exact scan: {exact_ms:.2} ms/query; hashing all rows at the defaults: {:.1} s (max_norm {})",
            t.elapsed().as_secs_f64(),
            idx.model().params().max_norm
        );
        report_defaults(&idx, rec, queries, &truth, rows, dims);
        return;
    }
    let t = Instant::now();
    let big = build(
        LshParams {
            dims: dims as u32,
            bits: max_bits,
            tables: *TABLES.last().unwrap(),
            sketch_bits: *SKETCH.last().unwrap(),
            seed: LshParams::recommended(dims as u32, metric).seed,
            metric,
            max_norm: 0.0,
        },
        &data,
    );
    drop(data);
    println!(
        "exact scan: {exact_ms:.2} ms/query; hashing all rows at bits {max_bits}, 16 tables, 512-bit sketch: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut results: Vec<Row> = Vec::new();
    println!(
        "{:>4} {:>3} {:>6} {:>7} | {:>6} {:>6} {:>6} {:>6} | {:>7} {:>6} {:>7} {:>8}",
        "bits",
        "L",
        "sketch",
        "maxcand",
        "rr=50",
        "rr=100",
        "rr=200",
        "rr=400",
        "cand",
        "cand%",
        "probes",
        "us@rr100"
    );
    for &bits in &bits_list {
        for &tables in &TABLES {
            for &sketch in &SKETCH {
                let idx = big.truncated(bits, tables, sketch).expect("truncate");
                for &max_cand in &cand_list {
                    let mut line = Vec::new();
                    let (mut cand_avg, mut probes_avg, mut entries_avg, mut us100) =
                        (0.0, 0.0, 0.0, 0.0);
                    for &rerank in &RERANK {
                        let sp = SearchParams {
                            k: K,
                            max_candidates: max_cand,
                            max_probes: SWEEP_MAX_PROBES,
                            rerank,
                            mode: ScanMode::Buckets,
                            scan_fraction: 1.0,
                        };
                        let (mut rc, mut cand, mut probes, mut entries) =
                            (0.0, 0usize, 0usize, 0usize);
                        let t = Instant::now();
                        for (q, tr) in queries.chunks_exact(dims).zip(&truth) {
                            let r = idx.search(q, &sp).expect("search");
                            rc += recall(&r.neighbors, tr);
                            cand += r.candidates;
                            probes += r.probes;
                            entries += r.entries;
                        }
                        let us = t.elapsed().as_secs_f64() * 1e6 / nq as f64;
                        let row = Row {
                            bits,
                            tables,
                            sketch,
                            max_cand,
                            rerank,
                            recall: rc / nq as f64,
                            cand: cand as f64 / nq as f64,
                            probes: probes as f64 / nq as f64,
                            entries: entries as f64 / nq as f64,
                            us,
                        };
                        line.push(row.recall);
                        cand_avg = row.cand;
                        probes_avg = row.probes;
                        entries_avg = row.entries;
                        if rerank == 100 {
                            us100 = us;
                        }
                        results.push(row);
                    }
                    println!(
                        "{bits:>4} {tables:>3} {sketch:>6} {max_cand:>7} | {:>6.3} {:>6.3} {:>6.3} {:>6.3} | {cand_avg:>7.0} {:>5.2}% {entries_avg:>7.0} {probes_avg:>7.0} {us100:>8.0}",
                        line[0],
                        line[1],
                        line[2],
                        line[3],
                        100.0 * cand_avg / rows as f64
                    );
                }
            }
        }
    }
    let mut ok: Vec<&Row> = results.iter().filter(|r| r.recall >= 0.95).collect();
    ok.sort_by(|a, b| cost(a).total_cmp(&cost(b)));
    println!("\ncheapest configurations with recall@{K} >= 0.95 (cost = probes + 0.01*entries + 3*rerank):");
    println!(
        "{:>4} {:>3} {:>6} {:>7} {:>6} | {:>6} {:>7} {:>7} {:>7} {:>7} {:>7}",
        "bits",
        "L",
        "sketch",
        "maxcand",
        "rerank",
        "recall",
        "cand",
        "entries",
        "probes",
        "us",
        "cost"
    );
    for r in ok.iter().take(12) {
        println!(
            "{:>4} {:>3} {:>6} {:>7} {:>6} | {:>6.3} {:>7.0} {:>7.0} {:>7.0} {:>7.0} {:>7.0}",
            r.bits,
            r.tables,
            r.sketch,
            r.max_cand,
            r.rerank,
            r.recall,
            r.cand,
            r.entries,
            r.probes,
            r.us,
            cost(r)
        );
    }
    if ok.is_empty() {
        println!("  (none)");
    }

    let idx = big
        .truncated(rec.bits, rec.tables, rec.sketch_bits)
        .expect("truncate");
    report_defaults(&idx, rec, queries, &truth, rows, dims);
}

/// The recommended defaults (`idx` built or truncated to `rec`), and the effect of a probe cap on them.
fn report_defaults(
    idx: &MemIndex,
    rec: LshParams,
    queries: &[f32],
    truth: &[Vec<Neighbor>],
    rows: usize,
    dims: usize,
) {
    let nq = truth.len();
    let base = SearchParams::for_rows(rows as u64, K);
    println!(
        "\nrecommended defaults (LshParams::recommended with bits = suggested_bits(rows), SearchParams::for_rows(rows)): bits {}, tables {}, sketch {}, max_candidates {}, max_probes {}, rerank {}",
        rec.bits, rec.tables, rec.sketch_bits, base.max_candidates, base.max_probes, base.rerank
    );
    let counts = idx.bucket_counts();
    println!(
        "  non-empty buckets per table: {:.0} of {} (avg {:.1} rows per non-empty bucket)",
        counts.iter().sum::<usize>() as f64 / counts.len() as f64,
        1u64 << rec.bits,
        rows as f64 * counts.len() as f64 / counts.iter().sum::<usize>() as f64
    );
    println!(
        "{:>10} | {:>6} {:>7} {:>7} {:>7}",
        "max_probes", "recall", "cand", "probes", "us"
    );
    let mut probe_list = vec![25, 50, 100, 150, 200, 400, 1000, 20_000, base.max_probes];
    probe_list.sort_unstable();
    probe_list.dedup();
    for max_probes in probe_list {
        let sp = SearchParams { max_probes, ..base };
        let (mut rc, mut cand, mut probes) = (0.0, 0usize, 0usize);
        let t = Instant::now();
        for (q, tr) in queries.chunks_exact(dims).zip(truth) {
            let r = idx.search(q, &sp).expect("search");
            rc += recall(&r.neighbors, tr);
            cand += r.candidates;
            probes += r.probes;
        }
        let us = t.elapsed().as_secs_f64() * 1e6 / nq as f64;
        if max_probes == base.max_probes {
            println!(
                "  defaults: recall@{K} {:.3}, {:.0} candidates, {:.0} probes, {us:.0} us/query ({:.0} candidates/ms)",
                rc / nq as f64,
                cand as f64 / nq as f64,
                probes as f64 / nq as f64,
                cand as f64 / nq as f64 / (us / 1e3)
            );
        }
        println!(
            "{max_probes:>10} | {:>6.3} {:>7.0} {:>7.0} {:>7.0}",
            rc / nq as f64,
            cand as f64 / nq as f64,
            probes as f64 / nq as f64,
            us
        );
    }
}

fn npy_files() -> Vec<PathBuf> {
    // Benches run with the package directory (src/algo) as cwd; look from the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join(".cache/emb");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "npy"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn main() {
    let o = parse();
    let t0 = Instant::now();
    if o.synthetic {
        let spec = ClusterSpec::default_512();
        let gen = Clustered::new(spec);
        let mut data = gen.points(o.rows, 0);
        scale_norms(&mut data, spec.dims, o.norms, 0x5ca1e);
        let queries = gen.points(o.queries, 1);
        let name = format!(
            "synthetic clustered ReLU ({} clusters x {} sub-clusters, sub_spread {}, noise {}, norms {:?}{})",
            spec.clusters,
            spec.subclusters,
            spec.sub_spread,
            spec.noise,
            o.norms,
            if o.ip_legacy { ", legacy ip hashing" } else { "" }
        );
        run_set(&name, data, &queries, spec.dims, o.metric, &o);
    }
    if o.npy {
        let files = if o.npy_files.is_empty() {
            npy_files()
        } else {
            o.npy_files.clone()
        };
        if files.is_empty() {
            println!("\n(no .cache/emb/*.npy files: real-embedding study skipped)");
        }
        for f in files {
            match read_npy(&f) {
                Ok((mut v, n, d)) => {
                    if n < 100 {
                        println!("\n{}: only {n} rows, skipped", f.display());
                        continue;
                    }
                    let n = n.min(o.max_rows + o.queries);
                    v.truncate(n * d);
                    // Queries: every (n / q)-th row, removed from the data.
                    let nq = o.queries.min(n / 10);
                    let step = n / nq;
                    let mut data = Vec::with_capacity(n * d);
                    let mut queries = Vec::with_capacity(nq * d);
                    for (i, row) in v.chunks_exact(d).enumerate() {
                        if i % step == 0 && queries.len() < nq * d {
                            queries.extend_from_slice(row);
                        } else {
                            data.extend_from_slice(row);
                        }
                    }
                    drop(v);
                    run_set(
                        &f.display().to_string(),
                        data,
                        &queries,
                        d,
                        Metric::Cosine,
                        &o,
                    );
                }
                Err(e) => println!("\n{}: {e}, skipped", f.display()),
            }
        }
    }
    println!("\ntotal time {:.0} s", t0.elapsed().as_secs_f64());
}
