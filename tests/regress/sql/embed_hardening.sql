-- Hardening: each defect found by adversarial testing and each
-- decided behaviour, one section each, named by what must hold.  Fixtures
-- (/tmp/clinembed-regress-normalized) are made by scripts/test.sh.
CREATE EXTENSION IF NOT EXISTS clinembed;
\set SHOW_CONTEXT never
SET client_min_messages = warning;

---------------------------------------------------------------- 1. backfill on a partitioned table
CREATE TABLE pbf (id int PRIMARY KEY, t text, e real[], m text) PARTITION BY RANGE (id);
CREATE TABLE pbf_a PARTITION OF pbf FOR VALUES FROM (0) TO (100);
CREATE TABLE pbf_b PARTITION OF pbf FOR VALUES FROM (100) TO (200);
INSERT INTO pbf SELECT g, 'Partition A note ' || g || '. Stable overnight.' FROM generate_series(0, 19) g;
INSERT INTO pbf SELECT g, 'Partition B note ' || g || '. Febrile, cultures sent.' FROM generate_series(100, 119) g;
CALL embed_backfill('pbf', 't', 'e', batch_size => 8, model_column => 'm');
-- every row holds its own note's vector, stamped with the current model
SELECT count(*) AS rows, count(*) FILTER (WHERE e = embed_text(t) AND m = embed_model_id()) AS own_vector FROM pbf;
SELECT state, rows_done, rows_total FROM backfill_status WHERE relation = 'pbf';

---------------------------------------------------------------- 2. backfill on an inheritance tree
CREATE TABLE ibf (id int, t text, e real[]);
CREATE TABLE ibf_child () INHERITS (ibf);
INSERT INTO ibf SELECT g, 'Parent row ' || g || '. Ambulating.' FROM generate_series(1, 10) g;
INSERT INTO ibf_child SELECT g, 'Child row ' || g || '. Nil by mouth.' FROM generate_series(1, 10) g;
CALL embed_backfill('ibf', 't', 'e', batch_size => 3);
SELECT count(*) AS rows, count(*) FILTER (WHERE e = embed_text(t)) AS own_vector FROM ibf;
-- a foreign table among the partitions is refused, with the hint to run it there
CREATE FOREIGN DATA WRAPPER clinembed_test_fdw;
CREATE SERVER clinembed_test_server FOREIGN DATA WRAPPER clinembed_test_fdw;
CREATE TABLE fbf (id int, t text, e real[]) PARTITION BY RANGE (id);
CREATE FOREIGN TABLE fbf_remote PARTITION OF fbf FOR VALUES FROM (0) TO (10) SERVER clinembed_test_server;
CALL embed_backfill('fbf', 't', 'e');
\echo :LAST_ERROR_SQLSTATE
DROP TABLE fbf;
DROP SERVER clinembed_test_server;
DROP FOREIGN DATA WRAPPER clinembed_test_fdw;

---------------------------------------------------------------- 3. batched UPDATE that changes the key with the text
CREATE TABLE pkc (id int PRIMARY KEY, t text, e real[], m text);
CREATE TRIGGER pkc_ins AFTER INSERT ON pkc REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e', 'm');
CREATE TRIGGER pkc_upd AFTER UPDATE ON pkc REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e', 'm');
INSERT INTO pkc SELECT g, 'Original note ' || g FROM generate_series(1, 6) g;
UPDATE pkc SET id = id + 100, t = 'changed ' || id WHERE id <= 3;
SELECT id, e = embed_text(t) AS own_vector FROM pkc ORDER BY id;
-- a key change alone re-embeds too (the text is the same, so is the vector)
UPDATE pkc SET id = id + 1000 WHERE id = 4;
SELECT count(*) FILTER (WHERE e = embed_text(t)) AS own_vector, count(*) AS rows FROM pkc;

---------------------------------------------------------------- 4. micro-batches stay under the superuser's ceiling
SHOW clinembed.batch_tokens_limit;
CREATE ROLE clinembed_hard LOGIN;
GRANT CREATE ON SCHEMA public TO clinembed_hard;
SET ROLE clinembed_hard;
SET clinembed.batch_tokens_limit = 1048576;
\echo :LAST_ERROR_SQLSTATE
SET clinembed.batch_tokens = 1048576;
SELECT runs AS runs_before FROM embed_stats() \gset
-- 200 texts of about 40 tokens: 8000 padded tokens, 4 micro-batches of 2048 at least
SELECT count(*) AS texts FROM embed_texts(ARRAY(
    SELECT 'Note ' || g || ': ' || repeat('afebrile ', 35) FROM generate_series(1, 200) g));
