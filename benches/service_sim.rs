//! The inference service's batching without PostgreSQL, for machines that have a GPU but no server (the
//! device machines): N client threads each submit single-image requests through slots that follow the
//! service's protocol (`imgsim_pipeline::service`: CAS slot states, bincode frames, `keep_waiting` and
//! `pick_batch`), and one service thread runs the batches. Compared with N threads calling the model one
//! image at a time (what each backend does on the in-backend path; here they share one session).
//!
//!   cargo bench -p imgsim-pipeline --bench service_sim -- --lib PATH/libonnxruntime.so \
//!       [--model-dir DIR] [--model NAME] [--provider cpu|cuda] [--clients 1,4,16] [--seconds S]
//!       [--max-batch 32] [--max-wait-us 2000] [--tf32 on|off] [--nhwc on|off]
//!
//! Inputs are preprocessed once (pseudo-random tensors): this measures the inference side; decoding runs
//! in the backends, in parallel, and is measured by `embed_cpu`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "inputs.rs"]
mod inputs;

use imgsim_pipeline::service::{
    keep_waiting, pick_batch, read_frame, write_frame, Outcome, Request, Response, SlotState,
    Waiting, CLAIMED, DONE, FRAME_BYTES, READY,
};
use imgsim_pipeline::{Embedder, EmbedderConfig, Provider};

