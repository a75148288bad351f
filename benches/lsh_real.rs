//! Issue 10 study: "lsh on real data: reach recall@10 0.99". One thread, in memory, on GloVe 6B 50-d
//! (400,000 × 50 f32, cosine; `scripts/get_glove.sh` fetches it into `.cache/data/glove/`).
//!
//! 200 rows (fixed seed) are held out as queries and removed from the base; ground truth by
//! `exact_knn` (cosine). Measured, as recall@10 vs ms/query with the work per query:
//! * `exact`  — the f32 cosine scan of every row (the ground truth's own time);
//! * `lsh`    — the current `MemIndex` (buckets, multi-probe, 512-bit sketch, rerank);
//! * `sign`   — full scan of sign codes (128/256/512 bits; thresholds 0, mean, median), top-R by
//!   Hamming distance, exact rerank of R;
//! * `rabitq` — full scan of RaBitQ-style codes (1 bit × 64..512 rotated dims, 2/4/8 bits × 64 or
//!   128 dims), top-R by estimated distance, exact rerank of R; and the bound-driven
//!   variant (`bound`: rerank in order of the lower bound until it exceeds the current
//!   10th exact distance);
//! * `bucket` — the lsh buckets for candidate generation, ranked by an estimator, exact rerank.
//!
//! Run: `scripts/get_glove.sh && cargo bench -p imgsim-algo --bench lsh_real` (about 4 minutes on
//! one busy core). Options (after `--`): `--npy FILE`, `--queries Q` (200), `--max-rows N` (all),
//! `--only lsh,sign,rabitq,bucket` (sections; exact always runs), `--seed S` (query choice).

use imgsim_algo::distance;
use imgsim_algo::estimator::{
    hamming_scan, hamming_scan_kernel, truncate_codes, RabitqCodes, RabitqEncoder, SignEncoder,
    Threshold,
};
use imgsim_algo::lsh::{
    exact_knn, recall, LshParams, MemIndex, Metric, Neighbor, ScanMode, SearchParams,
};
use imgsim_algo::topk::{f32_key, TopK};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "npy.rs"]
mod npy;
use npy::read_npy;

const K: usize = 10;
const BLOCK: usize = 4096;
const RERANKS: [usize; 4] = [200, 500, 1000, 2000];

struct Opts {
    npy: PathBuf,
    queries: usize,
    max_rows: usize,
    only: Vec<String>,
    rabitq: Vec<String>,
    seed: u64,
}

fn parse() -> Opts {
    let mut o = Opts {
        npy: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.cache/data/glove/glove_6B_50d_emb.npy"),
        queries: 200,
        max_rows: usize::MAX,
        only: vec![],
        rabitq: vec![],
        seed: 10,
    };
    let a: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < a.len() {
        let val = |i: usize| a.get(i + 1).cloned().unwrap_or_default();
        match a[i].as_str() {
            "--npy" => {
                o.npy = PathBuf::from(val(i));
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
            "--seed" => {
                o.seed = val(i).parse().expect("--seed S");
                i += 1;
            }
            "--rabitq" => {
                o.rabitq = val(i).split(',').map(String::from).collect();
                i += 1;
            }
            "--only" => {
                o.only = val(i).split(',').map(String::from).collect();
                i += 1;
            }
            _ => {} // --bench from cargo
        }
        i += 1;
    }
    o
}

struct Set {
    dims: usize,
    base: Vec<f32>,
    /// Base rows scaled to unit length (what the encoders see).
    unit: Vec<f32>,
    queries: Vec<f32>,
    qunit: Vec<f32>,
    truth: Vec<Vec<Neighbor>>,
}

impl Set {
    fn rows(&self) -> usize {
        self.base.len() / self.dims
    }
    fn row(&self, id: u32) -> &[f32] {
        &self.base[id as usize * self.dims..(id as usize + 1) * self.dims]
    }
    fn nq(&self) -> usize {
        self.truth.len()
    }
    fn query(&self, i: usize) -> (&[f32], &[f32]) {
        let d = self.dims;
        (
            &self.queries[i * d..(i + 1) * d],
            &self.qunit[i * d..(i + 1) * d],
        )
    }

    /// Exact cosine rerank of `ids`, top K.
    fn rerank(&self, q: &[f32], ids: impl Iterator<Item = u32>) -> Vec<Neighbor> {
        let mut v: Vec<Neighbor> = ids
            .map(|id| Neighbor {
                id,
                distance: distance::cosine_distance(q, self.row(id)),
            })
            .collect();
        top_k(&mut v);
        v
    }
}

fn top_k(v: &mut Vec<Neighbor>) {
    let cmp = |a: &Neighbor, b: &Neighbor| a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id));
    if v.len() > K {
        v.select_nth_unstable_by(K - 1, cmp);
        v.truncate(K);
    }
    v.sort_by(cmp);
}

