//! `ambuild` / `ambuildempty`: one heap scan writes every vector into VECTOR pages and accumulates the
//! mean (for inner product: the sum of the rows and every row's norm, 4 bytes per row, so that the norm
//! augmentation's M, the largest norm, and the mean of the augmented rows are known before hashing);
//! then rows are hashed (planes regenerated from the options' seed) and each table's superbucket
//! chains, the mean and the directory are written. Every page is written once, whole, through
//! GenericXLog (a full-page image, as log_newpage would), so the build is crash-safe and replicated.

use super::buffer::{self, Lock, Locked};
use super::options;
use super::page::{self, BucketEntry, Meta, VectorItem, VectorRef};
use super::page::{PageMut, PageRef};
use super::shape;
use super::xlog::PageWrite;
use super::MAX_INDEX_DIMS;
use crate::pg::fmgr::{error, raise};
use crate::pg::types::embedding::EmbeddingRef;
use imgsim_algo::lsh::{auto, LshModel, LshParams, MeanAccumulator, Metric};
use imgsim_algo::partition;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;
use pgrx::PgSqlErrorCode;

const PHASE_LOAD: i64 = 2;
const PHASE_HASH: i64 = 3;
const PHASE_WRITE: i64 = 4;

/// `ambuildphasename`: names of the build sub-phases shown in pg_stat_progress_create_index.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambuildphasename(phase: i64) -> *mut std::ffi::c_char {
    let name: &std::ffi::CStr = match phase {
        PHASE_LOAD => c"loading vectors",
        PHASE_HASH => c"hashing rows",
        PHASE_WRITE => c"writing buckets",
        _ => return std::ptr::null_mut(),
    };
    name.as_ptr() as *mut std::ffi::c_char
}

fn progress(param: u32, value: i64) {
    // SAFETY: updating our own backend's progress slot; a no-op outside a progress-reporting command.
    unsafe { pg_sys::pgstat_progress_update_param(param as i32, value) };
}

/// An 8 kB page image built in backend-local memory, written once with [`write_new_page`].
pub struct LocalPage {
    buf: Vec<u64>,
}

impl LocalPage {
    pub fn new(kind: u16) -> LocalPage {
        let mut p = LocalPage {
            buf: vec![0u64; pg_sys::BLCKSZ as usize / 8],
        };
        p.page_mut().init(kind);
        p
    }
    pub fn page(&self) -> PageRef<'_> {
        // SAFETY: `buf` is BLCKSZ bytes, 8-aligned, owned by us and initialised by `new`.
        unsafe { PageRef::new(self.buf.as_ptr() as pg_sys::Page) }
    }
    pub fn page_mut(&mut self) -> PageMut<'_> {
        // SAFETY: as above; the mutable borrow of `self` makes the image exclusively ours while it lasts,
        // and it reaches the index only through `write_new_page` (WAL-logged).
        unsafe { PageMut::new(self.buf.as_mut_ptr() as pg_sys::Page) }
    }
    /// Adds an item, or returns None if the page is full.
    pub fn add(&mut self, bytes: &[u8]) -> Option<pg_sys::OffsetNumber> {
        self.page_mut().add_item(bytes)
    }
    pub fn set_next(&mut self, next: pg_sys::BlockNumber) {
        self.page_mut().set_next(next);
    }
    pub fn is_empty(&self) -> bool {
        self.page().max_offset() == 0
    }
}

/// Appends `image` to the index as a new page (WAL-logged as a full image); returns its block number.
pub fn write_new_page(
    index: pg_sys::Relation,
    fork: pg_sys::ForkNumber::Type,
    image: &LocalPage,
) -> pg_sys::BlockNumber {
    let mut buf = Locked::extend(index, fork);
    let blk = buf.block();
    let w = PageWrite::start(index);
    w.page(&mut buf, true).copy_from(image.page());
    w.finish();
    blk
}