struct Slot {
    state: AtomicU32,
    seq: AtomicU64,
    key: AtomicU64,
    frame: Mutex<Vec<u8>>,
    data: Mutex<Vec<f32>>,
    /// The waiting client (woken like a backend's latch is set).
    owner: Mutex<Option<std::thread::Thread>>,
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut lib = std::env::var_os("IMGSIM_ORT_LIB").map(PathBuf::from);
    let mut model_dir = root.join(".cache/models");
    let mut model = "efficientnet_lite0".to_string();
    let mut provider = Provider::Cpu;
    let mut clients = vec![1usize, 4, 16];
    let (mut secs, mut max_batch, mut max_wait_us) = (5.0f64, 32usize, 2000u64);
    let mut cuda = imgsim_pipeline::CudaOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--lib" => lib = Some(PathBuf::from(val())),
            "--model-dir" => model_dir = PathBuf::from(val()),
            "--model" => model = val(),
            "--provider" => provider = Provider::parse(&val()).expect("cpu or cuda"),
            "--clients" => {
                clients = val()
                    .split(',')
                    .map(|c| c.parse().expect("--clients 1,4,16"))
                    .collect()
            }
            "--seconds" => secs = val().parse().expect("--seconds S"),
            "--max-batch" => max_batch = val().parse().expect("--max-batch N"),
            "--max-wait-us" => max_wait_us = val().parse().expect("--max-wait-us US"),
            "--tf32" => cuda.tf32 = Some(val() == "on"),
            "--nhwc" => cuda.prefer_nhwc = Some(val() == "on"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let Some(lib) = lib else {
        eprintln!("service_sim: give the ONNX Runtime library with --lib PATH (or IMGSIM_ORT_LIB)");
        std::process::exit(2);
    };
    let mut cfg = EmbedderConfig::new(&lib, &model_dir);
    cfg.provider = provider;
    cfg.cuda = cuda;
    let e = Embedder::load(&cfg, &model).unwrap_or_else(|err| {
        eprintln!("service_sim: cannot load {model}: {err}");
        std::process::exit(2);
    });
    let (per, dims) = (e.tensor_len(), e.dims());
    let pool = inputs::random_tensors(16, per);
    let pool = Arc::new(pool);
    e.infer(pool[0].clone(), 1).expect("warm-up");
    println!(
        "service_sim: model {model} on {}, max_batch {max_batch}, max_wait {max_wait_us} us, {secs} s per run",
        e.provider()
    );
    println!(
        "{:<10} {:>4} {:>10} {:>11}",
        "mode", "N", "images/s", "mean batch"
    );
    for &n in &clients {
        // Batch-1 calls from N threads (the in-backend path's pattern).
        let done = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let t0 = Instant::now();
        std::thread::scope(|s| {
            for c in 0..n {
                let (e, pool, done, stop) = (&e, &pool, &done, &stop);
                s.spawn(move || {
                    let mut k = c;
                    while !stop.load(Ordering::Relaxed) {
                        e.infer(pool[k % pool.len()].clone(), 1).expect("inference");
                        done.fetch_add(1, Ordering::Relaxed);
                        k += 1;
                    }
                });
            }
            std::thread::sleep(Duration::from_secs_f64(secs));
            stop.store(true, Ordering::Relaxed);
        });
        let rate = done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();
        println!("{:<10} {:>4} {:>10.1} {:>11}", "batch-1", n, rate, "-");

        let (rate, mean) = run_service(&e, &pool, n, secs, max_batch, max_wait_us, per, dims);
        println!("{:<10} {:>4} {:>10.1} {:>11.2}", "service", n, rate, mean);
    }
}

#[allow(clippy::too_many_arguments)]
fn run_service(
    e: &Embedder,
    pool: &[Vec<f32>],
    n: usize,
    secs: f64,
    max_batch: usize,
    max_wait_us: u64,
    per: usize,
    dims: usize,
) -> (f64, f64) {
    let slots: Vec<Slot> = (0..n.max(1) * 2)
        .map(|_| Slot {
            state: AtomicU32::new(0),
            seq: AtomicU64::new(0),
            key: AtomicU64::new(0),
            frame: Mutex::new(vec![0u8; FRAME_BYTES]),
            data: Mutex::new(vec![0f32; per.max(dims)]),
            owner: Mutex::new(None),
        })
        .collect();
    let (next_id, done, batches) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    let service_thread: std::sync::OnceLock<std::thread::Thread> = std::sync::OnceLock::new();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        // The service.
        let service = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let collect = || -> Vec<Waiting> {
                    slots
                        .iter()
                        .enumerate()
                        .filter(|(_, sl)| sl.state.load(Ordering::Acquire) == READY)
                        .map(|(i, sl)| Waiting {
                            slot: i,
                            seq: sl.seq.load(Ordering::Relaxed),
                            key: sl.key.load(Ordering::Relaxed),
                            images: 1,
                        })
                        .collect()
                };
                let mut waiting = collect();
                if waiting.is_empty() {
                    std::thread::park_timeout(Duration::from_millis(10));
                    continue;
                }
                let deadline = Instant::now() + Duration::from_micros(max_wait_us);
                loop {
                    let preparing = slots
                        .iter()
                        .filter(|sl| sl.state.load(Ordering::Acquire) == CLAIMED)
                        .count();
                    if !keep_waiting(waiting.len(), max_batch, preparing)
                        || Instant::now() >= deadline
                    {
                        break;
                    }
                    std::thread::park_timeout(deadline.saturating_duration_since(Instant::now()));
                    waiting = collect();
                }
                let picked: Vec<usize> = pick_batch(&waiting, max_batch)
                    .into_iter()
                    .filter(|&i| SlotState(&slots[i].state).take())
                    .collect();
                let mut tensor = Vec::with_capacity(picked.len() * per);
                let mut ids = Vec::new();
                for &i in &picked {
                    let req: Request =
                        read_frame(&slots[i].frame.lock().unwrap()).expect("request");
                    ids.push(req.id);
                    tensor.extend_from_slice(&slots[i].data.lock().unwrap()[..per]);
                }
                let out = e.infer(tensor, picked.len()).expect("inference");
                batches.fetch_add(1, Ordering::Relaxed);
                for ((&i, v), id) in picked.iter().zip(out).zip(ids) {
                    slots[i].data.lock().unwrap()[..dims].copy_from_slice(&v);
                    let resp = Response {
                        id,
                        outcome: Outcome::Embedded { dims: dims as u32 },
                        batch_images: picked.len() as u32,
                    };
                    write_frame(&resp, &mut slots[i].frame.lock().unwrap()).expect("response");
                    SlotState(&slots[i].state).finish();
                    if let Some(t) = slots[i].owner.lock().unwrap().as_ref() {
                        t.unpark();
                    }
                }
            }
        });
        service_thread
            .set(service.thread().clone())
            .expect("set once");
        // The clients (a backend each).
        for c in 0..n {
            let (slots, next_id, done, stop, service_thread) =
                (&slots, &next_id, &done, &stop, &service_thread);
            s.spawn(move || {
                let mut k = c;
                while !stop.load(Ordering::Relaxed) {
                    let Some(i) =
                        (0..slots.len()).find(|&i| SlotState(&slots[i].state).try_claim())
                    else {
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    };
                    *slots[i].owner.lock().unwrap() = Some(std::thread::current());
                    let id = next_id.fetch_add(1, Ordering::Relaxed) + 1;
                    let req = Request {
                        id,
                        model: "m".into(),
                        model_dir: String::new(),
                        ort_library: String::new(),
                        provider: Provider::Cpu,
                        intra_threads: 0,
                        images: 1,
                        tensor_len: per as u32,
                        dims: dims as u32,
                    };
                    write_frame(&req, &mut slots[i].frame.lock().unwrap()).expect("request");
                    slots[i].data.lock().unwrap()[..per].copy_from_slice(&pool[k % pool.len()]);
                    slots[i].seq.store(id, Ordering::Relaxed);
                    slots[i].key.store(req.batch_key(), Ordering::Relaxed);
                    SlotState(&slots[i].state).publish();
                    if let Some(t) = service_thread.get() {
                        t.unpark();
                    }
                    while slots[i].state.load(Ordering::Acquire) != DONE {
                        if stop.load(Ordering::Relaxed) {
                            SlotState(&slots[i].state).withdraw();
                            return;
                        }
                        std::thread::park_timeout(Duration::from_millis(10));
                    }
                    let resp: Response =
                        read_frame(&slots[i].frame.lock().unwrap()).expect("response");
                    assert_eq!(resp.id, id, "answer for another request");
                    SlotState(&slots[i].state).withdraw();
                    done.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let images = done.load(Ordering::Relaxed) as f64;
    let b = batches.load(Ordering::Relaxed).max(1) as f64;
    (images / t0.elapsed().as_secs_f64(), images / b)
}
