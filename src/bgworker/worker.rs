//! The queue workers: background workers, one database each, that drain
//! `embed_queue` with their own model session.
//!
//! A worker is launched at the commit of a transaction that queued rows when
//! its database has none running (`registry::wake`), and exits after
//! `clinembed.queue_idle_exit` seconds without work.  Each batch is one
//! transaction: it takes up to `clinembed.queue_batch_rows` due keys of one
//! table (`FOR UPDATE SKIP LOCKED`), locks their rows (`SKIP LOCKED`: a row a
//! writer holds stays queued, and its writer's commit queues its newer
//! text), embeds the texts and writes vectors and model identity with one
//! UPDATE (`engine`, as the statement trigger and the backfill do) and
//! deletes the keys.  The table's rows are read and
//! written as the table's owner, in a restricted security context, with
//! `search_path` pinned to `pg_catalog, pg_temp`: a trigger on the table
//! runs with its owner's rights, never the worker's.
//!
//! A batch that fails is rolled back and its keys tried one by one; a key
//! that fails alone is tried again after a backoff and parked after
//! `clinembed.queue_max_attempts` tries, with its SQLSTATE and message
//! (never note text: the log gets the table's oid, the SQLSTATE and counts).
//! A cancel aborts the batch in flight and the worker goes on; a terminated
//! worker is started again by the postmaster; nothing is deleted from the
//! queue before its row is written, in the same transaction.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use clinembed_core::rows::columns::{Action, Columns, Target};
use clinembed_core::rows::queue::{self as q, Retry};
use clinembed_core::rows::statements::{self, QueueStatements};
use clinembed_core::{Error, ErrorKind};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;

use crate::pg::catalog;
use crate::pg::security::{as_role, as_role_with, pinned, KEY_TEXT_SETTINGS};
use crate::pg::spi::{self, select_one, select_two, During};
use crate::write::queue::{queue, queue_statements, queue_trigger};
use crate::write::{chunks, columns};
use crate::{backend, bgworker::registry, gucs, write::engine};

/// Why a batch failed: its SQLSTATE and message.
struct Failure {
    sqlstate: String,
    message: String,
}

fn failure(e: CaughtError) -> Failure {
    let r = match &e {
        CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
        CaughtError::RustPanic { ereport, .. } => ereport,
    };
    // SAFETY: formats a packed SQLSTATE into a static buffer.
    let sqlstate = unsafe { CStr::from_ptr(pg_sys::unpack_sql_state(r.sql_error_code() as i32)) }
        .to_string_lossy()
        .into_owned();
    let ours = r.function_name() == Some(clinembed_core::ERROR_SOURCE);
    Failure {
        message: q::failure_message(ours, &sqlstate, r.message()),
        sqlstate,
    }
}

const CANCELED: &str = "57014";

/// Runs `f` in a transaction of its own and commits; an error rolls it back
/// and is returned.
fn transaction<T>(f: impl FnOnce() -> T) -> Result<T, Failure> {
    // SAFETY: starts a transaction at the top level of the worker's loop.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let f = AssertUnwindSafe(f);
    let r = PgTryBuilder::new(move || {
        // Each transaction's statements under the pinned search_path, in a
        // nest level of their own: nothing a table owner's code set in the
        // last one is left for the worker's statements in this one.
        let v = pinned(f);
        // SAFETY: ends the transaction started above.
        unsafe {
            pg_sys::PopActiveSnapshot();
            pg_sys::CommitTransactionCommand();
        }
        Ok(v)
    })
    .catch_others(|e| Err(failure(e)))
    .execute();
    if r.is_err() {
        // SAFETY: the error left the transaction aborted; this cleans it up.
        unsafe { pg_sys::AbortCurrentTransaction() };
    }
    r
}

// PostgreSQL's own signal handlers, as the C symbols (pgrx wraps the
// functions it binds, and a signal handler must be the plain one).  Not
// pgrx's `BackgroundWorker::attach_signal_handlers`: its SIGTERM handler
// only sets a flag that a latch loop polls, so a worker in the middle of a
// batch (inference, SPI) would run it to the end; PostgreSQL's `die` sets
// ProcDiePending, and the next CHECK_FOR_INTERRUPTS (between micro-batches,
// inside SPI) ends the worker, as it ends a backend.  pgrx's helpers are used
// where they fit: `get_extra`, the builder (registry.rs).  The connection is
// made by oid with BGWORKER_BYPASS_ALLOWCONN, which pgrx's by-name
// `connect_worker_to_spi` cannot do.
extern "C-unwind" {
    #[link_name = "die"]
    fn die(signal: std::ffi::c_int);
    #[link_name = "SignalHandlerForConfigReload"]
    fn reload(signal: std::ffi::c_int);
}

