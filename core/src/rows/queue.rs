//! The embedding queue: what its trigger does with a row, how a worker takes,
//! embeds and writes queued rows, and when a failed row is tried again.
//!
//! The queue holds a table's oid and a row's primary key as text, never note
//! text.  The trigger decides with the one rule of [`super::columns`]: a row
//! whose rule says *embed* has its vector cleared (no vector ever describes
//! an older text) and its key queued; *clear* clears; *keep* does nothing,
//! so an UPDATE that leaves the text alone queues nothing.  A worker takes
//! queued keys, locks their rows, embeds the texts it finds, writes vector
//! and model identity, and deletes the keys, in one transaction.  Every
//! statement here names functions, operators and types by schema: the
//! worker runs them with `search_path` pinned to `pg_catalog, pg_temp`.

use super::columns::{self, Action, Event, Row};
use crate::error::{Error, ErrorKind, Result};

/// Rows a worker takes per transaction, by default.
pub const DEFAULT_BATCH_ROWS: i32 = 64;
/// Queue workers per server at most: the shared registry's slots, and the
/// upper bound of the worker-count settings.
pub const WORKER_SLOTS: usize = 64;
/// Failed tries before a row is parked, by default.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;
/// Seconds before the first retry; each further retry waits twice as long.
pub const RETRY_BASE_SECONDS: i64 = 2;
/// The longest wait between tries, in seconds.
pub const RETRY_MAX_SECONDS: i64 = 300;
/// Seconds an idle worker waits for work before it exits, by default.
pub const DEFAULT_IDLE_EXIT_SECONDS: i32 = 60;
/// Queue workers per server, at most, by default.
pub const DEFAULT_MAX_WORKERS: i32 = 2;
/// Queue workers per database, at most, by default.
pub const DEFAULT_MAX_WORKERS_PER_DATABASE: i32 = 1;
/// Seconds before the postmaster starts again a worker that ended with an
/// error (terminated, or failed outside a batch).
pub const RESTART_SECONDS: u64 = 5;
/// The scheduling priority (nice value) of queue workers, by default: below
/// the backends that write and read notes, which win the CPUs when both
/// want them; alone, a worker runs as fast as at 0.
pub const DEFAULT_WORKER_NICE: i32 = 10;
/// Milliseconds a worker waits before it looks again at keys whose rows
/// were locked by another transaction when it tried them.
pub const LOCKED_RETRY_MS: i64 = 200;
/// Milliseconds between a worker's looks at the queue while transactions
/// prepared for two-phase commit are open in its database.  Keys queued in
/// such a transaction (Citus writes to shards on several nodes this way)
/// become visible at `COMMIT PREPARED`, which wakes no worker: the worker
/// woken at `PREPARE` looks again at this pace until it finds them, or
/// until it would exit idle.
pub const PREPARED_POLL_MS: u64 = 100;

pub use crate::{PINNED_SEARCH_PATH, PINNED_VISIBILITY};

/// The settings under which a queued key is written as text (by the
/// trigger) and read back (by a worker): the text forms of date, time,
/// interval, floating-point and money values follow the session's
/// `DateStyle`, `IntervalStyle`, `TimeZone`, `extra_float_digits` and
/// `lc_monetary`, which a writer and a worker need not share (`01/02/2024`
/// is 1 February under `DMY` and 2 January under `MDY`).  Fixed, a key
/// means the same row to both.
pub const KEY_TEXT_SETTINGS: &[(&str, &str)] = &[
    ("DateStyle", "ISO, MDY"),
    ("IntervalStyle", "postgres"),
    ("TimeZone", "UTC"),
    ("extra_float_digits", "3"),
    ("lc_monetary", "C"),
    ("bytea_output", "hex"),
];

