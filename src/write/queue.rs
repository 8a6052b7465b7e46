//! The embedding queue: its trigger, the wake-up at commit, and the SQL
//! functions around it.  The workers that drain it are in `worker.rs`;
//! what the trigger and the workers decide is in
//! `clinembed_core::rows::queue` (over the one rule of `clinembed_core::rows::columns`).
//!
//! `embed_queue_trigger('source', 'target' [, 'model_column'])`, BEFORE
//! INSERT OR UPDATE ... FOR EACH ROW, runs no inference: where the rule says
//! *embed*, it clears the row's vector and model identity and records the
//! row's primary key in `embed_queue`, in the writing transaction.  The
//! queue holds keys, never note text.  The queue belongs to the extension's
//! owner: the trigger writes it as that role, for the key of the row that
//! fired it only, so no role can queue rows of a table it cannot write.

use std::cell::{Cell, RefCell};

use clinembed_core::rows::columns::Columns;
use clinembed_core::rows::queue as q;
use clinembed_core::rows::statements::{self, QueueStatements};
use clinembed_core::{Error, ErrorKind};
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use pgrx::{PgBuiltInOids, PgOid, PgTupleDesc};

use crate::bgworker::registry;
use crate::errors::report;
use crate::pg::catalog;
use crate::pg::security::{as_role, as_role_with, pinned, Settings, KEY_TEXT_SETTINGS};
use crate::pg::spi::{self, During};
use crate::pg::tuple::{attribute, output};
use crate::write::columns;
use crate::write::trigger::{refuse_update_of_without_keys, trigger_entry, RowFire};

const TRIGGER: &str = "embed_queue_trigger";

thread_local! {
    /// This transaction queued rows: wake a worker when it commits.
    static PENDING: Cell<bool> = const { Cell::new(false) };
    static CALLBACK: Cell<bool> = const { Cell::new(false) };
    /// The enqueue statement, prepared once per extension install.
    static ENQUEUE: RefCell<Option<(Queue, OwnedPreparedStatement)>> =
        const { RefCell::new(None) };
    /// Per trigger: the column numbers it was checked with.
    static CHECKED: RefCell<Vec<Checked>> = const { RefCell::new(Vec::new()) };
}

/// Where the queue is: the extension's schema (quoted) and the queue
/// table's owner.
#[derive(Clone)]
pub(crate) struct Queue {
    pub schema: String,
    pub owner: pg_sys::Oid,
    /// The queue table's oid.
    pub relid: pg_sys::Oid,
}

/// The installed extension's oid (InvalidOid when it is not).
fn extension_oid() -> pg_sys::Oid {
    // SAFETY: a catalog lookup by name; missing_ok, so it raises nothing.
    unsafe { pg_sys::get_extension_oid(c"clinembed".as_ptr(), true) }
}

/// The queue of the installed extension.
pub(crate) fn queue() -> Queue {
    let ext = extension_oid();
    let row = pinned(|| {
        Spi::connect(|c| {
            let r = c
                .select(statements::QUEUE_TABLE, Some(1), &[ext.into()])?
                .first();
            if r.is_empty() {
                return Ok(None);
            }
            Ok::<_, pgrx::spi::SpiError>(Some((
                r.get::<String>(1)?,
                r.get::<pg_sys::Oid>(2)?,
                r.get::<pg_sys::Oid>(3)?,
            )))
        })
    })
    .ok()
    .flatten();
    match row {
        Some((Some(schema), Some(owner), Some(relid))) => Queue {
            schema,
            owner,
            relid,
        },
        _ => report(
            Error::new(ErrorKind::NotFound, "the embedding queue does not exist")
                .detail("Extension clinembed has no embed_queue table in this database.")
                .hint("ALTER EXTENSION clinembed UPDATE installs it."),
        ),
    }
}

/// The statements on the queue's tables, in the installed extension's schema.
pub(crate) fn queue_statements() -> QueueStatements {
    QueueStatements::new(&queue().schema)
}

