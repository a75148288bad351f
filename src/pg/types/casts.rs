//! Casts between arrays and `embedding`: `real[]`, `double precision[]`, `integer[]`, `numeric[]` to
//! embedding (one function, dispatching on the array's element type) and embedding to `real[]`.

use super::embedding::{check_dims, check_typmod, new_datum, EmbeddingRef};
use crate::pg::fmgr::{arg, arg_i32, error, raise};
use crate::v1;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

v1!(pg_finfo_array_to_embedding, pg_finfo_embedding_to_float4);

/// Converts one array element of type `elem_type` to f32.
///
/// # Safety
/// `d` must be a non-null datum of type `elem_type`.
unsafe fn element_to_f32(d: pg_sys::Datum, elem_type: pg_sys::Oid) -> f64 {
    // SAFETY: `d` has type `elem_type` (guaranteed by the caller); numeric goes through PostgreSQL's own
    // numeric_float8 so rounding matches a `::float8` cast.
    unsafe {
        match elem_type {
            pg_sys::FLOAT4OID => f32::from_datum(d, false).unwrap_or_default() as f64,
            pg_sys::FLOAT8OID => f64::from_datum(d, false).unwrap_or_default(),
            pg_sys::INT4OID => i32::from_datum(d, false).unwrap_or_default() as f64,
            pg_sys::INT8OID => i64::from_datum(d, false).unwrap_or_default() as f64,
            pg_sys::INT2OID => i16::from_datum(d, false).unwrap_or_default() as f64,
            pg_sys::NUMERICOID => {
                let f = pgrx::direct_function_call_as_datum(pg_sys::numeric_float8, &[Some(d)]);
                f64::from_datum(f.expect("numeric_float8 result"), false).unwrap_or_default()
            }
            _ => error(
                PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
                "unsupported array element type for a cast to embedding",
            ),
        }
    }
}

/// `array_to_embedding(anyarray, int4, bool) -> embedding`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn array_to_embedding(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: STRICT; argument 0 is an array datum (the cast functions are declared per array type).
    let arr = unsafe { pg_sys::pg_detoast_datum(arg(fcinfo, 0).cast_mut_ptr()) }
        as *mut pg_sys::ArrayType;
    let typmod = unsafe { arg_i32(fcinfo, 1) };
    // SAFETY: `arr` is a detoasted array; ARR_NDIM/ARR_ELEMTYPE read its header.
    let (ndim, elem_type) = unsafe { ((*arr).ndim, (*arr).elemtype) };
    if ndim > 1 {
        error(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            "array must be 1-dimensional to cast to embedding",
        );
    }
    let (mut typlen, mut typbyval, mut typalign) = (0i16, false, 0 as std::ffi::c_char);
    let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
    let mut nulls: *mut bool = std::ptr::null_mut();
    let mut n: i32 = 0;
    // SAFETY: standard deconstruction of a valid array into palloc'd datum/null arrays of length n.
    let (elems, nulls) = unsafe {
        pg_sys::get_typlenbyvalalign(elem_type, &mut typlen, &mut typbyval, &mut typalign);
        pg_sys::deconstruct_array(
            arr,
            elem_type,
            typlen as i32,
            typbyval,
            typalign,
            &mut elems,
            &mut nulls,
            &mut n,
        );
        (
            std::slice::from_raw_parts(elems, n.max(0) as usize),
            std::slice::from_raw_parts(nulls, n.max(0) as usize),
        )
    };
    if let Some(i) = nulls.iter().position(|&isnull| isnull) {
        raise(
            PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
            "array must not contain nulls to cast to embedding",
            Some(format!("Element {} is NULL.", i + 1)),
            None,
        );
    }
    check_dims(elems.len());
    check_typmod(elems.len(), typmod);
    let mut values = Vec::with_capacity(elems.len());
    for (i, &d) in elems.iter().enumerate() {
        // SAFETY: non-null element of the array's element type.
        let v = unsafe { element_to_f32(d, elem_type) };
        let f = v as f32;
        if !v.is_finite() || !f.is_finite() {
            let what = if v.is_nan() {
                "NaN"
            } else if v.is_finite() {
                "out of range"
            } else {
                "infinite"
            };
            raise(
                PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                format!("{what} value not allowed in embedding"),
                Some(format!("Element {} is {v:e}.", i + 1)),
                None,
            );
        }
        values.push(f);
    }
    new_datum(&values)
}

/// `embedding_to_float4(embedding, int4, bool) -> real[]`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_to_float4(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: STRICT; argument 0 is an embedding.
    let e = unsafe { EmbeddingRef::from_datum(arg(fcinfo, 0)) };
    e.values().to_vec().into_datum().expect("real[] datum")
}