SELECT runs - :runs_before >= 4 AS bounded_micro_batches FROM embed_stats();
RESET clinembed.batch_tokens;
RESET ROLE;

---------------------------------------------------------------- 5. huge texts without whitespace
-- the byte cap holds without whitespace: a 5 MB text of 'a,' is embedded from
-- its first tokens, exactly as a short text with the same first 512 tokens
SELECT embed_text(repeat('a,', 2500000)) = embed_text(repeat('a,', 300)) AS same_first_tokens;
-- a 50 MB word: the tokenizer sees its first mebibyte only, one unknown token
SELECT embed_text(repeat('a', 50000000)) = embed_text(repeat('a', 2000)) AS unknown_word;
-- counting is exact for texts with whitespace, whatever their size
SELECT embed_token_count(repeat('chest pain, ', 100000)) AS tokens;
SELECT (embed_truncation(repeat('a,', 2500000))).*;

---------------------------------------------------------------- 6. progress only for one's own runs on tables one may update
RESET client_min_messages;
CREATE TABLE others_notes (id int PRIMARY KEY, t text, e real[]);
SET ROLE clinembed_hard;
CREATE TABLE hard_notes (id int PRIMARY KEY, t text, e real[]);
-- the helpers of 0.2.0 are gone
SELECT count(*) AS definer_helpers FROM pg_proc WHERE proname IN ('_backfill_begin', '_backfill_step');
-- a run for a table it may not update: 42501
INSERT INTO backfill_runs (relid, source_column, target_column, model_id, batch_size, rows_total)
VALUES ('others_notes'::regclass, 't', 'e', 'm', 1, 3000);
\echo :LAST_ERROR_SQLSTATE
-- for its own table, but with columns the table lacks: 42501
INSERT INTO backfill_runs (relid, source_column, target_column, model_id, batch_size, rows_total)
VALUES ('hard_notes'::regclass, 'x', 'y', 'm', 1, 10);
\echo :LAST_ERROR_SQLSTATE
-- negative counts and huge names: 23514
INSERT INTO backfill_runs (relid, source_column, target_column, model_id, batch_size, rows_total)
VALUES ('hard_notes'::regclass, 't', 'e', 'm', 1, -5);
\echo :LAST_ERROR_SQLSTATE
INSERT INTO backfill_runs (relid, source_column, target_column, model_id, batch_size, rows_total)
VALUES ('hard_notes'::regclass, 't', 'e', repeat('m', 1000000), 1, 5);
\echo :LAST_ERROR_SQLSTATE
-- another backend's run cannot be advanced or finished
RESET ROLE;
INSERT INTO backfill_runs (relid, source_column, target_column, model_id, batch_size, rows_total)
VALUES ('others_notes'::regclass, 't', 'e', 'm', 1, 10);
UPDATE backfill_runs SET pid = 1 WHERE relid = 'others_notes'::regclass;
SET ROLE clinembed_hard;
UPDATE backfill_runs SET rows_done = 10, finished_at = now() WHERE relid = 'others_notes'::regclass;
\set VERBOSITY terse
SELECT _backfill_batch(run_id, 'public') FROM backfill_runs WHERE relid = 'others_notes'::regclass;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT state, rows_done FROM backfill_status WHERE relation = 'others_notes';
RESET ROLE;
DELETE FROM backfill_runs WHERE relid = 'others_notes'::regclass;
SET client_min_messages = warning;

---------------------------------------------------------------- 7. no privilege path through search_path
-- A database owner's schema before pg_catalog, with functions and operators
-- named like the ones a backfill uses, each logging its call.  A superuser's
-- backfill must call none of them.
CREATE TABLE evil_calls (what text);
CREATE SCHEMA evil;
CREATE FUNCTION evil.log(what text) RETURNS void LANGUAGE sql AS 'INSERT INTO public.evil_calls VALUES (what)';
CREATE FUNCTION evil.round(numeric) RETURNS numeric LANGUAGE sql
    AS 'SELECT evil.log(''round''); SELECT pg_catalog.round($1)';