/// Whether a key column of this type (as `format_type` prints it, array
/// brackets included) is printed the same under every session setting, so
/// the trigger need not fix [`KEY_TEXT_SETTINGS`] to print it: the common
/// key types, which are most tables' keys, skip the cost on every row.
pub fn key_text_is_stable(type_name: &str) -> bool {
    matches!(
        type_name.trim_end_matches("[]"),
        "smallint"
            | "integer"
            | "bigint"
            | "text"
            | "uuid"
            | "oid"
            | "boolean"
            | "numeric"
            | "name"
            | "\"char\""
    ) || type_name.starts_with("character varying")
        || type_name.starts_with("character(")
        || type_name.starts_with("numeric(")
}

/// What the queue trigger does with a row, from the rule's [`Action`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// Set vector and model identity to NULL in the row being written.
    pub clear: bool,
    /// Queue the row's key: a new text version to embed.
    pub enqueue: bool,
}

pub fn queued(action: Action) -> Queued {
    match action {
        Action::Keep => Queued {
            clear: false,
            enqueue: false,
        },
        Action::Clear => Queued {
            clear: true,
            enqueue: false,
        },
        Action::Embed => Queued {
            clear: true,
            enqueue: true,
        },
    }
}

/// Whether an UPDATE that leaves the text alone (so the rule keeps the row)
/// must queue the row again under its new key: the row has text and no
/// vector (it waits for one, queued under its old key, which a worker will
/// find gone) and `key_changed` says its key changed.  `key_changed` is
/// asked only when the rest holds: printing keys costs.
pub fn requeue_on_key_change(
    has_text: bool,
    has_vector: bool,
    key_changed: impl FnOnce() -> bool,
) -> bool {
    has_text && !has_vector && key_changed()
}

/// What a worker does with a queued row it has locked: a row queued is a
/// changed text, so it is embedded if it has text and cleared (already, by
/// the trigger) if not.
pub fn worker_action(has_text: bool) -> Action {
    columns::action(
        Event::TextChanged,
        Row {
            text: has_text,
            vector: false,
            label: columns::Label::Null,
        },
    )
}

/// What happens to a row whose try failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again after this many seconds.
    After(i64),
    /// Park it: no more tries until `embed_queue_retry`.
    Park,
}

/// After the `attempts`-th failed try (1 for the first) of at most
/// `max_attempts`: wait 2 s, 4 s, 8 s, ... up to [`RETRY_MAX_SECONDS`], or
/// park.
pub fn after_failure(attempts: i32, max_attempts: i32) -> Retry {
    if attempts >= max_attempts.max(1) {
        return Retry::Park;
    }
    let exp = (attempts.max(1) - 1).min(20) as u32;
    Retry::After((RETRY_BASE_SECONDS << exp).min(RETRY_MAX_SECONDS))
}

/// Queued keys a worker looks over to choose a batch, per row of a batch.
pub const CANDIDATES_PER_ROW: usize = 16;

/// Which of the candidate rows (oldest first, with their text lengths; None
/// for a row that is gone) make the next batch of at most `limit`: the
/// oldest, and those whose texts are nearest its length.  Texts of like
/// length run in micro-batches with little padding, so a worker's batches
/// come near one `embed_texts` call over all queued texts sorted by length;
/// the oldest row is always taken, so every row's wait stays bounded.
pub fn choose_batch(lengths: &[Option<usize>], limit: usize) -> Vec<usize> {
    let target = lengths.first().copied().flatten().unwrap_or(0);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (i != 0, lengths[i].unwrap_or(0).abs_diff(target), i));
    order.truncate(limit);
    order.sort_unstable();
    order
}

/// What a failed try keeps as its message in the queue table, which
/// `embed_queue_failures` shows: the message of an error clinembed raised
/// (`raised_by_clinembed`: its report names [`crate::ERROR_SOURCE`]), which
/// never holds note text; for any other error, one built here from its
/// SQLSTATE.  A message of PostgreSQL's or of the user's code (a trigger, a
/// constraint, a cast, a type's input function) may quote the row's values
/// (`invalid input syntax for type integer: "<text>"`), and the failures
/// view is read by roles that may not see the row.
pub fn failure_message(raised_by_clinembed: bool, sqlstate: &str, message: &str) -> String {
    if raised_by_clinembed {
        return message.to_string();
    }
    format!(
        "SQLSTATE {sqlstate}, raised by the table's own code (a trigger, constraint, cast or type) \
         or by PostgreSQL while the worker read or wrote the row; its message is not kept, \
         as it may quote the row (update the row's vector column yourself to see it)"
    )
}