struct BuildState {
    metric: Metric,
    dims: usize,
    page: Option<LocalPage>,
    /// Vectors waiting on `page` (offset, heap tid) are addressed once the page's block is known.
    pending: Vec<pg_sys::OffsetNumber>,
    vrefs: Vec<VectorRef>,
    /// The block `page` must be written to: it starts with the tail of a vector whose head (written
    /// already) names that block.
    tail_block: Option<pg_sys::BlockNumber>,
    mean: Option<MeanAccumulator>,
    index: pg_sys::Relation,
    /// Per-row memory (detoasted vectors), reset after every row.
    row_context: pg_sys::MemoryContext,
}

impl BuildState {
    /// Writes the current page (if it holds anything) and addresses its vectors; returns its block.
    fn flush(&mut self) -> Option<pg_sys::BlockNumber> {
        let p = self.page.take().filter(|p| !p.is_empty())?;
        let blk = write_new_page(self.index, pg_sys::ForkNumber::MAIN_FORKNUM, &p);
        if self.tail_block.take().is_some_and(|t| t != blk) {
            not_consecutive();
        }
        self.vrefs
            .extend(self.pending.drain(..).map(|off| VectorRef::new(blk, off)));
        Some(blk)
    }

    /// Stores a vector that does not fit whole on the current page as a head (its first `k` values) at
    /// the end of that page and a tail as the first item of the next page. Pages are appended in order
    /// while the build loads vectors, so the next page's block is known before it is written (checked).
    fn add_split(&mut self, tid: pg_sys::ItemPointerData, values: &[f32], k: usize) {
        let this_block = shape::nblocks(self.index);
        let tail_ref = VectorRef::new(this_block + 1, 1);
        let head = VectorItem::encode_head(tid, &values[..k], tail_ref);
        let off = self
            .page
            .as_mut()
            .and_then(|p| p.add(&head))
            .expect("the head was sized to the page's room");
        self.pending.push(off);
        let written = self.flush();
        let mut p = LocalPage::new(page::KIND_VECTOR);
        let tail_off = p.add(&VectorItem::encode_tail(tid, &values[k..]));
        if written != Some(this_block) || tail_off != Some(tail_ref.offset()) {
            not_consecutive();
        }
        self.page = Some(p);
        self.tail_block = Some(tail_ref.block());
    }

    fn add(&mut self, tid: pg_sys::ItemPointerData, values: &[f32]) {
        if self.dims == 0 {
            self.dims = values.len();
            check_index_dims(self.dims);
        }
        if values.len() != self.dims {
            shape::dims_mismatch(self.dims, values.len());
        }
        let mean = self
            .mean
            .get_or_insert_with(|| MeanAccumulator::new(values.len(), self.metric));
        if let Err(e) = mean.add(values) {
            error(
                PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                format!("cannot index this embedding: {e}"),
            );
        }
        let item = VectorItem::encode(tid, values);
        let p = self
            .page
            .get_or_insert_with(|| LocalPage::new(page::KIND_VECTOR));
        match p.add(&item) {
            Some(off) => self.pending.push(off),
            None => match page::split_head_values(p.page().free_space(), values.len()) {
                Some(k) => self.add_split(tid, values, k),
                None => {
                    self.flush();
                    let mut p = LocalPage::new(page::KIND_VECTOR);
                    let off = p.add(&item).expect("a vector item fits an empty page");
                    self.page = Some(p);
                    self.pending.push(off);
                }
            },
        }
        // Fail early, during the heap scan, when the structure will not fit (bits do not change its size).
        let rows = self.vrefs.len() + self.pending.len();
        if rows.is_multiple_of(1 << 16) {
            check_structure_memory(
                rows,
                &options::params(self.index, self.dims, self.metric, rows as u64),
            );
        }
    }
}

/// ERROR: a split vector's tail was not written where its head says (something else extended the index
/// during the build's load phase).
fn not_consecutive() -> ! {
    error(
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
        "lsh index build: vector pages are not consecutive",
    )
}

/// Backend memory that [`write_structure`] holds per row: every table's bucket code, the sketch, the
/// sort order and the row's address.
pub fn structure_bytes_per_row(params: &LshParams) -> usize {
    params.tables as usize * 4 + params.sketch_words() * 8 + 4 + size_of::<VectorRef>()
}

/// `maintenance_work_mem` in bytes.
pub fn maintenance_work_mem_bytes() -> usize {
    // SAFETY: reading a GUC variable of this backend.
    (unsafe { pg_sys::maintenance_work_mem }).max(0) as usize * 1024
}

