//! Issue 10: how much of a one-table index must a sketch scan read? With learned partition planes
//! (`imgsim_algo::partition`), the superbuckets nearest the query come first; this prints recall@10
//! against the share of rows read (`scan_fraction`) and the rerank budget, in memory, one thread, with
//! the model the server builds for that size (one table, `suggested_bits`, `suggested_sketch_bits`,
//! learned planes, `auto::dir_bits` superbuckets) through `MemIndex::search`, the server's twin.
//!
//! Run: `cargo bench -p imgsim-algo --bench scan_fraction -- [--npy BASE] [--query-npy Q]
//! [--queries 200] [--holdout Q] [--metric cosine|l2]` (paths absolute: the bench runs in src/algo;
//! default: `.cache/data/images/{base,queries}.npy`; `--holdout Q`: the last Q rows of the base are
//! the queries, e.g. GloVe: `--npy $PWD/.cache/data/glove/glove_6B_50d_emb.npy --holdout 200`).

use imgsim_algo::lsh::{
    exact_knn, recall, LshModel, LshParams, MemIndex, Metric, ScanMode, SearchParams,
};
use std::time::Instant;

#[path = "npy.rs"]
mod npy;
#[path = "vectors_cli.rs"]
mod vectors_cli;
use vectors_cli::{arg, base_and_queries};

const K: usize = 10;

fn main() {
    let nq: usize = arg("--queries").map_or(200, |s| s.parse().expect("--queries"));
    let metric = match arg("--metric").as_deref() {
        Some("l2") => Metric::L2,
        _ => Metric::Cosine,
    };
    let (data, n, dims, qdata, qn) = base_and_queries();
    let nq = nq.min(qn);
    let sketch_bits = LshParams::suggested_sketch_bits(dims as u32);
    let params = LshParams {
        bits: LshParams::suggested_bits(n as u64),
        tables: LshParams::suggested_tables(n as u64, sketch_bits),
        sketch_bits,
        ..LshParams::recommended(dims as u32, metric)
    };
    let t = Instant::now();
    let mut sample: Vec<f32> = imgsim_algo::partition::sample_positions(n, dims)
        .flat_map(|r| data[r * dims..(r + 1) * dims].iter().copied())
        .collect();
    let rows_sampled = sample.len() / dims;
    let fitted = LshModel::new(params, vec![0.0; dims])
        .and_then(|m| m.learn_partition(&mut sample, n, &mut || {}))
        .expect("fit");
    println!(
        "learned planes fitted in {:.2} s ({} sample rows, {} planes)",
        t.elapsed().as_secs_f64(),
        rows_sampled,
        fitted.learned().map_or(0, |l| l.count())
    );
    let t = Instant::now();
    let idx = MemIndex::build(params, &data).expect("build");
    println!(
        "{n} rows x {dims} dims, {nq} queries, {:?}: bits {} tables {} sketch {} learned {} (built in {:.1} s)",
        metric,
        params.bits,
        params.tables,
        sketch_bits,
        idx.model().learned().map_or(0, |l| l.count()),
        t.elapsed().as_secs_f64()
    );
    let queries: Vec<&[f32]> = qdata.chunks_exact(dims).take(nq).collect();
    let truth: Vec<_> = queries
        .iter()
        .map(|q| exact_knn(&data, dims, q, K, metric))
        .collect();
    println!("fraction  rerank  recall@10  rows read  ms/query (in memory)");
    for fraction in [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 1.0] {
        for rerank in [200usize, 300, 500] {
            let sp = SearchParams {
                k: K,
                max_candidates: 0,
                max_probes: 0,
                rerank,
                mode: ScanMode::Sketches,
                scan_fraction: fraction,
            };
            let t = Instant::now();
            let (mut rec, mut read) = (0.0, 0usize);
            for (q, tr) in queries.iter().zip(&truth) {
                let r = idx.search(q, &sp).expect("search");
                rec += recall(&r.neighbors, tr);
                read += r.entries;
            }
            println!(
                "{fraction:>8}  {rerank:>6}  {:>9.3}  {:>9}  {:>8.2}",
                rec / nq as f64,
                read / nq,
                t.elapsed().as_secs_f64() * 1e3 / nq as f64
            );
        }
    }
}
