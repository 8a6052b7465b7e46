//! Raising errors as Postgres errors with a fitting SQLSTATE, a short
//! lower-case message, a detail and a hint.  Never include note text: callers
//! pass lengths and token counts.

use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgLogLevel;

use clinembed_core::{Error, ErrorKind};

/// An error about to be raised.
pub struct Report {
    code: PgSqlErrorCode,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl Report {
    pub fn new(code: PgSqlErrorCode, message: impl Into<String>) -> Self {
        Report {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }

    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hint = Some(h.into());
        self
    }
}

/// The SQLSTATE for each kind of core error.
pub fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    match kind {
        ErrorKind::NotFound => PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
        ErrorKind::Runtime => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        ErrorKind::InvalidModel => PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
        ErrorKind::InvalidArgument => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::LimitExceeded => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        ErrorKind::Inference => PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
    }
}

impl From<Error> for Report {
    fn from(e: Error) -> Self {
        Report {
            code: sqlstate(e.kind),
            message: e.message,
            detail: e.detail,
            hint: e.hint,
        }
    }
}

/// Raises `r` at ERROR level; does not return.
pub fn report(r: impl Into<Report>) -> ! {
    let r = r.into();
    let mut er = ErrorReport::new(r.code, r.message, "clinembed");
    if let Some(d) = r.detail {
        er = er.set_detail(d);
    }
    if let Some(h) = r.hint {
        er = er.set_hint(h);
    }
    er.report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// Unwraps a core result or raises its error.
pub trait OrReport<T> {
    fn or_report(self) -> T;
}

impl<T> OrReport<T> for Result<T, Error> {
    fn or_report(self) -> T {
        self.unwrap_or_else(|e| report(e))
    }
}
