//! The catalog reads and checks the triggers (`row_trigger`, `batch_trigger`,
//! `queue`), the backfill (`backfill`) and the queue workers share: trigger arguments, the target column and its
//! dimensions, primary keys, privileges, relation trees, and constraint
//! errors raised again without their row.
//!
//! What they decide lives in the core (`clinembed_core::rows::columns`): which rows
//! need work, the column and dimension checks, rows per call, and the
//! statements that read and write rows.  This module reads the catalog for
//! them (read-only SPI); a few of its functions are SQL functions too, for
//! the backfill's procedure and for tests.

use std::ffi::{CStr, CString};

use clinembed_core::rows::columns::{self as rule, Action, Columns, Event, Label, Row};
use clinembed_core::rows::statements;
use pgrx::prelude::*;

use crate::backend;
use crate::errors::OrReport;
use crate::pg::security::pinned;
use crate::pg::spi::{select_one, select_two};

extension_sql_file!(
    "../../sql/columns.sql",
    name = "columns",
    requires = [
        embed_text,
        embed_texts,
        embed_model_id,
        embed_model_info,
        _embed_needs_work,
        _embed_target,
        _backfill_start,
        _backfill_batch
    ]
);

/// An identifier quoted only where PostgreSQL would (as `format('%I')`), for
/// messages.
pub(crate) fn shown(name: &str) -> String {
    let c = CString::new(name).unwrap_or_default();
    // SAFETY: quote_identifier reads a NUL-terminated string and returns it
    // or a palloc'd quoted copy, both valid for this call.
    unsafe { CStr::from_ptr(pg_sys::quote_identifier(c.as_ptr())) }
        .to_string_lossy()
        .into_owned()
}

pub(crate) fn relation_name(rel: pg_sys::Oid) -> String {
    select_one::<String>(statements::RELATION_NAME, &[rel.into()])
        .unwrap_or_else(|| format!("relation {}", rel.to_u32()))
}

pub(crate) fn columns(source: &str, target: &str, model: Option<&str>) -> Columns {
    Columns {
        source: source.into(),
        target: target.into(),
        model: model.map(Into::into),
    }
}

/// A relation's name, schema-qualified and quoted, for statements.
pub(crate) fn qualified(rel: pg_sys::Oid) -> String {
    select_one::<String>(statements::QUALIFIED_NAME, &[rel.into()]).unwrap_or_else(|| {
        crate::errors::report(
            clinembed_core::Error::new(
                clinembed_core::ErrorKind::NotFound,
                "relation does not exist",
            )
            .detail(format!("No relation has oid {}.", rel.to_u32()))
            .hint("It was dropped while clinembed was using it."),
        )
    })
}

/// The extension's schema, quoted, for statements that call its functions.
pub(crate) fn extension_schema() -> String {
    select_one::<String>(statements::EXTENSION_SCHEMA, &[]).unwrap_or_else(|| "public".into())
}

fn event(name: &str) -> Event {
    Event::parse(name).or_report()
}

/// The SQL condition true for the rows that need embedding or clearing under
/// `event` (`inserted`, `text_changed`, `stored`): the rule of
/// `clinembed_core::rows::columns::action`, state by state.  Columns are read as
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
    let columns = columns(source_column, target_column, model_column);
    statements::needs_work(self::event(event), &columns, alias, model_id).or_report()
}

/// What a row trigger does with one row: keep, embed or clear.
/// `operation` is `INSERT` or `UPDATE`; `label` is the model column's value
/// (None when NULL or when there is no model column, which
/// `has_model_column` tells apart).  The current model identity is looked up
/// only when the label decides.
pub(crate) fn row_action(
    operation: &str,
    has_text: bool,
    has_vector: bool,
    label: Option<&str>,
    text_changed: bool,
    has_model_column: bool,
) -> Action {
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
    match (has_model_column, label) {
        (false, _) => rule::action(event, row(Label::NoColumn)),
        (true, None) => rule::action(event, row(Label::Null)),
        (true, Some(value)) => {
            let (current, other) = (
                rule::action(event, row(Label::Current)),
                rule::action(event, row(Label::Other)),
            );
            if current == other || value != crate::backend::model_id() {
                other
            } else {
                current
            }
        }
    }
}