/// Wakes a worker for this database when the transaction commits.
pub(crate) fn wake_at_commit() {
    // The registry is attached now, while an error is still an ordinary
    // error; after commit none may be raised.
    registry::attach();
    PENDING.with(|p| p.set(true));
    if !CALLBACK.with(|c| c.replace(true)) {
        // SAFETY: registers a function of this library for the life of the
        // backend.
        unsafe { pg_sys::RegisterXactCallback(Some(at_transaction_end), std::ptr::null_mut()) };
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn at_transaction_end(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    match event {
        // A prepared transaction's keys appear at COMMIT PREPARED, which
        // runs no callback: the worker woken at PREPARE looks again until
        // it finds them (see the worker's PREPARED_POLL_MS).
        pg_sys::XactEvent::XACT_EVENT_COMMIT | pg_sys::XactEvent::XACT_EVENT_PREPARE
            if PENDING.with(|p| p.replace(false)) =>
        {
            // SAFETY: this backend's database.
            let datid = unsafe { pg_sys::MyDatabaseId }.to_u32();
            // Nothing here raises an error: the slots are attached and only
            // read, and a worker that cannot start is noted as wanted.
            let _ = std::panic::catch_unwind(|| registry::wake(datid));
        }
        pg_sys::XactEvent::XACT_EVENT_ABORT | pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT => {
            PENDING.with(|p| p.set(false))
        }
        _ => {}
    }
}

/// Queues `key` of table `rel` (a new text version), printed under the
/// primary key index `pkey`.
pub(crate) fn enqueue(rel: pg_sys::Oid, key: Vec<String>, pkey: pg_sys::Oid) {
    // The statement is prepared once per backend and kept while its queue
    // table exists (a syscache probe per row, not a catalog scan): the
    // extension dropped and created again has a new one.
    let stale = ENQUEUE.with(|e| {
        e.borrow().as_ref().is_none_or(|(queue, _)| {
            // SAFETY: a syscache probe by oid.
            !unsafe {
                pg_sys::SearchSysCacheExists(
                    pg_sys::SysCacheIdentifier::RELOID as i32,
                    queue.relid.into(),
                    pg_sys::Datum::from(0),
                    pg_sys::Datum::from(0),
                    pg_sys::Datum::from(0),
                )
            }
        })
    });
    if stale {
        let queue = queue();
        let sql = statements::enqueue_statement(&queue.schema);
        // planned under the search_path it is run with (in as_role)
        let stmt = pinned(|| {
            Spi::connect(|c| {
                c.prepare_mut(
                    sql.as_str(),
                    &[
                        PgOid::BuiltIn(PgBuiltInOids::OIDOID),
                        PgOid::BuiltIn(PgBuiltInOids::TEXTARRAYOID),
                        PgOid::BuiltIn(PgBuiltInOids::OIDOID),
                    ],
                )
                .map(|s| s.keep())
            })
        })
        .unwrap_or_else(|e| spi::failed(During::Queue, e));
        ENQUEUE.with(|e| *e.borrow_mut() = Some((queue, stmt)));
    }
    ENQUEUE.with(|e| {
        let cached = e.borrow();
        let (queue, stmt) = cached.as_ref().expect("prepared above");
        as_role(queue.owner, || {
            Spi::connect_mut(|c| {
                c.update(stmt, None, &[rel.into(), key.into(), pkey.into()])
                    .map(|_| ())
            })
        })
        .unwrap_or_else(|e| spi::failed(During::Queue, e));
    });
    wake_at_commit();
}

/// The checks a trigger passed, valid while the table's columns and primary
/// key stay as they were.
struct Checked {
    trigger: pg_sys::Oid,
    /// (attnum, type, typmod) of source, target and model columns.
    shape: Vec<(i16, pg_sys::Oid, i32)>,
    /// The primary key's index.
    pk_index: pg_sys::Oid,
    keys: Vec<i16>,
    /// Every key column prints the same under any session settings
    /// (`clinembed_core::rows::queue::key_text_is_stable`).
    stable: bool,
}

trigger_entry!(
    pg_finfo_embed_queue_trigger_wrapper,
    embed_queue_trigger_wrapper,
    embed_queue_trigger_body_wrapper,
    "embed_queue_trigger",
    "It was called as a function, with no row to queue.",
    "CREATE TRIGGER ... BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION embed_queue_trigger('source', 'target'); to queue stored rows, call embed_queue_enqueue('t')."
);

/// Queue trigger: BEFORE INSERT OR UPDATE [OF source] ... FOR EACH ROW
/// EXECUTE FUNCTION embed_queue_trigger('source', 'target' [, 'model_column']).
/// Runs no inference; a worker embeds the row after the transaction commits.
///
/// The catalog reads and the enqueue it runs go through the pinned helpers
/// of `crate::pg::security`: the writer's own `search_path`, or one a database
/// owner set, reaches none of its statements.  A row that needs no work
/// runs no statement, and pays for no pinning.
#[pg_trigger(
    sql = r#"CREATE FUNCTION "embed_queue_trigger"() RETURNS TRIGGER LANGUAGE c AS 'MODULE_PATHNAME', 'embed_queue_trigger_wrapper';"#
)]
fn embed_queue_trigger_body<'a>(
    trigger: &'a PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, PgTriggerError> {
    let fire = RowFire::new(
        trigger,
        TRIGGER,
        "CREATE TRIGGER ... BEFORE INSERT OR UPDATE ON t FOR EACH ROW EXECUTE FUNCTION embed_queue_trigger('source', 'target').",
    )?;
    let rel = fire.rel;
    // SAFETY: the open relation's index list, read into its relcache entry.
    let pk_index = unsafe {
        let relation = trigger.trigger_data().tg_relation;
        pg_sys::RelationGetIndexList(relation);
        (*relation).rd_pkindex
    };
    // SAFETY: the relation's own descriptor, not freed by this wrapper.
    let desc = unsafe { PgTupleDesc::from_pg_unchecked(fire.desc) };
    let tgoid = fire.oid();
    let keys = CHECKED.with(|c| {
        c.borrow()
            .iter()
            .find(|k| k.trigger == tgoid && k.shape == fire.shape && k.pk_index == pk_index)
            .map(|k| (k.keys.clone(), k.stable))
    });
    let (keys, stable) = match keys {
        Some(keys) => keys,
        None => {
            columns::target(
                rel,
                fire.source.as_deref(),
                fire.target.as_deref(),
                fire.model.as_deref(),
            );
            let primary = catalog::primary_key(rel)
                .unwrap_or_else(|| {
                    report(
                        Error::new(ErrorKind::InvalidTable, "embed_queue_trigger needs a primary key")
                            .detail(format!(
                                "Table {} has none; the queue records rows by key.",
                                catalog::relation_name(rel)
                            ))
                            .hint("Add a primary key, or use embed_trigger, which embeds in the writing transaction."),
                    )
                });
            let stable = primary.iter().all(|(_, t)| q::key_text_is_stable(t));
            let keys: Vec<i16> = primary
                .iter()
                .map(|(k, _)| attribute(&desc, k).map(|a| a.0).unwrap_or(0))
                .collect();
            refuse_update_of_without_keys(
                trigger.trigger(),
                TRIGGER,
                rel,
                fire.name,
                &keys,
                "an UPDATE of the key alone would leave a row that waits for its vector queued under a key that no longer exists",
            );
            // Refuses a second queue trigger on the table.
            queue_trigger(rel);
            CHECKED.with(|c| {
                let mut c = c.borrow_mut();
                c.retain(|k| k.trigger != tgoid);
                c.push(Checked {
                    trigger: tgoid,
                    shape: fire.shape.clone(),
                    pk_index,
                    keys: keys.clone(),
                    stable,
                });
            });
            (keys, stable)
        }
    };
    let row = fire.read();
    let todo = q::queued(fire.action(&row));
    // A row's key as text.  Printed under fixed settings where the type's
    // text form follows them (a date under DateStyle), so a worker reads
    // the same row back.
    let key_of = |new: bool| -> Vec<String> {
        let _fixed = (!stable).then(|| Settings::with(KEY_TEXT_SETTINGS));
        keys.iter()
            .map(|&a| {
                let t = desc
                    .iter()
                    .find(|x| x.attnum == a)
                    .map(|x| x.atttypid)
                    .unwrap_or(pg_sys::Oid::INVALID);
                fire.value(new, a).map(|d| output(t, d)).unwrap_or_default()
            })
            .collect()
    };
    if todo.enqueue {
        enqueue(rel, key_of(true), pk_index);
    } else if !fire.insert
        && q::requeue_on_key_change(row.text.is_some(), row.has_vector, || {
            key_of(true) != key_of(false)
        })
    {
        // The row waits for its vector under its old key, which now finds
        // no row: queued again under the new one.
        enqueue(rel, key_of(true), pk_index);
    }
    if !todo.clear || (!row.has_vector && row.label.is_none()) {
        return Ok(trigger.new());
    }
    let mut cols = vec![fire.shape[1].0];
    cols.extend(fire.model_column().map(|(a, _, _)| a));
    Ok(Some(fire.modified(&cols, &vec![None; cols.len()])))
}

