use super::*;
use crate::synth::{ClusterSpec, Clustered};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashSet;

fn params(dims: u32, bits: u32, tables: u32, sketch_bits: u32, metric: Metric) -> LshParams {
    LshParams {
        dims,
        bits,
        tables,
        sketch_bits,
        seed: 7,
        metric,
        max_norm: 0.0,
    }
}

fn random_rows(n: usize, dims: usize, seed: u64) -> Vec<f32> {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    (0..n * dims)
        .map(|_| r.random_range(-1.0f32..1.0))
        .collect()
}

#[test]
fn params_validate_and_round_trip() {
    let p = LshParams::recommended(512, Metric::Cosine);
    p.validate().unwrap();
    let b = p.to_bytes();
    assert_eq!(b.len(), LshParams::ENCODED_LEN);
    assert_eq!(LshParams::from_bytes(&b).unwrap(), p);
    // Layout is fixed little-endian.
    assert_eq!(&b[0..4], &512u32.to_le_bytes());
    assert_eq!(b[24], 1);
    assert_eq!(b[25], PLANES_VERSION);

    for bad in [
        LshParams { dims: 0, ..p },
        LshParams { bits: 0, ..p },
        LshParams { bits: 33, ..p },
        LshParams { tables: 0, ..p },
        LshParams {
            sketch_bits: 100,
            ..p
        },
        LshParams {
            sketch_bits: 0,
            ..p
        },
    ] {
        assert!(matches!(bad.validate(), Err(LshError::InvalidParams(_))));
    }
    assert!(LshParams::from_bytes(&b[..31]).is_err());
    let mut wrong_metric = b;
    wrong_metric[24] = 9;
    assert!(LshParams::from_bytes(&wrong_metric).is_err());
    let mut wrong_version = b;
    wrong_version[25] = 0;
    assert!(LshParams::from_bytes(&wrong_version).is_err());
    for m in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
        assert_eq!(Metric::from_u8(m.to_u8()), Some(m));
    }
}

#[test]
fn suggested_bits_scale_with_rows() {
    assert_eq!(LshParams::suggested_bits(100), 6);
    assert_eq!(LshParams::suggested_bits(100_000), 12);
    assert_eq!(LshParams::suggested_bits(1_000_000), 15);
    assert_eq!(LshParams::suggested_bits(100_000_000), 16);
}

#[test]
fn planes_are_deterministic_unit_and_seed_dependent() {
    let p = params(33, 6, 3, 128, Metric::L2);
    let a = Planes::generate(&p);
    let b = Planes::generate(&p);
    assert_eq!(a, b);
    for t in 0..3 {
        for i in 0..6 {
            let n = distance::norm(a.table_plane(t, i));
            assert!((n - 1.0).abs() < 1e-5);
        }
    }
    assert!((distance::norm(a.sketch_plane(127)) - 1.0).abs() < 1e-5);
    let c = Planes::generate(&LshParams { seed: 8, ..p });
    assert_ne!(a.table_planes(), c.table_planes());
    assert_ne!(a.sketch_planes(), c.sketch_planes());
    // Tables are different streams, not copies.
    assert_ne!(a.table_plane(0, 0), a.table_plane(1, 0));
}

#[test]
fn planes_of_smaller_params_are_prefixes() {
    let big = Planes::generate(&params(20, 10, 5, 256, Metric::L2));
    let small = Planes::generate(&params(20, 4, 2, 64, Metric::Cosine));
    for t in 0..2 {
        for i in 0..4 {
            assert_eq!(small.table_plane(t, i), big.table_plane(t, i));
        }
    }
    assert_eq!(small.sketch_planes(), &big.sketch_planes()[..64 * 20]);
}

/// Pins the generator: if a dependency update (rand, rand_core, rand_chacha, rand_distr) changes the
/// Gaussian stream, every existing index would silently hash queries differently from its rows.
#[test]
fn golden_plane_values() {
    let p = LshParams {
        dims: 4,
        bits: 2,
        tables: 2,
        sketch_bits: 64,
        seed: 42,
        metric: Metric::L2,
        max_norm: 0.0,
    };
    let planes = Planes::generate(&p);
    let got = [
        planes.table_plane(0, 0).to_vec(),
        planes.table_plane(0, 1).to_vec(),
        planes.table_plane(1, 0).to_vec(),
        planes.sketch_plane(0).to_vec(),
        planes.sketch_plane(63).to_vec(),
    ];
    let want: [[f32; 4]; 5] = GOLDEN;
    for (g, w) in got.iter().zip(want.iter()) {
        for (x, y) in g.iter().zip(w.iter()) {
            assert!(
                (x - y).abs() < 1e-6,
                "plane value {x} != golden {y}: {got:?}"
            );
        }
    }
}

const GOLDEN: [[f32; 4]; 5] = [
    [0.0017227989, 0.36141232, 0.19863473, 0.9110008],
    [0.7211774, -0.19143716, 0.516989, 0.41949663],
    [-0.45769423, -0.36678758, 0.7381438, -0.33335647],
    [-0.73035306, -0.5532653, 0.37224117, 0.14804892],
    [-0.3629655, -0.28730386, -0.8622341, 0.2055842],
];

