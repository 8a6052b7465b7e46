-- The pinned forms (embed_text_pinned, embed_texts_pinned): IMMUTABLE, with
-- the model identity an argument checked at every call.  The installed
-- fixture model clinembed-regress-cls (made by scripts/test.sh) is the
-- default model with CLS pooling: another identity.
CREATE EXTENSION IF NOT EXISTS clinembed;
\set SHOW_CONTEXT never
SET client_min_messages = warning;
SELECT embed_model_id('all-minilm-l6-v2') AS id \gset
SELECT embed_model_id('clinembed-regress-cls') AS cls_id \gset

-- IMMUTABLE and PARALLEL SAFE; the unpinned forms stay STABLE
SELECT p.oid::regprocedure AS function, provolatile, proparallel, procost
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE nspname = 'public' AND proname IN ('embed_text_pinned', 'embed_texts_pinned', 'embed_text')
 ORDER BY p.oid::regprocedure::text COLLATE "C";

CREATE TABLE pin_notes (id int PRIMARY KEY, t text);
INSERT INTO pin_notes VALUES
    (1, 'Chest pain radiating to the left arm, troponin pending.'),
    (2, 'Afebrile overnight. Tolerating diet.'),
    (3, ''),
    (4, repeat('Long history of hypertension and type 2 diabetes. ', 60));

-- the vectors of embed_text(text, model => name), bit for bit
SELECT id, embed_text_pinned(t, :'id') = embed_text(t, model => 'all-minilm-l6-v2') AS same
  FROM pin_notes ORDER BY id;
SELECT count(*) FILTER (WHERE p.embedding = e.embedding) AS same, count(*) AS rows
  FROM embed_texts_pinned(ARRAY(SELECT t FROM pin_notes ORDER BY id), :'id') p
  JOIN embed_texts(ARRAY(SELECT t FROM pin_notes ORDER BY id), model => 'all-minilm-l6-v2') e USING (ord);
SELECT ord, embedding IS NULL AS no_vector FROM embed_texts_pinned(ARRAY['a', NULL], :'id') ORDER BY ord;

-- the session's settings do not change the result: the long-text policy is
-- the identity's (truncation here) ...
CREATE TEMP TABLE truncated AS SELECT embed_text(t) AS v FROM pin_notes WHERE id = 4;
SET clinembed.long_text = chunk;
SELECT embed_text_pinned(t, :'id') = (SELECT v FROM truncated) AS pinned_truncates,
       embed_text(t) = (SELECT v FROM truncated) AS unpinned_truncates
  FROM pin_notes WHERE id = 4;
RESET clinembed.long_text;
-- ... and an identity with +chunkW/O pins the chunked policy
SELECT embed_text_pinned(t, :'id' || '+chunk128/32') = embed_text_chunked(t, 128, 32) AS chunked,
       embed_text_pinned(t, :'id' || '+chunk64/16') = embed_text_chunked(t, 64, 16) AS other_windows
  FROM pin_notes WHERE id = 4;

-- a pin that the installed files do not match is an error naming both
-- identities (55000), never a vector; the pinned hash of another model under
-- this name stands for a model replaced since the pin was taken
CREATE FUNCTION error_of(statement text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE state text; message text; detail text; hint text;
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL,
                            hint = PG_EXCEPTION_HINT;
    -- identities depend on the installed files: shown by what they stand for
    detail := replace(replace(detail, embed_model_id('clinembed-regress-cls'), '<cls id>'),
                      split_part(embed_model_id('all-minilm-l6-v2'), '@', 2), '<default hash>');
    RETURN format(E'%s: %s\nDETAIL: %s\nHINT: %s', state, message, detail, hint);
END $f$;
SELECT error_of(format('SELECT embed_text_pinned(%L, %L)', 'x',
                       'clinembed-regress-cls@' || split_part(:'id', '@', 2)));
-- a chunk policy the model cannot run is refused as embed_text_chunked refuses it
SELECT error_of(format('SELECT embed_text_pinned(%L, %L)', 'x', :'id' || '+chunk2/0')) LIKE '22023:%' AS bad_windows;
SELECT error_of(format('SELECT * FROM embed_texts_pinned(ARRAY[%L], %L)', 'x',
                       'clinembed-regress-cls@' || split_part(:'id', '@', 2))) LIKE '55000:%' AS batch_checked;
-- malformed identities (22023); names only, as for model => (22023)
SELECT error_of($$SELECT embed_text_pinned('x', 'all-minilm-l6-v2')$$);
SELECT error_of($$SELECT embed_text_pinned('x', 'all-minilm-l6-v2@0123456789ABCDEF')$$) LIKE '22023:%' AS upper_hex;
SELECT error_of($$SELECT embed_text_pinned('x', '../all-minilm-l6-v2@0123456789abcdef')$$) LIKE '22023:%' AS no_paths;
DROP FUNCTION error_of(text);
-- NULLs: STRICT
SELECT embed_text_pinned(NULL, :'id') IS NULL AS null_text, embed_text_pinned('x', NULL) IS NULL AS null_id;

-- a generated column: the STABLE form is refused, the pinned form accepted
CREATE TABLE gen_notes (id int, t text, e real[] GENERATED ALWAYS AS (embed_text(t)) STORED);
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE gen_notes (id int, t text, e real[] GENERATED ALWAYS AS (embed_text_pinned(t, :'id')) STORED);
INSERT INTO gen_notes (id, t) SELECT id, t FROM pin_notes;
UPDATE gen_notes SET t = 'Discharged home.' WHERE id = 2;
SELECT id, e = embed_text(t) AS own_vector FROM gen_notes ORDER BY id;
-- a model change is a migration: the column is replaced, every row re-embedded
ALTER TABLE gen_notes DROP COLUMN e,
    ADD COLUMN e real[] GENERATED ALWAYS AS (embed_text_pinned(t, :'cls_id')) STORED;
SELECT id, e = embed_text(t, model => 'clinembed-regress-cls') AS cls_vector FROM gen_notes ORDER BY id;
-- with pgvector: a vector column generated from the pinned form
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE gen_vectors (id int, t text,
    e vector(384) GENERATED ALWAYS AS (embed_text_pinned(t, :'id')::vector(384)) STORED);
INSERT INTO gen_vectors (id, t) SELECT id, t FROM pin_notes;
SELECT count(*) FILTER (WHERE e = embed_text(t)::vector) AS own_vector FROM gen_vectors;
-- and an expression index (a query with the same expression can use it)
CREATE INDEX pin_notes_e ON pin_notes USING hnsw ((embed_text_pinned(t, :'id')::vector(384)) vector_cosine_ops);
SELECT indexdef LIKE '%embed_text_pinned(t, %' AS indexed FROM pg_indexes WHERE indexname = 'pin_notes_e';
DROP TABLE pin_notes, gen_notes, gen_vectors;
