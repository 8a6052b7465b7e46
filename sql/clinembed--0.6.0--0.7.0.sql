-- clinembed 0.6.0 -> 0.7.0.
--
-- The column feature's decisions and statements move into the library: which
-- rows need work (one rule: _embed_needs_work, _embed_row_action; _embed_rule
-- lists it), the column checks (_embed_target, _embed_trigger_args, now C
-- functions taking an oid), the dimension check against the configured model
-- (_embed_check_dims), rows per call (_embed_rows_per_call), and the
-- statements the triggers and the backfill run (_embed_row_read,
-- _embed_row_write, _embed_batch_statements, _backfill_statements).  The
-- PL/pgSQL entry points are replaced by short bodies that run them.  A row
-- without text but with a vector is now cleared by the backfill too; the row
-- trigger writes vectors without a jsonb round trip.  In the library: the
-- default model is all-minilm-l6-v2, an exact fp32 export.
\echo Use "ALTER EXTENSION clinembed UPDATE TO '0.7.0'" to load this file. \quit

DROP FUNCTION @extschema@._embed_check_dims(pg_catalog.regclass, text, text, integer, integer);
DROP FUNCTION @extschema@._backfill_stale(text, text, text, text);
DROP FUNCTION @extschema@._embed_target(pg_catalog.regclass, text, text, text);
DROP FUNCTION @extschema@._embed_trigger_args(text, pg_catalog.regclass, text, text[]);

CREATE FUNCTION @extschema@."_embed_check_dims"(
	"rel" oid,
	"target_column" TEXT,
	"target_type" TEXT,
	"target_dims" INT
) RETURNS void
VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_check_dims_wrapper';

CREATE FUNCTION @extschema@."_embed_needs_work"(
	"event" TEXT,
	"source_column" TEXT,
	"target_column" TEXT,
	"model_column" TEXT,
	"model_id" TEXT,
	"alias" TEXT DEFAULT ''
) RETURNS TEXT
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_needs_work_wrapper';

CREATE FUNCTION @extschema@."_embed_row_action"(
	"operation" TEXT,
	"has_text" bool,
	"has_vector" bool,
	"label" TEXT,
	"text_changed" bool,
	"has_model_column" bool
) RETURNS TEXT
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_row_action_wrapper';

CREATE FUNCTION @extschema@."_embed_row_read"(
	"source_column" TEXT,
	"target_column" TEXT,
	"model_column" TEXT
) RETURNS TEXT
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_row_read_wrapper';

CREATE FUNCTION @extschema@."_embed_row_write"(
	"rel" oid,
	"target_column" TEXT,
	"target_type" TEXT,
	"model_column" TEXT
) RETURNS TEXT
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_row_write_wrapper';

CREATE FUNCTION @extschema@."_embed_rows_per_call"() RETURNS INT
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_rows_per_call_wrapper';

CREATE FUNCTION @extschema@."_embed_rule"() RETURNS TABLE (
	"event" TEXT, 
	"has_text" bool, 
	"has_vector" bool, 
	"label" TEXT, 
	"action" TEXT 
)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_rule_wrapper';

CREATE FUNCTION @extschema@."_embed_trigger_args"(
	"function" TEXT,
	"rel" oid,
	"trigger_name" TEXT,
	"args" TEXT[]
) RETURNS TABLE (
	"source_column" TEXT, 
	"target_column" TEXT, 
	"model_column" TEXT 
)
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_trigger_args_wrapper';

CREATE FUNCTION @extschema@."_embed_target"(
	"rel" oid,
	"source_column" TEXT,
	"target_column" TEXT,
	"model_column" TEXT
) RETURNS TABLE (
	"target_type" TEXT, 
	"target_dims" INT 
)
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_target_wrapper';

CREATE FUNCTION @extschema@."_embed_batch_statements"(
	"rel" oid,
	"trigger_name" TEXT,
	"operation" TEXT,
	"source_column" TEXT,
	"target_column" TEXT,
	"model_column" TEXT,
	"target_type" TEXT
) RETURNS TABLE (
	"count_sql" TEXT, 
	"write_sql" TEXT 
)
VOLATILE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_batch_statements_wrapper';

CREATE FUNCTION @extschema@."_backfill_statements"(
	"rel" oid,
	"source_column" TEXT,
	"target_column" TEXT,
	"model_column" TEXT,
	"target_type" TEXT,
	"model_id" TEXT
) RETURNS TABLE (
	"count_sql" TEXT, 
	"batch_sql" TEXT 
)
STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_backfill_statements_wrapper';

CREATE OR REPLACE FUNCTION @extschema@.embed_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    args record;
    target record;
    new_text text;
    has_vector boolean;
    label text;
    changed boolean;
    act text;
    emb real[];
    model_id text;