#[test]
fn mean_accumulator_normalises_for_cosine() {
    let mut acc = MeanAccumulator::new(2, Metric::Cosine);
    acc.add(&[3.0, 4.0]).unwrap();
    acc.add(&[0.0, 10.0]).unwrap();
    acc.add(&[0.0, 0.0]).unwrap(); // skipped
    assert_eq!(acc.count(), 2);
    let m = acc.finish();
    assert!(
        (m[0] - 0.3).abs() < 1e-6 && (m[1] - 0.9).abs() < 1e-6,
        "{m:?}"
    );

    let mut l2 = MeanAccumulator::new(2, Metric::L2);
    l2.add(&[3.0, 4.0]).unwrap();
    let mut other = MeanAccumulator::new(2, Metric::L2);
    other.add(&[1.0, 0.0]).unwrap();
    other.add(&[2.0, 2.0]).unwrap();
    l2.merge(&other);
    assert_eq!(l2.finish(), vec![2.0, 2.0]);
    assert!(l2.add(&[1.0]).is_err());
}

#[test]
fn hash_and_query_agree_and_codes_fit_bits() {
    let dims = 24;
    let rows = random_rows(50, dims, 3);
    for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
        let p = params(dims as u32, 5, 4, 128, metric);
        let model = LshModel::new(p, vec![0.1; dims]).unwrap();
        for r in rows.chunks_exact(dims) {
            let h = model.hash(r).unwrap();
            let q = model.query(r).unwrap();
            assert_eq!(h.codes, q.codes);
            assert_eq!(h.sketch, q.sketch);
            assert!(h.codes.iter().all(|&c| c < 32));
            assert_eq!(h.sketch.len(), 2);
            // Projections' signs are the code bits.
            for t in 0..4 {
                for i in 0..5 {
                    let bit = (q.codes[t] >> i) & 1 == 1;
                    assert_eq!(bit, q.projections[t * 5 + i] > 0.0);
                }
            }
            let bytes = h.to_bytes();
            assert_eq!(bytes.len(), 4 * 4 + 2 * 8);
            assert_eq!(RowHash::from_bytes(&bytes, 4, 2).unwrap(), h);
        }
    }
    let model = LshModel::new(params(3, 2, 1, 64, Metric::L2), vec![0.0; 3]).unwrap();
    assert!(matches!(
        model.hash(&[1.0, 2.0]),
        Err(LshError::DimensionMismatch {
            expected: 3,
            got: 2
        })
    ));
    assert!(LshModel::new(params(3, 2, 1, 64, Metric::L2), vec![0.0; 2]).is_err());
}

#[test]
fn cosine_hash_ignores_scale() {
    let dims = 16;
    let rows = random_rows(20, dims, 5);
    let model = LshModel::new(
        params(dims as u32, 8, 3, 64, Metric::Cosine),
        vec![0.05; dims],
    )
    .unwrap();
    for r in rows.chunks_exact(dims) {
        let scaled: Vec<f32> = r.iter().map(|x| x * 4.0).collect();
        assert_eq!(model.hash(r).unwrap(), model.hash(&scaled).unwrap());
    }
}

#[test]
fn byte_helpers_round_trip() {
    let v = vec![1.5f32, -0.0, f32::MAX, 3.25e-7];
    let b = f32s_to_le_bytes(&v);
    assert_eq!(&b[0..4], &1.5f32.to_le_bytes());
    assert_eq!(f32s_from_le_bytes(&b).unwrap(), v);
    assert!(f32s_from_le_bytes(&b[..5]).is_err());
    let w = vec![1u64, u64::MAX, 0x0123_4567_89ab_cdef];
    assert_eq!(u64s_from_le_bytes(&u64s_to_le_bytes(&w)).unwrap(), w);
    assert!(u64s_from_le_bytes(&[0u8; 9]).is_err());
}

fn brute_score(code: u32, home: u32, proj: &[f32]) -> f64 {
    let flip = code ^ home;
    (0..proj.len())
        .filter(|i| flip >> i & 1 == 1)
        .map(|i| f64::from(proj[i]) * f64::from(proj[i]))
        .sum()
}

#[test]
fn probe_sequence_is_sorted_complete_and_unique() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(bits, tables) in &[(1u32, 1usize), (3, 2), (5, 4), (8, 3)] {
        let k = bits as usize;
        let proj: Vec<f32> = (0..tables * k)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect();
        let codes: Vec<u32> = (0..tables)
            .map(|t| {
                (0..k).fold(
                    0u32,
                    |c, i| {
                        if proj[t * k + i] > 0.0 {
                            c | 1 << i
                        } else {
                            c
                        }
                    },
                )
            })
            .collect();
        let seq: Vec<Probe> = ProbeSequence::new(&codes, &proj, bits).collect();
        // Complete: every bucket of every table, exactly once.
        assert_eq!(seq.len(), tables << bits);
        let uniq: HashSet<(u32, u32)> = seq.iter().map(|p| (p.table, p.code)).collect();
        assert_eq!(uniq.len(), seq.len());
        // Home buckets first.
        for (t, p) in seq.iter().take(tables).enumerate() {
            assert_eq!((p.table, p.code, p.score), (t as u32, codes[t], 0.0));
        }
        // Scores are right and non-decreasing.
        for w in seq.windows(2) {
            assert!(w[0].score <= w[1].score, "{:?} then {:?}", w[0], w[1]);
        }
        for p in &seq {
            let t = p.table as usize;
            let want = brute_score(p.code, codes[t], &proj[t * k..(t + 1) * k]);
            assert!((p.score - want).abs() <= 1e-9 * want.max(1.0));
        }
        // Same order as a brute-force sort of all buckets by score (up to ties).
        let mut brute: Vec<f64> = (0..tables)
            .flat_map(|t| {
                let p = &proj[t * k..(t + 1) * k];
                let home = codes[t];
                (0..1u32 << bits).map(move |c| brute_score(c, home, p))
            })
            .collect();
        brute.sort_by(f64::total_cmp);
        for (p, b) in seq.iter().zip(&brute) {
            assert!((p.score - b).abs() <= 1e-9 * b.max(1.0));
        }
    }
}