CREATE FUNCTION evil.date_trunc(text, interval) RETURNS interval LANGUAGE sql
    AS 'SELECT evil.log(''date_trunc''); SELECT pg_catalog.date_trunc($1, $2)';
CREATE FUNCTION evil.embed_model_id() RETURNS text LANGUAGE sql
    AS 'SELECT evil.log(''embed_model_id''); SELECT ''evil''';
CREATE FUNCTION evil.plus(bigint, bigint) RETURNS bigint LANGUAGE sql
    AS 'SELECT evil.log(''+''); SELECT $1 OPERATOR(pg_catalog.+) $2';
CREATE OPERATOR evil.+ (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = evil.plus);
CREATE FUNCTION evil.lt(integer, integer) RETURNS boolean LANGUAGE sql
    AS 'SELECT evil.log(''<''); SELECT $1 OPERATOR(pg_catalog.<) $2';
CREATE OPERATOR evil.< (LEFTARG = integer, RIGHTARG = integer, FUNCTION = evil.lt);
CREATE FUNCTION evil.tidgt(tid, tid) RETURNS boolean LANGUAGE sql
    AS 'SELECT evil.log(''>''); SELECT $1 OPERATOR(pg_catalog.>) $2';
CREATE OPERATOR evil.> (LEFTARG = tid, RIGHTARG = tid, FUNCTION = evil.tidgt);
CREATE TABLE sp_notes (id int PRIMARY KEY, t text, e real[], path_seen text);
INSERT INTO sp_notes SELECT g, 'Search path note ' || g FROM generate_series(1, 5) g;
-- the table's own trigger sees the caller's search_path, as for the caller's own UPDATE
CREATE FUNCTION public.see_path() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.path_seen := pg_catalog.current_setting('search_path'); RETURN NEW; END $$;
CREATE TRIGGER see_path BEFORE UPDATE ON sp_notes FOR EACH ROW EXECUTE FUNCTION public.see_path();
-- the schema is live: an unqualified call in this session reaches it
SET search_path = evil, pg_catalog, public;
SELECT round(1.5::numeric) AS evil_round_works;
SELECT count(*) AS calls_by_the_probe FROM public.evil_calls;
DELETE FROM public.evil_calls;
CALL embed_backfill('sp_notes', 't', 'e', batch_size => 2);
RESET search_path;
SELECT count(*) AS evil_calls FROM evil_calls;
SELECT count(*) FILTER (WHERE e = embed_text(t)) AS embedded, min(path_seen) AS trigger_saw FROM sp_notes;
DROP SCHEMA evil CASCADE;

---------------------------------------------------------------- 8. key columns with any name
CREATE TABLE odd_keys (clinembed_ord int, clinembed_text text, ord int, txt text, t text, e real[],
                       PRIMARY KEY (clinembed_ord, clinembed_text, ord, txt));
CREATE TRIGGER odd_ins AFTER INSERT ON odd_keys REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e');
CREATE TRIGGER odd_upd AFTER UPDATE ON odd_keys REFERENCING OLD TABLE AS o NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e');
INSERT INTO odd_keys SELECT g, 'k' || g, g, 'x', 'Odd key note ' || g FROM generate_series(1, 4) g;
UPDATE odd_keys SET t = t || ' amended' WHERE clinembed_ord <= 2;
SELECT count(*) FILTER (WHERE e = embed_text(t)) AS own_vector, count(*) AS rows FROM odd_keys;

---------------------------------------------------------------- decided: the batched trigger needs UPDATE on the vector columns
RESET client_min_messages;
CREATE TABLE clerk_inbox (id int PRIMARY KEY, t text, e real[], m text);
CREATE TRIGGER inbox AFTER INSERT ON clerk_inbox REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e', 'm');
GRANT INSERT ON clerk_inbox TO clinembed_hard;
SET ROLE clinembed_hard;
INSERT INTO clerk_inbox (id, t) VALUES (1, 'Inserted by a role that may only insert.');
RESET ROLE;
GRANT SELECT (id), UPDATE (e, m) ON clerk_inbox TO clinembed_hard;
SET ROLE clinembed_hard;
INSERT INTO clerk_inbox (id, t) VALUES (1, 'Inserted by a role that may only insert.');
RESET ROLE;
SELECT e = embed_text(t) AS embedded FROM clerk_inbox;
SET client_min_messages = warning;