/// A table's queue trigger, as a worker uses it.
pub(crate) struct QueueTrigger {
    /// Its arguments, checked.
    pub columns: Columns,
    /// The role a worker reads and writes the table's rows as: the owner of
    /// the table the trigger was created on.  For a partition, whose
    /// trigger is a clone of its parent's, that is the owner of the
    /// partitioned table at the top, not the partition's own owner: a
    /// partition created by a superuser does not make the parent owner's
    /// queued rows, and its triggers, run as the superuser.
    pub setter: pg_sys::Oid,
    /// An `embed_chunks_trigger`'s arguments: the worker writes chunk rows
    /// (`columns` then names only the source).
    pub chunks: Option<columns::ChunkArgs>,
}

/// The queue trigger of `rel` (its first by name, enabled: an
/// `embed_queue_trigger` or an `embed_chunks_trigger`).  None: the table
/// has none.
pub(crate) fn queue_trigger(rel: pg_sys::Oid) -> Option<QueueTrigger> {
    let row = pinned(|| {
        Spi::connect(|c| {
            let t = c
                .select(statements::QUEUE_TRIGGER, Some(1), &[rel.into()])?
                .first();
            Ok::<_, pgrx::spi::SpiError>(if t.is_empty() {
                None
            } else {
                Some((
                    t.get::<String>(1)?.unwrap_or_default(),
                    t.get::<Vec<u8>>(2)?.unwrap_or_default(),
                    t.get::<pg_sys::Oid>(3)?.unwrap_or(pg_sys::Oid::INVALID),
                    t.get::<String>(4)?.unwrap_or_default(),
                    t.get::<i64>(5)?.unwrap_or(1),
                ))
            })
        })
    })
    .ok()
    .flatten()?;
    let (name, raw, setter, function, triggers) = row;
    if triggers > 1 {
        // The queue holds one entry per key and table, which one trigger
        // serves: a second would be left behind without a word.
        report(
            Error::new(
                ErrorKind::TriggerProtocol,
                "a table takes one embed_queue_trigger or embed_chunks_trigger",
            )
            .detail(format!(
                "Table {} has {triggers} enabled queue triggers; its queued keys would be served by one of them only.",
                catalog::relation_name(rel)
            ))
            .hint("Drop or disable all but one; a note vector beside chunk rows can come from embed_trigger or embed_batch_trigger."),
        );
    }
    let mut args: Vec<String> = raw
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // tgargs ends each argument with a NUL
    args.pop();
    if function == columns::CHUNKS_TRIGGER {
        let chunks = columns::chunk_args(rel, &name, args);
        return Some(QueueTrigger {
            columns: Columns {
                source: chunks.source.clone(),
                target: String::new(),
                model: None,
            },
            setter,
            chunks: Some(chunks),
        });
    }
    let args = args.into_iter().map(Some).collect();
    let (source, target, model) = columns::trigger_args(TRIGGER, rel, &name, args);
    Some(QueueTrigger {
        columns: Columns {
            source: source.unwrap_or_default(),
            target: target.unwrap_or_default(),
            model,
        },
        setter,
        chunks: None,
    })
}

