//! The resumable backfill's decisions: its arguments, where its scan goes
//! after each batch, when it is done, its refusals and what it reports.
//! Which tables it writes and the statements it runs on each are in
//! [`super::columns`]; the extension reads the catalog and the run's row for
//! these and runs the statements.
//!
//! A run scans the tables of its relation (the relation, its partitions and
//! inheritance children, in oid order) one after the other, each by ctid from
//! where the last batch stopped.  Rows written behind the scan, or skipped
//! while another session had them locked, are found by another pass; a pass
//! that finds nothing ends the run.  Nothing here ever sees note text.

use crate::error::{Error, ErrorKind, Result};

/// Seconds used instead of a shorter elapsed time, so the rate is finite.
const MIN_ELAPSED_SECS: f64 = 0.001;

/// The batch size, checked: at least one row.
pub fn check_batch_size(batch_size: Option<i32>) -> Result<i32> {
    match batch_size {
        Some(n) if n >= 1 => Ok(n),
        _ => Err(
            Error::new(ErrorKind::InvalidArgument, "batch_size must be positive")
                .detail(format!(
                    "batch_size is {}.",
                    batch_size.map_or("NULL".into(), |n| n.to_string())
                ))
                .hint("Use a few hundred rows per batch."),
        ),
    }
}

/// The error for a backfill called without a relation.
pub fn no_relation() -> Error {
    Error::new(ErrorKind::InvalidArgument, "relation must not be NULL")
        .detail("embed_backfill was called with a NULL relation.")
        .hint("Name the table to backfill: CALL embed_backfill('notes', 'exp_text', 'embedding').")
}

/// The refusal of a backfill on a server in recovery (a hot standby): it
/// writes vectors and records its run.
pub fn in_recovery() -> Error {
    Error::new(ErrorKind::ReadOnly, "cannot backfill on a server in recovery")
        .detail("This server is a hot standby (or still recovering); a backfill writes vectors and its progress.")
        .hint("Run embed_backfill on the primary; the standby receives its vectors by replication.")
}

/// The refusal of a backfill with `new_model` while backend `pid` runs one
/// of the same `relation` with `running_model`: the two would re-embed each
/// other's rows.  (A second backfill with the same model joins the first.)
pub fn other_model_running(
    relation: &str,
    pid: i32,
    running_model: &str,
    new_model: &str,
) -> Error {
    Error::new(
        ErrorKind::InUse,
        format!("another backfill of {relation} is running with another model"),
    )
    .detail(format!(
        "Backend {pid} embeds with {running_model}; this one would embed with {new_model}."
    ))
    .hint("Wait until it finishes, or stop it (pg_cancel_backend), then start this one.")
}

/// The error for a batch of a run that is not an unfinished run of this
/// backend (`run` None: no run given).
pub fn not_a_run(run: Option<i64>, pid: i32) -> Error {
    Error::new(
        ErrorKind::WrongState,
        "no backfill run of this session has that id",
    )
    .detail(format!(
        "Run {} is not an unfinished run of backend {pid}.",
        run.map_or("NULL".into(), |r| r.to_string())
    ))
    .hint("Start a backfill with CALL embed_backfill(...).")
}

/// The detail and hint that replace PostgreSQL's own when writing vectors
/// into `table` violates a constraint: its "Failing row contains (...)"
/// would carry the row's note text to the client and the server log.
pub fn constraint_violation_parts(table: &str) -> (String, &'static str) {
    (
        format!(
            "clinembed was writing vectors into {table}; the failing row is not shown, as it may hold note text."
        ),
        "Check the table's constraints on the embedding and model columns.",
    )
}

/// Where a run's scan stood, as its row records it, against the run's
/// tables as they are now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// No batch has run yet.
    Fresh,
    /// In the table at this index of the current tables.
    At(usize),
    /// In a table that is no longer one of them (detached or dropped).
    Lost,
}

