//! CPU throughput of the Rust pipeline: decode+preprocess and inference measured separately.
//!
//!   cargo bench -p imgsim-pipeline --bench embed_cpu -- [--images DIR] [--model NAME]
//!        [--batch N] [--seconds S]
//! Library and models: IMGSIM_ORT_LIB / IMGSIM_MODEL_DIR (defaults under .cache/).
//! scripts/bench_embed.sh runs this and the Python reference and prints the ratios.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use imgsim_pipeline::{Embedder, EmbedderConfig, Provider};

const EXTS: &[&str] = &["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

fn list_images(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            list_images(&p, out);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
}

/// Run `f` (which processes `per_call` images) repeatedly for at least `secs`; images/s.
fn rate(secs: f64, per_call: usize, mut f: impl FnMut()) -> (f64, usize) {
    f(); // warm-up
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs_f64(secs) || n < 3 * per_call {
        f();
        n += per_call;
    }
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut images_dir = root.join(".cache/data/gcompris");
    let mut model = "efficientnet_lite0".to_string();
    let mut batch = 32usize;
    let mut secs = 3.0f64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--images" => images_dir = PathBuf::from(args.next().expect("--images DIR")),
            "--model" => model = args.next().expect("--model NAME"),
            "--batch" => batch = args.next().and_then(|v| v.parse().ok()).expect("--batch N"),
            "--seconds" => {
                secs = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--seconds S")
            }
            "--bench" => {} // added by `cargo bench`
            other => panic!("unknown argument {other}"),
        }
    }
    let lib = std::env::var_os("IMGSIM_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/onnxruntime/libonnxruntime.so.1.32.0"));
    let model_dir = std::env::var_os("IMGSIM_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/models"));

    let mut paths = Vec::new();
    list_images(&images_dir, &mut paths);
    assert!(
        !paths.is_empty(),
        "no images under {}",
        images_dir.display()
    );
    let files: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    let mb = files.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "imgsim-pipeline CPU benchmark: {} images ({mb:.1} MB) from {}, model {model}, {cpus} CPUs",
        files.len(),
        images_dir.display()
    );

    let mut cfg = EmbedderConfig::new(&lib, &model_dir);
    cfg.provider = Provider::Cpu;
    cfg.intra_threads = 1;
    cfg.max_batch = batch;
    let e1 = Embedder::load(&cfg, &model).unwrap_or_else(|e| panic!("{e} ({:?})", e.hint()));

    println!("{:<58} {:>10} {:>10}", "stage", "images/s", "ms/image");
    let row = |label: &str, r: f64| println!("{label:<58} {r:>10.1} {:>10.2}", 1000.0 / r);

    // decode only, then decode + preprocess, one thread
    let limits = cfg.limits;
    let (r, _) = rate(secs, files.len(), || {
        for f in &files {
            std::hint::black_box(imgsim_pipeline::decode_rgb(f, &limits, Some(256)).unwrap());
        }
    });
    row("decode only (Rust, 1 thread, jpeg dct scaling on)", r);
    for dct in [true, false] {
        let mut c = cfg.clone();
        c.jpeg_dct_scaling = dct;
        let e = Embedder::load(&c, &model).unwrap();
        let (r, _) = rate(secs, files.len(), || {
            for f in &files {
                std::hint::black_box(e.preprocess(f).unwrap());
            }
        });
        row(
            &format!(
                "decode+preprocess (Rust, 1 thread, jpeg dct scaling {})",
                if dct { "on" } else { "off" }
            ),
            r,
        );
    }

    // inference only, on preprocessed tensors
    let tensors: Vec<Vec<f32>> = files.iter().map(|f| e1.preprocess(f).unwrap()).collect();
    for (threads, label) in [
        (1usize, "1 thread".to_string()),
        (0, format!("default threads (cpus={cpus})")),
    ] {
        let mut c = cfg.clone();
        c.intra_threads = threads;
        let e = Embedder::load(&c, &model).unwrap();
        for bs in [1usize, batch] {
            let bs = bs.min(tensors.len());
            let mut start = 0usize;
            let (r, _) = rate(secs, bs, || {
                let mut buf = Vec::with_capacity(bs * e.tensor_len());
                for k in 0..bs {
                    buf.extend_from_slice(&tensors[(start + k) % tensors.len()]);
                }
                start += bs;
                std::hint::black_box(e.infer(buf, bs).unwrap());
            });
            row(&format!("inference {model} batch {bs:3}, {label}"), r);
        }
    }

    // end to end: embed_batch (parallel decode + batched inference)
    let mut c = cfg.clone();
    c.intra_threads = 0;
    c.decode_threads = 0;
    let e = Embedder::load(&c, &model).unwrap();
    let (r, _) = rate(secs, refs.len(), || {
        std::hint::black_box(e.embed_batch(&refs).unwrap());
    });
    row(
        &format!("end to end embed_batch (decode threads {cpus}, batch {batch})"),
        r,
    );
    let (r, _) = rate(secs, refs.len(), || {
        for f in &refs {
            std::hint::black_box(e.embed(f).unwrap());
        }
    });
    row("end to end embed, one image per call", r);
}
