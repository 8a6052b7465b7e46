-- clinembed 0.1.0 -> 0.2.0: model identity and usage counters, embedding
-- triggers, the resumable backfill and its progress view.
\echo Use "ALTER EXTENSION clinembed UPDATE TO '0.2.0'" to load this file. \quit

-- The planner must know that embedding is expensive (see src/lib.rs).
ALTER FUNCTION "embed_text"(TEXT) COST 10000;
ALTER FUNCTION "embed_texts"(TEXT[]) COST 10000;
ALTER FUNCTION "embed_token_count"(TEXT) COST 1000;

CREATE  FUNCTION "embed_chunks"(
	"text" TEXT, /* & str */
	"window_tokens" INT DEFAULT 128, /* i32 */
	"overlap_tokens" INT DEFAULT 32 /* i32 */
) RETURNS TABLE (
	"chunk" INT,  /* i32 */
	"char_start" INT,  /* i32 */
	"char_end" INT,  /* i32 */
	"tokens" INT,  /* i32 */
	"embedding" real[]  /* Vec < f32 > */
)
STRICT STABLE PARALLEL SAFE COST 10000
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_chunks_wrapper';

CREATE  FUNCTION "embed_model_id"() RETURNS TEXT /* String */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_model_id_wrapper';

CREATE  FUNCTION "embed_model_id"(
	"model" TEXT /* & str */
) RETURNS TEXT /* String */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_model_id_model_wrapper';

CREATE  FUNCTION "embed_models"() RETURNS TABLE (
	"name" TEXT,  /* String */
	"path" TEXT,  /* String */
	"dimensions" INT,  /* Option < i32 > */
	"max_length" INT,  /* Option < i32 > */
	"pooling" TEXT,  /* Option < String > */
	"normalize" bool,  /* Option < bool > */
	"sha256" TEXT,  /* Option < String > */
	"loaded" bool,  /* bool */
	"error" TEXT  /* Option < String > */
)
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_models_wrapper';

CREATE  FUNCTION "embed_stats"() RETURNS TABLE (
	"model" TEXT,  /* String */
	"path" TEXT,  /* String */
	"model_id" TEXT,  /* String */
	"load_ms" double precision,  /* f64 */
	"calls" bigint,  /* i64 */
	"texts" bigint,  /* i64 */
	"tokens" bigint,  /* i64 */
	"runs" bigint,  /* i64 */
	"rss_kb" bigint  /* Option < i64 > */
)
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_stats_wrapper';

CREATE  FUNCTION "embed_text"(
	"text" TEXT, /* & str */
	"model" TEXT /* & str */
) RETURNS real[] /* Vec < f32 > */
STRICT STABLE PARALLEL SAFE  COST 10000
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_text_model_wrapper';

CREATE  FUNCTION "embed_text_chunked"(
	"text" TEXT, /* & str */
	"window_tokens" INT DEFAULT 128, /* i32 */
	"overlap_tokens" INT DEFAULT 32 /* i32 */
) RETURNS real[] /* Vec < f32 > */
STRICT STABLE PARALLEL SAFE COST 10000
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_text_chunked_wrapper';

CREATE  FUNCTION "embed_texts"(
	"texts" TEXT[], /* Array < '_, & str > */
	"model" TEXT /* & str */
) RETURNS TABLE (
	"ord" INT,  /* i32 */
	"embedding" real[]  /* :: std :: option :: Option < Vec < f32 > > */
)
STRICT STABLE PARALLEL SAFE  COST 10000
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_texts_model_wrapper';

CREATE  FUNCTION "embed_truncation"(
	"text" TEXT /* & str */
) RETURNS TABLE (
	"tokens" INT,  /* i32 */
	"max_length" INT,  /* i32 */
	"truncated" bool  /* bool */
)
STRICT STABLE PARALLEL SAFE COST 1000
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'embed_truncation_wrapper';

-- Embeddings that stay next to their rows: triggers, a resumable backfill with
-- progress, and provenance.  Included in the generated install script by
-- src/columns.rs; sql/clinembed--0.1.0--0.2.0.sql carries the same objects.
--
-- Conventions: every object is schema-qualified with @extschema@ or pg_catalog;
-- identifiers go through format('%I') and relations through regclass; no note
-- text ever reaches a message, only table and column names, counts and model
-- identities.

-- Checks that `source_column`, `target_column` and `model_column` of `rel`
-- can be used, and says how to cast a real[] into the target column and how
-- many dimensions it requires (NULL: any).
CREATE FUNCTION @extschema@._embed_target(
    rel pg_catalog.regclass, source_column text, target_column text, model_column text,
    OUT target_type text, OUT target_dims integer)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    col record;
