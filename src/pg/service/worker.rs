//! The inference service process: waits on its latch, forms batches from the ready slots (the oldest
//! request's model; up to `pg_imgsim.max_batch` images, waiting up to `pg_imgsim.max_batch_wait` µs while
//! other backends are still preparing requests), runs them through
//! the same `Embedder` the in-backend path uses, writes each answer into its slot and sets its owner's latch.
//!
//! An ERROR or panic here ends the process (exit 1); the postmaster starts a new one a second later, whose
//! generation number tells waiting backends that their running requests will not be answered.

use super::{model_hash, shared, wait_latch, Shared, MAX_BATCH, MAX_BATCH_WAIT, STAT_MODELS};
use imgsim_pipeline::service::{
    keep_waiting, pick_batch, read_frame, write_frame, Outcome, Request, Response, SlotState,
    Waiting, CLAIMED, READY,
};
use imgsim_pipeline::{ActiveProvider, Embedder, EmbedderConfig, Error};
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Entry point named in the worker's registration.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn imgsim_service_main(_arg: pg_sys::Datum) {
    // SIGINT (pg_cancel_backend) only sets pgrx's flag, which nothing reads: a cancel does not stop the service.
    BackgroundWorker::attach_signal_handlers(
        SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM | SignalWakeFlags::SIGINT,
    );
    // Connected to no database (like the logical replication launcher): visible in pg_stat_activity with
    // its backend_type, and pg_terminate_backend works on it.
    BackgroundWorker::connect_worker_to_spi(None, None);
    let Some(sh) = shared() else {
        pgrx::log!("pg_imgsim: inference service has no shared memory; exiting");
        return;
    };
    let h = sh.header();
    // Settings first: backends that wait for the first service (client::usable) stop waiting when the
    // generation changes.
    if !publish_config(&sh) {
        restart();
    }
    let gen = h.worker_gen.fetch_add(1, Ordering::AcqRel) + 1;
    // SAFETY: a background worker with shared memory access has its PGPROC latch as MyLatch.
    let my_latch = unsafe { pg_sys::MyLatch };
    // SAFETY: registering a plain callback; it only stores into shared atomics.
    unsafe { pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0usize)) };
    for i in 0..sh.layout().slots {
        SlotState(&sh.slot(i).state).clear_abandoned();
    }
    h.worker_latch.store(my_latch, Ordering::Release);
    // SAFETY: reading this process's pid.
    h.worker_pid
        .store(unsafe { pg_sys::MyProcPid }, Ordering::Release);
    pgrx::log!(
        "pg_imgsim: inference service started ({} slots of {} kB)",
        sh.layout().slots,
        sh.layout().data_bytes() / 1024
    );
    let mut logged: Vec<(String, ActiveProvider)> = Vec::new();
    loop {
        // SAFETY: our own latch; reset before looking at the slots, so a request published after the look
        // sets it again and the wait below returns at once.
        unsafe { pg_sys::ResetLatch(my_latch) };
        // Procsignal barriers (DROP DATABASE, ALTER DATABASE SET TABLESPACE wait for every process to
        // absorb them) and other interrupts.
        pg_sys::check_for_interrupts!();
        if stopping() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way to reread the configuration in a background worker.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            if !publish_config(&sh) {
                break;
            }
        }
        sweep_abandoned(&sh, gen);
        let waiting = collect(&sh);
        if waiting.is_empty() {
            wait_latch(my_latch, 1000);
            continue;
        }
        let waiting = fill_batch(&sh, my_latch, waiting);
        if stopping() {
            break; // what is queued waits for the next service process
        }
        let picked = pick_batch(&waiting, MAX_BATCH.get().max(1) as usize);
        run_batch(&sh, gen, &picked, &mut logged);
    }
    pgrx::log!("pg_imgsim: inference service stopping");
    restart();
}

