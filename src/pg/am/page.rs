//! On-disk layout of an `lsh` index. Every page is a standard PostgreSQL page (so checksums, generic WAL
//! and pageinspect work) with an 8-byte special area naming its kind and the next page of its chain.
//!
//! - block 0, META: magic, format version, the LSH parameters (random planes are regenerated from them;
//!   learned ones are stored after the mean), where
//!   the mean vector and the bucket directory live, and a build id.
//! - MEAN pages (consecutive): the mean vector computed at build, raw f32s after the page header: `dims`
//!   values, or `dims + 1` for a norm-augmented inner-product index (`LshParams::hash_dims`); from
//!   format version 3 followed by the learned planes of a one-table index (`Meta::learned_planes`
//!   planes of `hash_dims` values, then one split point per plane).
//! - DIRECTORY pages (consecutive): for each table and each "superbucket" (the top `dir_bits` bits of
//!   the bucket code) the head block of that superbucket's chain of BUCKET pages. Written at build (or on
//!   the first insert into an index built empty), read-only afterwards.
//! - BUCKET pages: items `[code u32][vector block u32][vector offset u16][pad u16][sketch u64 × W]`, one
//!   per (row, table); chained through the special area's `next`.
//! - VECTOR pages: items `[heap block u32][heap offset u16][flags u16][f32 × dims]`, one per indexed row.
//!   From format version 2 a vector that does not fit the room left on a page is stored in two items
//!   (so that 512- or 1280-d vectors fill pages instead of leaving a quarter or more of each empty): a
//!   head `[heap block][heap offset][flags: SPLIT][tail block u32][tail offset u16][pad u16][f32 × k]`
//!   whose address is the row's (bucket entries point at it), and a tail `[heap block][heap offset]
//!   [flags: TAIL][f32 × dims - k]` on a later block (a higher block number: readers lock the head's page,
//!   then the tail's, always in ascending block order, as every writer does). Head and tail are written,
//!   and freed, together in one WAL record.

use crate::pg::fmgr::{error, raise};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::marker::PhantomData;

pub const MAGIC: u32 = 0x4C53_4831; // "LSH1"
/// On-disk format version, written at build and checked by every reader of the meta page (scan, insert,
/// VACUUM, `lsh_index_check`). Bump it whenever a change makes existing indexes unreadable or wrongly read
/// (page or item layout, meta fields, hashing: plane generation, centring, code or sketch bits); an index
/// with another version is refused with SQLSTATE 55000 and the hint `REINDEX INDEX <name>` (README,
/// "On-disk format"). Changes that old indexes still read correctly keep the version.
///
/// Version 2 added split vectors (two items per vector, see the module doc). Version 1 indexes hold none
/// and are read as they are; inserts into them keep storing whole items, so that a version-1 index stays
/// readable by the pg_imgsim that built it, and any rewrite of the meta page (a layout rebuild, REINDEX)
/// makes it version 2.
///
/// Version 3 added learned planes (a one-table index's table-0 planes fitted to the data, stored after
/// the mean, `Meta::learned_planes`): a version-2 reader would hash such an index's codes with random
/// planes. Version 1 and 2 indexes have none and are read as they are (random planes); a layout
/// rebuild or REINDEX writes version 3 when it fits learned planes, else version 2
/// ([`version_for`]).
pub const VERSION: u32 = 3;
/// The version written for an index without learned planes: 2, whose readers read it exactly as
/// this pg_imgsim does, so that a downgrade keeps such indexes usable.
pub const VERSION_WITHOUT_LEARNED: u32 = 2;

/// The version to write for an index with (`learned`) or without learned planes.
pub fn version_for(learned: bool) -> u32 {
    if learned {
        VERSION
    } else {
        VERSION_WITHOUT_LEARNED
    }
}
/// The oldest format version this pg_imgsim reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// Whether indexes of format `version` are read by this pg_imgsim.
pub fn readable_version(version: u32) -> bool {
    (OLDEST_READABLE_VERSION..=VERSION).contains(&version)
}
pub const META_BLOCK: pg_sys::BlockNumber = 0;
pub const INVALID_BLOCK: pg_sys::BlockNumber = pg_sys::InvalidBlockNumber;