BEGIN
    FOR col IN
        SELECT c.role, c.name, a.atttypid, a.atttypmod, t.typname, t.typcategory
          FROM (VALUES ('source', source_column), ('target', target_column), ('model', model_column))
               AS c(role, name)
          LEFT JOIN pg_attribute a
                 ON a.attrelid = rel AND a.attname = c.name AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN pg_type t ON t.oid = a.atttypid
         WHERE c.name IS NOT NULL OR c.role <> 'model'
    LOOP
        IF col.name IS NULL OR col.atttypid IS NULL THEN
            RAISE EXCEPTION '% column does not exist', col.role
                USING ERRCODE = 'undefined_column',
                      DETAIL = format('Table %s has no column %s.', rel, coalesce(quote_ident(col.name), 'NULL')),
                      HINT = 'The trigger or backfill arguments are: source text column, target embedding column, optional model identity column.';
        END IF;
        IF col.role IN ('source', 'model') AND col.typcategory <> 'S' THEN
            RAISE EXCEPTION '% column must be of a text type', col.role
                USING ERRCODE = 'datatype_mismatch',
                      DETAIL = format('Column %I of %s is %s.', col.name, rel, format_type(col.atttypid, col.atttypmod)),
                      HINT = 'Use text or varchar.';
        END IF;
        IF col.role = 'target' THEN
            IF col.atttypid = 'real[]'::regtype THEN
                target_type := 'real[]';
            ELSIF col.typname IN ('vector', 'halfvec') THEN
                target_type := format_type(col.atttypid, col.atttypmod);
                target_dims := nullif(col.atttypmod, -1);
            ELSE
                RAISE EXCEPTION 'target column must be real[], vector or halfvec'
                    USING ERRCODE = 'datatype_mismatch',
                          DETAIL = format('Column %I of %s is %s.', col.name, rel, format_type(col.atttypid, col.atttypmod)),
                          HINT = 'Store embeddings in real[] or, with pgvector, in vector(N) or halfvec(N).';
            END IF;
        END IF;
    END LOOP;
    IF source_column IN (target_column, model_column) OR target_column = model_column THEN
        RAISE EXCEPTION 'source, target and model columns must differ'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Columns given for %s: %s, %s, %s.', rel, quote_ident(source_column),
                                  quote_ident(target_column), coalesce(quote_ident(model_column), 'none')),
                  HINT = 'Name three different columns.';
    END IF;
END;
$$;

-- Raises the dimension-mismatch error when a model's vectors do not fit the
-- target column.
CREATE FUNCTION @extschema@._embed_check_dims(
    rel pg_catalog.regclass, target_column text, target_type text, target_dims integer, dims integer)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF target_dims IS NOT NULL AND target_dims <> dims THEN
        RAISE EXCEPTION 'embedding has % dimensions, column % expects %', dims, quote_ident(target_column), target_dims
            USING ERRCODE = 'datatype_mismatch',
                  DETAIL = format('The model returns %s-dimensional vectors; column %I of %s is %s.',
                                  dims, target_column, rel, target_type),
                  HINT = format('Make the column %s(%s), or set clinembed.model to a model with %s dimensions.',
                                split_part(target_type, '(', 1), dims, target_dims);
    END IF;
END;
$$;

-- The trigger arguments, checked.
CREATE FUNCTION @extschema@._embed_trigger_args(
    fn text, rel pg_catalog.regclass, trigger_name text, args text[],
    OUT source_column text, OUT target_column text, OUT model_column text)
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(cardinality(args), 0) NOT IN (2, 3) THEN
        RAISE EXCEPTION '% takes two or three arguments', fn
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('Trigger %I on %s passes %s.', trigger_name, rel, coalesce(cardinality(args), 0)),
                  HINT = format('EXECUTE FUNCTION %s(''source_column'', ''target_column'' [, ''model_column''])', fn);
    END IF;
    -- TG_ARGV is indexed from 0.
    source_column := args[array_lower(args, 1)];
    target_column := args[array_lower(args, 1) + 1];
    model_column := args[array_lower(args, 1) + 2];
END;
$$;

-- Row trigger: BEFORE INSERT OR UPDATE [OF source] ... FOR EACH ROW
-- EXECUTE FUNCTION embed_trigger('source', 'target' [, 'model_column']).
-- Embeds one row at a time, so RETURNING shows the vector; for bulk loads use
-- embed_batch_trigger.
CREATE FUNCTION @extschema@.embed_trigger()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- Vectors pass through jsonb into the row; 3 digits keep every float exact.
SET extra_float_digits = 3
AS $$
DECLARE
    args record;
    target record;
    new_text text;
    old_text text;
    kept boolean;
    emb real[];
    patch jsonb;