/// Exit status 1: the postmaster starts a new service a second later (unless the server is shutting down).
// proc_exit is `-> !` in some majors' bindings and `-> ()` in others (PostgreSQL 18).
#[allow(unreachable_code)]
fn restart() -> ! {
    // SAFETY: ends this background worker the way PostgreSQL's own do.
    unsafe { pg_sys::proc_exit(1) };
    unreachable!("proc_exit returned")
}

/// SIGTERM arrived (pgrx's flag is cleared by reading it; this one stays set).
fn stopping() -> bool {
    static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if BackgroundWorker::sigterm_received() {
        STOP.store(true, Ordering::Relaxed);
    }
    STOP.load(Ordering::Relaxed)
}

#[pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
    if let Some(sh) = shared() {
        let h = sh.header();
        h.worker_pid.store(0, Ordering::Release);
        h.worker_latch
            .store(std::ptr::null_mut(), Ordering::Release);
    }
}

/// Requests waiting in READY slots.
fn collect(sh: &Shared) -> Vec<Waiting> {
    (0..sh.layout().slots)
        .filter_map(|i| {
            let s = sh.slot(i);
            (s.state.load(Ordering::Acquire) == READY).then(|| Waiting {
                slot: i,
                seq: s.seq.load(Ordering::Relaxed),
                key: s.key.load(Ordering::Relaxed),
                images: s.images.load(Ordering::Relaxed),
            })
        })
        .collect()
}

/// Waits up to `pg_imgsim.max_batch_wait` µs for the oldest request's batch to fill, while other backends
/// are preparing requests (`keep_waiting`: a lone caller does not wait).
fn fill_batch(sh: &Shared, latch: *mut pg_sys::Latch, mut waiting: Vec<Waiting>) -> Vec<Waiting> {
    let max = MAX_BATCH.get().max(1) as usize;
    let deadline = Instant::now() + Duration::from_micros(MAX_BATCH_WAIT.get().max(0) as u64);
    loop {
        let key = waiting.iter().min_by_key(|w| w.seq).map(|w| w.key);
        let images: usize = waiting
            .iter()
            .filter(|w| Some(w.key) == key)
            .map(|w| w.images as usize)
            .sum();
        let preparing = sh.header().preparing.load(Ordering::Acquire) as usize
            + (0..sh.layout().slots)
                .filter(|&i| sh.slot(i).state.load(Ordering::Acquire) == CLAIMED)
                .count();
        let now = Instant::now();
        if !keep_waiting(images, max, preparing) || now >= deadline || stopping() {
            return waiting;
        }
        // Each published request sets the latch; the timeout is whole milliseconds.
        let ms = (deadline - now).as_micros().div_ceil(1000).max(1) as u64;
        wait_latch(latch, ms);
        waiting = collect(sh);
    }
}

/// Publishes the identity of this process's model settings; backends whose session settings differ embed
/// in their own process. With settings this process cannot serve (an invalid provider, a library that does
/// not load) it publishes none, so every session embeds in its own backend and gets the real error there.
/// `false` when the ONNX Runtime library setting changed: a process cannot load a second library, so the
/// service must restart.
fn publish_config(sh: &Shared) -> bool {
    let key = &sh.header().config_key;
    let cfg = match crate::pg::embed::config_checked() {
        Ok(cfg) => cfg,
        Err(p) => {
            pgrx::warning!("pg_imgsim: inference service: invalid pg_imgsim.execution_provider \"{p}\"; sessions embed in their own backends");
            key.store(0, Ordering::Release);
            return true;
        }
    };
    if let Some(loaded) = imgsim_pipeline::runtime_library() {
        if !imgsim_pipeline::same_file(loaded, &cfg.ort_library) {
            pgrx::log!(
                "pg_imgsim: inference service: pg_imgsim.onnxruntime_library changed; restarting"
            );
            key.store(0, Ordering::Release);
            return false;
        }
    }
    match imgsim_pipeline::init_runtime(&cfg.ort_library) {
        Ok(()) => key.store(
            imgsim_pipeline::service::config_key(&cfg),
            Ordering::Release,
        ),
        Err(e) => {
            pgrx::warning!(
                "pg_imgsim: inference service: {}; sessions embed in their own backends",
                e.message()
            );
            key.store(0, Ordering::Release);
        }
    }
    true
}