/// Checks the worker's write of one row: `embedded` is the text its vector
/// was made of (`None`: the row had none, and the write cleared the
/// vector); `written` is the row's text as the write left it, after the
/// table's BEFORE UPDATE triggers, or `None` when a trigger skipped the
/// write.  A trigger that rewrites the text on every update would leave a
/// vector beside a text it was not made of, or, with the queue trigger on
/// every UPDATE, queue the row again at each write, for ever: either is a
/// failed try (SQLSTATE 27000), retried with backoff and then parked like
/// any other, never a loop.
pub fn check_written(embedded: Option<&str>, written: Option<Option<&str>>) -> Result<()> {
    let hint = "Make the table's triggers leave the text alone when only the vector column \
                changes (compare OLD and NEW), then call embed_queue_retry().";
    match written {
        None => Err(Error::new(
            ErrorKind::TriggeredChange,
            "a trigger of the table skipped the worker's write of a vector",
        )
        .detail("A BEFORE UPDATE trigger returned NULL for the update that writes the vector, so the row would never get one.")
        .hint(hint)),
        Some(after) if after != embedded => Err(Error::new(
            ErrorKind::TriggeredChange,
            "a trigger of the table changed the text while its vector was written",
        )
        .detail(format!(
            "The worker embedded a text of {} bytes; the table's BEFORE UPDATE triggers left one of {} bytes, which the vector would not describe.",
            embedded.map_or(0, str::len),
            after.map_or(0, str::len)
        ))
        .hint(hint)),
        Some(_) => Ok(()),
    }
}

/// Whether a queued key was printed under another primary key than the
/// table's now (`pkey`, the index it was queued under: `None` for keys
/// 0.10.0 queued, checked by their number of columns only).  Such a key
/// names no row, or the wrong one; the worker queues the table's rows
/// again under the current key instead of dropping it as deleted.
pub fn key_is_stale(
    pkey: Option<u32>,
    key_columns: usize,
    current: u32,
    columns_now: usize,
) -> bool {
    key_columns != columns_now || pkey.is_some_and(|p| p != current)
}

