//! One set of SPI helpers: reads run with `search_path` pinned, writes, and
//! the one error an SPI failure of clinembed's own statements raises.

use std::fmt::Display;

use pgrx::datum::{DatumWithOid, FromDatum, IntoDatum};
use pgrx::prelude::*;

use crate::errors::report;
use crate::pg::security::pinned;
use clinembed_core::{Error, ErrorKind};

/// One row's first column of a read-only query, run with `search_path`
/// pinned (`crate::pg::security`), whoever calls it.  (pgrx's `Spi::get_one*`
/// run as writes and assign a transaction id, which a hot standby refuses.)
/// None also when the query fails.
pub(crate) fn select_one<T: IntoDatum + FromDatum>(
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> Option<T> {
    pinned(|| Spi::connect(|c| c.select(sql, Some(1), args)?.first().get_one::<T>()))
        .ok()
        .flatten()
}

/// One row's first two columns of a read-only query (pinned as
/// [`select_one`]).
pub(crate) fn select_two<A: IntoDatum + FromDatum, B: IntoDatum + FromDatum>(
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> (Option<A>, Option<B>) {
    pinned(|| Spi::connect(|c| c.select(sql, Some(1), args)?.first().get_two::<A, B>()))
        .unwrap_or((None, None))
}

/// What a failed statement was part of, for the error it raises.
#[derive(Clone, Copy)]
pub(crate) enum During {
    /// The queue's statements (the trigger's, the workers', the functions').
    Queue,
    /// A backfill step, and what it was doing.
    Backfill(&'static str),
    /// The statement trigger's reads and writes of its rows.
    BatchTrigger,
}

/// Raises an SPI failure of one of clinembed's own statements (XX000: a
/// backfill step or the statement trigger's statements should not fail;
/// the queue's also fail when the extension's objects are missing or out
/// of date).  `why` is SPI's
/// message, which names no note text.
pub(crate) fn failed(during: During, why: impl Display) -> ! {
    match during {
        During::Queue => report(
            Error::new(ErrorKind::Runtime, "the embedding queue could not be used")
                .detail(format!("SPI: {why}"))
                .hint(
                    "Check that extension clinembed is installed and up to date in this database.",
                ),
        ),
        During::Backfill(what) => report(
            Error::new(ErrorKind::Runtime, "backfill step failed")
                .detail(format!("SPI, {what}: {why}"))
                .hint("This is a bug in clinembed; please report it."),
        ),
        During::BatchTrigger => report(
            Error::new(
                ErrorKind::Runtime,
                "embed_batch_trigger could not write its rows",
            )
            .detail(format!("SPI: {why}"))
            .hint("This is a bug in clinembed; please report it."),
        ),
    }
}

/// Runs a writing statement (as the current role and search_path).
pub(crate) fn execute(during: During, sql: &str, args: &[DatumWithOid<'_>]) {
    Spi::connect_mut(|c| c.update(sql, None, args).map(|_| ()))
        .unwrap_or_else(|e| failed(during, e))
}

/// The first column of the first row of a statement run as [`execute`].
pub(crate) fn write_one<T: IntoDatum + FromDatum>(
    during: During,
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> Option<T> {
    write_two::<T, bool>(during, sql, args).0
}

/// The first two columns of the first row, as [`write_one`] (the second
/// None when the statement returns one column).
pub(crate) fn write_two<A: IntoDatum + FromDatum, B: IntoDatum + FromDatum>(
    during: During,
    sql: &str,
    args: &[DatumWithOid<'_>],
) -> (Option<A>, Option<B>) {
    Spi::connect_mut(|c| {
        let table = c.update(sql, Some(1), args)?;
        if table.is_empty() {
            return Ok((None, None));
        }
        let row = table.first();
        Ok::<_, pgrx::spi::Error>((
            row.get::<A>(1)?,
            if row.columns()? > 1 {
                row.get::<B>(2)?
            } else {
                None
            },
        ))
    })
    .unwrap_or_else(|e| failed(during, e))
}