fn unit_rows(v: &[f32], d: usize) -> Vec<f32> {
    let mut u = v.to_vec();
    for r in u.chunks_exact_mut(d) {
        distance::normalize(r);
    }
    u
}

/// Accumulates one configuration's measurements over the queries.
#[derive(Default)]
struct Acc {
    recall: f64,
    secs: f64,
    scored: f64,
    reranked: f64,
}

fn header(title: &str) {
    println!("\n--- {title} ---");
    println!(
        "{:<34} {:>9} {:>9} {:>10} {:>9} {:>11} {:>10}",
        "scheme", "bytes/row", "R/budget", "recall@10", "ms/query", "scored/q", "reranked/q"
    );
}

fn line(name: &str, bytes: usize, budget: &str, a: &Acc, nq: usize) {
    let n = nq as f64;
    println!(
        "{:<34} {:>9} {:>9} {:>10.4} {:>9.3} {:>11.0} {:>10.0}",
        name,
        bytes,
        budget,
        a.recall / n,
        a.secs * 1e3 / n,
        a.scored / n,
        a.reranked / n
    );
}

// ---------------------------------------------------------------------------------------------

fn section_lsh(s: &Set) -> MemIndex {
    let dims = s.dims as u32;
    let rows = s.rows();
    header("current lsh MemIndex (buckets + multi-probe + sign sketch + rerank)");
    let mut p = LshParams::recommended(dims, Metric::Cosine);
    p.bits = LshParams::suggested_bits(rows as u64);
    let t = Instant::now();
    let big = MemIndex::build(p, &s.base).expect("build");
    println!(
        "(built {} bits x {} tables, sketch {} in {:.1} s; variants by MemIndex::truncated)",
        p.bits,
        p.tables,
        p.sketch_bits,
        t.elapsed().as_secs_f64()
    );
    let rec = LshParams::recommended(dims, Metric::Cosine);
    let idx12 = big
        .truncated(rec.bits, rec.tables, rec.sketch_bits)
        .expect("truncate");
    let run = |idx: &MemIndex, sp: SearchParams| {
        let mut a = Acc::default();
        for i in 0..s.nq() {
            let (q, _) = s.query(i);
            let t = Instant::now();
            let r = idx.search(q, &sp).expect("search");
            a.secs += t.elapsed().as_secs_f64();
            a.recall += recall(&r.neighbors, &s.truth[i]);
            a.scored += r.candidates as f64;
            a.reranked += r.reranked as f64;
        }
        a
    };
    let bytes = 4 * p.tables as usize + p.sketch_bits as usize / 8;
    let cfgs: Vec<(&str, &MemIndex, u32, SearchParams)> = vec![
        (
            "lsh 12b recommended()",
            &idx12,
            rec.bits,
            SearchParams::recommended(K),
        ),
        (
            "lsh 12b for_rows(400k)",
            &idx12,
            rec.bits,
            SearchParams::for_rows(rows as u64, K),
        ),
        (
            "lsh 14b recommended()",
            &big,
            p.bits,
            SearchParams::recommended(K),
        ),
        (
            "lsh 14b for_rows(400k)",
            &big,
            p.bits,
            SearchParams::for_rows(rows as u64, K),
        ),
    ];
    for (name, idx, _, sp) in cfgs {
        let a = run(idx, sp);
        line(name, bytes, &format!("{}c", sp.max_candidates), &a, s.nq());
    }
    // max_probes: unlimited, or the for_rows() rule max(1000, max_candidates / 8).
    for (mc, rr, capped) in [
        (20_000, 1000, false),
        (50_000, 2000, false),
        (100_000, 2000, false),
        (100_000, 8000, false),
        (100_000, 8000, true),
        (200_000, 2000, false),
    ] {
        let sp = SearchParams {
            k: K,
            max_candidates: mc,
            max_probes: if capped {
                (mc / 8).max(1000)
            } else {
                usize::MAX
            },
            rerank: rr,
            mode: ScanMode::Buckets,
            scan_fraction: 1.0,
        };
        for (name, idx) in [("12b", &idx12), ("14b", &big)] {
            let a = run(idx, sp);
            let cap = if capped {
                format!(" probes<={}", sp.max_probes)
            } else {
                String::new()
            };
            line(
                &format!("lsh {name} rerank {rr}{cap}"),
                bytes,
                &format!("{mc}c"),
                &a,
                s.nq(),
            );
        }
    }
    idx12
}

