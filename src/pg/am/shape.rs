//! Buffer helpers and the per-backend cache of an index's "shape": its meta page, the regenerated LSH
//! model (planes + stored mean) and the bucket directory. The cache is keyed by (index oid, build id):
//! a REINDEX or the first insert into an empty-built index changes the build id, so a stale model is never used.

use super::page::{self, Meta, VectorRef};
use crate::pg::fmgr::error;
use imgsim_algo::lsh::{LshModel, LshParams};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Reads block `blk` of the main fork and locks it (`exclusive` or share).
pub fn read_locked(
    index: pg_sys::Relation,
    blk: pg_sys::BlockNumber,
    exclusive: bool,
) -> pg_sys::Buffer {
    read_locked_with(index, blk, exclusive, std::ptr::null_mut())
}

/// As [`read_locked`], with a buffer access strategy (VACUUM).
pub fn read_locked_with(
    index: pg_sys::Relation,
    blk: pg_sys::BlockNumber,
    exclusive: bool,
    strategy: pg_sys::BufferAccessStrategy,
) -> pg_sys::Buffer {
    // SAFETY: `index` is open and locked by the caller's executor/command; ReadBufferExtended raises an
    // ERROR for a block beyond the end, so the buffer is valid when it returns.
    unsafe {
        let buf = pg_sys::ReadBufferExtended(
            index,
            pg_sys::ForkNumber::MAIN_FORKNUM,
            blk,
            pg_sys::ReadBufferMode::RBM_NORMAL,
            strategy,
        );
        let mode = if exclusive {
            pg_sys::BUFFER_LOCK_EXCLUSIVE
        } else {
            pg_sys::BUFFER_LOCK_SHARE
        };
        pg_sys::LockBuffer(buf, mode as i32);
        buf
    }
}

/// Releases a buffer locked by [`read_locked`] or [`new_buffer`].
pub fn release(buf: pg_sys::Buffer) {
    // SAFETY: the buffer is pinned and locked by this backend.
    unsafe { pg_sys::UnlockReleaseBuffer(buf) }
}

/// The page of a pinned buffer.
pub fn page_of(buf: pg_sys::Buffer) -> pg_sys::Page {
    // SAFETY: the buffer is pinned by the caller.
    unsafe { pg_sys::BufferGetPage(buf) }
}

/// Block number of a pinned buffer.
pub fn block_of(buf: pg_sys::Buffer) -> pg_sys::BlockNumber {
    // SAFETY: the buffer is pinned by the caller.
    unsafe { pg_sys::BufferGetBlockNumber(buf) }
}

/// Extends the index (main fork, or `fork`) by one page, returned pinned and exclusively locked, not yet
/// initialised: the caller initialises it inside a `PageWrite` (or directly during build).
pub fn new_buffer(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type) -> pg_sys::Buffer {
    crate::pg::compat::extend_locked(index, fork)
}

/// Number of blocks in the index's main fork.
pub fn nblocks(index: pg_sys::Relation) -> pg_sys::BlockNumber {
    // SAFETY: `index` is an open relation.
    unsafe { pg_sys::RelationGetNumberOfBlocksInFork(index, pg_sys::ForkNumber::MAIN_FORKNUM) }
}

/// Reads the meta page.
pub fn read_meta(index: pg_sys::Relation) -> Meta {
    let buf = read_locked(index, page::META_BLOCK, false);
    // SAFETY: block 0 of `index` is locked (share) while it is read.
    let meta = unsafe { page::read_meta(index, page_of(buf)) };
    release(buf);
    meta
}

/// Everything a scan or insert needs to hash vectors and find buckets.
pub struct Shape {
    pub meta: Meta,
    pub model: LshModel,
    /// Head block of each superbucket chain, `table << dir_bits | superbucket`.
    pub heads: Vec<pg_sys::BlockNumber>,
}

impl Shape {
    pub fn params(&self) -> &LshParams {
        self.model.params()
    }

    /// Directory slot of bucket `code` in table `t`.
    pub fn head(&self, t: usize, code: u32) -> pg_sys::BlockNumber {
        let shift = self.params().bits - self.meta.dir_bits;
        self.heads[(t << self.meta.dir_bits) | (code >> shift) as usize]
    }

    pub fn dims(&self) -> usize {
        self.meta.dims as usize
    }
}

thread_local! {
    static CACHE: RefCell<HashMap<(u32, u64), Rc<Shape>>> = RefCell::new(HashMap::new());
}

