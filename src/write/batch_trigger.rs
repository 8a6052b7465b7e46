//! The statement trigger, `embed_batch_trigger`, in Rust: AFTER INSERT ...
//! REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT (or AFTER UPDATE
//! with OLD TABLE too).  Its transition tables reach its own SPI connection
//! through `SPI_register_trigger_data`; it reads the keys and texts of the
//! statement's rows that need work in one pass through a cursor,
//! `rows_per_call` rows at a time, embeds them in the library, and writes
//! each call's vectors back by primary key with one prepared UPDATE, as the
//! role whose statement fired it.

use std::panic::AssertUnwindSafe;

use clinembed_core::rows::columns as rule;
use clinembed_core::rows::statements;
use clinembed_core::rows::statements::BatchStatements;
use pgrx::prelude::*;
use pgrx::spi::SpiError;
use pgrx::{pg_sys, PgBuiltInOids, PgOid};

use crate::errors::{report, OrReport};
use crate::pg::catalog::{self, shown};
use crate::pg::security::Settings;
use crate::pg::spi::{self, During};
use crate::write::columns;
use crate::write::trigger::{refuse_misfire, trigger_entry, Fires};
use crate::{backend, gucs, write::engine};

const TRIGGER: &str = "embed_batch_trigger";

trigger_entry!(
    pg_finfo_embed_batch_trigger_wrapper,
    embed_batch_trigger_wrapper,
    embed_batch_trigger_body_wrapper,
    "embed_batch_trigger",
    "It was called as a function, with no statement's rows to embed.",
    "CREATE TRIGGER ... AFTER INSERT ON t REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('source', 'target'); to embed stored rows, CALL embed_backfill(...)."
);

/// Statement trigger for bulk work (INSERT ... SELECT, COPY): see the
/// module's documentation.  `search_path` is pinned by the function's own
/// SET clause, for its statements and the casts they run.
#[pg_trigger(
    sql = r#"CREATE FUNCTION "embed_batch_trigger"() RETURNS TRIGGER LANGUAGE c SET search_path = pg_catalog, pg_temp AS 'MODULE_PATHNAME', 'embed_batch_trigger_wrapper';"#
)]
fn embed_batch_trigger_body<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    let insert = refuse_misfire(
        trigger,
        TRIGGER,
        Fires {
            before: false,
            row: false,
        },
        "For one row at a time use embed_trigger, a BEFORE ... FOR EACH ROW trigger.",
    )?;
    let rel = trigger.relid()?;
    let name = trigger.name()?;
    let args = trigger.extra_args()?.into_iter().map(Some).collect();
    let (source, target_column, model) = columns::trigger_args(TRIGGER, rel, name, args);
    let (source, target_column) = (
        source.unwrap_or_default(),
        target_column.unwrap_or_default(),
    );
    let target = columns::target(rel, Some(&source), Some(&target_column), model.as_deref());
    let cols = columns::columns(&source, &target_column, model.as_deref());
    let statements = statements(
        rel,
        trigger.trigger(),
        name,
        insert,
        &cols,
        &target.type_name,
    );
    // $1 bool[], $2 text[], $3 real[], $4 int4, $5 text, $6.. text[]
    // (`statements::BatchStatements::write`).
    let key_columns = statements.key_columns;
    let text_array = PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID);
    let mut write_types = vec![
        PgOid::BuiltIn(PgBuiltInOids::BOOLARRAYOID),
        text_array,
        PgOid::BuiltIn(PgBuiltInOids::FLOAT4ARRAYOID),
        PgOid::BuiltIn(PgBuiltInOids::INT4OID),
        PgOid::BuiltIn(PgBuiltInOids::TEXTOID),
    ];
    write_types.extend(std::iter::repeat_n(text_array, key_columns - 1));
    let td = trigger.trigger_data() as *const pg_sys::TriggerData as *mut pg_sys::TriggerData;
    let table = catalog::relation_name(rel);
    let result = PgTryBuilder::new(AssertUnwindSafe(|| {
        Spi::connect_mut(|c| {
            // SAFETY: the trigger's own data, valid while it runs, given to
            // the connection it opened.
            if unsafe { pg_sys::SPI_register_trigger_data(td) } != pg_sys::SPI_OK_TD_REGISTER as i32
            {
                return Err(SpiError::SpiError(pgrx::spi::SpiErrorCodes::Unconnected));
            }
            let per_call = rule::rows_per_call(gucs::BATCH_MAX_TEXTS.get());
            let mut cursor = c.try_open_cursor(statements.read.as_str(), &[])?;
            let write = c.prepare_mut(statements.write.as_str(), &write_types)?;
            // Looked up at the first call with rows: a statement with none
            // loads no model.
            let mut model_id = None;
            loop {
                // A call's rows: each key column as text, then the text.
                let (keys, texts) = {
                    let _exact = Settings::with(statements::KEY_ROUND_TRIP_SETTINGS);
                    let mut keys: Vec<Vec<String>> = vec![Vec::new(); key_columns];
                    let mut texts = Vec::new();
                    for row in cursor.fetch(per_call as _)? {
                        for (i, k) in keys.iter_mut().enumerate() {
                            k.push(row.get::<String>(i + 1)?.unwrap_or_default());
                        }
                        texts.push(row.get::<String>(key_columns + 1)?);
                    }
                    (keys, texts)
                };
                // SAFETY: the call's rows are copied out above; pgrx keeps a
                // cursor's results until the connection ends, so they are
                // freed here to hold one call's rows at a time.
                unsafe { pg_sys::SPI_freetuptable(pg_sys::SPI_tuptable) };
                if texts.is_empty() {
                    return Ok(());
                }
                let model_id: &str = model_id.get_or_insert_with(backend::model_id);
                let vectors = engine::embed(rel, &target_column, &target, &texts);
                let has: Vec<bool> = texts.iter().map(Option::is_some).collect();
                let done = texts.len() < per_call;
                // $1 has, $2 the first key column, $3..$5, $6.. the others.
                let mut keys = keys.into_iter().map(Into::into);
                let mut args: Vec<pgrx::datum::DatumWithOid<'_>> = vec![
                    has.into(),
                    keys.next().unwrap_or_else(|| Vec::<String>::new().into()),
                    vectors.flat.into(),
                    vectors.dims.into(),
                    model_id.into(),
                ];
                args.extend(keys);
                c.update(&write, None, &args)?;
                if done {
                    return Ok(());
                }
            }
        })
    }))
    .catch_others(|caught| match &caught {
        pg_sys::panic::CaughtError::PostgresError(e)
        | pg_sys::panic::CaughtError::ErrorReport(e)
            if columns::is_integrity_violation(e.sql_error_code()) =>
        {
            columns::raise_constraint_violation(e.sql_error_code(), e.message(), &table)
        }
        _ => caught.rethrow(),
    })
    .execute();
    result.unwrap_or_else(|e| spi::failed(During::BatchTrigger, e));
    Ok(None)
}

