//! Compare the Rust pipeline with reference embeddings saved by
//! `scripts/reference_embed.py --images DIR --out REF.npy` (REF.json lists the files).
//!
//!   cargo run --release -p imgsim-pipeline --example parity_dir -- --reference REF.npy
//!       [--images DIR (default: images_root from REF.json)] [--model NAME] [--no-dct]
//! Env: IMGSIM_ORT_LIB, IMGSIM_MODEL_DIR (defaults under .cache/). Prints min/mean cosine and the
//! number of images under 0.995; exits 1 if any is under 0.995.

use std::path::PathBuf;

use imgsim_pipeline::{cosine, Embedder, EmbedderConfig, Provider};

/// Minimal reader for a little-endian float32 C-order 2-D .npy file.
fn read_npy_f32(path: &PathBuf) -> (usize, usize, Vec<f32>) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "not a .npy file");
    let (hlen, start) = if b[6] == 1 {
        (u16::from_le_bytes([b[8], b[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!(
        header.contains("'<f4'") && header.contains("'fortran_order': False"),
        "{header}"
    );
    let shape = &header[header.find("'shape': (").unwrap() + 10..];
    let dims: Vec<usize> = shape[..shape.find(')').unwrap()]
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let data: Vec<f32> = b[start + hlen..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data.len(), dims[0] * dims[1]);
    (dims[0], dims[1], data)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut reference: Option<PathBuf> = None;
    let mut images: Option<PathBuf> = None;
    let mut model: Option<String> = None;
    let mut dct = true;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reference" => reference = args.next().map(PathBuf::from),
            "--images" => images = args.next().map(PathBuf::from),
            "--model" => model = args.next(),
            "--no-dct" => dct = false,
            other => panic!("unknown argument {other}"),
        }
    }
    let reference = reference.expect("--reference REF.npy");
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference.with_extension("json")).unwrap())
            .unwrap();
    let files: Vec<String> = side["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    let images = images.unwrap_or_else(|| PathBuf::from(side["images_root"].as_str().unwrap()));
    let model = model.unwrap_or_else(|| side["model"].as_str().unwrap().to_string());
    let (n, d, data) = read_npy_f32(&reference);
    assert_eq!(n, files.len());

    let lib = std::env::var_os("IMGSIM_ORT_LIB")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/onnxruntime/libonnxruntime.so.1.32.0"));
    let model_dir = std::env::var_os("IMGSIM_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".cache/models"));
    let mut cfg = EmbedderConfig::new(lib, model_dir);
    cfg.provider = Provider::Cpu;
    cfg.jpeg_dct_scaling = dct;
    let e = Embedder::load(&cfg, &model).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.dims(), d);
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(images.join(f)).unwrap())
        .collect();
    let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
    let got = e.embed_batch(&refs).unwrap_or_else(|e| panic!("{e}"));
    let mut cos: Vec<(f64, &str)> = got
        .iter()
        .enumerate()
        .map(|(i, g)| (cosine(g, &data[i * d..(i + 1) * d]), files[i].as_str()))
        .collect();
    cos.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mean = cos.iter().map(|c| c.0).sum::<f64>() / n as f64;
    let under = cos.iter().filter(|c| c.0 < 0.995).count();
    println!(
        "{n} images, model {model}, jpeg dct scaling {}: min cosine {:.6} ({}), mean {mean:.6}, {under} under 0.995",
        if dct { "on" } else { "off" },
        cos[0].0,
        cos[0].1
    );
    for (c, f) in cos.iter().take(5) {
        println!("  {c:.6} {f}");
    }
    if under > 0 {
        std::process::exit(1);
    }
}