/// Every queue worker of the server: its pid, database, state, the table and
/// rows of the batch in flight, the rows it has written, and when it started.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_restricted)]
fn embed_queue_workers() -> TableIterator<
    'static,
    (
        name!(pid, i32),
        name!(datid, pg_sys::Oid),
        name!(state, &'static str),
        name!(relid, Option<pg_sys::Oid>),
        name!(rows_in_flight, i32),
        name!(rows_done, i64),
        name!(started_at, Option<pgrx::datum::TimestampWithTimeZone>),
    ),
> {
    TableIterator::new(registry::workers().into_iter().map(|w| {
        (
            w.pid,
            pg_sys::Oid::from(w.datid),
            w.state.as_str(),
            (w.relid != 0).then(|| pg_sys::Oid::from(w.relid)),
            w.in_flight as i32,
            w.done as i64,
            // SAFETY: a TimestampTz stored by the worker itself.
            (w.started != 0).then(|| unsafe {
                pgrx::datum::TimestampWithTimeZone::from_datum(
                    pg_sys::Datum::from(w.started),
                    false,
                )
                .expect("not null")
            }),
        )
    }))
}

/// Makes sure a worker will look at this database's queue now (after a
/// server restart, when nothing has been queued since).
#[pg_extern(volatile, parallel_unsafe)]
fn embed_queue_start() -> bool {
    wake_at_commit();
    true
}

/// Queues the rows of table `t` (itself only) that the rule says need work,
/// by its primary key now (index `pkey`, columns `keys`); keys already
/// queued stay as they are.  Returns how many were queued.  Used by
/// `embed_queue_enqueue` and by a worker that finds keys of a primary key
/// the table no longer has.
pub(crate) fn enqueue_stored(
    t: pg_sys::Oid,
    cols: &Columns,
    pkey: pg_sys::Oid,
    keys: &[(String, String)],
    model_id: &str,
) -> i64 {
    let queue = queue();
    let names: Vec<String> = keys.iter().map(|k| k.0.clone()).collect();
    let sql = statements::enqueue_stored_statement(
        &catalog::qualified(t),
        t.to_u32(),
        pkey.to_u32(),
        &queue.schema,
        &names,
        cols,
        model_id,
    )
    .unwrap_or_else(|e| report(e));
    // keys printed as the trigger prints them, under fixed settings
    as_role_with(queue.owner, KEY_TEXT_SETTINGS, || {
        Spi::connect_mut(|c| c.update(sql.as_str(), None, &[]).map(|r| r.len() as i64))
    })
    .unwrap_or_else(|e| spi::failed(During::Queue, e))
}

/// Queues again the parked rows of `rel` (all tables when NULL) that the
/// current role may update: after the cause of their failure is fixed.
/// Returns how many.
#[pg_extern(volatile, parallel_unsafe)]
fn _embed_queue_retry(rel: Option<pg_sys::Oid>) -> i64 {
    let queue = queue();
    // SAFETY: the current role.
    let me = unsafe { pg_sys::GetUserId() };
    let sql = QueueStatements::new(&queue.schema).retry_parked;
    let n = as_role(queue.owner, || {
        Spi::connect_mut(|c| {
            c.update(sql.as_str(), None, &[rel.into(), me.into()])
                .map(|r| r.len() as i64)
        })
    })
    .unwrap_or_else(|e| spi::failed(During::Queue, e));
    if n > 0 {
        wake_at_commit();
    }
    n
}