/// The trigger's statements (see `statements::batch_statements`),
/// after checking what it needs: transition tables, a primary key, and the
/// grants its write-back UPDATE uses.  The current model identity is looked
/// up only on INSERT, where the rule compares labels with it.
fn statements(
    rel: pg_sys::Oid,
    trigger: &pg_sys::Trigger,
    name: &str,
    insert: bool,
    cols: &rule::Columns,
    target_type: &str,
) -> BatchStatements {
    let fail = |kind, message: &str, detail: String, hint: String| -> ! {
        report(
            clinembed_core::Error::new(kind, message)
                .detail(detail)
                .hint(hint),
        )
    };
    let table = catalog::relation_name(rel);
    // SAFETY: the trigger's catalog entry, NUL-terminated names or NULL.
    let named = |p: *mut std::ffi::c_char| {
        (!p.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        })
    };
    let (new_rows, old_rows) = match (named(trigger.tgnewtable), named(trigger.tgoldtable)) {
        (Some(n), o) if insert || o.is_some() => (n, o.filter(|_| !insert)),
        (n, _) => fail(
            clinembed_core::ErrorKind::TriggerProtocol,
            "embed_batch_trigger needs transition tables",
            format!(
                "Trigger {} on {table} has no {}.",
                shown(name),
                if n.is_none() { "NEW TABLE" } else { "OLD TABLE" }
            ),
            "Create it with REFERENCING NEW TABLE AS new_rows (AFTER INSERT), or REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows (AFTER UPDATE).".into(),
        ),
    };
    let keys = catalog::primary_key(rel)
        .unwrap_or_else(|| {
            fail(
                clinembed_core::ErrorKind::InvalidTable,
                "embed_batch_trigger needs a primary key",
                format!("Table {table} has none; the trigger writes the vectors back to the new rows by key."),
                "Add a primary key, or use embed_trigger, a row trigger, which needs none.".into(),
            )
        });
    // The write-back is an UPDATE by the role whose statement fired the
    // trigger: it reads the key columns and sets the vector columns.
    let mut wanted: Vec<(&str, &str)> = keys.iter().map(|(k, _)| ("SELECT", k.as_str())).collect();
    wanted.push(("UPDATE", cols.target.as_str()));
    if let Some(m) = &cols.model {
        wanted.push(("UPDATE", m.as_str()));
    }
    let missing = catalog::missing_privileges(rel, &wanted);
    if !missing.is_empty() {
        let missing = missing.join(", ");
        let role = catalog::current_role();
        fail(
            clinembed_core::ErrorKind::Forbidden,
            &format!("embed_batch_trigger needs {missing}"),
            format!("It writes the vectors of the statement's rows into {table} with an UPDATE as role {role}."),
            format!("GRANT {missing} ON {table} TO {role}; or use embed_trigger, a row trigger, which needs no UPDATE."),
        );
    }
    let model_id = insert.then(backend::model_id);
    statements::batch_statements(
        &catalog::qualified(rel),
        &new_rows,
        old_rows.as_deref(),
        &keys,
        cols,
        target_type,
        model_id.as_deref(),
    )
    .or_report()
}
