//! The resumable backfill's steps: `_backfill_start` and `_backfill_batch`,
//! which the procedure `embed_backfill` (sql/columns.sql) calls around its
//! COMMITs, one transaction per batch.
//!
//! What they decide is in the core: the arguments, the scan's walk and the
//! notices in `clinembed_core::rows::backfill`, the tables and statements in
//! `clinembed_core::rows::columns`.  Here they read the run's row and the catalog,
//! run the statements and record progress.  Both are declared with
//! `SET search_path = pg_catalog, pg_temp`: what they run names the
//! extension's objects by schema and finds everything else in pg_catalog,
//! and relation names print schema-qualified.  Only the statement that
//! embeds a batch runs under the caller's search_path, so the table's own
//! triggers see what they would for the caller's own UPDATE.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use clinembed_core::rows::backfill::{self as step, Resume};
use clinembed_core::rows::columns as rule;
use clinembed_core::rows::statements::{self, RunStatements};
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::errors::{report, OrReport};
use crate::pg::catalog::{extension_schema, qualified, relation_name, Cached};
use crate::pg::security::Settings;
use crate::pg::spi::{self, During};
use crate::write::columns::{columns, raise_constraint_violation};

/// Starts a backfill run: checks the arguments, the columns and the model
/// against the target column; refuses to start while a backfill of the
/// relation with another model runs (starts on one relation are serialised
/// by a transaction advisory lock); counts the rows to embed and records
/// the run.  Returns its id.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn _backfill_start(
    rel: Option<pg_sys::Oid>,
    source_column: Option<&str>,
    target_column: Option<&str>,
    batch_size: Option<i32>,
    model_column: Option<&str>,
) -> i64 {
    refuse_in_recovery();
    let batch_size = step::check_batch_size(batch_size).or_report();
    let rel = rel.unwrap_or_else(|| report(step::no_relation()));
    let target = crate::write::columns::target(rel, source_column, target_column, model_column);
    // the column checks refuse a NULL source or target
    let cols = columns(
        source_column.unwrap_or_default(),
        target_column.unwrap_or_default(),
        model_column,
    );
    let model_id = crate::backend::model_id();
    crate::write::columns::check_dims(
        rel,
        &cols.target,
        &target.type_name,
        target.dims,
        crate::gucs::long_text(),
    );
    let relation = relation_name(rel);
    let schema = extension_schema();

    let rs = RunStatements::new(&schema);
    spi::execute(STEP, &rs.lock, &[(rel.to_u32() as i32).into()]);
    // after the lock, with a snapshot of its own: a run another start
    // committed while this one waited is seen
    let (pid, running_model) = spi::write_two::<i32, String>(
        STEP,
        &rs.other_model_running,
        &[rel.into(), model_id.as_str().into()],
    );
    if let (Some(pid), Some(running_model)) = (pid, running_model) {
        report(step::other_model_running(
            &relation,
            pid,
            &running_model,
            &model_id,
        ));
    }

    let mut total = 0i64;
    for table in crate::write::columns::backfill_tables(rel, &cols) {
        let statements =
            statements::backfill_statements(&qualified(table), &cols, &target.type_name, &model_id)
                .or_report();
        total += spi::write_one::<i64>(STEP, &statements.count, &[]).unwrap_or(0);
    }
    let run = spi::write_one::<i64>(
        STEP,
        &rs.start,
        &[
            rel.into(),
            cols.source.as_str().into(),
            cols.target.as_str().into(),
            model_column.into(),
            model_id.as_str().into(),
            batch_size.into(),
            total.into(),
        ],
    )
    .unwrap_or_else(|| no_row("recording the run"));
    notice(&step::started_notice(&relation, total, &model_id));
    run
}

