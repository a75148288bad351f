//! VACUUM: `ambulkdelete` marks the vector items of dead heap rows deleted, removes their bucket entries
//! from every chain, then frees the vector items (line pointers stay put, so no other address moves) and
//! records the reclaimed room in the free space map for later inserts. `amvacuumcleanup` reports sizes.

use super::buffer::{Lock, Locked};
use super::grow::SharedStructure;
use super::page::{self, BucketEntry, VectorItem, VectorRef};
use super::shape;
use super::xlog::PageWrite;
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::HashSet;

fn stats_or_new(stats: *mut pg_sys::IndexBulkDeleteResult) -> *mut pg_sys::IndexBulkDeleteResult {
    if stats.is_null() {
        // SAFETY: palloc0 of a plain struct in the vacuum's memory context.
        unsafe {
            pg_sys::palloc0(size_of::<pg_sys::IndexBulkDeleteResult>())
                as *mut pg_sys::IndexBulkDeleteResult
        }
    } else {
        stats
    }
}

fn delay() {
    crate::pg::compat::vacuum_delay_point();
}

/// `ambulkdelete`
#[pg_guard]
pub unsafe extern "C-unwind" fn ambulkdelete(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
    callback: pg_sys::IndexBulkDeleteCallback,
    callback_state: *mut std::ffi::c_void,
) -> *mut pg_sys::IndexBulkDeleteResult {
    let stats = stats_or_new(stats);
    // SAFETY: `info` is valid for the duration of the call.
    let (index, strategy) = unsafe { ((*info).index, (*info).strategy) };
    let callback = callback.expect("bulk delete callback");
    shape::read_meta(index); // refuses another on-disk format version before any item is interpreted
                             // Bucket pages are found by block number below: the structure must not be rebuilt meanwhile.
    let _shared = SharedStructure::lock(index);
    let nblocks = shape::nblocks(index);
    let mut dead: HashSet<VectorRef> = HashSet::new();
    let mut live = 0f64;

    // Pass 1: mark vector items of dead heap rows as deleted.
    for blk in 1..nblocks {
        delay();
        let mut buf = Locked::read_with(index, blk, Lock::Exclusive, strategy);
        let p = buf.page();
        let mut offs = Vec::new();
        if p.is_new() {
            // All zeros (a crash right after the file was extended): offer it to inserts.
            buf.record_free_space_as(index, pg_sys::BLCKSZ as usize / 2);
        } else if p.kind() == page::KIND_VECTOR {
            for off in 1..=p.max_offset() {
                if let Some(b) = p.item(off) {
                    let item = shape::parse_vector(VectorRef::new(blk, off), b);
                    if item.is_tail() {
                        continue; // its head stands for the row
                    }
                    if item.deleted() {
                        dead.insert(VectorRef::new(blk, off));
                        continue;
                    }
                    let mut tid = item.heap_tid();
                    // SAFETY: the callback and its state come from VACUUM, which calls us with both.
                    if unsafe { callback(&mut tid, callback_state) } {
                        offs.push(off);
                    } else {
                        live += 1.0;
                    }
                }
            }
        }
        if !offs.is_empty() {
            let w = PageWrite::start(index);
            let mut wp = w.page(&mut buf, false);
            for &off in &offs {
                if let Some(b) = wp.item_mut(off) {
                    page::set_vector_deleted(b);
                }
                dead.insert(VectorRef::new(blk, off));
            }
            w.finish();
            // SAFETY: `stats` is valid (allocated above or by the caller).
            unsafe { (*stats).tuples_removed += offs.len() as f64 };
        }
    }

    if !dead.is_empty() {
        // Pass 2: remove bucket entries that point at deleted vectors.
        for blk in 1..nblocks {
            delay();
            let mut buf = Locked::read_with(index, blk, Lock::Exclusive, strategy);
            let p = buf.page();
            let mut offs: Vec<pg_sys::OffsetNumber> = Vec::new();
            if p.kind() == page::KIND_BUCKET {
                for off in 1..=p.max_offset() {
                    if let Some(b) = p.item(off) {
                        if dead.contains(&BucketEntry::parse(b).vector) {
                            offs.push(off);
                        }
                    }
                }
            }
            if !offs.is_empty() {
                let w = PageWrite::start(index);
                w.page(&mut buf, false).delete_items(&offs);
                w.finish();
            }
        }
        // Pass 3: free the deleted vector items and record the room for reuse.
        let mut blocks: Vec<u32> = dead.iter().map(|v| v.block()).collect();
        blocks.sort_unstable();
        blocks.dedup();
        for blk in blocks {
            delay();
            let mut buf = Locked::read_with(index, blk, Lock::Share, strategy);
            // No other backend holds a pin on the page while its items are removed.
            buf.lock_for_cleanup();
            // Whole vectors go in one record; a split vector's head and tail together in one record
            // each (the tail's page, a later block, locked after the head's).
            let mut whole = Vec::new();
            let mut split = Vec::new();
            for off in 1..=buf.page().max_offset() {
                let v = VectorRef::new(blk, off);
                let Some(b) = buf.page().item(off).filter(|_| dead.contains(&v)) else {
                    continue;
                };
                let item = shape::parse_vector(v, b);
                match item.tail {
                    // As readers do: a tail address that is not a later block of the index is damage.
                    Some(t) if t.block() <= blk || t.block() >= nblocks => {
                        shape::missing_tail(v, t)
                    }
                    Some(t) => split.push((off, t, (item.heap_block, item.heap_offset))),
                    None => whole.push(off),
                }
            }
            if !whole.is_empty() {
                let w = PageWrite::start(index);
                w.page(&mut buf, false).delete_items_in_place(&whole);
                w.finish();
            }
            for (off, t, heap) in split {
                let mut tail_buf = Locked::read_with(index, t.block(), Lock::Exclusive, strategy);
                let is_vector = tail_buf.page().kind() == page::KIND_VECTOR;
                let tail_there = is_vector
                    && tail_buf
                        .page()
                        .item(t.offset())
                        .and_then(VectorItem::parse)
                        .is_some_and(|i| i.is_tail() && (i.heap_block, i.heap_offset) == heap);
                let w = PageWrite::start(index);
                w.page(&mut buf, false).delete_items_in_place(&[off]);
                if tail_there {
                    w.page(&mut tail_buf, false)
                        .delete_items_in_place(&[t.offset()]);
                }
                w.finish();
                if is_vector {
                    tail_buf.record_free_space(index);
                }
            }
            buf.record_free_space(index);
        }
    }
    // SAFETY: `stats` is valid.
    unsafe {
        (*stats).num_index_tuples = live;
        (*stats).num_pages = nblocks;
    }
    stats
}

