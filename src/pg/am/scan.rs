//! Index scans: `ORDER BY emb <op> query`. Candidates come from one of two sources (`lsh.scan_mode`,
//! automatic by index size, `imgsim_algo::lsh::auto::mode`):
//! - sketches: a pass over the entries of the first hash table (every row once, with its sketch) keeps
//!   the `RESCORE_FACTOR × lsh.rerank` rows of smallest (sketch Hamming distance, address) and orders
//!   them by the asymmetric estimate (query projections × row sign bits, imgsim_algo::rescore), whose
//!   best `lsh.rerank` are reranked first; when the executor asks for more, the next batches take the
//!   next rows of that order, and later passes the next rows after the last key taken, twice as many
//!   each time, so every row comes back, in a few passes even under a selective filter. With learned
//!   planes (imgsim_algo::partition) the passes run over phases: the first reads the superbucket
//!   chains nearest the query (`lsh.scan_fraction` of the rows), each next one the following chains
//!   in that order, as many rows as all phases before; a phase's passes end before the next phase
//!   begins, and each chain belongs to one phase;
//! - buckets: a batch probes buckets in query-directed multi-probe order (all tables together) until
//!   `lsh.probes` buckets per table or `lsh.max_candidates` distinct rows, and ranks the candidates by
//!   sketch Hamming distance; when the executor asks for more, the next batch reranks the next-best
//!   candidates and then probes further, until every bucket was visited.
//!
//! Either way exact distances are computed for the chosen candidates (vectors read page by page), which
//! are returned closest first with their exact distances (no recheck): filtered queries return their
//! LIMIT when the rows exist. Rows of later batches may be closer than the last one returned before them
//! (relaxed order).

use super::buffer::Locked;
use super::grow::SharedStructure;
use super::page::{self, BucketEntry, VectorRef};
use super::shape::{self, Shape};
use crate::pg::fmgr::error;
use crate::pg::gucs;
use crate::pg::types::embedding::EmbeddingRef;
use imgsim_algo::distance;
use imgsim_algo::estimator::hamming_at;
use imgsim_algo::lsh::{Metric, ScanMode};
use imgsim_algo::probing::{BucketProbing, Buckets, ProbeStop, SketchScan, Superbuckets};
use imgsim_algo::rescore::{take_best, SketchPass, RESCORE_FACTOR};
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{PgMemoryContexts, PgSqlErrorCode};
use std::collections::HashMap;
use std::rc::Rc;

struct ScanState {
    shape: Option<Rc<Shape>>,
    query: Vec<f32>,
    sketch: Vec<u64>,
    /// Bucket probing (imgsim_algo::probing, the engine MemIndex::search runs too): None when the
    /// scan reads sketches, or probes no more (every bucket visited, or the memory budget reached).
    probing: Option<BucketProbing>,
    /// Sketch scan (imgsim_algo::probing::SketchScan, the same engine as MemIndex's): None when the
    /// scan probes buckets.
    sketch_scan: Option<SketchScan>,
    /// Sketch passes made: each takes twice as many rows as the one before (from `RESCORE_FACTOR ×
    /// lsh.rerank`, at most what the scan's memory budget holds), so that a query whose filter rejects
    /// most rows reaches the end in a few passes.
    sketch_passes: u32,
    /// Chains a sketch scan has assigned to a superbucket (a chain shared by several superbuckets is
    /// read for the first only).
    chain_owner: HashMap<pg_sys::BlockNumber, u32>,
    /// Entries of superbucket chains already read: head block -> (code, vector, hamming).
    chains: HashMap<pg_sys::BlockNumber, Vec<(u32, VectorRef, u32)>>,
    /// Entries held in `chains`.
    chain_entries: usize,
    /// Candidates not yet reranked (rank key, address), in no particular order: the key is the
    /// asymmetric sketch estimate in a sketch scan, the sketch Hamming distance when probing buckets.
    pending: Vec<(u32, u64)>,
    /// Current batch, sorted farthest-first: pop() gives the next row.
    results: Vec<(f64, pg_sys::ItemPointerData)>,
    /// ORDER BY emb <op> NULL: `results` holds every row, returned with NULL distances.
    null_query: bool,
    started: bool,
    done: bool,
}

impl ScanState {
    fn new() -> ScanState {
        ScanState {
            shape: None,
            query: Vec::new(),
            sketch: Vec::new(),
            probing: None,
            sketch_scan: None,
            sketch_passes: 0,
            chain_owner: HashMap::new(),
            chains: HashMap::new(),
            chain_entries: 0,
            pending: Vec::new(),
            results: Vec::new(),
            null_query: false,
            started: false,
            done: true,
        }
    }
}

