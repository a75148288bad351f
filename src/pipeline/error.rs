//! Typed errors. The PostgreSQL glue maps [`ErrorKind`] to SQLSTATEs and shows
//! [`Error::message`] as the error text and [`Error::hint`] as the HINT.

use std::fmt;

/// What went wrong, coarse enough to map onto an SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
        }
    }
}

/// A pipeline error: a kind, a one-line message and an optional hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    hint: Option<String>,
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
            index: None,
        }
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
