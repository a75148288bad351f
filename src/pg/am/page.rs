//! On-disk layout of an `lsh` index. Every page is a standard PostgreSQL page (so checksums, generic WAL
//! and pageinspect work) with an 8-byte special area naming its kind and the next page of its chain.
//!
//! - block 0, META: magic, format version, the LSH parameters (planes are regenerated from them), where
//!   the mean vector and the bucket directory live, and a build id.
//! - MEAN pages (consecutive): the mean vector computed at build, raw f32s after the page header: `dims`
//!   values, or `dims + 1` for a norm-augmented inner-product index (`LshParams::hash_dims`).
//! - DIRECTORY pages (consecutive): for each table and each "superbucket" (the top `dir_bits` bits of
//!   the bucket code) the head block of that superbucket's chain of BUCKET pages. Written at build (or on
//!   the first insert into an index built empty), read-only afterwards.
//! - BUCKET pages: items `[code u32][vector block u32][vector offset u16][pad u16][sketch u64 × W]`, one
//!   per (row, table); chained through the special area's `next`.
//! - VECTOR pages: items `[heap block u32][heap offset u16][flags u16][f32 × dims]`, one per indexed row.

use crate::pg::fmgr::{error, raise};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

pub const MAGIC: u32 = 0x4C53_4831; // "LSH1"
/// On-disk format version, written at build and checked by every reader of the meta page (scan, insert,
/// VACUUM, `lsh_index_check`). Bump it whenever a change makes existing indexes unreadable or wrongly read
/// (page or item layout, meta fields, hashing: plane generation, centring, code or sketch bits); an index
/// with another version is refused with SQLSTATE 55000 and the hint `REINDEX INDEX <name>` (README,
/// "On-disk format"). Changes that old indexes still read correctly keep the version.
pub const VERSION: u32 = 1;
pub const META_BLOCK: pg_sys::BlockNumber = 0;
pub const INVALID_BLOCK: pg_sys::BlockNumber = pg_sys::InvalidBlockNumber;

pub const KIND_META: u16 = 1;
pub const KIND_MEAN: u16 = 2;
pub const KIND_DIRECTORY: u16 = 3;
pub const KIND_BUCKET: u16 = 4;
pub const KIND_VECTOR: u16 = 5;

/// Flag bit of a vector item: the heap row is dead (set by VACUUM before its bucket entries go).
pub const VECTOR_DELETED: u16 = 1;

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
}

/// Bytes usable for raw arrays (mean, directory) on one page.
pub const fn raw_capacity() -> usize {
    pg_sys::BLCKSZ as usize - size_of::<pg_sys::PageHeaderData>() - size_of::<Opaque>()
}
/// 4-byte values (mean f32s, directory block numbers) per raw page; writer and reader both use it.
pub const WORDS_PER_PAGE: usize = raw_capacity() / 4;

/// Initialises `page` as an empty page of `kind`.
///
/// # Safety
/// `page` must point to a BLCKSZ page image the caller may write (a registered GenericXLog image or a
/// locked buffer during build).
pub unsafe fn init_page(page: pg_sys::Page, kind: u16) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        pg_sys::PageInit(page, pg_sys::BLCKSZ as usize, size_of::<Opaque>());
        let o = opaque(page);
        (*o).next = INVALID_BLOCK;
        (*o).kind = kind;
        (*o).page_id = PAGE_ID;
    }
}

/// The special area of a page.
///
/// # Safety
/// `page` must be a valid page initialised by [`init_page`].
pub unsafe fn opaque(page: pg_sys::Page) -> *mut Opaque {
    // SAFETY: guaranteed by the caller; the special area holds an `Opaque`.
    unsafe { pg_sys::PageGetSpecialPointer(page) as *mut Opaque }
}

/// Kind of a page, raising ERROR (index corrupted) if it is not one of ours.
///
/// # Safety
/// `page` must be a valid page of the index, locked by the caller.
pub unsafe fn kind(page: pg_sys::Page) -> u16 {
    // SAFETY: guaranteed by the caller.
    unsafe {
        if pg_sys::PageIsNew(page) {
            return 0;
        }
        if pg_sys::PageGetSpecialSize(page) as usize != size_of::<Opaque>()
            || (*opaque(page)).page_id != PAGE_ID
        {
            error(
                PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
                "lsh index page has an unexpected special area",
            );
        }
        (*opaque(page)).kind
    }
}

