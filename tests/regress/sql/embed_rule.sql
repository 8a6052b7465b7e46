-- One rule for which rows need embedding (clinembed_core::rows::columns::action),
-- used by the row trigger, the statement trigger and the backfill: the SQL
-- conditions the library derives from it agree with it in every state, and
-- a row without text but with a vector is cleared in every path.
CREATE EXTENSION IF NOT EXISTS clinembed;
CREATE EXTENSION IF NOT EXISTS vector;
SELECT array_length(embed_text('warm up'), 1) AS dims;

-- The rule, as the library states it.
SELECT event, has_text, has_vector, label, action FROM _embed_rule()
 WHERE label IN ('none', 'current') ORDER BY event, has_text, has_vector, label;

---------------------------------------------------------------- conditions agree with the rule
-- Every state of a row, with and without a model column, in a table; each
-- condition from _embed_needs_work must select exactly the states whose
-- action is not 'keep'.
CREATE TABLE states (txt text, vec real[], mdl text, label text, with_model boolean);
INSERT INTO states
SELECT t, v, CASE l WHEN 'current' THEN 'the-model@0000000000000001'
                    WHEN 'other' THEN 'another@0000000000000002' END, l, l <> 'none'
  FROM (VALUES (NULL), ('a note')) t(t), (VALUES (NULL), ('{1,2}'::real[])) v(v),
       (VALUES ('none'), ('null'), ('current'), ('other')) l(l);
CREATE FUNCTION disagreements(ev text) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    n bigint := 0;
    k bigint;
    shape boolean;
BEGIN
    FOREACH shape IN ARRAY ARRAY[false, true] LOOP
        EXECUTE format(
            'SELECT count(*) FROM states s JOIN _embed_rule() r'
            '    ON r.event = %L AND r.has_text = (s.txt IS NOT NULL) AND r.has_vector = (s.vec IS NOT NULL)'
            '   AND r.label = s.label'
            ' WHERE s.with_model = %L AND (r.action <> ''keep'') IS DISTINCT FROM (%s)',
            ev, shape,
            _embed_needs_work(ev, 'txt', 'vec', CASE WHEN shape THEN 'mdl' END,
                              'the-model@0000000000000001', 's'))
          INTO k;
        n := n + k;
    END LOOP;
    RETURN n;
END;
$$;
SELECT count(*) AS states FROM states;
SELECT ev, disagreements(ev) FROM unnest(ARRAY['inserted', 'text_changed', 'stored']) ev;
-- text_changed never compares labels, so it needs no identity; stored does
SELECT _embed_needs_work('text_changed', 'txt', 'vec', 'mdl', NULL) <> '' AS no_identity_needed;
SELECT _embed_needs_work('stored', 'txt', 'vec', 'mdl', NULL);
SELECT _embed_needs_work('sideways', 'txt', 'vec', NULL, 'x');
-- names are quoted, whatever they are
SELECT _embed_needs_work('stored', 'a"b', 'select', NULL, NULL);

---------------------------------------------------------------- a NULL text with a vector: cleared everywhere
CREATE TABLE row_notes (id int PRIMARY KEY, exp_text text, embedding vector(384), embedding_model text);
CREATE TRIGGER row_embed BEFORE INSERT OR UPDATE ON row_notes
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model');
CREATE TABLE batch_notes (id int PRIMARY KEY, exp_text text, embedding vector(384), embedding_model text);
CREATE TRIGGER batch_embed_insert AFTER INSERT ON batch_notes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model');
CREATE TRIGGER batch_embed_update AFTER UPDATE ON batch_notes REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model');
-- inserted without text, carrying a vector of the current model
INSERT INTO row_notes VALUES (1, NULL, embed_text('x')::vector, embed_model_id());
INSERT INTO batch_notes VALUES (1, NULL, embed_text('x')::vector, embed_model_id());
-- updated from a text to NULL
INSERT INTO row_notes VALUES (2, 'a note');
INSERT INTO batch_notes VALUES (2, 'a note');
UPDATE row_notes SET exp_text = NULL WHERE id = 2;
UPDATE batch_notes SET exp_text = NULL WHERE id = 2;
SELECT 'row' AS path, id, embedding IS NULL AS no_vector, embedding_model IS NULL AS no_model FROM row_notes
UNION ALL
SELECT 'batch', id, embedding IS NULL, embedding_model IS NULL FROM batch_notes ORDER BY 1, 2;
-- stored without text (written with the triggers off), met by the backfill
CREATE TABLE stored_notes (id int PRIMARY KEY, exp_text text, embedding vector(384), embedding_model text);
INSERT INTO stored_notes
SELECT g, CASE WHEN g > 3 THEN format('Stored note %s.', g) END, embed_text('x')::vector,
       CASE WHEN g % 2 = 0 THEN embed_model_id() END
  FROM generate_series(1, 6) g;
