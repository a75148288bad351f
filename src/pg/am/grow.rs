//! Growing an index in place. (Also: an inner-product index whose rows outgrow its norm bound M.)
//! An index keeps the layout chosen when it was built (bits per table, the
//! centring mean, superbucket directory): right for the rows it was built on, wrong once far more arrive
//! (an index created before its data, or after TRUNCATE, gets one superbucket chain per table, and every
//! insert and scan walks it whole). So when an insert finds its superbucket chain longer than
//! [`LONG_CHAIN_PAGES`] pages and the index has at least doubled in pages since its layout was chosen, the
//! bucket structure is rebuilt from the vectors already stored in the index — a REINDEX without the
//! heap scan and without moving any vector: bits from the row count, the mean of the stored vectors,
//! superbuckets of about 128 rows. Chains stay a few pages long as the index grows, at an amortised cost
//! (each rebuild hashes the rows once; rebuilds come at geometrically growing sizes).
//!
//! Interlock: a heavyweight lock on the meta page. Inserts, each batch of a scan, VACUUM's bulk delete and
//! `lsh_index_check` hold it in share mode; a rebuild takes it exclusively, and only if that is possible at
//! once (`ConditionalLockPage`: it never waits, so it can neither deadlock nor stall the insert that
//! triggered it; a later insert tries again).
//!
//! Crash safety: the new chains, mean and directory are written to new pages first (unreachable until the
//! switch), then the meta page is rewritten in one WAL record (the switch, with a new build id so every
//! backend reloads its cached shape), then the old structure pages become empty vector pages (WAL-logged)
//! offered to inserts through the free space map. A crash before the switch leaves the old structure in use; after
//! it, the new one. Either way the pages of the other are left unused (space, not correctness).
//! A standby replays the same records; a scan there that meets a vector page in a chain it started on
//! before the switch stops reading that chain (see scan.rs).

use super::buffer::{Lock, Locked};
use super::build::{write_meta_page, write_structure};
use super::options;
use super::page::{self, VectorRef};
use super::shape::{self, Shape};
use super::xlog::PageWrite;
use imgsim_algo::lsh::{LshParams, MeanAccumulator};
use pgrx::pg_sys;

/// A superbucket chain longer than this many pages asks for a rebuild of the bucket structure.
pub const LONG_CHAIN_PAGES: usize = 4;

/// The meta page's heavyweight lock in share mode, released on drop (also when an ERROR unwinds).
pub struct SharedStructure {
    index: pg_sys::Relation,
}

impl SharedStructure {
    pub fn lock(index: pg_sys::Relation) -> SharedStructure {
        // SAFETY: `index` is open; page locks are ordinary lock-manager locks, released at transaction
        // end at the latest.
        unsafe {
            pg_sys::LockPage(
                index,
                page::META_BLOCK,
                pg_sys::ShareLock as pg_sys::LOCKMODE,
            )
        };
        SharedStructure { index }
    }
}

impl Drop for SharedStructure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Unwinding from an ERROR: the transaction abort releases the lock (as buffer.rs's guards).
            return;
        }
        // SAFETY: this guard took exactly this lock.
        unsafe {
            pg_sys::UnlockPage(
                self.index,
                page::META_BLOCK,
                pg_sys::ShareLock as pg_sys::LOCKMODE,
            )
        };
    }
}

/// Whether the index has outgrown the layout in `meta`: twice the pages it had when the layout was
/// chosen (indexes written before `built_blocks` existed have 0 there and qualify).
fn outgrown(meta: &page::Meta, nblocks: pg_sys::BlockNumber) -> bool {
    nblocks >= meta.built_blocks.saturating_mul(2)
}

/// Inner product: a row longer than this many times the index's norm bound M asks for a rebuild (which
/// takes M from the stored rows). Rows up to that length are hashed clamped; bounded growth of M means at
/// most log2(longest / first M) rebuilds for this reason.
pub const NORM_GROWTH: f32 = 2.0;

/// Why an insert asks for a rebuild of the bucket structure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    /// A superbucket chain over [`LONG_CHAIN_PAGES`] pages: rebuilt if the index outgrew its layout.
    LongChain,
    /// An inner-product row of this norm: rebuilt if it is over [`NORM_GROWTH`] × M.
    Norm(f32),
}

