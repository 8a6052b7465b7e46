-- Embeddings beside their rows: row and statement triggers, COPY, the
-- backfill, provenance, and pgvector search with an HNSW index.
-- Inference is counted with embed_stats(): texts and runs since load.
CREATE EXTENSION IF NOT EXISTS clinembed;
CREATE EXTENSION IF NOT EXISTS vector;
SELECT array_length(embed_text('warm up'), 1) AS dims;
CREATE FUNCTION inferences() RETURNS bigint LANGUAGE sql AS 'SELECT texts FROM embed_stats()';
CREATE FUNCTION runs() RETURNS bigint LANGUAGE sql AS 'SELECT runs FROM embed_stats()';
SELECT inferences() AS n0 \gset

-- provenance: name@hash, stable within the session
SELECT embed_model_id() ~ '^all-minilm-l6-v2@[0-9a-f]{16}$' AS id_format,
       embed_model_id() = embed_model_id() AS id_stable;

---------------------------------------------------------------- row trigger
CREATE TABLE notes (
    id bigserial PRIMARY KEY,
    exp_text text,
    category text,
    embedding vector(384),
    embedding_model text
);
CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE ON notes
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model');

-- an INSERT fills the vector, visible in RETURNING, equal to embed_text
INSERT INTO notes (exp_text, category) VALUES ('Patient reports chest pain on exertion.', 'cardiology')
    RETURNING id, vector_dims(embedding) AS dims, embedding_model = embed_model_id() AS model_ok;
SELECT inferences() - :n0 AS inferences_after_insert;
SELECT embedding = embed_text(exp_text)::vector AS exact FROM notes WHERE id = 1;
SELECT inferences() AS n0 \gset

-- a NULL text gives a NULL vector and no inference
INSERT INTO notes (exp_text, category) VALUES (NULL, 'empty') RETURNING id, embedding IS NULL AS no_vector, embedding_model IS NULL AS no_model;
SELECT inferences() - :n0 AS inferences_after_null;

-- an UPDATE of another column, or of the same text, does no inference
UPDATE notes SET category = 'cardio' WHERE id = 1;
UPDATE notes SET exp_text = exp_text WHERE id = 1;
SELECT inferences() - :n0 AS inferences_after_unrelated_updates;

-- an UPDATE of the text re-embeds
UPDATE notes SET exp_text = 'Shortness of breath, worse lying flat.' WHERE id = 1;
SELECT inferences() - :n0 AS inferences_after_text_update;
SELECT embedding = embed_text('Shortness of breath, worse lying flat.')::vector AS reembedded
  FROM notes WHERE id = 1;
-- ... and setting the text to NULL clears the vector
UPDATE notes SET exp_text = NULL WHERE id = 1;
SELECT embedding IS NULL AS cleared, embedding_model IS NULL AS model_cleared FROM notes WHERE id = 1;

-- a rolled-back transaction leaves nothing
BEGIN;
INSERT INTO notes (exp_text) VALUES ('Rolled back note.');
ROLLBACK;
SELECT count(*) AS rolled_back_rows FROM notes WHERE exp_text = 'Rolled back note.';

-- a row arriving with a vector of the current model keeps it (no inference)
SELECT inferences() AS n1 \gset
INSERT INTO notes (exp_text, embedding, embedding_model)
    SELECT 'Copied note.', embed_text('Copied note.')::vector, embed_model_id();
SELECT inferences() - :n1 - 1 AS inferences_for_copied_row;
-- ... but a vector from another model is replaced
INSERT INTO notes (exp_text, embedding, embedding_model)
    VALUES ('Old vector.', array_fill(0, ARRAY[384])::vector, 'old-model@0000000000000000')
    RETURNING embedding = embed_text('Old vector.')::vector AS replaced, embedding_model = embed_model_id() AS model_ok;

