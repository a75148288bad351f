//! The inference service: one background worker per cluster that owns the ONNX Runtime sessions and runs
//! `img_embed` requests of all backends in shared batches.
//!
//! Only when `pg_imgsim` is in `shared_preload_libraries` (and `pg_imgsim.inference_service` is on): the
//! library then reserves shared memory (a header and `pg_imgsim.service_slots` request slots sharing
//! `pg_imgsim.service_memory`) and registers the worker. Otherwise nothing here is set up and `img_embed`
//! runs in the backend as before.
//!
//! - [`client`]: a backend's side (claim a slot, preprocess into it, wait on its latch).
//! - [`worker`]: the service process (collect ready slots into batches, run them, answer).
//! - the protocol itself (slot states, headers, batch choice) is pure: `imgsim_pipeline::service`.

pub mod client;
pub mod worker;

pub use imgsim_pipeline::service::model_hash;
use imgsim_pipeline::service::{Layout, FRAME_BYTES};
use pgrx::bgworkers::{BackgroundWorkerBuilder, BgWorkerStartTime};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

pub static ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
/// In kB: 32 MB, 1 MB per slot with the default 32 slots (a 224 × 224 image is 588 kB of f32).
pub static MEMORY: GucSetting<i32> = GucSetting::<i32>::new(32 * 1024);
pub static SLOTS: GucSetting<i32> = GucSetting::<i32>::new(32);
pub static MAX_BATCH: GucSetting<i32> = GucSetting::<i32>::new(32);
/// Microseconds.
pub static MAX_BATCH_WAIT: GucSetting<i32> = GucSetting::<i32>::new(2000);

/// Name of the worker (also its `backend_type` in `pg_stat_activity`).
pub const WORKER_NAME: &str = "pg_imgsim inference service";

