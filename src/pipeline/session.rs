//! ONNX Runtime: loading the shared library once per process, a small LRU cache of sessions per
//! (model directory, model, provider, threads, model file identity), and the batched embedding
//! entry points (cancellable while decoding and while ONNX Runtime runs).

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ort::environment::Environment;
use ort::ep::ExecutionProvider;
use ort::session::{RunOptions, Session};
use ort::value::Tensor;

use crate::decode::{DecodeBudget, Limits};
use crate::error::{try_with_capacity, try_zeroed, Error, ErrorKind, Result};
use crate::model::{file_sha256, FileId, ModelRegistry, ModelSpec};
use crate::preprocess::Preprocessor;

/// Which execution provider to ask for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Provider {
    /// CUDA when it registers, else CPU.
    #[default]
    Auto,
    Cpu,
    /// CUDA or an error ([`ErrorKind::ProviderUnavailable`]).
    Cuda,
}

impl Provider {
    /// Parse "auto" | "cpu" | "cuda" (case-insensitive).
    pub fn parse(s: &str) -> Option<Provider> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Some(Provider::Auto),
            "cpu" => Some(Provider::Cpu),
            "cuda" | "gpu" => Some(Provider::Cuda),
            _ => None,
        }
    }
}

/// The execution provider a session actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActiveProvider {
    Cpu,
    Cuda,
}

impl fmt::Display for ActiveProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActiveProvider::Cpu => "CPU",
            ActiveProvider::Cuda => "CUDA",
        })
    }
}

/// Everything [`Embedder::load`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbedderConfig {
    /// Path of `libonnxruntime.so.*` (loaded once per process).
    pub ort_library: PathBuf,
    /// Directory holding `<name>.json` + `<name>.onnx`.
    pub model_dir: PathBuf,
    pub provider: Provider,
    /// ONNX Runtime intra-op threads; 0 = ONNX Runtime's default (one per physical core).
    /// Clamped to the available parallelism.
    pub intra_threads: usize,
    /// Worker threads decoding a batch; 0 = available parallelism. A batch of one image is always
    /// decoded on the calling thread.
    pub decode_threads: usize,
    /// Largest number of images in one inference call (bigger batches are chunked).
    pub max_batch: usize,
    pub limits: Limits,
    /// Decode JPEGs at a reduced DCT scale when the model's resize allows it (much faster on large
    /// photos; embeddings stay within the parity tolerance).
    pub jpeg_dct_scaling: bool,
    /// CUDA execution provider options (ONNX Runtime's defaults where `None`).
    pub cuda: CudaOptions,
}

/// Options of the CUDA execution provider; `None` keeps ONNX Runtime's default (TF32 on, NCHW kernels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CudaOptions {
    /// TF32 tensor-core math for float32 convolutions and matmuls (`use_tf32`).
    pub tf32: Option<bool>,
    /// NHWC convolution kernels (`prefer_nhwc`; needs an ONNX Runtime built with them).
    pub prefer_nhwc: Option<bool>,
}

impl EmbedderConfig {
    pub fn new(ort_library: impl Into<PathBuf>, model_dir: impl Into<PathBuf>) -> Self {
        EmbedderConfig {
            ort_library: ort_library.into(),
            model_dir: model_dir.into(),
            provider: Provider::Auto,
            intra_threads: 0,
            decode_threads: 0,
            max_batch: 32,
            limits: Limits::default(),
            jpeg_dct_scaling: true,
            cuda: CudaOptions::default(),
        }
    }
}

struct Runtime {
    library: PathBuf,
    env: Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static RUNTIME_INIT: Mutex<()> = Mutex::new(());

/// `true` when both paths name the same file (compared as given when either cannot be resolved).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Load the ONNX Runtime library (once per process) and create the environment.
///
/// Calling it again with the same library is cheap. A different path after a successful load is an
/// error: a process cannot swap ONNX Runtime libraries.
pub fn init_runtime(library: &Path) -> Result<()> {
    runtime(library).map(|_| ())
}

/// The library loaded by [`init_runtime`], if any.
pub fn runtime_library() -> Option<&'static Path> {
    RUNTIME.get().map(|r| r.library.as_path())
}