thread_local! {
    /// (index oid, build id) of layouts this backend found too big to rebuild within
    /// maintenance_work_mem: not tried again until the layout changes (REINDEX, or another backend).
    static TOO_BIG: std::cell::RefCell<Vec<(u32, u64)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn layout_key(index: pg_sys::Relation, meta: &page::Meta) -> (u32, u64) {
    // SAFETY: `index` is an open relation.
    (unsafe { (*index).rd_id }.to_u32(), meta.build_id)
}

fn wanted(index: pg_sys::Relation, meta: &page::Meta, trigger: Trigger) -> bool {
    if meta.dims == 0 || TOO_BIG.with(|t| t.borrow().contains(&layout_key(index, meta))) {
        return false;
    }
    match trigger {
        Trigger::LongChain => outgrown(meta, shape::nblocks(index)),
        Trigger::Norm(n) => LshParams::from_bytes(&meta.params)
            .is_ok_and(|p| p.max_norm > 0.0 && n > NORM_GROWTH * p.max_norm),
    }
}

/// Called by an insert that asked for a rebuild (`trigger`), holding no lock of ours: rebuilds the
/// bucket structure if it is still wanted and no other backend is using the structure right now.
pub fn maybe_rebuild(index: pg_sys::Relation, trigger: Trigger) {
    let lock = pg_sys::ExclusiveLock as pg_sys::LOCKMODE;
    // Cheap test first, without the lock.
    if !wanted(index, &shape::read_meta(index), trigger) {
        return;
    }
    // SAFETY: a conditional lock-manager lock on our own index's meta page; released below.
    if !unsafe { pg_sys::ConditionalLockPage(index, page::META_BLOCK, lock) } {
        return;
    }
    // Under the lock, again: another backend may just have rebuilt it.
    if wanted(index, &shape::read_meta(index), trigger) {
        if let Some(old) = shape::load(index) {
            rebuild(index, &old);
        }
    }
    // SAFETY: taken above. (On ERROR the transaction's abort releases it.)
    unsafe { pg_sys::UnlockPage(index, page::META_BLOCK, lock) };
}

/// Every stored vector not flagged deleted, and the mean the hash model centres on.
fn stored_vectors(index: pg_sys::Relation, old: &Shape) -> (Vec<VectorRef>, MeanAccumulator) {
    let params = old.params();
    let mut mean = MeanAccumulator::new(params.dims as usize, params.metric);
    let mut vrefs = Vec::new();
    shape::for_each_live_vector(index, true, |vref, _, values| {
        // Every stored row is kept; only the mean skips what it cannot use.
        let _ = mean.add(values);
        vrefs.push(vref);
    });
    (vrefs, mean)
}

/// Blocks of the structure `old` points at: every page of its chains, its mean and its directory.
fn structure_blocks(index: pg_sys::Relation, old: &Shape) -> Vec<pg_sys::BlockNumber> {
    let nblocks = shape::nblocks(index);
    let mut out: Vec<pg_sys::BlockNumber> = (old.meta.mean_start
        ..old.meta.mean_start + old.meta.mean_pages)
        .chain(old.meta.dir_start..old.meta.dir_start + old.meta.dir_pages)
        .collect();
    for &head in &old.heads {
        let mut blk = head;
        while blk != page::INVALID_BLOCK && blk < nblocks {
            let buf = Locked::read(index, blk, Lock::Share);
            let p = buf.page();
            let next = if p.kind() == page::KIND_BUCKET {
                p.next()
            } else {
                page::INVALID_BLOCK
            };
            drop(buf);
            out.push(blk);
            blk = next;
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Turns a structure page that no structure uses into an empty vector page offered to inserts.
fn reclaim_page(index: pg_sys::Relation, blk: pg_sys::BlockNumber) {
    let mut buf = Locked::read(index, blk, Lock::Exclusive);
    let w = PageWrite::start(index);
    w.page(&mut buf, true).init(page::KIND_VECTOR);
    w.finish();
    buf.record_free_space(index);
}

/// VACUUM: bucket, mean and directory pages that the current structure does not use — left by a crash
/// between writing a rebuilt structure and switching to it, or in the middle of reclaiming the old one
/// after the switch — become empty vector pages, as a completed rebuild leaves them. Returns how many.
///
/// Under the structure's share lock no rebuild (exclusive) is writing a structure; an index still
/// waiting for its first row has no structure (and its first insert writes one under the meta page's
/// buffer lock): it is left alone.
pub fn reclaim_unused_structure_pages(index: pg_sys::Relation) -> u32 {
    let _shared = SharedStructure::lock(index);
    let meta = shape::read_meta(index);
    if meta.rebuild_pending == 0 {
        return 0; // no rebuild was interrupted since the last VACUUM: nothing to look for
    }
    let Some(shape) = shape::load_from(index, meta) else {
        return 0;
    };
    let used: std::collections::HashSet<pg_sys::BlockNumber> =
        structure_blocks(index, &shape).into_iter().collect();
    let mut reclaimed = 0;
    for blk in 1..shape::nblocks(index) {
        crate::pg::compat::vacuum_delay_point();
        if used.contains(&blk) {
            continue;
        }
        let kind = Locked::read(index, blk, Lock::Share).page().kind();
        if matches!(
            kind,
            page::KIND_BUCKET | page::KIND_MEAN | page::KIND_DIRECTORY
        ) {
            reclaim_page(index, blk);
            reclaimed += 1;
        }
    }
    if reclaimed > 0 {
        // SAFETY: make the recorded free space visible to searches from the FSM's root.
        unsafe { pg_sys::IndexFreeSpaceMapVacuum(index) };
    }
    set_rebuild_pending(index, false);
    reclaimed
}

/// Rewrites the meta page with `rebuild_pending` set or cleared (same build id: cached shapes stay valid).
pub(super) fn set_rebuild_pending(index: pg_sys::Relation, pending: bool) {
    let mut buf = Locked::read(index, page::META_BLOCK, Lock::Exclusive);
    let mut meta = buf.page().read_meta(index);
    meta.rebuild_pending = u32::from(pending);
    write_meta_page(index, &mut buf, &meta);
}

/// Rebuilds the bucket structure from the stored vectors (exclusive meta page lock held).
fn rebuild(index: pg_sys::Relation, old: &Shape) {
    let (vrefs, mean) = stored_vectors(index, old);
    let params = old.params();
    let mut new_params = options::params(
        index,
        params.dims as usize,
        params.metric,
        vrefs.len() as u64,
    );
    // Inner product: M from the stored rows (replacing a first insert's guess; a legacy normalised ip
    // index becomes norm-augmented). 0 for l2 and cosine.
    new_params.max_norm = mean.augment_norm();
    if let Err(need) = super::build::structure_fits(vrefs.len(), &new_params) {
        // An insert must not fail for want of memory for an optional rebuild: keep the current layout
        // (and do not read the whole index again for it in this backend).
        TOO_BIG.with(|t| t.borrow_mut().push(layout_key(index, &old.meta)));
        pgrx::ereport!(
            pgrx::PgLogLevel::NOTICE,
            pgrx::PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION,
            format!(
                "lsh index keeps its bucket layout: rebuilding it needs {} MB, more than maintenance_work_mem",
                need.div_ceil(1 << 20)
            ),
            "REINDEX with a larger maintenance_work_mem gives the index a layout for its current size."
        );
        return;
    }
    let old_blocks = structure_blocks(index, old);
    // From here until the old structure is reclaimed, a crash leaves unused structure pages (VACUUM).
    set_rebuild_pending(index, true);
    let mut meta = write_structure(index, new_params, mean.finish(), &vrefs, false);
    meta.rebuild_pending = 1;
    // The switch: one WAL record.
    write_meta_page(
        index,
        &mut Locked::read(index, page::META_BLOCK, Lock::Exclusive),
        &meta,
    );
    // The old structure's pages become empty vector pages, free for inserts. (Not zeroed: a WAL-logged
    // page gets an LSN, and a page with an LSN but no header fails PostgreSQL's page check when read.)
    for blk in old_blocks {
        reclaim_page(index, blk);
    }
    set_rebuild_pending(index, false);
    // SAFETY: make the recorded free space visible to searches from the FSM's root.
    unsafe { pg_sys::IndexFreeSpaceMapVacuum(index) };
}
