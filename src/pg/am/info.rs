//! `lsh_index_info(regclass)`: the layout an lsh index runs with — what CREATE INDEX chose, or what the
//! index grew into since (grow.rs) — so a user can see it, with the same privilege rule as
//! `lsh_index_check` (SELECT on the table).

use super::check::open_checked;
use super::grow::SharedStructure;
use super::shape;
use imgsim_algo::lsh::Metric;
use pgrx::pg_sys;
use pgrx::prelude::*;

#[pg_extern(volatile, parallel_safe, name = "lsh_index_info_oid")]
#[allow(clippy::type_complexity)]
fn lsh_index_info(
    index: pg_sys::Oid,
) -> TableIterator<
    'static,
    (
        name!(dims, i32),
        name!(metric, String),
        name!(bits, i32),
        name!(tables, i32),
        name!(sketch_bits, i32),
        name!(superbuckets, i32),
        name!(layout_rows, i64),
        name!(blocks, i64),
    ),
> {
    let (rel, heap) = open_checked(index);
    let row = {
        let _shared = SharedStructure::lock(rel);
        let blocks = i64::from(shape::nblocks(rel));
        shape::load(rel).map(|s| {
            let p = s.params();
            (
                p.dims as i32,
                match p.metric {
                    Metric::L2 => "l2",
                    Metric::Cosine => "cosine",
                    Metric::InnerProduct => "ip",
                }
                .to_string(),
                p.bits as i32,
                p.tables as i32,
                p.sketch_bits as i32,
                1i32 << s.meta.dir_bits,
                s.meta.built_rows as i64,
                blocks,
            )
        })
    };
    // SAFETY: closing what open_checked opened.
    unsafe {
        pg_sys::table_close(heap, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::index_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
    }
    TableIterator::new(row)
}