fn runtime(library: &Path) -> Result<&'static Runtime> {
    let check = |r: &'static Runtime| {
        if same_file(&r.library, library) {
            Ok(r)
        } else {
            Err(Error::new(
                ErrorKind::RuntimeUnavailable,
                "ONNX Runtime is already loaded from another library in this process; cannot switch libraries",
            )
            .with_hint("the library is loaded once per process: start a new session/connection to use another one")
            .with_log_detail(format!(
                "loaded: {}; requested: {}",
                r.library.display(),
                library.display()
            )))
        }
    };
    if let Some(r) = RUNTIME.get() {
        return check(r);
    }
    let _guard = RUNTIME_INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = RUNTIME.get() {
        return check(r);
    }
    let hint = "install the CPU library from the onnxruntime 1.32 Python wheel (onnxruntime/capi/libonnxruntime.so.1.32.0) \
                or onnxruntime-gpu for CUDA, and point the library setting at it";
    if !library.is_file() {
        return Err(Error::new(
            ErrorKind::RuntimeUnavailable,
            "ONNX Runtime library not found",
        )
        .with_hint(hint)
        .with_log_detail(format!("{} is not a file", library.display())));
    }
    let builder = ort::init_from(library).map_err(|e| {
        Error::new(
            ErrorKind::RuntimeUnavailable,
            format!("cannot load ONNX Runtime: {}", scrub_paths(&e.to_string())),
        )
        .with_hint(hint)
        .with_log_detail(format!("{}: {e}", library.display()))
    })?;
    let env = builder
        .with_name("imgsim")
        .with_telemetry(false)
        .build()
        .map_err(|e| {
            Error::new(
                ErrorKind::RuntimeUnavailable,
                format!(
                    "cannot create the ONNX Runtime environment: {}",
                    scrub_paths(&e.to_string())
                ),
            )
            .with_log_detail(e.to_string())
        })?;
    let _ = RUNTIME.set(Runtime {
        library: library.to_path_buf(),
        env,
    });
    Ok(RUNTIME.get().expect("just set"))
}

/// Replace every absolute path in `s` (a word starting with `/`) by its file name, so that
/// messages from ONNX Runtime or the dynamic loader never show server directories to users.
pub(crate) fn scrub_paths(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('/') {
        let starts_word = i == 0
            || rest[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_whitespace() || "\"'([{<=:,".contains(c));
        if !starts_word {
            out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
            continue;
        }
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| c.is_whitespace() || "\"')]}>,;".contains(c))
            .unwrap_or(tail.len());
        let path = tail[..end].trim_end_matches(':');
        let name = path.rsplit('/').find(|p| !p.is_empty()).unwrap_or("");
        out.push_str(name);
        rest = &tail[path.len()..];
    }
    out.push_str(rest);
    out
}

struct LoadedModel {
    spec: ModelSpec,
    pre: Preprocessor,
    session: Mutex<Session>,
    provider: ActiveProvider,
    cuda_note: Option<String>,
    onnx_path: PathBuf,
    onnx_id: Option<FileId>,
}

/// Most sessions kept per process (least recently used dropped first). Each holds a model's
/// weights and ONNX Runtime's arenas, so a role cycling through thread counts or providers cannot
/// make a backend build an unbounded number of them.
pub const SESSION_CACHE_CAPACITY: usize = 4;

/// What a cached session depends on: where and which model, how it runs, and the identity of
/// both model files (a file replaced on disk is a new key, loaded afresh).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionKey {
    model_dir: PathBuf,
    name: String,
    provider: Provider,
    intra_threads: usize,
    cuda: CudaOptions,
    onnx: Option<FileId>,
    json: Option<FileId>,
}

type SessionLru = Mutex<Vec<(SessionKey, Arc<LoadedModel>)>>;

/// A small LRU: most recently used last.
fn session_cache() -> &'static SessionLru {
    static CACHE: OnceLock<SessionLru> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(Vec::new()))
}

fn cache_get(key: &SessionKey) -> Option<Arc<LoadedModel>> {
    let mut c = session_cache().lock().unwrap_or_else(|e| e.into_inner());
    let i = c.iter().position(|(k, _)| k == key)?;
    let entry = c.remove(i);
    let m = entry.1.clone();
    c.push(entry);
    Some(m)
}

