-- The embedding queue: rows whose text needs embedding, by key, drained by
-- background workers (src/write/queue.rs, src/bgworker/worker.rs).  Included in the
-- generated install script by src/write/enqueue.rs.  The queue holds a table's oid
-- and a row's primary key as text, never note text; failures keep their
-- SQLSTATE and message.  It belongs to the extension's owner: the trigger
-- and the functions write it for the rows a role may write, and everyone
-- sees the status of the tables they may read.

CREATE TABLE @extschema@.embed_queue (
    relid oid NOT NULL,
    key text[] NOT NULL,
    -- when this text version was queued
    queued_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    -- failed tries of this version, when the next may run, when it was parked
    attempts integer NOT NULL DEFAULT 0,
    retry_at timestamptz,
    parked_at timestamptz,
    sqlstate text,
    message text,
    -- the primary key index the key was printed by (NULL: queued by
    -- 0.10.0): a key queued under a primary key the table no longer has
    -- makes the worker queue the table's rows again under the new one
    pkey oid,
    PRIMARY KEY (relid, key)
);
CREATE INDEX embed_queue_due ON @extschema@.embed_queue (queued_at) WHERE parked_at IS NULL;
REVOKE ALL ON @extschema@.embed_queue FROM PUBLIC;

-- Rows written per batch over the last ten minutes, for the rate.
CREATE TABLE @extschema@.embed_queue_done (
    relid oid NOT NULL,
    done_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    rows integer NOT NULL
);
REVOKE ALL ON @extschema@.embed_queue_done FROM PUBLIC;

-- Per table: rows waiting (pending, of which retrying after a failure),
-- rows in a worker's batch now, rows parked, the age of the oldest waiting
-- row, and rows written per second over the last minute.  Tables the
-- current role may read only.
CREATE VIEW @extschema@.embed_queue_status AS
WITH q AS (
    SELECT relid,
           pg_catalog.count(*) FILTER (WHERE parked_at IS NULL) AS pending,
           pg_catalog.count(*) FILTER (WHERE parked_at IS NULL AND attempts > 0) AS retrying,
           pg_catalog.count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked,
           pg_catalog.min(queued_at) FILTER (WHERE parked_at IS NULL) AS oldest
      FROM @extschema@.embed_queue GROUP BY relid),
d AS (
    SELECT relid, pg_catalog.sum(rows) AS rows
      FROM @extschema@.embed_queue_done
     WHERE done_at > pg_catalog.clock_timestamp() - interval '1 minute'
     GROUP BY relid),
w AS (
    SELECT relid, pg_catalog.sum(rows_in_flight) AS rows
      FROM @extschema@.embed_queue_workers()
     WHERE datid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
       AND relid IS NOT NULL
     GROUP BY relid),
t AS (SELECT relid FROM q UNION SELECT relid FROM d UNION SELECT relid FROM w)
SELECT t.relid::pg_catalog.regclass AS relation,
       COALESCE(q.pending, 0) AS pending,
       COALESCE(w.rows, 0)::bigint AS in_flight,
       COALESCE(q.retrying, 0) AS retrying,
       COALESCE(q.parked, 0) AS parked,
       pg_catalog.clock_timestamp() - q.oldest AS lag,
       pg_catalog.round(COALESCE(d.rows, 0) / 60.0, 2) AS rows_per_second
  FROM t LEFT JOIN q USING (relid) LEFT JOIN d USING (relid) LEFT JOIN w USING (relid)
 WHERE EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = t.relid)
   AND pg_catalog.has_table_privilege(t.relid, 'SELECT');
GRANT SELECT ON @extschema@.embed_queue_status TO PUBLIC;

-- Rows whose last try failed: retrying (retry_at set) or parked (no more
-- tries until embed_queue_retry).  Key, SQLSTATE and message, never text:
-- a message is clinembed's own, or one built from the SQLSTATE alone when
-- the error came from elsewhere (clinembed_core::rows::queue::failure_message).
-- Tables the current role may read, and of a table under row-level
-- security only to roles it does not apply to (its owner, BYPASSRLS): a
-- key names a row the policy may hide.  Others see the counts in
-- embed_queue_status.
CREATE VIEW @extschema@.embed_queue_failures AS
SELECT relid::pg_catalog.regclass AS relation, key, attempts, sqlstate, message,
       CASE WHEN parked_at IS NOT NULL THEN 'parked' ELSE 'retrying' END AS state,
       retry_at, parked_at, queued_at
  FROM @extschema@.embed_queue
 WHERE sqlstate IS NOT NULL
   AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = relid)
   AND pg_catalog.has_table_privilege(relid, 'SELECT')
   AND NOT pg_catalog.row_security_active(relid);
GRANT SELECT ON @extschema@.embed_queue_failures TO PUBLIC;

-- SELECT embed_queue_enqueue('notes'): queues every row of a table with a
-- queue trigger whose vector is missing or from another model (the
-- asynchronous backfill, after a model change).  Returns the rows queued.
CREATE FUNCTION @extschema@.embed_queue_enqueue(relation pg_catalog.regclass)
RETURNS bigint
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@._embed_queue_enqueue(relation::pg_catalog.oid) $$;

-- SELECT embed_queue_retry(['notes']): queues parked rows again (of one
-- table, or of every table the role may update) after their cause is fixed.
CREATE FUNCTION @extschema@.embed_queue_retry(relation pg_catalog.regclass DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@._embed_queue_retry(relation::pg_catalog.oid) $$;