/// Defines the service's GUCs; with `shared_preload_libraries`, also requests its shared memory and
/// registers the worker. Call from `_PG_init`, before the GUC prefix is reserved.
pub fn init() {
    GucRegistry::define_int_guc(
        c"pg_imgsim.max_batch",
        c"Most images the inference service runs in one batch.",
        c"Requests that arrive while the service is busy or within pg_imgsim.max_batch_wait are batched.",
        &MAX_BATCH,
        1,
        1024,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_imgsim.max_batch_wait",
        c"Microseconds the inference service waits for more requests before running a batch that is not full.",
        c"0 runs whatever has arrived at once.",
        &MAX_BATCH_WAIT,
        0,
        1_000_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: reading a PostgreSQL global flag from _PG_init, on the main thread.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    // PGC_POSTMASTER settings may only be defined while preloading.
    GucRegistry::define_bool_guc(
        c"pg_imgsim.inference_service",
        c"Runs img_embed in one background worker that batches the requests of all sessions.",
        c"Needs pg_imgsim in shared_preload_libraries; off: every backend runs its own ONNX Runtime session.",
        &ENABLED,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_imgsim.service_memory",
        c"Shared memory for the inference service's requests, divided equally among pg_imgsim.service_slots.",
        c"A request larger than one slot is refused (54000).",
        &MEMORY,
        1024,
        i32::MAX / 2,
        GucContext::Postmaster,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"pg_imgsim.service_slots",
        c"Requests the inference service can hold at once (waiting or running).",
        c"More callers than slots wait for a free slot.",
        &SLOTS,
        1,
        4096,
        GucContext::Postmaster,
        GucFlags::default(),
    );
    if !ENABLED.get() {
        return;
    }
    request_shmem();
    BackgroundWorkerBuilder::new(WORKER_NAME)
        .set_type(WORKER_NAME)
        .set_library("pg_imgsim")
        .set_function("imgsim_service_main")
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

/// Most models the statistics keep apart (more share the last entry's name "other").
pub const STAT_MODELS: usize = 16;

/// Per-model counters, written only by the worker.
#[repr(C)]
pub struct ModelStats {
    /// 0 while unused; set (Release) after `name` and `name_hash` were written.
    pub used: AtomicU32,
    /// 1 CPU, 2 CUDA (the provider of the last batch).
    pub provider: AtomicU32,
    pub name_hash: AtomicU64,
    pub batches: AtomicU64,
    pub images: AtomicU64,
    pub requests: AtomicU64,
    pub failed: AtomicU64,
    pub name: UnsafeCell<[u8; 64]>,
}

/// The service's shared-memory header.
#[repr(C)]
pub struct Header {
    pub slots: u32,
    pub data_floats: u64,
    /// Pid of the running worker, 0 when none.
    pub worker_pid: AtomicI32,
    /// Incremented by every worker start; a slot taken by an older one will never be finished.
    pub worker_gen: AtomicU64,
    pub worker_latch: AtomicPtr<pg_sys::Latch>,
    /// Request ids and submission order.
    pub next_id: AtomicU64,
    /// `imgsim_pipeline::service::config_key` of the worker's settings (0 until it started, or when its
    /// settings cannot be served: sessions then embed in their own backends).
    pub config_key: AtomicU64,
    /// Backends decoding images for a request they have not published yet (the worker waits for them, up to
    /// `pg_imgsim.max_batch_wait`).
    pub preparing: AtomicU32,
    pub stats: [ModelStats; STAT_MODELS],
}

/// A request slot's fixed part; its data area lies elsewhere (see [`Shared::data`]).
#[repr(C, align(64))]
pub struct Slot {
    pub state: AtomicU32,
    pub images: AtomicU32,
    pub seq: AtomicU64,
    pub key: AtomicU64,
    pub model_hash: AtomicU64,
    /// `worker_gen` of the worker that took it (written before the take).
    pub taken_gen: AtomicU64,
    pub owner_pid: AtomicI32,
    pub owner_latch: AtomicPtr<pg_sys::Latch>,
    /// Request frame (owner, while CLAIMED), then response frame (worker, while RUNNING).
    pub frame: UnsafeCell<[u8; FRAME_BYTES]>,
}

/// The service's shared memory as this process maps it.
#[derive(Clone, Copy)]
pub struct Shared {
    header: *mut Header,
    slots: *mut Slot,
    data: *mut f32,
    layout: Layout,
}

// SAFETY: the pointers are into PostgreSQL's shared memory, mapped at the same address in every process of
// the cluster for its lifetime; all shared fields are atomics or are accessed under the slot protocol.
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

static mut SHARED: Option<Shared> = None;
static mut PREV_STARTUP: Option<unsafe extern "C-unwind" fn()> = None;
#[cfg(not(any(feature = "pg13", feature = "pg14")))]
static mut PREV_REQUEST: Option<unsafe extern "C-unwind" fn()> = None;

fn layout() -> Layout {
    Layout::new(
        MEMORY.get().max(0) as usize * 1024,
        SLOTS.get().max(1) as usize,
    )
}

fn slots_offset() -> usize {
    size_of::<Header>().next_multiple_of(64)
}

fn shmem_size(l: Layout) -> usize {
    slots_offset() + l.slots * size_of::<Slot>() + l.slots * l.data_bytes()
}

fn request_shmem() {
    #[cfg(any(feature = "pg13", feature = "pg14"))]
    // SAFETY: _PG_init while preloading, where PostgreSQL 13 and 14 take shared memory requests.
    unsafe {
        pg_sys::RequestAddinShmemSpace(shmem_size(layout()));
    }
    #[cfg(not(any(feature = "pg13", feature = "pg14")))]
    // SAFETY: _PG_init while preloading, on the postmaster's only thread; chaining the previous hook.
    unsafe {
        PREV_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(on_shmem_request);
    }
    // SAFETY: as above.
    unsafe {
        PREV_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(on_shmem_startup);
    }
}

#[cfg(not(any(feature = "pg13", feature = "pg14")))]
#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_request() {
    // SAFETY: called by the postmaster in its shared memory request phase.
    unsafe {
        if let Some(prev) = PREV_REQUEST {
            prev();
        }
        pg_sys::RequestAddinShmemSpace(shmem_size(layout()));
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn on_shmem_startup() {
    // SAFETY: called by the postmaster (again after a crash restart) once shared memory exists; the space
    // was requested above. AddinShmemInitLock is MainLWLockArray[21] (lwlocknames.h), as pgrx uses it.
    unsafe {
        if let Some(prev) = PREV_STARTUP {
            prev();
        }
        let l = layout();
        let lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(
            c"pg_imgsim inference service".as_ptr(),
            shmem_size(l),
            &mut found,
        ) as *mut u8;
        if !found {
            std::ptr::write_bytes(base, 0, slots_offset() + l.slots * size_of::<Slot>());
            let h = base as *mut Header;
            (*h).slots = l.slots as u32;
            (*h).data_floats = l.data_floats as u64;
        }
        pg_sys::LWLockRelease(lock);
        SHARED = Some(Shared {
            header: base as *mut Header,
            slots: base.add(slots_offset()) as *mut Slot,
            data: base.add(slots_offset() + l.slots * size_of::<Slot>()) as *mut f32,
            layout: l,
        });
    }
}

/// The service's shared memory, when this cluster runs the service.
pub fn shared() -> Option<Shared> {
    // SAFETY: written once by the shmem startup hook in the postmaster before any child is forked (and
    // again only after every child is gone, at a crash restart); children read their inherited copy.
    unsafe { SHARED }
}

impl Shared {
    pub fn header(&self) -> &'static Header {
        // SAFETY: see the `Send` impl: valid and initialised for the life of the process.
        unsafe { &*self.header }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn slot(&self, i: usize) -> &'static Slot {
        assert!(i < self.layout.slots);
        // SAFETY: `i` is within the slot array (checked).
        unsafe { &*self.slots.add(i) }
    }

    /// Slot `i`'s data area. The caller holds the slot in a state that gives it the area (the owner while
    /// CLAIMED, after DONE; the worker while RUNNING).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn data(&self, i: usize) -> &'static mut [f32] {
        assert!(i < self.layout.slots);
        // SAFETY: within the data region; exclusivity is the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.data.add(i * self.layout.data_floats),
                self.layout.data_floats,
            )
        }
    }

    /// Slot `i`'s frame area (same contract as [`Shared::data`]).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn frame(&self, i: usize) -> &'static mut [u8; FRAME_BYTES] {
        // SAFETY: exclusivity is the caller's contract.
        unsafe { &mut *self.slot(i).frame.get() }
    }

    /// Sets the worker's latch (no-op while no worker runs).
    pub fn wake_worker(&self) {
        let latch = self.header().worker_latch.load(Ordering::Acquire);
        if !latch.is_null() {
            // SAFETY: a PGPROC latch in shared memory; setting a latch whose process exited is harmless.
            unsafe { pg_sys::SetLatch(latch) };
        }
    }
}