fn cache_put(key: SessionKey, m: Arc<LoadedModel>) -> Arc<LoadedModel> {
    let mut c = session_cache().lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = c.iter().position(|(k, _)| *k == key) {
        let entry = c.remove(i);
        let existing = entry.1.clone();
        c.push(entry);
        return existing;
    }
    // Entries for an older version of the same model files are dead: drop them first.
    c.retain(|(k, _)| {
        !(k.model_dir == key.model_dir
            && k.name == key.name
            && (k.onnx != key.onnx || k.json != key.json))
    });
    while c.len() >= SESSION_CACHE_CAPACITY {
        c.remove(0);
    }
    c.push((key, m.clone()));
    m
}

/// Number of sessions in the process cache (at most [`SESSION_CACHE_CAPACITY`]).
pub fn session_cache_len() -> usize {
    session_cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len()
}

/// Drop every cached session (the next [`Embedder::load`] reads the model files again).
/// Embedders still alive keep their session until dropped.
pub fn clear_session_cache() {
    session_cache()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

/// `intra_threads` as used: 0 stays 0 (ONNX Runtime's default), others are clamped to the
/// available parallelism.
pub fn effective_intra_threads(requested: usize) -> usize {
    let max = std::thread::available_parallelism().map_or(1, |n| n.get());
    requested.min(max)
}

fn new_builder(
    rt: &Runtime,
    intra_threads: usize,
) -> std::result::Result<ort::session::builder::SessionBuilder, String> {
    let b = Session::builder(&rt.env).map_err(|e| e.to_string())?;
    let b = if intra_threads > 0 {
        b.with_intra_threads(intra_threads)
            .map_err(|e| e.to_string())?
    } else {
        b
    };
    b.with_inter_threads(1).map_err(|e| e.to_string())
}

fn commit(
    b: &mut ort::session::builder::SessionBuilder,
    onnx: &Path,
) -> std::result::Result<Session, String> {
    // ONNX Runtime starts its intra-op thread pool here: those threads inherit a fully blocked
    // signal mask, so process-directed signals (a PostgreSQL backend's SIGINT, SIGUSR1, SIGALRM...)
    // keep being handled by the calling thread.
    let _blocked = SignalsBlocked::new();
    b.commit_from_file(onnx).map_err(|e| e.to_string())
}

/// Blocks every signal in the calling thread until dropped (then restores the previous mask).
/// Threads spawned meanwhile inherit the blocked mask and so never run the process's signal
/// handlers. Used only as a local guard on one thread.
pub(crate) struct SignalsBlocked {
    #[cfg(unix)]
    old: libc::sigset_t,
}

impl SignalsBlocked {
    pub(crate) fn new() -> Self {
        #[cfg(unix)]
        {
            // SAFETY: both sigset_t values are plain C data initialised by sigfillset /
            // pthread_sigmask before being read; pthread_sigmask only changes the calling thread's
            // mask, which `drop` restores on the same thread.
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                let mut old: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
                SignalsBlocked { old }
            }
        }
        #[cfg(not(unix))]
        SignalsBlocked {}
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: `self.old` was filled by pthread_sigmask in `new` on this same thread (the guard
        // is a local that never leaves it); restoring it affects only the calling thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

fn build_session(
    rt: &Runtime,
    name: &str,
    onnx: &Path,
    provider: Provider,
    intra_threads: usize,
    cuda: CudaOptions,
) -> Result<(Session, ActiveProvider, Option<String>)> {
    let model_err = |m: String| {
        Error::new(
            ErrorKind::ModelInvalid,
            format!(
                "ONNX Runtime cannot load model \"{name}\": {}",
                scrub_paths(&m)
            ),
        )
        .with_log_detail(format!("{}: {m}", onnx.display()))
    };
    let mut cuda_note = None;
    if provider != Provider::Cpu {
        let attempt = (|| -> std::result::Result<Session, String> {
            if !ort::ep::CUDA::is_available().unwrap_or(false) {
                return Err(
                    "this ONNX Runtime library has no CUDA execution provider (CPU-only build)"
                        .into(),
                );
            }
            let mut b = new_builder(rt, intra_threads)?;
            let mut ep = ort::ep::CUDA::default();
            if let Some(on) = cuda.tf32 {
                ep = ep.with_tf32(on);
            }
            if let Some(on) = cuda.prefer_nhwc {
                ep = ep.with_prefer_nhwc(on);
            }
            ep.register(&mut b).map_err(|e| e.to_string())?;
            commit(&mut b, onnx)
        })();
        match attempt {
            Ok(s) => return Ok((s, ActiveProvider::Cuda, None)),
            Err(reason) if provider == Provider::Cuda => {
                return Err(Error::new(
                    ErrorKind::ProviderUnavailable,
                    format!(
                        "the CUDA execution provider is not available: {}",
                        scrub_paths(&reason)
                    ),
                )
                .with_hint("use the onnxruntime-gpu library with CUDA 13 + cuDNN 9 on the library path, or choose the cpu/auto provider")
                .with_log_detail(reason));
            }
            Err(reason) => cuda_note = Some(reason),
        }
    }
    let mut b = new_builder(rt, intra_threads).map_err(model_err)?;
    let s = commit(&mut b, onnx).map_err(model_err)?;
    Ok((s, ActiveProvider::Cpu, cuda_note))
}

fn load_model(
    cfg: &EmbedderConfig,
    name: &str,
    intra_threads: usize,
    onnx_id: Option<FileId>,
) -> Result<Arc<LoadedModel>> {
    let registry = ModelRegistry::new(&cfg.model_dir);
    let spec = registry.load_spec(name)?;
    let onnx = registry.onnx_path(name)?;
    let rt = runtime(&cfg.ort_library)?;
    let (session, provider, cuda_note) =
        build_session(rt, name, &onnx, cfg.provider, intra_threads, cfg.cuda)?;
    let names = |o: &[ort::value::Outlet]| {
        o.iter()
            .map(|x| x.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !session.inputs().iter().any(|i| i.name() == spec.input_name) {
        return Err(Error::new(
            ErrorKind::ModelInvalid,
            format!(
                "model \"{name}\": the ONNX graph has no input \"{}\" (inputs: {})",
                spec.input_name,
                names(session.inputs())
            ),
        ));
    }
    if !session
        .outputs()
        .iter()
        .any(|o| o.name() == spec.output_name)
    {
        return Err(Error::new(
            ErrorKind::ModelInvalid,
            format!(
                "model \"{name}\": the ONNX graph has no output \"{}\" (outputs: {})",
                spec.output_name,
                names(session.outputs())
            ),
        ));
    }
    Ok(Arc::new(LoadedModel {
        pre: Preprocessor::new(&spec),
        spec,
        session: Mutex::new(session),
        provider,
        cuda_note,
        onnx_path: onnx,
        onnx_id,
    }))
}

/// A loaded model ready to embed images. Cheap to clone; sessions are shared per process.
#[derive(Clone)]
pub struct Embedder {
    model: Arc<LoadedModel>,
    limits: Limits,
    decode_threads: usize,
    max_batch: usize,
    jpeg_dct_scaling: bool,
    newly_loaded: bool,
}

impl fmt::Debug for Embedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.model.spec.name)
            .field("provider", &self.model.provider)
            .field("max_batch", &self.max_batch)
            .finish()
    }
}

/// Outcome for one image of [`Embedder::embed_batch_each`].
pub type ImageResult = Result<Vec<f32>>;

impl Embedder {
    /// Load (or fetch from the process cache) model `name` with the configured provider.
    ///
    /// The process cache holds at most [`SESSION_CACHE_CAPACITY`] sessions. Each load checks the
    /// identity (device, inode, size, mtime) of `<name>.onnx` and `<name>.json`: a model whose
    /// files changed on disk is loaded again.
    pub fn load(cfg: &EmbedderConfig, name: &str) -> Result<Embedder> {
        let registry = ModelRegistry::new(&cfg.model_dir);
        let (json, onnx) = (registry.json_path(name)?, registry.onnx_path(name)?);
        let intra_threads = effective_intra_threads(cfg.intra_threads);
        let key = SessionKey {
            model_dir: cfg.model_dir.clone(),
            name: name.to_string(),
            provider: cfg.provider,
            intra_threads,
            cuda: cfg.cuda,
            onnx: FileId::of(&onnx),
            json: FileId::of(&json),
        };
        let mut newly_loaded = false;
        let model = match cache_get(&key) {
            Some(m) => {
                // Still insist on the configured library (a switch is reported, not ignored).
                runtime(&cfg.ort_library)?;
                m
            }
            None => {
                let m = load_model(cfg, name, intra_threads, key.onnx)?;
                newly_loaded = true;
                cache_put(key, m)
            }
        };
        Ok(Embedder {
            model,
            limits: cfg.limits,
            decode_threads: cfg.decode_threads,
            max_batch: cfg.max_batch.max(1),
            jpeg_dct_scaling: cfg.jpeg_dct_scaling,
            newly_loaded,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.model.spec
    }

    /// Length of every embedding.
    pub fn dims(&self) -> usize {
        self.model.spec.dims
    }

    /// The provider the session runs on.
    pub fn provider(&self) -> ActiveProvider {
        self.model.provider
    }

    /// SHA-256 (lowercase hex) of the loaded model's ONNX file, computed on first use and cached
    /// per file identity. `None` when the file changed on disk since this session loaded it (the
    /// next [`Embedder::load`] reloads it) or cannot be read.
    pub fn onnx_sha256(&self) -> Option<String> {
        let id = self.model.onnx_id?;
        if FileId::of(&self.model.onnx_path) != Some(id) {
            return None;
        }
        file_sha256(&self.model.onnx_path)
    }

    /// With [`Provider::Auto`] on CPU: why CUDA was not used.
    pub fn cuda_fallback_reason(&self) -> Option<&str> {
        self.model.cuda_note.as_deref()
    }

    /// `true` when this `load` created the session (log the provider once), `false` when it came
    /// from the process cache.
    pub fn newly_loaded(&self) -> bool {
        self.newly_loaded
    }

    /// Values in one preprocessed image tensor (3 x H x W).
    pub fn tensor_len(&self) -> usize {
        self.model.pre.tensor_len()
    }

    /// Embed one encoded image (a batch of one, decoded on the calling thread).
    pub fn embed(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        let mut v = self.embed_batch(&[bytes])?;
        Ok(v.pop().expect("one result per image"))
    }

    /// Embed several images; the first failing image fails the call (its index is in the error).
    pub fn embed_batch(&self, images: &[&[u8]]) -> Result<Vec<Vec<f32>>> {
        self.embed_batch_with(images, &|| false)
    }

    /// [`Embedder::embed_batch`] with an interrupt check: `cancelled` is called on the calling
    /// thread between images and between inference chunks (and about every 20 ms while workers
    /// decode); returning `true` stops with [`ErrorKind::Cancelled`]. If it panics (e.g. a
    /// PostgreSQL ERROR turned into a Rust panic), the workers are stopped and joined before the
    /// panic continues.
    pub fn embed_batch_with(
        &self,
        images: &[&[u8]],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<f32>>> {
        all_or_first_error(self.embed_batch_each(images, cancelled)?)
    }

    /// Like [`Embedder::embed_batch_with`], but a bad image only fails its own entry: the outer
    /// error is for cancellation, inference failures and out-of-memory.
    ///
    /// Decoding happens on worker threads (one per image at most, `decode_threads` in all) that
    /// share one [`DecodeBudget`] of `limits.max_decode_bytes`; inference runs on a worker thread
    /// too, while the calling thread calls `cancelled` about every 20 ms: when it returns `true`,
    /// decoders stop at their next read and a running ONNX Runtime call is terminated
    /// (`RunOptions::terminate`), and the result is [`ErrorKind::Cancelled`].
    pub fn embed_batch_each(
        &self,
        images: &[&[u8]],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<ImageResult>> {
        self.preparer()
            .embed_each(images, cancelled, &mut |buf, n| {
                self.infer_with(buf, n, cancelled)
            })
    }

    /// How this embedder decodes and batches (for [`Preparer::embed_each`] with another inference step).
    pub fn preparer(&self) -> Preparer<'_> {
        Preparer {
            pre: &self.model.pre,
            limits: self.limits,
            jpeg_dct_scaling: self.jpeg_dct_scaling,
            decode_threads: self.decode_threads,
            max_batch: self.max_batch,
        }
    }

    /// Decode + preprocess one image into a fresh tensor buffer (for tools and benchmarks).
    pub fn preprocess(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        let mut out = try_zeroed::<f32>(self.tensor_len(), "the input tensor")?;
        self.model
            .pre
            .process_bytes(bytes, &self.limits, self.jpeg_dct_scaling, &mut out)?;
        Ok(out)
    }

    /// Run the model on `n` preprocessed images (`tensor.len() == n * tensor_len()`), one call.
    pub fn infer(&self, tensor: Vec<f32>, n: usize) -> Result<Vec<Vec<f32>>> {
        self.infer_with(tensor, n, &|| false)
    }

    /// [`Embedder::infer`], cancellable: ONNX Runtime runs on a worker thread (signals blocked)
    /// while the calling thread calls `cancelled` about every 20 ms; `true` terminates the run
    /// (ONNX Runtime stops at its next node) and returns [`ErrorKind::Cancelled`]. A panicking
    /// `cancelled` terminates the run and waits for the worker before the panic continues.
    pub fn infer_with(
        &self,
        tensor: Vec<f32>,
        n: usize,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<f32>>> {
        if tensor.len() != n * self.tensor_len() || n == 0 {
            return Err(Error::new(
                ErrorKind::Inference,
                format!(
                    "input tensor holds {} values, expected {} images x {}",
                    tensor.len(),
                    n,
                    self.tensor_len()
                ),
            ));
        }
        let options = RunOptions::new().map_err(|e| {
            Error::new(
                ErrorKind::Inference,
                format!("cannot create ONNX Runtime run options: {e}"),
            )
        })?;
        /// Terminates the run unless disarmed (covers a panicking `cancelled`).
        struct TerminateOnDrop<'a>(&'a RunOptions, bool);
        impl Drop for TerminateOnDrop<'_> {
            fn drop(&mut self) {
                if self.1 {
                    let _ = self.0.terminate();
                }
            }
        }
        let (tx, rx) = mpsc::channel::<Result<Vec<Vec<f32>>>>();
        std::thread::scope(|s| {
            let blocked = SignalsBlocked::new();
            let options = &options;
            s.spawn(move || {
                let r = catch_unwind(AssertUnwindSafe(|| self.run(tensor, n, options)))
                    .unwrap_or_else(|_| {
                        Err(Error::new(
                            ErrorKind::Inference,
                            "ONNX Runtime call panicked",
                        ))
                    });
                let _ = tx.send(r);
            });
            drop(blocked);
            let mut guard = TerminateOnDrop(options, true);
            loop {
                match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(r) => {
                        guard.1 = false;
                        return r;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        guard.1 = false;
                        return Err(Error::new(
                            ErrorKind::Inference,
                            "ONNX Runtime worker stopped without a result",
                        ));
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        if cancelled() {
                            // `guard` terminates the run; the scope waits for the worker.
                            return Err(cancelled_error());
                        }
                    }
                }
            }
        })
    }

    fn run(&self, tensor: Vec<f32>, n: usize, options: &RunOptions) -> Result<Vec<Vec<f32>>> {
        let spec = &self.model.spec;
        let shape = [n, 3, spec.input_height as usize, spec.input_width as usize];
        let input = Tensor::from_array((shape, tensor)).map_err(|e| {
            Error::new(
                ErrorKind::Inference,
                format!("cannot create the input tensor: {e}"),
            )
        })?;
        let mut session = self.model.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run_with_options(ort::inputs![spec.input_name.as_str() => input], options)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Inference,
                    format!(
                        "ONNX Runtime failed to run model \"{}\": {}",
                        spec.name,
                        scrub_paths(&e.to_string())
                    ),
                )
            })?;
        let value = outputs.get(&spec.output_name).ok_or_else(|| {
            Error::new(
                ErrorKind::Inference,
                format!(
                    "model \"{}\" returned no output \"{}\"",
                    spec.name, spec.output_name
                ),
            )
        })?;
        let (out_shape, data) = value.try_extract_tensor::<f32>().map_err(|e| {
            Error::new(
                ErrorKind::ModelInvalid,
                format!(
                    "output \"{}\" is not a float32 tensor: {e}",
                    spec.output_name
                ),
            )
        })?;
        if out_shape.first().copied() != Some(n as i64) || data.len() != n * spec.dims {
            return Err(Error::new(
                ErrorKind::ModelInvalid,
                format!(
                    "model \"{}\" output \"{}\" has shape {:?}; expected [{n}, {}] (dims in the model spec)",
                    spec.name,
                    spec.output_name,
                    &out_shape[..],
                    spec.dims
                ),
            ));
        }
        let mut out = try_with_capacity(n, "the embeddings")?;
        for c in data.chunks_exact(spec.dims) {
            let mut v = try_with_capacity(spec.dims, "an embedding")?;
            v.extend_from_slice(c);
            out.push(v);
        }
        Ok(out)
    }
}

