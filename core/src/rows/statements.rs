//! Every SQL statement the write paths build, and the conditions and
//! quoting they are built from: the rule's condition (the rows that need
//! work, derived state by state from [`super::columns::action`]), the
//! statement trigger's and the backfill's reads and writes, the one SET
//! list their writes share, the queue's statements on a table's rows, and
//! the statements on the extension's own tables (the queue, the backfill's
//! runs).  Identifiers and literals are quoted here; every function,
//! operator and type is named by schema, so a statement means the same
//! under any `search_path`.  Nothing here sees note text.

use super::columns::{action, Action, Columns, Event, Label, Row};
use crate::error::{Error, ErrorKind, Result};

/// An SQL boolean expression, true exactly for the rows whose [`action`]
/// under `event` is one of `wanted`: one term per text/vector state that has
/// any such row, with the model column's part only where the label decides.
/// Columns are read as `alias.column` (or unqualified when `alias` is empty);
/// `model_id` is the current identity, needed only when a label is compared
/// with it (an error otherwise).  Every operator and type is named by schema,
/// so the expression means the same under any `search_path`.
pub fn condition(
    event: Event,
    wanted: &[Action],
    columns: &Columns,
    alias: &str,
    model_id: Option<&str>,
) -> Result<String> {
    let col = |name: &str| {
        if alias.is_empty() {
            quote_ident(name)
        } else {
            format!("{alias}.{}", quote_ident(name))
        }
    };
    let null = |name: &str, is_null: bool| {
        format!("{} IS {}NULL", col(name), if is_null { "" } else { "NOT " })
    };
    let labels: &[Label] = match columns.model {
        Some(_) => &[Label::Null, Label::Current, Label::Other],
        None => &[Label::NoColumn],
    };
    let mut terms = Vec::new();
    for text in [false, true] {
        for vector in [false, true] {
            let hits: Vec<Label> = labels
                .iter()
                .copied()
                .filter(|&label| {
                    wanted.contains(&action(
                        event,
                        Row {
                            text,
                            vector,
                            label,
                        },
                    ))
                })
                .collect();
            if hits.is_empty() {
                continue;
            }
            let mut parts = vec![null(&columns.source, !text), null(&columns.target, !vector)];
            if hits.len() < labels.len() {
                let m = columns
                    .model
                    .as_deref()
                    .expect("several labels need a model column");
                let has = |l| hits.contains(&l);
                let compare = |op: &str| -> Result<String> {
                    let id = model_id.ok_or_else(|| {
                        Error::new(ErrorKind::InvalidArgument, "the rule needs the model identity")
                            .detail("The condition compares the model column with the current identity, and none was given.")
                            .hint("This is an internal function of clinembed's triggers and backfill.")
                    })?;
                    Ok(format!(
                        "{}::pg_catalog.text OPERATOR(pg_catalog.{op}) {}",
                        col(m),
                        quote_literal(id)
                    ))
                };
                parts.push(
                    match (has(Label::Null), has(Label::Current), has(Label::Other)) {
                        (true, false, false) => null(m, true),
                        (false, true, true) => null(m, false),
                        (false, true, false) => compare("=")?,
                        (false, false, true) => compare("<>")?,
                        (true, true, false) => format!("({} OR {})", null(m, true), compare("=")?),
                        (true, false, true) => format!("({} OR {})", null(m, true), compare("<>")?),
                        _ => unreachable!("some but not all labels"),
                    },
                );
            }
            terms.push(format!("({})", parts.join(" AND ")));
        }
    }
    Ok(if terms.is_empty() {
        "false".into()
    } else {
        format!("({})", terms.join(" OR "))
    })
}

/// The rows that need work (embedding or clearing) under `event`.
pub fn needs_work(
    event: Event,
    columns: &Columns,
    alias: &str,
    model_id: Option<&str>,
) -> Result<String> {
    condition(
        event,
        &[Action::Embed, Action::Clear],
        columns,
        alias,
        model_id,
    )
}

/// The statement trigger's statements, in one pass over the statement's
/// rows: a cursor over `read` hands them out `rows_per_call` at a time and
/// each call's vectors go back with `write`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStatements {
    /// The statement's rows that need work, in key order: each key column
    /// as text (`k1`, `k2`, ...) and the row's text (NULL: the row's vector
    /// is cleared), last.
    pub read: String,
    /// Writes one call's rows back by key: `$2`, then `$6`, `$7`, ... are
    /// `text[]`s, one per key column, holding the call's keys as `read`
    /// printed them, in order; the row at place `i` (1-based) gets elements
    /// `(i - 1) * $4 + 1 ..= i * $4` of `$3` (a `real[]` of the rows'
    /// vectors, one after another) cast to the target type, and the model
    /// identity `$5`; where `$1` (a `bool[]`, whether the row has a text)
    /// is false, NULL in both.
    pub write: String,
    /// How many key columns `read` prints, and `write` takes arrays of.
    pub key_columns: usize,
}

