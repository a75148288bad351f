//! Operators and functions on `embedding`: distances, norms, element-wise arithmetic, comparison.
//! The arithmetic itself lives in the pure `imgsim_algo::distance` module.

use super::embedding::{check_same_dims, new_datum, EmbeddingRef};
use crate::pg::fmgr::{arg, error};
use crate::v1;
use imgsim_algo::distance;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::cmp::Ordering;

/// The two embedding arguments of a binary function, checked to have equal dimensions.
///
/// # Safety
/// `fcinfo` must be a call with two non-null `embedding` arguments.
unsafe fn two<'a>(fcinfo: pg_sys::FunctionCallInfo) -> (EmbeddingRef<'a>, EmbeddingRef<'a>) {
    // SAFETY: guaranteed by the caller.
    let (a, b) = unsafe {
        (
            EmbeddingRef::from_datum(arg(fcinfo, 0)),
            EmbeddingRef::from_datum(arg(fcinfo, 1)),
        )
    };
    check_same_dims(&a, &b);
    (a, b)
}

/// The single embedding argument.
///
/// # Safety
/// `fcinfo` must be a call whose first argument is a non-null `embedding`.
unsafe fn one<'a>(fcinfo: pg_sys::FunctionCallInfo) -> EmbeddingRef<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe { EmbeddingRef::from_datum(arg(fcinfo, 0)) }
}

fn float8(v: f64) -> pg_sys::Datum {
    v.into_datum().expect("float8 datum")
}

/// Result of element-wise arithmetic: ERROR on overflow to infinity, else a new embedding.
fn arith_result(values: Vec<f32>) -> pg_sys::Datum {
    if values.iter().any(|v| !v.is_finite()) {
        error(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            "value out of range: overflow in embedding arithmetic",
        );
    }
    new_datum(&values)
}

v1!(
    pg_finfo_embedding_l2_distance,
    pg_finfo_embedding_l2_squared_distance,
    pg_finfo_embedding_cosine_distance,
    pg_finfo_embedding_inner_product,
    pg_finfo_embedding_negative_inner_product,
    pg_finfo_embedding_l2_norm,
    pg_finfo_embedding_l2_normalize,
    pg_finfo_embedding_dims,
    pg_finfo_embedding_add,
    pg_finfo_embedding_sub,
    pg_finfo_embedding_mul,
    pg_finfo_embedding_cmp,
    pg_finfo_embedding_eq,
    pg_finfo_embedding_ne,
    pg_finfo_embedding_lt,
    pg_finfo_embedding_le,
    pg_finfo_embedding_gt,
    pg_finfo_embedding_ge,
);

macro_rules! binary_float8 {
    ($name:ident, |$a:ident, $b:ident| $body:expr) => {
        #[doc = concat!("`", stringify!($name), "(embedding, embedding) -> float8`")]
        #[pg_guard]
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: declared STRICT with two embedding arguments in sql/embedding.sql.
            let ($a, $b) = unsafe { two(fcinfo) };
            let ($a, $b) = ($a.values(), $b.values());
            float8($body)
        }
    };
}

binary_float8!(embedding_l2_distance, |a, b| (distance::l2_squared(a, b)
    as f64)
    .sqrt());
binary_float8!(
    embedding_l2_squared_distance,
    |a, b| distance::l2_squared(a, b) as f64
);
// Cosine distance with a zero vector is undefined: NaN (documented; matches pgvector), sorted last.
binary_float8!(
    embedding_cosine_distance,
    |a, b| distance::cosine_distance(a, b) as f64
);
binary_float8!(embedding_inner_product, |a, b| distance::dot(a, b) as f64);
binary_float8!(
    embedding_negative_inner_product,
    |a, b| -(distance::dot(a, b) as f64)
);

/// `l2_norm(embedding) -> float8`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_l2_norm(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: STRICT, one embedding argument.
    let a = unsafe { one(fcinfo) };
    float8(
        a.values()
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt(),
    )
}

/// `l2_normalize(embedding) -> embedding`; a zero vector stays a zero vector.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_l2_normalize(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: STRICT, one embedding argument.
    let a = unsafe { one(fcinfo) };
    let norm = a
        .values()
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return new_datum(a.values());
    }
    new_datum(
        &a.values()
            .iter()
            .map(|&v| (v as f64 / norm) as f32)
            .collect::<Vec<_>>(),
    )
}

/// `dims(embedding) -> int4`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_dims(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: STRICT, one embedding argument.
    let a = unsafe { one(fcinfo) };
    pg_sys::Datum::from(a.dims() as i32)
}

macro_rules! binary_embedding {
    ($name:ident, $op:path) => {
        #[doc = concat!("`", stringify!($name), "(embedding, embedding) -> embedding` (element-wise)")]
        #[pg_guard]
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: declared STRICT with two embedding arguments.
            let (a, b) = unsafe { two(fcinfo) };
            arith_result($op(a.values(), b.values()))
        }
    };
}

binary_embedding!(embedding_add, distance::add);
binary_embedding!(embedding_sub, distance::sub);
binary_embedding!(embedding_mul, distance::mul);

/// Total order for btree: element by element, then the shorter vector first.
pub fn compare(a: &[f32], b: &[f32]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        match x.partial_cmp(y) {
            Some(Ordering::Equal) | None => continue,
            Some(o) => return o,
        }
    }
    a.len().cmp(&b.len())
}

/// Compares the two embedding arguments (any dimensions).
///
/// # Safety
/// `fcinfo` must be a call with two non-null `embedding` arguments.
unsafe fn cmp_args(fcinfo: pg_sys::FunctionCallInfo) -> Ordering {
    // SAFETY: guaranteed by the caller.
    let (a, b) = unsafe {
        (
            EmbeddingRef::from_datum(arg(fcinfo, 0)),
            EmbeddingRef::from_datum(arg(fcinfo, 1)),
        )
    };
    compare(a.values(), b.values())
}

/// `embedding_cmp(embedding, embedding) -> int4` (btree support function 1)
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_cmp(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: STRICT, two embedding arguments.
    pg_sys::Datum::from(unsafe { cmp_args(fcinfo) } as i32)
}

macro_rules! comparison {
    ($name:ident, $pred:expr) => {
        #[doc = concat!("`", stringify!($name), "(embedding, embedding) -> bool`")]
        #[pg_guard]
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            // SAFETY: STRICT, two embedding arguments.
            let o = unsafe { cmp_args(fcinfo) };
            pg_sys::Datum::from(($pred)(o))
        }
    };
}

comparison!(embedding_eq, |o: Ordering| o == Ordering::Equal);
comparison!(embedding_ne, |o: Ordering| o != Ordering::Equal);
comparison!(embedding_lt, |o: Ordering| o == Ordering::Less);
comparison!(embedding_le, |o: Ordering| o != Ordering::Greater);
comparison!(embedding_gt, |o: Ordering| o == Ordering::Greater);
comparison!(embedding_ge, |o: Ordering| o != Ordering::Less);