/// Slots abandoned while an earlier service process ran them (it will never finish them).
fn sweep_abandoned(sh: &Shared, gen: u64) {
    for i in 0..sh.layout().slots {
        let s = sh.slot(i);
        if s.state.load(Ordering::Acquire) == imgsim_pipeline::service::ABANDONED
            && s.taken_gen.load(Ordering::Acquire) != gen
        {
            SlotState(&s.state).clear_abandoned();
        }
    }
}

/// The inference's cancellation check: serves interrupts (procsignal barriers) while a batch runs, and
/// stops it on SIGTERM.
fn cancel_check() -> bool {
    pg_sys::check_for_interrupts!();
    stopping()
}

/// A request taken into the batch.
struct Taken {
    slot: usize,
    req: Request,
}

fn run_batch(sh: &Shared, gen: u64, picked: &[usize], logged: &mut Vec<(String, ActiveProvider)>) {
    let mut taken: Vec<Taken> = Vec::new();
    for &i in picked {
        let s = sh.slot(i);
        s.taken_gen.store(gen, Ordering::Release);
        if !SlotState(&s.state).take() {
            continue; // withdrawn meanwhile
        }
        // SAFETY: RUNNING gives this process the slot's frame and data.
        let frame = unsafe { sh.frame(i) };
        match read_frame::<Request>(frame) {
            Ok(req) => taken.push(Taken { slot: i, req }),
            Err(e) => answer_error(
                sh,
                i,
                0,
                Error::new(
                    imgsim_pipeline::ErrorKind::Inference,
                    format!("inference service: {e}"),
                ),
            ),
        }
    }
    // Requests of one batch key normally share a session; a hash collision runs as its own batch.
    while !taken.is_empty() {
        let first = taken[0].req.clone();
        let (group, rest): (Vec<Taken>, Vec<Taken>) =
            taken.into_iter().partition(|t| t.req.same_session(&first));
        taken = rest;
        run_group(sh, &group, logged);
    }
}

fn run_group(sh: &Shared, group: &[Taken], logged: &mut Vec<(String, ActiveProvider)>) {
    let first = &group[0].req;
    let images: usize = group.iter().map(|t| t.req.images as usize).sum();
    let per = first.tensor_len as usize;
    let result = (|| -> Result<(Vec<Vec<f32>>, ActiveProvider), Error> {
        let mut cfg = EmbedderConfig::new(&first.ort_library, &first.model_dir);
        cfg.provider = first.provider;
        cfg.intra_threads = first.intra_threads as usize;
        let e = Embedder::load(&cfg, &first.model)?;
        if e.tensor_len() != per || e.dims() != first.dims as usize {
            return Err(Error::new(
                imgsim_pipeline::ErrorKind::ModelInvalid,
                format!(
                    "model \"{}\" changed on disk while the request was prepared",
                    first.model
                ),
            )
            .with_hint("run the statement again"));
        }
        if !logged
            .iter()
            .any(|(m, p)| *m == first.model && *p == e.provider())
        {
            pgrx::log!(
                "pg_imgsim: inference service: model {} runs on {}",
                first.model,
                e.provider()
            );
            logged.push((first.model.clone(), e.provider()));
        }
        let mut tensor = imgsim_pipeline::error::try_with_capacity(images * per, "the batch")?;
        for t in group {
            let n = t.req.images as usize * per;
            // SAFETY: RUNNING gives this process the slot's data.
            tensor.extend_from_slice(&unsafe { sh.data(t.slot) }[..n]);
        }
        let out = e.infer_with(tensor, images, &cancel_check)?;
        Ok((out, e.provider()))
    })();
    let stats = stats_entry(sh, &first.model);
    match result {
        Ok((out, provider)) => {
            if let Some(st) = stats {
                st.provider.store(
                    if provider == ActiveProvider::Cuda {
                        2
                    } else {
                        1
                    },
                    Ordering::Relaxed,
                );
                st.batches.fetch_add(1, Ordering::Relaxed);
                st.images.fetch_add(images as u64, Ordering::Relaxed);
                st.requests.fetch_add(group.len() as u64, Ordering::Relaxed);
            }
            let mut rows = out.into_iter();
            for t in group {
                // SAFETY: RUNNING gives this process the slot's data.
                let data = unsafe { sh.data(t.slot) };
                let dims = t.req.dims as usize;
                for k in 0..t.req.images as usize {
                    let v = rows.next().unwrap_or_default();
                    data[k * dims..(k + 1) * dims].copy_from_slice(&v[..dims]);
                }
                answer(
                    sh,
                    t.slot,
                    Response {
                        id: t.req.id,
                        outcome: Outcome::Embedded { dims: t.req.dims },
                        batch_images: images as u32,
                    },
                );
            }
        }
        // Stopped by SIGTERM: no answer; the owners see this process go and report it themselves.
        Err(e) if e.kind() == imgsim_pipeline::ErrorKind::Cancelled => {}
        Err(e) => {
            if let Some(st) = stats {
                st.failed.fetch_add(group.len() as u64, Ordering::Relaxed);
            }
            if let Some(d) = e.detail_for_log() {
                pgrx::log!("pg_imgsim: inference service: {}: {d}", e.message());
            }
            for t in group {
                answer_error(sh, t.slot, t.req.id, e.clone());
            }
        }
    }
}

