//! The `embedding` varlena: `[varlena header: 4][dims: i16][unused: i16][f32 × dims]`, the same layout and
//! binary wire format as pgvector's `vector`, so tools that speak one speak the other.

use crate::pg::fmgr::{error, raise};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

/// Largest number of dimensions an `embedding` may have.
pub const MAX_DIMS: usize = 16000;
const HEADER: usize = 8;

/// PostgreSQL's `VARATT_IS_4B_U`: a varlena with a 4-byte header, neither compressed nor external.
///
/// # Safety
/// `p` must point to the first byte of a varlena.
#[inline(always)]
unsafe fn is_plain_4b(p: *const u8) -> bool {
    // SAFETY: guaranteed by the caller: the header's first byte is readable.
    let first = unsafe { *p };
    if cfg!(target_endian = "little") {
        first & 0x03 == 0x00
    } else {
        first & 0xC0 == 0x00
    }
}

/// A detoasted `embedding` borrowed from PostgreSQL memory.
#[derive(Clone, Copy)]
pub struct EmbeddingRef<'a> {
    values: &'a [f32],
}

impl<'a> EmbeddingRef<'a> {
    /// Reads (and detoasts if needed) an `embedding` datum.
    ///
    /// # Safety
    /// `datum` must be a non-null datum of type `embedding`. The result borrows memory that lives in the
    /// current memory context (at least until the end of the current function call).
    pub unsafe fn from_datum(datum: pg_sys::Datum) -> EmbeddingRef<'a> {
        // SAFETY: the caller guarantees an embedding datum; pg_detoast_datum returns a plain 4-byte-header
        // varlena (possibly a palloc'd copy), which is valid for the current call.
        unsafe {
            let raw = datum.cast_mut_ptr::<pg_sys::varlena>();
            // A plain (4-byte header, uncompressed, inline) value is used where it lies; only other
            // forms go through pg_detoast_datum (an FFI call that pgrx guards with a setjmp: measurable
            // per row in a seq scan's distance operator).
            let p = if is_plain_4b(raw as *const u8) {
                raw as *const u8
            } else {
                pg_sys::pg_detoast_datum(raw) as *const u8
            };
            let total = pgrx::varsize(p as *const pg_sys::varlena);
            let dims = i16::from_ne_bytes([*p.add(4), *p.add(5)]);
            let dims = usize::try_from(dims).unwrap_or(usize::MAX / 8);
            if total < HEADER + dims * 4 {
                error(
                    PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                    "embedding value is corrupted: size does not match dimensions",
                );
            }
            let values = std::slice::from_raw_parts(p.add(HEADER) as *const f32, dims);
            EmbeddingRef { values }
        }
    }

    /// The float values.
    pub fn values(&self) -> &'a [f32] {
        self.values
    }

    /// Number of dimensions.
    pub fn dims(&self) -> usize {
        self.values.len()
    }
}

/// Builds a new `embedding` datum in the current memory context from `values`.
/// Raises an ERROR for an empty vector, too many dimensions, or a non-finite value.
pub fn new_datum(values: &[f32]) -> pg_sys::Datum {
    check_dims(values.len());
    check_finite(values);
    let size = HEADER + values.len() * 4;
    // SAFETY: palloc0 returns `size` writable bytes (or raises ERROR); we write the varlena header, the
    // dimension count and exactly `values.len()` f32s inside that allocation. palloc memory is MAXALIGNed.
    unsafe {
        let p = pg_sys::palloc0(size) as *mut u8;
        pgrx::set_varsize_4b(p as *mut pg_sys::varlena, size as i32);
        let dims = (values.len() as i16).to_ne_bytes();
        *p.add(4) = dims[0];
        *p.add(5) = dims[1];
        std::ptr::copy_nonoverlapping(values.as_ptr(), p.add(HEADER) as *mut f32, values.len());
        pg_sys::Datum::from(p)
    }
}

/// ERROR unless `dims` is within 1..=MAX_DIMS.
pub fn check_dims(dims: usize) {
    if dims == 0 {
        error(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            "embedding must have at least 1 dimension",
        );
    }
    if dims > MAX_DIMS {
        error(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("embedding cannot have more than {MAX_DIMS} dimensions (got {dims})"),
        );
    }
}

/// ERROR if any value is NaN or infinite, naming the first offending position (1-based).
pub fn check_finite(values: &[f32]) {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let what = if values[i].is_nan() {
            "NaN"
        } else {
            "infinite value"
        };
        raise(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("{what} not allowed in embedding"),
            Some(format!("Element {} is {}.", i + 1, values[i])),
            None,
        );
    }
}

/// ERROR unless `dims` matches the typmod (a typmod of -1 means unconstrained).
pub fn check_typmod(dims: usize, typmod: i32) {
    if typmod >= 0 && dims != typmod as usize {
        error(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("expected {typmod} dimensions, not {dims}"),
        );
    }
}

/// ERROR unless both operands have the same number of dimensions.
pub fn check_same_dims(a: &EmbeddingRef, b: &EmbeddingRef) {
    if a.dims() != b.dims() {
        raise(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!(
                "different embedding dimensions {} and {}",
                a.dims(),
                b.dims()
            ),
            None,
            Some("Both operands must have the same number of dimensions.".into()),
        );
    }
}