/// `amvacuumcleanup`
#[pg_guard]
pub unsafe extern "C-unwind" fn amvacuumcleanup(
    info: *mut pg_sys::IndexVacuumInfo,
    stats: *mut pg_sys::IndexBulkDeleteResult,
) -> *mut pg_sys::IndexBulkDeleteResult {
    // SAFETY: `info` is valid for the call.
    let (index, analyze_only) = unsafe { ((*info).index, (*info).analyze_only) };
    if analyze_only {
        return stats;
    }
    // SAFETY: `info` is valid for the call.
    let heap_tuples = unsafe { (*info).num_heap_tuples };
    let stats = if stats.is_null() {
        // No bulk delete ran (an insert-only VACUUM): nothing was counted. Report the heap's count as an
        // estimate, which VACUUM does not write into the index's reltuples (zero would shrink the
        // automatic scan settings to their minimum); ANALYZE sets it from the heap as for any index.
        let s = stats_or_new(stats);
        // SAFETY: freshly allocated.
        unsafe {
            (*s).num_index_tuples = heap_tuples;
            (*s).estimated_count = true;
        }
        s
    } else {
        stats // counted exactly by ambulkdelete
    };
    // Structure pages left unused by a crash in the middle of a layout rebuild (grow.rs) are reused;
    // VACUUM VERBOSE reports them as index pages newly deleted (and reusable).
    let reclaimed = super::grow::reclaim_unused_structure_pages(index);
    // SAFETY: `stats` is valid; FSM vacuuming only updates the index's free space map.
    unsafe {
        #[cfg(not(feature = "pg13"))]
        {
            (*stats).pages_newly_deleted += reclaimed;
        }
        (*stats).pages_deleted += reclaimed;
        (*stats).pages_free += reclaimed;
        (*stats).num_pages = shape::nblocks(index);
        pg_sys::IndexFreeSpaceMapVacuum(index);
    }
    stats
}
