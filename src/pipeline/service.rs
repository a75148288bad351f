//! The inference service's protocol, with no PostgreSQL in it: what a backend and the service process
//! exchange through a slot of shared memory, and the rules both follow.
//!
//! A slot is `[state u32 (atomic)] … [request / response frame area] [f32 data area]`; the PostgreSQL glue
//! (`src/pg/service`) places the slots in shared memory and moves the latches. Here:
//! - [`Request`] / [`Response`]: serde headers framed with bincode ([`write_frame`], [`read_frame`]: a u32
//!   length, then the bincode bytes, bounded by the frame area). Tensors travel as raw f32 in the data area,
//!   after the header, never through bincode.
//! - [`SlotState`]: the slot's life as compare-and-swap transitions on one `AtomicU32`, so that a backend
//!   giving up (cancel, `statement_timeout`, exit) and the service finishing can race without losing or
//!   reusing a slot that the other side still writes.
//! - [`pick_batch`]: which ready requests go into one batch (the oldest request's model, oldest first).
//! - [`Layout`]: slot sizes from the shared-memory budget.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, Result};
use crate::model::{FileId, ModelRegistry, ModelSpec};
use crate::preprocess::Preprocessor;
use crate::session::Provider;

/// Free: any backend may claim it.
pub const FREE: u32 = 0;
/// Claimed by a backend, which is writing its request.
pub const CLAIMED: u32 = 1;
/// Request complete; waiting for the service.
pub const READY: u32 = 2;
/// Taken by the service into a batch.
pub const RUNNING: u32 = 3;
/// Response written; the owner reads it and frees the slot.
pub const DONE: u32 = 4;
/// The owner gave up while the service ran it: the service frees it when it finishes (or a new service
/// process does at its start).
pub const ABANDONED: u32 = 5;

/// One request: the images of a single backend call and what the service needs to run them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Unique per cluster run; the response echoes it.
    pub id: u64,
    pub model: String,
    /// The requesting session's `pg_imgsim.model_dir`, `onnxruntime_library`, provider and threads (the
    /// same settings the in-backend path would use).
    pub model_dir: String,
    pub ort_library: String,
    pub provider: Provider,
    pub intra_threads: u32,
    /// Images in the data area, `tensor_len` f32 values each.
    pub images: u32,
    pub tensor_len: u32,
    /// Length of each embedding the backend expects (from the model spec it preprocessed with).
    pub dims: u32,
}

impl Request {
    /// Requests that may share one batch: same model, directory, library, provider, threads and input size.
    /// Collisions only cost a check in the service, which compares the full requests before batching them.
    pub fn batch_key(&self) -> u64 {
        Fnv::new()
            .field(self.model.as_bytes())
            .field(self.model_dir.as_bytes())
            .field(self.ort_library.as_bytes())
            .field(&[self.provider as u8])
            .field(&self.intra_threads.to_le_bytes())
            .field(&self.tensor_len.to_le_bytes())
            .finish()
    }

    /// `true` when `other` may run in the same session call as `self`.
    pub fn same_session(&self, other: &Request) -> bool {
        self.model == other.model
            && self.model_dir == other.model_dir
            && self.ort_library == other.ort_library
            && self.provider == other.provider
            && self.intra_threads == other.intra_threads
            && self.tensor_len == other.tensor_len
            && self.dims == other.dims
    }
}

/// What the service answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request's id.
    pub id: u64,
    pub outcome: Outcome,
    /// Images in the batch this request ran in (for the statistics and the tests).
    pub batch_images: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// `images × dims` f32 values are in the data area.
    Embedded { dims: u32 },
    /// The pipeline error, as the in-backend path would have raised it.
    Failed {
        kind: ErrorKind,
        message: String,
        hint: Option<String>,
    },
}

/// Why a frame could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The header does not fit the frame area.
    TooLarge { need: usize, room: usize },
    /// The bytes are not a frame of the expected type.
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { need, room } => {
                write!(f, "header of {need} bytes does not fit {room} bytes")
            }
            FrameError::Malformed(e) => write!(f, "malformed header: {e}"),
        }
    }
}

fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

/// Writes `value` into `area` as `[len u32 LE][bincode]`; returns the bytes used.
pub fn write_frame<T: Serialize>(value: &T, area: &mut [u8]) -> Result<usize, FrameError> {
    use bincode::Options;
    let need = options()
        .serialized_size(value)
        .map_err(|e| FrameError::Malformed(e.to_string()))? as usize;
    let room = area.len().saturating_sub(4);
    if need > room {
        return Err(FrameError::TooLarge { need, room });
    }
    area[..4].copy_from_slice(&(need as u32).to_le_bytes());
    options()
        .serialize_into(&mut area[4..4 + need], value)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    Ok(4 + need)
}

/// Reads a frame written by [`write_frame`]; never reads or allocates beyond `area`.
pub fn read_frame<T: for<'de> Deserialize<'de>>(area: &[u8]) -> Result<T, FrameError> {
    use bincode::Options;
    if area.len() < 4 {
        return Err(FrameError::Malformed("no length".into()));
    }
    let len = u32::from_le_bytes([area[0], area[1], area[2], area[3]]) as usize;
    if len > area.len() - 4 {
        return Err(FrameError::Malformed(format!(
            "length {len} beyond the {} byte area",
            area.len() - 4
        )));
    }
    options()
        .with_limit(len as u64)
        .deserialize(&area[4..4 + len])
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

/// A slot's state word. Every transition is a compare-and-swap, so the owner and the service never both
/// believe they may free or reuse a slot.
#[derive(Clone, Copy)]
pub struct SlotState<'a>(pub &'a AtomicU32);

impl SlotState<'_> {
    pub fn get(self) -> u32 {
        self.0.load(Ordering::Acquire)
    }

    fn cas(self, from: u32, to: u32) -> Result<(), u32> {
        self.0
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }

    /// Backend: FREE → CLAIMED.
    pub fn try_claim(self) -> bool {
        self.cas(FREE, CLAIMED).is_ok()
    }

    /// Backend, after writing the request: CLAIMED → READY (the data written before are visible to
    /// whoever sees READY).
    pub fn publish(self) {
        debug_assert_eq!(self.get(), CLAIMED);
        self.0.store(READY, Ordering::Release);
    }

    /// Service: READY → RUNNING; `false` when the owner withdrew it first.
    pub fn take(self) -> bool {
        self.cas(READY, RUNNING).is_ok()
    }

    /// Service, after writing the response: RUNNING → DONE. When the owner abandoned the slot meanwhile,
    /// frees it instead and returns `false` (nobody will read the response).
    pub fn finish(self) -> bool {
        match self.cas(RUNNING, DONE) {
            Ok(()) => true,
            Err(ABANDONED) => {
                self.0.store(FREE, Ordering::Release);
                false
            }
            Err(_) => false,
        }
    }

    /// Owner, giving up or done (cancel, error, exit, or after reading the response): leaves the slot free,
    /// or ABANDONED when the service is running it (the service frees it when it finishes).
    pub fn withdraw(self) {
        loop {
            let s = self.get();
            let to = match s {
                CLAIMED | READY | DONE => FREE,
                RUNNING => ABANDONED,
                _ => return, // FREE, ABANDONED: nothing left to do
            };
            if self.cas(s, to).is_ok() {
                return;
            }
        }
    }

    /// Owner, when the service process that took the slot is gone (it will never finish it): RUNNING →
    /// FREE. `false` when the slot was finished after all.
    pub fn reclaim_orphan(self) -> bool {
        self.cas(RUNNING, FREE).is_ok()
    }

    /// A new service process at its start: slots abandoned while a previous one ran them are free now.
    pub fn clear_abandoned(self) -> bool {
        self.cas(ABANDONED, FREE).is_ok()
    }
}

/// A request waiting in a READY slot, as the service sees it when forming a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub slot: usize,
    /// Submission order (smaller is older).
    pub seq: u64,
    pub key: u64,
    pub images: u32,
}

