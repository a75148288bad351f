//! The per-backend cache of an index's "shape": its meta page, the regenerated LSH
//! model (planes + stored mean) and the bucket directory. The cache is keyed by (index oid, build id,
//! format version; the version decides whether inserts may split vectors):
//! a REINDEX or the first insert into an empty-built index changes the build id, so a stale model is never used.

use super::buffer::{Lock, Locked};
use super::page::{self, Meta, VectorItem, VectorRef};
use crate::pg::fmgr::error;
use imgsim_algo::lsh::{LshModel, LshParams};
use imgsim_algo::partition::Learned;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Number of blocks in the index's main fork.
pub fn nblocks(index: pg_sys::Relation) -> pg_sys::BlockNumber {
    // SAFETY: `index` is an open relation.
    unsafe { pg_sys::RelationGetNumberOfBlocksInFork(index, pg_sys::ForkNumber::MAIN_FORKNUM) }
}

/// Reads the meta page.
pub fn read_meta(index: pg_sys::Relation) -> Meta {
    Locked::read(index, page::META_BLOCK, Lock::Share)
        .page()
        .read_meta(index)
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
    static CACHE: RefCell<HashMap<(u32, u64, u32), Rc<Shape>>> = RefCell::new(HashMap::new());
}

/// Loads (or takes from the cache) the shape of an initialised index. `None` while the index was built
/// empty and has not seen its first row (dimensions unknown).
pub fn load(index: pg_sys::Relation) -> Option<Rc<Shape>> {
    load_from(index, read_meta(index))
}

/// As [`load`], but `None` (no ERROR) also for an index of another on-disk format version: for the
/// planner, which reads the meta page once per plan and leaves refusing the index to its scan.
pub fn load_if_current(index: pg_sys::Relation) -> Option<Rc<Shape>> {
    let meta = Locked::read(index, page::META_BLOCK, Lock::Share)
        .page()
        .meta_if_current()?;
    load_from(index, meta)
}

/// The shape described by `meta` (just read from block 0), from the cache or built.
pub fn load_from(index: pg_sys::Relation, meta: Meta) -> Option<Rc<Shape>> {
    if meta.dims == 0 {
        return None;
    }
    // SAFETY: `index` is an open relation.
    let oid = unsafe { (*index).rd_id }.to_u32();
    let key = (oid, meta.build_id, meta.version);
    if let Some(s) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return Some(s);
    }
    let params = LshParams::from_bytes(&meta.params).unwrap_or_else(|e| {
        error(
            PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
            format!("lsh index parameters are invalid: {e}"),
        )
    });
    // `dims` values, `dims + 1` for a norm-augmented inner-product index; then the learned planes
    // (format 3), at most one per table-0 bit.
    let hd = params.hash_dims() as usize;
    let learned = if meta.version >= 3 {
        meta.learned_planes as usize
    } else {
        0
    };
    if learned > LshModel::partition_planes(&params) {
        error(
            PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
            format!("lsh index meta page names {learned} learned planes"),
        );
    }
    let mut mean = read_f32_run(index, meta.mean_start, hd + learned * (hd + 1));
    let planes = mean.split_off(hd);
    let invalid = |e: String| -> ! {
        error(
            PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
            format!("lsh index model is invalid: {e}"),
        )
    };
    let mut model = LshModel::new(params, mean).unwrap_or_else(|e| invalid(e.to_string()));
    if learned > 0 {
        let l = Learned::from_f32s(learned, hd, &planes)
            .unwrap_or_else(|| invalid("learned planes are not finite".into()));
        model = model
            .with_learned(l)
            .unwrap_or_else(|e| invalid(e.to_string()));
    }
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
        let buf = Locked::read(index, blk, Lock::Share);
        let raw = buf.page().raw();
        let take = (n - out.len()).min(page::WORDS_PER_PAGE).min(raw.len() / 4);
        if take == 0 {
            error(
                PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
                "lsh index mean or directory page is empty",
            );
        }
        out.extend(
            raw[..take * 4]
                .chunks_exact(4)
                .map(|c| [c[0], c[1], c[2], c[3]]),
        );
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

/// Parses the vector item `b` at `v`, raising ERROR (index corrupted) when it is too short for its header.
pub fn parse_vector(v: VectorRef, b: &[u8]) -> VectorItem<'_> {
    VectorItem::parse(b).unwrap_or_else(|| {
        error(
            PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
            format!(
                "lsh index: vector item of {} bytes at block {} offset {}",
                b.len(),
                v.block(),
                v.offset()
            ),
        )
    })
}

