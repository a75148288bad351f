//! `aminsert`: store the vector in a VECTOR page with room (found through the free space map, else a
//! new page), then add one entry per table to the bucket's superbucket chain (first page with room, else
//! a new page linked at the chain's end). Each page change is one GenericXLog record.

use super::build::{check_index_dims, write_meta_page, write_structure};
use super::grow::{self, SharedStructure, Trigger};
use super::options;
use super::page::{self, BucketEntry, VectorItem, VectorRef};
use super::shape::{self, block_of, new_buffer, page_of, read_locked, release, Shape};
use super::xlog::PageWrite;
use crate::pg::types::embedding::EmbeddingRef;
use imgsim_algo::lsh::{LshParams, Metric};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use std::rc::Rc;

/// `aminsert`
#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn aminsert(
    index: pg_sys::Relation,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    heap_tid: pg_sys::ItemPointer,
    _heap: pg_sys::Relation,
    _check_unique: pg_sys::IndexUniqueCheck::Type,
    _index_unchanged: bool,
    _index_info: *mut pg_sys::IndexInfo,
) -> bool {
    // SAFETY: one key column: values[0]/isnull[0] are valid; heap_tid points to the new heap tuple.
    unsafe {
        if *isnull {
            return false;
        }
        // Detoasted copies and other per-row allocations go to a context deleted after the row.
        let datum = *values;
        let tid = *heap_tid;
        PgMemoryContexts::new("lsh insert").switch_to(|_| {
            let e = EmbeddingRef::from_datum(datum);
            insert_row(index, tid, e.values());
        });
    }
    false
}

/// Inserts one row (used by aminsert) under the structure's share lock; then, when it met a long
/// superbucket chain, lets grow.rs rebuild the bucket structure if the index has outgrown it.
pub fn insert_row(index: pg_sys::Relation, tid: pg_sys::ItemPointerData, values: &[f32]) {
    let trigger = {
        let _shared = SharedStructure::lock(index);
        insert_locked(index, tid, values)
    };
    if let Some(trigger) = trigger {
        grow::maybe_rebuild(index, trigger);
    }
}

/// Inserts one row; says whether it asks for a rebuild of the bucket structure (grow.rs): one of its
/// chains was longer than [`grow::LONG_CHAIN_PAGES`], or (inner product) the row is far longer than the
/// index's norm bound.
fn insert_locked(
    index: pg_sys::Relation,
    tid: pg_sys::ItemPointerData,
    values: &[f32],
) -> Option<Trigger> {
    let shape = shape::load(index).unwrap_or_else(|| initialise(index, values));
    if values.len() != shape.dims() {
        shape::dims_mismatch(shape.dims(), values.len());
    }
    let hash = shape.model.hash(values).unwrap_or_else(|e| {
        crate::pg::fmgr::error(
            pgrx::PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("cannot hash embedding: {e}"),
        )
    });
    let vref = insert_vector(index, &VectorItem::encode(tid, values));
    let mut longest = 0;
    for (t, &code) in hash.codes.iter().enumerate() {
        longest = longest.max(insert_entry(
            index,
            shape.head(t, code),
            &BucketEntry::encode(code, vref, &hash.sketch),
        ));
    }
    let max_norm = shape.params().max_norm;
    let norm = imgsim_algo::distance::norm(values);
    if max_norm > 0.0 && norm > grow::NORM_GROWTH * max_norm {
        Some(Trigger::Norm(norm))
    } else if longest > grow::LONG_CHAIN_PAGES {
        Some(Trigger::LongChain)
    } else {
        None
    }
}

/// Sets up an index that was built empty with unknown dimensions (or reset from an UNLOGGED init fork, or
/// an inner-product index built on an empty table), under the meta page's exclusive lock, from its first
/// row `first`, and returns its shape.
///
/// Inner product: the norm augmentation's M (normally the largest norm at build) is taken as twice the
/// first row's norm (1 for a zero row). Later rows longer than M are still indexed (last augmented
/// component 0), with lower recall; REINDEX after loading sets M from the data.
fn initialise(index: pg_sys::Relation, first: &[f32]) -> Rc<Shape> {
    let dims = first.len();
    let buf = read_locked(index, page::META_BLOCK, true);
    // SAFETY: block 0 is exclusively locked.
    let meta = unsafe { page::read_meta(index, page_of(buf)) };
    if meta.dims == 0 {
        check_index_dims(dims);
        let metric = super::index_metric(index);
        // Built empty: no rows to size the buckets by, so the 100k-row recommendation.
        let auto_bits = LshParams::recommended(dims as u32, metric).bits;
        let mut params = options::params(index, dims, metric, auto_bits);
        if metric == Metric::InnerProduct {
            params.max_norm = first_row_max_norm(first);
        }
        let mean = vec![0.0; params.hash_dims() as usize];
        let meta = write_structure(index, params, mean, &[], false);
        write_meta_page(index, buf, &meta);
    }
    release(buf);
    shape::load(index).expect("lsh index initialised")
}

/// M of an inner-product index set up at its first insert: 2 × the first row's norm, or 1 when that is
/// not a positive finite number.
fn first_row_max_norm(first: &[f32]) -> f32 {
    let m = 2.0 * imgsim_algo::distance::norm(first);
    if m > 0.0 && m.is_finite() {
        m
    } else {
        1.0
    }
}

