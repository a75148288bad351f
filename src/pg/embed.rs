//! `img_embed(bytea [, model])`, `img_embed_batch(bytea[], model)` and `imgsim_models()`: the SQL face
//! of the image pipeline (`imgsim_pipeline`). GUCs name the ONNX Runtime library and model directory
//! (superuser-only: they name files), the default model, the execution provider and the limits.

use crate::pg::fmgr::{arg, raise};
use crate::pg::service::client as service;
use crate::pg::types::embedding::new_datum;
use crate::v1;
use imgsim_pipeline::{
    all_or_first_error, Embedder, EmbedderConfig, ErrorKind, Limits, ModelRegistry, Provider,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PgSqlErrorCode};
use std::ffi::{CStr, CString};
use std::path::PathBuf;

pub static ORT_LIBRARY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"$libdir/pg_imgsim/libonnxruntime.so"));
pub static MODEL_DIR: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"$sharedir/pg_imgsim/models"));
pub static MODEL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"efficientnet_lite0"));
pub static PROVIDER: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"auto"));
pub static THREADS: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static MAX_INPUT_BYTES: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024 * 1024);
pub static MAX_PIXELS: GucSetting<i32> = GucSetting::<i32>::new(50_000_000);
/// In kB, like PostgreSQL's memory settings: 256 MB.
pub static MAX_DECODE_MEMORY: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024);

