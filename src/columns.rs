//! Embeddings beside their rows: the row and statement triggers, the
//! resumable backfill and its progress view.
//!
//! What they decide lives in the core (`clinembed_core::columns`): which rows
//! need work, the dimension check, rows per call.  This module exposes those
//! decisions and the statements built from them as internal functions; the
//! PL/pgSQL in `sql/columns.sql` only runs them, because a trigger's
//! transition tables are visible to PL/pgSQL's own SPI and the backfill
//! COMMITs between batches.  Everything that computes vectors is still
//! `embed_text` and `embed_texts`.

use std::ffi::{CStr, CString};

use clinembed_core::columns::{self as rule, Action, Columns, Event, Label, Row};
use pgrx::prelude::*;

use crate::errors::OrReport;
use crate::{backend, gucs};

extension_sql_file!(
    "../sql/columns.sql",
    name = "columns",
    requires = [
        embed_text,
        embed_texts,
        embed_model_id,
        embed_model_info,
        _embed_needs_work,
        _embed_row_read,
        _embed_row_action,
        _embed_row_write,
        _embed_check_dims,
        _embed_rows_per_call
    ]
);

/// An identifier quoted only where PostgreSQL would (as `format('%I')`), for
/// messages.
fn shown(name: &str) -> String {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: quote_identifier reads a NUL-terminated string and returns it
    // or a palloc'd quoted copy, both valid for this call.
    unsafe { CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}

fn relation_name(rel: pg_sys::Oid) -> String {
    Spi::get_one_with_args::<String>(
        "SELECT $1::pg_catalog.regclass::pg_catalog.text",
        &[rel.into()],
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| format!("relation {}", rel.to_u32()))
}

fn event(name: &str) -> Event {
    Event::parse(name).or_report()
}

/// The SQL condition true for the rows that need embedding or clearing under
/// `event` (`inserted`, `text_changed`, `stored`): the rule of
/// `clinembed_core::columns::action`, state by state.  Columns are read as
/// `alias.column`, or unqualified when `alias` is empty.  `model_id` may be
/// NULL where the event never compares labels with it (`text_changed`).
#[pg_extern(immutable, parallel_safe)]
fn _embed_needs_work(
    event: &str,
    source_column: &str,
    target_column: &str,
    model_column: Option<&str>,
    model_id: Option<&str>,
    alias: default!(&str, "''"),
) -> String {
    let columns = Columns {
        source: source_column.into(),
        target: target_column.into(),
        model: model_column.map(Into::into),
    };
    rule::needs_work(self::event(event), &columns, alias, model_id).or_report()
}

/// A statement that reads, from `$1` (the new row) and `$2` (the old one, or
/// NULL), what the rule needs: the source text, whether a vector is there,
/// the model column as text (NULL without one), and whether the text changed.
#[pg_extern(immutable, parallel_safe)]
fn _embed_row_read(source_column: &str, target_column: &str, model_column: Option<&str>) -> String {
    let s = rule::quote_ident(source_column);
    let t = rule::quote_ident(target_column);
    let m = model_column
        .map(|m| format!("($1).{}::pg_catalog.text", rule::quote_ident(m)))
        .unwrap_or_else(|| "NULL::pg_catalog.text".into());
    format!(
        "SELECT ($1).{s}::pg_catalog.text, ($1).{t} IS NOT NULL, {m}, \
         ($1).{s}::pg_catalog.text IS DISTINCT FROM ($2).{s}::pg_catalog.text"
    )
}

/// What the row trigger does with one row: `keep`, `embed` or `clear`.
/// `operation` is `INSERT` or `UPDATE`; `label` is the model column's value
/// (NULL when NULL or when there is no model column, which
/// `has_model_column` tells apart).  The current model identity is looked up
/// only when the label decides.
#[pg_extern(stable, parallel_safe)]
fn _embed_row_action(
    operation: &str,
    has_text: bool,
    has_vector: bool,
    label: Option<&str>,
    text_changed: bool,
    has_model_column: bool,
) -> &'static str {
    let event = match operation {
        "INSERT" => Event::Inserted,
        _ if text_changed => Event::TextChanged,
        _ => Event::TextUnchanged,
    };
    let row = |label| Row {
        text: has_text,
        vector: has_vector,
        label,
    };
    let action = match (has_model_column, label) {
        (false, _) => rule::action(event, row(Label::NoColumn)),
        (true, None) => rule::action(event, row(Label::Null)),
        (true, Some(value)) => {
            let (current, other) = (
                rule::action(event, row(Label::Current)),
                rule::action(event, row(Label::Other)),
            );
            if current == other || value != crate::embed_model_id() {
                other
            } else {
                current
            }
        }
    };
    action.as_str()
}