#[test]
fn probe_sequence_handles_32_bits_and_ties() {
    let proj = vec![0.5f32; 32];
    let mut seq = ProbeSequence::new(&[u32::MAX], &proj, 32);
    let first: Vec<Probe> = seq.by_ref().take(2000).collect();
    assert_eq!(first[0].code, u32::MAX);
    // 1 + 32 single flips (score 0.25), then pairs (0.5).
    assert!(first[1..33]
        .iter()
        .all(|p| p.score == 0.25 && p.code.count_ones() == 31));
    assert!(first[33..529]
        .iter()
        .all(|p| p.score == 0.5 && p.code.count_ones() == 30));
    let uniq: HashSet<u32> = first.iter().map(|p| p.code).collect();
    assert_eq!(uniq.len(), first.len());
}

#[test]
fn probe_sequence_from_query_hash() {
    let model = LshModel::new(params(10, 6, 3, 64, Metric::L2), vec![0.0; 10]).unwrap();
    let q = model.query(&random_rows(1, 10, 1)).unwrap();
    let seq: Vec<Probe> = q.probes().collect();
    assert_eq!(seq.len(), 3 * 64);
    assert_eq!(
        seq.iter().take(3).map(|p| p.code).collect::<Vec<_>>(),
        q.codes
    );
}

#[test]
fn truncated_index_equals_fresh_build() {
    let dims = 16;
    let data = random_rows(300, dims, 21);
    let big = MemIndex::build(params(dims as u32, 9, 5, 192, Metric::L2), &data).unwrap();
    let small = big.truncated(6, 3, 64).unwrap();
    let fresh = MemIndex::build(params(dims as u32, 6, 3, 64, Metric::L2), &data).unwrap();
    assert_eq!(small.model().params(), fresh.model().params());
    assert_eq!(small.model().mean(), fresh.model().mean());
    for id in 0..300 {
        assert_eq!(small.row_codes(id), fresh.row_codes(id));
        assert_eq!(small.row_sketch(id), fresh.row_sketch(id));
    }
    assert_eq!(small.bucket_counts(), fresh.bucket_counts());
    assert!(big.truncated(10, 3, 64).is_err());
}

#[test]
fn unlimited_search_is_exact() {
    let dims = 12;
    let data = random_rows(400, dims, 31);
    let queries = random_rows(10, dims, 32);
    for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
        let idx = MemIndex::build(params(dims as u32, 4, 2, 64, metric), &data).unwrap();
        let sp = SearchParams {
            k: 10,
            max_candidates: usize::MAX,
            max_probes: usize::MAX,
            rerank: usize::MAX,
            mode: ScanMode::Buckets,
            scan_fraction: 1.0,
        };
        for q in queries.chunks_exact(dims) {
            let r = idx.search(q, &sp).unwrap();
            assert_eq!(r.candidates, 400);
            assert_eq!(r.probes, 2 * 16);
            assert_eq!(r.neighbors, idx.exact_search(q, 10));
        }
    }
}

#[test]
fn search_respects_limits() {
    let dims = 12;
    let data = random_rows(1000, dims, 41);
    let idx = MemIndex::build(params(dims as u32, 6, 4, 64, Metric::L2), &data).unwrap();
    let q = &random_rows(1, dims, 42);
    let r = idx
        .search(
            q,
            &SearchParams {
                k: 5,
                max_candidates: 100,
                max_probes: 1000,
                rerank: 20,
                mode: ScanMode::Buckets,
                scan_fraction: 1.0,
            },
        )
        .unwrap();
    assert!(
        r.candidates >= 100 && r.candidates < 400,
        "{}",
        r.candidates
    );
    assert_eq!(r.reranked, 20);
    assert_eq!(r.neighbors.len(), 5);
    assert!(r
        .neighbors
        .windows(2)
        .all(|w| w[0].distance <= w[1].distance));
    let r = idx
        .search(
            q,
            &SearchParams {
                k: 5,
                max_candidates: 1000,
                max_probes: 3,
                rerank: 20,
                mode: ScanMode::Buckets,
                scan_fraction: 1.0,
            },
        )
        .unwrap();
    assert_eq!(r.probes, 3);
    let empty = MemIndex::build(params(dims as u32, 6, 4, 64, Metric::L2), &[]).unwrap();
    assert!(empty.is_empty());
    let r = empty.search(q, &SearchParams::recommended(5)).unwrap();
    assert!(r.neighbors.is_empty());
}

