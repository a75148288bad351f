//! Decode + preprocess arbitrary bytes with a small pixel limit and a real 224x224 centre-crop
//! preprocessor (no ONNX Runtime). Must never panic, abort or allocate past the limits.
#![no_main]

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use imgsim_pipeline::{DecodeBudget, ErrorKind, Limits, ModelSpec, Preprocessor};
use libfuzzer_sys::fuzz_target;

fn pre() -> &'static Preprocessor {
    static P: OnceLock<Preprocessor> = OnceLock::new();
    P.get_or_init(|| {
        Preprocessor::new(
            &ModelSpec::from_json(
                r#"{"format":1,"name":"fuzz","weights":"x","input_name":"input","output_name":"embedding",
                "input_width":224,"input_height":224,"resize_shorter":256,"crop":"center","channel_order":"rgb",
                "layout":"nchw","normalize":{"mean":[127.0,127.0,127.0],"std":[128.0,128.0,128.0]},"dims":4}"#,
            )
            .unwrap(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_bytes: 1 << 20,
        max_pixels: 1 << 18,
        max_decode_bytes: 64 << 20,
    };
    let p = pre();
    let mut out = vec![0f32; p.tensor_len()];
    let budget = DecodeBudget::new(limits.max_decode_bytes);
    let stop = AtomicBool::new(false);
    // JPEG DCT scaling on or off, from the input (one decode per run keeps runs fast).
    let dct = data.len() % 2 == 0;
    match p.process_bytes_budgeted(data, &limits, dct, &budget, &stop, &mut out) {
        Ok(()) => assert!(out.iter().all(|v| v.is_finite())),
        Err(e) => assert_ne!(e.kind(), ErrorKind::Cancelled),
    }
    assert_eq!(budget.in_use(), 0, "reservation released");
});