BEGIN
    IF TG_WHEN <> 'BEFORE' OR TG_LEVEL <> 'ROW' OR TG_OP NOT IN ('INSERT', 'UPDATE') THEN
        RAISE EXCEPTION 'embed_trigger must fire BEFORE INSERT OR UPDATE FOR EACH ROW'
            USING ERRCODE = 'trigger_protocol_violated',
                  DETAIL = format('Trigger %I on %s fired %s %s FOR EACH %s.', TG_NAME, TG_RELID::regclass, TG_WHEN, TG_OP, TG_LEVEL),
                  HINT = 'For batched inserts use embed_batch_trigger, an AFTER ... FOR EACH STATEMENT trigger.';
    END IF;
    SELECT * INTO args FROM @extschema@._embed_trigger_args('embed_trigger', TG_RELID, TG_NAME, TG_ARGV);
    SELECT * INTO target FROM @extschema@._embed_target(TG_RELID, args.source_column, args.target_column, args.model_column);

    EXECUTE format('SELECT ($1).%I::text', args.source_column) INTO new_text USING NEW;
    IF TG_OP = 'UPDATE' THEN
        -- Only a changed text is embedded again: no inference otherwise.
        EXECUTE format('SELECT ($1).%I::text', args.source_column) INTO old_text USING OLD;
        IF new_text IS NOT DISTINCT FROM old_text THEN
            RETURN NEW;
        END IF;
    ELSIF args.model_column IS NOT NULL AND new_text IS NOT NULL THEN
        -- A row that arrives with a vector from the current model (a restore,
        -- a copy between tables) keeps it.
        EXECUTE format('SELECT ($1).%I IS NOT NULL AND ($1).%I::text = $2', args.target_column, args.model_column)
            INTO kept USING NEW, @extschema@.embed_model_id();
        IF kept THEN
            RETURN NEW;
        END IF;
    END IF;

    IF new_text IS NULL THEN
        patch := jsonb_build_object(args.target_column, NULL);
    ELSE
        emb := @extschema@.embed_text(new_text);
        PERFORM @extschema@._embed_check_dims(TG_RELID, args.target_column, target.target_type,
                                              target.target_dims, cardinality(emb));
        patch := jsonb_build_object(args.target_column, emb);
    END IF;
    IF args.model_column IS NOT NULL THEN
        patch := patch || jsonb_build_object(args.model_column,
                                             CASE WHEN new_text IS NOT NULL THEN @extschema@.embed_model_id() END);
    END IF;
    RETURN jsonb_populate_record(NEW, patch);
END;
$$;