/// Real outcome at the recommended plan, scaled down so that it runs in seconds in a debug build:
/// 10k rows × 64-d in 10 clusters × 10 sub-clusters (100 rows per sub-cluster, as in the 100k ×
/// 512-d benchmark set), `suggested_bits(10k)` = 9 bits, 8 tables, 512-bit sketch,
/// `SearchParams::for_rows(10k)`.
#[test]
fn recall_at_10_on_clustered_data() {
    let dims = 64;
    let spec = ClusterSpec {
        dims,
        clusters: 10,
        subclusters: 10,
        ..ClusterSpec::default_512()
    };
    let gen = Clustered::new(spec);
    let rows = 10_000;
    let data = gen.points(rows, 0);
    let queries = gen.points(40, 1);
    let mut p = LshParams::recommended(dims as u32, Metric::L2);
    p.bits = LshParams::suggested_bits(rows as u64);
    assert_eq!(p.bits, 9);
    let idx = MemIndex::build(p, &data).unwrap();
    let auto = SearchParams::for_rows(rows as u64, 10);
    assert_eq!(auto.mode, ScanMode::Sketches);
    // The automatic mode at this size, and bucket probing of this 8-table index with the automatic
    // bucket settings.
    let buckets = SearchParams::auto(p.bits, p.tables, p.sketch_bits, rows as u64, 10);
    let buckets = SearchParams {
        mode: ScanMode::Buckets,
        scan_fraction: 1.0,
        rerank: auto::rerank(rows as f64, ScanMode::Buckets),
        ..buckets
    };
    for sp in [auto, buckets] {
        let (mut total, mut reranked) = (0.0, 0);
        for q in queries.chunks_exact(dims) {
            let r = idx.search(q, &sp).unwrap();
            total += recall(&r.neighbors, &idx.exact_search(q, 10));
            reranked += r.reranked;
        }
        let mean = total / 40.0;
        println!(
            "{:?}: recall@10 = {mean:.3} (10k x 64-d, 40 queries)",
            sp.mode
        );
        assert!(mean >= 0.95, "{:?}: recall@10 = {mean}", sp.mode);
        // Only `rerank` exact distances per query (or every candidate, when fewer), not a scan.
        assert!(reranked <= 40 * sp.rerank, "{reranked} exact distances");
    }
}

/// A sketch scan reranks exactly the `rerank` rows of smallest (Hamming distance, id), whatever the
/// buckets, and is exact when `rerank` covers every row.
#[test]
fn sketch_scan_reranks_the_best_sketches() {
    let dims = 16;
    let data = random_rows(3000, dims, 51);
    let queries = random_rows(8, dims, 52);
    for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
        let idx = MemIndex::build(params(dims as u32, 8, 4, 128, metric), &data).unwrap();
        for q in queries.chunks_exact(dims) {
            let all = SearchParams {
                k: 10,
                max_candidates: 0,
                max_probes: 0,
                rerank: usize::MAX,
                mode: ScanMode::Sketches,
                scan_fraction: 1.0,
            };
            let r = idx.search(q, &all).unwrap();
            assert_eq!((r.candidates, r.reranked, r.probes), (3000, 3000, 0));
            assert_eq!(r.neighbors, idx.exact_search(q, 10));
            // With rerank 50: the exact top-10 of the 50 best by the asymmetric estimate among the
            // 4 × 50 best by (Hamming, id).
            let qh = idx.model().query(q).unwrap();
            let mut keyed: Vec<(u32, u32)> = (0..3000u32)
                .map(|id| (distance::hamming(&qh.sketch, idx.row_sketch(id)), id))
                .collect();
            keyed.sort_unstable();
            let scorer = qh.sketch_scorer();
            let mut rescored: Vec<(u32, u32)> = keyed[..50 * crate::rescore::RESCORE_FACTOR]
                .iter()
                .map(|&(_, id)| (scorer.key(idx.row_sketch(id)), id))
                .collect();
            rescored.sort_unstable();
            let best: Vec<u32> = rescored[..50].iter().map(|k| k.1).collect();
            let mut want: Vec<Neighbor> = best
                .iter()
                .map(|&id| Neighbor {
                    id,
                    distance: metric.distance(q, idx.row(id)),
                })
                .collect();
            sort_neighbors(&mut want);
            want.truncate(10);
            let r = idx.search(q, &SearchParams { rerank: 50, ..all }).unwrap();
            assert_eq!(r.reranked, 50);
            assert_eq!(r.neighbors, want);
        }
    }
}

/// The full-size check (100k × 512, recommended defaults, 100 queries): run with
/// `cargo test --release -p imgsim-algo -- --ignored`.
#[test]
#[ignore = "100k x 512: run with --release -- --ignored"]
fn recall_at_10_full_size() {
    let gen = Clustered::new(ClusterSpec::default_512());
    let data = gen.points(100_000, 0);
    let queries = gen.points(100, 1);
    let idx = MemIndex::build(LshParams::recommended(512, Metric::L2), &data).unwrap();
    let sp = SearchParams::recommended(10);
    let mut total = 0.0;
    for q in queries.chunks_exact(512) {
        let r = idx.search(q, &sp).unwrap();
        total += recall(&r.neighbors, &idx.exact_search(q, 10));
    }
    let mean = total / 100.0;
    println!("recall@10 = {mean:.3} (100k x 512-d, 100 queries)");
    assert!(mean >= 0.95, "recall@10 = {mean}");
}

