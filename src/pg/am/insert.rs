//! `aminsert`: store the vector in a VECTOR page with room (found through the free space map, else a
//! new page), then add one entry per table to the bucket's superbucket chain (first page with room, else
//! a new page linked at the chain's end). Each page change is one GenericXLog record.

use super::buffer::{Lock, Locked};
use super::build::{check_index_dims, write_meta_page, write_structure};
use super::grow::{self, SharedStructure, Trigger};
use super::options;
use super::page::{self, BucketEntry, VectorItem, VectorRef};
use super::shape::{self, Shape};
use super::xlog::PageWrite;
use crate::pg::types::embedding::EmbeddingRef;
use imgsim_algo::lsh::Metric;
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
    // Version-1 indexes stay readable by the pg_imgsim that built them: no split vectors there.
    let split = shape.meta.version >= 2;
    let vref = insert_vector(index, tid, values, split);
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
    let mut buf = Locked::read(index, page::META_BLOCK, Lock::Exclusive);
    let meta = buf.page().read_meta(index);
    if meta.dims == 0 {
        check_index_dims(dims);
        let metric = super::index_metric(index);
        // Built empty: no rows to size the buckets by, so the 100k-row recommendation (grow.rs
        // chooses again as the index grows).
        let mut params = options::params(index, dims, metric, 100_000);
        if metric == Metric::InnerProduct {
            params.max_norm = first_row_max_norm(first);
        }
        let mean = vec![0.0; params.hash_dims() as usize];
        let meta = write_structure(index, params, mean, &[], false);
        write_meta_page(index, &mut buf, &meta);
    }
    drop(buf);
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

/// Puts a vector on a VECTOR page with room; returns its address. A page with room for it whole comes
/// first (this backend's last vector page, else one from the free space map: room VACUUM freed is reused);
/// only when there is none does a page with room for part of it (and `split` allows) take its head, with
/// its tail on a new page; else it goes whole on a new page.
fn insert_vector(
    index: pg_sys::Relation,
    tid: pg_sys::ItemPointerData,
    values: &[f32],
    split: bool,
) -> VectorRef {
    let item = &VectorItem::encode(tid, values)[..];
    let need = page::maxalign(item.len()) + size_of::<pg_sys::ItemIdData>();
    // SAFETY: `index` is an open relation.
    let oid = unsafe { (*index).rd_id }.to_u32();
    let mut target = TARGET.with(|t| t.borrow().get(&oid).copied());
    let nblocks = shape::nblocks(index);
    // The first page seen with room for a head only.
    let mut split_at = None;
    loop {
        let blk = match target.take() {
            Some(b) if b < nblocks => b,
            // SAFETY: the FSM lookup only reads the free space map.
            _ => unsafe { pg_sys::GetPageWithFreeSpace(index, need) },
        };
        if blk == page::INVALID_BLOCK {
            break;
        }
        let mut buf = Locked::read(index, blk, Lock::Exclusive);
        let p = buf.page();
        let (kind, free, fits) = (p.kind(), p.free_space(), p.fits(item.len()));
        let is_vector = kind == page::KIND_VECTOR;
        // kind 0: an all-zero page left by a crash between extending the file and writing it; VACUUM
        // offers it through the free space map and it becomes a vector page here.
        if (is_vector && fits) || kind == 0 {
            let off = add_logged(index, &mut buf, item, kind == 0);
            buf.record_free_space(index);
            TARGET.with(|t| t.borrow_mut().insert(oid, blk));
            return VectorRef::new(blk, off);
        }
        if split && is_vector && split_at.is_none() {
            split_at = page::split_head_values(free, values.len()).map(|_| blk);
        }
        // Stale FSM entry (or a last page without room): correct it and look again.
        buf.record_free_space_as(index, if is_vector { free } else { 0 });
    }
    if let Some(blk) = split_at {
        // Locked again: its room may have changed meanwhile.
        let buf = Locked::read(index, blk, Lock::Exclusive);
        let p = buf.page();
        let room = (p.kind() == page::KIND_VECTOR).then(|| p.free_space());
        if let Some(k) = room.and_then(|free| page::split_head_values(free, values.len())) {
            return insert_split(index, buf, tid, values, k);
        }
    }
    let mut buf = Locked::extend(index, pg_sys::ForkNumber::MAIN_FORKNUM);
    let off = add_logged(index, &mut buf, item, true);
    buf.record_free_space(index);
    let blk = buf.block();
    TARGET.with(|t| t.borrow_mut().insert(oid, blk));
    VectorRef::new(blk, off)
}