// ---------------------------------------------------------------------------------------------

/// Full Hamming scan + top-R + exact rerank for every R; returns (recall, time) rows.
fn sign_scan(s: &Set, enc: &SignEncoder, codes: &[u64], name: &str) {
    let w = enc.words();
    let mut qc = vec![0u64; w];
    let mut buf = vec![0u32; BLOCK];
    for &r in &RERANKS {
        let mut a = Acc::default();
        let mut top = TopK::new(r);
        for i in 0..s.nq() {
            let (q, qu) = s.query(i);
            let t = Instant::now();
            enc.encode(qu, &mut qc);
            top.clear();
            for (b, chunk) in codes.chunks(BLOCK * w).enumerate() {
                let out = &mut buf[..chunk.len() / w];
                hamming_scan(&qc, chunk, out);
                top.push_block(out, (b * BLOCK) as u32);
            }
            let got = s.rerank(q, top.ids());
            a.secs += t.elapsed().as_secs_f64();
            a.recall += recall(&got, &s.truth[i]);
            a.scored += s.rows() as f64;
            a.reranked += top.len() as f64;
        }
        line(name, w * 8, &r.to_string(), &a, s.nq());
    }
}

fn section_sign(s: &Set) -> (SignEncoder, Vec<u64>) {
    header(&format!(
        "sign codes, full Hamming scan (kernel: {}), top-R, exact rerank",
        hamming_scan_kernel()
    ));
    let d = s.dims;
    let sample: Vec<f32> = s
        .unit
        .chunks_exact(d)
        .step_by(20)
        .flatten()
        .copied()
        .collect();
    let t = Instant::now();
    let kinds = [Threshold::Zero, Threshold::Mean, Threshold::Median];
    let encs: Vec<SignEncoder> = kinds
        .iter()
        .map(|&k| SignEncoder::train(d, 512, 0x5167, k, &sample))
        .collect();
    // One projection pass, packed three ways.
    let mut codes: Vec<Vec<u64>> = vec![vec![0u64; s.rows() * 8]; 3];
    let mut proj = vec![0.0f32; 512];
    for (r, row) in s.unit.chunks_exact(d).enumerate() {
        encs[0].project(row, &mut proj);
        for (e, c) in encs.iter().zip(codes.iter_mut()) {
            e.pack(&proj, &mut c[r * 8..(r + 1) * 8]);
        }
    }
    println!(
        "(encoded {} rows x 512 bits, 3 threshold kinds, in {:.1} s; sample {} rows)",
        s.rows(),
        t.elapsed().as_secs_f64(),
        sample.len() / d
    );
    // Hamming kernel alone: 256 bits over all rows.
    {
        let c4 = truncate_codes(&codes[2], 8, 4);
        let mut out = vec![0u32; s.rows()];
        let t = Instant::now();
        let reps = 20;
        for i in 0..reps {
            hamming_scan(&c4[i * 4..i * 4 + 4], &c4, &mut out);
        }
        println!(
            "(hamming_scan kernel alone, 256 bits x {} rows: {:.3} ms)",
            s.rows(),
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    }
    for bits in [128usize, 256, 512] {
        for (k, (e, c)) in kinds.iter().zip(encs.iter().zip(&codes)) {
            let enc = e.truncated(bits);
            let cc = truncate_codes(c, 8, bits / 64);
            sign_scan(s, &enc, &cc, &format!("sign {bits}b {k:?}"));
        }
    }
    (encs[2].truncated(256), truncate_codes(&codes[2], 8, 4))
}

// ---------------------------------------------------------------------------------------------

/// Scans every code in blocks (estimated distances, or their lower bounds) into `top` (cleared first).
fn scan_into_top(
    codes: &RabitqCodes,
    lut: &imgsim_algo::estimator::QueryLut,
    lower_bounds: bool,
    top: &mut TopK,
    buf: &mut [f32],
    keys: &mut [u32],
) {
    top.clear();
    let mut start = 0;
    while start < codes.len() {
        let n = BLOCK.min(codes.len() - start);
        if lower_bounds {
            codes.scan_lower_bounds(lut, start, &mut buf[..n]);
        } else {
            codes.scan(lut, start, &mut buf[..n]);
        }
        for (k, &x) in keys.iter_mut().zip(&buf[..n]) {
            *k = f32_key(x);
        }
        top.push_block(&keys[..n], start as u32);
        start += n;
    }
}

fn rabitq_scan(s: &Set, enc: &RabitqEncoder, codes: &RabitqCodes, name: &str) {
    let bytes = codes.bytes + 12;
    let mut buf = vec![0.0f32; BLOCK];
    let mut keys = vec![0u32; BLOCK];
    {
        // The estimator kernel alone (query tables + estimates of all rows).
        let mut all = vec![0.0f32; codes.len()];
        let reps = 20;
        let t = Instant::now();
        for i in 0..reps {
            let lut = enc.query(s.query(i).1, 1.9);
            codes.scan(&lut, 0, &mut all);
        }
        println!(
            "({name}: estimator scan alone {:.3} ms/query)",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    }
    for &r in &RERANKS {
        let mut a = Acc::default();
        let mut top = TopK::new(r);
        for i in 0..s.nq() {
            let (q, qu) = s.query(i);
            let t = Instant::now();
            let lut = enc.query(qu, 1.9);
            scan_into_top(codes, &lut, false, &mut top, &mut buf, &mut keys);
            let got = s.rerank(q, top.ids());
            a.secs += t.elapsed().as_secs_f64();
            a.recall += recall(&got, &s.truth[i]);
            a.scored += codes.len() as f64;
            a.reranked += top.len() as f64;
        }
        line(name, bytes, &r.to_string(), &a, s.nq());
    }
    // Bound-driven: keep the best 5000 by lower bound, rerank in lower-bound order until the bound
    // passes the current 10th exact distance (2 × cosine distance = squared distance of units).
    for eps in [1.9f32, 3.0] {
        let mut a = Acc::default();
        let cap = 5000;
        let mut top = TopK::new(cap);
        let mut exhausted = 0;
        for i in 0..s.nq() {
            let (q, qu) = s.query(i);
            let t = Instant::now();
            let lut = enc.query(qu, eps);
            scan_into_top(codes, &lut, true, &mut top, &mut buf, &mut keys);
            let order = top.clone().into_sorted();
            let mut best: Vec<Neighbor> = Vec::with_capacity(K + 1);
            let mut n = 0;
            for (key, id) in order {
                let lb = imgsim_algo::topk::f32_from_key(key);
                if best.len() == K && lb > 2.0 * best[K - 1].distance {
                    break;
                }
                n += 1;
                let dist = distance::cosine_distance(q, s.row(id));
                best.push(Neighbor { id, distance: dist });
                best.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.id.cmp(&b.id)));
                best.truncate(K);
            }
            if n == cap {
                exhausted += 1;
            }
            a.secs += t.elapsed().as_secs_f64();
            a.recall += recall(&best, &s.truth[i]);
            a.scored += codes.len() as f64;
            a.reranked += n as f64;
        }
        line(
            &format!("{name} bound e0={eps}"),
            bytes,
            if exhausted > 0 { "cap!" } else { "bound" },
            &a,
            s.nq(),
        );
    }
}