// ---------------------------------------------------------------------------------------------
// Inner product: norm augmentation
// ---------------------------------------------------------------------------------------------

fn ip_params(dims: u32, max_norm: f32) -> LshParams {
    LshParams {
        max_norm,
        ..params(dims, 6, 3, 128, Metric::InnerProduct)
    }
}

fn angle(a: &[f32], b: &[f32]) -> f64 {
    let c = f64::from(distance::dot(a, b))
        / (f64::from(distance::norm(a)) * f64::from(distance::norm(b)));
    c.clamp(-1.0, 1.0).acos()
}

#[test]
fn augmented_transform_orders_by_inner_product() {
    let dims = 16;
    let mut data = random_rows(300, dims, 51);
    crate::synth::scale_norms(&mut data, dims, crate::synth::NormSpread::LogNormal, 52);
    let m = data
        .chunks_exact(dims)
        .map(distance::norm)
        .fold(0.0f32, f32::max);
    let model = LshModel::new(ip_params(dims as u32, m), vec![0.0; dims + 1]).unwrap();
    let (mut xp, mut qp) = (Vec::new(), Vec::new());
    let rows: Vec<Vec<f32>> = data
        .chunks_exact(dims)
        .map(|x| {
            model.prepare_row_into(x, &mut xp).unwrap();
            assert_eq!(xp.len(), dims + 1);
            // Unit length, and the first dims values are x / M.
            assert!((distance::norm(&xp) - 1.0).abs() < 1e-4, "{xp:?}");
            assert!((xp[0] - x[0] / m).abs() < 1e-6);
            xp.clone()
        })
        .collect();
    for q in random_rows(30, dims, 53).chunks_exact(dims) {
        model.prepare_query_into(q, &mut qp).unwrap();
        assert_eq!(qp.len(), dims + 1);
        assert_eq!(qp[dims], 0.0);
        assert!((distance::norm(&qp) - 1.0).abs() < 1e-5);
        // q'·x' = q·x / (|q| M) for every row, so the orders agree.
        for (x, xp) in data.chunks_exact(dims).zip(&rows) {
            let want = distance::dot(q, x) / (distance::norm(q) * m);
            assert!((distance::dot(&qp, xp) - want).abs() < 1e-4);
        }
        let best_ip = (0..rows.len())
            .max_by(|&a, &b| {
                let d = |i: usize| distance::dot(q, &data[i * dims..(i + 1) * dims]);
                d(a).total_cmp(&d(b))
            })
            .unwrap();
        let best_angle = (0..rows.len())
            .min_by(|&a, &b| angle(&qp, &rows[a]).total_cmp(&angle(&qp, &rows[b])))
            .unwrap();
        assert_eq!(best_ip, best_angle);
    }
    // A row longer than M (inserted after the build): last component 0, still hashed.
    let long: Vec<f32> = data[..dims].iter().map(|x| x * 4.0 * m).collect();
    model.prepare_row_into(&long, &mut xp).unwrap();
    assert_eq!(xp[dims], 0.0);
    assert!(model.hash(&long).is_ok());
    // The longest row is its own query: x' = [x/M, 0] = q', so the codes agree.
    let (i_max, _) = data
        .chunks_exact(dims)
        .enumerate()
        .max_by(|a, b| distance::norm(a.1).total_cmp(&distance::norm(b.1)))
        .unwrap();
    let x = &data[i_max * dims..(i_max + 1) * dims];
    assert_eq!(model.hash(x).unwrap().codes, model.query(x).unwrap().codes);
}