/// Lowers the calling thread's scheduling priority to `nice` (0-19): threads
/// it creates afterwards (ONNX Runtime's) inherit it.  Linux's nice value is
/// per thread.
pub fn lower_priority(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority on the calling thread (who 0).
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice.clamp(0, 19)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_printed_alike_everywhere_skip_the_fixed_settings() {
        for t in [
            "integer",
            "bigint",
            "text",
            "uuid",
            "character varying(20)",
            "numeric(10,2)",
            "integer[]",
        ] {
            assert!(key_text_is_stable(t), "{t}");
        }
        for t in [
            "date",
            "timestamp without time zone",
            "timestamp with time zone",
            "interval",
            "double precision",
            "real",
            "money",
            "time without time zone",
            "public.mydomain",
            "bytea",
        ] {
            assert!(!key_text_is_stable(t), "{t}");
        }
        let names: Vec<&str> = KEY_TEXT_SETTINGS.iter().map(|s| s.0).collect();
        for n in [
            "DateStyle",
            "IntervalStyle",
            "TimeZone",
            "extra_float_digits",
        ] {
            assert!(names.contains(&n), "{n}");
        }
    }

    #[test]
    fn the_trigger_clears_before_it_queues() {
        assert_eq!(
            queued(Action::Embed),
            Queued {
                clear: true,
                enqueue: true
            }
        );
        assert_eq!(
            queued(Action::Clear),
            Queued {
                clear: true,
                enqueue: false
            }
        );
        assert_eq!(
            queued(Action::Keep),
            Queued {
                clear: false,
                enqueue: false
            }
        );
    }

    #[test]
    fn a_waiting_row_whose_key_changes_is_queued_again() {
        assert!(requeue_on_key_change(true, false, || true));
        // the key alone, or a row that has its vector or no text: nothing
        assert!(!requeue_on_key_change(true, false, || false));
        assert!(!requeue_on_key_change(true, true, || unreachable!()));
        assert!(!requeue_on_key_change(false, false, || unreachable!()));
    }

    #[test]
    fn a_worker_embeds_text_and_clears_the_rest() {
        assert_eq!(worker_action(true), Action::Embed);
        assert_ne!(worker_action(false), Action::Embed);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_then_parks() {
        assert_eq!(after_failure(1, 5), Retry::After(2));
        assert_eq!(after_failure(2, 5), Retry::After(4));
        assert_eq!(after_failure(4, 5), Retry::After(16));
        assert_eq!(after_failure(5, 5), Retry::Park);
        assert_eq!(after_failure(9, 100), Retry::After(RETRY_MAX_SECONDS));
        assert_eq!(after_failure(60, 100), Retry::After(RETRY_MAX_SECONDS));
        // one try at least, whatever the setting says
        assert_eq!(after_failure(1, 0), Retry::Park);
        assert_eq!(after_failure(1, 1), Retry::Park);
    }

    #[test]
    fn a_batch_is_the_oldest_row_and_its_nearest_lengths() {
        let lengths = [Some(100), Some(900), Some(120), None, Some(95), Some(400)];
        assert_eq!(choose_batch(&lengths, 3), vec![0, 2, 4]);
        // the oldest is taken even when it is gone or longest
        assert_eq!(choose_batch(&[None, Some(5), Some(0)], 1), vec![0]);
        assert_eq!(
            choose_batch(&[Some(900), Some(5), Some(800)], 2),
            vec![0, 2]
        );
        // fewer candidates than the limit: all of them
        assert_eq!(choose_batch(&lengths, 10), vec![0, 1, 2, 3, 4, 5]);
        assert!(choose_batch(&[], 4).is_empty());
    }

    #[test]
    fn a_failure_keeps_only_messages_clinembed_wrote() {
        let ours = "the model returned 768 dimensions";
        assert_eq!(failure_message(true, "42804", ours), ours);
        let theirs = "invalid input syntax for type integer: \"Patient denies chest pain\"";
        let kept = failure_message(false, "22P02", theirs);
        assert!(kept.contains("22P02"), "{kept}");
        assert!(
            !kept.contains("Patient") && !kept.contains("integer"),
            "{kept}"
        );
    }

    #[test]
    fn a_write_is_checked_against_the_text_embedded() {
        assert!(check_written(Some("abc"), Some(Some("abc"))).is_ok());
        assert!(check_written(None, Some(None)).is_ok());
        let changed = check_written(Some("abc"), Some(Some("abc [rev 2]"))).unwrap_err();
        assert_eq!(changed.kind, ErrorKind::TriggeredChange);
        let detail = changed.detail.unwrap();
        assert!(
            detail.contains("3 bytes") && detail.contains("11 bytes"),
            "{detail}"
        );
        assert!(!detail.contains("abc"));
        // text given where there was none, or taken away
        assert!(check_written(None, Some(Some("x"))).is_err());
        assert!(check_written(Some("x"), Some(None)).is_err());
        // skipped by a trigger returning NULL
        assert_eq!(
            check_written(Some("x"), None).unwrap_err().kind,
            ErrorKind::TriggeredChange
        );
    }

    #[test]
    fn keys_of_another_primary_key_are_stale() {
        assert!(!key_is_stale(Some(7), 1, 7, 1));
        // the primary key replaced, even on the same columns
        assert!(key_is_stale(Some(7), 1, 9, 1));
        // queued by 0.10.0: known by its number of columns only
        assert!(!key_is_stale(None, 1, 9, 1));
        assert!(key_is_stale(None, 1, 9, 2));
        assert!(key_is_stale(Some(9), 2, 9, 1));
    }
}
