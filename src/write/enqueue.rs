//! `embed_queue_enqueue`: a table's stored rows queued for the workers, by
//! its queue trigger: rows whose vector is missing or another model's
//! (`embed_queue_trigger`), or notes whose chunk rows are
//! (`embed_chunks_trigger`).

use clinembed_core::{Error, ErrorKind};
use pgrx::prelude::*;

use crate::errors::report;
use crate::pg::catalog;
use crate::write::queue::{enqueue_stored, queue, queue_trigger, wake_at_commit};
use crate::write::{chunks, columns};

// The queue's tables, views and SQL functions, over the functions here and
// in queue.rs.
extension_sql_file!(
    "../../sql/queue.sql",
    name = "queue",
    requires = [
        "columns",
        write::queue::embed_queue_trigger_body,
        write::queue::embed_queue_workers,
        _embed_queue_enqueue,
        write::queue::_embed_queue_retry
    ]
);

/// The tables that hold `rel`'s rows: itself, its partitions and
/// inheritance children with storage.
fn leaf_tables(rel: pg_sys::Oid) -> Vec<pg_sys::Oid> {
    catalog::relation_tree(rel)
        .into_iter()
        .filter(|m| m.relkind == 'r')
        .map(|m| pg_sys::Oid::from(m.oid))
        .collect()
}

fn require(rel: pg_sys::Oid, privilege: &str, column: &str) {
    if let Some(m) = catalog::missing_privileges(rel, &[(privilege, column)]).first() {
        require_failed(rel, m);
    }
}

/// Raises 42501: queueing the rows of a table that `rel` is needs
/// `missing` (a privilege as `catalog::missing_privileges` names it).
fn require_failed(rel: pg_sys::Oid, missing: &str) -> ! {
    report(
        Error::new(
            ErrorKind::Forbidden,
            format!(
                "permission denied to queue rows of {}",
                catalog::relation_name(rel)
            ),
        )
        .detail(format!(
            "Queueing reads and writes the table's vectors and needs {missing}."
        ))
        .hint("Run it as the table's owner, or GRANT the privilege."),
    )
}

/// Queues every row of `rel` (partitions and children included) that the
/// rule says needs work: a missing vector, another model's, a vector beside
/// no text; keys already queued stay as they are.  The asynchronous form of
/// `embed_backfill`, for a model change.  Returns the rows queued.
#[pg_extern(volatile, parallel_unsafe)]
fn _embed_queue_enqueue(rel: pg_sys::Oid) -> i64 {
    let model_id = crate::backend::model_id();
    let mut queued = 0i64;
    let mut with_trigger = 0;
    for t in leaf_tables(rel) {
        let Some(trigger) = queue_trigger(t) else {
            continue;
        };
        with_trigger += 1;
        let cols = trigger.columns;
        let keys = catalog::primary_key(t).unwrap_or_default();
        let pkey = catalog::primary_key_index(t).unwrap_or(pg_sys::Oid::INVALID);
        require(t, "SELECT", &cols.source);
        for k in &keys {
            require(t, "SELECT", &k.0);
        }
        if let Some(args) = &trigger.chunks {
            let table = chunks::chunk_table(t, args);
            let mut wanted: Vec<(&str, &str)> = vec![("DELETE", ""), ("INSERT", "")];
            wanted.extend(keys.iter().map(|k| ("SELECT", k.0.as_str())));
            if let Some(m) = catalog::missing_privileges_of(None, table.oid, &wanted).first() {
                require_failed(table.oid, m);
            }
            queued += chunks::enqueue_stored(t, args, &table, pkey, &queue());
            continue;
        }
        columns::target(
            t,
            Some(&cols.source),
            Some(&cols.target),
            cols.model.as_deref(),
        );
        require(t, "UPDATE", &cols.target);
        queued += enqueue_stored(t, &cols, pkey, &keys, &model_id);
    }
    if with_trigger == 0 {
        report(
            Error::new(ErrorKind::InvalidTable, "the table has no queue trigger")
                .detail(format!(
                    "No table that holds rows of {} has an enabled embed_queue_trigger.",
                    catalog::relation_name(rel)
                ))
                .hint("Create the trigger first: the workers take its columns from it."),
        );
    }
    if queued > 0 {
        wake_at_commit();
    }
    queued
}
