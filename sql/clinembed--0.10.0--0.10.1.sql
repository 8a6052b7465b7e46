-- clinembed 0.10.0 -> 0.10.1: failures never show a row's text.
--
-- embed_queue_failures lists a table under row-level security only to roles
-- the policy does not apply to: a key names a row the policy may hide.  The
-- library now keeps only its own messages (which never hold note text);
-- for an error raised elsewhere (a user's trigger, a cast, a constraint),
-- only its SQLSTATE.  Messages 0.10.0 kept may quote a row: they are
-- replaced, their SQLSTATE kept.
--
-- embed_queue records the primary key index each key was printed by
-- (pkey): a worker that finds keys of a primary key the table no longer
-- has queues the table's rows again under the new one, instead of dropping
-- them as deleted.  Keys queued by 0.10.0 have none; they are checked by
-- their number of columns only.
--
-- In the library: the queue trigger refuses a direct call with 39P01; a
-- worker's write that a user's trigger changes or skips fails with 27000
-- (tried again, then parked) instead of leaving a vector beside another
-- text or queueing the row again for ever.
--
-- Whole notes: embed_chunks keeps windows inside sections and returns
-- their section; embed_chunks_trigger keeps a chunk table in sync with
-- its notes through the queue; embed_text_chunked pools windows by mean,
-- max or mean_max.
--
-- Search: embed_search finds notes by vectors, full text or both fused,
-- chunk rows collapsed to notes, reranked by a cross-encoder when asked;
-- embed_rerank scores texts against a query; embed_eval measures search on
-- labelled queries; embed_models lists each model's kind.
\echo Use "ALTER EXTENSION clinembed UPDATE TO '0.10.1'" to load this file. \quit

CREATE OR REPLACE VIEW @extschema@.embed_queue_failures AS
SELECT relid::pg_catalog.regclass AS relation, key, attempts, sqlstate, message,
       CASE WHEN parked_at IS NOT NULL THEN 'parked' ELSE 'retrying' END AS state,
       retry_at, parked_at, queued_at
  FROM @extschema@.embed_queue
 WHERE sqlstate IS NOT NULL
   AND EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = relid)
   AND pg_catalog.has_table_privilege(relid, 'SELECT')
   AND NOT pg_catalog.row_security_active(relid);

UPDATE @extschema@.embed_queue
   SET message = 'SQLSTATE ' OPERATOR(pg_catalog.||) sqlstate OPERATOR(pg_catalog.||)
                 '; its message, kept by clinembed 0.10.0, is withheld, as it may quote the row'
 WHERE message IS NOT NULL;

ALTER TABLE @extschema@.embed_queue ADD COLUMN pkey oid;

-- The row trigger is a C function: NEW read, decided, embedded, cast and
-- written in the library, with no SQL per row.  Triggers keep working: they
-- name the function by oid.
CREATE OR REPLACE FUNCTION @extschema@.embed_trigger()
RETURNS trigger
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'embed_trigger_wrapper';

-- The row trigger's helpers lose their only caller.  Their symbols stay in
-- the library as stubs (src/upgrade.rs) for the older scripts that create
-- them.
DROP FUNCTION @extschema@._embed_row_read(text, text, text);
DROP FUNCTION @extschema@._embed_row_action(text, boolean, boolean, text, boolean, boolean);
DROP FUNCTION @extschema@._embed_row_write(oid, text, text, text);

-- The statement trigger is a C function too: it reads its transition tables
-- through its own SPI connection, embeds in the library and writes each
-- call's vectors back with one prepared UPDATE.  The helpers its PL/pgSQL
-- body called are dropped (their symbols stay as stubs too).
CREATE OR REPLACE FUNCTION @extschema@.embed_batch_trigger()
RETURNS trigger
LANGUAGE c
SET search_path = pg_catalog, pg_temp
AS 'MODULE_PATHNAME', 'embed_batch_trigger_wrapper';
DROP FUNCTION @extschema@._embed_trigger_args(text, oid, text, text[]);
DROP FUNCTION @extschema@._embed_check_dims(oid, text, text, integer);
DROP FUNCTION @extschema@._embed_batch_statements(oid, text, text, text, text, text, text);
DROP FUNCTION @extschema@._embed_rows_per_call();
DROP FUNCTION @extschema@._embed_constraint_error(oid, text, text);

-- The backfill's batch reads its rows, embeds them in the library and writes
-- them with one UPDATE; the statements are no longer an SQL function's.
DROP FUNCTION @extschema@._backfill_statements(oid, text, text, text, text, text);

