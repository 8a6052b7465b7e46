//! The column checks the triggers (`row_trigger`, `batch_trigger`,
//! `queue`), the backfill (`backfill`) and the queue workers share: trigger
//! arguments, the target column and its dimensions, the tables a backfill
//! walks, and constraint errors raised again without their row.
//!
//! What they decide lives in the core (`clinembed_core::rows::columns`):
//! which rows need work, the column and dimension checks, rows per call.
//! The catalog reads they need are `crate::pg::catalog`'s; a few functions
//! here are SQL functions too, for the backfill's procedure and for tests.

use clinembed_core::inference::chunk::ChunkOptions;
use clinembed_core::rows::columns::{self as rule, Action, Columns, Event, Label, Row};
use clinembed_core::rows::statements;
use pgrx::prelude::*;

use crate::backend;
use crate::errors::OrReport;
use crate::pg::catalog::{current_role, missing_privileges, relation_name, relation_tree, shown};
use crate::pg::security::pinned;

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

pub(crate) fn columns(source: &str, target: &str, model: Option<&str>) -> Columns {
    Columns {
        source: source.into(),
        target: target.into(),
        model: model.map(Into::into),
    }
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

/// The chunk trigger's function name.
pub(crate) const CHUNKS_TRIGGER: &str = "embed_chunks_trigger";
/// How a chunk trigger is created.
pub(crate) const CHUNKS_USAGE: &str = "CREATE TRIGGER ... BEFORE INSERT OR UPDATE OR DELETE ON notes FOR EACH ROW EXECUTE FUNCTION embed_chunks_trigger('source_column', 'chunk_table' [, 'vector_column' [, 'model_column']]).";

/// The trigger's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkArgs {
    pub source: String,
    pub table: String,
    pub vector: String,
    pub model: Option<String>,
}

/// A trigger's arguments, checked: two to four (raises otherwise).
pub(crate) fn chunk_args(rel: pg_sys::Oid, trigger_name: &str, args: Vec<String>) -> ChunkArgs {
    if !(2..=4).contains(&args.len()) || args.iter().any(|a| a.trim().is_empty()) {
        crate::errors::report(
            clinembed_core::Error::new(
                clinembed_core::ErrorKind::InvalidArgument,
                "embed_chunks_trigger takes two to four arguments",
            )
            .detail(format!(
                "Trigger {} on {} passes {}.",
                shown(trigger_name),
                relation_name(rel),
                args.len()
            ))
            .hint(CHUNKS_USAGE),
        );
    }
    let mut a = args.into_iter();
    ChunkArgs {
        source: a.next().unwrap_or_default(),
        table: a.next().unwrap_or_default(),
        vector: a
            .next()
            .unwrap_or_else(|| clinembed_core::rows::chunks::DEFAULT_VECTOR_COLUMN.into()),
        model: a.next(),
    }
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
/// column (`target_dims` None: any length): its dimensions, or twice them
/// under `long_text` pooled by `mean_max`.  Loads the model if needed.
pub(crate) fn check_dims(
    rel: pg_sys::Oid,
    target_column: &str,
    target_type: &str,
    target_dims: Option<i32>,
    long_text: Option<ChunkOptions>,
) {
    if target_dims.is_none() {
        return;
    }
    let dims = backend::with_embedder(|e| e.info().dimensions);
    let dims = long_text.map_or(dims, |c| c.pooling.dims(dims)) as i32;
    rule::check_dimensions(
        || relation_name(rel),
        &shown(target_column),
        target_type,
        target_dims,
        dims,
    )
    .or_report();
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