pub const KIND_META: u16 = 1;
pub const KIND_MEAN: u16 = 2;
pub const KIND_DIRECTORY: u16 = 3;
pub const KIND_BUCKET: u16 = 4;
pub const KIND_VECTOR: u16 = 5;

/// Flag bit of a vector item: the heap row is dead (set by VACUUM before its bucket entries go).
pub const VECTOR_DELETED: u16 = 1;
/// Flag bit of a vector item holding the first values of a vector, followed by its tail's address.
pub const VECTOR_SPLIT: u16 = 2;
/// Flag bit of a vector item holding the last values of a split vector (never addressed by buckets).
pub const VECTOR_TAIL: u16 = 4;

/// Special area of every page.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Opaque {
    pub next: pg_sys::BlockNumber,
    pub kind: u16,
    pub page_id: u16,
}

/// Distinguishes our pages from other AMs' in tools (like pgvector's page ids).
pub const PAGE_ID: u16 = 0xFF8A;

/// Contents of the meta page.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Meta {
    pub magic: u32,
    pub version: u32,
    /// `LshParams::to_bytes()`; all zero while `dims == 0` (built empty with unknown dimensions).
    pub params: [u8; 32],
    pub dims: u32,
    pub dir_bits: u32,
    pub mean_start: pg_sys::BlockNumber,
    pub mean_pages: u32,
    pub dir_start: pg_sys::BlockNumber,
    pub dir_pages: u32,
    /// Rows seen by the build (for the planner and for `lsh_index_check`'s report).
    pub built_rows: u64,
    /// Changes whenever the hash model changes (build, first insert); keys the backend's model cache.
    pub build_id: u64,
    /// Index size in blocks when this layout was chosen (grow.rs rebuilds the bucket structure once the
    /// index has doubled). Appended in 0.2.0: older meta pages read 0 here.
    pub built_blocks: u32,
    /// Nonzero from the start of a layout rebuild (grow.rs) until the old structure's pages were all
    /// reclaimed: a crash in between leaves unused structure pages, which VACUUM then looks for.
    /// Occupies what was the struct's tail padding (older meta pages may read anything here, which
    /// costs one needless search at the next VACUUM).
    pub rebuild_pending: u32,
    /// Learned table-0 planes stored after the mean in the MEAN run (format version 3,
    /// `imgsim_algo::partition`): `learned_planes × (hash_dims + 1)` floats, the planes then their
    /// split points. 0: random planes only. Older meta pages read 0 here (beyond their contents).
    pub learned_planes: u32,
    /// Zero; keeps the struct free of padding.
    pub reserved: u32,
}

// Meta is copied to and from pages as bytes: it must have no padding.
const _: () = assert!(size_of::<Meta>() == 96);

/// Bytes usable for raw arrays (mean, directory) on one page.
pub const fn raw_capacity() -> usize {
    pg_sys::BLCKSZ as usize - size_of::<pg_sys::PageHeaderData>() - size_of::<Opaque>()
}
/// 4-byte values (mean f32s, directory block numbers) per raw page; writer and reader both use it.
pub const WORDS_PER_PAGE: usize = raw_capacity() / 4;

/// A page that may be read for lifetime `'a`: a pinned and locked buffer ([`super::buffer::Locked`]),
/// a registered GenericXLog image, or a backend-local image. Every read checks what it reads against the
/// page's own header, so a damaged page gives an ERROR (or a missing item), never a read outside it.
#[derive(Clone, Copy)]
pub struct PageRef<'a> {
    ptr: pg_sys::Page,
    _page: PhantomData<&'a [u8]>,
}

