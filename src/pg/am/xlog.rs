//! The one way index pages are changed: a small RAII guard around GenericXLog.
//!
//! `PageWrite::start(index)` begins a generic WAL record; `page(buf)` registers a locked buffer and hands
//! back the page image to modify; `finish()` writes the record (or, for unlogged relations, just marks the
//! buffers dirty). Dropping the guard without `finish()` — an early return or an ERROR unwinding through
//! Rust frames — aborts the record and leaves the pages untouched.

use pgrx::pg_sys;

/// A pending set of page changes, WAL-logged together (at most 4 pages, GenericXLog's limit).
pub struct PageWrite {
    state: *mut pg_sys::GenericXLogState,
}

impl PageWrite {
    /// Starts a generic WAL record for `index`.
    pub fn start(index: pg_sys::Relation) -> PageWrite {
        // SAFETY: `index` is an open relation; GenericXLogStart allocates the state in the current context.
        let state = unsafe { pg_sys::GenericXLogStart(index) };
        PageWrite { state }
    }

    /// Registers `buf` (pinned and exclusively locked by the caller) and returns the page to modify.
    /// `fresh` says the page is being initialised from scratch (logged as a full image).
    pub fn page(&mut self, buf: pg_sys::Buffer, fresh: bool) -> pg_sys::Page {
        let flags = if fresh {
            pg_sys::GENERIC_XLOG_FULL_IMAGE as i32
        } else {
            0
        };
        // SAFETY: the state is live (not yet finished or aborted) and the buffer is locked by the caller.
        unsafe { pg_sys::GenericXLogRegisterBuffer(self.state, buf, flags) }
    }

    /// Applies the changes to the shared buffers and writes the WAL record.
    pub fn finish(mut self) {
        let state = std::mem::replace(&mut self.state, std::ptr::null_mut());
        // SAFETY: the state is live; after this call it is freed, and Drop sees a null pointer.
        unsafe { pg_sys::GenericXLogFinish(state) };
    }
}

impl Drop for PageWrite {
    fn drop(&mut self) {
        if !self.state.is_null() {
            // SAFETY: the state was started and neither finished nor aborted; abort discards the images.
            unsafe { pg_sys::GenericXLogAbort(self.state) };
        }
    }
}