/// Where the next batch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Index into the run's tables.
    pub table: usize,
    /// From the table's first row, rather than after the recorded ctid.
    pub from_start: bool,
    /// Whether this pass over the tables has found rows.
    pub found: bool,
}

/// Where a batch starts reading, from where the run's scan stood; None when
/// the run has no tables left.  A scan whose table is gone starts a new pass
/// from the first table, counted as having found rows, so that another pass
/// follows it: rows may have moved into the other tables meanwhile.
pub fn resume(at: Resume, tables: usize, found: bool) -> Option<Scan> {
    if tables == 0 {
        return None;
    }
    Some(match at {
        Resume::Fresh => Scan {
            table: 0,
            from_start: true,
            found,
        },
        Resume::At(i) if i < tables => Scan {
            table: i,
            from_start: false,
            found,
        },
        Resume::At(_) | Resume::Lost => Scan {
            table: 0,
            from_start: true,
            found: true,
        },
    })
}

/// Where the scan goes when `scan`'s table has no more rows that need work
/// after its position: the next table; after the last, a new pass from the
/// first if this pass found rows; else None, and the run is done.
pub fn after_empty(scan: Scan, tables: usize) -> Option<Scan> {
    if scan.table + 1 < tables {
        Some(Scan {
            table: scan.table + 1,
            from_start: true,
            found: scan.found,
        })
    } else if scan.found {
        Some(Scan {
            table: 0,
            from_start: true,
            found: false,
        })
    } else {
        None
    }
}

/// The NOTICE when a run starts.
pub fn started_notice(relation: &str, rows: i64, model_id: &str) -> String {
    format!("clinembed backfill of {relation}: {rows} rows to embed with {model_id}")
}

/// The NOTICE after each batch: rows done of the total, the rate since the
/// run started `elapsed_secs` ago, and the time left at that rate.
pub fn progress_notice(relation: &str, done: i64, total: i64, elapsed_secs: f64) -> String {
    let rate = done.max(0) as f64 / elapsed_secs.max(MIN_ELAPSED_SECS);
    let left = (total - done).max(0) as f64;
    let eta = if rate > 0.0 {
        clock((left / rate).round())
    } else {
        "unknown".into()
    };
    format!("clinembed backfill of {relation}: {done} of {total} rows, {rate:.1} rows/s, eta {eta}")
}

/// The NOTICE when a run ends.
pub fn finished_notice(relation: &str, done: i64, elapsed_secs: f64) -> String {
    format!(
        "clinembed backfill of {relation}: finished, {done} rows embedded in {}",
        clock(elapsed_secs.floor())
    )
}