/// Whether the bucket structure of `rows` rows fits in `maintenance_work_mem`; Err(bytes needed) if not.
pub fn structure_fits(rows: usize, params: &LshParams) -> Result<(), usize> {
    let need = rows.saturating_mul(structure_bytes_per_row(params));
    if need > maintenance_work_mem_bytes() {
        Err(need)
    } else {
        Ok(())
    }
}

/// ERROR (54000) unless the bucket structure of `rows` rows fits in `maintenance_work_mem`, naming the
/// setting that would make it fit (as pgvector's ivfflat does for its k-means sample).
pub fn check_structure_memory(rows: usize, params: &LshParams) {
    if let Err(need) = structure_fits(rows, params) {
        let mb = need.div_ceil(1 << 20);
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!(
                "memory required is {mb} MB, maintenance_work_mem is {} MB",
                maintenance_work_mem_bytes() >> 20
            ),
            Some(format!(
                "Building the lsh bucket structure of {rows} rows holds {} bytes per row.",
                structure_bytes_per_row(params)
            )),
            Some(format!("Increase maintenance_work_mem to at least {mb}MB.")),
        );
    }
}

/// A zeroed vector of `n` elements, or ERROR 53200 when the memory cannot be had.
fn zeroed<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v = Vec::new();
    if v.try_reserve_exact(n).is_err() {
        error(
            PgSqlErrorCode::ERRCODE_OUT_OF_MEMORY,
            format!("out of memory for {n} lsh build entries"),
        );
    }
    v.resize(n, T::default());
    v
}

/// Below this many rows a build says that the index's layout is provisional.
const SMALL_BUILD_ROWS: usize = 10_000;

/// NOTICE when CREATE INDEX / REINDEX saw too few rows to choose the layout for good (bits per table,
/// centring mean, superbuckets): it is rebuilt in place as rows arrive (grow.rs), at a cost.
fn small_build_notice(rows: usize) {
    if rows >= SMALL_BUILD_ROWS {
        return;
    }
    let what = if rows == 0 {
        "lsh index created on an empty table: its layout is provisional".to_string()
    } else {
        format!("lsh index built from only {rows} rows: its layout is provisional")
    };
    pgrx::ereport!(
        pgrx::PgLogLevel::NOTICE,
        PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
        what,
        "As rows arrive the index rebuilds its bucket layout in place each time it has doubled in size \
         (lsh_index_info shows it); a REINDEX after a bulk load gives the final layout at once."
    );
}

