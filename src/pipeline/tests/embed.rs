//! End-to-end embedding through ONNX Runtime. Needs the CPU library and the models
//! (IMGSIM_ORT_LIB / IMGSIM_MODEL_DIR, defaults under .cache/): fails, never skips, without them.

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;

use common::{config, fixture, repo_root};
use imgsim_pipeline::{cosine, init_runtime, ActiveProvider, Embedder, ErrorKind, Provider};

fn parity_reference() -> BTreeMap<String, Vec<(String, Vec<f32>)>> {
    let text =
        std::fs::read_to_string(repo_root().join("tests/fixtures/parity_reference.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeMap::new();
    for (model, m) in v["models"].as_object().unwrap() {
        let files = m["files"].as_array().unwrap();
        let embs = m["embeddings"].as_array().unwrap();
        let rows = files
            .iter()
            .zip(embs)
            .map(|(f, e)| {
                let e: Vec<f32> = e
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect();
                (f.as_str().unwrap().to_string(), e)
            })
            .collect();
        out.insert(model.clone(), rows);
    }
    out
}

#[test]
fn parity_with_python_reference() {
    let reference = parity_reference();
    assert!(reference.contains_key("efficientnet_lite0"));
    for dct in [true, false] {
        for (model, rows) in &reference {
            let mut cfg = config();
            cfg.jpeg_dct_scaling = dct;
            let e = Embedder::load(&cfg, model).unwrap();
            assert_eq!(e.provider(), ActiveProvider::Cpu);
            let mut worst = (1.0f64, String::new());
            for (file, want) in rows {
                let got = e.embed(&fixture(&format!("parity/{file}"))).unwrap();
                assert_eq!(got.len(), e.dims());
                assert_eq!(got.len(), want.len());
                let c = cosine(&got, want);
                println!("parity {model} dct_scaling={dct} {file}: cosine {c:.6}");
                if c < worst.0 {
                    worst = (c, file.clone());
                }
            }
            println!(
                "parity {model} dct_scaling={dct}: min cosine {:.6} ({})",
                worst.0, worst.1
            );
            assert!(
                worst.0 >= 0.995,
                "{model} (dct_scaling={dct}): cosine {:.6} on {} < 0.995",
                worst.0,
                worst.1
            );
        }
    }
}

fn parity_images() -> Vec<Vec<u8>> {
    parity_reference()["efficientnet_lite0"]
        .iter()
        .map(|(f, _)| fixture(&format!("parity/{f}")))
        .collect()
}

#[test]
fn batch_equals_single() {
    let images = parity_images();
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    let mut cfg = config();
    cfg.max_batch = 3; // 8 images -> chunks of 3, 3, 2
    cfg.decode_threads = 3;
    let e = Embedder::load(&cfg, "efficientnet_lite0").unwrap();
    let batch = e.embed_batch(&refs).unwrap();
    assert_eq!(batch.len(), images.len());
    let mut worst = 0f32;
    for (img, b) in images.iter().zip(&batch) {
        let single = e.embed(img).unwrap();
        let scale = single.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = single
            .iter()
            .zip(b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        worst = worst.max(diff / scale);
        assert!(cosine(&single, b) > 0.99999);
    }
    println!("batch vs single: worst max|diff| / max|v| = {worst:e}");
    assert!(
        worst < 1e-4,
        "batch and single results differ by {worst:e} (relative)"
    );
}

#[test]
fn bad_image_in_batch() {
    let images = parity_images();
    let garbage = b"definitely not an image".to_vec();
    let mut cfg = config();
    cfg.decode_threads = 2;
    let e = Embedder::load(&cfg, "efficientnet_lite0").unwrap();
    let refs: Vec<&[u8]> = vec![&images[0], &garbage, &images[1]];
    let err = e.embed_batch(&refs).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(err.index(), Some(1));
    assert!(err.to_string().starts_with("image 2: "), "{err}");
    let each = e.embed_batch_each(&refs, &|| false).unwrap();
    assert_eq!(
        each[1].as_ref().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let a = e.embed(&images[0]).unwrap();
    let b = e.embed(&images[1]).unwrap();
    assert!(cosine(each[0].as_ref().unwrap(), &a) > 0.99999);
    assert!(cosine(each[2].as_ref().unwrap(), &b) > 0.99999);
    // Single image errors carry no index.
    let err = e.embed(&garbage).unwrap_err();
    assert_eq!(err.index(), None);
}

#[test]
fn cancellation() {
    let images = parity_images();
    let refs: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
    for threads in [1, 2] {
        let mut cfg = config();
        cfg.decode_threads = threads;
        let e = Embedder::load(&cfg, "efficientnet_lite0").unwrap();
        let calls = Cell::new(0);
        let err = e
            .embed_batch_with(&refs, &|| {
                calls.set(calls.get() + 1);
                calls.get() > 1
            })
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cancelled);
        assert!(calls.get() >= 2);
        // A panicking check unwinds cleanly (workers are stopped and joined).
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = e.embed_batch_with(&refs, &|| panic!("query cancelled"));
        }));
        assert!(r.is_err());
        // ...and the embedder still works afterwards.
        assert_eq!(e.embed(&images[0]).unwrap().len(), 1280);
    }
}