BEGIN
    IF TG_WHEN <> 'BEFORE' OR TG_LEVEL <> 'ROW' OR TG_OP NOT IN ('INSERT', 'UPDATE') THEN
        RAISE EXCEPTION 'embed_trigger must fire BEFORE INSERT OR UPDATE FOR EACH ROW'
            USING ERRCODE = 'trigger_protocol_violated',
                  DETAIL = format('Trigger %I on %s fired %s %s FOR EACH %s.', TG_NAME, TG_RELID::regclass, TG_WHEN, TG_OP, TG_LEVEL),
                  HINT = 'For batched inserts use embed_batch_trigger, an AFTER ... FOR EACH STATEMENT trigger.';
    END IF;
    SELECT * INTO args FROM @extschema@._embed_trigger_args('embed_trigger', TG_RELID, TG_NAME, TG_ARGV);
    SELECT * INTO target FROM @extschema@._embed_target(TG_RELID, args.source_column, args.target_column, args.model_column);
    EXECUTE @extschema@._embed_row_read(args.source_column, args.target_column, args.model_column)
       INTO new_text, has_vector, label, changed USING NEW, OLD;
    act := @extschema@._embed_row_action(TG_OP, new_text IS NOT NULL, has_vector, label, changed,
                                         args.model_column IS NOT NULL);
    IF act = 'keep' THEN
        RETURN NEW;
    END IF;
    IF act = 'embed' THEN
        PERFORM @extschema@._embed_check_dims(TG_RELID, args.target_column, target.target_type, target.target_dims);
        emb := @extschema@.embed_text(new_text);
        model_id := @extschema@.embed_model_id();
    END IF;
    EXECUTE @extschema@._embed_row_write(TG_RELID, args.target_column, target.target_type, args.model_column)
       INTO NEW USING NEW, emb, model_id;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION @extschema@.embed_batch_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    args record;
    target record;
    plan record;
    model_id text;
    total bigint;
    chunk integer;
    lo bigint := 0;