pub fn init_gucs() {
    GucRegistry::define_string_guc(
        c"pg_imgsim.onnxruntime_library",
        c"Path of the ONNX Runtime shared library ($libdir is expanded).",
        c"Loaded once per backend; superuser only.",
        &ORT_LIBRARY,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_imgsim.model_dir",
        c"Directory of <name>.onnx + <name>.json model files ($sharedir is expanded).",
        c"Superuser only.",
        &MODEL_DIR,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_imgsim.model",
        c"Model used by img_embed(bytea).",
        c"A plain name of a model in pg_imgsim.model_dir.",
        &MODEL,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_string_guc(
        c"pg_imgsim.execution_provider",
        c"auto, cpu or cuda.",
        c"auto uses CUDA when it loads, else the CPU, and says once in the log which one. Superuser only: \
          every provider holds its own session (and GPU memory) in each backend.",
        &PROVIDER,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_imgsim.threads",
        c"ONNX Runtime intra-op threads (0 = one per core).",
        c"Superuser only; capped at the number of cores.",
        &THREADS,
        0,
        1024,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_imgsim.max_input_bytes",
        c"Largest image (bytes) img_embed accepts.",
        c"Superuser only.",
        &MAX_INPUT_BYTES,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_imgsim.max_pixels",
        c"Largest decoded image (width x height) img_embed accepts; checked before decoding.",
        c"Superuser only.",
        &MAX_PIXELS,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_imgsim.max_decode_memory",
        c"Memory one img_embed or img_embed_batch call may use at once to decode and preprocess images.",
        c"Superuser only. Each image's need is estimated from its header and reserved before decoding; \
          parallel decoding of a batch waits for room; an image needing more than all of it is refused (54000).",
        &MAX_DECODE_MEMORY,
        1024,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_KB,
    );
    // SAFETY: called from _PG_init, after the pg_imgsim.* GUCs were defined.
    unsafe { crate::pg::compat::reserve_guc_prefix(c"pg_imgsim") };
}

fn guc_str(g: &GucSetting<Option<CString>>) -> String {
    g.get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Expands a leading `$libdir` / `$sharedir` like PostgreSQL does for library paths.
fn expand(path: &str) -> PathBuf {
    let dir = |f: unsafe fn(*const std::ffi::c_char, *mut std::ffi::c_char)| -> String {
        let mut buf = vec![0u8; pg_sys::MAXPGPATH as usize];
        // SAFETY: `my_exec_path` is set in every backend; the function writes a NUL-terminated path
        // of at most MAXPGPATH bytes.
        unsafe {
            f(
                std::ptr::addr_of!(pg_sys::my_exec_path) as *const std::ffi::c_char,
                buf.as_mut_ptr() as *mut std::ffi::c_char,
            );
            CStr::from_ptr(buf.as_ptr() as *const std::ffi::c_char)
                .to_string_lossy()
                .into_owned()
        }
    };
    if let Some(rest) = path.strip_prefix("$libdir") {
        PathBuf::from(dir(pg_sys::get_pkglib_path) + rest)
    } else if let Some(rest) = path.strip_prefix("$sharedir") {
        PathBuf::from(dir(pg_sys::get_share_path) + rest)
    } else {
        PathBuf::from(path)
    }
}

fn config() -> EmbedderConfig {
    config_checked().unwrap_or_else(|p| {
        raise(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid pg_imgsim.execution_provider \"{p}\""),
            None,
            Some("Use auto, cpu or cuda.".into()),
        )
    })
}

/// The session's model settings, or the invalid provider name (the inference service must not raise).
pub(crate) fn config_checked() -> Result<EmbedderConfig, String> {
    let mut cfg = EmbedderConfig::new(expand(&guc_str(&ORT_LIBRARY)), expand(&guc_str(&MODEL_DIR)));
    let p = guc_str(&PROVIDER);
    cfg.provider = Provider::parse(&p).ok_or(p)?;
    cfg.intra_threads = THREADS.get().max(0) as usize;
    cfg.limits = Limits {
        max_bytes: MAX_INPUT_BYTES.get() as usize,
        max_pixels: MAX_PIXELS.get() as u64,
        max_decode_bytes: MAX_DECODE_MEMORY.get() as u64 * 1024,
    };
    Ok(cfg)
}

/// Raises the pipeline error as a PostgreSQL ERROR with a fitting SQLSTATE and its hint.
fn fail(e: imgsim_pipeline::Error) -> ! {
    if e.kind() == ErrorKind::Cancelled {
        pg_sys::check_for_interrupts!();
    }
    let code = match e.kind() {
        ErrorKind::InvalidInput => PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
        ErrorKind::Unsupported => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        ErrorKind::LimitExceeded => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        ErrorKind::ModelMissing => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        ErrorKind::ModelInvalid => PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
        ErrorKind::RuntimeUnavailable => PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
        ErrorKind::ProviderUnavailable => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        ErrorKind::Inference => PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
        ErrorKind::Cancelled => PgSqlErrorCode::ERRCODE_QUERY_CANCELED,
        ErrorKind::OutOfMemory => PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
    };
    // Server paths and raw library errors: the server log only (never sent to the client, whatever
    // its client_min_messages).
    if let Some(detail) = e.detail_for_log() {
        pgrx::ereport!(
            pgrx::PgLogLevel::LOG_SERVER_ONLY,
            PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!("pg_imgsim: {}: {detail}", e.message())
        );
    }
    raise(
        code,
        e.message().to_string(),
        None,
        e.hint().map(str::to_string),
    )
}

/// Loads (or takes from this backend's cache) the embedder for `model`; logs the provider once.
fn embedder(model: &str) -> Embedder {
    let e = Embedder::load(&config(), model).unwrap_or_else(|e| fail(e));
    if e.newly_loaded() {
        match e.cuda_fallback_reason() {
            Some(why) => pgrx::log!("pg_imgsim: model {model} runs on {} ({why})", e.provider()),
            None => pgrx::log!("pg_imgsim: model {model} runs on {}", e.provider()),
        }
    }
    e
}

/// True when the user cancelled the query or the backend is asked to exit (checked between images; other
/// pending interrupts are served by the CHECK_FOR_INTERRUPTS after the batch).
fn interrupted() -> bool {
    // SAFETY: reading PostgreSQL's volatile signal flags from the backend's own thread.
    unsafe {
        std::ptr::read_volatile(std::ptr::addr_of!(pg_sys::QueryCancelPending)) != 0
            || std::ptr::read_volatile(std::ptr::addr_of!(pg_sys::ProcDiePending)) != 0
    }
}

v1!(
    pg_finfo_img_embed,
    pg_finfo_img_embed_default,
    pg_finfo_img_embed_batch
);

/// `img_embed(bytea, text) -> embedding`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn img_embed(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: STRICT (bytea, text).
    let (bytes, model) = unsafe {
        (
            <&[u8]>::from_datum(arg(fcinfo, 0), false).unwrap_or_default(),
            String::from_datum(arg(fcinfo, 1), false).unwrap_or_default(),
        )
    };
    embed_one(bytes, &model)
}