#[test]
fn missing_and_invalid_models() {
    let cfg = config();
    let e = Embedder::load(&cfg, "no_such_model").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelMissing);
    assert!(
        e.hint().unwrap().contains("efficientnet_lite0"),
        "{:?}",
        e.hint()
    );
    let e = Embedder::load(&cfg, "../models/efficientnet_lite0").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelMissing);

    let dir = std::env::temp_dir().join(format!("imgsim-embed-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = std::fs::read_to_string(cfg.model_dir.join("efficientnet_lite0.json")).unwrap();
    std::fs::write(
        dir.join("garbage.json"),
        spec.replace("\"efficientnet_lite0\"", "\"garbage\""),
    )
    .unwrap();
    std::fs::write(dir.join("garbage.onnx"), b"this is not an onnx file").unwrap();
    std::fs::write(
        dir.join("wrongio.json"),
        spec.replace("\"efficientnet_lite0\"", "\"wrongio\"")
            .replace("\"input\"", "\"pixels\""),
    )
    .unwrap();
    std::fs::copy(
        cfg.model_dir.join("efficientnet_lite0.onnx"),
        dir.join("wrongio.onnx"),
    )
    .unwrap();
    std::fs::write(
        dir.join("wrongdims.json"),
        spec.replace("\"efficientnet_lite0\"", "\"wrongdims\"")
            .replace("1280", "1000"),
    )
    .unwrap();
    std::fs::copy(
        cfg.model_dir.join("efficientnet_lite0.onnx"),
        dir.join("wrongdims.onnx"),
    )
    .unwrap();
    let mut c2 = cfg.clone();
    c2.model_dir = dir.clone();
    let e = Embedder::load(&c2, "garbage").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelInvalid, "{e}");
    let e = Embedder::load(&c2, "wrongio").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelInvalid, "{e}");
    assert!(e.message().contains("no input \"pixels\""), "{e}");
    let wd = Embedder::load(&c2, "wrongdims").unwrap();
    let e = wd.embed(&fixture("formats/chelsea.png")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelInvalid, "{e}");
    assert!(e.message().contains("expected [1, 1000]"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn providers_and_cache() {
    let mut cfg = config();
    cfg.intra_threads = 1;
    // This CPU-only library has no CUDA provider.
    cfg.provider = Provider::Cuda;
    let e = Embedder::load(&cfg, "resnet34_random").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProviderUnavailable, "{e}");
    assert!(e.message().contains("CUDA"), "{e}");
    cfg.provider = Provider::Auto;
    let a = Embedder::load(&cfg, "resnet34_random").unwrap();
    assert_eq!(a.provider(), ActiveProvider::Cpu);
    assert!(a.cuda_fallback_reason().is_some());
    assert!(a.newly_loaded());
    let again = Embedder::load(&cfg, "resnet34_random").unwrap();
    assert!(
        !again.newly_loaded(),
        "second load must come from the cache"
    );
    assert_eq!(again.dims(), 512);
    assert_eq!(Provider::parse("CUDA"), Some(Provider::Cuda));
    assert_eq!(Provider::parse("tpu"), None);
}

#[test]
fn runtime_is_loaded_once() {
    init_runtime(&common::ort_lib()).unwrap();
    init_runtime(&common::ort_lib()).unwrap();
    let other = repo_root().join("tests/fixtures/formats/not_an_image.txt");
    let e = init_runtime(&other).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RuntimeUnavailable);
    assert!(e.message().contains("already loaded"), "{e}");
}