/// `ambeginscan`
#[pg_guard]
pub unsafe extern "C-unwind" fn ambeginscan(
    index: pg_sys::Relation,
    nkeys: i32,
    norderbys: i32,
) -> pg_sys::IndexScanDesc {
    // SAFETY: standard scan descriptor setup; the order-by value arrays are ours to allocate.
    unsafe {
        let scan = pg_sys::RelationGetIndexScan(index, nkeys, norderbys);
        let n = norderbys.max(1) as usize;
        (*scan).xs_orderbyvals =
            pg_sys::palloc0(size_of::<pg_sys::Datum>() * n) as *mut pg_sys::Datum;
        (*scan).xs_orderbynulls = pg_sys::palloc(n) as *mut bool;
        std::ptr::write_bytes((*scan).xs_orderbynulls, 1, n);
        // The index returns no column values (amcanreturn is not set), so the planner only picks an
        // index-only scan when no column is needed at all (count(*) with seq scans disabled): it then
        // gets this all-NULL tuple for every row.
        let mut value = pg_sys::Datum::from(0usize);
        let mut isnull = true;
        (*scan).xs_itupdesc = (*index).rd_att;
        (*scan).xs_itup =
            pg_sys::index_form_tuple((*index).rd_att, &raw mut value, &raw mut isnull);
        // The state belongs to the scan's memory context: it is dropped when that context goes, also
        // when the query fails or is cancelled and amendscan never runs.
        (*scan).opaque = PgMemoryContexts::CurrentMemoryContext
            .leak_and_drop_on_delete(ScanState::new())
            as *mut std::ffi::c_void;
        scan
    }
}

/// `amrescan`
#[pg_guard]
pub unsafe extern "C-unwind" fn amrescan(
    scan: pg_sys::IndexScanDesc,
    keys: pg_sys::ScanKey,
    nkeys: i32,
    orderbys: pg_sys::ScanKey,
    norderbys: i32,
) {
    // SAFETY: `scan` was made by ambeginscan; keys/orderbys have the given lengths.
    unsafe {
        if !keys.is_null() && nkeys > 0 {
            std::ptr::copy(keys, (*scan).keyData, nkeys as usize);
        }
        if !orderbys.is_null() && norderbys > 0 {
            std::ptr::copy(orderbys, (*scan).orderByData, norderbys as usize);
        }
        let st = &mut *((*scan).opaque as *mut ScanState);
        *st = ScanState::new();
    }
}

/// `amendscan`
#[pg_guard]
pub unsafe extern "C-unwind" fn amendscan(scan: pg_sys::IndexScanDesc) {
    // SAFETY: `opaque` holds the state made by ambeginscan, owned by the scan's memory context (which
    // drops it): only its buffers are released here, early.
    unsafe {
        let p = (*scan).opaque as *mut ScanState;
        if !p.is_null() {
            *p = ScanState::new();
        }
    }
}

