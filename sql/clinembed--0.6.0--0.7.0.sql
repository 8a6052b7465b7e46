-- clinembed 0.6.0 -> 0.7.0.
--
-- One rule for which rows need embedding, in the library: the triggers and
-- the backfill take their decisions and the statements that select and write
-- rows from internal functions (_embed_needs_work, _embed_row_read,
-- _embed_row_action, _embed_row_write, _embed_check_dims, _embed_rows_per_call;
-- _embed_rule lists the rule).  A row without text but with a vector is now
-- cleared by the backfill too; the row trigger writes vectors without a
-- jsonb round trip.  In the library: the default model is all-minilm-l6-v2,
-- an exact fp32 export.
\echo Use "ALTER EXTENSION clinembed UPDATE TO '0.7.0'" to load this file. \quit

DROP FUNCTION @extschema@._embed_check_dims(pg_catalog.regclass, text, text, integer, integer);
DROP FUNCTION @extschema@._backfill_stale(text, text, text, text);

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
    new_table name;
    old_table name;
    keys text[];
    key_select text;
    key_aliases text;
    key_match text;
    missing text;
    model_id text;
    candidates text;
    total bigint;
    chunk integer := @extschema@._embed_rows_per_call();
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
    SELECT t.tgnewtable, t.tgoldtable INTO new_table, old_table
      FROM pg_trigger t WHERE t.tgrelid = TG_RELID AND t.tgname = TG_NAME;
    IF new_table IS NULL OR (TG_OP = 'UPDATE' AND old_table IS NULL) THEN
        RAISE EXCEPTION 'embed_batch_trigger needs transition tables'
            USING ERRCODE = 'trigger_protocol_violated',
                  DETAIL = format('Trigger %I on %s has no %s.', TG_NAME, TG_RELID::regclass,
                                  CASE WHEN new_table IS NULL THEN 'NEW TABLE' ELSE 'OLD TABLE' END),
                  HINT = 'Create it with REFERENCING NEW TABLE AS new_rows (AFTER INSERT), or REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows (AFTER UPDATE).';
    END IF;
    SELECT array_agg(a.attname::text ORDER BY k.n) INTO keys
      FROM pg_index i
      CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
      JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
     WHERE i.indrelid = TG_RELID AND i.indisprimary;
    IF keys IS NULL THEN
        RAISE EXCEPTION 'embed_batch_trigger needs a primary key'
            USING ERRCODE = 'invalid_table_definition',
                  DETAIL = format('Table %s has none; the trigger writes the vectors back to the new rows by key.', TG_RELID::regclass),
                  HINT = 'Add a primary key, or use embed_trigger, a row trigger, which needs none.';
    END IF;
    -- The write-back is an UPDATE by the role whose statement fired the
    -- trigger: it reads the key columns and sets the vector columns.
    SELECT string_agg(format('%s (%I)', c.priv, c.col), ', ') INTO missing
      FROM (SELECT 'SELECT' AS priv, k AS col FROM unnest(keys) k
            UNION ALL
            SELECT 'UPDATE', v.col FROM unnest(ARRAY[args.target_column, args.model_column]) AS v(col)
             WHERE v.col IS NOT NULL) c
     WHERE NOT has_column_privilege(TG_RELID, c.col, c.priv);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'embed_batch_trigger needs %', missing
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('It writes the vectors of the statement''s rows into %s with an UPDATE as role %I.',
                                  TG_RELID::regclass, current_user),
                  HINT = format('GRANT %s ON %s TO %I; or use embed_trigger, a row trigger, which needs no UPDATE.',
                                missing, TG_RELID::regclass, current_user);
    END IF;

    -- The rows that need work, as (k1.., txt).
    SELECT string_agg(format('n.%I AS k%s', k, i), ', ' ORDER BY i),
           string_agg(format('k%s', i), ', ' ORDER BY i),
           string_agg(format('r.%I = w.k%s', k, i), ' AND ' ORDER BY i)
      INTO key_select, key_aliases, key_match
      FROM unnest(keys) WITH ORDINALITY AS u(k, i);
    -- Which of them need work is the library's rule (_embed_needs_work).
    IF TG_OP = 'INSERT' THEN
        model_id := @extschema@.embed_model_id();
        candidates := format('SELECT %s, n.%I::text AS txt FROM %I n WHERE %s',
                             key_select, args.source_column, new_table,
                             @extschema@._embed_needs_work('inserted', args.source_column, args.target_column,
                                                           args.model_column, model_id, 'n'));
    ELSE
        -- New rows are paired with old ones by key.  A row whose text changed
        -- is a changed text; so is a row whose key has no old row (the
        -- statement changed the key), since its vector was computed before
        -- the statement.  An unchanged text needs nothing.
        candidates := format('SELECT %s, n.%I::text AS txt FROM %I n LEFT JOIN %I o ON %s'
                             ' WHERE (o.%I IS NULL OR n.%I IS DISTINCT FROM o.%I) AND %s',
                             key_select,
                             args.source_column, new_table, old_table,
                             (SELECT string_agg(format('o.%I = n.%I', k, k), ' AND ') FROM unnest(keys) k),
                             keys[1], args.source_column, args.source_column,
                             @extschema@._embed_needs_work('text_changed', args.source_column, args.target_column,
                                                           args.model_column, NULL, 'n'));
    END IF;
    EXECUTE format('SELECT count(*) FROM (%s) c', candidates) INTO total;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    model_id := coalesce(model_id, @extschema@.embed_model_id());
    PERFORM @extschema@._embed_check_dims(TG_RELID, args.target_column, target.target_type, target.target_dims);
    BEGIN
        WHILE lo < total LOOP
            EXECUTE format(
                'WITH c AS MATERIALIZED (SELECT row_number() OVER (ORDER BY %1$s) AS ord, * FROM (%2$s) x),'
                ' w AS MATERIALIZED (SELECT * FROM c WHERE ord > $1 AND ord <= $1 + $2),'
                ' e AS (SELECT $1 + e.ord AS ord, e.embedding FROM @extschema@.embed_texts('
                '         (SELECT array_agg(w.txt ORDER BY w.ord) FROM w)) e)'
                ' UPDATE %3$s r SET %4$I = e.embedding::%5$s%6$s'
                '   FROM w JOIN e USING (ord) WHERE %7$s',
                key_aliases, candidates, TG_RELID::regclass, args.target_column, target.target_type,
                CASE WHEN args.model_column IS NOT NULL
                     THEN format(', %I = CASE WHEN e.embedding IS NULL THEN NULL ELSE $3 END', args.model_column) END,
                key_match)
            USING lo, chunk, model_id;
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
        EXECUTE format('SELECT count(*) FROM ONLY %s WHERE %s', t::regclass,
                       @extschema@._embed_needs_work('stored', source_column, target_column, model_column, new_model))
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
    stale text;
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
    stale := @extschema@._embed_needs_work('stored', r.source_column, r.target_column, r.model_column, r.model_id);
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
        batch_sql := format(
            'WITH locked AS MATERIALIZED (SELECT ctid AS row_tid, %1$I::pg_catalog.text AS row_text FROM ONLY %2$s'
            '                             WHERE ctid OPERATOR(pg_catalog.>) $1 AND %3$s LIMIT $2 FOR UPDATE SKIP LOCKED),'
            ' batch AS MATERIALIZED (SELECT pg_catalog.row_number() OVER () AS ord, row_tid, row_text FROM locked),'
            ' emb AS (SELECT e.ord, e.embedding FROM @extschema@.embed_texts('
            '           (SELECT pg_catalog.array_agg(row_text ORDER BY ord) FROM batch)) e),'
            ' written AS (UPDATE ONLY %2$s w SET %4$I = emb.embedding::%5$s%6$s'
            '               FROM batch JOIN emb ON emb.ord OPERATOR(pg_catalog.=) batch.ord'
            '              WHERE w.ctid OPERATOR(pg_catalog.=) batch.row_tid RETURNING 1)'
            ' SELECT (SELECT pg_catalog.count(*) FROM written), (SELECT pg_catalog.max(row_tid) FROM batch)',
            r.source_column, t::regclass, stale, r.target_column, target.target_type,
            CASE WHEN r.model_column IS NOT NULL
                 THEN format(', %I = CASE WHEN emb.embedding IS NULL THEN NULL ELSE $3 END', r.model_column)
                 ELSE '' END);
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