#[test]
fn params_encode_max_norm_and_legacy_decodes_unchanged() {
    let p = ip_params(40, 3.5);
    p.validate().unwrap();
    assert!(p.augmented());
    assert_eq!(p.hash_dims(), 41);
    let b = p.to_bytes();
    assert_eq!(b[25], PLANES_VERSION_AUGMENTED);
    assert_eq!(&b[26..30], &3.5f32.to_le_bytes());
    assert_eq!(&b[30..32], &[0, 0]);
    assert_eq!(LshParams::from_bytes(&b).unwrap(), p);
    // Version and max_norm must agree.
    let mut v1 = b;
    v1[25] = PLANES_VERSION;
    assert!(LshParams::from_bytes(&v1).is_err());

    // An inner-product index written before augmentation: bytes 26..32 zero.
    let legacy = LshParams { max_norm: 0.0, ..p };
    let lb = legacy.to_bytes();
    assert_eq!(lb[25], PLANES_VERSION);
    assert_eq!(&lb[26..32], &[0u8; 6]);
    let mut v2 = lb;
    v2[25] = PLANES_VERSION_AUGMENTED;
    assert!(LshParams::from_bytes(&v2).is_err());
    let mut old = [0u8; 32];
    old[..26].copy_from_slice(&lb[..26]);
    let d = LshParams::from_bytes(&old).unwrap();
    assert_eq!(d, legacy);
    assert!(!d.augmented());
    assert_eq!(d.hash_dims(), 40);
    // Legacy inner product hashes exactly as cosine (same planes, normalised rows and queries).
    let mean = vec![0.02; 40];
    let ip = LshModel::new(d, mean.clone()).unwrap();
    let cos = LshModel::new(
        LshParams {
            metric: Metric::Cosine,
            ..d
        },
        mean,
    )
    .unwrap();
    assert_eq!(ip.planes(), cos.planes());
    for r in random_rows(20, 40, 61).chunks_exact(40) {
        let scaled: Vec<f32> = r.iter().map(|x| x * 3.0).collect();
        assert_eq!(ip.hash(&scaled).unwrap(), cos.hash(r).unwrap());
        assert_eq!(ip.query(r).unwrap().codes, cos.query(r).unwrap().codes);
    }
    // Augmented planes have dims + 1 values: those of a (dims + 1)-dimensional index.
    let aug = Planes::generate(&p);
    assert_eq!(aug.table_plane(0, 0).len(), 41);
    let plus_one = Planes::generate(&LshParams {
        dims: 41,
        max_norm: 0.0,
        ..p
    });
    assert_eq!(aug, plus_one);
    assert!(LshModel::new(p, vec![0.0; 40]).is_err());
    assert!(LshModel::new(p, vec![0.0; 41]).is_ok());

    // max_norm only for inner product, finite and >= 0.
    for bad in [
        LshParams {
            metric: Metric::Cosine,
            ..p
        },
        LshParams {
            metric: Metric::L2,
            ..p
        },
        LshParams {
            max_norm: -1.0,
            ..p
        },
        LshParams {
            max_norm: f32::NAN,
            ..p
        },
        LshParams {
            max_norm: f32::INFINITY,
            ..p
        },
    ] {
        assert!(matches!(bad.validate(), Err(LshError::InvalidParams(_))));
        assert!(LshParams::from_bytes(&bad.to_bytes()).is_err());
    }
}

#[test]
fn mean_accumulator_augments_inner_product() {
    let mut acc = MeanAccumulator::new(2, Metric::InnerProduct);
    assert_eq!(acc.augment_norm(), 1.0); // nothing yet
    acc.add(&[3.0, 4.0]).unwrap();
    acc.add(&[0.0, 1.0]).unwrap();
    let mut other = MeanAccumulator::new(2, Metric::InnerProduct);
    other.add(&[0.0, 0.0]).unwrap(); // counts: x' = [0, 0, 1]
    acc.merge(&other);
    assert_eq!(acc.count(), 3);
    assert_eq!(acc.augment_norm(), 5.0);
    let m = acc.finish();
    let want = [
        3.0 / 15.0,
        5.0 / 15.0,
        (0.0 + (1.0f64 - 1.0 / 25.0).sqrt() + 1.0) / 3.0,
    ];
    assert_eq!(m.len(), 3);
    for (g, w) in m.iter().zip(want) {
        assert!((f64::from(*g) - w).abs() < 1e-6, "{m:?}");
    }
    // Legacy: normalised, not augmented.
    let mut legacy = MeanAccumulator::new_legacy(2, Metric::InnerProduct);
    legacy.add(&[3.0, 4.0]).unwrap();
    legacy.add(&[0.0, 0.0]).unwrap(); // skipped
    assert_eq!(legacy.augment_norm(), 0.0);
    assert_eq!(legacy.count(), 1);
    assert_eq!(legacy.finish(), vec![0.6, 0.8]);
    assert_eq!(MeanAccumulator::new(2, Metric::Cosine).augment_norm(), 0.0);
}

#[test]
fn mem_index_augments_inner_product() {
    let dims = 12;
    let mut data = random_rows(500, dims, 71);
    crate::synth::scale_norms(&mut data, dims, crate::synth::NormSpread::Uniform, 72);
    let m = data
        .chunks_exact(dims)
        .map(distance::norm)
        .fold(0.0f32, f32::max);
    let p = params(dims as u32, 6, 4, 128, Metric::InnerProduct);
    let idx = MemIndex::build(p, &data).unwrap();
    assert_eq!(idx.model().params().max_norm, m);
    assert_eq!(idx.model().mean().len(), dims + 1);
    let small = idx.truncated(4, 2, 64).unwrap();
    assert_eq!(small.model().params().max_norm, m);
    let legacy = MemIndex::build_legacy(p, &data).unwrap();
    assert_eq!(legacy.model().params().max_norm, 0.0);
    assert_eq!(legacy.model().mean().len(), dims);
    // Other metrics are not augmented, whatever max_norm says.
    let l2 = MemIndex::build(
        LshParams {
            metric: Metric::L2,
            max_norm: 2.0,
            ..p
        },
        &data,
    )
    .unwrap();
    assert_eq!(l2.model().params().max_norm, 0.0);
}

/// recall@10 of `metric` at the recommended plan (10k × 64-d clustered, as
/// `recall_at_10_on_clustered_data`), against exact search of the same metric.
fn default_recall(data: &[f32], queries: &[f32], dims: usize, metric: Metric, legacy: bool) -> f64 {
    let rows = data.len() / dims;
    let mut p = LshParams::recommended(dims as u32, metric);
    p.bits = LshParams::suggested_bits(rows as u64);
    let idx = if legacy {
        MemIndex::build_legacy(p, data)
    } else {
        MemIndex::build(p, data)
    }
    .unwrap();
    let sp = SearchParams::for_rows(rows as u64, 10);
    let nq = queries.len() / dims;
    queries
        .chunks_exact(dims)
        .map(|q| {
            recall(
                &idx.search(q, &sp).unwrap().neighbors,
                &idx.exact_search(q, 10),
            )
        })
        .sum::<f64>()
        / nq as f64
}