/// One batch of run `run` of this backend, in the caller's transaction:
/// takes up to the run's batch size of rows that need work from where its
/// scan stands (SKIP LOCKED), embeds them in the library, writes
/// vector and model identity, and records the progress.  Returns false, and
/// marks the run finished, when a whole pass over the tables found nothing
/// more to do.  `caller_search_path` is the search_path the batch statement
/// runs under.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn _backfill_batch(run: Option<i64>, caller_search_path: Option<&str>) -> bool {
    refuse_in_recovery();
    let rs = run_statements();
    let r = Run::read(&rs, run).unwrap_or_else(|| {
        // SAFETY: MyProcPid is set at backend start and never changes.
        report(step::not_a_run(run, unsafe { pg_sys::MyProcPid }))
    });
    let shape = Resolved::of(&r);
    let (target, relation, tables) = (&shape.target, &shape.relation, &shape.tables);
    let at = match r.scan_relid {
        None => Resume::Fresh,
        Some(t) => tables
            .iter()
            .position(|x| x.oid == t)
            .map_or(Resume::Lost, Resume::At),
    };
    let mut scan = step::resume(at, tables.len(), r.scan_found);
    while let Some(s) = scan {
        let table = &tables[s.table];
        let from = match (s.from_start, r.scan_tid) {
            (false, Some(tid)) => tid,
            _ => pg_sys::ItemPointerData::default(),
        };
        let (written, last) = embed_batch(
            table,
            (&r.target_column, target),
            from,
            r.batch_size,
            &r.model_id,
            caller_search_path,
        );
        if written > 0 {
            let done = r.rows_done + written;
            let elapsed = spi::write_one::<f64>(
                STEP,
                &rs.record_batch,
                &[r.id.into(), done.into(), table.oid.into(), last.into()],
            )
            .unwrap_or_else(|| no_row("recording the batch"));
            notice(&step::progress_notice(
                relation,
                done,
                r.rows_total,
                elapsed,
            ));
            return true;
        }
        scan = step::after_empty(s, tables.len());
    }
    let elapsed = spi::write_one::<f64>(STEP, &rs.finish, &[r.id.into()])
        .unwrap_or_else(|| no_row("finishing the run"));
    notice(&step::finished_notice(relation, r.rows_done, elapsed));
    false
}

/// What a run's batches need of the catalog (its target column, the tables
/// of its relation tree, their statements and names, the extension's
/// schema), resolved at the run's first batch in this backend and kept for
/// the next ones until the catalog changes (`Cached`).
struct Resolved {
    target: rule::Target,
    relation: String,
    tables: Vec<Table>,
}

/// One table of a run's relation tree.
struct Table {
    oid: pg_sys::Oid,
    /// As messages show it.
    name: String,
    statements: statements::BackfillStatements,
}

thread_local! {
    static RUNS: Cached<(), RunStatements> = Cached::new();
    static RESOLVED: Cached<i64, Resolved> = Cached::new();
}

/// The statements on the runs' table, in the extension's schema.
fn run_statements() -> Rc<RunStatements> {
    RUNS.with(|c| c.get((), || RunStatements::new(&extension_schema())))
}

impl Resolved {
    /// Run `r`'s shape: the one resolved for it, or resolved now.
    fn of(r: &Run) -> Rc<Resolved> {
        RESOLVED.with(|c| c.get(r.id, || Resolved::resolve(r)))
    }

    fn resolve(r: &Run) -> Resolved {
        let model_column = r.model_column.as_deref();
        let target = crate::write::columns::target(
            r.relid,
            Some(&r.source_column),
            Some(&r.target_column),
            model_column,
        );
        let cols = columns(&r.source_column, &r.target_column, model_column);
        let tables = crate::write::columns::backfill_tables(r.relid, &cols)
            .into_iter()
            .map(|oid| Table {
                oid,
                name: relation_name(oid),
                statements: statements::backfill_statements(
                    &qualified(oid),
                    &cols,
                    &target.type_name,
                    &r.model_id,
                )
                .or_report(),
            })
            .collect();
        Resolved {
            relation: relation_name(r.relid),
            target,
            tables,
        }
    }
}

/// An unfinished run of this backend, as its row records it.
struct Run {
    id: i64,
    relid: pg_sys::Oid,
    source_column: String,
    target_column: String,
    model_column: Option<String>,
    model_id: String,
    batch_size: i32,
    rows_total: i64,
    rows_done: i64,
    scan_relid: Option<pg_sys::Oid>,
    scan_tid: Option<pg_sys::ItemPointerData>,
    scan_found: bool,
}