/// ERROR unless an index can hold vectors of `dims` dimensions.
pub fn check_index_dims(dims: usize) {
    if dims > MAX_INDEX_DIMS {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            format!("lsh index supports at most {MAX_INDEX_DIMS} dimensions, not {dims}"),
            None,
            Some("Reduce the embedding dimensions, or search without an index.".into()),
        );
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn build_callback(
    _index: pg_sys::Relation,
    tid: pg_sys::ItemPointer,
    values: *mut pg_sys::Datum,
    isnull: *mut bool,
    _alive: bool,
    state: *mut std::ffi::c_void,
) {
    // SAFETY: `state` is the BuildState passed to table_index_build_scan; values/isnull have one column.
    unsafe {
        pg_sys::check_for_interrupts!();
        if *isnull {
            return;
        }
        let st = &mut *(state as *mut BuildState);
        // The detoasted copy lives in the per-row context, reset after each row.
        let tmp = st.row_context;
        PgMemoryContexts::For(tmp).switch_to(|_| {
            let e = EmbeddingRef::from_datum(*values);
            st.add(*tid, e.values());
        });
        pg_sys::MemoryContextReset(tmp);
    }
}

/// Typmod dimensions of the indexed column (0 when unconstrained).
fn column_dims(index: pg_sys::Relation) -> usize {
    // SAFETY: an index relation has a tuple descriptor with at least one attribute.
    let typmod = unsafe { crate::pg::compat::attr_typmod((*index).rd_att, 0) };
    if typmod > 0 {
        typmod as usize
    } else {
        0
    }
}

/// A fresh build id for the meta page (keys the backends' model caches).
fn new_build_id() -> u64 {
    // SAFETY: plain reads of the clock and of this backend's pid.
    let (t, pid) = unsafe {
        (
            pg_sys::GetCurrentTimestamp() as u64,
            pg_sys::MyProcPid as u64,
        )
    };
    t ^ (pid << 48) ^ 0x9e37_79b9_7f4a_7c15
}

/// `ambuild`
#[pg_guard]
pub unsafe extern "C-unwind" fn ambuild(
    heap: pg_sys::Relation,
    index: pg_sys::Relation,
    index_info: *mut pg_sys::IndexInfo,
) -> *mut pg_sys::IndexBuildResult {
    if shape::nblocks(index) != 0 {
        error(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "lsh index is not empty at build",
        );
    }
    let metric = super::index_metric(index);
    let dims = column_dims(index);
    if dims > 0 {
        check_index_dims(dims);
    }
    // Block 0: the meta page, rewritten at the end.
    let mut meta_image = LocalPage::new(page::KIND_META);
    meta_image.page_mut().write_meta(&empty_meta());
    write_new_page(index, pg_sys::ForkNumber::MAIN_FORKNUM, &meta_image);

    progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_LOAD);
    let mut st = BuildState {
        metric,
        dims,
        page: None,
        pending: Vec::new(),
        vrefs: Vec::new(),
        tail_block: None,
        mean: None,
        index,
        // SAFETY: a child of the build's context, deleted with it (and explicitly below).
        row_context: unsafe {
            pg_sys::AllocSetContextCreateExtended(
                pg_sys::CurrentMemoryContext,
                c"lsh build row".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            )
        },
    };
    // SAFETY: standard heap scan feeding `build_callback` with the index's column values.
    let heap_tuples = unsafe {
        pg_sys::table_index_build_scan(
            heap,
            index,
            index_info,
            true,
            true,
            Some(build_callback),
            &mut st as *mut BuildState as *mut _,
            std::ptr::null_mut(),
        )
    };
    st.flush();
    // SAFETY: no allocation of the build lives in it any more.
    unsafe { pg_sys::MemoryContextDelete(st.row_context) };
    let rows = st.vrefs.len();
    small_build_notice(rows);
    // An inner-product index needs a row to choose its norm augmentation's M: one built on an empty
    // table (even with known dimensions) is set up by its first insert, as one of unknown dimensions.
    let set_up_later = rows == 0 && metric == Metric::InnerProduct;
    if st.dims > 0 && !set_up_later {
        let acc = st
            .mean
            .take()
            .unwrap_or_else(|| MeanAccumulator::new(st.dims, metric));
        let mut params = options::params(index, st.dims, metric, rows as u64);
        // 0 (no augmentation) for l2 and cosine.
        params.max_norm = acc.augment_norm();
        let mean = acc.finish();
        drop(acc);
        let meta = write_structure(index, params, mean, &st.vrefs, true);
        write_meta_page(
            index,
            &mut Locked::read(index, page::META_BLOCK, Lock::Exclusive),
            &meta,
        );
    }
    let mut result = unsafe { PgBox::<pg_sys::IndexBuildResult>::alloc0() };
    result.heap_tuples = heap_tuples;
    result.index_tuples = rows as f64;
    result.into_pg()
}

/// `ambuildempty`: the init fork of an UNLOGGED index — a meta page with unknown dimensions; the first
/// insert after a crash reset sets the index up.
#[pg_guard]
pub unsafe extern "C-unwind" fn ambuildempty(index: pg_sys::Relation) {
    let mut image = LocalPage::new(page::KIND_META);
    image.page_mut().write_meta(&empty_meta());
    buffer::write_init_fork_page(index, image.page());
}

pub fn empty_meta() -> Meta {
    Meta {
        magic: page::MAGIC,
        version: page::VERSION_WITHOUT_LEARNED,
        params: [0; 32],
        dims: 0,
        dir_bits: 0,
        mean_start: page::INVALID_BLOCK,
        mean_pages: 0,
        dir_start: page::INVALID_BLOCK,
        dir_pages: 0,
        built_rows: 0,
        build_id: 0,
        built_blocks: 0,
        rebuild_pending: 0,
        learned_planes: 0,
        reserved: 0,
    }
}

