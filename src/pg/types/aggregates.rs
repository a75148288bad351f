//! `avg(embedding)` state functions. The transition state is a `float8[]` holding `[count, sum_1 .. sum_d]`
//! in double precision, so partial states from parallel workers combine by adding arrays.
//! (`sum(embedding)` uses `embedding_add` directly as both transition and combine function.)

use super::embedding::{new_datum, EmbeddingRef, MAX_DIMS};
use crate::pg::fmgr::{arg, raise};
use crate::v1;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

v1!(
    pg_finfo_embedding_accum,
    pg_finfo_embedding_combine,
    pg_finfo_embedding_avg
);

/// Reads a `float8[]` state argument. The support functions are callable directly with any array, so
/// the state is validated (one dimension, at most `1 + MAX_DIMS` elements, no NULLs, a count that is a
/// non-negative integer) before anything is allocated from it.
///
/// # Safety
/// Argument `n` must be a non-null `float8[]`.
unsafe fn state(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Vec<f64> {
    // SAFETY: guaranteed by the caller; the array header is read (detoasted) before any element.
    let len = unsafe {
        let arr = pg_sys::pg_detoast_datum(arg(fcinfo, n).cast_mut_ptr()) as *mut pg_sys::ArrayType;
        if (*arr).ndim > 1 {
            bad_state("it has more than one dimension");
        }
        // The dimension lengths follow the fixed header (ARR_DIMS).
        let dims = (arr as *mut u8).add(std::mem::size_of::<pg_sys::ArrayType>()) as *mut i32;
        pg_sys::ArrayGetNItems((*arr).ndim, dims)
    };
    if len as usize > MAX_DIMS + 1 {
        bad_state("it has more elements than an embedding has dimensions");
    }
    // SAFETY: guaranteed by the caller.
    let arr = unsafe { Vec::<Option<f64>>::from_datum(arg(fcinfo, n), false) }.unwrap_or_default();
    let s: Vec<f64> = arr
        .into_iter()
        .map(|v| v.unwrap_or_else(|| bad_state("it contains NULL")))
        .collect();
    if s.first()
        .is_some_and(|c| !(c.is_finite() && *c >= 0.0 && c.fract() == 0.0))
    {
        bad_state("its first element is not a row count");
    }
    s
}

fn bad_state(why: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        format!("invalid avg(embedding) state: {why}"),
        None,
        Some(
            "The state is float8[] {count, sum_1, ..., sum_d}, as built by embedding_accum.".into(),
        ),
    )
}

fn mismatch(a: usize, b: usize) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
        format!("different embedding dimensions {a} and {b}"),
        None,
        Some("All aggregated embeddings must have the same number of dimensions.".into()),
    )
}

/// `embedding_accum(float8[], embedding) -> float8[]`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_accum(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: STRICT (state initialised to '{0}'), arguments (float8[], embedding).
    let mut s = unsafe { state(fcinfo, 0) };
    let e = unsafe { EmbeddingRef::from_datum(arg(fcinfo, 1)) };
    if s.len() <= 1 {
        s = vec![0.0; e.dims() + 1];
    } else if s.len() != e.dims() + 1 {
        mismatch(s.len() - 1, e.dims());
    }
    s[0] += 1.0;
    for (acc, v) in s[1..].iter_mut().zip(e.values()) {
        *acc += *v as f64;
    }
    s.into_datum().expect("float8[] datum")
}

/// `embedding_combine(float8[], float8[]) -> float8[]`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_combine(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: STRICT, two float8[] states.
    let (a, b) = unsafe { (state(fcinfo, 0), state(fcinfo, 1)) };
    let out = if a.len() <= 1 {
        b
    } else if b.len() <= 1 {
        a
    } else if a.len() != b.len() {
        mismatch(a.len() - 1, b.len() - 1)
    } else {
        a.iter().zip(&b).map(|(x, y)| x + y).collect()
    };
    out.into_datum().expect("float8[] datum")
}

/// `embedding_avg(float8[]) -> embedding` (NULL when no rows were aggregated)
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_avg(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: STRICT, a float8[] state.
    let s = unsafe { state(fcinfo, 0) };
    if s.len() <= 1 || s[0] == 0.0 {
        // SAFETY: returning NULL from a V1 function.
        return unsafe { pgrx::fcinfo::pg_return_null(fcinfo) };
    }
    let n = s[0];
    let values: Vec<f32> = s[1..].iter().map(|v| (v / n) as f32).collect();
    new_datum(&values)
}