BEGIN
    IF TG_WHEN <> 'AFTER' OR TG_LEVEL <> 'STATEMENT' OR TG_OP NOT IN ('INSERT', 'UPDATE') THEN
        RAISE EXCEPTION 'embed_batch_trigger must fire AFTER INSERT or AFTER UPDATE FOR EACH STATEMENT'
            USING ERRCODE = 'trigger_protocol_violated',
                  DETAIL = format('Trigger %I on %s fired %s %s FOR EACH %s.', TG_NAME, TG_RELID::regclass, TG_WHEN, TG_OP, TG_LEVEL),
                  HINT = 'For one row at a time use embed_trigger, a BEFORE ... FOR EACH ROW trigger.';
    END IF;
    SELECT * INTO args FROM @extschema@._embed_trigger_args('embed_batch_trigger', TG_RELID, TG_NAME, TG_ARGV);
    SELECT * INTO target FROM @extschema@._embed_target(TG_RELID, args.source_column, args.target_column, args.model_column);
    SELECT * INTO plan FROM @extschema@._embed_batch_statements(TG_RELID, TG_NAME, TG_OP, args.source_column,
                                                                args.target_column, args.model_column, target.target_type);
    EXECUTE plan.count_sql INTO total;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    model_id := @extschema@.embed_model_id();
    PERFORM @extschema@._embed_check_dims(TG_RELID, args.target_column, target.target_type, target.target_dims);
    chunk := @extschema@._embed_rows_per_call();
    BEGIN
        WHILE lo < total LOOP
            EXECUTE plan.write_sql USING lo, chunk, model_id;
            lo := lo + chunk;
        END LOOP;
    EXCEPTION WHEN integrity_constraint_violation THEN
        PERFORM @extschema@._embed_constraint_error(TG_RELID, SQLSTATE, SQLERRM);
    END;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION @extschema@._backfill_start(
    rel pg_catalog.regclass, source_column text, target_column text, batch_size integer, model_column text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    target record;
    new_model text;
    other record;
    total bigint := 0;
    n bigint;
    t oid;
    run bigint;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('batch_size is %s.', coalesce(batch_size::text, 'NULL')),
                  HINT = 'Use a few hundred rows per batch.';
    END IF;
    SELECT * INTO target FROM @extschema@._embed_target(rel, source_column, target_column, model_column);
    new_model := @extschema@.embed_model_id();
    PERFORM @extschema@._embed_check_dims(rel, target_column, target.target_type, target.target_dims);
    -- Two models on one table would re-embed each other's rows: starts on a
    -- table are serialised, and a second model is refused while one runs.
    PERFORM pg_advisory_xact_lock(hashtext('clinembed backfill'), rel::oid::integer);
    SELECT r.pid, r.model_id INTO other FROM @extschema@.backfill_runs r
     WHERE r.relid = rel AND r.finished_at IS NULL AND r.model_id <> new_model
       AND @extschema@._backfill_active(r.run_id)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'another backfill of % is running with another model', rel
            USING ERRCODE = 'object_in_use',
                  DETAIL = format('Backend %s embeds with %s; this one would embed with %s.', other.pid, other.model_id, new_model),
                  HINT = 'Wait until it finishes, or stop it (pg_cancel_backend), then start this one.';
    END IF;
    FOREACH t IN ARRAY @extschema@._backfill_tables(rel, source_column, target_column, model_column) LOOP
        EXECUTE (SELECT s.count_sql FROM @extschema@._backfill_statements(t, source_column, target_column, model_column,
                                                                          target.target_type, new_model) s)
           INTO n;
        total := total + n;
    END LOOP;
    INSERT INTO @extschema@.backfill_runs
        (relid, source_column, target_column, model_column, model_id, batch_size, rows_total)
    VALUES (rel, source_column, target_column, model_column, new_model, batch_size, total)
    RETURNING run_id INTO run;
    RAISE NOTICE 'clinembed backfill of %: % rows to embed with %', rel, total, new_model;
    RETURN run;
END;
$$;

CREATE OR REPLACE FUNCTION @extschema@._backfill_batch(run bigint, caller_search_path text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    target record;
    tables oid[];
    t oid;
    pos tid;
    found_rows boolean;
    i integer;
    n bigint;
    last_tid tid;
    done bigint;
    rate double precision;
    batch_sql text;
BEGIN
    SELECT * INTO r FROM @extschema@.backfill_runs b WHERE b.run_id = run AND b.pid = pg_backend_pid() AND b.finished_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no backfill run of this session has that id'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Run %s is not an unfinished run of backend %s.', run, pg_backend_pid()),
                  HINT = 'Start a backfill with CALL embed_backfill(...).';
    END IF;
    SELECT * INTO target FROM @extschema@._embed_target(r.relid::regclass, r.source_column, r.target_column, r.model_column);
    tables := @extschema@._backfill_tables(r.relid::regclass, r.source_column, r.target_column, r.model_column);
    t := coalesce(r.scan_relid, tables[1]);
    pos := coalesce(r.scan_tid, '(0,0)');
    found_rows := r.scan_found;
    LOOP
        i := array_position(tables, t);
        IF i IS NULL THEN
            -- no tables, or the one the scan was in was detached or dropped
            EXIT WHEN cardinality(tables) = 0;
            t := tables[1];
            pos := '(0,0)';
            found_rows := true;
            CONTINUE;
        END IF;
        batch_sql := (SELECT s.batch_sql FROM @extschema@._backfill_statements(t, r.source_column, r.target_column,
                                                                               r.model_column, target.target_type, r.model_id) s);
        BEGIN
            PERFORM set_config('search_path', caller_search_path, true);
            EXECUTE batch_sql INTO n, last_tid USING pos, r.batch_size, r.model_id;
            PERFORM set_config('search_path', 'pg_catalog, pg_temp', true);
        EXCEPTION WHEN integrity_constraint_violation THEN
            PERFORM @extschema@._embed_constraint_error(t::regclass, SQLSTATE, SQLERRM);
        END;
        IF n > 0 THEN
            done := r.rows_done + n;
            UPDATE @extschema@.backfill_runs b
               SET rows_done = done, batches = b.batches + 1, updated_at = clock_timestamp(),
                   scan_relid = t, scan_tid = last_tid, scan_found = true
             WHERE b.run_id = run;
            rate := done / greatest(extract(epoch FROM clock_timestamp() - r.started_at), 0.001);
            RAISE NOTICE 'clinembed backfill of %: % of % rows, % rows/s, eta %', r.relid::regclass, done, r.rows_total,
                round(rate::numeric, 1), make_interval(secs => round((greatest(r.rows_total - done, 0) / rate)::numeric));
            RETURN true;
        END IF;
        -- Nothing more in this table after pos: the next table; after the
        -- last, a new pass if this one found rows (rows written behind the
        -- scan, or skipped while locked), else the run is done.
        IF i < cardinality(tables) THEN
            t := tables[i + 1];
        ELSIF found_rows THEN
            t := tables[1];
            found_rows := false;
        ELSE
            EXIT;
        END IF;
        pos := '(0,0)';
    END LOOP;
    UPDATE @extschema@.backfill_runs b
       SET finished_at = clock_timestamp(), updated_at = clock_timestamp(), scan_relid = NULL, scan_tid = NULL
     WHERE b.run_id = run;
    RAISE NOTICE 'clinembed backfill of %: finished, % rows embedded in %', r.relid::regclass, r.rows_done,
        date_trunc('second', clock_timestamp() - r.started_at);
    RETURN false;
END;
$$;
