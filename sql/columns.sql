-- Embeddings that stay next to their rows: triggers, a resumable backfill with
-- progress, and provenance.  Included in the generated install script by
-- src/write/columns.rs; the upgrade scripts beside it carry the same objects
-- (tests/upgrade checks that an updated install equals a fresh one).
--
-- What to do with a row, the column checks, and every statement that reads
-- or writes a table's rows are built in the library (src/write/columns.rs over
-- clinembed_core::rows::columns), and so are the backfill's steps (src/write/backfill.rs
-- over clinembed_core::rows::backfill).  What stays here is the backfill's COMMIT
-- loop (a procedure's COMMIT needs PL/pgSQL), and its progress table and
-- view.
--
-- Conventions: every object is schema-qualified with @extschema@ or pg_catalog;
-- identifiers go through format('%I') and relations through regclass; no note
-- text ever reaches a message, only table and column names, counts and model
-- identities.

-- The row and statement triggers, embed_trigger and embed_batch_trigger, are
-- C functions (src/write/row_trigger.rs, src/write/batch_trigger.rs).

-- One row per backfill run: what it embeds, where its scan has got to, and
-- its progress; names and counts, never note text.  Everyone may read it.  A
-- role may add a run only for its own backend and only for a table it may
-- update, and may advance only its own backend's unfinished runs (row-level
-- security); the checks keep counts and names sane.
CREATE TABLE @extschema@.backfill_runs (
    run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid oid NOT NULL,
    source_column text NOT NULL CHECK (octet_length(source_column) < 64),
    target_column text NOT NULL CHECK (octet_length(target_column) < 64),
    model_column text CHECK (octet_length(model_column) < 64),
    model_id text NOT NULL CHECK (octet_length(model_id) <= 1024),
    batch_size integer NOT NULL CHECK (batch_size > 0),
    pid integer NOT NULL DEFAULT pg_catalog.pg_backend_pid(),
    started_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    finished_at timestamptz,
    rows_total bigint NOT NULL CHECK (rows_total >= 0),
    rows_done bigint NOT NULL DEFAULT 0 CHECK (rows_done >= 0),
    batches bigint NOT NULL DEFAULT 0 CHECK (batches >= 0),
    -- The scan: the table it is in (NULL before the first batch), the last
    -- row it took there, and whether this pass over the tables found rows.
    scan_relid oid,
    scan_tid tid,
    scan_found boolean NOT NULL DEFAULT false
);
REVOKE ALL ON @extschema@.backfill_runs FROM PUBLIC;
GRANT SELECT ON @extschema@.backfill_runs TO PUBLIC;
GRANT INSERT (relid, source_column, target_column, model_column, model_id, batch_size, rows_total)
    ON @extschema@.backfill_runs TO PUBLIC;
GRANT UPDATE (updated_at, finished_at, rows_done, batches, scan_relid, scan_tid, scan_found)
    ON @extschema@.backfill_runs TO PUBLIC;
ALTER TABLE @extschema@.backfill_runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY backfill_runs_read ON @extschema@.backfill_runs FOR SELECT USING (true);
CREATE POLICY backfill_runs_start ON @extschema@.backfill_runs FOR INSERT
    WITH CHECK (pid = pg_catalog.pg_backend_pid() AND finished_at IS NULL AND rows_done = 0 AND batches = 0
                AND pg_catalog.has_any_column_privilege(relid, 'UPDATE')
                AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a
                      WHERE a.attrelid = relid AND a.attnum > 0 AND NOT a.attisdropped
                        AND a.attname IN (source_column, target_column, model_column))
                    = CASE WHEN model_column IS NULL THEN 2 ELSE 3 END);
CREATE POLICY backfill_runs_advance ON @extschema@.backfill_runs FOR UPDATE
    USING (pid = pg_catalog.pg_backend_pid() AND finished_at IS NULL)
    WITH CHECK (pid = pg_catalog.pg_backend_pid());

-- Whether the backend of a run is still running it: alive, and busy with the
-- statement that started the run.  A cancelled backfill's session that stays
-- connected is not.  SECURITY DEFINER because pg_stat_activity hides other
-- roles' sessions; it tells only this, and only for backfill runs.
CREATE FUNCTION @extschema@._backfill_active(run bigint)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT FROM @extschema@.backfill_runs r JOIN pg_stat_activity a ON a.pid = r.pid
         WHERE r.run_id = run AND r.finished_at IS NULL
           AND a.backend_start <= r.started_at AND a.state = 'active' AND a.query_start <= r.started_at);
$$;

-- Progress of every backfill, for any session: running, done, or interrupted
-- (the backend that ran it is gone, or was cancelled and does other work).
CREATE VIEW @extschema@.backfill_status AS
SELECT r.run_id, r.relid::regclass::text AS relation, r.source_column, r.target_column, r.model_id, r.pid,
       CASE WHEN r.finished_at IS NOT NULL THEN 'done'
            WHEN @extschema@._backfill_active(r.run_id) THEN 'running'
            ELSE 'interrupted' END AS state,
       r.rows_done, r.rows_total, r.batches,
       round(100.0 * r.rows_done / nullif(r.rows_total, 0), 1) AS percent,
       round((r.rows_done / nullif(extract(epoch FROM r.updated_at - r.started_at), 0))::numeric, 2) AS rows_per_second,
       CASE WHEN r.finished_at IS NULL AND r.rows_done > 0
            THEN make_interval(secs => round(((r.rows_total - r.rows_done)
                 * extract(epoch FROM r.updated_at - r.started_at) / r.rows_done)::numeric))
       END AS eta,
       r.started_at, r.updated_at, r.finished_at
  FROM @extschema@.backfill_runs r;
GRANT SELECT ON @extschema@.backfill_status TO PUBLIC;

-- CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 256
--                     [, model_column => 'embedding_model']);
-- Embeds every row whose source is not NULL and whose target is NULL or, with
-- a model column, from another model, and clears the vector (and model) of
-- rows without text: the rule of _embed_needs_work('stored', ...); partitions
-- and inheritance children included.  Each batch is one transaction: it
-- locks its rows (SKIP LOCKED), embeds them in the library, writes them and
-- commits, with the run's progress.  Killed or restarted, it loses at most the batch in flight, and a
-- second CALL continues where the first stopped.  Call it outside a
-- transaction block.
-- A procedure that COMMITs cannot pin search_path, so this body calls only
-- schema-qualified functions and uses no operator: _backfill_start and
-- _backfill_batch, which pin it, do the work, and are told the caller's
-- search_path for the table's own triggers.
CREATE PROCEDURE @extschema@.embed_backfill(
    relation pg_catalog.regclass, source_column text, target_column text,
    batch_size integer DEFAULT 256, model_column text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    run bigint;
BEGIN
    run := @extschema@._backfill_start(relation, source_column, target_column, batch_size, model_column);
    COMMIT;
    WHILE @extschema@._backfill_batch(run, pg_catalog.current_setting('search_path')) LOOP
        COMMIT;
    END LOOP;
END;
$$;