-- A note's sections: the rules table and embed_sections (sql/sections.sql
-- in the install script).
CREATE FUNCTION @extschema@._embed_default_section_rules()
RETURNS TABLE (header text, name text)
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_default_section_rules_wrapper';
CREATE FUNCTION @extschema@.embed_sections(text text)
RETURNS TABLE (section integer, name text, header text, char_start integer, char_end integer)
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_sections_wrapper';
CREATE TABLE @extschema@.embed_section_rules (
    header text PRIMARY KEY CHECK (pg_catalog.btrim(header) OPERATOR(pg_catalog.<>) ''),
    name text NOT NULL CHECK (name OPERATOR(pg_catalog.~) '^[a-z][a-z0-9_]*$'),
    seeded boolean NOT NULL DEFAULT false
);
INSERT INTO @extschema@.embed_section_rules (header, name, seeded)
SELECT header, name, true FROM @extschema@._embed_default_section_rules();
SELECT pg_catalog.pg_extension_config_dump('@extschema@.embed_section_rules', 'WHERE NOT seeded');
GRANT SELECT ON @extschema@.embed_section_rules TO PUBLIC;

-- embed_chunks keeps a note's windows inside its sections (sections =>
-- true, the default), can lead each window of a section after its first
-- with the section's header (header_context => true) and returns each
-- window's section.  Its result type
-- changes, so it is dropped and created again: a view over it must be
-- dropped before the update and created again after.
DROP FUNCTION @extschema@.embed_chunks(text, integer, integer);
DROP FUNCTION @extschema@.embed_chunks(text, text, integer, integer);
CREATE FUNCTION @extschema@.embed_chunks(
    text text, window_tokens integer DEFAULT 128, overlap_tokens integer DEFAULT 32,
    sections boolean DEFAULT true, header_context boolean DEFAULT false)
RETURNS TABLE (chunk integer, char_start integer, char_end integer, tokens integer,
               embedding real[], section text)
STRICT STABLE PARALLEL SAFE COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_chunks_wrapper';
CREATE FUNCTION @extschema@.embed_chunks(
    text text, model text, window_tokens integer DEFAULT 128, overlap_tokens integer DEFAULT 32,
    sections boolean DEFAULT true, header_context boolean DEFAULT false)
RETURNS TABLE (chunk integer, char_start integer, char_end integer, tokens integer,
               embedding real[], section text)
STRICT STABLE PARALLEL SAFE COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_chunks_model_wrapper';

-- embed_text_chunked takes the windows' pooling: mean (as before), max or
-- mean_max.
DROP FUNCTION @extschema@.embed_text_chunked(text, integer, integer);
DROP FUNCTION @extschema@.embed_text_chunked(text, text, integer, integer);
CREATE FUNCTION @extschema@.embed_text_chunked(
    text text, window_tokens integer DEFAULT 128, overlap_tokens integer DEFAULT 32,
    pooling text DEFAULT 'mean')
RETURNS real[]
STRICT STABLE PARALLEL SAFE COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_text_chunked_wrapper';
CREATE FUNCTION @extschema@.embed_text_chunked(
    text text, model text, window_tokens integer DEFAULT 128, overlap_tokens integer DEFAULT 32,
    pooling text DEFAULT 'mean')
RETURNS real[]
STRICT STABLE PARALLEL SAFE COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_text_chunked_model_wrapper';

-- Chunk rows kept in sync with their notes through the queue
-- (docs/long-notes.md, "Chunk tables").
CREATE FUNCTION @extschema@.embed_chunks_trigger()
RETURNS trigger
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_chunks_trigger_wrapper';
CREATE FUNCTION @extschema@._embed_chunk_coverage(rel oid)
RETURNS TABLE (key text[], tokens integer, tokens_embedded integer, windows integer, sections integer)
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c
AS 'MODULE_PATHNAME', '_embed_chunk_coverage_wrapper';
-- SELECT * FROM embed_chunk_coverage('notes'): each note of a table with
-- an embed_chunks_trigger (its partitions included) with the tokens of its
-- text, the tokens its chunk rows embed, its chunk rows and the named
-- sections of its text.  Reads every note, as the calling role.
CREATE FUNCTION @extschema@.embed_chunk_coverage(relation pg_catalog.regclass)
RETURNS TABLE (key text[], tokens integer, tokens_embedded integer, windows integer, sections integer)
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._embed_chunk_coverage(relation::pg_catalog.oid) $$;