#[pg_guard]
unsafe extern "C-unwind" fn release_slot(_code: std::ffi::c_int, arg: pg_sys::Datum) {
    registry::release(arg.value());
}

/// The worker's entry point (`bgw_function_name`).  `arg` is the slot its
/// launch reserved; `bgw_extra` holds the database's oid and the launch.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn clinembed_queue_worker(arg: pg_sys::Datum) {
    let extra = BackgroundWorker::get_extra().to_string();
    let mut parts = extra
        .split_whitespace()
        .map(|p| p.parse::<u64>().unwrap_or(0));
    let (datid, launch) = (parts.next().unwrap_or(0) as u32, parts.next().unwrap_or(0));
    if !database_exists(datid) {
        // Dropped since the launch (a restart after DROP DATABASE ... WITH
        // (FORCE) ended this worker): exit code 0 is never restarted.
        exit_unregistered();
    }
    // SAFETY: signal handlers and the connection of a background worker, set
    // up as PostgreSQL's own workers do: SIGTERM ends it at the next
    // interrupt check (between micro-batches), SIGHUP reloads settings,
    // SIGINT (as set up by PostgreSQL) cancels the batch in flight.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        {
            pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(die));
            pg_sys::pqsignal(pg_sys::SIGHUP as i32, Some(reload));
        }
        #[cfg(feature = "pg18")]
        {
            pg_sys::pqsignal_be(pg_sys::SIGTERM as i32, Some(die));
            pg_sys::pqsignal_be(pg_sys::SIGHUP as i32, Some(reload));
        }
        pg_sys::BackgroundWorkerUnblockSignals();
        // Connecting to a database whose owner has set ALLOW_CONNECTIONS
        // false would be a FATAL error, answered by the postmaster with a
        // restart every few seconds while the slot stays taken; the worker
        // connects past it and then leaves such a database alone (below).
        pg_sys::BackgroundWorkerInitializeConnectionByOid(
            pg_sys::Oid::from(datid),
            pg_sys::Oid::INVALID,
            pg_sys::BGWORKER_BYPASS_ALLOWCONN as _,
        );
    }
    let Some(slot) = registry::claim(arg.value(), datid, launch) else {
        registry::launch_wanted();
        exit_unregistered();
    };
    // Before any ONNX Runtime thread exists, so they all inherit it.
    if let Err(e) = clinembed_core::rows::queue::lower_priority(gucs::queue_worker_nice()) {
        pgrx::log!("clinembed queue worker: could not lower its priority: {e}");
    }
    // SAFETY: frees the slot however the process ends.
    unsafe { pg_sys::before_shmem_exit(Some(release_slot), pg_sys::Datum::from(slot)) };
    // (No session-level search_path: each transaction pins its own.)
    let ready = transaction(|| (allows_connections(), installed()));
    if let Ok((false, _)) = ready {
        pgrx::log!(
            "clinembed queue worker: database oid {datid} does not allow connections; its queue waits until it does"
        );
    }
    if !matches!(ready, Ok((true, true))) {
        // The slot goes back at once, to a database that wants one.
        registry::release(slot);
        registry::launch_wanted();
        exit_unregistered();
    }
    drain(slot, datid);
    registry::release(slot);
    registry::launch_wanted();
    exit_unregistered();
}