/// A page image that may be written for lifetime `'a`: only [`super::xlog::PageWrite::page`] (a buffer
/// registered for WAL) and backend-local images hand these out, so no shared buffer is changed outside WAL.
pub struct PageMut<'a> {
    ptr: pg_sys::Page,
    _page: PhantomData<&'a mut [u8]>,
}

impl<'a> PageRef<'a> {
    /// # Safety
    /// `ptr` must point to a BLCKSZ page, MAXALIGNed, that nobody else writes while `'a` lasts (a share or
    /// exclusive buffer lock, or memory owned by the caller), whose header PostgreSQL verified when it was
    /// read (pd_lower ≤ pd_upper ≤ pd_special ≤ BLCKSZ) or that this module initialised.
    pub unsafe fn new(ptr: pg_sys::Page) -> PageRef<'a> {
        PageRef {
            ptr,
            _page: PhantomData,
        }
    }

    fn header(self) -> &'a pg_sys::PageHeaderData {
        // SAFETY: `ptr` is a valid page for 'a (constructor's contract).
        unsafe { &*(self.ptr as *const pg_sys::PageHeaderData) }
    }

    /// An all-zero page (a crash between extending the file and writing it).
    pub fn is_new(self) -> bool {
        self.header().pd_upper == 0
    }

    /// The special area, or None when the page has no special area of our size.
    fn opaque(self) -> Option<Opaque> {
        let special = self.header().pd_special as usize;
        if self.is_new() || special + size_of::<Opaque>() != pg_sys::BLCKSZ as usize {
            return None;
        }
        // SAFETY: the special area lies inside the page (checked above) and holds an `Opaque`.
        Some(unsafe {
            std::ptr::read_unaligned((self.ptr as *const u8).add(special) as *const Opaque)
        })
    }

    /// Kind of the page (0 for an all-zero page), raising ERROR (index corrupted) if it is not one of ours.
    pub fn kind(self) -> u16 {
        if self.is_new() {
            return 0;
        }
        match self.opaque() {
            Some(o) if o.page_id == PAGE_ID => o.kind,
            _ => error(
                PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
                "lsh index page has an unexpected special area",
            ),
        }
    }

    /// The next page of this page's chain (INVALID_BLOCK at the end, or for a page that is not ours).
    pub fn next(self) -> pg_sys::BlockNumber {
        self.opaque().map_or(INVALID_BLOCK, |o| o.next)
    }

    /// The contents area after the header, up to the special area.
    fn contents(self) -> &'a [u8] {
        let start = maxalign(size_of::<pg_sys::PageHeaderData>());
        let end = (self.header().pd_special as usize).clamp(start, pg_sys::BLCKSZ as usize);
        // SAFETY: start..end lies inside the page.
        unsafe { std::slice::from_raw_parts((self.ptr as *const u8).add(start), end - start) }
    }

    /// The meta page contents as stored, without checks (None if the page is too small to hold them).
    fn meta_as_stored(self) -> Option<Meta> {
        let c = self.contents();
        // SAFETY: `c` holds at least size_of::<Meta>() bytes (checked); Meta is plain old data.
        (c.len() >= size_of::<Meta>())
            .then(|| unsafe { std::ptr::read_unaligned(c.as_ptr() as *const Meta) })
    }

    /// The meta page contents when they are of an on-disk format version this pg_imgsim reads, else None
    /// (no ERROR: the planner asks, and only the scan itself should refuse an index to be rebuilt).
    pub fn meta_if_current(self) -> Option<Meta> {
        self.meta_as_stored()
            .filter(|m| m.magic == MAGIC && readable_version(m.version))
    }

    /// Reads the meta page contents, checking magic and version. `index` names the index in errors.
    pub fn read_meta(self, index: pg_sys::Relation) -> Meta {
        let Some(meta) = self.meta_as_stored() else {
            error(
                PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
                "lsh index meta page is too small",
            );
        };
        if meta.magic != MAGIC {
            error(
                PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
                "lsh index meta page has a bad magic number",
            );
        }
        if !readable_version(meta.version) {
            version_mismatch(index, meta.version);
        }
        meta
    }

    /// The raw contents of a mean or directory page (`raw_capacity()` bytes on a page of ours).
    pub fn raw(self) -> &'a [u8] {
        let c = self.contents();
        &c[..c.len().min(raw_capacity())]
    }

    /// The whole page image (`BLCKSZ` bytes): every slice [`Self::item`] returns lies inside it.
    pub fn bytes(self) -> &'a [u8] {
        // SAFETY: a PageRef points at a whole page of BLCKSZ bytes for 'a.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, pg_sys::BLCKSZ as usize) }
    }

    /// Asks the CPU to load the page's item area (pd_upper up to the special area) into its caches,
    /// one request per 64-byte line, so that a reader walking every item waits for memory once per
    /// page rather than once per few items (a sketch scan reads ~1,000 pages per query, each in a
    /// different buffer, where the hardware prefetcher starts cold). A hint: no effect on results.
    pub fn prefetch_items(self) {
        #[cfg(target_arch = "x86_64")]
        {
            let end = (self.header().pd_special as usize).min(pg_sys::BLCKSZ as usize);
            let start = (self.header().pd_upper as usize).min(end) & !63;
            for line in (start..end).step_by(64) {
                // SAFETY: `line` < BLCKSZ lies inside the page; a prefetch reads nothing and cannot
                // fault.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                        (self.ptr as *const i8).add(line),
                    )
                };
            }
        }
    }

    /// Number of line pointers on the page.
    pub fn max_offset(self) -> pg_sys::OffsetNumber {
        let h = self.header();
        let lower = h.pd_lower as usize;
        let first = size_of::<pg_sys::PageHeaderData>();
        (lower.saturating_sub(first) / size_of::<pg_sys::ItemIdData>()) as pg_sys::OffsetNumber
    }

    /// Item bytes at `off`, or None for an offset past the end, an unused/dead line pointer, or one that
    /// points outside the page.
    pub fn item(self, off: pg_sys::OffsetNumber) -> Option<&'a [u8]> {
        if off == 0 || off > self.max_offset() {
            return None;
        }
        // SAFETY: line pointer `off` lies before pd_lower, inside the page.
        let id = unsafe {
            *((self.ptr as *const u8)
                .add(size_of::<pg_sys::PageHeaderData>())
                .cast::<pg_sys::ItemIdData>()
                .add(off as usize - 1))
        };
        let (start, len) = (id.lp_off() as usize, id.lp_len() as usize);
        if id.lp_flags() != pg_sys::LP_NORMAL || start + len > pg_sys::BLCKSZ as usize {
            return None;
        }
        // SAFETY: start..start + len lies inside the page (checked above).
        Some(unsafe { std::slice::from_raw_parts((self.ptr as *const u8).add(start), len) })
    }

    /// Free space for a new item (line pointer included), as PageGetFreeSpace.
    pub fn free_space(self) -> usize {
        let h = self.header();
        (h.pd_upper as usize)
            .saturating_sub(h.pd_lower as usize)
            .saturating_sub(size_of::<pg_sys::ItemIdData>())
    }

    /// Whether an item of `len` bytes fits on the page: it is stored MAXALIGNed, and may need a new line
    /// pointer (free_space already keeps room for one).
    pub fn fits(self, len: usize) -> bool {
        self.free_space() >= maxalign(len)
    }

    fn as_ptr(self) -> *const u8 {
        self.ptr as *const u8
    }
}

