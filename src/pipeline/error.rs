//! Typed errors. The PostgreSQL glue maps [`ErrorKind`] to SQLSTATEs and shows
//! [`Error::message`] as the error text and [`Error::hint`] as the HINT.

use std::fmt;

/// What went wrong, coarse enough to map onto an SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorKind {
    /// The bytes are not a (complete, valid) image: empty, truncated, corrupt, unknown.
    InvalidInput,
    /// A recognised image format (or a feature of it) that this build does not decode.
    Unsupported,
    /// The input is larger than the configured `max_bytes` / `max_pixels`.
    LimitExceeded,
    /// No model of that name in the model directory (or the name is not a plain identifier).
    ModelMissing,
    /// The model's JSON or ONNX file is malformed or does not match the agreed format.
    ModelInvalid,
    /// The ONNX Runtime shared library could not be loaded or initialised.
    RuntimeUnavailable,
    /// The execution provider that was asked for (CUDA) cannot be used.
    ProviderUnavailable,
    /// ONNX Runtime failed while running the model, or returned an unexpected output.
    Inference,
    /// The caller's interrupt check asked to stop.
    Cancelled,
    /// A buffer sized by the input could not be allocated (SQLSTATE 53200 `out_of_memory`).
    /// Allocations sized by input are fallible, so memory exhaustion is an error, never an abort.
    OutOfMemory,
}

impl ErrorKind {
    /// A short stable name, e.g. for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::LimitExceeded => "limit exceeded",
            ErrorKind::ModelMissing => "model missing",
            ErrorKind::ModelInvalid => "model invalid",
            ErrorKind::RuntimeUnavailable => "runtime unavailable",
            ErrorKind::ProviderUnavailable => "provider unavailable",
            ErrorKind::Inference => "inference failed",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::OutOfMemory => "out of memory",
        }
    }
}

/// A pipeline error: a kind, a one-line message and an optional hint.
///
/// [`Error::message`] and [`Error::hint`] are meant for the user and never contain server file
/// paths (model files, the ONNX Runtime library, the model directory); those go to
/// [`Error::detail_for_log`], for the server log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
    /// Server-side detail (file paths, raw library errors): for the server log, not for users.
    log_detail: Option<String>,
    /// Index of the offending image inside a batch, when the error is about one image.
    index: Option<usize>,
}

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            log_detail: None,
            index: None,
        }
    }

    /// Attach server-side detail (paths, raw errors that may contain paths) for the log.
    #[must_use]
    pub fn with_log_detail(mut self, detail: impl Into<String>) -> Self {
        self.log_detail = Some(detail.into());
        self
    }

    /// Detail for the server log only (may name server file paths); `None` when there is none.
    /// Never show it to a database user.
    pub fn detail_for_log(&self) -> Option<&str> {
        self.log_detail.as_deref()
    }

    /// Attach a hint (what the user can do about it).
    #[must_use]
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Record which image of a batch failed.
    #[must_use]
    pub fn at_index(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message itself (without the batch position; `Display` adds "image N: " when known).
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// 0-based index of the failing image in the batch, if the error concerns one image.
    pub fn index(&self) -> Option<usize> {
        self.index
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// An allocation of `bytes` for `what` failed.
    pub(crate) fn oom(bytes: usize, what: &str) -> Self {
        Error::new(
            ErrorKind::OutOfMemory,
            format!("out of memory: cannot allocate {bytes} bytes for {what}"),
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(i) = self.index {
            write!(f, "image {}: ", i + 1)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A zero-filled `Vec<T>` of `len` elements, or [`ErrorKind::OutOfMemory`] instead of an abort.
pub(crate) fn try_zeroed<T: Copy + Default>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| Error::oom(len.saturating_mul(std::mem::size_of::<T>()), what))?;
    v.resize(len, T::default());
    Ok(v)
}

/// An empty `Vec<T>` with room for `len` elements, or [`ErrorKind::OutOfMemory`].
pub fn try_with_capacity<T>(len: usize, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len)
        .map_err(|_| Error::oom(len.saturating_mul(std::mem::size_of::<T>()), what))?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_allocation_is_an_error_not_an_abort() {
        let e = try_zeroed::<u8>(usize::MAX / 2, "test").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfMemory);
        let e = try_with_capacity::<f32>(usize::MAX / 8, "test").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfMemory);
        assert_eq!(try_zeroed::<f32>(3, "x").unwrap(), vec![0.0; 3]);
    }

    #[test]
    fn log_detail_is_separate() {
        let e = Error::new(ErrorKind::ModelMissing, "model \"m\" not found")
            .with_log_detail("/srv/models/m.json");
        assert!(!e.to_string().contains("/srv"));
        assert_eq!(e.detail_for_log(), Some("/srv/models/m.json"));
    }
}