/// Whether database `datid` still has its directory: checked before
/// connecting, since connecting to a dropped database is a FATAL error that
/// the postmaster would answer by starting the worker again, forever.
fn database_exists(datid: u32) -> bool {
    // SAFETY: the data directory's path, set before any worker starts.
    let data = unsafe { CStr::from_ptr(pg_sys::DataDir) }
        .to_string_lossy()
        .into_owned();
    let data = std::path::Path::new(&data);
    if data.join("base").join(datid.to_string()).is_dir() {
        return true;
    }
    // a database whose default tablespace is another one
    std::fs::read_dir(data.join("pg_tblspc"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|spc| std::fs::read_dir(spc.path()).ok())
        .flatten()
        .flatten()
        .any(|version| version.path().join(datid.to_string()).is_dir())
}

/// Registers the launcher that runs once at server start when clinembed is
/// in `shared_preload_libraries` (called from `_PG_init` then).
pub fn register_launcher() {
    pgrx::bgworkers::BackgroundWorkerBuilder::new("clinembed queue launcher")
        .set_type("clinembed queue launcher")
        .set_library("clinembed")
        .set_function("clinembed_queue_launcher")
        .enable_spi_access()
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(None)
        .load();
}

/// The launcher: once the server accepts connections, launches a queue
/// worker for every database that accepts them (within the limits; the
/// rest as workers exit), so rows queued before a restart are drained
/// without waiting for the next write.  A worker exits at once in a
/// database without clinembed.
#[pg_guard]
#[no_mangle]
pub extern "C-unwind" fn clinembed_queue_launcher(_arg: pg_sys::Datum) {
    let mut databases = Vec::new();
    // SAFETY: a worker connected to no database reads the shared catalog
    // pg_database with a catalog scan, as the autovacuum launcher does.
    unsafe {
        #[cfg(not(feature = "pg18"))]
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(die));
        #[cfg(feature = "pg18")]
        pg_sys::pqsignal_be(pg_sys::SIGTERM as i32, Some(die));
        pg_sys::BackgroundWorkerUnblockSignals();
        pg_sys::BackgroundWorkerInitializeConnection(std::ptr::null(), std::ptr::null(), 0);
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
        let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as i32);
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let db = &*pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
            if db.datallowconn && !db.datistemplate {
                databases.push(db.oid.to_u32());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as i32);
        pg_sys::PopActiveSnapshot();
        pg_sys::CommitTransactionCommand();
    }
    for datid in databases {
        registry::launch(datid);
    }
    exit_unregistered();
}

/// Ends this process with exit code 0: the postmaster does not start it
/// again.
#[allow(unreachable_code)]
fn exit_unregistered() -> ! {
    // SAFETY: ends the process, running its exit callbacks.
    unsafe { pg_sys::proc_exit(0) };
    unreachable!("proc_exit returns no more")
}

/// Whether this database accepts connections (in a transaction): a worker
/// drains no queue of a database its owner has closed.
fn allows_connections() -> bool {
    select_one::<bool>(statements::ALLOWS_CONNECTIONS, &[]).unwrap_or(false)
}

/// How often a worker looks at the queue while a prepared transaction is
/// open in its database.
const PREPARED_POLL: Duration = Duration::from_millis(q::PREPARED_POLL_MS);

/// Whether a transaction prepared for two-phase commit is open in this
/// database (in a transaction).
fn prepared_xacts() -> bool {
    select_one::<bool>(statements::PREPARED_XACTS, &[]).unwrap_or(false)
}

/// Whether clinembed is installed in this database (in a transaction).
fn installed() -> bool {
    select_one::<bool>(statements::EXTENSION_INSTALLED, &[]).unwrap_or(false)
}

/// What one look at the queue found.
enum Step {
    /// Rows written (or dropped with their table); `full`: the batch was
    /// full, so more may wait.
    Worked { full: bool },
    /// Nothing due: look again after this long (None: nothing queued at all).
    Idle(Option<Duration>),
    /// clinembed is no longer installed in this database.
    Stop,
}