impl<'a> PageMut<'a> {
    /// # Safety
    /// `ptr` must point to a BLCKSZ page, MAXALIGNed, that only the returned value reads or writes while
    /// `'a` lasts, and whose changes reach disk through WAL: a GenericXLog image or backend-local memory.
    pub unsafe fn new(ptr: pg_sys::Page) -> PageMut<'a> {
        PageMut {
            ptr,
            _page: PhantomData,
        }
    }

    /// Read access to the same page.
    pub fn as_ref(&self) -> PageRef<'_> {
        // SAFETY: the page is valid and only read through the shared borrow while it lasts.
        unsafe { PageRef::new(self.ptr) }
    }

    /// Initialises the page as an empty page of `kind`.
    pub fn init(&mut self, kind: u16) {
        // SAFETY: the page is a writable BLCKSZ image (constructor's contract).
        unsafe { pg_sys::PageInit(self.ptr, pg_sys::BLCKSZ as usize, size_of::<Opaque>()) };
        self.set_opaque(Opaque {
            next: INVALID_BLOCK,
            kind,
            page_id: PAGE_ID,
        });
    }

    fn set_opaque(&mut self, o: Opaque) {
        let special = self.as_ref().header().pd_special as usize;
        assert!(special + size_of::<Opaque>() == pg_sys::BLCKSZ as usize);
        // SAFETY: the special area lies inside the writable page (checked above).
        unsafe { std::ptr::write_unaligned((self.ptr as *mut u8).add(special) as *mut Opaque, o) };
    }

    /// Links the page to the next page of its chain.
    pub fn set_next(&mut self, next: pg_sys::BlockNumber) {
        let mut o = self.as_ref().opaque().expect("an initialised lsh page");
        o.next = next;
        self.set_opaque(o);
    }

    /// Writes `bytes` into the contents area of a page initialised by [`PageMut::init`] and sets pd_lower
    /// past them (meta, mean and directory pages).
    pub fn write_contents(&mut self, bytes: &[u8]) {
        let start = maxalign(size_of::<pg_sys::PageHeaderData>());
        assert!(bytes.len() <= raw_capacity());
        // SAFETY: start + len ≤ BLCKSZ - special size: inside the writable page.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                (self.ptr as *mut u8).add(start),
                bytes.len(),
            );
            (*(self.ptr as *mut pg_sys::PageHeaderData)).pd_lower = (start + bytes.len()) as u16;
        }
    }

    /// Writes `meta` into a page initialised as META.
    pub fn write_meta(&mut self, meta: &Meta) {
        // SAFETY: Meta is plain old data (repr(C), no padding-sensitive reads); viewed as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(meta as *const Meta as *const u8, size_of::<Meta>())
        };
        self.write_contents(bytes);
    }

    /// Replaces the whole page with `image`.
    pub fn copy_from(&mut self, image: PageRef<'_>) {
        // SAFETY: both are BLCKSZ pages; a writable image is never the source (distinct borrows).
        unsafe {
            std::ptr::copy_nonoverlapping(
                image.as_ptr(),
                self.ptr as *mut u8,
                pg_sys::BLCKSZ as usize,
            )
        };
    }

    /// Mutable item bytes at `off` (for in-place flag updates).
    pub fn item_mut(&mut self, off: pg_sys::OffsetNumber) -> Option<&mut [u8]> {
        let (start, len) = {
            let r = self.as_ref();
            let b = r.item(off)?;
            (b.as_ptr() as usize - self.ptr as usize, b.len())
        };
        // SAFETY: the item lies inside the writable page (checked by `item`).
        Some(unsafe { std::slice::from_raw_parts_mut((self.ptr as *mut u8).add(start), len) })
    }

    /// Adds an item; returns its offset or None if it does not fit. A line pointer freed by VACUUM is
    /// reused when the page has one (PageAddItemExtended looks for it when the page says it has free ones).
    pub fn add_item(&mut self, bytes: &[u8]) -> Option<pg_sys::OffsetNumber> {
        if !self.as_ref().fits(bytes.len()) {
            return None;
        }
        // SAFETY: a writable, initialised page; PageAddItemExtended copies `bytes` and checks space itself.
        let off = unsafe {
            pg_sys::PageAddItemExtended(
                self.ptr,
                bytes.as_ptr() as pg_sys::Item,
                bytes.len(),
                pg_sys::InvalidOffsetNumber,
                0,
            )
        };
        (off != pg_sys::InvalidOffsetNumber).then_some(off)
    }

    /// Removes the items at `offs` and compacts the page (bucket pages: nothing refers to their
    /// offsets). Offsets that hold no item are skipped.
    pub fn delete_items(&mut self, offs: &[pg_sys::OffsetNumber]) {
        let mut sorted = self.normal_items(offs);
        if !sorted.is_empty() {
            // SAFETY: a writable page; the offsets are sorted, distinct and hold normal items.
            unsafe {
                pg_sys::PageIndexMultiDelete(self.ptr, sorted.as_mut_ptr(), sorted.len() as i32)
            };
        }
    }

    /// The offsets among `offs` that hold a normal item, sorted and distinct.
    fn normal_items(&self, offs: &[pg_sys::OffsetNumber]) -> Vec<pg_sys::OffsetNumber> {
        let r = self.as_ref();
        let mut sorted: Vec<_> = offs
            .iter()
            .copied()
            .filter(|&o| r.item(o).is_some())
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        sorted
    }

    /// Frees the items at `offs` without moving any other item (their addresses are referenced from bucket
    /// entries), and marks the page as having free line pointers so inserts reuse them. Offsets that hold
    /// no item are skipped.
    pub fn delete_items_in_place(&mut self, offs: &[pg_sys::OffsetNumber]) {
        let sorted = self.normal_items(offs);
        // Deleting from the highest offset down keeps the rest valid.
        for &off in sorted.iter().rev() {
            // SAFETY: a writable page; `off` holds a normal item (filtered above).
            unsafe { pg_sys::PageIndexTupleDeleteNoCompact(self.ptr, off) };
        }
        let r = self.as_ref();
        if (1..=r.max_offset()).any(|o| r.item(o).is_none()) {
            // SAFETY: the header of the writable page.
            unsafe {
                (*(self.ptr as *mut pg_sys::PageHeaderData)).pd_flags |=
                    pg_sys::PD_HAS_FREE_LINES as u16
            };
        }
    }
}