/// The batch to run next: the oldest waiting request, then the oldest others with the same key, while the
/// images stay within `max_images` (the first request is taken even if it alone is larger). Slot indices,
/// oldest first.
pub fn pick_batch(waiting: &[Waiting], max_images: usize) -> Vec<usize> {
    let Some(first) = waiting.iter().min_by_key(|w| w.seq) else {
        return Vec::new();
    };
    let mut same: Vec<&Waiting> = waiting.iter().filter(|w| w.key == first.key).collect();
    same.sort_by_key(|w| w.seq);
    let mut out = Vec::new();
    let mut images = 0usize;
    for w in same {
        let n = w.images as usize;
        if !out.is_empty() && images + n > max_images {
            break;
        }
        images += n;
        out.push(w.slot);
    }
    out
}

/// Identity of the settings a session would run a model with (ONNX Runtime library, model directory,
/// provider, threads): a backend uses the service only while its session's key is the service's (a session
/// that SETs another provider, or a role with its own library setting, embeds in its own process).
pub fn config_key(cfg: &crate::EmbedderConfig) -> u64 {
    Fnv::new()
        .field(cfg.ort_library.as_os_str().as_encoded_bytes())
        .field(cfg.model_dir.as_os_str().as_encoded_bytes())
        .field(&[cfg.provider as u8])
        .field(&(cfg.intra_threads as u64).to_le_bytes())
        .finish()
        | 1 // never 0, which means "no service settings"
}

/// Key of a model name in the service's statistics and queue counts.
pub fn model_hash(name: &str) -> u64 {
    Fnv::new().field(name.as_bytes()).finish()
}