/// Waits on `latch` up to `ms` milliseconds or until it is set, resets it, and serves interrupts (cancel and
/// `statement_timeout` in a backend; procsignal barriers in the worker). Ends the process if the postmaster
/// dies.
pub fn wait_latch(latch: *mut pg_sys::Latch, ms: u64) {
    // SAFETY: `latch` is this process's own latch (MyLatch).
    unsafe {
        pg_sys::WaitLatch(
            latch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            ms as _,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(latch);
    }
    pg_sys::check_for_interrupts!();
}

/// `imgsim_service_stats()`: per model, the requests waiting, batches, images, mean batch size, provider,
/// failed requests, and (the same on every row) the worker's pid and the slots in use in the cluster. No rows
/// when the service is not running in this cluster or has run no model yet.
#[pg_extern(volatile, parallel_safe, name = "imgsim_service_stats")]
#[allow(clippy::type_complexity)]
fn imgsim_service_stats() -> TableIterator<
    'static,
    (
        name!(model, String),
        name!(provider, Option<String>),
        name!(queued, i32),
        name!(batches, i64),
        name!(images, i64),
        name!(mean_batch, Option<f64>),
        name!(failed, i64),
        name!(worker_pid, Option<i32>),
        name!(slots_in_use, i32),
    ),
> {
    let Some(sh) = shared() else {
        return TableIterator::new(Vec::new());
    };
    let h = sh.header();
    let pid = h.worker_pid.load(Ordering::Acquire);
    let pid = (pid != 0).then_some(pid);
    let queued = |hash: u64| {
        (0..sh.layout().slots)
            .filter(|&i| {
                let s = sh.slot(i);
                s.state.load(Ordering::Acquire) == imgsim_pipeline::service::READY
                    && s.model_hash.load(Ordering::Relaxed) == hash
            })
            .count() as i32
    };
    let in_use = (0..sh.layout().slots)
        .filter(|&i| sh.slot(i).state.load(Ordering::Acquire) != imgsim_pipeline::service::FREE)
        .count() as i32;
    let mut rows = Vec::new();
    for st in &h.stats {
        if st.used.load(Ordering::Acquire) == 0 {
            continue;
        }
        // SAFETY: written once by the worker before `used` was set (Acquire above).
        let name = unsafe { &*st.name.get() };
        let name =
            String::from_utf8_lossy(&name[..name.iter().position(|&b| b == 0).unwrap_or(64)])
                .into_owned();
        let (batches, images) = (
            st.batches.load(Ordering::Relaxed) as i64,
            st.images.load(Ordering::Relaxed) as i64,
        );
        let provider = match st.provider.load(Ordering::Relaxed) {
            1 => Some("CPU".to_string()),
            2 => Some("CUDA".to_string()),
            _ => None,
        };
        rows.push((
            name,
            provider,
            queued(st.name_hash.load(Ordering::Relaxed)),
            batches,
            images,
            (batches > 0).then(|| images as f64 / batches as f64),
            st.failed.load(Ordering::Relaxed) as i64,
            pid,
            in_use,
        ));
    }
    TableIterator::new(rows)
}
