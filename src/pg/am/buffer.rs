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