/// Reads the meta page contents, checking magic and version.
///
/// # Safety
/// `page` must be block 0 of the open index `index`, locked by the caller.
pub unsafe fn read_meta(index: pg_sys::Relation, page: pg_sys::Page) -> Meta {
    // SAFETY: guaranteed by the caller; the contents area holds a `Meta` written by `write_meta`.
    let meta = unsafe { std::ptr::read_unaligned(pg_sys::PageGetContents(page) as *const Meta) };
    if meta.magic != MAGIC {
        error(
            PgSqlErrorCode::ERRCODE_INDEX_CORRUPTED,
            "lsh index meta page has a bad magic number",
        );
    }
    if meta.version != VERSION {
        version_mismatch(index, meta.version);
    }
    meta
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
            "lsh index \"{name}\" has on-disk format version {found}, this pg_imgsim reads version {VERSION}"
        ),
        Some("The index was built by another version of pg_imgsim.".into()),
        Some(format!("REINDEX INDEX {qualified}")),
    )
}

/// Writes `meta` into a page initialised as META and sets pd_lower past it.
///
/// # Safety
/// `page` must be a writable META page image.
pub unsafe fn write_meta(page: pg_sys::Page, meta: &Meta) {
    // SAFETY: guaranteed by the caller; the contents area has room for `Meta` (a few dozen bytes).
    unsafe {
        let contents = pg_sys::PageGetContents(page);
        std::ptr::write_unaligned(contents as *mut Meta, *meta);
        let header = page as *mut pg_sys::PageHeaderData;
        (*header).pd_lower = (contents as usize + size_of::<Meta>() - page as usize) as u16;
    }
}

/// Writes raw bytes into the contents area of a page (mean and directory pages) and sets pd_lower.
///
/// # Safety
/// `page` must be a writable page image initialised by [`init_page`]; `bytes.len() <= raw_capacity()`.
pub unsafe fn write_raw(page: pg_sys::Page, bytes: &[u8]) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let contents = pg_sys::PageGetContents(page) as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), contents, bytes.len());
        let header = page as *mut pg_sys::PageHeaderData;
        (*header).pd_lower = (contents as usize + bytes.len() - page as usize) as u16;
    }
}

/// The raw contents of a mean or directory page.
///
/// # Safety
/// `page` must be a valid page locked by the caller; the slice lives as long as the lock/pin.
pub unsafe fn raw<'a>(page: pg_sys::Page) -> &'a [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let contents = pg_sys::PageGetContents(page) as *const u8;
        std::slice::from_raw_parts(contents, raw_capacity())
    }
}

/// Item bytes at `off`, or None for an unused/dead line pointer.
///
/// # Safety
/// `page` must be a valid page locked by the caller; `off` within 1..=max offset.
pub unsafe fn item<'a>(page: pg_sys::Page, off: pg_sys::OffsetNumber) -> Option<&'a [u8]> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let id = pg_sys::PageGetItemId(page, off);
        if (*id).lp_flags() != pg_sys::LP_NORMAL {
            return None;
        }
        let p = pg_sys::PageGetItem(page, id) as *const u8;
        Some(std::slice::from_raw_parts(p, (*id).lp_len() as usize))
    }
}

/// Mutable item bytes at `off` (for in-place flag updates).
///
/// # Safety
/// As for [`item`], with an exclusive lock and the page registered for WAL.
pub unsafe fn item_mut<'a>(page: pg_sys::Page, off: pg_sys::OffsetNumber) -> Option<&'a mut [u8]> {
    // SAFETY: guaranteed by the caller.
    unsafe {
        let id = pg_sys::PageGetItemId(page, off);
        if (*id).lp_flags() != pg_sys::LP_NORMAL {
            return None;
        }
        let p = pg_sys::PageGetItem(page, id) as *mut u8;
        Some(std::slice::from_raw_parts_mut(p, (*id).lp_len() as usize))
    }
}

/// Number of line pointers on a page.
///
/// # Safety
/// `page` must be a valid page locked by the caller.
pub unsafe fn max_offset(page: pg_sys::Page) -> pg_sys::OffsetNumber {
    // SAFETY: guaranteed by the caller.
    unsafe { pg_sys::PageGetMaxOffsetNumber(page) }
}