/// Loads (or takes from the cache) the shape of an initialised index. `None` while the index was built
/// empty and has not seen its first row (dimensions unknown).
pub fn load(index: pg_sys::Relation) -> Option<Rc<Shape>> {
    let meta = read_meta(index);
    if meta.dims == 0 {
        return None;
    }
    // SAFETY: `index` is an open relation.
    let oid = unsafe { (*index).rd_id }.to_u32();
    let key = (oid, meta.build_id);
    if let Some(s) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return Some(s);
    }
    let params = LshParams::from_bytes(&meta.params).unwrap_or_else(|e| {
        error(
            PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
            format!("lsh index parameters are invalid: {e}"),
        )
    });
    // `dims` values, `dims + 1` for a norm-augmented inner-product index.
    let mean = read_f32_run(index, meta.mean_start, params.hash_dims() as usize);
    let model = LshModel::new(params, mean).unwrap_or_else(|e| {
        error(
            PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
            format!("lsh index model is invalid: {e}"),
        )
    });
    let n_heads = (params.tables as usize) << meta.dir_bits;
    let heads = read_u32_run(index, meta.dir_start, n_heads);
    let shape = Rc::new(Shape { meta, model, heads });
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|k, _| k.0 != oid);
        c.insert(key, shape.clone());
    });
    Some(shape)
}

/// Reads `n` little-endian 4-byte values laid out over consecutive raw pages from `start`.
fn read_run(index: pg_sys::Relation, start: pg_sys::BlockNumber, n: usize) -> Vec<[u8; 4]> {
    let mut out = Vec::with_capacity(n);
    let mut blk = start;
    while out.len() < n {
        let buf = read_locked(index, blk, false);
        // SAFETY: the page is share-locked while its contents are copied.
        let raw = unsafe { page::raw(page_of(buf)) };
        let take = (n - out.len()).min(page::WORDS_PER_PAGE);
        out.extend(
            raw[..take * 4]
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]]),
        );
        release(buf);
        blk += 1;
    }
    out
}

pub fn read_f32_run(index: pg_sys::Relation, start: pg_sys::BlockNumber, n: usize) -> Vec<f32> {
    read_run(index, start, n)
        .into_iter()
        .map(f32::from_le_bytes)
        .collect()
}

pub fn read_u32_run(index: pg_sys::Relation, start: pg_sys::BlockNumber, n: usize) -> Vec<u32> {
    read_run(index, start, n)
        .into_iter()
        .map(u32::from_le_bytes)
        .collect()
}

/// Reads the vector item at `v`: `Some((heap tid, deleted))` and the values into `out`, or None if the
/// line pointer is unused (removed by VACUUM).
pub fn read_vector(
    index: pg_sys::Relation,
    v: VectorRef,
    out: &mut Vec<f32>,
) -> Option<(pg_sys::ItemPointerData, bool)> {
    let buf = read_locked(index, v.block(), false);
    let p = page_of(buf);
    // SAFETY: the page is share-locked while the item is decoded.
    let res = unsafe {
        if page::kind(p) != page::KIND_VECTOR || v.offset() == 0 || v.offset() > page::max_offset(p)
        {
            None
        } else {
            page::item(p, v.offset()).map(|b| {
                let item = page::VectorItem::parse(b);
                item.values_into(out);
                (item.heap_tid(), item.deleted())
            })
        }
    };
    release(buf);
    res
}

/// Calls `f` with the address and item of every vector not flagged deleted, in physical order, each page
/// share-locked while its items are visited.
pub fn for_each_live_vector(
    index: pg_sys::Relation,
    mut f: impl FnMut(VectorRef, &page::VectorItem),
) {
    for blk in 1..nblocks(index) {
        pg_sys::check_for_interrupts!();
        let buf = read_locked(index, blk, false);
        let p = page_of(buf);
        // SAFETY: the page is share-locked while its items are decoded.
        unsafe {
            if page::kind(p) == page::KIND_VECTOR {
                for off in 1..=page::max_offset(p) {
                    if let Some(b) = page::item(p, off) {
                        let item = page::VectorItem::parse(b);
                        if !item.deleted() {
                            f(VectorRef::new(blk, off), &item);
                        }
                    }
                }
            }
        }
        release(buf);
    }
}

/// Heap TIDs of every vector item not flagged deleted, in physical order (a scan for a NULL query).
pub fn live_rows(index: pg_sys::Relation) -> Vec<pg_sys::ItemPointerData> {
    let mut out = Vec::new();
    for_each_live_vector(index, |_, item| out.push(item.heap_tid()));
    out
}

/// ERROR for a vector whose dimensions differ from the index's.
pub fn dims_mismatch(index_dims: usize, got: usize) -> ! {
    crate::pg::fmgr::raise(
        PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
        format!("different embedding dimensions {index_dims} and {got}"),
        Some(format!(
            "The lsh index holds {index_dims}-dimensional embeddings."
        )),
        None,
    )
}