fn section_rabitq(s: &Set, o: &Opts) -> Option<(RabitqEncoder, RabitqCodes)> {
    header("RaBitQ-style codes (bytes/row = code + 12 B of f32 factors), full scan, exact rerank");
    let d = s.dims;
    let sample: Vec<f32> = s.unit.clone();
    let mut keep = None;
    for (pad, bits) in [
        (64, 1),
        (128, 1),
        (64, 2),
        (256, 1),
        (128, 2),
        (64, 4),
        (512, 1),
        (128, 4),
        (64, 8),
    ] {
        if !o.rabitq.is_empty() && !o.rabitq.contains(&format!("{pad}x{bits}")) {
            continue;
        }
        let t = Instant::now();
        let enc = RabitqEncoder::train(d, pad, bits, 0xab17 + pad as u64, &sample);
        let codes = enc.encode_all(&s.unit);
        println!(
            "({pad} dims x {bits} bit: encoded in {:.1} s)",
            t.elapsed().as_secs_f64()
        );
        rabitq_scan(s, &enc, &codes, &format!("rabitq {pad}d x {bits}b"));
        if (pad, bits) == (64, 4) {
            keep = Some((enc, codes));
        }
    }
    keep
}

// ---------------------------------------------------------------------------------------------

fn section_bucket(
    s: &Set,
    idx: &MemIndex,
    sign: &(SignEncoder, Vec<u64>),
    rq: &Option<(RabitqEncoder, RabitqCodes)>,
) {
    let p = *idx.model().params();
    header(&format!(
        "buckets ({} bits x {} tables, multi-probe) for candidates, estimator ranks, exact rerank",
        p.bits, p.tables
    ));
    let tables = p.tables as usize;
    let mut buckets: Vec<HashMap<u32, Vec<u32>>> = vec![HashMap::new(); tables];
    for r in 0..s.rows() as u32 {
        for (t, b) in buckets.iter_mut().enumerate() {
            b.entry(idx.row_codes(r)[t]).or_default().push(r);
        }
    }
    let (senc, scodes) = sign;
    let w = senc.words();
    let mut seen = vec![0u64; s.rows().div_ceil(64)];
    for ranker in ["sign256-median", "rabitq64x4"] {
        if ranker.starts_with("rabitq") && rq.is_none() {
            continue;
        }
        for mc in [4000usize, 20_000, 50_000, 100_000, 200_000] {
            for r in [1000usize, 2000] {
                let mut a = Acc::default();
                let mut qc = vec![0u64; w];
                for i in 0..s.nq() {
                    let (q, qu) = s.query(i);
                    let t = Instant::now();
                    let qh = idx.model().query(q).expect("query");
                    seen.fill(0);
                    let mut cands: Vec<u32> = Vec::with_capacity(mc);
                    for probe in qh.probes() {
                        if let Some(ids) = buckets[probe.table as usize].get(&probe.code) {
                            for &id in ids {
                                let (wd, b) = (id as usize / 64, id % 64);
                                if seen[wd] & (1u64 << b) == 0 {
                                    seen[wd] |= 1u64 << b;
                                    cands.push(id);
                                }
                            }
                        }
                        if cands.len() >= mc {
                            break;
                        }
                    }
                    let mut top = TopK::new(r);
                    if ranker.starts_with("sign") {
                        senc.encode(qu, &mut qc);
                        for &id in &cands {
                            let c = &scodes[id as usize * w..(id as usize + 1) * w];
                            top.push(distance::hamming(&qc, c), id);
                        }
                    } else if let Some((enc, codes)) = rq {
                        let lut = enc.query(qu, 1.9);
                        for &id in &cands {
                            top.push(f32_key(codes.estimate(&lut, id as usize).0), id);
                        }
                    }
                    let got = s.rerank(q, top.ids());
                    a.secs += t.elapsed().as_secs_f64();
                    a.recall += recall(&got, &s.truth[i]);
                    a.scored += cands.len() as f64;
                    a.reranked += top.len() as f64;
                }
                line(
                    &format!("bucket -> {ranker}"),
                    4 * tables
                        + if ranker.starts_with("sign") {
                            w * 8
                        } else {
                            44
                        },
                    &format!("{mc}c/{r}"),
                    &a,
                    s.nq(),
                );
            }
        }
    }
}

