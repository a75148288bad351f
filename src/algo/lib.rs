//! Pure algorithms of pg_imgsim (no PostgreSQL dependency).
//!
//! * [`distance`]: f32 kernels (L2, dot, cosine, norms, element-wise ops, Hamming).
//! * [`lsh`]: sign-random-projection LSH: parameters, deterministic planes, centring, bucket codes,
//!   bit sketches, query-directed multi-probe sequence, and [`lsh::MemIndex`], an in-memory
//!   implementation of the full query plan used as a test oracle and for choosing defaults.
//! * [`estimator`]: compact codes scanned in full (sign codes by Hamming, a RaBitQ-style estimator),
//!   the kernels of the issue-10 study `benches/lsh_real.rs`.
//! * [`partition`]: planes fitted to the data (principal directions, median splits) that make the
//!   superbuckets of a one-table index compact regions, so that a sketch scan can stop early.
//! * [`probing`]: the bucket-probing engine, generic over where buckets are read ([`probing::Buckets`]):
//!   the server's pages or [`lsh::MemIndex`]'s hash maps.
//! * [`rescore`]: the asymmetric sketch estimate (query projections × row sign bits) that reorders
//!   the best rows by Hamming distance before the exact rerank.
//! * [`topk`]: bounded top-R selection.
//! * [`synth`]: clustered synthetic data for tests and benchmarks.
//!
//! Everything the index stores has a little-endian byte form: [`lsh::LshParams::to_bytes`],
//! [`lsh::f32s_to_le_bytes`] (mean vector), [`lsh::RowHash::to_bytes`] (codes + sketch).
//!
//! Recommended defaults (measured by `benches/lsh_recall.rs`, see its output) are
//! [`lsh::LshParams::recommended`] and [`lsh::SearchParams::recommended`].

#![warn(missing_docs)]

pub mod distance;
pub mod estimator;
pub mod lsh;
pub mod partition;
pub mod probing;
pub mod rescore;
pub mod synth;
pub mod topk;
