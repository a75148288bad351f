//! Run-time settings (GUCs).

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// `lsh.probes`: buckets visited per hash table before candidates are ranked (first batch).
pub static LSH_PROBES: GucSetting<i32> = GucSetting::<i32>::new(24);
/// `lsh.max_candidates`: stop probing once this many distinct rows were collected (first batch).
pub static LSH_MAX_CANDIDATES: GucSetting<i32> = GucSetting::<i32>::new(8000);
/// `lsh.rerank`: candidates (best by sketch distance) whose exact distance is computed per batch.
pub static LSH_RERANK: GucSetting<i32> = GucSetting::<i32>::new(500);

pub fn init() {
    GucRegistry::define_int_guc(
        c"lsh.probes",
        c"Buckets visited per hash table by an lsh index scan.",
        c"More probes find more true neighbours (higher recall) at the cost of speed.",
        &LSH_PROBES,
        1,
        1 << 20,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"lsh.max_candidates",
        c"Stop probing buckets once this many distinct rows were collected.",
        c"Bounds the work of one lsh index scan batch.",
        &LSH_MAX_CANDIDATES,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"lsh.rerank",
        c"Candidates whose exact distance is computed per batch (best by sketch distance).",
        c"Should be at least the LIMIT of typical queries; larger is more accurate and slower.",
        &LSH_RERANK,
        1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: called from _PG_init; reserves the "lsh." prefix so typos in lsh.* settings are reported.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"lsh".as_ptr()) };
}