/// Whole seconds as `HH:MM:SS`, hours past 24 as they are (PostgreSQL's
/// output of such an interval).
fn clock(secs: f64) -> String {
    let s = if secs.is_finite() && secs > 0.0 {
        secs.min(u64::MAX as f64) as u64
    } else {
        0
    };
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(table: usize, from_start: bool, found: bool) -> Scan {
        Scan {
            table,
            from_start,
            found,
        }
    }

    #[test]
    fn batch_size_must_be_positive() {
        assert_eq!(check_batch_size(Some(1)).unwrap(), 1);
        for bad in [Some(0), Some(-5), None] {
            let e = check_batch_size(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument);
            assert_eq!(e.message, "batch_size must be positive");
        }
        assert_eq!(
            check_batch_size(None).unwrap_err().detail.unwrap(),
            "batch_size is NULL."
        );
        assert_eq!(
            check_batch_size(Some(0)).unwrap_err().detail.unwrap(),
            "batch_size is 0."
        );
    }

    #[test]
    fn a_scan_resumes_where_it_stood_or_starts_a_pass_that_is_followed_by_another() {
        assert_eq!(resume(Resume::Fresh, 3, false), Some(scan(0, true, false)));
        assert_eq!(resume(Resume::At(2), 3, false), Some(scan(2, false, false)));
        assert_eq!(resume(Resume::At(1), 3, true), Some(scan(1, false, true)));
        // its table was detached or dropped: from the start, with a pass after
        assert_eq!(resume(Resume::Lost, 3, false), Some(scan(0, true, true)));
        assert_eq!(resume(Resume::At(3), 3, false), Some(scan(0, true, true)));
        // no tables left: done
        assert_eq!(resume(Resume::Fresh, 0, false), None);
        assert_eq!(resume(Resume::Lost, 0, true), None);
    }

    #[test]
    fn an_empty_table_moves_the_scan_on_and_a_pass_that_found_nothing_ends_it() {
        assert_eq!(
            after_empty(scan(0, false, false), 3),
            Some(scan(1, true, false))
        );
        assert_eq!(
            after_empty(scan(1, true, true), 3),
            Some(scan(2, true, true))
        );
        assert_eq!(
            after_empty(scan(2, false, true), 3),
            Some(scan(0, true, false))
        );
        assert_eq!(after_empty(scan(2, false, false), 3), None);
        assert_eq!(after_empty(scan(0, true, false), 1), None);
    }

    #[test]
    fn a_walk_visits_every_table_and_ends_after_a_pass_without_rows() {
        // tables with rows left after each pass: [2, 0, 1] then all empty
        let mut rows = [2, 0, 1];
        let mut at = resume(Resume::Fresh, 3, false);
        let mut batches = 0;
        while let Some(s) = at {
            if rows[s.table] > 0 {
                rows[s.table] -= 1;
                batches += 1;
                at = resume(Resume::At(s.table), 3, true);
            } else {
                at = after_empty(s, 3);
            }
            assert!(batches < 100, "the walk does not end");
        }
        assert_eq!(rows, [0, 0, 0]);
        assert_eq!(batches, 3);
    }

    #[test]
    fn notices_carry_names_counts_and_times() {
        assert_eq!(
            started_notice("public.notes", 10000, "m@1"),
            "clinembed backfill of public.notes: 10000 rows to embed with m@1"
        );
        assert_eq!(
            progress_notice("public.notes", 2560, 10000, 62.0),
            "clinembed backfill of public.notes: 2560 of 10000 rows, 41.3 rows/s, eta 00:03:00"
        );
        assert_eq!(
            progress_notice("t", 10, 10, 0.0),
            "clinembed backfill of t: 10 of 10 rows, 10000.0 rows/s, eta 00:00:00"
        );
        // more done than counted at the start (rows added meanwhile)
        assert!(progress_notice("t", 12, 10, 1.0).ends_with("12.0 rows/s, eta 00:00:00"));
        assert!(progress_notice("t", 1, 1_000_000, 1.0).ends_with("eta 277:46:39"));
        assert_eq!(
            finished_notice("public.notes", 42, 3725.9),
            "clinembed backfill of public.notes: finished, 42 rows embedded in 01:02:05"
        );
    }

    #[test]
    fn errors_name_the_run_and_the_models_not_the_rows() {
        let e = other_model_running("public.notes", 42, "a@1", "b@2");
        assert_eq!(e.kind, ErrorKind::InUse);
        assert_eq!(
            e.message,
            "another backfill of public.notes is running with another model"
        );
        assert_eq!(
            e.detail.unwrap(),
            "Backend 42 embeds with a@1; this one would embed with b@2."
        );
        let e = not_a_run(Some(7), 99);
        assert_eq!(e.kind, ErrorKind::WrongState);
        assert_eq!(
            e.detail.unwrap(),
            "Run 7 is not an unfinished run of backend 99."
        );
        assert_eq!(
            not_a_run(None, 99).detail.unwrap(),
            "Run NULL is not an unfinished run of backend 99."
        );
        assert_eq!(in_recovery().kind, ErrorKind::ReadOnly);
        let (detail, _) = constraint_violation_parts("public.t");
        assert!(detail.contains("public.t") && detail.contains("not shown"));
    }
}
