//! The one way index pages are changed: a small RAII guard around GenericXLog.
//!
//! `PageWrite::start(index)` begins a generic WAL record; `page(&locked, fresh)` registers an exclusively
//! locked buffer ([`Locked`]) and hands back the page image to modify; `finish()` writes the record (or,
//! for unlogged relations, just marks the buffers dirty). The record borrows every buffer it registers
//! mutably, so none can be released (or read through its guard while `finish()` copies the images into
//! it) before the record is finished or dropped, and the images it hands out borrow the record, so none
//! can be written after `finish()`. Dropping the guard without `finish()` (an early
//! return) aborts the record and leaves the pages untouched; an ERROR unwinding through it leaves the
//! record to the transaction abort (its memory goes with the memory context).

use super::buffer::{Lock, Locked};
use super::page::PageMut;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::marker::PhantomData;

/// A pending set of page changes, WAL-logged together (at most 4 pages, GenericXLog's limit).
pub struct PageWrite<'b> {
    state: *mut pg_sys::GenericXLogState,
    registered: RefCell<Vec<pg_sys::Buffer>>,
    _buffers: PhantomData<&'b mut Locked>,
}

impl<'b> PageWrite<'b> {
    /// Starts a generic WAL record for `index`.
    pub fn start(index: pg_sys::Relation) -> PageWrite<'b> {
        // SAFETY: `index` is an open relation; GenericXLogStart allocates the state in the current context.
        let state = unsafe { pg_sys::GenericXLogStart(index) };
        PageWrite {
            state,
            registered: RefCell::new(Vec::new()),
            _buffers: PhantomData,
        }
    }

    /// Registers `buf` (exclusively locked) and returns its page image to modify. `fresh` says the page is
    /// being initialised from scratch (logged as a full image).
    pub fn page(&self, buf: &'b mut Locked, fresh: bool) -> PageMut<'_> {
        assert_eq!(
            buf.lock(),
            Lock::Exclusive,
            "a page is written under an exclusive lock"
        );
        let b = buf.buffer();
        {
            let mut reg = self.registered.borrow_mut();
            assert!(!reg.contains(&b), "a buffer is registered once per record");
            reg.push(b);
        }
        let flags = if fresh {
            pg_sys::GENERIC_XLOG_FULL_IMAGE as i32
        } else {
            0
        };
        // SAFETY: the state is live (not yet finished or aborted) and the buffer exclusively locked; the
        // image belongs to the state, which outlives the returned borrow of `self`, and each buffer is
        // registered once, so no two images alias.
        unsafe { PageMut::new(pg_sys::GenericXLogRegisterBuffer(self.state, b, flags)) }
    }

    /// Applies the changes to the shared buffers and writes the WAL record.
    pub fn finish(mut self) {
        let state = std::mem::replace(&mut self.state, std::ptr::null_mut());
        // SAFETY: the state is live; after this call it is freed, and Drop sees a null pointer.
        unsafe { pg_sys::GenericXLogFinish(state) };
    }
}

impl Drop for PageWrite<'_> {
    fn drop(&mut self) {
        if self.state.is_null() || std::thread::panicking() {
            return;
        }
        // SAFETY: the state was started and neither finished nor aborted; abort discards the images.
        unsafe { pg_sys::GenericXLogAbort(self.state) };
    }
}