/// `model` with learned table-0 planes (imgsim_algo::partition) fitted to an evenly spaced sample of
/// the rows at `vrefs` (`partition::sample_positions`: at most 8,192 rows and 16 MB, read back from
/// the index's own pages), for a one-table index of at least `partition::MIN_ROWS` rows; else `model`
/// as it is (also when the sample's memory cannot be had: the planes are optional).
fn learn_partition(index: pg_sys::Relation, model: LshModel, vrefs: &[VectorRef]) -> LshModel {
    let params = *model.params();
    if LshModel::partition_planes(&params) == 0 || vrefs.len() < partition::MIN_ROWS {
        return model;
    }
    let dims = params.dims as usize;
    let positions: Vec<usize> = partition::sample_positions(vrefs.len(), dims).collect();
    let mut sample = Vec::new();
    if sample.try_reserve_exact(positions.len() * dims).is_err() {
        return model;
    }
    let mut values = Vec::with_capacity(dims);
    for (i, &pos) in positions.iter().enumerate() {
        if i % 256 == 0 {
            pg_sys::check_for_interrupts!();
        }
        // A row the sample cannot read whole (flagged deleted meanwhile) is left out of it.
        if shape::read_vector(index, vrefs[pos], &mut values).is_some() && values.len() == dims {
            sample.extend_from_slice(&values);
        }
    }
    model
        .learn_partition(&mut sample, vrefs.len(), &mut || {
            pg_sys::check_for_interrupts!();
        })
        .unwrap_or_else(|e| {
            error(
                PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                format!("cannot fit lsh partition planes: {e}"),
            )
        })
}

/// Rewrites the meta page (block 0, pinned and exclusively locked by the caller) with `meta`.
pub fn write_meta_page(index: pg_sys::Relation, buf: &mut Locked, meta: &Meta) {
    let w = PageWrite::start(index);
    let mut p = w.page(buf, true);
    p.init(page::KIND_META);
    p.write_meta(meta);
    w.finish();
}