-- real[] and halfvec targets, and a table without a model column
CREATE TABLE notes_real (id int PRIMARY KEY, body varchar(200), v real[], h halfvec(384));
CREATE TRIGGER r BEFORE INSERT ON notes_real FOR EACH ROW EXECUTE FUNCTION embed_trigger('body', 'v');
CREATE TRIGGER h BEFORE INSERT ON notes_real FOR EACH ROW EXECUTE FUNCTION embed_trigger('body', 'h');
INSERT INTO notes_real (id, body) VALUES (1, 'Mixed-case Note; with punctuation!');
SELECT v = embed_text(body) AS real_exact, vector_dims(h::vector) AS half_dims,
       l2_distance(h::vector, v::vector) < 1e-2 AS half_close FROM notes_real;

---------------------------------------------------------------- errors
\set VERBOSITY default
\set SHOW_CONTEXT never
-- dimension mismatch: names both numbers
CREATE TABLE wide (id int PRIMARY KEY, t text, e vector(768));
CREATE TRIGGER w BEFORE INSERT ON wide FOR EACH ROW EXECUTE FUNCTION embed_trigger('t', 'e');
INSERT INTO wide VALUES (1, 'x');
\echo :LAST_ERROR_SQLSTATE
-- a bad column name fails on first fire, naming the column
CREATE TRIGGER w2 BEFORE INSERT ON wide FOR EACH ROW EXECUTE FUNCTION embed_trigger('no_such_column', 'e');
DROP TRIGGER w ON wide;
INSERT INTO wide VALUES (1, 'x');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER w2 ON wide;
-- a target of the wrong type
ALTER TABLE wide ADD COLUMN s text;
CREATE TRIGGER w3 BEFORE INSERT ON wide FOR EACH ROW EXECUTE FUNCTION embed_trigger('t', 's');
INSERT INTO wide VALUES (1, 'x');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER w3 ON wide;
-- wrong argument count, and a row trigger used as a statement trigger
CREATE TRIGGER w4 BEFORE INSERT ON wide FOR EACH ROW EXECUTE FUNCTION embed_trigger('t');
INSERT INTO wide VALUES (1, 'x');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER w4 ON wide;
CREATE TRIGGER w5 AFTER INSERT ON wide FOR EACH STATEMENT EXECUTE FUNCTION embed_trigger('t', 'e');
INSERT INTO wide VALUES (1, 'x');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER w5 ON wide;
-- the statement trigger used as a row trigger; both called as functions
CREATE TRIGGER w5b BEFORE INSERT ON wide FOR EACH ROW EXECUTE FUNCTION embed_batch_trigger('t', 'e');
INSERT INTO wide VALUES (1, 'x');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER w5b ON wide;
SELECT embed_trigger();
\echo :LAST_ERROR_SQLSTATE
SELECT embed_batch_trigger();
\echo :LAST_ERROR_SQLSTATE
-- the batch trigger needs transition tables and a primary key
CREATE TRIGGER w6 AFTER INSERT ON wide FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e');
INSERT INTO wide VALUES (1, 'x');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER w6 ON wide;
CREATE TABLE keyless (t text, e real[]);
CREATE TRIGGER k AFTER INSERT ON keyless REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e');
INSERT INTO keyless VALUES ('x');
\echo :LAST_ERROR_SQLSTATE
-- identifiers are quoted: odd column names work
CREATE TABLE "Odd Table" ("Note Text" text, "Vec; drop" real[]);
CREATE TRIGGER odd BEFORE INSERT ON "Odd Table" FOR EACH ROW EXECUTE FUNCTION embed_trigger('Note Text', 'Vec; drop');
INSERT INTO "Odd Table" VALUES ('Quoted columns.');
SELECT array_length("Vec; drop", 1) AS odd_dims FROM "Odd Table";
-- the backfill rejects a bad batch size
CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 0);
\echo :LAST_ERROR_SQLSTATE
CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => NULL);
\echo :LAST_ERROR_SQLSTATE
-- ... and NULL arguments, rather than doing nothing
CALL embed_backfill(NULL, 'exp_text', 'embedding');
\echo :LAST_ERROR_SQLSTATE
CALL embed_backfill('notes', NULL, 'embedding');
\echo :LAST_ERROR_SQLSTATE