/// Sets up the scan from the ORDER BY argument; leaves `done` set when there is nothing to return.
///
/// # Safety
/// `scan` is a live scan of this AM.
unsafe fn start(scan: pg_sys::IndexScanDesc, st: &mut ScanState) {
    st.started = true;
    // SAFETY: guaranteed by the caller.
    let (index, norderbys, snapshot) = unsafe {
        (
            (*scan).indexRelation,
            (*scan).numberOfOrderBys,
            (*scan).xs_snapshot,
        )
    };
    // Rows come from several pages read at different times, without pins kept between batches: only an
    // MVCC snapshot makes that safe (as in pgvector).
    // SAFETY: reading the snapshot's type of a live scan.
    let mvcc = !snapshot.is_null()
        && unsafe {
            matches!(
                (*snapshot).snapshot_type,
                pg_sys::SnapshotType::SNAPSHOT_MVCC | pg_sys::SnapshotType::SNAPSHOT_HISTORIC_MVCC
            )
        };
    if !mvcc {
        error(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "an lsh index can only be scanned with an MVCC snapshot",
        );
    }
    let Some(shape) = shape::load(index) else {
        return; // built empty, never inserted into
    };
    // SAFETY: orderByData has `norderbys` keys, copied in amrescan.
    let null_query = norderbys == 0
        || unsafe { (*(*scan).orderByData).sk_flags } & pg_sys::SK_ISNULL as i32 != 0;
    if null_query {
        // No ORDER BY (a full index scan, which the planner only takes when told to avoid seq scans) or
        // ORDER BY emb <-> NULL (every distance is NULL): every indexed row comes back unordered, as
        // from a seq scan, with NULL distances. The planner prefers a seq scan for both (cost.rs).
        st.null_query = true;
        st.results = shape::live_rows(index)
            .into_iter()
            .map(|tid| (f64::NAN, tid))
            .collect();
        st.done = false;
        return;
    }
    // SAFETY: the argument of an order-by key on an embedding opclass is a non-null embedding.
    let q = unsafe { EmbeddingRef::from_datum((*(*scan).orderByData).sk_argument) };
    if q.dims() != shape.dims() {
        shape::dims_mismatch(shape.dims(), q.dims());
    }
    let qh = shape.model.query(q.values()).unwrap_or_else(|e| {
        error(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("cannot hash query: {e}"),
        )
    });
    st.query = q.values().to_vec();
    st.sketch = qh.sketch.clone();
    let set = settings(index, &shape);
    if set.mode == ScanMode::Sketches {
        st.sketch_scan = Some(SketchScan::new(
            &qh,
            shape.meta.dir_bits,
            shape.model.learned().is_some(),
            set.rows as usize,
            set.scan_fraction,
        ));
    } else {
        st.probing = Some(BucketProbing::new(qh.probes()));
    }
    st.shape = Some(shape);
    st.done = false;
}

/// Exact distance, computed exactly as the SQL operator computes it.
fn exact(metric: Metric, a: &[f32], b: &[f32]) -> f64 {
    match metric {
        Metric::L2 => (distance::l2_squared(a, b) as f64).sqrt(),
        Metric::Cosine => distance::cosine_distance(a, b) as f64,
        Metric::InnerProduct => -(distance::dot(a, b) as f64),
    }
}

/// Memory one scan may hold for its candidates and cached chains: `work_mem × hash_mem_multiplier`, the
/// budget PostgreSQL gives its own hash tables (8 MB by default).
fn scan_memory_budget() -> usize {
    // SAFETY: reading GUC variables of this backend.
    let (work_mem_kb, multiplier) = unsafe { (pg_sys::work_mem, pg_sys::hash_mem_multiplier) };
    ((work_mem_kb.max(64) as f64) * 1024.0 * multiplier.max(1.0)) as usize
}

/// Bytes per cached chain entry (code, address, Hamming distance) and per candidate (seen set entry with
/// hash table overhead, plus its place in `pending`).
const CHAIN_ENTRY_BYTES: usize = size_of::<(u32, VectorRef, u32)>();
const CANDIDATE_BYTES: usize = 3 * size_of::<VectorRef>() + size_of::<(u32, VectorRef)>();

/// Bytes per row of a sketch pass's shortlist: up to twice its key and sketch (rescore::Shortlist
/// keeps at most 2 × cap + 64 of them, allocated to that bound), up to twice its key again in the
/// copy the shortlist selects its threshold from, its rescored entry (rescore::SketchPass::finish)
/// and its place in `pending`, which exist together for a moment.
fn shortlist_bytes(shape: &Shape) -> usize {
    2 * (8 + 8 * shape.params().sketch_words()) + 2 * 8 + 2 * size_of::<(u32, u64)>()
}

/// Probes up to `max_probes` more buckets, or until `max_new` new candidates were found
/// (imgsim_algo::probing). The cache of chains read is dropped when it would pass half the scan's
/// memory budget (chains are read again when needed); when the candidates themselves reach the budget,
/// probing stops for good (NOTICE), and the scan returns what it found.
fn probe(index: pg_sys::Relation, st: &mut ScanState, max_probes: usize, max_new: usize) {
    let shape = st.shape.clone().expect("scan started");
    let budget = scan_memory_budget();
    let Some(probing) = st.probing.as_mut() else {
        return;
    };
    let mut src = PageBuckets {
        index,
        shape: &shape,
        sketch: &st.sketch,
        chains: &mut st.chains,
        chain_entries: &mut st.chain_entries,
        budget,
    };
    let max_seen = budget.div_ceil(CANDIDATE_BYTES);
    match probing.probe(&mut src, &mut st.pending, max_probes, max_new, max_seen) {
        ProbeStop::Enough => {}
        ProbeStop::Exhausted => st.probing = None,
        ProbeStop::Budget => {
            let seen = probing.seen();
            st.probing = None;
            pgrx::ereport!(
                pgrx::PgLogLevel::NOTICE,
                PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
                format!(
                    "lsh index scan stopped probing after {seen} candidates: work_mem × hash_mem_multiplier reached"
                ),
                "The query may return fewer rows than asked for. Raise work_mem to let the scan go further."
            );
        }
    }
}