/// `MAXALIGN(len)`: the room an item of `len` bytes takes on a page.
pub const fn maxalign(len: usize) -> usize {
    let a = pg_sys::MAXIMUM_ALIGNOF as usize;
    (len + a - 1) & !(a - 1)
}

/// ERROR for an index written in another on-disk format version: it must be rebuilt.
pub fn version_mismatch(index: pg_sys::Relation, found: u32) -> ! {
    // SAFETY: `index` is an open relation; get_namespace_name and quote_qualified_identifier return
    // palloc'd NUL-terminated strings (or NULL for a namespace dropped meanwhile, not possible while the
    // index is open and locked).
    let (name, qualified) = unsafe {
        let rel = (*index).rd_rel;
        let name = pgrx::name_data_to_str(&(*rel).relname).to_string();
        let nsp = pg_sys::get_namespace_name((*rel).relnamespace);
        let relname = pg_sys::quote_identifier((*rel).relname.data.as_ptr());
        let qualified = if nsp.is_null() {
            std::ffi::CStr::from_ptr(relname)
                .to_string_lossy()
                .into_owned()
        } else {
            std::ffi::CStr::from_ptr(pg_sys::quote_qualified_identifier(
                nsp,
                (*rel).relname.data.as_ptr(),
            ))
            .to_string_lossy()
            .into_owned()
        };
        (name, qualified)
    };
    raise(
        PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        format!(
            "lsh index \"{name}\" has on-disk format version {found}, this pg_imgsim reads versions {OLDEST_READABLE_VERSION} to {VERSION}"
        ),
        Some("The index was built by another version of pg_imgsim.".into()),
        Some(format!("REINDEX INDEX {qualified}")),
    )
}