/// A statement that returns the row `$1` with the target column set to `$2`
/// (a real[], cast to the column's type) and the model column to `$3`, every
/// other column as it was: what the row trigger assigns to NEW.  Values pass
/// as parameters in binary, so every float arrives exactly.
#[pg_extern(stable, parallel_safe)]
fn _embed_row_write(
    rel: pg_sys::Oid,
    target_column: &str,
    target_type: &str,
    model_column: Option<&str>,
) -> String {
    // NEW is a record whose structure an assignment replaces, so the model
    // column is cast to its own type as well.
    let (names, types) = Spi::get_two_with_args::<Vec<String>, Vec<String>>(
        "SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY a.attnum), \
                pg_catalog.array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) \
           FROM pg_catalog.pg_attribute a \
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
        &[rel.into()],
    )
    .unwrap_or((None, None));
    let list: Vec<String> = names
        .unwrap_or_default()
        .iter()
        .zip(types.unwrap_or_default())
        .map(|(n, ty)| {
            if n == target_column {
                format!("$2::{target_type}")
            } else if Some(n.as_str()) == model_column {
                format!("$3::{ty}")
            } else {
                format!("r.{}", rule::quote_ident(n))
            }
        })
        .collect();
    format!("SELECT {} FROM (SELECT ($1).*) r", list.join(", "))
}

/// Raises `42804` unless the configured model's vectors fit the target
/// column (`target_dims` NULL: any length).  Loads the model if needed.
#[pg_extern(volatile, parallel_safe)]
fn _embed_check_dims(
    rel: pg_sys::Oid,
    target_column: &str,
    target_type: &str,
    target_dims: Option<i32>,
) {
    if target_dims.is_none() {
        return;
    }
    let dims = backend::with_embedder(|e| e.info().dimensions) as i32;
    rule::check_dimensions(
        &relation_name(rel),
        &shown(target_column),
        target_type,
        target_dims,
        dims,
    )
    .or_report();
}

/// Rows of a statement per `embed_texts` call in the statement trigger.
#[pg_extern(stable, parallel_safe)]
fn _embed_rows_per_call() -> i32 {
    rule::rows_per_call(gucs::BATCH_MAX_TEXTS.get()) as i32
}

/// The actions, for tests and for anyone reading the rule from SQL: every
/// row state under every event (the model column `current`, `other`, `null`
/// or `none`).
#[pg_extern(immutable, parallel_safe)]
fn _embed_rule() -> TableIterator<
    'static,
    (
        name!(event, &'static str),
        name!(has_text, bool),
        name!(has_vector, bool),
        name!(label, &'static str),
        name!(action, &'static str),
    ),
> {
    let mut rows = Vec::new();
    for (name, event) in [
        ("inserted", Event::Inserted),
        ("text_changed", Event::TextChanged),
        ("text_unchanged", Event::TextUnchanged),
        ("stored", Event::Stored),
    ] {
        for state in rule::states(true).into_iter().chain(rule::states(false)) {
            let label = match state.label {
                Label::NoColumn => "none",
                Label::Null => "null",
                Label::Current => "current",
                Label::Other => "other",
            };
            let action: Action = rule::action(event, state);
            rows.push((name, state.text, state.vector, label, action.as_str()));
        }
    }
    TableIterator::new(rows)
}