/// Stores a vector as a head (its first `k` values) on the locked page `buf`, which has room for it, and
/// a tail on a new page, both in one WAL record; returns the head's address.
fn insert_split(
    index: pg_sys::Relation,
    mut buf: Locked,
    tid: pg_sys::ItemPointerData,
    values: &[f32],
    k: usize,
) -> VectorRef {
    // The new page is the relation's last block: later than the head's, as readers' lock order needs.
    let mut tail_buf = Locked::extend(index, pg_sys::ForkNumber::MAIN_FORKNUM);
    let tail_blk = tail_buf.block();
    let w = PageWrite::start(index);
    // The head's page is registered first: redo locks the pages in this (ascending) order too.
    let mut head_page = w.page(&mut buf, false);
    let mut tail_page = w.page(&mut tail_buf, true);
    tail_page.init(page::KIND_VECTOR);
    let tail_off = tail_page
        .add_item(&VectorItem::encode_tail(tid, &values[k..]))
        .expect("a tail fits an empty page");
    let head = VectorItem::encode_head(tid, &values[..k], VectorRef::new(tail_blk, tail_off));
    let off = head_page
        .add_item(&head)
        .expect("the head was sized to the page's room");
    w.finish();
    buf.record_free_space(index);
    tail_buf.record_free_space(index);
    // SAFETY: `index` is an open relation.
    let oid = unsafe { (*index).rd_id }.to_u32();
    TARGET.with(|t| t.borrow_mut().insert(oid, tail_blk));
    VectorRef::new(buf.block(), off)
}

/// Adds `item` to the locked buffer's page in one WAL record (`fresh`: initialise the page first).
fn add_logged(
    index: pg_sys::Relation,
    buf: &mut Locked,
    item: &[u8],
    fresh: bool,
) -> pg_sys::OffsetNumber {
    let w = PageWrite::start(index);
    let mut p = w.page(buf, fresh);
    if fresh {
        p.init(page::KIND_VECTOR);
    }
    let off = p.add_item(item).expect("caller checked free space");
    w.finish();
    off
}

/// Appends a bucket entry to the chain starting at `head`; returns the chain's length in pages.
fn insert_entry(index: pg_sys::Relation, head: pg_sys::BlockNumber, entry: &[u8]) -> usize {
    let mut blk = head;
    let mut pages = 0;
    loop {
        pages += 1;
        let mut buf = Locked::read(index, blk, Lock::Exclusive);
        let (fits, next) = (buf.page().fits(entry.len()), buf.page().next());
        if fits {
            let w = PageWrite::start(index);
            w.page(&mut buf, false)
                .add_item(entry)
                .expect("free space checked");
            w.finish();
            drop(buf);
            // Pages after this one (it had room, so later pages were added when it was full).
            return pages + chain_rest(index, next);
        }
        if next == page::INVALID_BLOCK {
            let mut nbuf = Locked::extend(index, pg_sys::ForkNumber::MAIN_FORKNUM);
            let new_blk = nbuf.block();
            let w = PageWrite::start(index);
            let mut np = w.page(&mut nbuf, true);
            np.init(page::KIND_BUCKET);
            np.add_item(entry).expect("an entry fits an empty page");
            w.page(&mut buf, false).set_next(new_blk);
            w.finish();
            return pages + 1;
        }
        blk = next;
    }
}

/// Pages in a chain from `blk` to its end (bounded by the long-chain threshold: enough to decide).
fn chain_rest(index: pg_sys::Relation, mut blk: pg_sys::BlockNumber) -> usize {
    let mut pages = 0;
    while blk != page::INVALID_BLOCK && pages <= grow::LONG_CHAIN_PAGES {
        blk = Locked::read(index, blk, Lock::Share).page().next();
        pages += 1;
    }
    pages
}
