//! `imgsim-pipeline`: image bytes -> embedding vector, with no PostgreSQL dependency.
//!
//! * [`decode`]: JPEG/PNG/WebP/GIF/BMP/TIFF -> upright RGB (EXIF orientation, alpha on white,
//!   size limits checked from the header before decoding).
//! * [`preprocess`]: torchvision-compatible `Resize` + `CenterCrop` + `Normalize` into NCHW f32.
//! * [`model`]: the `<name>.json` model spec and the model directory.
//! * [`session`]: ONNX Runtime (loaded dynamically once per process), cached sessions and the
//!   batched [`Embedder`].
//! * [`service`]: the protocol between backends and the cluster's inference service process.
//!
//! Errors are [`Error`] values with an [`ErrorKind`] for mapping to SQLSTATEs.

pub mod decode;
pub mod error;
pub mod model;
pub mod preprocess;
pub mod service;
pub mod session;

pub use decode::{
    decode_rgb, decode_rgb_budgeted, DecodeBudget, Limits, Reservation, MAX_JPEG_SCANS,
    SUPPORTED_FORMATS,
};
pub use error::{Error, ErrorKind, Result};
pub use model::{file_sha256, is_valid_model_name, FileId, ModelInfo, ModelRegistry, ModelSpec};
pub use preprocess::Preprocessor;
pub use session::{
    all_or_first_error, clear_session_cache, effective_intra_threads, init_runtime,
    runtime_library, same_file, session_cache_len, ActiveProvider, CudaOptions, Embedder,
    EmbedderConfig, ImageResult, Preparer, Provider, SESSION_CACHE_CAPACITY,
};

/// Cosine similarity of two vectors (0 when either is all zeros).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}