/// A trigger's arguments, checked: two or three column names (raises
/// otherwise).
pub(crate) fn trigger_args(
    function: &str,
    rel: pg_sys::Oid,
    trigger_name: &str,
    args: Vec<Option<String>>,
) -> (Option<String>, Option<String>, Option<String>) {
    if !(2..=3).contains(&args.len()) {
        crate::errors::report(
            clinembed_core::Error::new(
                clinembed_core::ErrorKind::InvalidArgument,
                format!("{function} takes two or three arguments"),
            )
            .detail(format!(
                "Trigger {} on {} passes {}.",
                shown(trigger_name),
                relation_name(rel),
                args.len()
            ))
            .hint(format!(
                "EXECUTE FUNCTION {function}('source_column', 'target_column' [, 'model_column'])"
            )),
        );
    }
    let mut args = args.into_iter();
    (
        args.next().flatten(),
        args.next().flatten(),
        args.next().flatten(),
    )
}

/// The column checks of the triggers and the backfill (see
/// `clinembed_core::rows::columns::check_columns`): how to cast a `real[]` into the
/// target column and how many dimensions it requires (NULL: any).
#[pg_extern(stable, parallel_safe)]
fn _embed_target(
    rel: pg_sys::Oid,
    source_column: Option<&str>,
    target_column: Option<&str>,
    model_column: Option<&str>,
) -> TableIterator<'static, (name!(target_type, String), name!(target_dims, Option<i32>))> {
    let target = target(rel, source_column, target_column, model_column);
    TableIterator::once((target.type_name, target.dims))
}

/// The column checks (raising their error), and the target column's type
/// and dimensions.
pub(crate) fn target(
    rel: pg_sys::Oid,
    source_column: Option<&str>,
    target_column: Option<&str>,
    model_column: Option<&str>,
) -> rule::Target {
    let lookup = |name: &str| {
        pinned(|| {
            Spi::connect(|client| {
                let row = client
                    .select(
                        statements::TARGET_COLUMN,
                        Some(1),
                        &[rel.into(), name.into()],
                    )
                    .ok()?
                    .first();
                Some(rule::ColumnType {
                    name: row.get::<String>(1).ok()??,
                    typname: row.get::<String>(2).ok()??,
                    category: row.get::<String>(3).ok()??.chars().next()?,
                    typmod: row.get::<i32>(4).ok()??,
                })
            })
        })
    };
    rule::check_columns(
        || relation_name(rel),
        source_column,
        target_column,
        model_column,
        shown,
        lookup,
    )
    .or_report()
}

/// Raises `42804` unless the configured model's vectors fit the target
/// column (`target_dims` None: any length).  Loads the model if needed.
pub(crate) fn check_dims(
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
        || relation_name(rel),
        &shown(target_column),
        target_type,
        target_dims,
        dims,
    )
    .or_report();
}

/// The primary key's columns of `rel`, in key order, with their types as
/// `format_type` prints them; None without a primary key.
pub(crate) fn primary_key(rel: pg_sys::Oid) -> Option<Vec<(String, String)>> {
    let (names, types) =
        select_two::<Vec<String>, Vec<String>>(statements::PRIMARY_KEY, &[rel.into()]);
    let keys: Vec<(String, String)> = names?.into_iter().zip(types?).collect();
    (!keys.is_empty()).then_some(keys)
}