SET client_min_messages = warning;
CALL embed_backfill('stored_notes', 'exp_text', 'embedding', model_column => 'embedding_model');
RESET client_min_messages;
SELECT rows_done, rows_total FROM backfill_status WHERE relation = 'stored_notes';
-- rows 1-3 cleared; 4 and 6 (labelled current) kept; 5 re-embedded
SELECT id, embedding IS NULL AS no_vector, embedding_model IS NULL AS no_model,
       embedding = embed_text('x')::vector AS old_vector
  FROM stored_notes ORDER BY id;

---------------------------------------------------------------- the row trigger writes vectors exactly
-- A table with a dropped column, a generated column, awkward names and a
-- real[] target: the vector arrives bit for bit, every other column as it was.
CREATE TABLE "Odd ""Rows""" (
    id int PRIMARY KEY,
    gone text,
    "select" text,
    "vec tor" real[],
    "from" varchar(200),
    len int GENERATED ALWAYS AS (length("select")) STORED,
    extra jsonb DEFAULT '{"k": 1}'
);
ALTER TABLE "Odd ""Rows""" DROP COLUMN gone;
CREATE TRIGGER embed BEFORE INSERT OR UPDATE ON "Odd ""Rows"""
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('select', 'vec tor', 'from');
INSERT INTO "Odd ""Rows""" (id, "select") VALUES (1, 'Café résumé, BP 142/91.')
    RETURNING id, "vec tor" = embed_text('Café résumé, BP 142/91.') AS exact, "from" = embed_model_id() AS model,
              len, extra;
UPDATE "Odd ""Rows""" SET "select" = 'Afebrile.' WHERE id = 1
    RETURNING "vec tor" = embed_text('Afebrile.') AS exact, len, extra;

---------------------------------------------------------------- column checks, in every path
CREATE TABLE checks (id int PRIMARY KEY, n int, "Body Text" text, e vector(384), small vector(3), m text);
-- the source must be text (42804), named columns must exist (42703), and differ (22023)
CALL embed_backfill('checks', 'n', 'e');
\echo :LAST_ERROR_SQLSTATE
CALL embed_backfill('checks', 'Body Text', 'e', model_column => 'no such');
\echo :LAST_ERROR_SQLSTATE
CALL embed_backfill('checks', 'Body Text', 'e', model_column => 'Body Text');
\echo :LAST_ERROR_SQLSTATE
-- a vector(3) column refuses 384 dimensions before any inference, in each path
CALL embed_backfill('checks', 'Body Text', 'small');
\echo :LAST_ERROR_SQLSTATE
CREATE TRIGGER small_row BEFORE INSERT ON checks
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('Body Text', 'small');
INSERT INTO checks (id, "Body Text") VALUES (1, 'a note');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER small_row ON checks;
CREATE TRIGGER small_batch AFTER INSERT ON checks REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('Body Text', 'small');
INSERT INTO checks (id, "Body Text") VALUES (1, 'a note');
\echo :LAST_ERROR_SQLSTATE
DROP TABLE checks;

-- the library's catalog reads write nothing: no transaction id is assigned
-- (a hot standby refuses one; the sharded tier runs the backfill there)
BEGIN;
-- the type as the catalog names it, schema-qualified whatever the caller's
-- search_path (clinembed's catalog reads run with it pinned)
SELECT target_type FROM _embed_target('row_notes'::regclass, 'exp_text', 'embedding', 'embedding_model');
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_transaction_id;
COMMIT;

DROP TABLE states, row_notes, batch_notes, stored_notes, "Odd ""Rows""";
DROP FUNCTION disagreements(text);
