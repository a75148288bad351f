//! A missing or broken ONNX Runtime library is a clean RuntimeUnavailable error
//! (its own test binary: the library is loaded once per process).

mod common;

use imgsim_pipeline::{init_runtime, Embedder, EmbedderConfig, ErrorKind};

#[test]
fn missing_library() {
    let root = common::repo_root();
    let cfg = EmbedderConfig::new(
        "/nonexistent/libonnxruntime.so.1.32.0",
        root.join(".cache/models"),
    );
    // The model spec is read first; use the fixture dir-independent path: model missing comes first
    // only when the model is absent, so check the runtime directly too.
    let e = init_runtime(&cfg.ort_library).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RuntimeUnavailable);
    assert!(e.message().contains("not found"), "{e}");
    assert!(e.hint().unwrap().contains("onnxruntime"));

    // A file that is not a shared library: dlopen fails, reported the same way.
    let not_lib = root.join("tests/fixtures/formats/not_an_image.txt");
    let e = init_runtime(&not_lib).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RuntimeUnavailable);
    assert!(e.message().contains("cannot load ONNX Runtime"), "{e}");

    // Through the embedder (needs the model spec present to get that far).
    let cfg = EmbedderConfig::new("/nonexistent/libonnxruntime.so.1.32.0", common::model_dir());
    let e = Embedder::load(&cfg, "efficientnet_lite0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RuntimeUnavailable, "{e}");
}