/// The index's buckets for imgsim_algo::probing: a bucket is read from its superbucket's chain (all
/// its entries, with their Hamming distances, cached for the scan's later probes), keeping the
/// entries of the bucket's code.
struct PageBuckets<'a> {
    index: pg_sys::Relation,
    shape: &'a Shape,
    sketch: &'a [u64],
    /// Entries of superbucket chains already read: head block -> (code, vector, hamming).
    chains: &'a mut HashMap<pg_sys::BlockNumber, Vec<(u32, VectorRef, u32)>>,
    /// Entries held in `chains`.
    chain_entries: &'a mut usize,
    budget: usize,
}

impl Buckets for PageBuckets<'_> {
    fn bucket(&mut self, table: u32, code: u32, out: &mut Vec<(u32, u64)>) {
        pg_sys::check_for_interrupts!();
        if *self.chain_entries * CHAIN_ENTRY_BYTES >= self.budget / 2 {
            self.chains.clear();
            *self.chain_entries = 0;
        }
        let head = self.shape.head(table as usize, code);
        let (index, sketch, build_id) = (self.index, self.sketch, self.shape.meta.build_id);
        let chain_entries = &mut *self.chain_entries;
        let entries = self.chains.entry(head).or_insert_with(|| {
            let c = read_chain(index, head, sketch, build_id);
            *chain_entries += c.len();
            c
        });
        out.extend(
            entries
                .iter()
                .filter(|e| e.0 == code)
                .map(|&(_, v, ham)| (ham, v.0)),
        );
    }
}

/// Calls `f(block, page)` for each page of the superbucket chain starting at `head`, share-locked while
/// `f` runs. Returns false when the chain ended early because the bucket structure was rebuilt while it
/// was read (a standby replaying grow.rs: the rest of the old chain is gone); ERROR on any other page that
/// is not a bucket page.
fn walk_chain(
    index: pg_sys::Relation,
    head: pg_sys::BlockNumber,
    build_id: u64,
    mut f: impl FnMut(pg_sys::BlockNumber, page::PageRef<'_>),
) -> bool {
    let mut blk = head;
    while blk != page::INVALID_BLOCK {
        pg_sys::check_for_interrupts!();
        let buf = Locked::read_shared_recent(index, blk);
        let p = buf.page();
        if p.kind() != page::KIND_BUCKET {
            drop(buf);
            if structure_changed(index, build_id) {
                return false;
            }
            error(
                PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
                format!("lsh index: block {blk} in a bucket chain is not a bucket page"),
            );
        }
        f(blk, p);
        blk = p.next();
    }
    true
}

/// The bucket entries of page `p` (block `blk`), into `starts` (where each sketch begins in the page
/// image `p.bytes()`), `codes` (bucket code) and `rows` (vector address), highest offset first: items
/// are placed downwards from the page's end, so this reads the page in ascending addresses (what the
/// hardware prefetcher follows). ERROR (index corrupted) for an entry whose sketch is not `words` words.
fn page_entries(
    p: page::PageRef<'_>,
    blk: pg_sys::BlockNumber,
    words: usize,
    starts: &mut Vec<u32>,
    codes: &mut Vec<u32>,
    rows: &mut Vec<u64>,
) {
    let raw = p.bytes();
    p.prefetch_items();
    starts.clear();
    codes.clear();
    rows.clear();
    for off in (1..=p.max_offset()).rev() {
        if let Some(b) = p.item(off) {
            let e = BucketEntry::parse(b);
            if e.sketch.len() != words * 8 {
                error(
                    PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
                    format!(
                        "lsh index: bucket entry of {} bytes in block {blk}",
                        b.len()
                    ),
                );
            }
            // The sketch lies inside the page image (`item` checks the item's bounds).
            starts.push((e.sketch.as_ptr() as usize - raw.as_ptr() as usize) as u32);
            codes.push(e.code);
            rows.push(e.vector.0);
        }
    }
}

/// All entries of a superbucket chain, with their Hamming distance to the query sketch (those read
/// before a rebuild ended the chain, on a standby).
fn read_chain(
    index: pg_sys::Relation,
    head: pg_sys::BlockNumber,
    q: &[u64],
    build_id: u64,
) -> Vec<(u32, VectorRef, u32)> {
    let mut out = Vec::new();
    let (mut starts, mut codes, mut rows, mut hams) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    walk_chain(index, head, build_id, |blk, p| {
        page_entries(p, blk, q.len(), &mut starts, &mut codes, &mut rows);
        hams.resize(rows.len(), 0);
        hamming_at(q, p.bytes(), &starts, &mut hams);
        out.extend(
            codes
                .iter()
                .zip(&rows)
                .zip(&hams)
                .map(|((&c, &r), &h)| (c, VectorRef(r), h)),
        );
    });
    out
}

/// Table 0's superbuckets for imgsim_algo::probing::SketchScan: a superbucket's chain, read page by
/// page, its entries offered with their sketches on the page (Hamming distances taken there).
struct PageSuperbuckets<'a> {
    index: pg_sys::Relation,
    shape: &'a Shape,
    chain_owner: &'a mut HashMap<pg_sys::BlockNumber, u32>,
    starts: Vec<u32>,
    codes: Vec<u32>,
    rows: Vec<u64>,
}

