//! `lsh_index_check(regclass)`: verifies a whole index and returns one row per problem (none when clean):
//! page kinds and chains; every live vector's codes and sketch recomputed from the index's planes
//! (regenerated from the seed, and the stored learned ones) and
//! found exactly once in the right bucket of every table; no bucket entry pointing at a missing vector;
//! and every live heap row present exactly once with the same values (heap scanned as CREATE INDEX does,
//! like amcheck's heapallindexed: heap -> index).

use super::buffer::{Lock, Locked};
use super::grow::SharedStructure;
use super::page::{self, BucketEntry, VectorItem, VectorRef};
use super::shape;
use crate::pg::types::embedding::EmbeddingRef;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::collections::{HashMap, HashSet};

struct HeapCheck {
    /// heap tid -> (vector address, values) of vectors not flagged deleted
    by_tid: HashMap<(u32, u16), (VectorRef, Vec<f32>)>,
    /// heap tids of live rows (non-null key) the heap scan saw
    alive: HashSet<(u32, u16)>,
    problems: Vec<String>,
}

#[pg_guard]
unsafe extern "C-unwind" fn heap_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    alive: bool,
    state: *mut std::ffi::c_void,
) {
    // SAFETY: `state` is our HeapCheck; values/isnull hold the one key column.
    unsafe {
        let st = &mut *(state as *mut HeapCheck);
        let key = page::tid_parts(&*tid);
        if *isnull || !alive {
            return;
        }
        st.alive.insert(key);
        let e = EmbeddingRef::from_datum(*values);
        match st.by_tid.get(&key) {
            None => st.problems.push(format!(
                "live heap row ({},{}) is missing from the index",
                key.0, key.1
            )),
            Some((v, stored)) if stored.as_slice() != e.values() => st.problems.push(format!(
                "vector at index block {} offset {} differs from heap row ({},{})",
                v.block(),
                v.offset(),
                key.0,
                key.1
            )),
            _ => {}
        }
    }
}

#[pg_extern(volatile, parallel_unsafe, name = "lsh_index_check_oid")]
fn lsh_index_check(index: pg_sys::Oid) -> TableIterator<'static, (name!(problem, String),)> {
    let problems = check(index);
    TableIterator::new(problems.into_iter().map(|p| (p,)))
}

/// Opens an lsh index and its table (AccessShareLock, table first as amcheck does) for a caller allowed to
/// read the table: SELECT on it (superusers and pg_read_all_data members have it), like reading the rows
/// the check reports on. The privilege is checked before any lock is taken.
pub fn open_checked(oid: pg_sys::Oid) -> (pg_sys::Relation, pg_sys::Relation) {
    let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
    // SAFETY: catalog lookups by OID; a missing index yields InvalidOid (missing_ok).
    let heap_oid = unsafe { pg_sys::IndexGetRelation(oid, true) };
    if heap_oid == pg_sys::InvalidOid {
        crate::pg::fmgr::raise(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!("relation with OID {} is not an index", oid.to_u32()),
            None,
            None,
        );
    }
    // SAFETY: privilege check and relation opening through PostgreSQL's own functions, which raise
    // ERRORs (no privilege, relation gone) themselves; both relations are closed by the caller.
    unsafe {
        let acl = pg_sys::pg_class_aclcheck(heap_oid, pg_sys::GetUserId(), pg_sys::ACL_SELECT as _);
        if acl != pg_sys::AclResult::ACLCHECK_OK {
            pg_sys::aclcheck_error(
                acl,
                pg_sys::ObjectType::OBJECT_TABLE,
                pg_sys::get_rel_name(heap_oid),
            );
        }
        let heap = pg_sys::table_open(heap_oid, lock);
        let index = pg_sys::index_open(oid, lock);
        if (*(*index).rd_index).indrelid != heap_oid
            || (*(*index).rd_rel).relam != pg_sys::get_am_oid(c"lsh".as_ptr(), false)
        {
            crate::pg::fmgr::raise(
                PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
                format!(
                    "\"{}\" is not an lsh index",
                    pgrx::name_data_to_str(&(*(*index).rd_rel).relname)
                ),
                None,
                None,
            );
        }
        (index, heap)
    }
}

