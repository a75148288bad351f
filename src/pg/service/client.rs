//! A backend's side of the inference service: claim a free slot, decode and preprocess the image straight
//! into the slot's shared memory (in this backend, in parallel with other sessions), publish the request,
//! wake the service and wait on this backend's latch, with interrupts served (cancel, `statement_timeout`,
//! termination). Whatever way the wait ends, the slot goes back (see `SlotState::withdraw`).

use super::{model_hash, shared, Shared};
use crate::pg::fmgr::raise;
use imgsim_pipeline::service::{
    prepared, read_frame, write_frame, Outcome, Request, Response, SlotState, CLAIMED, DONE, READY,
    RUNNING,
};
use imgsim_pipeline::{EmbedderConfig, Error};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a request may wait for a service process to exist before the call fails (the postmaster
/// restarts a stopped one within about a second).
const NO_WORKER_GRACE: Duration = Duration::from_secs(10);

/// `true` when this cluster runs the inference service (library preloaded, service on).
pub fn available() -> bool {
    shared().is_some()
}

thread_local! {
    /// The slot this backend holds, for the exit callback (a FATAL does not unwind Rust frames).
    static HELD: Cell<Option<usize>> = const { Cell::new(None) };
    static EXIT_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Gives the slot back however the call ends (return, ERROR unwinding); the exit callback covers FATAL.
struct Held {
    sh: Shared,
    slot: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        SlotState(&self.sh.slot(self.slot).state).withdraw();
        HELD.with(|h| h.set(None));
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn release_on_exit(_code: i32, _arg: pg_sys::Datum) {
    if let (Some(sh), Some(i)) = (shared(), HELD.with(|h| h.take())) {
        SlotState(&sh.slot(i).state).withdraw();
    }
}

fn wait_latch(timeout_ms: i64) {
    // SAFETY: this backend's own latch; WL_EXIT_ON_PM_DEATH ends the process if the postmaster dies.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            timeout_ms as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pg_sys::check_for_interrupts!();
}

/// Claims a free slot, waiting (interruptibly) while all are in use.
fn claim(sh: &Shared) -> Held {
    if !EXIT_CALLBACK.with(|c| c.replace(true)) {
        // SAFETY: registering a plain callback once per backend.
        unsafe { pg_sys::before_shmem_exit(Some(release_on_exit), pg_sys::Datum::from(0usize)) };
    }
    // SAFETY: reading this process's pid.
    let start = (unsafe { pg_sys::MyProcPid } as usize) % sh.layout().slots;
    loop {
        for k in 0..sh.layout().slots {
            let i = (start + k) % sh.layout().slots;
            if SlotState(&sh.slot(i).state).try_claim() {
                HELD.with(|h| h.set(Some(i)));
                return Held { sh: *sh, slot: i };
            }
        }
        wait_latch(1);
    }
}

/// Embeds one image through the service. Pipeline errors (bad image, missing model, inference) come back
/// as `Err` like the in-backend path's; the service's own failures raise here.
pub fn embed(cfg: &EmbedderConfig, bytes: &[u8], model: &str) -> Result<Vec<f32>, Error> {
    let sh = shared().expect("service available");
    let p = prepared(&cfg.model_dir, model)?;
    let (per, dims) = (p.pre.tensor_len(), p.spec.dims);
    let layout = sh.layout();
    if !layout.fits(1, per, dims) {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "model \"{model}\" needs {} kB of shared memory per image; each of the inference service's {} slots has {} kB",
                per.max(dims) * 4 / 1024 + 1,
                layout.slots,
                layout.data_bytes() / 1024
            ),
            None,
            Some("Raise pg_imgsim.service_memory or lower pg_imgsim.service_slots (both need a server restart).".into()),
        );
    }
    let held = claim(&sh);
    let (i, slot) = (held.slot, sh.slot(held.slot));
    let h = sh.header();
    let id = h.next_id.fetch_add(1, Ordering::AcqRel) + 1;
    let req = Request {
        id,
        model: model.to_string(),
        model_dir: cfg.model_dir.to_string_lossy().into_owned(),
        ort_library: cfg.ort_library.to_string_lossy().into_owned(),
        provider: cfg.provider,
        intra_threads: cfg.intra_threads as u32,
        images: 1,
        tensor_len: per as u32,
        dims: dims as u32,
    };
    debug_assert_eq!(slot.state.load(Ordering::Relaxed), CLAIMED);
    // SAFETY: CLAIMED gives this backend the slot's frame and data.
    let (frame, data) = unsafe { (sh.frame(i), sh.data(i)) };
    if let Err(e) = write_frame(&req, frame) {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("inference service request: {e}"),
            None,
            Some("pg_imgsim.model_dir and pg_imgsim.onnxruntime_library must be shorter".into()),
        );
    }
    p.pre
        .process_bytes(bytes, &cfg.limits, cfg.jpeg_dct_scaling, &mut data[..per])?;
    slot.images.store(1, Ordering::Relaxed);
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
                        PgSqlErrorCode::ERRCODE_CANNOT_CONNECT_NOW,
                        "the pg_imgsim inference service is not running",
                        None,
                        Some("See the server log; the postmaster restarts the service a second after it stops. \
                              Set pg_imgsim.inference_service = off to embed in each backend.".into()),
                    );
                }
            }
            RUNNING => {
                let taken = slot.taken_gen.load(Ordering::Acquire);
                let gone = h.worker_pid.load(Ordering::Acquire) == 0
                    || h.worker_gen.load(Ordering::Acquire) != taken;
                if gone && SlotState(&slot.state).reclaim_orphan() {
                    HELD.with(|c| c.set(None));
                    std::mem::forget(held);
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
    match resp.outcome {
        Outcome::Embedded { dims: d } if d as usize == dims => {
            let mut v = Vec::with_capacity(dims);
            v.extend_from_slice(&data[..dims]);
            drop(held);
            Ok(v)
        }
        Outcome::Embedded { dims: d } => Err(Error::new(
            imgsim_pipeline::ErrorKind::ModelInvalid,
            format!("inference service returned {d} values, expected {dims}"),
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
