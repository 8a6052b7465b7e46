//! Symbols that released install and upgrade scripts name but this version
//! no longer serves.  `CREATE FUNCTION ... LANGUAGE c` looks its symbol up
//! in the library, so an upgrade through an older version's scripts (0.9.0
//! to 0.10.0 to this one) needs every symbol they create a function for; the
//! current version's upgrade script then drops the function.  Called, a
//! stub raises an error that says what to run, unless serving it costs
//! nothing (`_backfill_tables`).

use pgrx::prelude::*;

/// `_backfill_tables` of 0.9.0, which its install script and a 0.9.0
/// database not yet updated (`ALTER EXTENSION clinembed UPDATE`) call; from
/// 0.10.0 the backfill calls `columns::backfill_tables` directly, and no SQL
/// function is created for it.
#[pg_extern(stable, parallel_safe, sql = false)]
fn _backfill_tables(
    rel: pg_sys::Oid,
    source_column: &str,
    target_column: &str,
    model_column: Option<&str>,
) -> Vec<pg_sys::Oid> {
    crate::write::columns::backfill_tables(
        rel,
        &crate::write::columns::columns(source_column, target_column, model_column),
    )
}

/// Defines the C symbol `$symbol` (and its `pg_finfo_` record) of SQL
/// function `$function`, removed in `$version`.
macro_rules! removed {
    ($finfo:ident, $symbol:ident, $function:literal, $version:literal) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
            const V1: pgrx::pg_sys::Pg_finfo_record =
                pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        /// A stub: see the module's documentation.
        ///
        /// # Safety
        /// Called by PostgreSQL's function manager.
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub unsafe extern "C-unwind" fn $symbol(
            _fcinfo: pgrx::pg_sys::FunctionCallInfo,
        ) -> pgrx::pg_sys::Datum {
            pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(|| -> pgrx::pg_sys::Datum {
                $crate::errors::report(
                    clinembed_core::Error::new(
                        clinembed_core::ErrorKind::WrongState,
                        "clinembed's SQL objects are older than its library",
                    )
                    .detail(concat!(
                        "Function ",
                        $function,
                        " was removed in clinembed ",
                        $version,
                        "; the library installed is ",
                        env!("CARGO_PKG_VERSION"),
                        "."
                    ))
                    .hint("Run ALTER EXTENSION clinembed UPDATE; in this database."),
                )
            })
        }
    };
}

removed!(
    pg_finfo__embed_row_read_wrapper,
    _embed_row_read_wrapper,
    "_embed_row_read",
    "0.10.1"
);
removed!(
    pg_finfo__embed_row_action_wrapper,
    _embed_row_action_wrapper,
    "_embed_row_action",
    "0.10.1"
);
removed!(
    pg_finfo__embed_row_write_wrapper,
    _embed_row_write_wrapper,
    "_embed_row_write",
    "0.10.1"
);
removed!(
    pg_finfo__embed_trigger_args_wrapper,
    _embed_trigger_args_wrapper,
    "_embed_trigger_args",
    "0.10.1"
);
removed!(
    pg_finfo__embed_check_dims_wrapper,
    _embed_check_dims_wrapper,
    "_embed_check_dims",
    "0.10.1"
);
removed!(
    pg_finfo__embed_batch_statements_wrapper,
    _embed_batch_statements_wrapper,
    "_embed_batch_statements",
    "0.10.1"
);
removed!(
    pg_finfo__embed_rows_per_call_wrapper,
    _embed_rows_per_call_wrapper,
    "_embed_rows_per_call",
    "0.10.1"
);
removed!(
    pg_finfo__embed_constraint_error_wrapper,
    _embed_constraint_error_wrapper,
    "_embed_constraint_error",
    "0.10.1"
);
removed!(
    pg_finfo__backfill_statements_wrapper,
    _backfill_statements_wrapper,
    "_backfill_statements",
    "0.10.1"
);
