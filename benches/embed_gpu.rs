//! GPU speed + agreement check (CUDA execution provider).
//!
//!   cargo bench -p imgsim-pipeline --bench embed_gpu -- --lib /path/libonnxruntime.so.1.x \
//!        --model-dir .cache/models [--model resnet34_random] [--images DIR] [--seconds S]
//!
//! `--tf32 on|off` and `--nhwc on|off` set the CUDA provider's TF32 math and NHWC kernels (ONNX
//! Runtime's defaults otherwise: TF32 on, NCHW).
//! Needs the onnxruntime-gpu library (CUDA 13 + cuDNN 9 on the loader path). Runs the model with
//! the CUDA provider at batch 1, 32 and 256 (input copied from the host for each call), prints
//! images/s, then checks that CUDA and CPU outputs agree (cosine >= 0.999) on the same inputs.
//! Without a usable GPU it prints the reason and exits with status 2.

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "inputs.rs"]
mod inputs;

use imgsim_pipeline::{cosine, ActiveProvider, Embedder, EmbedderConfig, Provider};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut lib: Option<PathBuf> = std::env::var_os("IMGSIM_ORT_LIB").map(PathBuf::from);
    let mut model_dir = std::env::var_os("IMGSIM_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/models"));
    let mut model = "resnet34_random".to_string();
    let mut images: Option<PathBuf> = None;
    let mut secs = 3.0f64;
    let (mut tf32, mut nhwc) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--lib" => lib = args.next().map(PathBuf::from),
            "--model-dir" => model_dir = PathBuf::from(args.next().expect("--model-dir DIR")),
            "--model" => model = args.next().expect("--model NAME"),
            "--images" => images = args.next().map(PathBuf::from),
            "--seconds" => {
                secs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds S")
            }
            "--tf32" => tf32 = Some(args.next().expect("--tf32 on|off") == "on"),
            "--nhwc" => nhwc = Some(args.next().expect("--nhwc on|off") == "on"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let Some(lib) = lib else {
        eprintln!(
            "embed_gpu: give the onnxruntime-gpu library with --lib PATH (or IMGSIM_ORT_LIB)"
        );
        std::process::exit(2);
    };

    let mut cfg = EmbedderConfig::new(&lib, &model_dir);
    cfg.provider = Provider::Cuda;
    cfg.max_batch = 256;
    cfg.cuda.tf32 = tf32;
    cfg.cuda.prefer_nhwc = nhwc;
    let gpu = match Embedder::load(&cfg, &model) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("embed_gpu: CUDA is not usable: {e}");
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            std::process::exit(2);
        }
    };
    assert_eq!(gpu.provider(), ActiveProvider::Cuda);
    let per = gpu.tensor_len();

    // Inputs: real photos when given, else a deterministic pseudo-random tensor pool.
    let mut pool: Vec<Vec<f32>> = Vec::new();
    if let Some(dir) = &images {
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Ok(t) = gpu.preprocess(&std::fs::read(&p).unwrap_or_default()) {
                    pool.push(t);
                }
            }
        }
    }
    if pool.is_empty() {
        pool = inputs::random_tensors(64, per);
    }
    println!(
        "embed_gpu: model {model}, {} distinct inputs, library {}",
        pool.len(),
        lib.display()
    );
    let batch_of = |bs: usize, start: usize| {
        let mut buf = Vec::with_capacity(bs * per);
        for k in 0..bs {
            buf.extend_from_slice(&pool[(start + k) % pool.len()]);
        }
        buf
    };
    println!(
        "{:<40} {:>10} {:>10}",
        "CUDA inference (host input)", "images/s", "ms/batch"
    );
    for bs in [1usize, 32, 256] {
        gpu.infer(batch_of(bs, 0), bs).expect("warm-up"); // warm-up (cuDNN autotune)
        let start = Instant::now();
        let mut n = 0usize;
        let mut calls = 0usize;
        while start.elapsed() < Duration::from_secs_f64(secs) || calls < 3 {
            let buf = batch_of(bs, n);
            std::hint::black_box(gpu.infer(buf, bs).expect("inference"));
            n += bs;
            calls += 1;
        }
        let dt = start.elapsed().as_secs_f64();
        println!(
            "{:<40} {:>10.1} {:>10.2}",
            format!("batch {bs}"),
            n as f64 / dt,
            1000.0 * dt / calls as f64
        );
    }

    // Agreement with the CPU provider of the same library.
    let mut ccfg = cfg.clone();
    ccfg.provider = Provider::Cpu;
    let cpu = Embedder::load(&ccfg, &model).expect("CPU session");
    let n = pool.len().min(16);
    let g = gpu.infer(batch_of(n, 0), n).unwrap();
    let c = cpu.infer(batch_of(n, 0), n).unwrap();
    let worst = g
        .iter()
        .zip(&c)
        .map(|(a, b)| cosine(a, b))
        .fold(1.0f64, f64::min);
    println!("CUDA vs CPU on {n} inputs: min cosine {worst:.6}");
    if worst < 0.999 {
        eprintln!(
            "embed_gpu: FAIL: CUDA and CPU embeddings disagree (min cosine {worst:.6} < 0.999)"
        );
        std::process::exit(1);
    }
    println!("embed_gpu: OK");
}
