//! `amcostestimate`: the index is only useful for `ORDER BY emb <op> constant`; its work is a fixed number
//! of bucket pages (lsh.probes per table, or one table's chains for a sketch scan) plus the reranked
//! vector pages, all done before the first row (startup cost). Without an ORDER BY it is never chosen; on tiny tables a seq scan + sort wins by cost.

use super::{page, shape};
use crate::pg::gucs;
use imgsim_algo::lsh::ScanMode;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// `amcostestimate`
#[pg_guard]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C-unwind" fn amcostestimate(
    _root: *mut pg_sys::PlannerInfo,
    path: *mut pg_sys::IndexPath,
    _loop_count: f64,
    startup: *mut pg_sys::Cost,
    total: *mut pg_sys::Cost,
    selectivity: *mut pg_sys::Selectivity,
    correlation: *mut f64,
    pages: *mut f64,
) {
    // SAFETY: the planner passes valid pointers; `path->indexinfo` describes the index.
    unsafe {
        *correlation = 0.0;
        *selectivity = 1.0;
        if (*path).indexorderbys.is_null() || orders_by_null(path) {
            // Without an ORDER BY distance (ORDER BY emb <op> NULL is folded away, or compared with a
            // NULL constant) the index would return every row it has, unordered; a seq scan also returns
            // the rows whose embedding is NULL, which the index lacks. Costed so that even with
            // enable_seqscan = off the seq scan wins (the scan still works if a plan uses it).
            *startup = f64::INFINITY;
            *total = f64::INFINITY;
            *pages = 0.0;
            return;
        }
        let info = (*path).indexinfo;
        let index_pages = (*info).pages as f64;
        let tuples = (*info).tuples.max(1.0);
        let layout = stored_layout((*info).indexoid, tuples);
        let set = gucs::scan_settings(
            layout.bits,
            layout.tables as u32,
            layout.sketch_bits,
            tuples.max(layout.built_rows),
            layout.learned,
        );
        let probes = set.probes_per_table as f64 * layout.tables;
        let rerank = set.rerank as f64;
        let candidates = (set.max_candidates as f64).min(tuples);
        // A probe reads the whole chain of its superbucket (once per scan; later probes of the same
        // superbucket hit the scan's cache). Chains were written contiguously: sequential pages. Reranked
        // rows each visit a vector page: random reads, most of them cached after the first queries.
        let chain_pages = (tuples / layout.superbuckets * layout.entry_bytes
            / page::raw_capacity() as f64)
            .max(1.0);
        let (bucket_pages, candidates) = match set.mode {
            // The chains of one table, every row's sketch scored (with learned planes, the share
            // lsh.scan_fraction of them).
            ScanMode::Sketches => {
                let share = if layout.learned {
                    set.scan_fraction.clamp(0.0, 1.0)
                } else {
                    1.0
                };
                (
                    (layout.superbuckets * chain_pages * share)
                        .max(1.0)
                        .min(index_pages.max(1.0)),
                    tuples * share,
                )
            }
            ScanMode::Buckets => {
                let chains_read = probes.min(layout.tables * layout.superbuckets);
                (
                    (chains_read * chain_pages).min(index_pages.max(1.0)),
                    candidates,
                )
            }
        };
        let vector_pages = rerank.min(tuples) * layout.pages_per_vector;
        let pages_read = bucket_pages + vector_pages;
        let work = bucket_pages * pg_sys::seq_page_cost
            + vector_pages * pg_sys::random_page_cost * 0.1
            + candidates * pg_sys::cpu_operator_cost
            + rerank.min(tuples) * pg_sys::cpu_operator_cost * 10.0;
        *startup = work;
        *total = work + tuples * pg_sys::cpu_index_tuple_cost;
        *pages = pages_read;
    }
}

/// What the cost of a scan depends on, from the index's meta page (its stored parameters and
/// directory), or from the defaults when the index is not set up yet (built empty).
struct Layout {
    bits: u32,
    tables: f64,
    sketch_bits: u32,
    /// Superbuckets (chains) per table.
    superbuckets: f64,
    /// Bytes of one bucket entry on a page (item, line pointer).
    entry_bytes: f64,
    /// Vector pages one reranked row reads: 1, plus the share of rows split over two pages.
    pages_per_vector: f64,
    built_rows: f64,
    /// Whether table 0 has learned planes (a sketch scan reads a share of the rows).
    learned: bool,
}

fn stored_layout(indexoid: pg_sys::Oid, tuples: f64) -> Layout {
    // SAFETY: the planner holds a lock on every index of the relation it plans for; NoLock opens it.
    let index = unsafe { pg_sys::index_open(indexoid, pg_sys::NoLock as pg_sys::LOCKMODE) };
    let layout = match shape::load_if_current(index) {
        Some(shape) => {
            let p = shape.params();
            Layout {
                bits: p.bits,
                tables: p.tables as f64,
                sketch_bits: p.sketch_bits,
                superbuckets: (1u64 << shape.meta.dir_bits) as f64,
                entry_bytes: (page::maxalign(page::BUCKET_HEADER + p.sketch_words() * 8)
                    + size_of::<pg_sys::ItemIdData>()) as f64,
                pages_per_vector: pages_per_vector(p.dims as usize, shape.meta.version),
                built_rows: shape.meta.built_rows as f64,
                learned: shape.model.learned().is_some(),
            }
        }
        None => Layout {
            bits: imgsim_algo::lsh::LshParams::suggested_bits(tuples as u64),
            tables: match crate::pg::am::options::of_oid(indexoid) {
                0 => imgsim_algo::lsh::LshParams::suggested_tables(
                    tuples as u64,
                    imgsim_algo::lsh::LshParams::DEFAULT_SKETCH_BITS,
                ),
                t => t as u32,
            } as f64,
            sketch_bits: imgsim_algo::lsh::LshParams::DEFAULT_SKETCH_BITS,
            superbuckets: 1.0,
            entry_bytes: 48.0,
            pages_per_vector: 1.0,
            built_rows: 0.0,
            learned: false,
        },
    };
    // SAFETY: opened above.
    unsafe { pg_sys::index_close(index, pg_sys::NoLock as pg_sys::LOCKMODE) };
    layout
}

/// Vector pages read per reranked row of `dims` values in an index of on-disk format `version`: items of
/// at least `page::SPLIT_MIN_ITEM` bytes (format 2) are split over two pages where the room left on a
/// page is short, about as often as an item is long relative to a page (measured at 1280 dims: 55 % of
/// the rows split, 1.54 pages per reranked row; this gives 1.63).
fn pages_per_vector(dims: usize, version: u32) -> f64 {
    let item = page::VECTOR_HEADER + 4 * dims;
    if version < 2 || item < page::SPLIT_MIN_ITEM {
        return 1.0;
    }
    1.0 + (item as f64 / page::raw_capacity() as f64).min(1.0)
}

/// Whether the path orders by a NULL constant.
///
/// # Safety
/// `path` is a valid index path with a non-null `indexorderbys` list.
unsafe fn orders_by_null(path: *mut pg_sys::IndexPath) -> bool {
    // SAFETY: guaranteed by the caller; a List's `elements` holds `length` cells of node pointers.
    unsafe {
        let list = (*path).indexorderbys;
        (0..(*list).length as usize).any(|i| {
            let node = (*(*list).elements.add(i)).ptr_value as *mut pg_sys::Node;
            (*node).type_ == pg_sys::NodeTag::T_Const && (*(node as *mut pg_sys::Const)).constisnull
        })
    }
}
