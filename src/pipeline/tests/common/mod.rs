#![allow(dead_code)]

use std::path::PathBuf;

use imgsim_pipeline::EmbedderConfig;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(rel: &str) -> Vec<u8> {
    let p = repo_root().join("tests/fixtures").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {} is missing: {e}", p.display()))
}

/// `IMGSIM_ORT_LIB`, default `.cache/onnxruntime/libonnxruntime.so.1.32.0` in the repository.
/// Fails (never skips) when the file is absent.
pub fn ort_lib() -> PathBuf {
    let p = std::env::var_os("IMGSIM_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/onnxruntime/libonnxruntime.so.1.32.0"));
    assert!(
        p.is_file(),
        "ONNX Runtime library not found at {} (set IMGSIM_ORT_LIB, or run the project's model/runtime setup \
         script to unpack the onnxruntime 1.32.0 wheel there)",
        p.display()
    );
    p
}

/// `IMGSIM_MODEL_DIR`, default `.cache/models` in the repository. Fails when the models are absent.
pub fn model_dir() -> PathBuf {
    let p = std::env::var_os("IMGSIM_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/models"));
    for m in ["efficientnet_lite0", "resnet34_random"] {
        for ext in ["json", "onnx"] {
            let f = p.join(format!("{m}.{ext}"));
            assert!(
                f.is_file(),
                "model file {} not found (set IMGSIM_MODEL_DIR, or run scripts/prepare_models.py first)",
                f.display()
            );
        }
    }
    p
}

pub fn config() -> EmbedderConfig {
    let mut c = EmbedderConfig::new(ort_lib(), model_dir());
    c.provider = imgsim_pipeline::Provider::Cpu;
    c.intra_threads = 2;
    c
}