/// A long batch (resnet34_random on CPU: about 100 ms per image) stops well within a second of
/// the flag flipping, in inference as well as in decoding (ONNX Runtime checks its terminate flag
/// between nodes: the slowest node of a 64-image resnet34 batch bounds the delay).
#[test]
fn cancellation_stops_a_long_batch_quickly() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
    let images = parity_images();
    let refs: Vec<&[u8]> = (0..64)
        .map(|i| images[i % images.len()].as_slice())
        .collect();
    let mut cfg = config();
    cfg.max_batch = 64; // one inference call of 64 images: seconds of ONNX Runtime work
    let e = Embedder::load(&cfg, "resnet34_random").unwrap();
    for delay_ms in [50u64, 1500] {
        let flag = AtomicBool::new(false);
        let flipped = std::sync::Mutex::new(None::<Instant>);
        let start = Instant::now();
        let err = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(delay_ms));
                *flipped.lock().unwrap() = Some(Instant::now());
                flag.store(true, Ordering::SeqCst);
            });
            e.embed_batch_with(&refs, &|| flag.load(Ordering::SeqCst))
                .unwrap_err()
        });
        let done = Instant::now();
        let lag = done - flipped.lock().unwrap().expect("flag flipped");
        println!(
            "cancel after {delay_ms} ms: returned {:?} after {:?}, {:?} after the flag",
            err.kind(),
            done - start,
            lag
        );
        assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
        assert!(lag < Duration::from_millis(1000), "took {lag:?} to stop");
    }
    // The session still works after a terminated run.
    assert_eq!(e.embed(&images[0]).unwrap().len(), 512);
}

#[test]
fn session_cache_is_bounded_and_notices_replaced_files() {
    use imgsim_pipeline::{session_cache_len, ModelRegistry, SESSION_CACHE_CAPACITY};
    let cfg = config();
    // Many thread counts and model directories: never more than the capacity.
    let dir = std::env::temp_dir().join(format!("imgsim-lru-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for ext in ["json", "onnx"] {
        std::fs::copy(
            cfg.model_dir.join(format!("resnet34_random.{ext}")),
            dir.join(format!("resnet34_random.{ext}")),
        )
        .unwrap();
    }
    let mut c = cfg.clone();
    c.model_dir = dir.clone();
    for threads in [1usize, 2, 3, 4, 5, 1000] {
        c.intra_threads = threads;
        Embedder::load(&c, "resnet34_random").unwrap();
        assert!(session_cache_len() <= SESSION_CACHE_CAPACITY);
    }
    c.intra_threads = 1;
    let a = Embedder::load(&c, "resnet34_random").unwrap();
    let fp = a.onnx_sha256().unwrap();
    assert_eq!(fp.len(), 64);
    assert_eq!(
        ModelRegistry::new(&dir)
            .fingerprint("resnet34_random")
            .unwrap(),
        fp
    );
    assert!(!Embedder::load(&c, "resnet34_random")
        .unwrap()
        .newly_loaded());
    // Replace the ONNX file (new inode): the next load builds a new session.
    let onnx = dir.join("resnet34_random.onnx");
    let tmp = dir.join("new.onnx");
    std::fs::copy(cfg.model_dir.join("efficientnet_lite0.onnx"), &tmp).unwrap();
    std::fs::rename(&tmp, &onnx).unwrap();
    assert_eq!(a.onnx_sha256(), None, "old session's file is gone");
    let spec = std::fs::read_to_string(cfg.model_dir.join("efficientnet_lite0.json")).unwrap();
    std::fs::write(
        dir.join("resnet34_random.json"),
        spec.replace("\"efficientnet_lite0\"", "\"resnet34_random\""),
    )
    .unwrap();
    let b = Embedder::load(&c, "resnet34_random").unwrap();
    assert!(b.newly_loaded(), "replaced model files must be reloaded");
    assert_eq!(b.dims(), 1280);
    assert_ne!(b.onnx_sha256().unwrap(), fp);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn user_messages_carry_no_server_paths() {
    let cfg = config();
    let dir = cfg.model_dir.to_str().unwrap().to_string();
    let e = Embedder::load(&cfg, "no_such_model").unwrap_err();
    for text in [Some(e.message()), e.hint()].into_iter().flatten() {
        assert!(!text.contains(&dir), "{text}");
        assert!(!text.contains('/'), "{text}");
    }
    assert!(e.detail_for_log().unwrap().contains(&dir));
    let mut c = cfg.clone();
    c.model_dir = std::env::temp_dir().join(format!("imgsim-paths-{}", std::process::id()));
    std::fs::create_dir_all(&c.model_dir).unwrap();
    let spec = std::fs::read_to_string(cfg.model_dir.join("efficientnet_lite0.json")).unwrap();
    std::fs::write(
        c.model_dir.join("garbage.json"),
        spec.replace("\"efficientnet_lite0\"", "\"garbage\""),
    )
    .unwrap();
    std::fs::write(
        c.model_dir.join("garbage.onnx"),
        b"this is not an onnx file",
    )
    .unwrap();
    let e = Embedder::load(&c, "garbage").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelInvalid);
    let tmp = std::env::temp_dir();
    assert!(!e.message().contains(tmp.to_str().unwrap()), "{e}");
    assert!(e.message().contains("garbage"), "{e}");
    std::fs::remove_dir_all(&c.model_dir).unwrap();
}