impl Superbuckets for PageSuperbuckets<'_> {
    fn offer(&mut self, sb: u32, pass: &mut SketchPass<'_>) -> Option<usize> {
        let head = self.shape.heads[sb as usize];
        if head == page::INVALID_BLOCK || *self.chain_owner.entry(head).or_insert(sb) != sb {
            return Some(0);
        }
        let words = self.shape.params().sketch_words();
        let (starts, codes, rows) = (&mut self.starts, &mut self.codes, &mut self.rows);
        let mut count = 0;
        let complete = walk_chain(self.index, head, self.shape.meta.build_id, |blk, p| {
            page_entries(p, blk, words, starts, codes, rows);
            count += rows.len();
            pass.offer(p.bytes(), starts, rows);
        });
        // A standby replayed a rebuild (see walk_chain): the scan ranks what was read and ends.
        complete.then_some(count)
    }
}

/// One sketch-scan pass (imgsim_algo::probing::SketchScan) of at most `cap` rows into `pending`;
/// false when the scan ended.
fn sketch_pass(index: pg_sys::Relation, st: &mut ScanState, cap: usize, shortlist: usize) -> bool {
    let shape = st.shape.clone().expect("scan started");
    let Some(scan) = st.sketch_scan.as_mut() else {
        return false;
    };
    let mut src = PageSuperbuckets {
        index,
        shape: &shape,
        chain_owner: &mut st.chain_owner,
        starts: Vec::new(),
        codes: Vec::new(),
        rows: Vec::new(),
    };
    scan.pass(&mut src, cap, shortlist, &mut st.pending)
}

/// Whether the index's bucket structure is no longer the one with `build_id` (rebuilt by grow.rs).
fn structure_changed(index: pg_sys::Relation, build_id: u64) -> bool {
    shape::read_meta(index).build_id != build_id
}

/// Scan settings for this index: the GUCs, or automatic values from its size.
fn settings(index: pg_sys::Relation, shape: &Shape) -> gucs::ScanSettings {
    // SAFETY: reading the open index's relcache entry.
    let reltuples = unsafe { (*(*index).rd_rel).reltuples } as f64;
    gucs::scan_settings(
        shape.params().bits,
        shape.params().tables,
        shape.params().sketch_bits,
        reltuples.max(grown_rows(index, shape)),
        shape.model.learned().is_some(),
    )
}

/// Rows of an index that grew since its layout was chosen, before ANALYZE updates `reltuples`: the
/// rows it was built with, scaled by how much it grew in pages (at most the 2× that triggers a layout
/// rebuild, grow.rs, plus what inserts add while one is not possible). A sketch scan's first phase
/// reads a share of this.
fn grown_rows(index: pg_sys::Relation, shape: &Shape) -> f64 {
    let built = shape.meta.built_rows as f64;
    if shape.meta.built_blocks == 0 {
        return built; // older meta pages
    }
    let growth = f64::from(shape::nblocks(index)) / f64::from(shape.meta.built_blocks);
    built * growth.max(1.0)
}