/// A vector item: heap TID, flags, values; for the head of a split vector also its tail's address.
pub struct VectorItem<'a> {
    pub heap_block: u32,
    pub heap_offset: u16,
    pub flags: u16,
    /// Where the rest of the values are (a head item), else None.
    pub tail: Option<VectorRef>,
    pub values: &'a [u8],
}

pub const VECTOR_HEADER: usize = 8;
/// Header of a split vector's head item: the common header and the tail's address.
pub const VECTOR_HEAD_HEADER: usize = 16;
/// Vectors are split only when their item is at least this large: smaller ones waste little of a page.
pub const SPLIT_MIN_ITEM: usize = 1024;
/// A head holds at least this many values, and at least an eighth of the vector (else the vector goes
/// whole on a new page): smaller heads would save little room for a second page read. Simulated vector
/// pages with this rule, against the raw vector bytes: 1.01–1.03× at 256, 512, 768, 1,024, 1,280 and
/// 1,536 dimensions, at most 1.13× (1,808) between 256 and 2,000 (1,999: none split, 1.03×); at 1,280
/// dimensions 55 % of the vectors are split (a reranked vector reads 1.54 pages on average, measured).
/// A quarter instead of an eighth would split 33 % there, at up to 1.25× (1,632 dimensions).
pub const SPLIT_MIN_HEAD_VALUES: usize = 32;

