//! Command-line inputs shared by the in-memory sketch-scan studies (`#[path = "vectors_cli.rs"] mod
//! vectors_cli;`, next to `mod npy;`).

use std::path::{Path, PathBuf};

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

/// Base rows and queries, row-major: `--npy BASE` and `--query-npy Q` (default: the image embeddings
/// of `benches/lsh_vs_pgvector.sh --dataset images`, `.cache/data/images/{base,queries}.npy`), or with
/// `--holdout Q` the last Q rows of the base as the queries, removed from it. Returns (base, rows,
/// dims, queries, query rows).
pub fn base_and_queries() -> (Vec<f32>, usize, usize, Vec<f32>, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/data/images");
    let base = arg("--npy").map_or(root.join("base.npy"), PathBuf::from);
    let qpath = arg("--query-npy").map_or(root.join("queries.npy"), PathBuf::from);
    let holdout: usize = arg("--holdout").map_or(0, |s| s.parse().expect("--holdout"));
    let (mut data, mut n, dims) = super::npy::read_npy(&base).expect("base npy");
    if holdout > 0 {
        let q = data.split_off((n - holdout) * dims);
        n -= holdout;
        return (data, n, dims, q, holdout);
    }
    let (q, qn, qd) = super::npy::read_npy(&qpath).expect("query npy");
    assert_eq!(qd, dims, "queries and base differ in dimensions");
    (data, n, dims, q, qn)
}