/// Builds the statement trigger's statements.  `table` is the table's
/// qualified, quoted name; `new_rows` and `old_rows` the transition tables
/// (`old_rows` for UPDATE); `keys` the primary key's columns with their
/// types as `format_type` prints them; `model_id` the current identity
/// (needed on INSERT only).  The statements name the table's columns only
/// through aliases (`n`, `o`, `r`), and their own columns are `k1..`, `txt`,
/// `has`, `ord`, so no column name of the table can clash.  A key goes out
/// as text and comes back as its type within one call of the trigger, under
/// the same settings, so it names the same row (a floating-point key
/// prints exactly where `extra_float_digits` is at least 1, PostgreSQL's
/// default; the trigger fixes it for the read: [`KEY_ROUND_TRIP_SETTINGS`]).
#[allow(clippy::too_many_arguments)]
pub fn batch_statements(
    table: &str,
    new_rows: &str,
    old_rows: Option<&str>,
    keys: &[(String, String)],
    columns: &Columns,
    target_type: &str,
    model_id: Option<&str>,
) -> Result<BatchStatements> {
    let key_select = keys
        .iter()
        .enumerate()
        .map(|(i, (k, _))| format!("n.{} AS k{}", quote_ident(k), i + 1))
        .collect::<Vec<_>>()
        .join(", ");
    let key_order = (1..=keys.len())
        .map(|i| format!("c.k{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let key_text = (1..=keys.len())
        .map(|i| format!("c.k{i}::pg_catalog.text"))
        .collect::<Vec<_>>()
        .join(", ");
    let source = quote_ident(&columns.source);
    let candidates = match old_rows {
        None => format!(
            "SELECT {key_select}, n.{source}::text AS txt FROM {} n WHERE {}",
            quote_ident(new_rows),
            needs_work(Event::Inserted, columns, "n", model_id)?
        ),
        // New rows are paired with old ones by key.  A row whose text changed
        // is a changed text; so is a row whose key has no old row (the
        // statement changed the key), since its vector was computed before
        // the statement.
        Some(old_rows) => {
            let pair = keys
                .iter()
                .map(|(k, _)| format!("o.{0} = n.{0}", quote_ident(k)))
                .collect::<Vec<_>>()
                .join(" AND ");
            format!(
                "SELECT {key_select}, n.{source}::text AS txt FROM {} n LEFT JOIN {} o ON {pair} \
                 WHERE (o.{} IS NULL OR n.{source} IS DISTINCT FROM o.{source}) AND {}",
                quote_ident(new_rows),
                quote_ident(old_rows),
                quote_ident(&keys[0].0),
                needs_work(Event::TextChanged, columns, "n", model_id)?
            )
        }
    };
    // $1 the has-text flags, $2 the first key column, $3..$5 what
    // `vector_set` names, $6.. the other key columns.
    let (unnest, names, key_match) =
        keys_as_text(keys, |i| if i == 0 { 2 } else { i + 5 }, "r", "b", "=");
    let unnest = format!("pg_catalog.unnest($1::pg_catalog.bool[]), {unnest}");
    Ok(BatchStatements {
        read: format!("SELECT {key_text}, c.txt FROM ({candidates}) c ORDER BY {key_order}"),
        write: format!(
            "UPDATE {table} r SET {} FROM ROWS FROM ({unnest}) WITH ORDINALITY AS b(has, {names}, ord) \
             WHERE {key_match}",
            vector_set(columns, target_type, "b.ord", "NOT b.has")
        ),
        key_columns: keys.len(),
    })
}

/// What the statement trigger fixes while it prints a call's keys as text
/// (see [`batch_statements`]): every other setting a key's text form
/// follows is the same when the write reads it back.
pub const KEY_ROUND_TRIP_SETTINGS: &[(&str, &str)] = &[("extra_float_digits", "3")];

/// The SET list of a write of one call's rows (the statement trigger's, the
/// backfill's, a queue worker's): row `ord` (1-based, an expression) gets elements
/// `(ord - 1) * $4 + 1 ..= ord * $4` of `$3` (a `real[]` of the call's
/// vectors one after another) cast to `target_type`, and the model column
/// `$5`; where `cleared` holds, both get NULL.  Operators are named by
/// schema: the backfill's statements run under the caller's `search_path`.
pub fn vector_set(columns: &Columns, target_type: &str, ord: &str, cleared: &str) -> String {
    let from = format!(
        "(({ord} OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog.*) $4 OPERATOR(pg_catalog.+) 1)::pg_catalog.int4"
    );
    let to = format!("({ord} OPERATOR(pg_catalog.*) $4)::pg_catalog.int4");
    let model = columns
        .model
        .as_deref()
        .map(|m| {
            format!(
                ", {} = CASE WHEN {cleared} THEN NULL ELSE $5 END",
                quote_ident(m)
            )
        })
        .unwrap_or_default();
    format!(
        "{} = CASE WHEN {cleared} THEN NULL ELSE ($3::pg_catalog.float4[])[{from} : {to}]::{target_type} END{model}",
        quote_ident(&columns.target)
    )
}

/// The backfill's statements for one table of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillStatements {
    /// `SELECT count(*)` of the table's rows that need work.
    pub count: String,
    /// Takes up to `$2` rows that need work after ctid `$1`, locking them
    /// and skipping locked ones: their ctids and texts.
    pub read: String,
    /// Writes the rows it took ([`ctid_write`]).
    pub write: String,
}

/// Builds the backfill's statements for `table` (qualified, quoted; its own
/// rows only, not its children's).  They run under the caller's
/// `search_path`, so every function, operator and type is named by schema.
pub fn backfill_statements(
    table: &str,
    columns: &Columns,
    target_type: &str,
    model_id: &str,
) -> Result<BackfillStatements> {
    let stale = needs_work(Event::Stored, columns, "", Some(model_id))?;
    Ok(BackfillStatements {
        count: format!("SELECT pg_catalog.count(*) FROM ONLY {table} WHERE {stale}"),
        read: format!(
            "SELECT ctid, {}::pg_catalog.text FROM ONLY {table} \
             WHERE ctid OPERATOR(pg_catalog.>) $1 AND {stale} LIMIT $2 FOR UPDATE SKIP LOCKED",
            quote_ident(&columns.source)
        ),
        write: ctid_write(table, columns, target_type),
    })
}

/// The write of one call's rows by ctid (the backfill's, a queue worker's):
/// `$1` (a `tid[]`) the rows, `$2` (a `bool[]`) which of them have a text,
/// and the vectors as [`vector_set`] takes them.  Returns, per row written,
/// its place in `$1` (1-based) and its text as the write left it (after the
/// table's BEFORE UPDATE triggers).
pub fn ctid_write(table: &str, columns: &Columns, target_type: &str) -> String {
    format!(
        "UPDATE ONLY {table} w SET {} \
         FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.tid[]), pg_catalog.unnest($2::pg_catalog.bool[])) \
         WITH ORDINALITY AS b(row_tid, has, ord) \
         WHERE w.ctid OPERATOR(pg_catalog.=) b.row_tid \
         RETURNING b.ord::pg_catalog.int4, w.{}::pg_catalog.text",
        vector_set(columns, target_type, "b.ord", "NOT b.has"),
        quote_ident(&columns.source)
    )
}

/// An SQL identifier, always quoted (any name, keywords included).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// An SQL string literal that reads the same whatever
/// `standard_conforming_strings` is (as PostgreSQL's `quote_literal`).
pub fn quote_literal(value: &str) -> String {
    let body = value.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

/// Keys handed to a statement as `text[]`s, one per key column (column
/// `i`, from 0, in parameter `param(i)`): the `unnest` calls for a `ROWS
/// FROM` (unnest with several arguments is syntax, not a function that can
/// be named by schema), the names they get there (`k1, k2, ...`), and the
/// match of `row`'s key columns with `from`'s names, each cast to its
/// column's type and compared with `eq`.
pub fn keys_as_text(
    keys: &[(String, String)],
    param: impl Fn(usize) -> usize,
    row: &str,
    from: &str,
    eq: &str,
) -> (String, String, String) {
    let unnest = (0..keys.len())
        .map(|i| format!("pg_catalog.unnest(${}::pg_catalog.text[])", param(i)))
        .collect::<Vec<_>>()
        .join(", ");
    let names = (1..=keys.len())
        .map(|i| format!("k{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let matched = keys
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| format!("{row}.{} {eq} {from}.k{}::{ty}", quote_ident(name), i + 1))
        .collect::<Vec<_>>()
        .join(" AND ");
    (unnest, names, matched)
}

/// The statement a worker locks and reads queued rows with: `$1`, `$2`, ...
/// are `text[]`s, one per key column, holding the queued keys in order; it
/// returns each found row's position in them (1-based), its ctid and its
/// text, and locks the rows, skipping rows another transaction has locked
/// (they stay queued).  `keys` are the key columns with their types as
/// `format_type` prints them; `table` is qualified and quoted.  Only the
/// table's own rows (`ONLY`): a partition's queue entries carry its own oid.
/// Without `lock`, the same rows without locking: which keys still exist.
pub fn claim_statement(table: &str, keys: &[(String, String)], source: &str, lock: bool) -> String {
    let (args, names, join) = keys_as_text(keys, |i| i + 1, "t", "q", "OPERATOR(pg_catalog.=)");
    format!(
        "SELECT q.ord::pg_catalog.int4, t.ctid, t.{}::pg_catalog.text \
         FROM ROWS FROM ({args}) WITH ORDINALITY AS q({names}, ord) \
         JOIN ONLY {table} t ON {join}{}",
        quote_ident(source),
        if lock {
            " FOR UPDATE OF t SKIP LOCKED"
        } else {
            ""
        }
    )
}

/// The statement a worker reads the text lengths of queued rows with (same
/// arguments as [`claim_statement`]): each found row's position and its
/// text's length in bytes (the third column, after the ctid), without locking.
pub fn lengths_statement(table: &str, keys: &[(String, String)], source: &str) -> String {
    claim_statement(table, keys, source, false).replacen(
        &format!("t.{}::pg_catalog.text", quote_ident(source)),
        &format!("pg_catalog.octet_length(t.{})", quote_ident(source)),
        1,
    )
}

/// The statement the trigger queues a row with (`$1` the table's oid, `$2`
/// its key as `text[]`, `$3` the primary key index that printed it).  A key already queued is queued again as a new
/// text version: its tries and failure are forgotten.
pub fn enqueue_statement(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.embed_queue AS q (relid, key, pkey) VALUES ($1, $2, $3) \
         ON CONFLICT (relid, key) DO UPDATE SET queued_at = EXCLUDED.queued_at, attempts = 0, \
         retry_at = NULL, parked_at = NULL, sqlstate = NULL, message = NULL, pkey = EXCLUDED.pkey"
    )
}

/// The statement `embed_queue_enqueue` queues a table's stored rows with:
/// every row the rule says needs work (a missing vector, another model's,
/// a vector beside no text), keys already queued left as they are.  Returns
/// nothing; its row count is the number queued.
pub fn enqueue_stored_statement(
    table: &str,
    relid: u32,
    pkey: u32,
    schema: &str,
    keys: &[String],
    columns: &Columns,
    model_id: &str,
) -> Result<String> {
    let key = keys
        .iter()
        .map(|k| format!("t.{}::pg_catalog.text", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(format!(
        "INSERT INTO {schema}.embed_queue (relid, key, pkey) \
         SELECT {relid}::pg_catalog.oid, ARRAY[{key}], {pkey}::pg_catalog.oid FROM ONLY {table} t WHERE {} \
         ON CONFLICT (relid, key) DO NOTHING",
        needs_work(Event::Stored, columns, "t", Some(model_id))?
    ))
}

/// When a queue entry is due: not parked, and its retry time (or, never
/// tried, its queue time) passed.
const DUE: &str = "parked_at IS NULL AND COALESCE(retry_at, queued_at) OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp()";

/// The statements on the queue's own tables, in the extension's schema
/// (`schema`, quoted).  Parameters are numbered as each field says.
pub struct QueueStatements {
    /// Seconds until the first unparked entry is due (negative: one is).
    pub next_due: String,
    /// `$1` table, `$2` key: the entry's next try number, row locked.
    pub next_attempt: String,
    /// `$1` table, `$2` key, `$3` tries, `$4` SQLSTATE, `$5` message, `$6`
    /// seconds to the retry, `$7` park it.
    pub record_failure: String,
    /// `$1` table, `$2` key: that one entry (ctid, key, pkey), unless
    /// parked or locked.
    pub take_key: String,
    /// `$1` the table to put last: the table of the oldest due entry.
    pub oldest_due_table: String,
    /// `$1` table, `$2` entry ctids as text: those entries, oldest first,
    /// unless locked.
    pub take_chosen: String,
    /// `$1` table, `$2` limit: its oldest due entries, unless locked.
    pub take_oldest: String,
    /// `$1` table, `$2` limit: candidate entries (ctid as text, key), oldest
    /// first, unlocked, for choosing a batch.
    pub candidates: String,
    /// `$1` an entry's ctid.
    pub delete_entry: String,
    /// `$1` table, `$2` rows written: one line of the recent throughput.
    pub record_done: String,
    /// Forgets throughput lines older than ten minutes.
    pub prune_done: String,
    /// `$1` table or NULL for all, `$2` role: queues again the parked rows
    /// of tables that role may update.
    pub retry_parked: String,
}

impl QueueStatements {
    pub fn new(schema: &str) -> Self {
        let q = format!("{schema}.embed_queue");
        let one = "relid OPERATOR(pg_catalog.=) $1 AND key OPERATOR(pg_catalog.=) $2";
        QueueStatements {
            next_due: format!(
                "SELECT EXTRACT(EPOCH FROM pg_catalog.min(COALESCE(retry_at, queued_at)) \
                 OPERATOR(pg_catalog.-) pg_catalog.clock_timestamp())::pg_catalog.float8 \
                 FROM {q} WHERE parked_at IS NULL"
            ),
            next_attempt: format!(
                "SELECT attempts OPERATOR(pg_catalog.+) 1 FROM {q} WHERE {one} FOR UPDATE"
            ),
            record_failure: format!(
                "UPDATE {q} SET attempts = $3, sqlstate = $4, message = $5, \
                 retry_at = pg_catalog.clock_timestamp() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => $6), \
                 parked_at = CASE WHEN $7 THEN pg_catalog.clock_timestamp() END \
                 WHERE {one}"
            ),
            take_key: format!(
                "SELECT ctid, key, pkey FROM {q} WHERE {one} \
                 AND parked_at IS NULL FOR UPDATE SKIP LOCKED"
            ),
            oldest_due_table: format!(
                "SELECT relid FROM {q} WHERE {DUE} \
                 ORDER BY relid OPERATOR(pg_catalog.=) $1, queued_at LIMIT 1"
            ),
            take_chosen: format!(
                "SELECT ctid, key, pkey FROM {q} WHERE relid OPERATOR(pg_catalog.=) $1 AND {DUE} \
                 AND ctid OPERATOR(pg_catalog.=) ANY ($2::pg_catalog.text[]::pg_catalog.tid[]) \
                 ORDER BY queued_at FOR UPDATE SKIP LOCKED"
            ),
            take_oldest: format!(
                "SELECT ctid, key, pkey FROM {q} WHERE relid OPERATOR(pg_catalog.=) $1 AND {DUE} \
                 ORDER BY queued_at LIMIT $2 FOR UPDATE SKIP LOCKED"
            ),
            candidates: format!(
                "SELECT ctid::pg_catalog.text, key FROM {q} WHERE relid OPERATOR(pg_catalog.=) $1 AND {DUE} \
                 ORDER BY queued_at LIMIT $2"
            ),
            delete_entry: format!("DELETE FROM {q} WHERE ctid OPERATOR(pg_catalog.=) $1"),
            record_done: format!(
                "INSERT INTO {schema}.embed_queue_done (relid, rows) VALUES ($1, $2)"
            ),
            prune_done: format!(
                "DELETE FROM {schema}.embed_queue_done WHERE done_at OPERATOR(pg_catalog.<) \
                 (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) interval '10 minutes')"
            ),
            retry_parked: format!(
                "UPDATE {q} q SET attempts = 0, retry_at = NULL, parked_at = NULL, sqlstate = NULL, \
                 message = NULL, queued_at = pg_catalog.clock_timestamp() \
                 WHERE q.parked_at IS NOT NULL AND ($1::pg_catalog.oid IS NULL OR q.relid OPERATOR(pg_catalog.=) $1) \
                 AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) q.relid) \
                 AND pg_catalog.has_table_privilege($2, q.relid, 'UPDATE')"
            ),
        }
    }

    #[cfg(test)]
    fn all(&self) -> [&str; 12] {
        [
            &self.next_due,
            &self.next_attempt,
            &self.record_failure,
            &self.take_key,
            &self.oldest_due_table,
            &self.take_chosen,
            &self.take_oldest,
            &self.candidates,
            &self.delete_entry,
            &self.record_done,
            &self.prune_done,
            &self.retry_parked,
        ]
    }
}

/// The statements on the backfill's record of its runs,
/// `schema.backfill_runs` (`schema` quoted).
pub struct RunStatements {
    /// `$1` table: one backfill of a table at a time, to the transaction's end.
    pub lock: String,
    /// `$1` table, `$2` model identity: (pid, model) of a live run on the
    /// table with another model.
    pub other_model_running: String,
    /// `$1`..`$7` table, source, target, model column, model identity, batch
    /// size, rows in all: the new run's id.
    pub start: String,
    /// `$1` run: its row, if it is this backend's and unfinished.
    pub read: String,
    /// `$1` run, `$2` rows done, `$3` table, `$4` ctid the scan stands at:
    /// seconds since the start.
    pub record_batch: String,
    /// `$1` run: seconds it took.
    pub finish: String,
}

impl RunStatements {
    pub fn new(schema: &str) -> Self {
        let runs = format!("{schema}.backfill_runs");
        RunStatements {
            lock: "SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('clinembed backfill'), $1)"
                .to_string(),
            other_model_running: format!(
                "SELECT r.pid, r.model_id FROM {runs} r \
                 WHERE r.relid OPERATOR(pg_catalog.=) $1 AND r.finished_at IS NULL \
                 AND r.model_id OPERATOR(pg_catalog.<>) $2 \
                 AND {schema}._backfill_active(r.run_id) LIMIT 1"
            ),
            start: format!(
                "INSERT INTO {runs} \
                 (relid, source_column, target_column, model_column, model_id, batch_size, rows_total) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING run_id"
            ),
            read: format!(
                "SELECT b.relid, b.source_column, b.target_column, b.model_column, b.model_id, b.batch_size, \
                 b.rows_total, b.rows_done, b.scan_relid, b.scan_tid, b.scan_found \
                 FROM {runs} b \
                 WHERE b.run_id OPERATOR(pg_catalog.=) $1 AND b.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid() \
                 AND b.finished_at IS NULL"
            ),
            record_batch: format!(
                "UPDATE {runs} b \
                 SET rows_done = $2, batches = b.batches OPERATOR(pg_catalog.+) 1, updated_at = pg_catalog.clock_timestamp(), \
                 scan_relid = $3, scan_tid = $4, scan_found = true \
                 WHERE b.run_id OPERATOR(pg_catalog.=) $1 \
                 RETURNING pg_catalog.date_part('epoch', b.updated_at OPERATOR(pg_catalog.-) b.started_at)"
            ),
            finish: format!(
                "UPDATE {runs} b \
                 SET finished_at = pg_catalog.clock_timestamp(), updated_at = pg_catalog.clock_timestamp(), \
                 scan_relid = NULL, scan_tid = NULL \
                 WHERE b.run_id OPERATOR(pg_catalog.=) $1 \
                 RETURNING pg_catalog.date_part('epoch', b.finished_at OPERATOR(pg_catalog.-) b.started_at)"
            ),
        }
    }

    /// Each statement and the parameters it takes.
    #[cfg(test)]
    fn all(&self) -> [(&str, usize); 6] {
        [
            (&self.lock, 1),
            (&self.other_model_running, 2),
            (&self.start, 7),
            (&self.read, 1),
            (&self.record_batch, 4),
            (&self.finish, 1),
        ]
    }
}

// Catalog reads of the extension crate.  Every relation is pg_catalog's, and
// every operator is named by schema, like the statements above.

/// Whether the current database allows connections.
pub const ALLOWS_CONNECTIONS: &str = "SELECT datallowconn FROM pg_catalog.pg_database \
     WHERE datname OPERATOR(pg_catalog.=) pg_catalog.current_database()";

/// Whether a transaction prepared for two-phase commit is open in the
/// current database.
pub const PREPARED_XACTS: &str = "SELECT EXISTS (SELECT FROM pg_catalog.pg_prepared_xacts \
     WHERE database OPERATOR(pg_catalog.=) pg_catalog.current_database())";

/// Whether clinembed is installed in this database.
pub const EXTENSION_INSTALLED: &str = "SELECT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'clinembed')";

/// `$1` a relation oid: true when it is an ordinary table (no row: it is
/// not, or is gone).
pub const IS_ORDINARY_TABLE: &str = "SELECT true FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.=) $1 AND relkind OPERATOR(pg_catalog.=) 'r'";

/// `$1` a table, `$2` a role, `$3` events (`pg_trigger.tgtype` bits,
/// [`ON_UPDATE`] or [`ON_INSERT_OR_DELETE`]): the first (by name) enabled
/// trigger on it that fires on one of them, neither PostgreSQL's internal
/// one nor clinembed's, whose function's owner lacks that role's rights:
/// the trigger's and the owner's names.
pub const FOREIGN_TRIGGER: &str = "SELECT t.tgname::pg_catalog.text, r.rolname::pg_catalog.text \
     FROM pg_catalog.pg_trigger t \
     JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.tgfoid \
     JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) p.proowner \
     WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 AND NOT t.tgisinternal \
     AND (t.tgenabled OPERATOR(pg_catalog.=) 'O' OR t.tgenabled OPERATOR(pg_catalog.=) 'A') \
     AND (t.tgtype::pg_catalog.int4 OPERATOR(pg_catalog.&) $3) OPERATOR(pg_catalog.<>) 0 \
     AND NOT pg_catalog.pg_has_role(p.proowner, $2, 'USAGE') \
     AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d \
     JOIN pg_catalog.pg_extension e ON e.oid OPERATOR(pg_catalog.=) d.refobjid \
     WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass \
     AND d.objid OPERATOR(pg_catalog.=) p.oid AND d.deptype OPERATOR(pg_catalog.=) 'e' \
     AND e.extname OPERATOR(pg_catalog.=) 'clinembed') \
     ORDER BY t.tgname LIMIT 1";

/// `pg_trigger.tgtype`'s bit for UPDATE: what a worker's write of a row's
/// vector fires.
pub const ON_UPDATE: i32 = 16;
/// Its bits for INSERT and DELETE: what a worker's write of chunk rows fires.
pub const ON_INSERT_OR_DELETE: i32 = 4 | 8;

/// `$1` a relation oid: its name as `regclass` prints it, for messages.
pub const RELATION_NAME: &str = "SELECT $1::pg_catalog.regclass::pg_catalog.text";

/// `$1` a relation oid: its schema-qualified, quoted name, for statements.
pub const QUALIFIED_NAME: &str = "SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace \
     WHERE c.oid OPERATOR(pg_catalog.=) $1";

/// The installed extension's schema, quoted.
pub const EXTENSION_SCHEMA: &str =
    "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e \
     JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace \
     WHERE e.extname OPERATOR(pg_catalog.=) 'clinembed'";

/// The sectionizer's rules in the order they apply (a rule you added after
/// a seeded one for the same header, which it overrides): headers and
/// canonical names as two arrays.  `schema` is the extension's, quoted.
pub fn section_rules(schema: &str) -> String {
    format!(
        "SELECT pg_catalog.array_agg(header ORDER BY seeded DESC, header), \
         pg_catalog.array_agg(name ORDER BY seeded DESC, header) FROM {schema}.embed_section_rules"
    )
}

/// `$1` a table, `$2` a column name: the column's type as printed, the
/// type's name and category, and the column's typmod (no row: no such
/// column).
pub const TARGET_COLUMN: &str = "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod), t.typname::pg_catalog.text, \
     t.typcategory::pg_catalog.text, a.atttypmod \
     FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) a.atttypid \
     WHERE a.attrelid OPERATOR(pg_catalog.=) $1 AND a.attname OPERATOR(pg_catalog.=) $2 \
     AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped";

/// `$1` a table: its primary key's columns and their types, in key order.
pub const PRIMARY_KEY: &str = "SELECT pg_catalog.array_agg(a.attname::pg_catalog.text ORDER BY k.n), \
     pg_catalog.array_agg(pg_catalog.format_type(a.atttypid, a.atttypmod) ORDER BY k.n) \
     FROM pg_catalog.pg_index i \
     CROSS JOIN LATERAL pg_catalog.unnest(i.indkey::pg_catalog.int2[]) WITH ORDINALITY AS k(attnum, n) \
     JOIN pg_catalog.pg_attribute a ON a.attrelid OPERATOR(pg_catalog.=) i.indrelid AND a.attnum OPERATOR(pg_catalog.=) k.attnum \
     WHERE i.indrelid OPERATOR(pg_catalog.=) $1 AND i.indisprimary";

/// `$1` a table: it and every partition and child under it (oid, name,
/// relkind), by oid.
pub const RELATION_TREE: &str = "WITH RECURSIVE tree(relid) AS (SELECT $1 UNION \
     SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent OPERATOR(pg_catalog.=) tree.relid) \
     SELECT c.oid, c.oid::pg_catalog.regclass::pg_catalog.text, c.relkind::pg_catalog.text \
     FROM tree JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tree.relid ORDER BY c.oid";

/// `$1` a table, `$2` a column, `$3` a privilege: whether the current role holds it.
pub const COLUMN_PRIVILEGE: &str = "SELECT pg_catalog.has_column_privilege($1, $2, $3)";

/// `$1` a role oid: its name.
pub const ROLE_NAME: &str =
    "SELECT rolname::pg_catalog.text FROM pg_catalog.pg_roles WHERE oid OPERATOR(pg_catalog.=) $1";

/// The current role's name, quoted.
pub const CURRENT_ROLE: &str = "SELECT pg_catalog.quote_ident(current_user::pg_catalog.text)";

/// `$1` the extension's oid: its schema (quoted), the queue table's owner
/// and oid.
pub const QUEUE_TABLE: &str =
    "SELECT pg_catalog.quote_ident(n.nspname), c.relowner, c.oid FROM pg_catalog.pg_extension e \
     JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace \
     JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) n.oid \
     AND c.relname OPERATOR(pg_catalog.=) 'embed_queue' \
     WHERE e.oid OPERATOR(pg_catalog.=) $1";

/// `$1` a table: its first (by name) enabled queue trigger's name and
/// arguments, the owner of the table it was created on (a partition's
/// clone leads up to its parent's), its function, and how many enabled
/// queue triggers the table has.
pub const QUEUE_TRIGGER: &str = "WITH RECURSIVE found AS ( \
     SELECT t.tgname::pg_catalog.text AS name, t.tgargs AS args, t.oid, t.tgparentid, t.tgrelid, \
     p.proname::pg_catalog.text AS function, pg_catalog.count(*) OVER () AS n \
     FROM pg_catalog.pg_trigger t \
     JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.tgfoid \
     JOIN pg_catalog.pg_extension e ON e.extnamespace OPERATOR(pg_catalog.=) p.pronamespace \
     AND e.extname OPERATOR(pg_catalog.=) 'clinembed' \
     WHERE t.tgrelid OPERATOR(pg_catalog.=) $1 \
     AND p.proname OPERATOR(pg_catalog.=) ANY ('{embed_queue_trigger,embed_chunks_trigger}'::pg_catalog.name[]) \
     AND t.tgenabled OPERATOR(pg_catalog.<>) 'D' \
     ORDER BY t.tgname LIMIT 1), \
     up AS ( \
     SELECT oid, tgparentid, tgrelid FROM found \
     UNION ALL \
     SELECT t.oid, t.tgparentid, t.tgrelid FROM pg_catalog.pg_trigger t \
     JOIN up ON t.oid OPERATOR(pg_catalog.=) up.tgparentid) \
     SELECT f.name, f.args, c.relowner, f.function, f.n FROM found f, up \
     JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) up.tgrelid \
     WHERE up.tgparentid OPERATOR(pg_catalog.=) 0::pg_catalog.oid";

/// `$1` a chunk table's name as the trigger names it (quoted or not,
/// qualified or not), `$2` the notes table: the chunk table's oid, looked
/// up in the notes table's schema when the name is not qualified (for a
/// partition, the schema of the partitioned table at its top, where the
/// trigger was created).
pub const CHUNK_TABLE: &str = "WITH named AS (SELECT pg_catalog.parse_ident($1) AS a) \
     SELECT c.oid FROM named n, pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace s ON s.oid OPERATOR(pg_catalog.=) c.relnamespace \
     WHERE c.relname OPERATOR(pg_catalog.=) n.a[pg_catalog.array_length(n.a, 1)] \
     AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p}'::pg_catalog.\"char\"[]) \
     AND pg_catalog.array_length(n.a, 1) OPERATOR(pg_catalog.<=) 2 \
     AND s.oid OPERATOR(pg_catalog.=) CASE WHEN pg_catalog.array_length(n.a, 1) OPERATOR(pg_catalog.=) 2 \
     THEN (SELECT x.oid FROM pg_catalog.pg_namespace x WHERE x.nspname OPERATOR(pg_catalog.=) n.a[1]) \
     ELSE (SELECT r.relnamespace FROM pg_catalog.pg_class r WHERE r.oid OPERATOR(pg_catalog.=) \
     COALESCE(pg_catalog.pg_partition_root($2::pg_catalog.regclass)::pg_catalog.oid, $2)) END";

/// `$1` a table, `$2` a role: the first relation of the table's tree (the
/// table, its partitions and inheritance children) whose owner lacks that
/// role's rights: its name and its owner's.  A worker that writes the tree
/// as `$2` would run that owner's code (defaults, rules, policies, checks,
/// index expressions) with more rights than its author has.
pub const FOREIGN_OWNED_MEMBER: &str = "WITH RECURSIVE tree(relid) AS (SELECT $1 UNION \
     SELECT i.inhrelid FROM pg_catalog.pg_inherits i JOIN tree ON i.inhparent OPERATOR(pg_catalog.=) tree.relid) \
     SELECT c.oid::pg_catalog.regclass::pg_catalog.text, r.rolname::pg_catalog.text \
     FROM tree JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) tree.relid \
     JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) c.relowner \
     WHERE NOT pg_catalog.pg_has_role(c.relowner, $2, 'USAGE') ORDER BY c.oid LIMIT 1";

/// `$1` a role, `$2` a relation, `$3` privileges and `$4` columns (`''`:
/// the privilege on the table): the 1-based positions of those the role
/// lacks, or NULL when it has them all.
pub const PRIVILEGES_LACKED: &str = "SELECT pg_catalog.array_agg(w.n::pg_catalog.int4 ORDER BY w.n) \
     FROM ROWS FROM (pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[])) \
     WITH ORDINALITY AS w(p, c, n) \
     WHERE NOT CASE WHEN w.c OPERATOR(pg_catalog.=) '' THEN pg_catalog.has_table_privilege($1, $2, w.p) \
     ELSE pg_catalog.has_column_privilege($1, $2, w.c, w.p) END";

/// Every catalog read above, for the tests.
#[cfg(test)]
const CATALOG_READS: [&str; 19] = [
    ALLOWS_CONNECTIONS,
    PREPARED_XACTS,
    EXTENSION_INSTALLED,
    IS_ORDINARY_TABLE,
    FOREIGN_TRIGGER,
    RELATION_NAME,
    QUALIFIED_NAME,
    EXTENSION_SCHEMA,
    TARGET_COLUMN,
    PRIMARY_KEY,
    RELATION_TREE,
    COLUMN_PRIVILEGE,
    ROLE_NAME,
    CURRENT_ROLE,
    QUEUE_TABLE,
    QUEUE_TRIGGER,
    CHUNK_TABLE,
    FOREIGN_OWNED_MEMBER,
    PRIVILEGES_LACKED,
];

/// The highest `$n` a statement names, and whether it names every one below
/// it too.
#[cfg(test)]
pub(crate) fn parameters(sql: &str) -> (usize, bool) {
    let mut seen = std::collections::BTreeSet::new();
    let b = sql.as_bytes();
    for (i, _) in sql.match_indices('$') {
        let digits: String = b[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .map(|&c| c as char)
            .collect();
        if let Ok(n) = digits.parse::<usize>() {
            seen.insert(n);
        }
    }
    let max = seen.iter().next_back().copied().unwrap_or(0);
    (max, seen.len() == max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Event::*;

    fn columns(model: Option<&str>) -> Columns {
        Columns {
            source: "note".into(),
            target: "emb".into(),
            model: model.map(Into::into),
        }
    }

    #[test]
    fn condition_names_one_term_per_state_that_needs_work() {
        let c = needs_work(Stored, &columns(None), "", None).unwrap();
        // stored, no model column: text without vector; no text with vector
        assert_eq!(
            c,
            "((\"note\" IS NULL AND \"emb\" IS NOT NULL) OR (\"note\" IS NOT NULL AND \"emb\" IS NULL))"
        );
        let c = needs_work(Inserted, &columns(Some("m")), "n", Some("m@1")).unwrap();
        assert!(
            c.contains("n.\"m\"::pg_catalog.text OPERATOR(pg_catalog.<>) 'm@1'"),
            "{c}"
        );
        // a changed text never consults the identity
        let c = needs_work(TextChanged, &columns(Some("m")), "n", None).unwrap();
        assert!(!c.contains("OPERATOR"), "{c}");
        // the backfill does, and refuses to guess
        assert!(needs_work(Stored, &columns(Some("m")), "", None).is_err());
        assert_eq!(
            condition(TextUnchanged, &[Embed, Clear], &columns(None), "", None).unwrap(),
            "false"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("select"), "\"select\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b'"), "E'a\\\\b'''");
    }

    #[test]
    fn batch_and_backfill_statements() {
        let keys = [
            ("id".to_string(), "bigint".to_string()),
            ("Part".to_string(), "public.site".to_string()),
        ];
        let batch = |old_rows, model_id| {
            batch_statements(
                "public.t",
                "new_rows",
                old_rows,
                &keys,
                &columns(Some("m")),
                "vector(384)",
                model_id,
            )
        };
        let insert = batch(None, Some("x@1")).unwrap();
        assert!(
            insert.read.starts_with(
                "SELECT c.k1::pg_catalog.text, c.k2::pg_catalog.text, c.txt FROM \
                 (SELECT n.\"id\" AS k1, n.\"Part\" AS k2, n.\"note\"::text AS txt FROM \"new_rows\" n WHERE "
            ),
            "{}",
            insert.read
        );
        assert!(insert.read.ends_with(") c ORDER BY c.k1, c.k2"));
        assert_eq!(
            insert.write,
            "UPDATE public.t r SET \"emb\" = CASE WHEN NOT b.has THEN NULL ELSE \
             ($3::pg_catalog.float4[])[((b.ord OPERATOR(pg_catalog.-) 1) \
             OPERATOR(pg_catalog.*) $4 OPERATOR(pg_catalog.+) 1)::pg_catalog.int4 : \
             (b.ord OPERATOR(pg_catalog.*) $4)::pg_catalog.int4]::vector(384) END, \
             \"m\" = CASE WHEN NOT b.has THEN NULL ELSE $5 END \
             FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.bool[]), pg_catalog.unnest($2::pg_catalog.text[]), \
             pg_catalog.unnest($6::pg_catalog.text[])) WITH ORDINALITY AS b(has, k1, k2, ord) \
             WHERE r.\"id\" = b.k1::bigint AND r.\"Part\" = b.k2::public.site"
        );
        // every parameter below the highest is named
        assert_eq!(parameters(&insert.write), (6, true));
        assert_eq!(parameters(&insert.read), (0, true));
        // an INSERT compares labels, so it needs the identity; an UPDATE does not
        assert!(batch(None, None).is_err());
        let update = batch(Some("old_rows"), None).unwrap();
        assert!(update.read.contains(
            "LEFT JOIN \"old_rows\" o ON o.\"id\" = n.\"id\" AND o.\"Part\" = n.\"Part\""
        ));
        // one key column: its array is $2, and no $6
        let one = batch_statements(
            "public.t",
            "new_rows",
            None,
            &keys[..1],
            &columns(None),
            "real[]",
            Some("x@1"),
        )
        .unwrap();
        assert_eq!(parameters(&one.write), (4, true));
        let b = backfill_statements("public.t", &columns(None), "real[]", "x@1").unwrap();
        assert!(b
            .count
            .starts_with("SELECT pg_catalog.count(*) FROM ONLY public.t WHERE "));
        assert!(b.read.ends_with("LIMIT $2 FOR UPDATE SKIP LOCKED"));
        assert!(b.write.starts_with(
            "UPDATE ONLY public.t w SET \"emb\" = CASE WHEN NOT b.has THEN NULL ELSE \
             ($3::pg_catalog.float4[])[((b.ord OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog.*) $4 \
             OPERATOR(pg_catalog.+) 1)::pg_catalog.int4 : (b.ord OPERATOR(pg_catalog.*) $4)::pg_catalog.int4]::real[] END FROM"
        ));
        // the model column is set only when there is one
        assert!(!b.write.contains("$5"));
        assert!(ctid_write("public.t", &columns(Some("m")), "real[]")
            .contains(", \"m\" = CASE WHEN NOT b.has THEN NULL ELSE $5 END FROM ROWS FROM"));
        assert!(b
            .write
            .ends_with("RETURNING b.ord::pg_catalog.int4, w.\"note\"::pg_catalog.text"));
        assert!(![&b.read, &b.write, &insert.read, &insert.write]
            .iter()
            .any(|s| s.contains("embed_texts")));
    }

    #[test]
    fn claim_joins_every_key_column_with_its_type() {
        let keys = vec![
            ("site".to_string(), "text".to_string()),
            ("Id".to_string(), "bigint".to_string()),
        ];
        let s = claim_statement("\"public\".\"notes\"", &keys, "exp text", true);
        assert!(
            s.contains("ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[])) WITH ORDINALITY AS q(k1, k2, ord)"),
            "{s}"
        );
        assert!(
            s.contains("t.\"site\" OPERATOR(pg_catalog.=) q.k1::text AND t.\"Id\" OPERATOR(pg_catalog.=) q.k2::bigint"),
            "{s}"
        );
        assert!(s.contains("t.\"exp text\"::pg_catalog.text"), "{s}");
        assert!(s.contains("JOIN ONLY \"public\".\"notes\" t"), "{s}");
        assert!(s.ends_with("FOR UPDATE OF t SKIP LOCKED"), "{s}");
        let peek = claim_statement("\"public\".\"notes\"", &keys, "exp text", false);
        assert_eq!(peek, s.replace(" FOR UPDATE OF t SKIP LOCKED", ""));
    }

    #[test]
    fn lengths_read_the_same_rows_without_the_text() {
        let keys = vec![("id".to_string(), "int4".to_string())];
        let s = lengths_statement("x.t", &keys, "note");
        assert_eq!(
            s,
            claim_statement("x.t", &keys, "note", false).replace(
                "t.\"note\"::pg_catalog.text",
                "pg_catalog.octet_length(t.\"note\")"
            )
        );
        assert!(!s.contains("FOR UPDATE"));
    }

    #[test]
    fn enqueue_stored_takes_the_rules_condition() {
        let c = Columns {
            source: "n".into(),
            target: "e".into(),
            model: Some("m".into()),
        };
        let s = enqueue_stored_statement("x.t", 42, 7, "ce", &["id".into()], &c, "m@1").unwrap();
        let want = needs_work(Event::Stored, &c, "t", Some("m@1")).unwrap();
        assert!(s.contains(&want), "{s}");
        assert!(s.contains(
            "SELECT 42::pg_catalog.oid, ARRAY[t.\"id\"::pg_catalog.text], 7::pg_catalog.oid"
        ));
        assert!(s.ends_with("ON CONFLICT (relid, key) DO NOTHING"));
        assert!(enqueue_stored_statement("x.t", 42, 7, "ce", &["id".into()], &c, "m@1").is_ok());
    }

    #[test]
    fn the_queue_and_run_statements_name_their_tables_and_every_operator_by_schema() {
        let q = QueueStatements::new("\"my schema\"");
        let expected = [0, 2, 7, 2, 1, 2, 2, 2, 1, 2, 0, 2];
        for (sql, want) in q.all().iter().zip(expected) {
            assert!(sql.contains("\"my schema\".embed_queue"), "{sql}");
            assert_eq!(parameters(sql), (want, true), "{sql}");
            for bare in [" < ", " <= ", " > ", " <> ", " - ", " + "] {
                assert!(!sql.contains(bare), "{bare} in {sql}");
            }
        }
        let r = RunStatements::new("\"my schema\"");
        for (sql, want) in r.all() {
            assert_eq!(parameters(sql), (want, true), "{sql}");
            assert!(!sql.contains(" <> ") && !sql.contains(" - "), "{sql}");
        }
        assert!(r.all()[1..]
            .iter()
            .all(|(s, _)| s.contains("\"my schema\".backfill_runs")));
        // a WHERE comparison uses pg_catalog's operator; `=` only assigns
        assert!(!q.take_key.contains(" = "));
        assert!(q.record_failure.ends_with("key OPERATOR(pg_catalog.=) $2"));
    }

    #[test]
    fn catalog_reads_read_pg_catalog_only_and_compare_with_its_operators() {
        for sql in CATALOG_READS {
            // the relations a clause names: pg_catalog's, or a CTE's
            let words: Vec<&str> = sql.split_whitespace().collect();
            for pair in words.windows(2) {
                if matches!(pair[0], "FROM" | "JOIN") && !pair[1].starts_with('(') {
                    assert!(
                        pair[1].starts_with("pg_catalog.")
                            || ["tree", "found", "up", "named", "LATERAL", "ROWS"]
                                .contains(&pair[1]),
                        "{} in {sql}",
                        pair[1]
                    );
                }
            }
            for bare in [" = ", " <> ", " < ", " > ", " & "] {
                assert!(!sql.contains(bare), "{bare} in {sql}");
            }
            let (max, contiguous) = parameters(sql);
            assert!(contiguous, "{sql}");
            assert!(max <= 4, "{sql}");
        }
    }
}