---------------------------------------------------------------- bulk: COPY through the statement trigger
CREATE TABLE bulk (
    id int PRIMARY KEY,
    exp_text text,
    embedding vector(384),
    embedding_model text
);
CREATE TRIGGER bulk_insert AFTER INSERT ON bulk REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model');
CREATE TRIGGER bulk_update AFTER UPDATE ON bulk REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model');
COPY (SELECT g, CASE WHEN g % 250 = 0 THEN NULL
                     ELSE format('Note %s: %s', g, repeat('stable vitals, ', g % 9)) END
        FROM generate_series(1, 2000) g)
  TO '/tmp/clinembed-regress-copy.tsv';
SELECT inferences() AS n2, runs() AS r2 \gset
COPY bulk (id, exp_text) FROM '/tmp/clinembed-regress-copy.tsv';
-- 1992 texts went through in a few dozen ONNX Runtime runs, not one per row
SELECT inferences() - :n2 AS texts_embedded, runs() - :r2 < 100 AS batched;
SELECT count(embedding) AS with_vector, count(*) FILTER (WHERE exp_text IS NULL AND embedding IS NULL) AS null_text,
       count(*) FILTER (WHERE embedding_model = embed_model_id()) AS with_model FROM bulk;
SELECT bool_and(embedding = embed_text(exp_text)::vector) AS batch_equals_single
  FROM bulk WHERE id IN (1, 2, 17, 999, 1001, 1999);
-- a statement UPDATE re-embeds only rows whose text changed
SELECT inferences() AS n3 \gset
UPDATE bulk SET embedding_model = embedding_model WHERE id <= 100;
UPDATE bulk SET exp_text = upper(exp_text) WHERE id <= 30;
SELECT inferences() - :n3 AS reembedded;
SELECT bool_and(embedding = embed_text(exp_text)::vector) AS updated_exact FROM bulk WHERE id <= 30;
-- keys go out as text and back between calls: a floating-point key that
-- prints short under extra_float_digits = 0, and a date under DMY, each
-- call two rows
CREATE TABLE bulk_keys (x double precision, d date, exp_text text, embedding vector(384),
    PRIMARY KEY (x, d));
CREATE TRIGGER bulk_keys_insert AFTER INSERT ON bulk_keys REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding');
SET extra_float_digits = 0;
SET DateStyle = 'SQL, DMY';
SET clinembed.batch_max_texts = 2;
INSERT INTO bulk_keys SELECT g * 0.1::float8 + 0.2::float8, DATE '2026-01-02' + g, 'Key note ' || g FROM generate_series(1, 5) g;
SELECT count(*) AS rows, count(embedding) AS embedded,
       bool_and(embedding = embed_text(exp_text)::vector) AS same_as_embed_text FROM bulk_keys;
RESET clinembed.batch_max_texts;
RESET DateStyle;
RESET extra_float_digits;
DROP TABLE bulk_keys;