-- Statement trigger for bulk work: AFTER INSERT ... REFERENCING NEW TABLE AS
-- new_rows FOR EACH STATEMENT, and AFTER UPDATE ... REFERENCING OLD TABLE AS
-- old_rows NEW TABLE AS new_rows FOR EACH STATEMENT, with
-- EXECUTE FUNCTION embed_batch_trigger('source', 'target' [, 'model_column']).
-- Embeds all rows of a statement (INSERT ... SELECT, COPY) through
-- embed_texts, 1000 rows per call, and writes the vectors back by primary key.
CREATE FUNCTION @extschema@.embed_batch_trigger()
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
    key_columns text;
    model_id text;
    candidates text;
    total bigint;
    -- missing_ok: in a session that has not called into clinembed yet, its
    -- settings are not registered.
    chunk integer := least(1000, current_setting('clinembed.batch_max_texts', true)::integer);
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

    -- The rows that need work, as (key columns..., clinembed_text).
    key_columns := (SELECT string_agg(format('n.%I', k), ', ') FROM unnest(keys) k);
    IF TG_OP = 'INSERT' THEN
        IF args.model_column IS NULL THEN
            candidates := format('SELECT %s, n.%I::text AS clinembed_text FROM %I n WHERE n.%I IS NOT NULL OR n.%I IS NOT NULL',
                                 key_columns,
                                 args.source_column, new_table, args.source_column, args.target_column);
        ELSE
            model_id := @extschema@.embed_model_id();
            candidates := format('SELECT %s, n.%2$I::text AS clinembed_text FROM %3$I n'
                                 ' WHERE (n.%2$I IS NOT NULL AND (n.%4$I IS NULL OR n.%5$I::text IS DISTINCT FROM %6$L))'
                                 '    OR (n.%2$I IS NULL AND (n.%4$I IS NOT NULL OR n.%5$I IS NOT NULL))',
                                 key_columns,
                                 args.source_column, new_table, args.target_column, args.model_column, model_id);
        END IF;
    ELSE
        -- Only a changed text is embedded again: no inference otherwise.
        candidates := format('SELECT %s, n.%I::text AS clinembed_text FROM %I n JOIN %I o USING (%s) WHERE n.%I IS DISTINCT FROM o.%I',
                             key_columns,
                             args.source_column, new_table, old_table,
                             (SELECT string_agg(format('%I', k), ', ') FROM unnest(keys) k),
                             args.source_column, args.source_column);
    END IF;
    EXECUTE format('SELECT count(*) FROM (%s) c', candidates) INTO total;
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    model_id := coalesce(model_id, @extschema@.embed_model_id());
    IF target.target_dims IS NOT NULL THEN
        PERFORM @extschema@._embed_check_dims(TG_RELID, args.target_column, target.target_type, target.target_dims,
                                              (SELECT i.dimensions FROM @extschema@.embed_model_info() i));
    END IF;
    WHILE lo < total LOOP
        EXECUTE format(
            'WITH c AS MATERIALIZED (SELECT row_number() OVER (ORDER BY %1$s) AS clinembed_ord, * FROM (%2$s) x),'
            ' w AS MATERIALIZED (SELECT * FROM c WHERE clinembed_ord > $1 AND clinembed_ord <= $1 + $2),'
            ' e AS (SELECT $1 + e.ord AS clinembed_ord, e.embedding FROM @extschema@.embed_texts('
            '         (SELECT array_agg(w.clinembed_text ORDER BY w.clinembed_ord) FROM w)) e)'
            ' UPDATE %3$s r SET %4$I = e.embedding::%5$s%6$s'
            '   FROM w JOIN e USING (clinembed_ord) WHERE %7$s',
            (SELECT string_agg(format('%I', k), ', ') FROM unnest(keys) k),
            candidates, TG_RELID::regclass, args.target_column, target.target_type,
            CASE WHEN args.model_column IS NOT NULL
                 THEN format(', %I = CASE WHEN e.embedding IS NULL THEN NULL ELSE $3 END', args.model_column) END,
            (SELECT string_agg(format('r.%I = w.%I', k, k), ' AND ') FROM unnest(keys) k))
        USING lo, chunk, model_id;
        lo := lo + chunk;
    END LOOP;
    RETURN NULL;
END;
$$;

-- One row per backfill run.  Written only through the two functions below, so
-- a session can only advance its own runs; readable by everyone, so another
-- session can watch.  Holds names and counts, never note text.
CREATE TABLE @extschema@.backfill_runs (
    run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relation text NOT NULL,
    source_column text NOT NULL,
    target_column text NOT NULL,
    model_column text,
    model_id text NOT NULL,
    batch_size integer NOT NULL,
    pid integer NOT NULL,
    started_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    finished_at timestamptz,
    rows_total bigint NOT NULL,
    rows_done bigint NOT NULL DEFAULT 0,
    batches bigint NOT NULL DEFAULT 0
);
REVOKE ALL ON @extschema@.backfill_runs FROM PUBLIC;
GRANT SELECT ON @extschema@.backfill_runs TO PUBLIC;

CREATE FUNCTION @extschema@._backfill_begin(
    relation text, source_column text, target_column text, model_column text,
    model_id text, batch_size integer, rows_total bigint)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO @extschema@.backfill_runs
        (relation, source_column, target_column, model_column, model_id, batch_size,
         pid, started_at, updated_at, rows_total)
    VALUES (relation, source_column, target_column, model_column, model_id, batch_size,
            pg_backend_pid(), clock_timestamp(), clock_timestamp(), rows_total)
    RETURNING run_id;
$$;

CREATE FUNCTION @extschema@._backfill_step(run bigint, rows_done bigint, finished boolean)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE @extschema@.backfill_runs r
       SET rows_done = r.rows_done + _backfill_step.rows_done,
           batches = r.batches + (_backfill_step.rows_done > 0)::integer,
           updated_at = clock_timestamp(),
           finished_at = CASE WHEN finished THEN clock_timestamp() END
     WHERE r.run_id = run AND r.pid = pg_backend_pid() AND r.finished_at IS NULL;
$$;

