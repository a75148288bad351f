//! Input/output functions of `embedding`: text, binary (send/recv), typmod.

use super::embedding::{check_dims, check_typmod, new_datum, EmbeddingRef, MAX_DIMS};
use super::text::{self, BinaryError, ParseError};
use crate::pg::fmgr::{arg, arg_i32, error, nargs, raise};
use crate::v1;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::ffi::{c_char, c_int, CStr};

extern "C" {
    /// PostgreSQL's shortest round-trip float4 formatter (src/common/f2s.c), the one float4out uses.
    fn float_to_shortest_decimal_bufn(f: f32, result: *mut c_char) -> c_int;
}

/// Appends the shortest text that reads back as exactly `v` (same output as PostgreSQL's float4out).
pub fn push_float(v: f32, out: &mut String) {
    let mut buf = [0u8; 32];
    // SAFETY: the formatter writes at most 16 bytes (FLOAT_SHORTEST_DECIMAL_LEN) into buf and returns the length.
    let n = unsafe { float_to_shortest_decimal_bufn(v, buf.as_mut_ptr() as *mut c_char) } as usize;
    out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or("NaN"));
}

v1!(
    pg_finfo_embedding_in,
    pg_finfo_embedding_out,
    pg_finfo_embedding_typmod_in,
    pg_finfo_embedding_recv,
    pg_finfo_embedding_send,
    pg_finfo_embedding_typmod
);

fn syntax_error(input: &str, detail: String) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
        format!("invalid input syntax for type embedding: \"{input}\""),
        Some(detail),
        Some("An embedding is written like [1,2.5,-3e-2].".into()),
    )
}

/// `embedding_in(cstring, oid, int4) -> embedding`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_in(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: argument 0 of a type input function is a valid NUL-terminated cstring.
    let input = unsafe { CStr::from_ptr(arg(fcinfo, 0).cast_mut_ptr::<c_char>()) };
    let input = input.to_string_lossy();
    // SAFETY: input functions get (cstring, oid, int4); older callers may pass only the first.
    let typmod = if unsafe { nargs(fcinfo) } >= 3 {
        unsafe { arg_i32(fcinfo, 2) }
    } else {
        -1
    };
    let values = match text::parse(&input, MAX_DIMS) {
        Ok(v) => v,
        Err(ParseError::Empty) => error(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            "embedding must have at least 1 dimension",
        ),
        Err(ParseError::Syntax { position, what }) => {
            syntax_error(&input, format!("{what} (at character {position})."))
        }
        Err(ParseError::NotANumber { element, position }) => syntax_error(
            &input,
            format!("Element {element} (at character {position}) is not a number."),
        ),
        Err(ParseError::NonFinite { element, position }) => raise(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            "NaN and infinity are not allowed in embedding",
            Some(format!(
                "Element {element} (at character {position}) is not finite."
            )),
            None,
        ),
        Err(ParseError::OutOfRange {
            element,
            position,
            token,
        }) => raise(
            PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
            format!("\"{token}\" is out of range for type embedding"),
            Some(format!(
                "Element {element} (at character {position}) does not fit in a 4-byte float."
            )),
            None,
        ),
        Err(ParseError::TooMany { max }) => error(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("embedding cannot have more than {max} dimensions"),
        ),
    };
    check_dims(values.len());
    check_typmod(values.len(), typmod);
    new_datum(&values)
}

/// `embedding_out(embedding) -> cstring`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_out(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: argument 0 is a non-null embedding (output functions are strict).
    let e = unsafe { EmbeddingRef::from_datum(arg(fcinfo, 0)) };
    let s = text::format(e.values(), push_float);
    // SAFETY: pstrdup-like copy into palloc'd memory, NUL terminated.
    unsafe {
        let p = pg_sys::palloc(s.len() + 1) as *mut u8;
        std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len());
        *p.add(s.len()) = 0;
        pg_sys::Datum::from(p)
    }
}