/// Decodes the vector item `b` at `v` (on a page the caller holds locked) into `out`, joining a split
/// vector's head with its tail (read under a share lock on the tail's page, a later block, while the
/// caller's lock keeps the pair from being freed). Returns (heap tid, deleted), or None for a tail item
/// (read with its head). A deleted vector's values are not decoded (`out` is left empty).
pub fn decode_vector(
    index: pg_sys::Relation,
    v: VectorRef,
    b: &[u8],
    out: &mut Vec<f32>,
) -> Option<(pg_sys::ItemPointerData, bool)> {
    let item = parse_vector(v, b);
    out.clear();
    if item.is_tail() {
        return None;
    }
    if item.deleted() {
        return Some((item.heap_tid(), true));
    }
    item.append_values(out);
    if let Some(t) = item.tail {
        append_tail(index, v, &item, t, out);
    }
    Some((item.heap_tid(), false))
}

/// ERROR (index corrupted): the head at `v` names a tail `t` that is not there (or not on a later block).
pub fn missing_tail(v: VectorRef, t: VectorRef) -> ! {
    error(
        PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
        format!(
            "lsh index: the tail ({},{}) of the vector at block {} offset {} is missing",
            t.block(),
            t.offset(),
            v.block(),
            v.offset()
        ),
    )
}

/// Appends the values of the tail at `t` of the head `head` (at `v`) to `out`; ERROR (index corrupted)
/// when the tail is not there, or not on a later block.
fn append_tail(
    index: pg_sys::Relation,
    v: VectorRef,
    head: &VectorItem,
    t: VectorRef,
    out: &mut Vec<f32>,
) {
    // A block past the end is refused by the buffer manager; InvalidBlockNumber would extend the index.
    if t.block() <= v.block() || t.block() == page::INVALID_BLOCK {
        missing_tail(v, t);
    }
    let buf = Locked::read(index, t.block(), Lock::Share);
    let p = buf.page();
    if p.kind() != page::KIND_VECTOR {
        missing_tail(v, t);
    }
    let Some(tail) = p.item(t.offset()).and_then(VectorItem::parse) else {
        missing_tail(v, t);
    };
    if !tail.is_tail() || tail.heap_block != head.heap_block || tail.heap_offset != head.heap_offset
    {
        missing_tail(v, t);
    }
    tail.append_values(out);
}

/// Reads the vector at `v`: `Some((heap tid, deleted))` and the values into `out`, or None if the
/// line pointer is unused (removed by VACUUM) or holds a tail.
pub fn read_vector(
    index: pg_sys::Relation,
    v: VectorRef,
    out: &mut Vec<f32>,
) -> Option<(pg_sys::ItemPointerData, bool)> {
    let buf = Locked::read(index, v.block(), Lock::Share);
    let p = buf.page();
    if p.kind() != page::KIND_VECTOR {
        return None;
    }
    decode_vector(index, v, p.item(v.offset())?, out)
}

/// Calls `f(heap tid, deleted, values)` for each of `refs` (sorted by address) that holds a vector: the
/// refs of one page are decoded under one buffer lock (split vectors also lock their tail's page);
/// unused line pointers and tails are skipped. Values are empty for deleted vectors.
pub fn read_vectors(
    index: pg_sys::Relation,
    refs: &[VectorRef],
    values: &mut Vec<f32>,
    mut f: impl FnMut(pg_sys::ItemPointerData, bool, &[f32]),
) {
    for (n, run) in refs.chunk_by(|a, b| a.block() == b.block()).enumerate() {
        if n % 64 == 63 {
            pg_sys::check_for_interrupts!();
        }
        let buf = Locked::read_shared_recent(index, run[0].block());
        let p = buf.page();
        if p.kind() != page::KIND_VECTOR {
            continue;
        }
        for &v in run {
            if let Some(b) = p.item(v.offset()) {
                if let Some((tid, deleted)) = decode_vector(index, v, b, values) {
                    f(tid, deleted, values);
                }
            }
        }
    }
}

/// Calls `f(address, heap tid, values)` for every vector not flagged deleted, in physical order, each
/// page share-locked while its items are visited. `values` decodes them (joining split vectors); else
/// `f` gets an empty slice.
pub fn for_each_live_vector(
    index: pg_sys::Relation,
    values: bool,
    mut f: impl FnMut(VectorRef, pg_sys::ItemPointerData, &[f32]),
) {
    let mut out = Vec::new();
    for blk in 1..nblocks(index) {
        pg_sys::check_for_interrupts!();
        let buf = Locked::read(index, blk, Lock::Share);
        let p = buf.page();
        if p.kind() == page::KIND_VECTOR {
            for off in 1..=p.max_offset() {
                let Some(b) = p.item(off) else { continue };
                let v = VectorRef::new(blk, off);
                if values {
                    if let Some((tid, false)) = decode_vector(index, v, b, &mut out) {
                        f(v, tid, &out);
                    }
                } else {
                    let item = parse_vector(v, b);
                    if !item.deleted() && !item.is_tail() {
                        f(v, item.heap_tid(), &[]);
                    }
                }
            }
        }
    }
}

/// Heap TIDs of every vector not flagged deleted, in physical order (a scan for a NULL query).
pub fn live_rows(index: pg_sys::Relation) -> Vec<pg_sys::ItemPointerData> {
    let mut out = Vec::new();
    for_each_live_vector(index, false, |_, tid, _| out.push(tid));
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