fn main() {
    let o = parse();
    let t0 = Instant::now();
    let (mut all, n, d) = read_npy(&o.npy)
        .unwrap_or_else(|e| panic!("{e}\n(run scripts/get_glove.sh first, or pass --npy FILE)"));
    let n = n.min(o.max_rows.saturating_add(o.queries));
    all.truncate(n * d);
    // Hold out `queries` random rows (fixed seed).
    let mut ids: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(o.seed);
    for i in 0..o.queries {
        let j = rng.random_range(i..n);
        ids.swap(i, j);
    }
    let mut is_q = vec![false; n];
    let mut queries = Vec::with_capacity(o.queries * d);
    for &i in &ids[..o.queries] {
        is_q[i] = true;
        queries.extend_from_slice(&all[i * d..(i + 1) * d]);
    }
    let base: Vec<f32> = all
        .chunks_exact(d)
        .zip(&is_q)
        .filter(|(_, q)| !**q)
        .flat_map(|(r, _)| r.iter().copied())
        .collect();
    drop(all);
    let rows = base.len() / d;
    let norms: Vec<f32> = base.chunks_exact(d).map(distance::norm).collect();
    let (mn, mx) = norms
        .iter()
        .fold((f32::MAX, 0.0f32), |(a, b), &x| (a.min(x), b.max(x)));
    println!(
        "=== {}: {rows} rows x {d}-d (norms {mn:.2} .. {mx:.2}), {} held-out queries, cosine, recall@{K} ===",
        o.npy.display(),
        o.queries
    );
    let t = Instant::now();
    let truth: Vec<Vec<Neighbor>> = queries
        .chunks_exact(d)
        .map(|q| exact_knn(&base, d, q, K, Metric::Cosine))
        .collect();
    let exact_ms = t.elapsed().as_secs_f64() * 1e3 / o.queries as f64;
    println!(
        "exact f32 cosine scan of all rows (exact_knn): {exact_ms:.2} ms/query, {} bytes/row",
        d * 4
    );
    let s = Set {
        dims: d,
        unit: unit_rows(&base, d),
        qunit: unit_rows(&queries, d),
        base,
        queries,
        truth,
    };
    let want = |x: &str| o.only.is_empty() || o.only.iter().any(|y| y == x);
    let idx = if want("lsh") || want("bucket") {
        Some(section_lsh(&s))
    } else {
        None
    };
    let sign = if want("sign") || want("bucket") {
        Some(section_sign(&s))
    } else {
        None
    };
    let rq = if want("rabitq") {
        section_rabitq(&s, &o)
    } else {
        None
    };
    if want("bucket") {
        let rq = rq.or_else(|| {
            let enc = RabitqEncoder::train(d, 64, 4, 0xab17 + 64, &s.unit);
            let codes = enc.encode_all(&s.unit);
            Some((enc, codes))
        });
        if let (Some(idx), Some(sign)) = (&idx, &sign) {
            section_bucket(&s, idx, sign, &rq);
        }
    }
    println!("\n(total {:.0} s)", t0.elapsed().as_secs_f64());
}