impl<'a> VectorItem<'a> {
    /// Parses an item of a vector page; None when it is too short for its header or flagged both head and
    /// tail (a damaged page).
    pub fn parse(b: &'a [u8]) -> Option<VectorItem<'a>> {
        if b.len() < VECTOR_HEADER {
            return None;
        }
        let flags = u16::from_le_bytes([b[6], b[7]]);
        if flags & (VECTOR_SPLIT | VECTOR_TAIL) == VECTOR_SPLIT | VECTOR_TAIL {
            return None; // both a head and a tail: damaged
        }
        let (tail, header) = if flags & VECTOR_SPLIT != 0 {
            if b.len() < VECTOR_HEAD_HEADER {
                return None;
            }
            let blk = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
            let off = u16::from_le_bytes([b[12], b[13]]);
            (Some(VectorRef::new(blk, off)), VECTOR_HEAD_HEADER)
        } else {
            (None, VECTOR_HEADER)
        };
        Some(VectorItem {
            heap_block: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            heap_offset: u16::from_le_bytes([b[4], b[5]]),
            flags,
            tail,
            values: &b[header..],
        })
    }

    fn encode_with(
        heap: pg_sys::ItemPointerData,
        flags: u16,
        tail: Option<VectorRef>,
        values: &[f32],
    ) -> Vec<u8> {
        let header = if tail.is_some() {
            VECTOR_HEAD_HEADER
        } else {
            VECTOR_HEADER
        };
        let mut b = Vec::with_capacity(header + values.len() * 4);
        let (blk, off) = tid_parts(&heap);
        b.extend_from_slice(&blk.to_le_bytes());
        b.extend_from_slice(&off.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        if let Some(t) = tail {
            b.extend_from_slice(&t.block().to_le_bytes());
            b.extend_from_slice(&t.offset().to_le_bytes());
            b.extend_from_slice(&0u16.to_le_bytes());
        }
        for v in values {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// A whole vector's item.
    pub fn encode(heap: pg_sys::ItemPointerData, values: &[f32]) -> Vec<u8> {
        Self::encode_with(heap, 0, None, values)
    }

    /// The head item of a vector split after `values`, its tail at `tail`.
    pub fn encode_head(heap: pg_sys::ItemPointerData, values: &[f32], tail: VectorRef) -> Vec<u8> {
        Self::encode_with(heap, VECTOR_SPLIT, Some(tail), values)
    }

    /// The tail item of a split vector: its last `values`.
    pub fn encode_tail(heap: pg_sys::ItemPointerData, values: &[f32]) -> Vec<u8> {
        Self::encode_with(heap, VECTOR_TAIL, None, values)
    }

    pub fn deleted(&self) -> bool {
        self.flags & VECTOR_DELETED != 0
    }

    pub fn is_tail(&self) -> bool {
        self.flags & VECTOR_TAIL != 0
    }

    pub fn heap_tid(&self) -> pg_sys::ItemPointerData {
        make_tid(self.heap_block, self.heap_offset)
    }

    /// Decodes the values into `out` (replacing its contents).
    pub fn values_into(&self, out: &mut Vec<f32>) {
        out.clear();
        self.append_values(out);
    }

    /// Appends the values to `out`.
    pub fn append_values(&self, out: &mut Vec<f32>) {
        out.extend(
            self.values
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
}

/// How many of a vector's `dims` values go into a head item on a page with `free` bytes of room (as
/// [`PageRef::free_space`], line pointer already counted), when the whole item does not fit there: None
/// when the vector should not be split (it fits whole, it is small, or the head would be tiny). The tail
/// always fits an empty page when the whole item does.
pub fn split_head_values(free: usize, dims: usize) -> Option<usize> {
    let whole = VECTOR_HEADER + dims * 4;
    if maxalign(whole) <= free || whole < SPLIT_MIN_ITEM || free < VECTOR_HEAD_HEADER {
        return None;
    }
    // An even count keeps the head a multiple of 8 bytes (MAXALIGN): it takes exactly `16 + 4k`.
    let k = ((free - VECTOR_HEAD_HEADER) / 8) * 2;
    (SPLIT_MIN_HEAD_VALUES.max(dims / 8)..dims)
        .contains(&k)
        .then_some(k)
}

/// Marks a vector item deleted in place.
pub fn set_vector_deleted(b: &mut [u8]) {
    let flags = u16::from_le_bytes([b[6], b[7]]) | VECTOR_DELETED;
    b[6..8].copy_from_slice(&flags.to_le_bytes());
}

/// A bucket entry: the row's bucket code in this table, where its vector lives, its sketch.
pub struct BucketEntry<'a> {
    pub code: u32,
    pub vector: VectorRef,
    pub sketch: &'a [u8],
}

pub const BUCKET_HEADER: usize = 12;

/// Address of a vector item inside the index, packed as `block << 16 | offset`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct VectorRef(pub u64);

impl VectorRef {
    pub fn new(block: u32, offset: u16) -> VectorRef {
        VectorRef(((block as u64) << 16) | offset as u64)
    }
    pub fn block(self) -> u32 {
        (self.0 >> 16) as u32
    }
    pub fn offset(self) -> u16 {
        (self.0 & 0xFFFF) as u16
    }
}

impl<'a> BucketEntry<'a> {
    pub fn parse(b: &'a [u8]) -> BucketEntry<'a> {
        BucketEntry {
            code: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            vector: VectorRef::new(
                u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
                u16::from_le_bytes([b[8], b[9]]),
            ),
            sketch: &b[BUCKET_HEADER..],
        }
    }

    pub fn encode(code: u32, vector: VectorRef, sketch: &[u64]) -> Vec<u8> {
        let mut b = Vec::with_capacity(BUCKET_HEADER + sketch.len() * 8);
        b.extend_from_slice(&code.to_le_bytes());
        b.extend_from_slice(&vector.block().to_le_bytes());
        b.extend_from_slice(&vector.offset().to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        for w in sketch {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// Hamming distance between this entry's sketch and `q`.
    pub fn hamming(&self, q: &[u64]) -> u32 {
        self.sketch
            .chunks_exact(8)
            .zip(q)
            .map(|(c, w)| {
                (u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ w)
                    .count_ones()
            })
            .sum()
    }
}

pub fn tid_parts(t: &pg_sys::ItemPointerData) -> (u32, u16) {
    let blk = ((t.ip_blkid.bi_hi as u32) << 16) | t.ip_blkid.bi_lo as u32;
    (blk, t.ip_posid)
}

pub fn make_tid(block: u32, offset: u16) -> pg_sys::ItemPointerData {
    pg_sys::ItemPointerData {
        ip_blkid: pg_sys::BlockIdData {
            bi_hi: (block >> 16) as u16,
            bi_lo: (block & 0xFFFF) as u16,
        },
        ip_posid: offset,
    }
}