/// Hashes the rows at `vrefs` (already in VECTOR pages) and writes bucket chains, the mean and the
/// directory; returns the meta page contents that make them visible (the caller writes block 0 last).
/// `report` turns on build progress.
pub fn write_structure(
    index: pg_sys::Relation,
    params: LshParams,
    mean: Vec<f32>,
    vrefs: &[VectorRef],
    report: bool,
) -> Meta {
    let fork = pg_sys::ForkNumber::MAIN_FORKNUM;
    let model = LshModel::new(params, mean).unwrap_or_else(|e| {
        error(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("invalid lsh index options: {e}"),
        )
    });
    let tables = params.tables as usize;
    let words = params.sketch_words();
    let n = vrefs.len();
    check_structure_memory(n, &params);
    let model = learn_partition(index, model, vrefs);

    // Hash every row (reading vectors back from the index's own pages, in physical order).
    if report {
        progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_HASH);
        progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_TOTAL, n as i64);
    }
    let mut codes: Vec<u32> = zeroed(n * tables);
    let mut sketches: Vec<u64> = zeroed(n * words);
    let dims = params.dims as usize;
    let batch = LshModel::HASH_BATCH;
    let mut values = Vec::with_capacity(dims);
    let mut rows = Vec::with_capacity(batch * dims);
    let mut scratch = Vec::with_capacity(batch * params.hash_dims() as usize);
    for (b, chunk) in vrefs.chunks(batch).enumerate() {
        let i = b * batch;
        if b % 16 == 0 {
            pg_sys::check_for_interrupts!();
            if report {
                progress(pg_sys::PROGRESS_CREATEIDX_TUPLES_DONE, i as i64);
            }
        }
        rows.clear();
        for v in chunk {
            shape::read_vector(index, *v, &mut values).expect("vector written by this build");
            if values.len() != dims {
                shape::dims_mismatch(dims, values.len());
            }
            rows.extend_from_slice(&values);
        }
        let end = i + chunk.len();
        model
            .hash_many_into(
                &rows,
                &mut scratch,
                &mut codes[i * tables..end * tables],
                &mut sketches[i * words..end * words],
            )
            .unwrap_or_else(|e| {
                error(
                    PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
                    format!("cannot hash embedding: {e}"),
                )
            });
    }

    // Bucket chains, table by table, superbucket by superbucket.
    if report {
        progress(pg_sys::PROGRESS_CREATEIDX_SUBPHASE, PHASE_WRITE);
    }
    let dir_bits = auto::dir_bits(n, params.bits, params.tables, model.learned().is_some());
    let shift = params.bits - dir_bits;
    let mut heads = Vec::with_capacity(tables << dir_bits);
    let mut order: Vec<u32> = zeroed(n);
    order
        .iter_mut()
        .enumerate()
        .for_each(|(i, o)| *o = i as u32);
    for t in 0..tables {
        order.sort_by_key(|&i| codes[i as usize * tables + t]);
        let mut pos = 0;
        for sb in 0..(1u32 << dir_bits) {
            pg_sys::check_for_interrupts!();
            let start = pos;
            while pos < n && codes[order[pos] as usize * tables + t] >> shift == sb {
                pos += 1;
            }
            let entries = order[start..pos].iter().map(|&i| {
                let i = i as usize;
                BucketEntry::encode(
                    codes[i * tables + t],
                    vrefs[i],
                    &sketches[i * words..(i + 1) * words],
                )
            });
            heads.push(write_chain(index, fork, entries));
        }
    }

    // Mean (and learned planes) and directory as raw runs, then the meta page.
    let learned = model.learned().map(|l| l.to_f32s()).unwrap_or_default();
    let mean_bytes: Vec<u8> = model
        .mean()
        .iter()
        .chain(&learned)
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let (mean_start, mean_pages) = write_raw_run(index, fork, page::KIND_MEAN, &mean_bytes);
    let dir_bytes: Vec<u8> = heads.iter().flat_map(|b| b.to_le_bytes()).collect();
    let (dir_start, dir_pages) = write_raw_run(index, fork, page::KIND_DIRECTORY, &dir_bytes);
    Meta {
        params: params.to_bytes(),
        dims: params.dims,
        dir_bits,
        mean_start,
        mean_pages,
        dir_start,
        dir_pages,
        built_rows: n as u64,
        build_id: new_build_id(),
        built_blocks: shape::nblocks(index),
        learned_planes: model.learned().map_or(0, |l| l.count() as u32),
        version: page::version_for(model.learned().is_some()),
        ..empty_meta()
    }
}

/// Writes one superbucket chain (at least one page, possibly empty); returns its head block.
pub fn write_chain(
    index: pg_sys::Relation,
    fork: pg_sys::ForkNumber::Type,
    entries: impl Iterator<Item = Vec<u8>>,
) -> pg_sys::BlockNumber {
    let mut pages = vec![LocalPage::new(page::KIND_BUCKET)];
    for e in entries {
        if pages.last_mut().and_then(|p| p.add(&e)).is_none() {
            let mut p = LocalPage::new(page::KIND_BUCKET);
            p.add(&e).expect("a bucket entry fits an empty page");
            pages.push(p);
        }
    }
    // Written last page first, so each page can name the block of its successor.
    let mut next = page::INVALID_BLOCK;
    for p in pages.iter_mut().rev() {
        p.set_next(next);
        next = write_new_page(index, fork, p);
    }
    next
}

/// Writes `bytes` over consecutive new pages of `kind`; returns (first block, page count).
fn write_raw_run(
    index: pg_sys::Relation,
    fork: pg_sys::ForkNumber::Type,
    kind: u16,
    bytes: &[u8],
) -> (pg_sys::BlockNumber, u32) {
    let mut first = page::INVALID_BLOCK;
    let mut count = 0;
    for (i, chunk) in bytes.chunks(page::WORDS_PER_PAGE * 4).enumerate() {
        let mut p = LocalPage::new(kind);
        p.page_mut().write_contents(chunk);
        let blk = write_new_page(index, fork, &p);
        if i == 0 {
            first = blk;
        } else if blk != first + i as u32 {
            error(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "lsh index: raw run pages are not consecutive",
            );
        }
        count += 1;
    }
    (first, count)
}
