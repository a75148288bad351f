//! Buffer access through guards. A [`Locked`] owns one pin and one content lock on an index page and gives
//! both back when it goes out of scope, on every path: early returns, `?`, loops that move on to the next
//! page of a chain. Pages are only read through it ([`Locked::page`] is a [`PageRef`] that cannot outlive
//! the guard); they are only changed through [`super::xlog::PageWrite`], which borrows the guard, so a
//! page cannot be written outside a WAL record nor released before its record is written.
//!
//! When an ERROR (or a Rust panic) unwinds through a guard, the guard leaves the pin and lock alone:
//! the transaction's abort releases both (LWLockReleaseAll, then the resource owner's buffer pins), and
//! calling into the buffer manager while unwinding could raise a second error, which would abort the
//! backend. Nothing in the index catches such an unwind and carries on.

use super::page::{PageMut, PageRef};
use pgrx::pg_sys;

/// Content lock mode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Lock {
    Share,
    Exclusive,
}

/// A pinned and locked buffer of an index, released when dropped.
pub struct Locked {
    buf: pg_sys::Buffer,
    lock: Lock,
}

impl Locked {
    /// Reads block `blk` of the main fork and locks it.
    pub fn read(index: pg_sys::Relation, blk: pg_sys::BlockNumber, lock: Lock) -> Locked {
        Self::read_with(index, blk, lock, std::ptr::null_mut())
    }

    /// As [`Locked::read`] with a share lock, for the pages a scan reads on every query (bucket
    /// chains, vectors): first through this backend's guess of the buffer that held the block the
    /// last time ([`recent`]; PostgreSQL checks the guess, `ReadRecentBuffer`), which spares the
    /// lookup in the shared buffer mapping table (a sixth of a GloVe query's time: ~1,500 lookups
    /// that miss the CPU caches).
    pub fn read_shared_recent(index: pg_sys::Relation, blk: pg_sys::BlockNumber) -> Locked {
        if let Some(guess) = recent::guess(index, blk) {
            // SAFETY: `index` is open; `guess` is a shared buffer this backend got from the buffer
            // manager for this block (`recent::remember`).
            if unsafe { crate::pg::compat::read_recent_buffer(index, blk, guess) } {
                return Self::lock_pinned(guess, Lock::Share);
            }
        }
        let got = Self::read(index, blk, Lock::Share);
        recent::remember(index, blk, got.buf);
        got
    }

    /// As [`Locked::read`], with a buffer access strategy (VACUUM).
    pub fn read_with(
        index: pg_sys::Relation,
        blk: pg_sys::BlockNumber,
        lock: Lock,
        strategy: pg_sys::BufferAccessStrategy,
    ) -> Locked {
        // SAFETY: `index` is open and locked by the caller's executor/command; ReadBufferExtended raises an
        // ERROR for a block beyond the end, so the buffer is valid (and pinned) when it returns.
        let buf = unsafe {
            pg_sys::ReadBufferExtended(
                index,
                pg_sys::ForkNumber::MAIN_FORKNUM,
                blk,
                pg_sys::ReadBufferMode::RBM_NORMAL,
                strategy,
            )
        };
        Self::lock_pinned(buf, lock)
    }

    /// Locks `buf`, pinned by this backend, and guards both.
    fn lock_pinned(buf: pg_sys::Buffer, lock: Lock) -> Locked {
        // The guard exists before the lock is taken: an ERROR while waiting leaves the pin to the abort.
        let guard = Locked { buf, lock };
        let mode = match lock {
            Lock::Share => pg_sys::BUFFER_LOCK_SHARE,
            Lock::Exclusive => pg_sys::BUFFER_LOCK_EXCLUSIVE,
        };
        // SAFETY: the buffer is pinned by this backend.
        unsafe { pg_sys::LockBuffer(buf, mode as i32) };
        guard
    }

    /// Extends `fork` of `index` by one page, returned pinned and exclusively locked, not yet initialised:
    /// the caller initialises it inside a `PageWrite`.
    pub fn extend(index: pg_sys::Relation, fork: pg_sys::ForkNumber::Type) -> Locked {
        Locked {
            buf: crate::pg::compat::extend_locked(index, fork),
            lock: Lock::Exclusive,
        }
    }