/// `img_embed(bytea) -> embedding` with the `pg_imgsim.model` default.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn img_embed_default(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: STRICT (bytea).
    let bytes = unsafe { <&[u8]>::from_datum(arg(fcinfo, 0), false).unwrap_or_default() };
    embed_one(bytes, &guc_str(&MODEL))
}

fn embed_one(bytes: &[u8], model: &str) -> pg_sys::Datum {
    let cfg = config();
    if service::usable(&cfg) {
        let mut v = service::embed_each(&cfg, &[bytes], model, &interrupted)
            .and_then(all_or_first_error)
            .unwrap_or_else(|e| fail(e));
        return new_datum(&v.pop().expect("one embedding per image"));
    }
    let e = embedder(model);
    let v = e.embed(bytes).unwrap_or_else(|e| fail(e));
    new_datum(&v)
}

/// `img_embed_batch(bytea[], text) -> embedding[]`: decodes in worker threads, one batched inference.
/// NULL elements give NULL results; the model NULL means `pg_imgsim.model`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn img_embed_batch(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: (bytea[], text), not STRICT: nulls checked here.
    unsafe {
        if pgrx::fcinfo::pg_arg_is_null(fcinfo, 0) {
            return pgrx::fcinfo::pg_return_null(fcinfo);
        }
        let model = if pgrx::fcinfo::pg_arg_is_null(fcinfo, 1) {
            guc_str(&MODEL)
        } else {
            String::from_datum(arg(fcinfo, 1), false).unwrap_or_default()
        };
        let arr = pg_sys::pg_detoast_datum(arg(fcinfo, 0).cast_mut_ptr()) as *mut pg_sys::ArrayType;
        let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
        let mut nulls: *mut bool = std::ptr::null_mut();
        let mut n = 0i32;
        pg_sys::deconstruct_array(
            arr,
            pg_sys::BYTEAOID,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        let n = n.max(0) as usize;
        let (elems, nulls) = (
            std::slice::from_raw_parts(elems, n),
            std::slice::from_raw_parts(nulls, n),
        );
        let present: Vec<usize> = (0..n).filter(|&i| !nulls[i]).collect();
        let images: Vec<&[u8]> = present
            .iter()
            .map(|&i| <&[u8]>::from_datum(elems[i], false).unwrap_or_default())
            .collect();
        let cfg = config();
        let vecs = if service::usable(&cfg) {
            service::embed_each(&cfg, &images, &model, &interrupted).and_then(all_or_first_error)
        } else {
            embedder(&model).embed_batch_with(&images, &interrupted)
        }
        .unwrap_or_else(|err| fail(err));
        pg_sys::check_for_interrupts!();
        let mut out = vec![pg_sys::Datum::from(0usize); n];
        let mut out_nulls = nulls.to_vec();
        for (k, &i) in present.iter().enumerate() {
            out[i] = new_datum(&vecs[k]);
            out_nulls[i] = false;
        }
        let elem_type = pg_sys::get_element_type(pg_sys::get_fn_expr_rettype((*fcinfo).flinfo));
        let mut dims = [n as i32];
        let mut lbs = [1i32];
        let result = pg_sys::construct_md_array(
            out.as_mut_ptr(),
            out_nulls.as_mut_ptr(),
            if n == 0 { 0 } else { 1 },
            dims.as_mut_ptr(),
            lbs.as_mut_ptr(),
            elem_type,
            -1,
            false,
            pg_sys::TYPALIGN_INT as std::ffi::c_char,
        );
        pg_sys::Datum::from(result)
    }
}

/// Models installed in `pg_imgsim.model_dir` (the issue asked for `pg_imgsim.models()`, but PostgreSQL
/// reserves schema names starting with `pg_`).
#[pg_extern(stable, parallel_safe, name = "imgsim_models")]
fn imgsim_models() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(dims, i32),
        name!(weights, String),
        name!(onnx_sha256, Option<String>),
    ),
> {
    let reg = ModelRegistry::new(expand(&guc_str(&MODEL_DIR)));
    let list = reg.list().unwrap_or_else(|e| fail(e));
    TableIterator::new(
        list.into_iter()
            .filter(|m| m.has_onnx)
            .map(|m| (m.name, m.dims as i32, m.weights, m.onnx_sha256)),
    )
}