/// FNV-1a over fields, each closed by a 0xff byte (so ("ab", "c") and ("a", "bc") differ).
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Fnv {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub fn field(mut self, bytes: &[u8]) -> Fnv {
        for &b in bytes.iter().chain(&[0xff]) {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Whether the service should wait (up to its `max_batch_wait`) before running what is ready: only while the
/// batch is not full and some backend is preparing a request (a claimed slot), so a lone caller never waits.
pub fn keep_waiting(ready_images: usize, max_images: usize, preparing: usize) -> bool {
    ready_images < max_images && preparing > 0
}

/// Bytes of a slot's frame area (request, then response).
pub const FRAME_BYTES: usize = 1024;

/// Where slots lie in the service's shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub slots: usize,
    /// f32 values each slot's data area holds.
    pub data_floats: usize,
}

impl Layout {
    /// `slots` slots sharing `budget_bytes` of data area (each slot's rounded down to whole cache lines).
    pub fn new(budget_bytes: usize, slots: usize) -> Layout {
        let slots = slots.max(1);
        let per = (budget_bytes / slots) / 64 * 64;
        Layout {
            slots,
            data_floats: per / 4,
        }
    }

    /// Data bytes of one slot.
    pub fn data_bytes(&self) -> usize {
        self.data_floats * 4
    }

    /// `true` when a request of `images` × `tensor_len` inputs (and its `images` × `dims` outputs) fits one
    /// slot.
    pub fn fits(&self, images: usize, tensor_len: usize, dims: usize) -> bool {
        images
            .checked_mul(tensor_len.max(dims))
            .is_some_and(|n| n <= self.data_floats)
    }
}

/// A model's spec and preprocessor: all a backend needs to prepare a request without loading the model.
pub struct Prepared {
    pub spec: ModelSpec,
    pub pre: Preprocessor,
}

type PreparedKey = (PathBuf, String, Option<FileId>);
static PREPARED: Mutex<Vec<(PreparedKey, Arc<Prepared>)>> = Mutex::new(Vec::new());
const PREPARED_CAPACITY: usize = 8;

/// [`Prepared`] for model `name` in `model_dir`, cached per process and keyed by the identity of the spec
/// file (a spec replaced on disk is read again). Errors are the in-backend path's (model missing, invalid).
pub fn prepared(model_dir: &Path, name: &str) -> Result<Arc<Prepared>> {
    let registry = ModelRegistry::new(model_dir);
    let key = (
        model_dir.to_path_buf(),
        name.to_string(),
        FileId::of(&registry.json_path(name)?),
    );
    let mut cache = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(p.clone());
    }
    let spec = registry.load_spec(name)?;
    let pre = Preprocessor::new(&spec);
    let p = Arc::new(Prepared { spec, pre });
    if cache.len() >= PREPARED_CAPACITY {
        cache.remove(0);
    }
    cache.push((key, p.clone()));
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn request() -> Request {
        Request {
            id: 7,
            model: "efficientnet_lite0".into(),
            model_dir: "/usr/share/postgresql/15/pg_imgsim/models".into(),
            ort_library: "/usr/lib/postgresql/15/lib/pg_imgsim/libonnxruntime.so".into(),
            provider: Provider::Auto,
            intra_threads: 0,
            images: 1,
            tensor_len: 3 * 224 * 224,
            dims: 1280,
        }
    }

    #[test]
    fn frames_round_trip_and_are_bounded() {
        let mut area = [0u8; FRAME_BYTES];
        let r = request();
        let used = write_frame(&r, &mut area).unwrap();
        assert!(used > 4 && used < FRAME_BYTES);
        assert_eq!(read_frame::<Request>(&area).unwrap(), r);

        let resp = Response {
            id: 7,
            outcome: Outcome::Failed {
                kind: ErrorKind::Inference,
                message: "boom".into(),
                hint: Some("try again".into()),
            },
            batch_images: 3,
        };
        write_frame(&resp, &mut area).unwrap();
        assert_eq!(read_frame::<Response>(&area).unwrap(), resp);

        // Too large for the area: refused, nothing written past it.
        let mut big = request();
        big.model_dir = "x".repeat(2000);
        assert!(matches!(
            write_frame(&big, &mut area),
            Err(FrameError::TooLarge { .. })
        ));
        // A length beyond the area, or garbage: an error, not a panic or a huge allocation.
        area[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_frame::<Request>(&area).is_err());
        area[..4].copy_from_slice(&20u32.to_le_bytes());
        area[4..24].fill(0xff);
        assert!(read_frame::<Request>(&area).is_err());
        assert!(read_frame::<Request>(&area[..2]).is_err());
    }

    #[test]
    fn batch_keys_separate_sessions() {
        let a = request();
        let mut b = request();
        assert_eq!(a.batch_key(), b.batch_key());
        assert!(a.same_session(&b));
        b.provider = Provider::Cpu;
        assert_ne!(a.batch_key(), b.batch_key());
        assert!(!a.same_session(&b));
        let mut c = request();
        c.model = "other".into();
        assert!(!a.same_session(&c));
    }

    #[test]
    fn slot_life() {
        let w = AtomicU32::new(FREE);
        let s = SlotState(&w);
        assert!(s.try_claim());
        assert!(!s.try_claim());
        s.publish();
        assert!(s.take());
        assert!(!s.take());
        assert!(s.finish());
        assert_eq!(s.get(), DONE);
        s.withdraw();
        assert_eq!(s.get(), FREE);

        // Withdrawn before the service took it: the service never sees it.
        assert!(s.try_claim());
        s.publish();
        s.withdraw();
        assert_eq!(s.get(), FREE);
        assert!(!s.take());

        // Withdrawn while running: abandoned, and the service's finish frees it.
        assert!(s.try_claim());
        s.publish();
        assert!(s.take());
        s.withdraw();
        assert_eq!(s.get(), ABANDONED);
        assert!(!s.finish());
        assert_eq!(s.get(), FREE);

        // The service died while running it: the owner reclaims it; a finish cannot come after.
        assert!(s.try_claim());
        s.publish();
        assert!(s.take());
        assert!(s.reclaim_orphan());
        assert_eq!(s.get(), FREE);
        assert!(!s.reclaim_orphan());

        // Abandoned and the service died: the next service clears it.
        assert!(s.try_claim());
        s.publish();
        assert!(s.take());
        s.withdraw();
        assert!(s.clear_abandoned());
        assert_eq!(s.get(), FREE);
    }

    /// Owners withdrawing at random moments while a service thread takes and finishes: every slot ends free
    /// and no response is ever written into a slot its owner has already reused.
    #[test]
    fn withdraw_races_with_the_service() {
        let words: Arc<Vec<AtomicU32>> = Arc::new((0..8).map(|_| AtomicU32::new(FREE)).collect());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let service = {
            let (words, stop) = (words.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut finished = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for w in words.iter() {
                        let s = SlotState(w);
                        if s.take() {
                            std::hint::spin_loop();
                            if s.finish() {
                                finished += 1;
                            }
                        }
                    }
                }
                finished
            })
        };
        let owners: Vec<_> = (0..4)
            .map(|t| {
                let words = words.clone();
                std::thread::spawn(move || {
                    let mut done = 0u64;
                    for i in 0..20_000u64 {
                        let w = &words[(t * 2 + (i as usize % 2)) % 8];
                        let s = SlotState(w);
                        if !s.try_claim() {
                            continue;
                        }
                        s.publish();
                        // Give up at once sometimes, otherwise wait for the answer.
                        if i % 3 == 0 {
                            s.withdraw();
                            continue;
                        }
                        loop {
                            match s.get() {
                                DONE => {
                                    done += 1;
                                    break;
                                }
                                READY | RUNNING => std::hint::spin_loop(),
                                other => panic!("owner saw state {other}"),
                            }
                        }
                        s.withdraw();
                    }
                    done
                })
            })
            .collect();
        let done: u64 = owners.into_iter().map(|h| h.join().unwrap()).sum();
        // Let the service clear any slot abandoned at the very end.
        std::thread::sleep(std::time::Duration::from_millis(20));
        stop.store(true, Ordering::Relaxed);
        let finished = service.join().unwrap();
        assert!(done > 0 && finished >= done);
        for w in words.iter() {
            assert_eq!(w.load(Ordering::Relaxed), FREE);
        }
    }

    #[test]
    fn batches_take_the_oldest_model_first() {
        let w = |slot, seq, key, images| Waiting {
            slot,
            seq,
            key,
            images,
        };
        assert!(pick_batch(&[], 8).is_empty());
        let waiting = [
            w(0, 5, 1, 1),
            w(1, 2, 2, 1),
            w(2, 3, 1, 1),
            w(3, 4, 2, 1),
            w(4, 1, 1, 1),
        ];
        assert_eq!(pick_batch(&waiting, 8), vec![4, 2, 0]);
        assert_eq!(pick_batch(&waiting, 2), vec![4, 2]);
        // A request larger than the batch still runs, alone.
        assert_eq!(pick_batch(&[w(3, 9, 1, 40), w(1, 10, 1, 1)], 32), vec![3]);
    }

    #[test]
    fn config_keys_differ_by_setting() {
        let a = crate::EmbedderConfig::new("/lib/ort.so", "/models");
        let mut b = a.clone();
        assert_eq!(config_key(&a), config_key(&b));
        b.provider = Provider::Cpu;
        assert_ne!(config_key(&a), config_key(&b));
        let mut c = a.clone();
        c.intra_threads = 1;
        assert_ne!(config_key(&a), config_key(&c));
        assert_ne!(config_key(&a), 0);
    }

    #[test]
    fn waits_only_for_requests_in_preparation() {
        assert!(!keep_waiting(1, 32, 0));
        assert!(keep_waiting(1, 32, 3));
        assert!(!keep_waiting(32, 32, 3));
    }

    #[test]
    fn layout_bounds_requests() {
        let l = Layout::new(32 << 20, 32);
        assert_eq!(l.data_bytes(), 1 << 20);
        assert!(l.fits(1, 3 * 224 * 224, 1280));
        assert!(!l.fits(1, 3 * 384 * 384, 1280));
        assert!(!l.fits(usize::MAX, 2, 2));
        assert_eq!(Layout::new(100, 0).slots, 1);
    }
}