    /// The page, readable while the guard lives.
    pub fn page(&self) -> PageRef<'_> {
        // SAFETY: the buffer is pinned and locked for as long as `self` lives; PostgreSQL verified its
        // header when it was read (or it is a new page that is all zeros).
        unsafe { PageRef::new(pg_sys::BufferGetPage(self.buf)) }
    }

    /// Block number of the page.
    pub fn block(&self) -> pg_sys::BlockNumber {
        // SAFETY: the buffer is pinned.
        unsafe { pg_sys::BufferGetBlockNumber(self.buf) }
    }

    pub fn lock(&self) -> Lock {
        self.lock
    }

    /// Trades the lock for a cleanup lock (exclusive, and no other backend holds a pin): VACUUM takes it
    /// before removing items that a paused scan might still point at.
    pub fn lock_for_cleanup(&mut self) {
        // SAFETY: the buffer is pinned and locked by this backend; between the two calls it stays pinned.
        unsafe {
            pg_sys::LockBuffer(self.buf, pg_sys::BUFFER_LOCK_UNLOCK as i32);
            // Not locked now: if the wait below is cancelled, the abort releases only the pin.
            self.lock = Lock::Exclusive;
            pg_sys::LockBufferForCleanup(self.buf);
        }
    }

    /// Records the page's own free space (for a new item) in the free space map.
    pub fn record_free_space(&self, index: pg_sys::Relation) {
        self.record_free_space_as(index, self.page().free_space());
    }

    /// Records `free` bytes for this page in the free space map (0 for a page inserts must not use).
    pub fn record_free_space_as(&self, index: pg_sys::Relation, free: usize) {
        // SAFETY: `index` is open; the FSM only stores a number for this block.
        unsafe { pg_sys::RecordPageWithFreeSpace(index, self.block(), free) };
    }

    /// The raw buffer, for `PageWrite` (registering it in a WAL record).
    pub(super) fn buffer(&self) -> pg_sys::Buffer {
        self.buf
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Unwinding from an ERROR: the transaction abort releases the lock and the pin (module doc).
            return;
        }
        // SAFETY: the buffer is pinned and locked by this backend (the guard's invariant).
        unsafe { pg_sys::UnlockReleaseBuffer(self.buf) }
    }
}

/// Writes the first page of the index's init fork (UNLOGGED indexes) from `image`: the one page write that
/// does not go through GenericXLog, which logs nothing for an unlogged relation, while an init fork must
/// always reach WAL (as PostgreSQL's own AMs do with log_newpage_buffer).
pub fn write_init_fork_page(index: pg_sys::Relation, image: PageRef<'_>) {
    let buf = Locked::extend(index, pg_sys::ForkNumber::INIT_FORKNUM);
    // SAFETY: the new buffer is pinned and exclusively locked by `buf`; its page is replaced whole, marked
    // dirty and logged as a full image inside a critical section, as PostgreSQL's btbuildempty does.
    unsafe {
        let mut p = PageMut::new(pg_sys::BufferGetPage(buf.buffer()));
        pg_sys::CritSectionCount += 1;
        p.copy_from(image);
        pg_sys::MarkBufferDirty(buf.buffer());
        pg_sys::log_newpage_buffer(buf.buffer(), true);
        pg_sys::CritSectionCount -= 1;
    }
}