/// `embedding_typmod_in(cstring[]) -> int4`: `embedding(n)`.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_typmod_in(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    let mut count: c_int = 0;
    // SAFETY: argument 0 is the cstring[] of modifiers; ArrayGetIntegerTypmods parses each as an int4
    // (raising ERROR on non-integers) and returns a palloc'd array of `count` values.
    let mods = unsafe {
        let p = pg_sys::ArrayGetIntegerTypmods(
            arg(fcinfo, 0).cast_mut_ptr::<pg_sys::ArrayType>(),
            &mut count,
        );
        std::slice::from_raw_parts(p, count.max(0) as usize)
    };
    if mods.len() != 1 {
        error(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "invalid type modifier: embedding takes exactly one modifier, the number of dimensions",
        );
    }
    let n = mods[0] as i64;
    if n < 1 {
        error(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "dimensions for type embedding must be at least 1",
        );
    }
    if n > MAX_DIMS as i64 {
        error(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("dimensions for type embedding cannot exceed {MAX_DIMS}"),
        );
    }
    pg_sys::Datum::from(n as i32)
}

/// `embedding_recv(internal, oid, int4) -> embedding`: int16 dims, int16 unused, float4 × dims (network order).
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_recv(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let buf = arg(fcinfo, 0).cast_mut_ptr::<pg_sys::StringInfoData>();
    // SAFETY: receive functions get (internal StringInfo, oid, int4).
    let typmod = if unsafe { nargs(fcinfo) } >= 3 {
        unsafe { arg_i32(fcinfo, 2) }
    } else {
        -1
    };
    // SAFETY: `buf` is the message buffer: `data[cursor..len]` are the bytes not read yet.
    let rest = unsafe {
        let b = &*buf;
        std::slice::from_raw_parts(
            b.data.add(b.cursor as usize) as *const u8,
            (b.len - b.cursor).max(0) as usize,
        )
    };
    let values = match text::parse_binary(rest, MAX_DIMS) {
        Ok((values, used)) => {
            // SAFETY: `used` bytes are there (checked by parse_binary); this advances the cursor.
            unsafe { pg_sys::pq_getmsgbytes(buf, used as c_int) };
            values
        }
        Err(BinaryError::Short { need, have }) => error(
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            format!("insufficient data for embedding: {need} bytes needed, {have} left"),
        ),
        Err(BinaryError::BadDims(dims)) => error(
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            format!("invalid embedding dimensions {dims} in binary input"),
        ),
        Err(BinaryError::Reserved(_)) => error(
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            "invalid embedding binary input: reserved field must be zero",
        ),
        Err(BinaryError::TooMany { dims, max }) => error(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("embedding cannot have more than {max} dimensions (got {dims})"),
        ),
        Err(BinaryError::NonFinite { element }) => error(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("NaN or infinite value not allowed in embedding (element {element})"),
        ),
    };
    check_typmod(values.len(), typmod);
    new_datum(&values)
}

/// `embedding_send(embedding) -> bytea`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_send(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: argument 0 is a non-null embedding.
    let e = unsafe { EmbeddingRef::from_datum(arg(fcinfo, 0)) };
    let mut bytes = Vec::with_capacity(4 + e.dims() * 4);
    bytes.extend_from_slice(&(e.dims() as i16).to_be_bytes());
    bytes.extend_from_slice(&0i16.to_be_bytes());
    for v in e.values() {
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytea_datum(&bytes)
}

/// Copies bytes into a new palloc'd `bytea` datum.
pub fn bytea_datum(bytes: &[u8]) -> pg_sys::Datum {
    let size = bytes.len() + pg_sys::VARHDRSZ;
    // SAFETY: palloc returns `size` writable bytes; header then payload are written inside it.
    unsafe {
        let p = pg_sys::palloc(size) as *mut u8;
        pgrx::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(pg_sys::VARHDRSZ), bytes.len());
        pg_sys::Datum::from(p)
    }
}

/// `embedding(embedding, int4, bool) -> embedding`: the typmod coercion used by casts and assignments.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn embedding_typmod(
    fcinfo: pg_sys::FunctionCallInfo,
) -> pg_sys::Datum {
    // SAFETY: (embedding, int4, bool) arguments, strict.
    let datum = unsafe { arg(fcinfo, 0) };
    let e = unsafe { EmbeddingRef::from_datum(datum) };
    check_typmod(e.dims(), unsafe { arg_i32(fcinfo, 1) });
    datum
}
