//! Index options: `CREATE INDEX ... USING lsh (v embedding_l2_ops) WITH (bits = 12, tables = 8, ...)`.

use crate::pg::compat::int_relopt as elt;
use imgsim_algo::lsh::LshParams;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// Parsed reloptions (`build_reloptions` fills this varlena struct).
#[repr(C)]
pub struct LshOptions {
    vl_len_: i32,
    /// Bits per table; 0 = chosen from the row count at build.
    pub bits: i32,
    pub tables: i32,
    pub sketch_bits: i32,
    pub seed: i32,
}

/// The fixed default seed: a dump/restore or REINDEX regenerates the same planes.
pub const DEFAULT_SEED: i32 = LshParams::DEFAULT_SEED as i32;

static KIND: AtomicU32 = AtomicU32::new(0);

/// Registers the options; called once from `_PG_init`.
pub fn init() {
    // SAFETY: called from _PG_init in the postmaster or a backend, before any index uses the options;
    // the option names and descriptions are static C strings.
    unsafe {
        let kind = pg_sys::add_reloption_kind();
        KIND.store(kind, Ordering::Relaxed);
        let lock = pg_sys::AccessExclusiveLock as pg_sys::LOCKMODE;
        pg_sys::add_int_reloption(
            kind,
            c"bits".as_ptr(),
            c"Hyperplanes per hash table (bucket code bits); 0 chooses from the row count".as_ptr(),
            0,
            0,
            24,
            lock,
        );
        pg_sys::add_int_reloption(
            kind,
            c"tables".as_ptr(),
            c"Number of hash tables; 0 chooses from the row count (1 while a scan reads every sketch: up to 32 MB of sketches, 8 above)"
                .as_ptr(),
            0,
            0,
            64,
            lock,
        );
        pg_sys::add_int_reloption(
            kind,
            c"sketch_bits".as_ptr(),
            c"Bits of the per-row sign sketch used to rank candidates (multiple of 64); 0 chooses from the dimensions (512 from 256 dimensions up, else 256)".as_ptr(),
            0,
            0,
            2048,
            lock,
        );
        pg_sys::add_int_reloption(
            kind,
            c"seed".as_ptr(),
            c"Seed of the random hyperplanes".as_ptr(),
            DEFAULT_SEED,
            0,
            i32::MAX,
            lock,
        );
    }
}

/// `amoptions`
#[pg_guard]
pub unsafe extern "C-unwind" fn amoptions(
    reloptions: pg_sys::Datum,
    validate: bool,
) -> *mut pg_sys::bytea {
    let tab = [
        elt(c"bits", std::mem::offset_of!(LshOptions, bits)),
        elt(c"tables", std::mem::offset_of!(LshOptions, tables)),
        elt(
            c"sketch_bits",
            std::mem::offset_of!(LshOptions, sketch_bits),
        ),
        elt(c"seed", std::mem::offset_of!(LshOptions, seed)),
    ];
    // SAFETY: the table describes `LshOptions` exactly; build_reloptions validates values and ranges.
    let opts = unsafe {
        pg_sys::build_reloptions(
            reloptions,
            validate,
            KIND.load(Ordering::Relaxed),
            size_of::<LshOptions>(),
            tab.as_ptr(),
            tab.len() as i32,
        )
    } as *mut LshOptions;
    if validate && !opts.is_null() {
        // SAFETY: non-null result of build_reloptions is a palloc'd LshOptions.
        let sketch = unsafe { (*opts).sketch_bits };
        if sketch % 64 != 0 {
            crate::pg::fmgr::error(
                pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
                format!("sketch_bits must be a multiple of 64, not {sketch}"),
            );
        }
    }
    opts as *mut pg_sys::bytea
}

/// Options of an index (defaults when none were given).
pub fn of(index: pg_sys::Relation) -> (i32, i32, i32, i32) {
    // SAFETY: rd_options is null or the LshOptions built by amoptions for this index.
    unsafe {
        let o = (*index).rd_options as *const LshOptions;
        if o.is_null() {
            (0, 0, 0, DEFAULT_SEED)
        } else {
            ((*o).bits, (*o).tables, (*o).sketch_bits, (*o).seed)
        }
    }
}

/// Number of hash tables of the index `oid` (the planner already holds a lock on it).
pub fn of_oid(oid: pg_sys::Oid) -> i32 {
    // SAFETY: the planner has the index locked; NoLock open/close just reads its relcache entry.
    unsafe {
        let rel = pg_sys::index_open(oid, pg_sys::NoLock as pg_sys::LOCKMODE);
        let (_, tables, _, _) = of(rel);
        pg_sys::index_close(rel, pg_sys::NoLock as pg_sys::LOCKMODE);
        tables
    }
}

/// The LSH parameters of `index` for `dims`-dimensional vectors over about `rows` rows: its options,
/// with `bits`, `tables` and `sketch_bits` chosen from `rows` and `dims` where they were left at 0
/// (automatic, `LshParams::suggested_*`), and no norm augmentation (`max_norm` 0: an inner-product
/// build or first insert sets it from the data). An automatic 512-bit sketch falls back to 256 bits
/// when the build structure would not fit `maintenance_work_mem` otherwise (so the automatic choice
/// never needs more memory than the 256-bit default did; with 256 bits up to a million rows also keep
/// one table).
pub fn params(
    index: pg_sys::Relation,
    dims: usize,
    metric: imgsim_algo::lsh::Metric,
    rows: u64,
) -> imgsim_algo::lsh::LshParams {
    use imgsim_algo::lsh::LshParams;
    let (bits, tables, sketch_bits, seed) = of(index);
    let with_sketch = |sketch_bits: u32| LshParams {
        dims: dims as u32,
        bits: if bits > 0 {
            bits as u32
        } else {
            LshParams::suggested_bits(rows)
        },
        tables: if tables > 0 {
            tables as u32
        } else {
            LshParams::suggested_tables(rows, sketch_bits)
        },
        sketch_bits,
        seed: seed as u64,
        metric,
        max_norm: 0.0,
    };
    if sketch_bits > 0 {
        return with_sketch(sketch_bits as u32);
    }
    let p = with_sketch(LshParams::suggested_sketch_bits(dims as u32));
    if super::build::structure_fits(rows as usize, &p).is_ok() {
        p
    } else {
        with_sketch(LshParams::DEFAULT_SKETCH_BITS)
    }
}