/// Fills `results` with the next batch; false when the scan is exhausted.
fn next_batch(index: pg_sys::Relation, st: &mut ScanState) -> bool {
    let shape = st.shape.clone().expect("scan started");
    let tables = shape.params().tables as usize;
    let set = settings(index, &shape);
    let (probes, max_candidates, rerank) = (
        set.probes_per_table * tables,
        set.max_candidates,
        set.rerank,
    );
    let metric = shape.params().metric;
    let mut values = Vec::with_capacity(shape.dims());
    loop {
        if st.pending.is_empty() {
            if st.sketch_scan.as_ref().is_some_and(|sc| !sc.done()) {
                // RESCORE_FACTOR × rerank rows (doubling with each pass) are shortlisted by Hamming
                // distance and reordered by the asymmetric estimate; at most what the scan's memory
                // budget holds (a hostile lsh.rerank).
                let budget_rows = scan_memory_budget() / shortlist_bytes(&shape);
                let cap = rerank
                    .saturating_mul(RESCORE_FACTOR << st.sketch_passes.min(20))
                    .min(budget_rows)
                    .max(1);
                let shortlist = rerank.saturating_mul(RESCORE_FACTOR).min(budget_rows);
                st.sketch_passes += 1;
                let more = sketch_pass(index, st, cap, shortlist);
                if st.pending.is_empty() {
                    if more {
                        continue;
                    }
                    return false;
                }
            } else if st.probing.is_none() {
                return false;
            } else {
                probe(index, st, probes, max_candidates);
                continue;
            }
        }
        // The best `rerank` by (rank key, address).
        let mut chosen: Vec<VectorRef> = take_best(&mut st.pending, rerank)
            .into_iter()
            .map(VectorRef)
            .collect();
        // In physical order: the candidates of one vector page are read under one buffer lock.
        chosen.sort_unstable();
        let query = &st.query;
        let results = &mut st.results;
        shape::read_vectors(index, &chosen, &mut values, |tid, deleted, values| {
            if !deleted && values.len() == query.len() {
                results.push((exact(metric, query, values), tid));
            }
        });
        if !st.results.is_empty() {
            st.results.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
            return true;
        }
    }
}

/// `amgettuple`
#[pg_guard]
pub unsafe extern "C-unwind" fn amgettuple(
    scan: pg_sys::IndexScanDesc,
    _dir: pg_sys::ScanDirection::Type,
) -> bool {
    // SAFETY: `scan` is a live scan made by ambeginscan; opaque holds our ScanState.
    unsafe {
        let st = &mut *((*scan).opaque as *mut ScanState);
        // Each batch reads the bucket structure under its share lock (grow.rs); between batches the
        // structure may be rebuilt: the candidates already found stay valid (vectors never move), the
        // old chains do not, so probing stops and the scan drains what it has.
        let need_batch = !st.started || (st.results.is_empty() && !st.done && !st.null_query);
        let _shared = need_batch.then(|| SharedStructure::lock((*scan).indexRelation));
        if need_batch
            && (st.probing.is_some() || st.sketch_scan.as_ref().is_some_and(|sc| !sc.done()))
            && st
                .shape
                .as_ref()
                .is_some_and(|sh| structure_changed((*scan).indexRelation, sh.meta.build_id))
        {
            st.probing = None;
            if let Some(sc) = st.sketch_scan.as_mut() {
                sc.stop();
            }
        }
        if !st.started {
            // First batch: probe the configured number of buckets before ranking.
            start(scan, st);
            if !st.done && !st.null_query && st.probing.is_some() {
                let shape = st.shape.clone().expect("scan started");
                let set = settings((*scan).indexRelation, &shape);
                let probes = set.probes_per_table * shape.params().tables as usize;
                let max_candidates = set.max_candidates;
                probe((*scan).indexRelation, st, probes, max_candidates);
            }
        }
        if st.done {
            return false;
        }
        if st.null_query {
            let Some((_, tid)) = st.results.pop() else {
                st.done = true;
                return false;
            };
            (*scan).xs_heaptid = tid;
            (*scan).xs_recheck = false;
            (*scan).xs_recheckorderby = false;
            if (*scan).numberOfOrderBys > 0 {
                *(*scan).xs_orderbynulls = true;
            }
            return true;
        }
        if st.results.is_empty() && !next_batch((*scan).indexRelation, st) {
            st.done = true;
            return false;
        }
        let (dist, tid) = st.results.pop().expect("batch not empty");
        (*scan).xs_heaptid = tid;
        (*scan).xs_recheck = false;
        (*scan).xs_recheckorderby = false;
        *(*scan).xs_orderbyvals = dist.into_datum().expect("float8 datum");
        *(*scan).xs_orderbynulls = false;
        true
    }
}
