//! Raising errors as Postgres errors with a fitting SQLSTATE, a short
//! lower-case message, a detail and a hint.  Never include note text: callers
//! pass lengths and token counts.

use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::PgLogLevel;

use clinembed_core::{Error, ErrorKind};

/// The SQLSTATE for each kind of core error.
pub fn sqlstate(kind: ErrorKind) -> PgSqlErrorCode {
    match kind {
        ErrorKind::NotFound => PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
        ErrorKind::Runtime => PgSqlErrorCode::ERRCODE_SYSTEM_ERROR,
        ErrorKind::InvalidModel => PgSqlErrorCode::ERRCODE_CONFIG_FILE_ERROR,
        ErrorKind::InvalidArgument => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::LimitExceeded => PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        ErrorKind::Inference => PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
        ErrorKind::Forbidden => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        ErrorKind::IdentityMismatch => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        ErrorKind::DatatypeMismatch => PgSqlErrorCode::ERRCODE_DATATYPE_MISMATCH,
        ErrorKind::UndefinedColumn => PgSqlErrorCode::ERRCODE_UNDEFINED_COLUMN,
        ErrorKind::UndefinedTable => PgSqlErrorCode::ERRCODE_UNDEFINED_TABLE,
        ErrorKind::TriggerProtocol => PgSqlErrorCode::ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
        ErrorKind::InvalidTable => PgSqlErrorCode::ERRCODE_INVALID_TABLE_DEFINITION,
        ErrorKind::Unsupported => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        ErrorKind::InUse => PgSqlErrorCode::ERRCODE_OBJECT_IN_USE,
        ErrorKind::WrongState => PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        ErrorKind::ReadOnly => PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
        ErrorKind::TriggeredChange => PgSqlErrorCode::ERRCODE_TRIGGERED_DATA_CHANGE_VIOLATION,
    }
}

/// A report with SQLSTATE `code`, and a detail
/// and a hint when given.
fn with_parts(
    code: PgSqlErrorCode,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
) -> ErrorReport {
    let mut er = ErrorReport::new(code, message, clinembed_core::ERROR_SOURCE);
    if let Some(d) = detail {
        er = er.set_detail(d);
    }
    if let Some(h) = hint {
        er = er.set_hint(h);
    }
    er
}

/// Raises `e` at ERROR level with the SQLSTATE of its kind; does not return.
pub fn report(e: Error) -> ! {
    with_parts(sqlstate(e.kind), e.message, e.detail, e.hint).report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// Raises an error with SQLSTATE `code` as given (one PostgreSQL raised,
/// raised again with another detail and hint); does not return.
pub fn report_as(code: PgSqlErrorCode, message: &str, detail: String, hint: String) -> ! {
    with_parts(code, message.into(), Some(detail), Some(hint)).report(PgLogLevel::ERROR);
    unreachable!("ERROR-level reports do not return")
}

/// Emits a WARNING with a detail and a hint; returns.
pub fn warn(message: &str, detail: &str, hint: &str) {
    with_parts(
        PgSqlErrorCode::ERRCODE_WARNING,
        message.into(),
        Some(detail.into()),
        Some(hint.into()),
    )
    .report(PgLogLevel::WARNING);
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