fn handle_pending_signals() {
    // SAFETY: reads flags set by signal handlers.
    unsafe {
        if pg_sys::ProcDiePending != 0 {
            pg_sys::check_for_interrupts!();
        }
        // A cancel between batches has nothing to cancel.
        pg_sys::QueryCancelPending = 0;
        if pg_sys::ConfigReloadPending != 0 {
            pg_sys::ConfigReloadPending = 0;
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
    }
}

/// The worker's loop: batches while there is work, waits on its latch when
/// there is none, returns when it has been idle long enough and a last look
/// finds nothing queued.
fn drain(slot: usize, datid: u32) {
    let mut idle_since = Instant::now();
    loop {
        handle_pending_signals();
        let wait = match step(slot) {
            Step::Worked { full } => {
                idle_since = Instant::now();
                if full {
                    // a backlog: let another worker help, if the limits allow
                    registry::launch(datid);
                }
                continue;
            }
            Step::Idle(wait) => wait,
            Step::Stop => return,
        };
        let idle_exit = gucs::queue_idle_exit();
        if wait.is_none() && idle_since.elapsed() >= idle_exit {
            registry::set_exiting(slot, datid, true);
            match transaction(next_due) {
                Ok(None) => return,
                _ => registry::set_exiting(slot, datid, false),
            }
            continue;
        }
        // Keys of a transaction prepared for two-phase commit appear at its
        // COMMIT PREPARED, which wakes no one: look again soon while one is
        // open (an abandoned one does not keep an idle worker alive).
        let wait = match transaction(prepared_xacts) {
            Ok(true) => Some(wait.map_or(PREPARED_POLL, |w| w.min(PREPARED_POLL))),
            _ => wait,
        };
        let left = idle_exit.saturating_sub(idle_since.elapsed());
        let timeout = wait
            .map_or(left, |w| w.min(left))
            .max(Duration::from_millis(10));
        // SAFETY: waits on this process's latch; exits if the postmaster dies.
        unsafe {
            pg_sys::WaitLatch(
                pg_sys::MyLatch,
                (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
                timeout.as_millis() as _,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
    }
}

/// How long until a queued key is due (zero: one is), or None when nothing
/// is queued but parked rows.
fn next_due() -> Option<Duration> {
    let secs = select_one::<f64>(&queue_statements().next_due, &[])?;
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

/// The table and keys a batch took, for its failure path.
type Taken = RefCell<Option<(pg_sys::Oid, Vec<Vec<String>>)>>;

/// A queued row a batch took: the queue entry's ctid and the row's key.
struct Entry {
    ctid: pg_sys::ItemPointerData,
    key: Vec<String>,
    /// The primary key index the key was printed by (None: queued by
    /// 0.10.0).
    pkey: Option<pg_sys::Oid>,
}

thread_local! {
    /// The table whose batch failed last: the next batch is another
    /// table's, when another has rows due, so a table whose rows all fail
    /// (each tried alone, then again after its backoff) takes at most every
    /// other batch and starves no other table's queue.
    static FAILED_LAST: std::cell::Cell<pg_sys::Oid> =
        const { std::cell::Cell::new(pg_sys::Oid::INVALID) };
}

/// One batch, with what to do when it fails.
fn step(slot: usize) -> Step {
    let taken: Taken = RefCell::new(None);
    let outcome = transaction(|| batch(slot, None, &taken));
    registry::set_batch(slot, 0, 0, 0);
    let failed = match (&outcome, &*taken.borrow()) {
        (Err(_), Some((relid, _))) => *relid,
        _ => pg_sys::Oid::INVALID,
    };
    FAILED_LAST.with(|f| f.set(failed));
    match outcome {
        Ok(step) => step,
        Err(f) if f.sqlstate == CANCELED => Step::Worked { full: false },
        Err(f) => {
            let Some((relid, keys)) = taken.into_inner() else {
                // failed before it took anything: the queue itself (the
                // extension dropped, or being updated)
                if !matches!(transaction(installed), Ok(true)) {
                    return Step::Stop;
                }
                log_failure(pg_sys::Oid::INVALID, &f, 0);
                return Step::Idle(Some(Duration::from_secs(q::RETRY_BASE_SECONDS as u64)));
            };
            if keys.len() == 1 {
                record_failure(relid, &keys[0], &f);
            } else {
                // Alone, each key either goes through or fails on its own.
                for key in keys {
                    handle_pending_signals();
                    let one = RefCell::new(None);
                    match transaction(|| batch(slot, Some((relid, key.clone())), &one)) {
                        Ok(_) => {}
                        Err(f) if f.sqlstate == CANCELED => break,
                        Err(f) => record_failure(relid, &key, &f),
                    }
                    registry::set_batch(slot, 0, 0, 0);
                }
            }
            Step::Worked { full: false }
        }
    }
}

fn log_failure(relid: pg_sys::Oid, f: &Failure, attempts: i32) {
    // The message stays in the queue table (see `q::failure_message`).
    pgrx::log!(
        "clinembed queue worker: a queued row of table oid {} failed with SQLSTATE {} (try {attempts})",
        relid.to_u32(),
        f.sqlstate
    );
}

/// Counts a failed try of one key: a retry after a backoff, or parked.
fn record_failure(relid: pg_sys::Oid, key: &[String], f: &Failure) {
    let max = gucs::queue_max_attempts();
    let recorded = transaction(|| {
        let qs = queue_statements();
        let attempts = Spi::connect_mut(|c| {
            c.update(
                qs.next_attempt.as_str(),
                Some(1),
                &[relid.into(), key.to_vec().into()],
            )?
            .first()
            .get_one::<i32>()
        })
        .ok()
        .flatten()?;
        let (retry, park) = match q::after_failure(attempts, max) {
            Retry::After(s) => (Some(s as f64), false),
            Retry::Park => (None, true),
        };
        Spi::connect_mut(|c| {
            c.update(
                qs.record_failure.as_str(),
                None,
                &[
                    relid.into(),
                    key.to_vec().into(),
                    attempts.into(),
                    f.sqlstate.as_str().into(),
                    f.message.as_str().into(),
                    retry.into(),
                    park.into(),
                ],
            )
            .map(|_| ())
        })
        .unwrap_or_else(|e| spi::failed(During::Queue, e));
        Some(attempts)
    });
    if let Ok(Some(attempts)) = recorded {
        log_failure(relid, f, attempts);
    }
}

/// One batch: takes due keys of one table (or the one key `only`), embeds
/// and writes their rows, deletes the keys.  `taken` learns the keys as
/// soon as they are taken, for the failure path.
fn batch(slot: usize, only: Option<(pg_sys::Oid, Vec<String>)>, taken: &Taken) -> Step {
    let qs = queue_statements();
    let limit = gucs::queue_batch_rows();
    let (relid, entries) = match only {
        Some((relid, key)) => {
            let entries = entries_of(&qs.take_key, &[relid.into(), key.into()]);
            (relid, entries)
        }
        None => {
            // The oldest due row's table, after any other table's when the
            // last batch failed (FAILED_LAST).
            let Some(relid) = select_one::<pg_sys::Oid>(
                &qs.oldest_due_table,
                &[FAILED_LAST.with(|f| f.get()).into()],
            ) else {
                return Step::Idle(next_due());
            };
            let entries = match choose(&qs, relid, limit) {
                Some(ctids) => entries_of(&qs.take_chosen, &[relid.into(), ctids.into()]),
                None => entries_of(&qs.take_oldest, &[relid.into(), (limit as i64).into()]),
            };
            (relid, entries)
        }
    };
    if entries.is_empty() {
        // Everything due is being taken by another worker.
        return Step::Idle(Some(Duration::from_millis(q::LOCKED_RETRY_MS as u64)));
    }
    *taken.borrow_mut() = Some((relid, entries.iter().map(|e| e.key.clone()).collect()));
    registry::set_batch(slot, relid.to_u32(), entries.len() as u32, 0);
    let full = entries.len() >= limit;
    let delete = |ctids: &[pg_sys::ItemPointerData]| {
        Spi::connect_mut(|c| {
            for ctid in ctids {
                c.update(qs.delete_entry.as_str(), None, &[(*ctid).into()])?;
            }
            Ok::<_, pgrx::spi::SpiError>(())
        })
        .unwrap_or_else(|e| spi::failed(During::Queue, e));
    };
    let exists = select_one::<bool>(statements::IS_ORDINARY_TABLE, &[relid.into()]);
    if exists.is_none() {
        // The table is gone (or is no table): its keys mean nothing now.
        delete(&entries.iter().map(|e| e.ctid).collect::<Vec<_>>());
        return Step::Worked { full };
    }
    let Some(shape) = &*shape(relid) else {
        crate::errors::report(
            Error::new(ErrorKind::InvalidTable, "the table has no queue trigger")
                .detail(format!(
                    "Rows of {} are queued, and it has no enabled embed_queue_trigger to say which columns to embed.",
                    catalog::relation_name(relid)
                ))
                .hint("Create or enable the trigger, then call embed_queue_retry()."),
        )
    };
    // The rows are read and written as the role that set the trigger up
    // (see `crate::write::queue::QueueTrigger::setter`), and only where no code of
    // a role with fewer rights would run as it.
    let owner = shape.owner;
    refuse_foreign_triggers(relid, owner, statements::ON_UPDATE);
    let cols = &shape.cols;
    // Chunk rows (an `embed_chunks_trigger`), or the row's own vector.
    let sink = match &shape.chunks {
        Some(args) => {
            let table = shape
                .chunk_table
                .get_or_init(|| chunks::chunk_table(relid, args));
            // The chunk table's whole tree: a partition's or a child's
            // owner and triggers run in the worker's write too.
            chunks::refuse_foreign_owner(table.oid, owner);
            for member in catalog::relation_tree(table.oid) {
                refuse_foreign_triggers(member.oid.into(), owner, statements::ON_INSERT_OR_DELETE);
            }
            Sink::Chunks(table)
        }
        None => {
            let (target, write) = shape.target.get_or_init(|| {
                let target = columns::target(
                    relid,
                    Some(&cols.source),
                    Some(&cols.target),
                    cols.model.as_deref(),
                );
                let write = statements::ctid_write(&shape.table, cols, &target.type_name);
                (target, write)
            });
            Sink::Vector(target, write)
        }
    };
    let Some(keyed) = &shape.keyed else {
        crate::errors::report(
            Error::new(ErrorKind::InvalidTable, "the table has no primary key")
                .detail(format!(
                    "Rows of {} are queued by key, and it has none now.",
                    catalog::relation_name(relid)
                ))
                .hint("Add the primary key back, then call embed_queue_retry()."),
        )
    };
    let (keys, pkey_now) = (&keyed.keys, keyed.index);
    // Keys printed under a primary key the table no longer has name no
    // row, or the wrong one: the table's rows that need work are queued
    // again under its key now, and those keys are forgotten.
    let (stale, entries): (Vec<Entry>, Vec<Entry>) = entries.into_iter().partition(|e| {
        q::key_is_stale(
            e.pkey.map(|p| p.to_u32()),
            e.key.len(),
            pkey_now.to_u32(),
            keys.len(),
        )
    });
    if !stale.is_empty() {
        let requeued = match (&shape.chunks, &sink) {
            (Some(args), Sink::Chunks(table)) => {
                chunks::enqueue_stored(relid, args, table, pkey_now, &queue())
            }
            _ => crate::write::queue::enqueue_stored(
                relid,
                cols,
                pkey_now,
                keys,
                &backend::model_id(),
            ),
        };
        delete(&stale.iter().map(|e| e.ctid).collect::<Vec<_>>());
        pgrx::log!(
            "clinembed queue worker: {} queued keys of table oid {} were printed under a primary key it no longer has; {requeued} of its rows queued again under the current one",
            stale.len(),
            relid.to_u32()
        );
        if entries.is_empty() {
            return Step::Worked { full: true };
        }
    }
    // One text[] per key column, the keys in order.
    let arrays: Vec<Vec<String>> = (0..keys.len())
        .map(|i| {
            entries
                .iter()
                .map(|e| e.key.get(i).cloned().unwrap_or_default())
                .collect()
        })
        .collect();
    let args: Vec<pgrx::datum::DatumWithOid<'_>> =
        arrays.iter().map(|a| a.clone().into()).collect();
    // Keys are read back under the settings the trigger printed them with.
    let rows: Vec<(i32, pg_sys::ItemPointerData, Option<String>)> =
        as_role_with(owner, KEY_TEXT_SETTINGS, || {
            Spi::connect_mut(|c| {
                c.update(keyed.claim.as_str(), None, &args)?
                    .map(|r| {
                        Ok((
                            r.get::<i32>(1)?.unwrap_or(0),
                            r.get::<pg_sys::ItemPointerData>(2)?.unwrap_or_default(),
                            r.get::<String>(3)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
            })
        })
        .unwrap_or_else(|e| spi::failed(During::Queue, e));
    // Keys whose row was not taken: locked by a writer (they stay queued)
    // or gone (deleted, or its key changed: the key is dropped).
    let found: HashSet<i32> = rows.iter().map(|r| r.0).collect();
    let present: HashSet<i32> = if found.len() < entries.len() {
        as_role_with(owner, KEY_TEXT_SETTINGS, || {
            Spi::connect(|c| {
                c.select(keyed.exists.as_str(), None, &args)?
                    .map(|r| Ok(r.get::<i32>(1)?.unwrap_or(0)))
                    .collect::<Result<HashSet<_>, pgrx::spi::SpiError>>()
            })
        })
        .unwrap_or_else(|e| spi::failed(During::Queue, e))
    } else {
        HashSet::new()
    };
    // The texts to embed: None for a row whose vector is cleared.
    let texts: Vec<Option<String>> = rows
        .iter()
        .map(|r| match q::worker_action(r.2.is_some()) {
            Action::Embed => r.2.clone(),
            _ => None,
        })
        .collect();
    match sink {
        Sink::Chunks(table) => {
            let keys: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    entries
                        .get((r.0 - 1) as usize)
                        .map(|e| e.key.clone())
                        .unwrap_or_default()
                })
                .collect();
            chunks::write_batch(owner, table, &keys, &texts);
        }
        Sink::Vector(target, write) => {
            write_vectors(relid, owner, cols, target, write, &rows, &texts)
        }
    }
    let done: Vec<pg_sys::ItemPointerData> = entries
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let ord = *i as i32 + 1;
            found.contains(&ord) || !present.contains(&ord)
        })
        .map(|(_, e)| e.ctid)
        .collect();
    delete(&done);
    if !rows.is_empty() {
        Spi::connect_mut(|c| {
            c.update(
                qs.record_done.as_str(),
                None,
                &[relid.into(), (rows.len() as i32).into()],
            )?;
            c.update(qs.prune_done.as_str(), None, &[]).map(|_| ())
        })
        .unwrap_or_else(|e| spi::failed(During::Queue, e));
    }
    registry::set_batch(slot, relid.to_u32(), 0, rows.len() as u64);
    if rows.is_empty() && done.is_empty() {
        // every row locked by writers: look again shortly
        return Step::Idle(Some(Duration::from_millis(q::LOCKED_RETRY_MS as u64)));
    }
    Step::Worked { full }
}

/// The rows' own vectors written (an `embed_queue_trigger`'s batch): `rows`
/// the claimed rows (position, ctid, text), `texts` what to embed.
fn write_vectors(
    relid: pg_sys::Oid,
    owner: pg_sys::Oid,
    cols: &Columns,
    target: &Target,
    write: &str,
    rows: &[(i32, pg_sys::ItemPointerData, Option<String>)],
    texts: &[Option<String>],
) {
    let vectors = engine::embed(relid, &cols.target, target, texts);
    let model_id = texts.iter().any(Option::is_some).then(backend::model_id);
    let tids: Vec<pg_sys::ItemPointerData> = rows.iter().map(|r| r.1).collect();
    let has: Vec<bool> = texts.iter().map(Option::is_some).collect();
    // Each row's text as the write left it, by its place in the batch; a
    // row a trigger skipped is missing.
    let written: HashMap<i32, Option<String>> = as_role(owner, || {
        Spi::connect_mut(|c| {
            c.update(
                write,
                None,
                &[
                    tids.into(),
                    has.into(),
                    vectors.flat.into(),
                    vectors.dims.into(),
                    model_id.into(),
                ],
            )?
            .map(|r| Ok((r.get::<i32>(1)?.unwrap_or(0), r.get::<String>(2)?)))
            .collect::<Result<HashMap<_, _>, pgrx::spi::SpiError>>()
        })
    })
    .unwrap_or_else(|e| spi::failed(During::Queue, e));
    rows.iter()
        .enumerate()
        .try_for_each(|(i, row)| {
            q::check_written(
                row.2.as_deref(),
                written.get(&(i as i32 + 1)).map(Option::as_deref),
            )
        })
        .unwrap_or_else(|e| crate::errors::report(e));
}

/// Where a batch's work goes.
enum Sink<'a> {
    Vector(&'a Target, &'a String),
    Chunks(&'a chunks::ChunkTable),
}

/// What a queued table's batches need of the catalog, worked out at its
/// first batch in this worker and kept until the catalog changes
/// (`catalog::Cached`): the queue trigger's columns and the role that set
/// it up, the table's name, its primary key and the statements on it.  Who
/// owns the functions of the table's other triggers is no relation's and
/// is checked on every batch (`refuse_foreign_triggers`).
struct Shape {
    owner: pg_sys::Oid,
    cols: Columns,
    /// Qualified and quoted.
    table: String,
    /// None: the table has no primary key now.
    keyed: Option<Keyed>,
    /// The target column and the write, worked out at the first batch
    /// that gets as far (an error there fails that batch's keys).
    target: OnceCell<(Target, String)>,
    /// An `embed_chunks_trigger`'s arguments, and its chunk table checked
    /// at the first batch that gets as far.
    chunks: Option<columns::ChunkArgs>,
    chunk_table: OnceCell<chunks::ChunkTable>,
}

/// The primary key and the statements that find rows by it.
struct Keyed {
    keys: Vec<(String, String)>,
    /// The key's index: what the queue's entries record.
    index: pg_sys::Oid,
    claim: String,
    exists: String,
    lengths: String,
}

thread_local! {
    static SHAPES: catalog::Cached<pg_sys::Oid, Option<Shape>> = catalog::Cached::new();
}

/// Table `relid`'s shape; None without an enabled queue trigger.
fn shape(relid: pg_sys::Oid) -> std::rc::Rc<Option<Shape>> {
    SHAPES.with(|c| {
        c.get(relid, || {
            let trigger = queue_trigger(relid)?;
            let cols = trigger.columns;
            let table = catalog::qualified(relid);
            let keyed = catalog::primary_key(relid).map(|keys| Keyed {
                index: catalog::primary_key_index(relid).unwrap_or(pg_sys::Oid::INVALID),
                claim: statements::claim_statement(&table, &keys, &cols.source, true),
                exists: statements::claim_statement(&table, &keys, &cols.source, false),
                lengths: statements::lengths_statement(&table, &keys, &cols.source),
                keys,
            });
            Some(Shape {
                owner: trigger.setter,
                cols,
                table,
                keyed,
                target: OnceCell::new(),
                chunks: trigger.chunks,
                chunk_table: OnceCell::new(),
            })
        })
    })
}

/// The queue entries (as ctid text) of the next batch of table `relid`,
/// when more rows wait than a batch takes: the oldest and the rows whose
/// texts are nearest its length (`clinembed_core::rows::queue::choose_batch`).
/// None: take the oldest rows as they come (few waiting, or the table cannot
/// be read now; the batch itself then reports why).
fn choose(qs: &QueueStatements, relid: pg_sys::Oid, limit: usize) -> Option<Vec<String>> {
    let candidates: Vec<(String, Vec<String>)> = Spi::connect(|c| {
        c.select(
            qs.candidates.as_str(),
            None,
            &[
                relid.into(),
                ((limit * q::CANDIDATES_PER_ROW) as i64).into(),
            ],
        )?
        .map(|r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Vec<String>>(2)?.unwrap_or_default(),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .ok()?;
    if candidates.len() <= limit {
        return None;
    }
    let shape = shape(relid);
    let shape = shape.as_ref().as_ref()?;
    let keyed = shape.keyed.as_ref()?;
    let arrays: Vec<Vec<String>> = (0..keyed.keys.len())
        .map(|i| {
            candidates
                .iter()
                .map(|(_, k)| k.get(i).cloned().unwrap_or_default())
                .collect()
        })
        .collect();
    let args: Vec<pgrx::datum::DatumWithOid<'_>> =
        arrays.iter().map(|a| a.clone().into()).collect();
    let found: Vec<(i32, i32)> = as_role_with(shape.owner, KEY_TEXT_SETTINGS, || {
        Spi::connect(|c| {
            c.select(keyed.lengths.as_str(), None, &args)?
                .map(|r| Ok((r.get::<i32>(1)?.unwrap_or(0), r.get::<i32>(3)?.unwrap_or(0))))
                .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
        })
    })
    .ok()?;
    let mut lengths = vec![None; candidates.len()];
    for (ord, len) in found {
        if let Some(l) = lengths.get_mut((ord - 1) as usize) {
            *l = Some(len.max(0) as usize);
        }
    }
    Some(
        q::choose_batch(&lengths, limit)
            .into_iter()
            .map(|i| candidates[i].0.clone())
            .collect(),
    )
}

/// Refuses (42501) to write rows of `relid` as `role` while an enabled
/// trigger on it that would fire on the worker's write (`events`) runs a function
/// whose owner does not have `role`'s rights: the worker would run that
/// code with more rights than its author has.  (PostgreSQL's own internal
/// triggers, such as foreign keys', are not user code.)  A trigger created
/// by a role with the TRIGGER privilege on someone else's table is the case
/// this catches.
fn refuse_foreign_triggers(relid: pg_sys::Oid, role: pg_sys::Oid, events: i32) {
    let foreign = select_two::<String, String>(
        statements::FOREIGN_TRIGGER,
        &[relid.into(), role.into(), events.into()],
    );
    if let (Some(trigger), Some(author)) = foreign {
        crate::errors::report(
            Error::new(
                ErrorKind::Forbidden,
                "the queue worker does not run a trigger function as a role with more rights than its owner",
            )
            .detail(format!(
                "Trigger {} on {} runs a function owned by role {}, which does not have the rights of role {}, whose rights the worker writes with.",
                catalog::shown(&trigger),
                catalog::relation_name(relid),
                catalog::shown(&author),
                catalog::shown(&catalog::role_name(role)),
            ))
            .hint("Have the table's owner own the trigger's function (ALTER FUNCTION ... OWNER TO), or drop the trigger; then call embed_queue_retry()."),
        );
    }
}

fn entries_of(sql: &str, args: &[pgrx::datum::DatumWithOid<'_>]) -> Vec<Entry> {
    Spi::connect_mut(|c| {
        c.update(sql, None, args)?
            .map(|r| {
                Ok(Entry {
                    ctid: r.get::<pg_sys::ItemPointerData>(1)?.unwrap_or_default(),
                    key: r.get::<Vec<String>>(2)?.unwrap_or_default(),
                    pkey: r.get::<pg_sys::Oid>(3)?,
                })
            })
            .collect::<Result<Vec<_>, pgrx::spi::SpiError>>()
    })
    .unwrap_or_else(|e| spi::failed(During::Queue, e))
}