/// Decoding and batching of [`Embedder::embed_batch_each`], with the inference step given by the caller: the
/// in-backend path runs its own session, the inference service's client sends each chunk to the service.
/// Both decode and preprocess with this same code, so their tensors are the same bytes.
#[derive(Clone, Copy)]
pub struct Preparer<'a> {
    pub pre: &'a Preprocessor,
    pub limits: Limits,
    pub jpeg_dct_scaling: bool,
    /// Decode threads; 0 = available parallelism.
    pub decode_threads: usize,
    /// Images per `infer` call at most.
    pub max_batch: usize,
}

impl Preparer<'_> {
    /// [`Embedder::embed_batch_each`] with `infer(tensor, n)` as the inference of each chunk of at most
    /// `max_batch` good images.
    pub fn embed_each(
        &self,
        images: &[&[u8]],
        cancelled: &dyn Fn() -> bool,
        infer: &mut dyn FnMut(Vec<f32>, usize) -> Result<Vec<Vec<f32>>>,
    ) -> Result<Vec<ImageResult>> {
        let per = self.pre.tensor_len();
        let mut results: Vec<ImageResult> = try_with_capacity(images.len(), "the batch results")?;
        let budget = DecodeBudget::new(self.limits.max_decode_bytes);
        for chunk in images.chunks(self.max_batch.max(1)) {
            if cancelled() {
                return Err(cancelled_error());
            }
            let mut buf = try_zeroed::<f32>(per * chunk.len(), "the batch input tensor")?;
            let pre = self.preprocess_into(chunk, &mut buf, &budget, cancelled)?;
            // Compact the successfully preprocessed images to the front of the buffer.
            let mut ok = 0usize;
            for (i, r) in pre.iter().enumerate() {
                if r.is_ok() {
                    if i != ok {
                        buf.copy_within(i * per..(i + 1) * per, ok * per);
                    }
                    ok += 1;
                }
            }
            buf.truncate(ok * per);
            let mut embeddings = if ok > 0 { infer(buf, ok)? } else { Vec::new() }.into_iter();
            for r in pre {
                results.push(match r {
                    Ok(()) => Ok(embeddings.next().expect("one embedding per good image")),
                    Err(e) => Err(e),
                });
            }
        }
        Ok(results)
    }

    /// Preprocess `images` into `buf` (one `tensor_len()` slot each) on worker threads sharing
    /// `budget`; per-image results in order. The calling thread only waits and polls `cancelled`.
    fn preprocess_into(
        &self,
        images: &[&[u8]],
        buf: &mut [f32],
        budget: &DecodeBudget,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Vec<Result<()>>> {
        let per = self.pre.tensor_len();
        let pre = self.pre;
        let (limits, dct) = (&self.limits, self.jpeg_dct_scaling);
        let threads = if self.decode_threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.decode_threads
        }
        .min(images.len())
        .max(1);

        let stop = AtomicBool::new(false);
        // Sets `stop` however this function is left (return, error or a panicking `cancelled`).
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let (job_tx, job_rx) = mpsc::channel::<(usize, &mut [f32])>();
        for job in buf.chunks_exact_mut(per).enumerate() {
            job_tx.send(job).expect("receiver alive");
        }
        drop(job_tx);
        let job_rx = Mutex::new(job_rx);
        let (res_tx, res_rx) = mpsc::channel::<(usize, Result<()>)>();
        let mut results: Vec<Option<Result<()>>> =
            try_with_capacity(images.len(), "the batch results")?;
        results.resize_with(images.len(), || None);
        std::thread::scope(|s| -> Result<()> {
            let _stop_guard = StopOnDrop(&stop);
            // Workers start with every signal blocked (see `SignalsBlocked`); the calling thread's
            // mask is restored as soon as they are spawned.
            let blocked = SignalsBlocked::new();
            for _ in 0..threads {
                let (job_rx, res_tx, stop) = (&job_rx, res_tx.clone(), &stop);
                s.spawn(move || loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((i, slot)) = job else { break };
                    let r = pre.process_bytes_budgeted(images[i], limits, dct, budget, stop, slot);
                    if res_tx.send((i, r)).is_err() {
                        break;
                    }
                });
            }
            drop(blocked);
            drop(res_tx);
            let mut received = 0;
            while received < images.len() {
                match res_rx.recv_timeout(Duration::from_millis(20)) {
                    Ok((i, r)) => {
                        results[i] = Some(r);
                        received += 1;
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
                if received < images.len() && cancelled() {
                    return Err(cancelled_error());
                }
            }
            Ok(())
        })?;
        let results: Vec<Result<()>> = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(Error::invalid("image was not processed (worker stopped)")))
            })
            .collect();
        // An out-of-memory is not the image's fault: fail the call (SQLSTATE 53200), as a
        // cancellation noticed by a decoder does.
        for r in &results {
            if let Err(e) = r {
                if matches!(e.kind(), ErrorKind::OutOfMemory | ErrorKind::Cancelled) {
                    return Err(e.clone());
                }
            }
        }
        Ok(results)
    }
}