thread_local! {
    /// Last VECTOR page this backend inserted into, per index (like the heap's target block): the free
    /// space map's upper levels only learn about new room at VACUUM, so it cannot be the only guide.
    static TARGET: std::cell::RefCell<std::collections::HashMap<u32, pg_sys::BlockNumber>> = Default::default();
}

/// Puts a vector item on a VECTOR page with room; returns its address.
fn insert_vector(index: pg_sys::Relation, item: &[u8]) -> VectorRef {
    let need = page::maxalign(item.len()) + size_of::<pg_sys::ItemIdData>();
    // SAFETY: `index` is an open relation.
    let oid = unsafe { (*index).rd_id }.to_u32();
    let mut target = TARGET.with(|t| t.borrow().get(&oid).copied());
    let nblocks = shape::nblocks(index);
    loop {
        let blk = match target.take() {
            Some(b) if b < nblocks => b,
            // SAFETY: the FSM lookup only reads the free space map.
            _ => unsafe { pg_sys::GetPageWithFreeSpace(index, need) },
        };
        if blk == page::INVALID_BLOCK {
            break;
        }
        let buf = read_locked(index, blk, true);
        let p = page_of(buf);
        // SAFETY: the page is exclusively locked.
        let (kind, free, fits) = unsafe {
            (
                page::kind(p),
                page::free_space(p),
                page::fits(p, item.len()),
            )
        };
        let is_vector = kind == page::KIND_VECTOR;
        // kind 0: an all-zero page left by a crash between extending the file and writing it; VACUUM
        // offers it through the free space map and it becomes a vector page here.
        if (is_vector && fits) || kind == 0 {
            let off = add_logged(index, buf, item, kind == 0);
            record_free(index, buf);
            release(buf);
            TARGET.with(|t| t.borrow_mut().insert(oid, blk));
            return VectorRef::new(blk, off);
        }
        // Stale FSM entry: correct it and look again.
        // SAFETY: recording the page's real free space (0 for non-vector pages).
        unsafe { pg_sys::RecordPageWithFreeSpace(index, blk, if is_vector { free } else { 0 }) };
        release(buf);
    }
    let buf = new_buffer(index, pg_sys::ForkNumber::MAIN_FORKNUM);
    let off = add_logged(index, buf, item, true);
    record_free(index, buf);
    let blk = block_of(buf);
    release(buf);
    TARGET.with(|t| t.borrow_mut().insert(oid, blk));
    VectorRef::new(blk, off)
}

/// Adds `item` to the locked buffer's page in one WAL record (`fresh`: initialise the page first).
fn add_logged(
    index: pg_sys::Relation,
    buf: pg_sys::Buffer,
    item: &[u8],
    fresh: bool,
) -> pg_sys::OffsetNumber {
    let mut w = PageWrite::start(index);
    let p = w.page(buf, fresh);
    // SAFETY: `p` is the registered image of an exclusively locked page.
    let off = unsafe {
        if fresh {
            page::init_page(p, page::KIND_VECTOR);
        }
        page::add_item(p, item)
    };
    let off = off.expect("caller checked free space");
    w.finish();
    off
}

fn record_free(index: pg_sys::Relation, buf: pg_sys::Buffer) {
    // SAFETY: the buffer is locked; the FSM records how much room the page has left.
    unsafe {
        pg_sys::RecordPageWithFreeSpace(index, block_of(buf), page::free_space(page_of(buf)))
    };
}

/// Appends a bucket entry to the chain starting at `head`; returns the chain's length in pages.
fn insert_entry(index: pg_sys::Relation, head: pg_sys::BlockNumber, entry: &[u8]) -> usize {
    let mut blk = head;
    let mut pages = 0;
    loop {
        pages += 1;
        let buf = read_locked(index, blk, true);
        let p = page_of(buf);
        // SAFETY: the page is exclusively locked.
        let (fits, next) = unsafe { (page::fits(p, entry.len()), (*page::opaque(p)).next) };
        if fits {
            let mut w = PageWrite::start(index);
            let wp = w.page(buf, false);
            // SAFETY: registered image of the locked page; space was checked.
            unsafe { page::add_item(wp, entry) }.expect("free space checked");
            w.finish();
            release(buf);
            // Pages after this one (it had room, so later pages were added when it was full).
            return pages + chain_rest(index, next);
        }
        if next == page::INVALID_BLOCK {
            let nbuf = new_buffer(index, pg_sys::ForkNumber::MAIN_FORKNUM);
            let mut w = PageWrite::start(index);
            let np = w.page(nbuf, true);
            let cp = w.page(buf, false);
            // SAFETY: both images are registered; the new page is initialised, filled and linked.
            unsafe {
                page::init_page(np, page::KIND_BUCKET);
                page::add_item(np, entry).expect("an entry fits an empty page");
                (*page::opaque(cp)).next = block_of(nbuf);
            }
            w.finish();
            release(nbuf);
            release(buf);
            return pages + 1;
        }
        release(buf);
        blk = next;
    }
}

/// Pages in a chain from `blk` to its end (bounded by the long-chain threshold: enough to decide).
fn chain_rest(index: pg_sys::Relation, mut blk: pg_sys::BlockNumber) -> usize {
    let mut pages = 0;
    while blk != page::INVALID_BLOCK && pages <= grow::LONG_CHAIN_PAGES {
        let buf = read_locked(index, blk, false);
        // SAFETY: share-locked page.
        blk = unsafe { (*page::opaque(page_of(buf))).next };
        release(buf);
        pages += 1;
    }
    pages
}
