//! Errors of the inference core.
//!
//! The core knows nothing of Postgres, but every error it raises carries the
//! three parts a Postgres error report needs (message, detail, hint) and a
//! [`ErrorKind`] that the extension maps to a SQLSTATE.  Messages never carry
//! input text: notes are protected health information, so errors speak of
//! lengths and token counts only.

use std::fmt;

/// What went wrong, coarse enough to pick a SQLSTATE from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file or directory that was named does not exist or cannot be read.
    NotFound,
    /// The ONNX Runtime library could not be loaded or is the wrong version.
    Runtime,
    /// The model directory exists but its contents are unusable.
    InvalidModel,
    /// A caller-supplied value is out of range.
    InvalidArgument,
    /// A configured bound was exceeded.
    LimitExceeded,
    /// ONNX Runtime failed while running the model.
    Inference,
    /// The request would read files the configuration does not allow.
    Forbidden,
    /// The installed model is not the one a caller pinned by identity.
    IdentityMismatch,
    /// A value does not fit the column it is meant for.
    DatatypeMismatch,
    /// A column that was named does not exist.
    UndefinedColumn,
    /// A table that was named does not exist.
    UndefinedTable,
    /// A trigger was created in a way its function cannot work with.
    TriggerProtocol,
    /// A table lacks what a feature needs (a primary key).
    InvalidTable,
    /// What was asked is not something clinembed does (writing a foreign
    /// table).
    Unsupported,
    /// An object is busy with work that conflicts with what was asked (a
    /// backfill with another model).
    InUse,
    /// What was asked needs a state that does not hold (a backfill run that
    /// is not this backend's, or is finished).
    WrongState,
    /// A write was asked where nothing may be written (a hot standby).
    ReadOnly,
    /// A trigger of the user's changed (or skipped) a write of clinembed's:
    /// the text a vector was made of is no longer the row's.
    TriggeredChange,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