impl Run {
    fn read(rs: &RunStatements, run: Option<i64>) -> Option<Run> {
        let id = run?;
        let sql = &rs.read;
        Spi::connect_mut(|c| {
            let table = c.update(sql.as_str(), Some(1), &[id.into()])?;
            if table.is_empty() {
                return Ok(None);
            }
            let row = table.first();
            Ok::<_, pgrx::spi::Error>(Some(Run {
                id,
                relid: row.get(1)?.unwrap_or_default(),
                source_column: row.get(2)?.unwrap_or_default(),
                target_column: row.get(3)?.unwrap_or_default(),
                model_column: row.get(4)?,
                model_id: row.get(5)?.unwrap_or_default(),
                batch_size: row.get(6)?.unwrap_or(1),
                rows_total: row.get(7)?.unwrap_or(0),
                rows_done: row.get(8)?.unwrap_or(0),
                scan_relid: row.get(9)?,
                scan_tid: row.get(10)?,
                scan_found: row.get(11)?.unwrap_or(false),
            }))
        })
        .unwrap_or_else(|e| spi::failed(During::Backfill("reading the run"), e))
    }
}

/// Takes one batch of `table`'s rows that need work after `from`, embeds
/// them (`engine::embed`) and writes them with one UPDATE, under the
/// caller's search_path: the rows it wrote and the last ctid it took.  A
/// constraint violation is raised again without the failing row (see
/// [`raise_constraint_violation`]).
fn embed_batch(
    table: &Table,
    target: (&str, &rule::Target),
    from: pg_sys::ItemPointerData,
    batch_size: i32,
    model_id: &str,
    caller_search_path: Option<&str>,
) -> (i64, Option<pg_sys::ItemPointerData>) {
    let (statements, table_name) = (&table.statements, &table.name);
    // The caller's search_path for the table's own triggers, in a nest level
    // rolled back after the statement: what they set (even at session level)
    // does not reach the steps' own statements, nor outlive the call.
    let caller = caller_search_path.map(|path| Settings::with(&[("search_path", path)]));
    let result = PgTryBuilder::new(AssertUnwindSafe(|| {
        Spi::connect_mut(|c| {
            let rows = c
                .update(
                    statements.read.as_str(),
                    None,
                    &[from.into(), (batch_size as i64).into()],
                )?
                .map(|r| {
                    Ok((
                        r.get::<pg_sys::ItemPointerData>(1)?.unwrap_or_default(),
                        r.get::<String>(2)?,
                    ))
                })
                .collect::<Result<Vec<_>, pgrx::spi::Error>>()?;
            if rows.is_empty() {
                return Ok::<_, pgrx::spi::Error>((0, None));
            }
            let (tids, texts): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
            let has: Vec<bool> = texts.iter().map(Option::is_some).collect();
            let vectors = crate::write::engine::embed(table.oid, target.0, target.1, &texts);
            let last = tids
                .iter()
                .copied()
                .max_by_key(|t| pgrx::itemptr::item_pointer_get_both(*t));
            let written = c
                .update(
                    statements.write.as_str(),
                    None,
                    &[
                        tids.into(),
                        has.into(),
                        vectors.flat.into(),
                        vectors.dims.into(),
                        model_id.into(),
                    ],
                )?
                .len() as i64;
            Ok((written, last))
        })
    }))
    .catch_others(|caught| match &caught {
        CaughtError::PostgresError(e) | CaughtError::ErrorReport(e)
            if crate::write::columns::is_integrity_violation(e.sql_error_code()) =>
        {
            raise_constraint_violation(e.sql_error_code(), e.message(), table_name)
        }
        _ => caught.rethrow(),
    })
    .execute();
    drop(caller);
    match result {
        Ok(done) => done,
        Err(e) => spi::failed(During::Backfill("embedding a batch"), e),
    }
}

/// Raises `25006` on a server in recovery, before any statement: SPI's
/// writes would fail there with an internal error, as they take a
/// transaction id first.
fn refuse_in_recovery() {
    // SAFETY: reads shared recovery state; callable in any backend.
    if unsafe { pg_sys::RecoveryInProgress() } {
        report(step::in_recovery());
    }
}

/// A progress NOTICE: names, counts and times only (built in
/// `clinembed_core::rows::backfill`).
fn notice(progress: &str) {
    pgrx::notice!("{progress}");
}

/// Each backfill statement's failure names the step.
const STEP: During = During::Backfill("a backfill statement");

/// A statement that must return a row returned none.
fn no_row(what: &'static str) -> ! {
    spi::failed(During::Backfill(what), "no row returned")
}