/// Adds an item; returns its offset or None if it does not fit. A line pointer freed by VACUUM is
/// reused when the page has one (PageAddItemExtended looks for it when the page says it has free ones).
///
/// # Safety
/// `page` must be a writable page image (GenericXLog-registered or build-time).
pub unsafe fn add_item(page: pg_sys::Page, bytes: &[u8]) -> Option<pg_sys::OffsetNumber> {
    // SAFETY: guaranteed by the caller; PageAddItemExtended copies `bytes` and checks space itself.
    let off = unsafe {
        if !fits(page, bytes.len()) {
            return None;
        }
        pg_sys::PageAddItemExtended(
            page,
            bytes.as_ptr() as pg_sys::Item,
            bytes.len(),
            pg_sys::InvalidOffsetNumber,
            0,
        )
    };
    (off != pg_sys::InvalidOffsetNumber).then_some(off)
}

/// Whether an item of `len` bytes fits on the page: PageAddItem stores it MAXALIGNed, and may need a new
/// line pointer (PageGetFreeSpace already keeps room for one).
///
/// # Safety
/// `page` must be a valid page locked by the caller.
pub unsafe fn fits(page: pg_sys::Page, len: usize) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe { pg_sys::PageGetFreeSpace(page) >= maxalign(len) }
}

/// `MAXALIGN(len)`: the room an item of `len` bytes takes on a page.
pub const fn maxalign(len: usize) -> usize {
    let a = pg_sys::MAXIMUM_ALIGNOF as usize;
    (len + a - 1) & !(a - 1)
}

/// Free space on a page, for a new item (line pointer included).
///
/// # Safety
/// `page` must be a valid page locked by the caller.
pub unsafe fn free_space(page: pg_sys::Page) -> usize {
    // SAFETY: guaranteed by the caller.
    unsafe { pg_sys::PageGetFreeSpace(page) }
}

/// Frees the items at `offs` without moving any other item (their addresses are referenced from bucket
/// entries), and marks the page as having free line pointers so inserts reuse them.
///
/// # Safety
/// `page` must be a writable page image; every offset must hold an item.
pub unsafe fn delete_items_in_place(page: pg_sys::Page, offs: &[pg_sys::OffsetNumber]) {
    // SAFETY: guaranteed by the caller; deleting from the highest offset down keeps the rest valid.
    unsafe {
        let mut sorted = offs.to_vec();
        sorted.sort_unstable();
        for &off in sorted.iter().rev() {
            pg_sys::PageIndexTupleDeleteNoCompact(page, off);
        }
        let header = page as *mut pg_sys::PageHeaderData;
        if (1..=max_offset(page)).any(|o| item(page, o).is_none()) {
            (*header).pd_flags |= pg_sys::PD_HAS_FREE_LINES as u16;
        }
    }
}

/// A vector item: heap TID, flags, values.
pub struct VectorItem<'a> {
    pub heap_block: u32,
    pub heap_offset: u16,
    pub flags: u16,
    pub values: &'a [u8],
}

pub const VECTOR_HEADER: usize = 8;

impl<'a> VectorItem<'a> {
    pub fn parse(b: &'a [u8]) -> VectorItem<'a> {
        VectorItem {
            heap_block: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            heap_offset: u16::from_le_bytes([b[4], b[5]]),
            flags: u16::from_le_bytes([b[6], b[7]]),
            values: &b[VECTOR_HEADER..],
        }
    }

    pub fn encode(heap: pg_sys::ItemPointerData, values: &[f32]) -> Vec<u8> {
        let mut b = Vec::with_capacity(VECTOR_HEADER + values.len() * 4);
        let (blk, off) = tid_parts(&heap);
        b.extend_from_slice(&blk.to_le_bytes());
        b.extend_from_slice(&off.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        for v in values {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn deleted(&self) -> bool {
        self.flags & VECTOR_DELETED != 0
    }

    pub fn heap_tid(&self) -> pg_sys::ItemPointerData {
        make_tid(self.heap_block, self.heap_offset)
    }

    /// Decodes the values into `out`.
    pub fn values_into(&self, out: &mut Vec<f32>) {
        out.clear();
        out.extend(
            self.values
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
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
