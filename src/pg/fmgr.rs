//! Small helpers for hand-written fmgr (version-1 calling convention) functions.
//!
//! The `embedding` type is a pgvector-style varlena with a typmod, which pgrx's derive cannot express,
//! so its functions are plain `extern "C-unwind"` V1 functions declared in `sql/*.sql`. Every one of them is
//! wrapped in `#[pg_guard]`, so a Rust panic becomes a PostgreSQL ERROR instead of an abort.

use pgrx::pg_sys;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Declares `pg_finfo_<name>` for V1 functions: `v1!(pg_finfo_embedding_in);`.
#[macro_export]
macro_rules! v1 {
    ($($finfo:ident),+ $(,)?) => {
        $(
            #[no_mangle]
            #[doc(hidden)]
            pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
                const V1: ::pgrx::pg_sys::Pg_finfo_record = ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
                &V1
            }
        )+
    };
}

/// Raises an ERROR with a SQLSTATE, message, and optional detail and hint. Never returns.
pub fn raise(
    code: PgSqlErrorCode,
    message: impl Into<String>,
    detail: Option<String>,
    hint: Option<String>,
) -> ! {
    let mut report = pgrx::pg_sys::panic::ErrorReport::new(code, message.into(), "pg_imgsim");
    if let Some(d) = detail {
        report = report.set_detail(d);
    }
    if let Some(h) = hint {
        report = report.set_hint(h);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// Raises an ERROR with only a SQLSTATE and a message.
pub fn error(code: PgSqlErrorCode, message: impl Into<String>) -> ! {
    raise(code, message, None, None)
}

/// The `n`-th argument as a raw datum.
///
/// # Safety
/// `fcinfo` must be the live call info of the current function call and `n` < its `nargs`.
pub unsafe fn arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> pg_sys::Datum {
    // SAFETY: guaranteed by the caller (valid fcinfo, n in range).
    unsafe { pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, n) }
}

/// The `n`-th argument as an `i32` (for typmod arguments).
///
/// # Safety
/// As for [`arg`]; the argument must be an `int4`.
pub unsafe fn arg_i32(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> i32 {
    // SAFETY: guaranteed by the caller.
    unsafe { arg(fcinfo, n) }.value() as i32
}

/// Number of arguments the function was called with.
///
/// # Safety
/// `fcinfo` must be the live call info of the current function call.
pub unsafe fn nargs(fcinfo: pg_sys::FunctionCallInfo) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { (*fcinfo).nargs as usize }
}