-- Progress of every backfill, for any session: running, done, or interrupted
-- (the backend that ran it is gone).
CREATE VIEW @extschema@.backfill_status AS
SELECT r.run_id, r.relation, r.source_column, r.target_column, r.model_id, r.pid,
       CASE WHEN r.finished_at IS NOT NULL THEN 'done'
            WHEN EXISTS (SELECT FROM pg_catalog.pg_stat_activity a
                          WHERE a.pid = r.pid AND (a.backend_start IS NULL OR a.backend_start <= r.started_at))
            THEN 'running'
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
-- a model column, from another model.  Each batch is one transaction: it locks
-- its rows (SKIP LOCKED), embeds them through embed_texts, writes them and
-- commits, with the run's progress.  Killed or restarted, it loses at most the
-- batch in flight, and a second CALL continues where the first stopped.  Call
-- it outside a transaction block.
CREATE PROCEDURE @extschema@.embed_backfill(
    relation pg_catalog.regclass, source_column text, target_column text,
    batch_size integer DEFAULT 256, model_column text DEFAULT NULL)
LANGUAGE plpgsql
AS $$
DECLARE
    target record;
    model_id text;
    stale text;
    run bigint;
    total bigint;
    done bigint := 0;
    n bigint;
    last_tid tid;
    pos tid := '(0,0)';
    from_start boolean := true;
    started timestamptz := pg_catalog.clock_timestamp();
    rate double precision;
BEGIN
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'batch_size must be positive'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = pg_catalog.format('batch_size is %s.', coalesce(batch_size::text, 'NULL')),
                  HINT = 'Use a few hundred rows per batch.';
    END IF;
    SELECT * INTO target FROM @extschema@._embed_target(relation, source_column, target_column, model_column);
    model_id := @extschema@.embed_model_id();
    PERFORM @extschema@._embed_check_dims(relation, target_column, target.target_type, target.target_dims,
                                          (SELECT i.dimensions FROM @extschema@.embed_model_info() i));
    stale := pg_catalog.format('%I IS NOT NULL AND (%I IS NULL%s)', source_column, target_column,
                               CASE WHEN model_column IS NULL THEN ''
                                    ELSE pg_catalog.format(' OR %I::text IS DISTINCT FROM %L', model_column, model_id) END);
    EXECUTE pg_catalog.format('SELECT count(*) FROM %s WHERE %s', relation, stale) INTO total;
    run := @extschema@._backfill_begin(relation::text, source_column, target_column, model_column,
                                       model_id, batch_size, total);
    RAISE NOTICE 'clinembed backfill of %: % rows to embed with %', relation, total, model_id;
    COMMIT;
    LOOP
        EXECUTE pg_catalog.format(
            'WITH locked AS MATERIALIZED (SELECT ctid AS row_tid, %1$I::text AS row_text FROM %2$s'
            '                             WHERE ctid > $1 AND %3$s LIMIT $2 FOR UPDATE SKIP LOCKED),'
            ' batch AS MATERIALIZED (SELECT row_number() OVER () AS ord, row_tid, row_text FROM locked),'
            ' emb AS (SELECT e.ord, e.embedding FROM @extschema@.embed_texts('
            '           (SELECT array_agg(row_text ORDER BY ord) FROM batch)) e),'
            ' written AS (UPDATE %2$s r SET %4$I = emb.embedding::%5$s%6$s'
            '               FROM batch JOIN emb USING (ord) WHERE r.ctid = batch.row_tid RETURNING 1)'
            ' SELECT (SELECT count(*) FROM written), (SELECT max(row_tid) FROM batch)',
            source_column, relation, stale, target_column, target.target_type,
            CASE WHEN model_column IS NOT NULL THEN pg_catalog.format(', %I = $3', model_column) ELSE '' END)
        INTO n, last_tid USING pos, batch_size, model_id;
        IF n = 0 THEN
            -- Nothing after pos: done if the scan started at the beginning,
            -- else look once more from there for rows written out of order.
            EXIT WHEN from_start;
            pos := '(0,0)';
            from_start := true;
            CONTINUE;
        END IF;
        pos := last_tid;
        from_start := false;
        done := done + n;
        PERFORM @extschema@._backfill_step(run, n, false);
        COMMIT;
        rate := done / greatest(extract(epoch FROM pg_catalog.clock_timestamp() - started), 0.001);
        RAISE NOTICE 'clinembed backfill of %: % of % rows, % rows/s, eta %', relation, done, total,
            round(rate::numeric, 1), make_interval(secs => round((greatest(total - done, 0) / rate)::numeric));
    END LOOP;
    PERFORM @extschema@._backfill_step(run, 0, true);
    COMMIT;
    RAISE NOTICE 'clinembed backfill of %: finished, % rows embedded in %', relation, done,
        date_trunc('second', pg_catalog.clock_timestamp() - started);
END;
$$;