/// Backend-local guesses of which shared buffer holds each block of the indexes this backend scanned
/// last: a block number → buffer array per index, for at most [`recent::INDEXES`] indexes (the least
/// recently used is dropped) and the first [`recent::MAX_BLOCKS`] blocks of each (4 MB). A guess is
/// only a hint: `ReadRecentBuffer` pins the buffer only if its tag still names the block (the buffer
/// may have been evicted and reused, the index truncated, rewritten or dropped), else the block is
/// read as usual and the guess replaced. Keyed by the index's storage (a TRUNCATE or REINDEX gives a
/// new key).
///
/// Never for temporary indexes: their buffers are local, and their storage key can equal a
/// permanent index's (temporary relfilenodes are only unique per backend), whose shared buffers
/// `ReadRecentBuffer` would then accept. Not on PostgreSQL 13 (no `ReadRecentBuffer`).
///
/// `ReadRecentBuffer` pins without raising the buffer's usage count (the clock sweep's measure of
/// use), so one read in [`recent::REFRESH_EVERY`] (64) takes the usual path, which raises it: a page
/// that queries keep reading is still raised many times per second at a few hundred queries per
/// second, far more often than a clock sweep passes over 1 GB of buffers. (One in 8 cost 12 % of a
/// GloVe query's time: the mapping table is no longer in the CPU caches when it is consulted.)
pub mod recent {
    use pgrx::pg_sys;
    use std::cell::{Cell, RefCell};

    /// Indexes with guesses at a time.
    pub const INDEXES: usize = 4;
    /// Blocks per index with a guess (4 MB of buffer numbers, an 8 GB index).
    pub const MAX_BLOCKS: u32 = 1 << 20;
    /// One read in this many ignores its guess (see the module doc).
    pub const REFRESH_EVERY: u32 = 64;

    type Key = [u32; 3];

    thread_local! {
        /// Most recently used first.
        static GUESSES: RefCell<Vec<(Key, Vec<pg_sys::Buffer>)>> = const { RefCell::new(Vec::new()) };
        /// Guess lookups so far (for REFRESH_EVERY).
        static LOOKUPS: Cell<u32> = const { Cell::new(0) };
    }

    /// Whether guesses are kept for `index`: not on 13, not for a temporary index.
    fn usable(index: pg_sys::Relation) -> bool {
        // SAFETY: the callers' relation is open; rd_rel is its pg_class row.
        let temp =
            unsafe { (*(*index).rd_rel).relpersistence } as u8 == pg_sys::RELPERSISTENCE_TEMP;
        cfg!(not(feature = "pg13")) && !temp
    }

    fn key(index: pg_sys::Relation) -> Key {
        // SAFETY: the callers' relation is open.
        unsafe { crate::pg::compat::storage_key(index) }
    }

    /// The buffer that held block `blk` of `index` when this backend last read it, if any (and not
    /// for one lookup in [`REFRESH_EVERY`]).
    pub fn guess(index: pg_sys::Relation, blk: pg_sys::BlockNumber) -> Option<pg_sys::Buffer> {
        let n = LOOKUPS.get().wrapping_add(1);
        LOOKUPS.set(n);
        if n.is_multiple_of(REFRESH_EVERY) || !usable(index) {
            return None;
        }
        let k = key(index);
        GUESSES.with_borrow(|g| {
            let (_, bufs) = g.iter().find(|(key, _)| *key == k)?;
            bufs.get(blk as usize).copied().filter(|&b| b > 0)
        })
    }

    /// Remembers that `buf` holds block `blk` of `index` (nothing for a local buffer, a block past
    /// [`MAX_BLOCKS`], an index without guesses, or when memory for the array cannot be had).
    pub fn remember(index: pg_sys::Relation, blk: pg_sys::BlockNumber, buf: pg_sys::Buffer) {
        if buf <= 0 || blk >= MAX_BLOCKS || !usable(index) {
            return;
        }
        let k = key(index);
        GUESSES.with_borrow_mut(|g| {
            match g.iter().position(|(key, _)| *key == k) {
                Some(0) => {}
                Some(i) => {
                    let e = g.remove(i);
                    g.insert(0, e);
                }
                None => {
                    g.truncate(INDEXES - 1);
                    g.insert(0, (k, Vec::new()));
                }
            }
            let bufs = &mut g[0].1;
            let want = blk as usize + 1;
            if bufs.len() < want {
                if bufs.try_reserve(want - bufs.len()).is_err() {
                    return;
                }
                bufs.resize(want, 0);
            }
            bufs[blk as usize] = buf;
        })
    }
}
