//! Run-time settings (GUCs).

use imgsim_algo::lsh::ScanMode;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting, PostgresGucEnum};

/// Values of `lsh.scan_mode`.
#[derive(PostgresGucEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum ScanModeSetting {
    #[name = c"auto"]
    Auto,
    #[name = c"buckets"]
    Buckets,
    #[name = c"sketches"]
    Sketches,
}

/// `lsh.scan_mode`: how an index scan finds candidates; `auto` picks by index size.
pub static LSH_SCAN_MODE: GucSetting<ScanModeSetting> =
    GucSetting::<ScanModeSetting>::new(ScanModeSetting::Auto);

/// `lsh.probes`: buckets visited per hash table before candidates are ranked (first batch); 0 = automatic.
pub static LSH_PROBES: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `lsh.max_candidates`: stop probing once this many distinct rows were collected; 0 = automatic.
pub static LSH_MAX_CANDIDATES: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `lsh.rerank`: candidates (best by sketch distance) whose exact distance is computed per batch;
/// 0 = automatic.
pub static LSH_RERANK: GucSetting<i32> = GucSetting::<i32>::new(0);
/// `lsh.scan_fraction`: share of the rows a sketch scan of an index with learned planes reads before
/// its first rerank, nearest superbuckets first; 0 = automatic.
pub static LSH_SCAN_FRACTION: GucSetting<f64> = GucSetting::<f64>::new(0.0);

/// The effective scan settings for an index with `bits` bits per table over about `rows` rows: the GUCs,
/// or where they are 0 (`auto`) the automatic values of `imgsim_algo::lsh::auto` (shared with the
/// in-memory index): a sketch scan up to 32 MB of sketches (a million rows of 256 bits), else buckets;
/// probes 2^(bits-7) per table (at
/// least 16), candidates max(8000, rows/25); rerank 500 for a sketch scan, max(500, rows/1000) for
/// buckets.
pub struct ScanSettings {
    pub mode: ScanMode,
    pub probes_per_table: usize,
    pub max_candidates: usize,
    pub rerank: usize,
    /// Rows of the index (estimate).
    pub rows: f64,
    /// Share of the rows a sketch scan reads first (indexes with learned planes only).
    pub scan_fraction: f64,
}

pub fn scan_settings(
    bits: u32,
    tables: u32,
    sketch_bits: u32,
    rows: f64,
    learned: bool,
) -> ScanSettings {
    use imgsim_algo::lsh::auto;
    let pick = |guc: i32, auto: usize| if guc > 0 { guc as usize } else { auto.max(1) };
    let mode = match LSH_SCAN_MODE.get() {
        ScanModeSetting::Auto => auto::mode(rows, tables, sketch_bits),
        ScanModeSetting::Buckets => ScanMode::Buckets,
        ScanModeSetting::Sketches => ScanMode::Sketches,
    };
    ScanSettings {
        mode,
        probes_per_table: pick(LSH_PROBES.get(), auto::probes_per_table(bits)),
        max_candidates: pick(LSH_MAX_CANDIDATES.get(), auto::max_candidates(rows)),
        rerank: pick(LSH_RERANK.get(), auto::rerank(rows, mode)),
        rows,
        scan_fraction: match LSH_SCAN_FRACTION.get() {
            f if f > 0.0 => f,
            _ => auto::scan_fraction(learned),
        },
    }
}

pub fn init() {
    GucRegistry::define_enum_guc(
        c"lsh.scan_mode",
        c"How an lsh index scan finds candidates: auto, buckets or sketches.",
        c"sketches ranks every row by its sketch (one pass over one table's entries); buckets probes the hash tables (lsh.probes, lsh.max_candidates); auto uses sketches up to 32 MB of sketches (a million rows of 256 bits, half as many of 512) or for a one-table index.",
        &LSH_SCAN_MODE,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"lsh.probes",
        c"Buckets visited per hash table by an lsh index scan (0 = automatic).",
        c"More probes find more true neighbours (higher recall) at the cost of speed.",
        &LSH_PROBES,
        0,
        1 << 20,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"lsh.max_candidates",
        c"Stop probing buckets once this many distinct rows were collected (0 = automatic).",
        c"Bounds the work of one lsh index scan batch.",
        &LSH_MAX_CANDIDATES,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"lsh.rerank",
        c"Candidates whose exact distance is computed per batch, best by sketch distance (0 = automatic).",
        c"Should be at least the LIMIT of typical queries; larger is more accurate and slower.",
        &LSH_RERANK,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"lsh.scan_fraction",
        c"Share of the rows a sketch scan reads before its first rerank, nearest parts of the index first (0 = automatic).",
        c"Only for one-table cosine or l2 lsh indexes with learned planes (built or rebuilt with at least 1000 rows); other sketch scans read every row. Larger is more accurate and slower; rows not read come in later batches. Automatic: 0.25.",
        &LSH_SCAN_FRACTION,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
    // SAFETY: called from _PG_init; reserves the "lsh." prefix so typos in lsh.* settings are reported.
    unsafe { crate::pg::compat::reserve_guc_prefix(c"lsh") };
}