---------------------------------------------------------------- backfill and model change
CREATE TABLE old_notes (id int PRIMARY KEY, exp_text text, embedding vector(384), embedding_model text);
INSERT INTO old_notes SELECT g, CASE WHEN g % 50 <> 0 THEN format('Existing note %s.', g) END FROM generate_series(1, 300) g;
SET client_min_messages = warning; -- the progress NOTICEs carry rates and times
CALL embed_backfill('old_notes', 'exp_text', 'embedding', batch_size => 64, model_column => 'embedding_model');
RESET client_min_messages;
SELECT count(embedding) AS embedded, count(*) FILTER (WHERE embedding IS NULL) AS null_text_rows FROM old_notes;
SELECT state, rows_done, rows_total, batches, percent FROM backfill_status WHERE relation = 'old_notes';
-- run again: nothing left to do
SELECT inferences() AS n4 \gset
SET client_min_messages = warning;
CALL embed_backfill('old_notes', 'exp_text', 'embedding', batch_size => 64, model_column => 'embedding_model');
RESET client_min_messages;
SELECT inferences() - :n4 AS second_run_inferences;
-- after a model change the rows of the old model are stale and re-embedded
-- (the fixture is the default model with normalize on: another identity)
SET clinembed.model = '/tmp/clinembed-regress-normalized';
SELECT embed_model_id() ~ '^clinembed-regress-normalized@' AS new_id;
SET client_min_messages = warning;
CALL embed_backfill('old_notes', 'exp_text', 'embedding', batch_size => 100, model_column => 'embedding_model');
RESET client_min_messages;
SELECT count(*) FILTER (WHERE embedding_model = embed_model_id()) AS new_model_rows,
       bool_and(abs(vector_norm(embedding) - 1) < 1e-5) AS normalized FROM old_notes WHERE exp_text IS NOT NULL;
SELECT rows_done, rows_total FROM backfill_status WHERE relation = 'old_notes' ORDER BY run_id DESC LIMIT 1;
RESET clinembed.model;
-- without a model column only NULL vectors count as stale
UPDATE old_notes SET embedding = NULL WHERE id <= 10;
SET client_min_messages = warning;
CALL embed_backfill('old_notes', 'exp_text', 'embedding');
RESET client_min_messages;
SELECT count(*) FILTER (WHERE exp_text IS NOT NULL AND embedding IS NULL) AS missing FROM old_notes;

---------------------------------------------------------------- a run's batches see the catalog change between them
-- A run resolves its tables and statements at its first batch and keeps
-- them until the catalog changes: a partition attached after the first
-- batch is walked too, and a target column retyped is written as its new
-- type.
CREATE TABLE parted (id integer PRIMARY KEY, exp_text text, embedding real[]) PARTITION BY RANGE (id);
CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
INSERT INTO parted (id, exp_text) SELECT g, 'Note ' || g || ': afebrile.' FROM generate_series(1, 4) g;
SET client_min_messages = warning;
SELECT _backfill_start('parted'::regclass, 'exp_text', 'embedding', 2, NULL) AS parted_run \gset
SELECT _backfill_batch(:parted_run, 'public') AS more;
CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (100) TO (200);
INSERT INTO parted (id, exp_text) VALUES (101, 'Late note: afebrile.'), (102, 'Late note: stable.');
ALTER TABLE parted ALTER COLUMN embedding TYPE vector(384) USING embedding::vector(384);
SELECT _backfill_batch(:parted_run, 'public') AS more;
SELECT _backfill_batch(:parted_run, 'public') AS more;
SELECT _backfill_batch(:parted_run, 'public') AS more;
RESET client_min_messages;
SELECT tableoid::regclass AS part, count(*) AS rows, count(embedding) AS embedded FROM parted GROUP BY 1 ORDER BY 1;
SELECT bool_and(embedding = embed_text(exp_text)::vector(384)) AS same_as_embed_text FROM parted;
DROP TABLE parted;

---------------------------------------------------------------- pgvector search with an HNSW index
CREATE INDEX bulk_embedding_hnsw ON bulk USING hnsw (embedding vector_cosine_ops);
ANALYZE bulk;
EXPLAIN (COSTS OFF)
SELECT id FROM bulk ORDER BY embedding <=> embed_text('stable vitals')::vector(384) LIMIT 5;
SELECT count(*) AS hits FROM (
    SELECT id FROM bulk ORDER BY embedding <=> embed_text('Note 7: stable vitals')::vector(384) LIMIT 5) s;

DROP TABLE notes, notes_real, wide, keyless, "Odd Table", bulk, old_notes;
DROP FUNCTION inferences(), runs();