/// Inner product with norms spread uniformly in [0.5, 2] or log-normally reaches cosine's recall at
/// the default settings (0.02 slack); on unit-norm data augmentation loses nothing against
/// the legacy (normalised) hashing.
#[test]
fn ip_recall_matches_cosine_on_varying_norms() {
    use crate::synth::{scale_norms, NormSpread};
    let dims = 64;
    let gen = Clustered::new(ClusterSpec {
        dims,
        clusters: 10,
        subclusters: 10,
        ..ClusterSpec::default_512()
    });
    let queries = gen.points(40, 1);
    // Log-normal norms (a long tail: M ≈ 4× the median norm) compress q'·x' more: with bucket probing
    // 0.970 vs 0.997 here (legacy hashing: 0.15); the sketch scan of the automatic plan at this size
    // ranks every row and reaches 1.000 for both.
    for (spread, slack) in [(NormSpread::Uniform, 0.02), (NormSpread::LogNormal, 0.02)] {
        let mut data = gen.points(10_000, 0);
        scale_norms(&mut data, dims, spread, 5);
        let cos = default_recall(&data, &queries, dims, Metric::Cosine, false);
        let ip = default_recall(&data, &queries, dims, Metric::InnerProduct, false);
        println!("{spread:?} norms: recall@10 cosine {cos:.3}, inner product {ip:.3}");
        assert!(ip >= cos - slack, "{spread:?}: ip {ip} vs cosine {cos}");
    }
    let mut data = gen.points(10_000, 0);
    scale_norms(&mut data, dims, NormSpread::Unit, 5);
    let ip = default_recall(&data, &queries, dims, Metric::InnerProduct, false);
    let legacy = default_recall(&data, &queries, dims, Metric::InnerProduct, true);
    println!("unit norms: recall@10 inner product {ip:.3}, legacy {legacy:.3}");
    assert!(
        ip >= legacy - 0.01,
        "unit norms: ip {ip} vs legacy {legacy}"
    );
}

/// Hashing in batches gives exactly the per-row codes and sketches, for every metric, augmented or
/// not, and batch sizes that do not divide the row count.
#[test]
fn hash_many_equals_hash() {
    let dims = 37;
    let data = random_rows(53, dims, 61);
    for metric in [Metric::L2, Metric::Cosine, Metric::InnerProduct] {
        let mut p = params(dims as u32, 9, 3, 192, metric);
        let mean: Vec<f32> = (0..dims).map(|i| (i as f32 * 0.37).sin() * 0.1).collect();
        let mut models = vec![LshModel::new(p, mean.clone()).unwrap()];
        if metric == Metric::InnerProduct {
            p.max_norm = 40.0;
            let mut m = mean.clone();
            m.push(0.05);
            models.push(LshModel::new(p, m).unwrap());
        }
        for model in models {
            let (t, w) = (p.tables as usize, p.sketch_words());
            let mut codes = vec![7u32; 53 * t];
            let mut sketches = vec![7u64; 53 * w];
            model
                .hash_many_into(&data, &mut Vec::new(), &mut codes, &mut sketches)
                .unwrap();
            for (r, row) in data.chunks_exact(dims).enumerate() {
                let h = model.hash(row).unwrap();
                assert_eq!(&codes[r * t..(r + 1) * t], &h.codes[..], "row {r}");
                assert_eq!(&sketches[r * w..(r + 1) * w], &h.sketch[..], "row {r}");
            }
        }
    }
}

/// The automatic layout and scan mode: sketch scans (and one table) up to 32 MB of sketches, bucket
/// probing (8 tables) above, and a one-table index is scanned by sketch at any size.
#[test]
fn automatic_mode_and_tables() {
    assert!(auto::sketch_scan_fits(1_000_000.0, 256));
    assert!(!auto::sketch_scan_fits(1_000_001.0, 256));
    assert!(auto::sketch_scan_fits(500_000.0, 512));
    assert!(!auto::sketch_scan_fits(500_001.0, 512));
    assert_eq!(LshParams::suggested_tables(1_000_000, 256), 1);
    assert_eq!(LshParams::suggested_tables(600_000, 512), 8);
    assert_eq!(auto::mode(2e6, 1, 256), ScanMode::Sketches);
    assert_eq!(auto::mode(2e6, 8, 256), ScanMode::Buckets);
    assert_eq!(auto::mode(-1.0, 8, 512), ScanMode::Sketches);
    assert_eq!(LshParams::suggested_sketch_bits(255), 256);
    assert_eq!(LshParams::suggested_sketch_bits(256), 512);
    let sp = SearchParams::for_rows(2_000_000, 10);
    assert_eq!((sp.mode, sp.rerank), (ScanMode::Buckets, 2000));
    assert_eq!(SearchParams::for_rows(10_000, 10).rerank, 500);
}

