//! A backend's side of the inference service. The backend decodes and preprocesses its images itself (in
//! parallel with other sessions, with the same code as the in-backend path: `imgsim_pipeline::Preparer`),
//! then for each chunk claims a free slot, copies the tensors into it, publishes the request, wakes the
//! service and waits on its own latch with interrupts served (cancel, `statement_timeout`, termination).
//! A slot is held only while its request waits or runs; whatever way the wait ends, the slot goes back.

use super::{model_hash, shared, Shared};
use crate::pg::fmgr::raise;
use imgsim_pipeline::service::{
    config_key, prepared, read_frame, write_frame, Outcome, Request, Response, SlotState, DONE,
    READY, RUNNING,
};
use imgsim_pipeline::{EmbedderConfig, Error, ErrorKind, ImageResult, Preparer};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a request may wait for a service process to exist before the call fails (the postmaster
/// restarts a stopped one within about a second).
const NO_WORKER_GRACE: Duration = Duration::from_secs(10);

/// `true` when this call should go through the service: the cluster runs it (library preloaded, service
/// on, not single-user mode) and the session's model settings are the ones the service runs with. Right
/// after the server starts, waits up to [`FIRST_START_WAIT`] for the first service process to say which
/// settings it serves (none ever starts when `max_worker_processes` is used up: then each backend embeds).
pub fn usable(cfg: &EmbedderConfig) -> bool {
    // SAFETY: reading a PostgreSQL global flag.
    if !unsafe { pg_sys::IsUnderPostmaster } {
        return false;
    }
    let Some(sh) = shared() else { return false };
    let h = sh.header();
    let started = Instant::now();
    while h.worker_gen.load(Ordering::Acquire) == 0
        && h.config_key.load(Ordering::Acquire) == 0
        && started.elapsed() < FIRST_START_WAIT
    {
        wait_latch(10);
    }
    h.config_key.load(Ordering::Acquire) == config_key(cfg)
}

/// See [`usable`].
const FIRST_START_WAIT: Duration = Duration::from_secs(2);

thread_local! {
    /// The slot this backend holds, for the exit callback (a FATAL does not unwind Rust frames).
    static HELD: Cell<Option<usize>> = const { Cell::new(None) };
    /// Whether this backend counts in the header's `preparing` (same reason).
    static PREPARING: Cell<bool> = const { Cell::new(false) };
    static EXIT_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Counts this backend in `preparing` while it decodes images it has not sent yet, so that the service
/// waits for them to batch them with what is ready.
fn set_preparing(sh: &Shared, on: bool) {
    if PREPARING.with(|p| p.replace(on)) != on {
        let c = &sh.header().preparing;
        if on {
            c.fetch_add(1, Ordering::AcqRel);
        } else {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Leaves `preparing` however `embed_each` ends.
struct Preparing(Shared);

impl Drop for Preparing {
    fn drop(&mut self) {
        set_preparing(&self.0, false);
    }
}

fn register_exit_callback() {
    if !EXIT_CALLBACK.with(|c| c.replace(true)) {
        // SAFETY: registering a plain callback once per backend.
        unsafe { pg_sys::before_shmem_exit(Some(release_on_exit), pg_sys::Datum::from(0usize)) };
    }
}

/// Gives slot `i` back: free, or ABANDONED while a live service runs it (that service frees it), or free
/// at once when the service that took it is gone.
fn give_back(sh: &Shared, i: usize) {
    let slot = sh.slot(i);
    let state = SlotState(&slot.state);
    if state.get() == RUNNING && worker_gone(sh, slot.taken_gen.load(Ordering::Acquire)) {
        state.reclaim_orphan();
    }
    state.withdraw();
}

fn worker_gone(sh: &Shared, taken_gen: u64) -> bool {
    let h = sh.header();
    h.worker_pid.load(Ordering::Acquire) == 0 || h.worker_gen.load(Ordering::Acquire) != taken_gen
}

/// The claimed slot; given back however the call ends (return, ERROR unwinding); the exit callback covers
/// FATAL.
struct Held {
    sh: Shared,
    slot: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        give_back(&self.sh, self.slot);
        HELD.with(|h| h.set(None));
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn release_on_exit(_code: i32, _arg: pg_sys::Datum) {
    let Some(sh) = shared() else { return };
    if let Some(i) = HELD.with(|h| h.take()) {
        give_back(&sh, i);
    }
    set_preparing(&sh, false);
}

fn wait_latch(timeout_ms: u64) {
    // SAFETY: reading this backend's latch pointer.
    super::wait_latch(unsafe { pg_sys::MyLatch }, timeout_ms);
}

/// Claims a free slot, waiting (interruptibly, backing off to 10 ms) while all are in use.
fn claim(sh: &Shared) -> Held {
    let n = sh.layout().slots;
    // SAFETY: reading this process's pid.
    let start = (unsafe { pg_sys::MyProcPid } as usize) % n;
    let mut pause = 1;
    loop {
        for k in 0..n {
            let i = (start + k) % n;
            if SlotState(&sh.slot(i).state).try_claim() {
                HELD.with(|h| h.set(Some(i)));
                return Held { sh: *sh, slot: i };
            }
        }
        wait_latch(pause);
        pause = (pause * 2).min(10);
    }
}

/// Embeds `images` through the service, with the in-backend path's per-image results (a bad image fails
/// only its entry). The service's own failures (no service, a request that cannot fit, the service stopped
/// mid-request) raise here.
pub fn embed_each(
    cfg: &EmbedderConfig,
    images: &[&[u8]],
    model: &str,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<ImageResult>, Error> {
    let sh = shared().expect("service usable");
    let p = prepared(&cfg.model_dir, model)?;
    let (per, dims) = (p.pre.tensor_len(), p.spec.dims);
    let layout = sh.layout();
    let fit = layout.data_floats / per.max(dims);
    if fit == 0 && !images.is_empty() {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "model \"{model}\" needs {} kB of shared memory per image; each of the inference service's {} slots has {} kB",
                (per.max(dims) * 4).div_ceil(1024),
                layout.slots,
                layout.data_bytes() / 1024
            ),
            None,
            Some("Raise pg_imgsim.service_memory or lower pg_imgsim.service_slots (both need a server restart).".into()),
        );
    }
    let preparer = Preparer {
        pre: &p.pre,
        limits: cfg.limits,
        jpeg_dct_scaling: cfg.jpeg_dct_scaling,
        decode_threads: cfg.decode_threads,
        // Chunks no larger than a slot, the session's batch size or the service's pg_imgsim.max_batch.
        max_batch: fit
            .min(cfg.max_batch)
            .min(super::MAX_BATCH.get().max(1) as usize)
            .max(1),
    };
    let request = |n: usize, id: u64| Request {
        id,
        model: model.to_string(),
        model_dir: cfg.model_dir.to_string_lossy().into_owned(),
        ort_library: cfg.ort_library.to_string_lossy().into_owned(),
        provider: cfg.provider,
        intra_threads: cfg.intra_threads as u32,
        images: n as u32,
        tensor_len: per as u32,
        dims: dims as u32,
    };
    register_exit_callback();
    set_preparing(&sh, true);
    let _preparing = Preparing(sh);
    preparer.embed_each(images, cancelled, &mut |tensor, n| {
        set_preparing(&sh, false);
        let out = submit(&sh, request, model, &tensor, n);
        // The next chunk, if any, is decoded next.
        set_preparing(&sh, true);
        out
    })
}

/// One request of `n` preprocessed images: claim, copy in, publish, wait, read the answer.
fn submit(
    sh: &Shared,
    request: impl Fn(usize, u64) -> Request,
    model: &str,
    tensor: &[f32],
    n: usize,
) -> Result<Vec<Vec<f32>>, Error> {
    let held = claim(sh);
    let (i, slot, h) = (held.slot, sh.slot(held.slot), sh.header());
    let id = h.next_id.fetch_add(1, Ordering::AcqRel) + 1;
    let req = request(n, id);
    {
        // SAFETY: CLAIMED gives this backend the slot's frame and data until it publishes.
        let (frame, data) = unsafe { (sh.frame(i), sh.data(i)) };
        if let Err(e) = write_frame(&req, frame) {
            raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                format!("inference service request: {e}"),
                None,
                Some("The paths in pg_imgsim.model_dir and pg_imgsim.onnxruntime_library are too long.".into()),
            );
        }
        data[..tensor.len()].copy_from_slice(tensor);
    }
    slot.images.store(n as u32, Ordering::Relaxed);
    slot.seq.store(id, Ordering::Relaxed);
    slot.key.store(req.batch_key(), Ordering::Relaxed);
    slot.model_hash.store(model_hash(model), Ordering::Relaxed);
    // SAFETY: this process's pid and latch.
    unsafe {
        slot.owner_pid.store(pg_sys::MyProcPid, Ordering::Relaxed);
        slot.owner_latch.store(pg_sys::MyLatch, Ordering::Relaxed);
    }
    SlotState(&slot.state).publish();
    sh.wake_worker();

    let started = Instant::now();
    loop {
        match slot.state.load(Ordering::Acquire) {
            DONE => break,
            READY => {
                if h.worker_pid.load(Ordering::Acquire) == 0 && started.elapsed() > NO_WORKER_GRACE
                {
                    raise(
                        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
                        "the pg_imgsim inference service is not running",
                        None,
                        Some("See the server log (max_worker_processes may be too low); the postmaster restarts \
                              the service a second after it stops. pg_imgsim.inference_service = off embeds in \
                              each backend.".into()),
                    );
                }
            }
            RUNNING => {
                if worker_gone(sh, slot.taken_gen.load(Ordering::Acquire)) {
                    // `held` gives the slot back as it unwinds.
                    raise(
                        PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
                        "the pg_imgsim inference service stopped while running this request",
                        None,
                        Some("The postmaster restarts it; run the statement again.".into()),
                    );
                }
            }
            other => raise(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("inference service slot {i} in unexpected state {other}"),
                None,
                None,
            ),
        }
        wait_latch(100);
    }
    // SAFETY: DONE gives the slot's frame and data back to this backend.
    let (frame, data) = unsafe { (sh.frame(i), sh.data(i)) };
    let resp: Response = read_frame(frame).unwrap_or_else(|e| {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("inference service response: {e}"),
            None,
            None,
        )
    });
    if resp.id != id {
        raise(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!(
                "inference service answered request {} instead of {id}",
                resp.id
            ),
            None,
            None,
        );
    }
    let dims = req.dims as usize;
    match resp.outcome {
        Outcome::Embedded { dims: d } if d == req.dims => Ok(data[..n * dims]
            .chunks_exact(dims)
            .map(<[f32]>::to_vec)
            .collect()),
        Outcome::Embedded { dims: d } => Err(Error::new(
            ErrorKind::ModelInvalid,
            format!("inference service returned {d} values per image, expected {dims}"),
        )),
        Outcome::Failed {
            kind,
            message,
            hint,
        } => {
            let e = Error::new(kind, message);
            Err(match hint {
                Some(h) => e.with_hint(h),
                None => e,
            })
        }
    }
}