---------------------------------------------------------------- decided: constraint errors of the extension's writes carry no row
CREATE TABLE checked (id int PRIMARY KEY, t text, e real[] CHECK (array_length(e, 1) = 768));
CREATE TRIGGER checked AFTER INSERT ON checked REFERENCING NEW TABLE AS n
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e');
INSERT INTO checked VALUES (1, 'CONSTRAINTSENTINEL text that must not be echoed.');
ALTER TABLE checked DISABLE TRIGGER checked;
INSERT INTO checked VALUES (1, 'CONSTRAINTSENTINEL text that must not be echoed.');
CALL embed_backfill('checked', 't', 'e');
DROP TABLE checked;

---------------------------------------------------------------- decided: BEFORE triggers fire by name; a redaction named first is embedded
CREATE TABLE redacted (id int PRIMARY KEY, t text, e real[]);
CREATE FUNCTION redact() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.t := replace(NEW.t, 'Smith', '[NAME]'); RETURN NEW; END $$;
CREATE TRIGGER a_redact BEFORE INSERT ON redacted FOR EACH ROW EXECUTE FUNCTION redact();
CREATE TRIGGER z_embed BEFORE INSERT ON redacted FOR EACH ROW EXECUTE FUNCTION embed_trigger('t', 'e');
INSERT INTO redacted VALUES (1, 'Mr Smith reports chest pain.');
SELECT t, e = embed_text('Mr [NAME] reports chest pain.') AS redacted_text_embedded FROM redacted;

---------------------------------------------------------------- decided: a superuser's backfill as the table's owner
CREATE TABLE owned (id int PRIMARY KEY, t text, e real[], who text);
ALTER TABLE owned OWNER TO clinembed_hard;
CREATE FUNCTION whoami() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.who := current_user; RETURN NEW; END $$;
CREATE TRIGGER whoami BEFORE UPDATE ON owned FOR EACH ROW EXECUTE FUNCTION whoami();
INSERT INTO owned VALUES (1, 'Owned note.'), (2, 'Another owned note.');
-- as docs/columns-and-triggers.md says: SET ROLE to the owner first, and its triggers run as the owner
SET ROLE clinembed_hard;
CALL embed_backfill('owned', 't', 'e');
RESET ROLE;
SELECT DISTINCT who FROM owned;

---------------------------------------------------------------- decided: a changed thread count replaces the session
SELECT embed_text('threads') IS NOT NULL AS warm;
SET clinembed.intra_op_threads = 1;
SELECT embed_text('threads') IS NOT NULL AS one_thread;
SET clinembed.intra_op_threads = 2;
SELECT embed_text('threads') IS NOT NULL AS two_threads;
SELECT count(*) AS sessions FROM embed_stats();
RESET clinembed.intra_op_threads;

---------------------------------------------------------------- decided: a cursor reads the model setting at each FETCH; model => pins it
CREATE TABLE cursor_notes (id int, t text, v_default real[]);
INSERT INTO cursor_notes VALUES (1, 'First cursor note.'), (2, 'Second cursor note.');
UPDATE cursor_notes SET v_default = embed_text(t);
BEGIN;
DECLARE by_setting CURSOR FOR SELECT id, embed_text(t) = v_default AS default_model FROM cursor_notes ORDER BY id;
DECLARE pinned CURSOR FOR
    SELECT id, embed_text(t, model => 'all-minilm-l6-v2') = v_default AS default_model FROM cursor_notes ORDER BY id;
FETCH 1 FROM by_setting;
FETCH 1 FROM pinned;
SET LOCAL clinembed.model = '/tmp/clinembed-regress-normalized';
FETCH 1 FROM by_setting;
FETCH 1 FROM pinned;
COMMIT;

DROP TABLE pbf, ibf CASCADE;
DROP TABLE pkc, others_notes, hard_notes, evil_calls, sp_notes, odd_keys, clerk_inbox, redacted, owned, cursor_notes;
DROP FUNCTION redact(), whoami(), see_path();
DELETE FROM backfill_runs;
REVOKE CREATE ON SCHEMA public FROM clinembed_hard;
DROP ROLE clinembed_hard;