/// [`Embedder::embed_batch_with`]'s rule: the first bad image fails the call (with its index when there
/// are several images).
pub fn all_or_first_error(results: Vec<ImageResult>) -> Result<Vec<Vec<f32>>> {
    let several = results.len() > 1;
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| if several { e.at_index(i) } else { e }))
        .collect()
}

fn cancelled_error() -> Error {
    Error::new(ErrorKind::Cancelled, "embedding was cancelled")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn paths_are_scrubbed() {
        assert_eq!(
            scrub_paths("Load model from /srv/pg/models/m.onnx failed: bad"),
            "Load model from m.onnx failed: bad"
        );
        assert_eq!(
            scrub_paths("/usr/lib/libonnxruntime.so: invalid ELF header"),
            "libonnxruntime.so: invalid ELF header"
        );
        assert_eq!(
            scrub_paths("path \"/a/b/c.so\" and 3/4 and a/b"),
            "path \"c.so\" and 3/4 and a/b"
        );
        assert_eq!(scrub_paths("no paths here"), "no paths here");
    }

    #[test]
    fn thread_clamp() {
        let n = std::thread::available_parallelism().unwrap().get();
        assert_eq!(effective_intra_threads(0), 0);
        assert_eq!(effective_intra_threads(1), 1);
        assert_eq!(effective_intra_threads(10_000), n);
    }

    #[test]
    fn embedder_is_thread_safe() {
        assert_send_sync::<Embedder>();
        assert_send_sync::<EmbedderConfig>();
    }

    #[cfg(unix)]
    fn current_mask_blocks(sig: libc::c_int) -> bool {
        // SAFETY: query-only pthread_sigmask (null new set) into an initialised local.
        unsafe {
            let mut cur: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur);
            libc::sigismember(&cur, sig) == 1
        }
    }

    #[cfg(unix)]
    #[test]
    fn spawned_threads_block_signals_and_caller_is_restored() {
        assert!(!current_mask_blocks(libc::SIGINT));
        let inner = {
            let _g = SignalsBlocked::new();
            std::thread::spawn(|| {
                current_mask_blocks(libc::SIGINT) && current_mask_blocks(libc::SIGUSR1)
            })
        };
        assert!(!current_mask_blocks(libc::SIGINT), "caller mask restored");
        assert!(
            inner.join().unwrap(),
            "thread spawned under the guard has signals blocked"
        );
    }
}