/// Checks an index. States that are legitimate until the next VACUUM are accepted: vectors and entries of
/// dead (or aborted) rows, entries pointing at vectors VACUUM already flagged deleted, and all-zero pages
/// left by a crash between extending the file and writing the page.
fn check(oid: pg_sys::Oid) -> Vec<String> {
    let mut problems = Vec::new();
    let (index, heap) = open_checked(oid);
    let shared = SharedStructure::lock(index);
    // SAFETY: reading the relcache entry of the open index.
    let name = unsafe { pgrx::name_data_to_str(&(*(*index).rd_rel).relname).to_string() };
    let meta = shape::read_meta(index);
    let nblocks = shape::nblocks(index);

    // 1. Vector pages.
    let mut vectors: HashMap<VectorRef, (pg_sys::ItemPointerData, Vec<f32>)> = HashMap::new();
    let mut deleted: HashSet<VectorRef> = HashSet::new();
    // Split vectors: tails by address, and (head, tail, heap tid, deleted) of every head.
    let mut tails: HashMap<VectorRef, (pg_sys::ItemPointerData, Vec<f32>)> = HashMap::new();
    let mut heads = Vec::new();
    for blk in 1..nblocks {
        let buf = Locked::read(index, blk, Lock::Share);
        let p = buf.page();
        let kind = p.kind();
        if kind != 0 && !(page::KIND_MEAN..=page::KIND_VECTOR).contains(&kind) {
            problems.push(format!("block {blk} has unknown page kind {kind}"));
        }
        if kind == page::KIND_VECTOR {
            for off in 1..=p.max_offset() {
                let Some(b) = p.item(off) else { continue };
                let v = VectorRef::new(blk, off);
                let Some(it) = VectorItem::parse(b) else {
                    problems.push(format!(
                        "vector item at block {blk} offset {off} is too short ({} bytes)",
                        b.len()
                    ));
                    continue;
                };
                let mut vals = Vec::new();
                it.values_into(&mut vals);
                if it.is_tail() {
                    tails.insert(v, (it.heap_tid(), vals));
                    continue;
                }
                if let Some(t) = it.tail {
                    heads.push((v, t, it.heap_tid(), it.deleted()));
                }
                if it.deleted() {
                    deleted.insert(v);
                } else {
                    vectors.insert(v, (it.heap_tid(), vals));
                }
            }
        }
    }
    // Split vectors: each head's tail on a later block, of the same heap row, claimed by no other head.
    if meta.version < 2 && !heads.is_empty() {
        problems.push(format!(
            "format version {} index holds split vectors (version 2 and later only)",
            meta.version
        ));
    }
    for (v, t, tid, dead) in heads {
        let tail = tails.remove(&t);
        let ok = t.block() > v.block()
            && tail
                .as_ref()
                .is_some_and(|(ttid, _)| page::tid_parts(ttid) == page::tid_parts(&tid));
        if !ok {
            problems.push(format!(
                "the tail ({},{}) of the vector at block {} offset {} is missing",
                t.block(),
                t.offset(),
                v.block(),
                v.offset()
            ));
        } else if let (false, Some((_, rest)), Some((_, vals))) = (dead, tail, vectors.get_mut(&v))
        {
            vals.extend_from_slice(&rest);
        }
    }
    for t in tails.keys() {
        problems.push(format!(
            "vector tail at block {} offset {} belongs to no vector",
            t.block(),
            t.offset()
        ));
    }
    for (v, (_, vals)) in &vectors {
        if vals.len() != meta.dims as usize {
            problems.push(format!(
                "vector at block {} offset {} has {} dimensions, index has {}",
                v.block(),
                v.offset(),
                vals.len(),
                meta.dims
            ));
        }
    }

    // 2. Heap: every live row present once, with the same values.
    let mut hc = HeapCheck {
        by_tid: HashMap::new(),
        alive: HashSet::new(),
        problems: Vec::new(),
    };
    for (v, (tid, vals)) in &vectors {
        let key = page::tid_parts(tid);
        if hc.by_tid.insert(key, (*v, vals.clone())).is_some() {
            problems.push(format!(
                "heap row ({},{}) is in the index more than once",
                key.0, key.1
            ));
        }
    }
    // SAFETY: the same kind of heap scan CREATE INDEX (and amcheck) runs, with our callback. Marked
    // concurrent, it reads under a fresh MVCC snapshot (as amcheck does without a ShareLock): rows of
    // transactions still in progress are simply not seen, instead of raising an ERROR.
    unsafe {
        let info = pg_sys::BuildIndexInfo(index);
        (*info).ii_Concurrent = true;
        pg_sys::table_index_build_scan(
            heap,
            index,
            info,
            true,
            false,
            Some(heap_callback),
            &mut hc as *mut HeapCheck as *mut _,
            std::ptr::null_mut(),
        );
    }
    problems.append(&mut hc.problems);

    // 3. Bucket chains: every entry in the right superbucket with the right code and sketch; every vector
    //    of a live row exactly once per table (at most once for dead rows, which VACUUM will remove).
    if let Some(shape) = shape::load(index) {
        let tables = shape.params().tables as usize;
        let shift = shape.params().bits - shape.meta.dir_bits;
        let mut found: HashMap<(VectorRef, usize), u32> = HashMap::new();
        let mut expected: HashMap<VectorRef, imgsim_algo::lsh::RowHash> = HashMap::new();
        for (v, (_, vals)) in &vectors {
            if let Ok(h) = shape.model.hash(vals) {
                expected.insert(*v, h);
            }
        }
        for t in 0..tables {
            for sb in 0..(1usize << shape.meta.dir_bits) {
                let mut blk = shape.heads[(t << shape.meta.dir_bits) | sb];
                let mut hops = 0;
                while blk != page::INVALID_BLOCK {
                    hops += 1;
                    if hops > nblocks {
                        problems.push(format!(
                            "bucket chain of table {t} superbucket {sb} has a cycle"
                        ));
                        break;
                    }
                    let buf = Locked::read(index, blk, Lock::Share);
                    let p = buf.page();
                    if p.kind() != page::KIND_BUCKET {
                        problems.push(format!(
                            "block {blk} in the chain of table {t} is not a bucket page"
                        ));
                        break;
                    }
                    for off in 1..=p.max_offset() {
                        let Some(b) = p.item(off) else {
                            continue;
                        };
                        let e = BucketEntry::parse(b);
                        if (e.code >> shift) as usize != sb {
                            problems.push(format!(
                                "entry at block {blk} offset {off} is in the wrong superbucket"
                            ));
                        }
                        match expected.get(&e.vector) {
                            None if deleted.contains(&e.vector) => {}
                            None => problems.push(format!(
                                "entry at block {blk} offset {off} points at a missing vector ({},{})",
                                e.vector.block(),
                                e.vector.offset()
                            )),
                            Some(h) => {
                                if h.codes[t] != e.code || e.hamming(&h.sketch) != 0 {
                                    problems.push(format!("entry at block {blk} offset {off} does not match the planes (table {t})"));
                                }
                                *found.entry((e.vector, t)).or_default() += 1;
                            }
                        }
                    }
                    blk = p.next();
                }
            }
        }
        for (v, (tid, _)) in &vectors {
            let live = hc.alive.contains(&page::tid_parts(tid));
            for t in 0..tables {
                let n = found.get(&(*v, t)).copied().unwrap_or(0);
                if n > 1 || (live && n != 1) {
                    problems.push(format!(
                        "vector ({},{}) is in table {t} {n} times (expected once)",
                        v.block(),
                        v.offset()
                    ));
                }
            }
        }
    } else if !vectors.is_empty() {
        problems.push("index holds vectors but its meta page says it was never set up".into());
    }

    pgrx::notice!(
        "lsh index {name}: {} blocks, {} vectors ({} flagged deleted), {} live heap rows, {} problems",
        nblocks,
        vectors.len(),
        deleted.len(),
        hc.alive.len(),
        problems.len()
    );
    drop(shared);
    // SAFETY: closing what was opened above.
    unsafe {
        pg_sys::table_close(heap, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::index_close(index, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    }
    problems
}
