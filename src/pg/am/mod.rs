//! The `lsh` index access method: random-hyperplane LSH with query-directed multi-probe, sign-sketch
//! ranking and exact reranking, stored in PostgreSQL pages and WAL-logged through GenericXLog.
//! One file per callback: build, insert, scan, vacuum, cost, options; page layout in `page`, buffer
//! guards in `buffer`, WAL in `xlog`.
//! The hashing itself is the pure `imgsim_algo::lsh` module.

pub mod buffer;
pub mod build;
pub mod check;
pub mod cost;
#[cfg(any(test, feature = "pg_test"))]
mod format_test;
pub mod grow;
#[cfg(any(test, feature = "pg_test"))]
mod grow_test;
pub mod info;
pub mod insert;
pub mod options;
pub mod page;
pub mod scan;
#[cfg(any(test, feature = "pg_test"))]
mod scan_test;
pub mod shape;
pub mod vacuum;
pub mod xlog;

use crate::v1;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// Largest dimension count an lsh index accepts: one vector item must fit on an 8 kB page.
pub const MAX_INDEX_DIMS: usize = 2000;

v1!(
    pg_finfo_lsh_handler,
    pg_finfo_lsh_metric_l2,
    pg_finfo_lsh_metric_cosine,
    pg_finfo_lsh_metric_ip
);

/// `lsh_handler(internal) -> index_am_handler`
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn lsh_handler(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let mut am =
        unsafe { PgBox::<pg_sys::IndexAmRoutine>::alloc_node(pg_sys::NodeTag::T_IndexAmRoutine) };
    am.amstrategies = 1;
    am.amsupport = 1;
    am.amoptsprocnum = 0;
    am.amcanorder = false;
    am.amcanorderbyop = true;
    am.amcanbackward = false;
    am.amcanunique = false;
    am.amcanmulticol = false;
    am.amoptionalkey = true;
    am.amsearcharray = false;
    am.amsearchnulls = false;
    am.amstorage = false;
    am.amclusterable = false;
    am.ampredlocks = false;
    am.amcanparallel = false;
    am.amcaninclude = false;
    am.amusemaintenanceworkmem = false;
    am.amparallelvacuumoptions = pg_sys::VACUUM_OPTION_PARALLEL_BULKDEL as u8;
    am.amkeytype = pg_sys::InvalidOid;
    am.ambuild = Some(build::ambuild);
    am.ambuildempty = Some(build::ambuildempty);
    am.aminsert = Some(crate::pg::compat::aminsert);
    am.ambulkdelete = Some(vacuum::ambulkdelete);
    am.amvacuumcleanup = Some(vacuum::amvacuumcleanup);
    am.amcostestimate = Some(cost::amcostestimate);
    am.amoptions = Some(options::amoptions);
    am.ambuildphasename = Some(build::ambuildphasename);
    am.amvalidate = Some(amvalidate);
    am.ambeginscan = Some(scan::ambeginscan);
    am.amrescan = Some(scan::amrescan);
    am.amgettuple = Some(scan::amgettuple);
    am.amendscan = Some(scan::amendscan);
    am.into_pg().into()
}

#[pg_guard]
unsafe extern "C-unwind" fn amvalidate(_opclassoid: pg_sys::Oid) -> bool {
    true
}

/// Support function 1 of each operator class reports the metric: `lsh_metric_l2(embedding) -> int4`.
macro_rules! metric_fn {
    ($name:ident, $metric:expr) => {
        #[pg_guard]
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name(_fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
            pg_sys::Datum::from($metric.to_u8() as i32)
        }
    };
}
metric_fn!(lsh_metric_l2, imgsim_algo::lsh::Metric::L2);
metric_fn!(lsh_metric_cosine, imgsim_algo::lsh::Metric::Cosine);
metric_fn!(lsh_metric_ip, imgsim_algo::lsh::Metric::InnerProduct);

/// The metric of an index, from its operator class's support function 1.
pub fn index_metric(index: pg_sys::Relation) -> imgsim_algo::lsh::Metric {
    let dummy = crate::pg::types::embedding::new_datum(&[0.0]);
    // SAFETY: the index has one key column whose opclass defines support function 1 (sql/lsh.sql);
    // calling it with any embedding returns the metric code.
    let code = unsafe {
        let finfo = pg_sys::index_getprocinfo(index, 1, 1);
        let d = pg_sys::FunctionCall1Coll(finfo, pg_sys::InvalidOid, dummy);
        d.value() as i32
    };
    imgsim_algo::lsh::Metric::from_u8(code as u8).unwrap_or(imgsim_algo::lsh::Metric::L2)
}