fn answer_error(sh: &Shared, slot: usize, id: u64, e: Error) {
    answer(
        sh,
        slot,
        Response {
            id,
            outcome: Outcome::Failed {
                kind: e.kind(),
                message: e.message().to_string(),
                hint: e.hint().map(str::to_string),
            },
            batch_images: 0,
        },
    );
}

/// Writes the response, marks the slot DONE and wakes its owner.
fn answer(sh: &Shared, slot: usize, resp: Response) {
    // SAFETY: RUNNING gives this process the slot's frame.
    let frame = unsafe { sh.frame(slot) };
    if write_frame(&resp, frame).is_err() {
        // Only an error's message can be that long: keep its kind, cut the text.
        let short = match resp.outcome {
            Outcome::Failed { kind, message, .. } => Outcome::Failed {
                kind,
                message: message.chars().take(200).collect(),
                hint: None,
            },
            other => other,
        };
        let _ = write_frame(
            &Response {
                outcome: short,
                ..resp
            },
            frame,
        );
    }
    let s = sh.slot(slot);
    let latch = s.owner_latch.load(Ordering::Acquire);
    if SlotState(&s.state).finish() && !latch.is_null() {
        // SAFETY: the owner's PGPROC latch, in shared memory.
        unsafe { pg_sys::SetLatch(latch) };
    }
}

/// The statistics entry of `model`, claimed on first use (the last entry collects models beyond
/// [`STAT_MODELS`]).
fn stats_entry<'a>(sh: &'a Shared, model: &str) -> Option<&'a super::ModelStats> {
    let hash = model_hash(model);
    let stats = &sh.header().stats;
    for (k, st) in stats.iter().enumerate() {
        if st.used.load(Ordering::Acquire) != 0 {
            if st.name_hash.load(Ordering::Relaxed) == hash || k == STAT_MODELS - 1 {
                return Some(st);
            }
            continue;
        }
        let name = if k == STAT_MODELS - 1 { "other" } else { model };
        // SAFETY: only this process writes an unused entry; readers wait for `used`.
        let buf = unsafe { &mut *st.name.get() };
        buf.fill(0);
        let n = name.len().min(63);
        buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        st.name_hash.store(model_hash(name), Ordering::Relaxed);
        st.used.store(1, Ordering::Release);
        return Some(st);
    }
    None
}