/// Learned planes: a one-table model of enough rows gets them (cosine and L2, not norm-augmented inner
/// product, not several tables); hashing by the batch kernel equals hashing row by row, and the
/// query's table-0 code is the side of each split it lies on.
#[test]
fn learned_planes_are_fitted_where_they_help_and_hash_consistently() {
    let dims = 24;
    let data = clustered(dims, 4000, 61);
    for (metric, tables, want) in [
        (Metric::Cosine, 1, true),
        (Metric::L2, 1, true),
        (Metric::InnerProduct, 1, false),
        (Metric::Cosine, 4, false),
    ] {
        let idx = MemIndex::build(params(dims as u32, 10, tables, 128, metric), &data).unwrap();
        let m = idx.model();
        assert_eq!(m.learned().is_some(), want, "{metric:?} tables {tables}");
        let few = MemIndex::build(
            params(dims as u32, 10, tables, 128, metric),
            &data[..999 * dims],
        )
        .unwrap();
        assert!(
            few.model().learned().is_none(),
            "999 rows keep random planes"
        );
        if !want {
            continue;
        }
        assert_eq!(m.learned().unwrap().count(), 10);
        let (mut codes, mut sketches, mut scratch) =
            (vec![0u32; 4000], vec![0u64; 4000 * 2], Vec::new());
        m.hash_many_into(&data, &mut scratch, &mut codes, &mut sketches)
            .unwrap();
        for r in (0..4000).step_by(97) {
            let h = m.hash(&data[r * dims..(r + 1) * dims]).unwrap();
            assert_eq!(h.codes[0], codes[r]);
            assert_eq!(h.codes[0], idx.row_codes(r as u32)[0]);
            let q = m.query(&data[r * dims..(r + 1) * dims]).unwrap();
            for i in 0..10 {
                assert_eq!(q.codes[0] >> i & 1 == 1, q.projections[i] > 0.0);
            }
        }
        // Median splits: the top bit halves the rows.
        let top = codes.iter().filter(|c| *c >> 9 & 1 == 1).count();
        assert!((1900..=2100).contains(&top), "{top}");
    }
}

/// The superbucket order visits every superbucket once, the query's own first; phases grow as
/// documented; a learned sketch scan at fraction 1 returns what a full scan returns, and at a
/// fraction it reads about that share and keeps most of the recall on clustered data.
#[test]
fn superbucket_phases_cover_everything_and_keep_recall() {
    let dims = 32;
    let gen = Clustered::new(ClusterSpec {
        dims,
        clusters: 20,
        subclusters: 10,
        ..ClusterSpec::default_512()
    });
    let data = gen.points(20_000, 0);
    let queries = gen.points(30, 1);
    let idx = MemIndex::build(params(dims as u32, 12, 1, 256, Metric::Cosine), &data).unwrap();
    assert!(idx.model().learned().is_some());
    let dir_bits = auto::dir_bits(20_000, 12, 1, true);
    assert_eq!(dir_bits, 8);
    let qh = idx.model().query(&queries[..dims]).unwrap();
    let order: Vec<u32> = superbucket_order(&qh, dir_bits).collect();
    assert_eq!(order[0], qh.codes[0] >> 4);
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..256).collect::<Vec<u32>>());
    assert_eq!(auto::dir_bits(20_000, 12, 1, false), 4);
    assert_eq!(auto::dir_bits(20_000, 12, 8, false), 7);
    assert_eq!(superbucket_order(&qh, 0).collect::<Vec<_>>(), vec![0]);

    assert_eq!(phase_rows(1000, 0.2, 40, 0), 200);
    assert_eq!(phase_rows(1000, 0.01, 40, 0), 40);
    assert_eq!(phase_rows(1000, f64::NAN, 40, 0), 1000);
    assert_eq!(phase_rows(1000, 0.2, 40, 230), 230);

    let sp = |scan_fraction| SearchParams {
        k: 10,
        max_candidates: 0,
        max_probes: 0,
        rerank: 100,
        mode: ScanMode::Sketches,
        scan_fraction,
    };
    let (mut full, mut part, mut read) = (0.0, 0.0, 0);
    for q in queries.chunks_exact(dims) {
        let truth = idx.exact_search(q, 10);
        let all = idx.search(q, &sp(1.0)).unwrap();
        assert_eq!(all.entries, 20_000);
        full += recall(&all.neighbors, &truth);
        let some = idx.search(q, &sp(0.2)).unwrap();
        assert!(
            some.entries >= 4000 && some.entries < 20_000,
            "{}",
            some.entries
        );
        read += some.entries;
        part += recall(&some.neighbors, &truth);
    }
    let n = queries.len() as f64 / dims as f64;
    let (full, part) = (full / n, part / n);
    assert!(
        part >= full - 0.05,
        "recall {part} at a fifth of the rows, {full} at all"
    );
    assert!(
        (read as f64 / n) < 8000.0,
        "{} rows read on average",
        read as f64 / n
    );
}

/// `n` rows of clustered `dims`-d data.
fn clustered(dims: usize, n: usize, seed: u64) -> Vec<f32> {
    Clustered::new(ClusterSpec {
        dims,
        clusters: 20,
        subclusters: 4,
        seed,
        ..ClusterSpec::default_512()
    })
    .points(n, 0)
}