/// The oid of `rel`'s primary key index, if it has one, from the relation
/// cache (no catalog query): what the queue trigger compares as well.
pub(crate) fn primary_key_index(rel: pg_sys::Oid) -> Option<pg_sys::Oid> {
    // SAFETY: `rel` names a relation the caller has found (relation_open
    // raises an error otherwise); the index list fills `rd_pkindex`, and the
    // relation is closed again when `relation` drops.
    let index = unsafe {
        let relation =
            pgrx::PgRelation::with_lock(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        pg_sys::list_free(pg_sys::RelationGetIndexList(relation.as_ptr()));
        (*relation.as_ptr()).rd_pkindex
    };
    (index != pg_sys::Oid::INVALID).then_some(index)
}

/// The tables a backfill of `rel` reads and writes (see
/// `clinembed_core::rows::columns::backfill_tables`): itself, its partitions and
/// its inheritance children, those with storage, by oid; raises for a
/// foreign table or one the role may not use.
pub(crate) fn backfill_tables(rel: pg_sys::Oid, columns: &Columns) -> Vec<pg_sys::Oid> {
    let members = relation_tree(rel);
    let wanted = rule::backfill_privileges(columns);
    let missing = |m: &rule::Member| missing_privileges(pg_sys::Oid::from(m.oid), &wanted);
    rule::backfill_tables(&relation_name(rel), &members, missing, current_role)
        .or_report()
        .into_iter()
        .map(pg_sys::Oid::from)
        .collect()
}

/// `rel` itself, its partitions and its inheritance children, by oid, as
/// the catalog describes them.
pub(crate) fn relation_tree(rel: pg_sys::Oid) -> Vec<rule::Member> {
    pinned(|| {
        Spi::connect(|c| {
            c.select(statements::RELATION_TREE, None, &[rel.into()])?
                .map(|row| {
                    Ok(rule::Member {
                        oid: row.get::<pg_sys::Oid>(1)?.unwrap_or_default().to_u32(),
                        name: row.get::<String>(2)?.unwrap_or_default(),
                        relkind: row
                            .get::<String>(3)?
                            .unwrap_or_default()
                            .chars()
                            .next()
                            .unwrap_or(' '),
                    })
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()
        })
    })
    .unwrap_or_else(|e| {
        crate::errors::report(
            clinembed_core::Error::new(
                clinembed_core::ErrorKind::Runtime,
                "the tables of a relation could not be read",
            )
            .detail(format!("SPI: {e}"))
            .hint("This is a bug in clinembed; please report it."),
        )
    })
}

/// Which of the column privileges `wanted` ((privilege, column) pairs) the
/// current role lacks on `rel`, as `SELECT (col)`, in the order given.
pub(crate) fn missing_privileges(rel: pg_sys::Oid, wanted: &[(&str, &str)]) -> Vec<String> {
    wanted
        .iter()
        .filter(|(privilege, column)| {
            !select_one::<bool>(
                statements::COLUMN_PRIVILEGE,
                &[rel.into(), (*column).into(), (*privilege).into()],
            )
            .unwrap_or(false)
        })
        .map(|(privilege, column)| format!("{privilege} ({})", shown(column)))
        .collect()
}

/// The current role's name, quoted as `%I` would.
/// A role's name, for messages.
pub(crate) fn role_name(role: pg_sys::Oid) -> String {
    select_one::<String>(statements::ROLE_NAME, &[role.into()])
        .unwrap_or_else(|| format!("role {}", role.to_u32()))
}

pub(crate) fn current_role() -> String {
    select_one::<String>(statements::CURRENT_ROLE, &[]).unwrap_or_default()
}

/// Whether `code` is of class 23, integrity constraint violation.
pub(crate) fn is_integrity_violation(code: pg_sys::errcodes::PgSqlErrorCode) -> bool {
    const CLASS_BITS: isize = (1 << 12) - 1;
    let class = pg_sys::errcodes::PgSqlErrorCode::ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION as isize;
    (code as isize) & CLASS_BITS == class
}

/// Raises a constraint violation met while writing vectors into `table`
/// again, with its SQLSTATE and message but without PostgreSQL's detail
/// ("Failing row contains (...)"), which would carry the row's note text to
/// the client and the server log.
pub(crate) fn raise_constraint_violation(
    code: pg_sys::errcodes::PgSqlErrorCode,
    message: &str,
    table: &str,
) -> ! {
    let (detail, hint) = clinembed_core::rows::backfill::constraint_violation_parts(table);
    crate::errors::report_as(code, message, detail, hint.into())
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