-- Search (docs/search.md).
CREATE FUNCTION @extschema@._embed_search(
    relation oid, query text, k integer, mode text, filter jsonb,
    rrf_k double precision, vector_weight double precision,
    lexical_weight double precision, language text, model_id text,
    text_column text, vector_column text, model_column text, tsvector_column text,
    rerank integer, rerank_model text)
RETURNS TABLE (key text[], score double precision, vector_rank integer,
    lexical_rank integer, distance double precision, chunk integer,
    section text, char_start integer, char_end integer, rerank_score real)
STABLE PARALLEL RESTRICTED COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_search_impl_wrapper';
CREATE FUNCTION @extschema@._embed_eval(
    pairs oid, relations bigint[], k integer, modes text[], language text,
    rerank integer, rerank_model text)
RETURNS TABLE (relation text, model text, mode text, queries integer,
    recall double precision, mrr double precision, ndcg double precision)
STABLE PARALLEL RESTRICTED COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_eval_impl_wrapper';
CREATE FUNCTION @extschema@.embed_rerank(query text, texts text[])
RETURNS real[]
STRICT STABLE PARALLEL SAFE COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_rerank_wrapper';
CREATE FUNCTION @extschema@.embed_rerank(query text, texts text[], model text)
RETURNS real[]
STRICT STABLE PARALLEL SAFE COST 10000
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_rerank_model_wrapper';
-- embed_models gains a kind column (embedding or cross-encoder).
DROP FUNCTION @extschema@.embed_models();
CREATE FUNCTION @extschema@.embed_models()
RETURNS TABLE (name text, path text, dimensions integer, max_length integer,
    pooling text, "normalize" boolean, sha256 text, loaded boolean, error text, kind text)
STRICT STABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'embed_models_wrapper';
-- SELECT * FROM embed_search('notes', 'query', 10): the notes nearest a
-- query, by vectors and text fused (docs/search.md).  A NULL argument
-- takes its default: k 10, mode 'hybrid', rrf_k 60, weights 1, language
-- 'english', rerank 0 (none).  SECURITY INVOKER: it reads as the calling
-- role.
CREATE FUNCTION @extschema@.embed_search(
    relation pg_catalog.regclass, query text, k integer DEFAULT NULL,
    mode text DEFAULT NULL, filter jsonb DEFAULT NULL,
    rrf_k double precision DEFAULT NULL, vector_weight double precision DEFAULT NULL,
    lexical_weight double precision DEFAULT NULL, language text DEFAULT NULL,
    model_id text DEFAULT NULL, text_column text DEFAULT NULL,
    vector_column text DEFAULT NULL, model_column text DEFAULT NULL,
    tsvector_column text DEFAULT NULL, rerank integer DEFAULT NULL,
    rerank_model text DEFAULT NULL)
RETURNS TABLE (key text[], score double precision, vector_rank integer,
    lexical_rank integer, distance double precision, chunk integer,
    section text, char_start integer, char_end integer, rerank_score real)
LANGUAGE sql STABLE PARALLEL RESTRICTED COST 10000 ROWS 10
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._embed_search(relation::pg_catalog.oid, query, k,
    mode, filter, rrf_k, vector_weight, lexical_weight, language, model_id,
    text_column, vector_column, model_column, tsvector_column, rerank,
    rerank_model) $$;

-- SELECT * FROM embed_eval('eval_pairs', ARRAY['notes']::regclass[]):
-- recall, MRR and nDCG at k of each mode on labelled queries
-- (docs/search.md).  NULL: k 10, every mode, language 'english'; with
-- rerank => n, also hybrid with its first n notes reranked.
CREATE FUNCTION @extschema@.embed_eval(
    pairs pg_catalog.regclass, relations pg_catalog.regclass[], k integer DEFAULT NULL,
    modes text[] DEFAULT NULL, language text DEFAULT NULL,
    rerank integer DEFAULT NULL, rerank_model text DEFAULT NULL)
RETURNS TABLE (relation text, model text, mode text, queries integer,
    recall double precision, mrr double precision, ndcg double precision)
LANGUAGE sql STABLE PARALLEL RESTRICTED COST 1000000
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@._embed_eval(pairs::pg_catalog.oid,
    relations::pg_catalog.oid[]::pg_catalog.int8[], k, modes, language,
    rerank, rerank_model) $$;
