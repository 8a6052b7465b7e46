-- Privileges: what an ordinary role can and cannot do.
CREATE EXTENSION IF NOT EXISTS clinembed;
\set SHOW_CONTEXT never

-- the extension needs a superuser to install and is not trusted (the version
-- installed now; earlier ones are installed only by the upgrade tier)
SELECT v.version = e.extversion AS installed_version, v.superuser, v.trusted
  FROM pg_available_extension_versions v JOIN pg_extension e ON e.extname = v.name
 WHERE v.name = 'clinembed' AND v.version = e.extversion;

-- every SECURITY DEFINER function pins search_path, with pg_temp last
SELECT p.oid::regprocedure AS function, p.proconfig,
       coalesce((SELECT c ~ '^search_path=.*pg_temp$' FROM unnest(p.proconfig) c
                  WHERE c LIKE 'search_path=%'), false) AS pinned
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clinembed') AND d.deptype = 'e'
   AND p.prosecdef
 ORDER BY 1;
-- and so does every other PL/pgSQL or SQL function that is not a procedure
-- (procedures cannot: a SET clause forbids their COMMIT)
SELECT p.oid::regprocedure AS unpinned
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clinembed') AND d.deptype = 'e'
   AND p.prolang IN (SELECT oid FROM pg_language WHERE lanname IN ('plpgsql', 'sql')) AND p.prokind = 'f'
   AND NOT coalesce(p.proconfig @> '{"search_path=pg_catalog, pg_temp"}', false)
 ORDER BY 1;

-- the one procedure, embed_backfill, calls nothing by an unqualified name
SELECT p.oid::regprocedure AS procedure,
       array(SELECT m[1] FROM regexp_matches(p.prosrc, '(?<![.\w])(\w+)\s*\(', 'g') m) AS unqualified_calls
  FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
 WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clinembed') AND d.deptype = 'e'
   AND p.prokind = 'p';

CREATE ROLE clinembed_clerk LOGIN;
GRANT CREATE ON SCHEMA public TO clinembed_clerk;

-- before the library is loaded in a session, its settings are placeholders
-- that anyone may set; when it loads, PostgreSQL discards a placeholder value
-- the role had no right to, with a WARNING, and the default stays
\c
SET ROLE clinembed_clerk;
SET clinembed.model = '/etc';
SELECT array_length(embed_text('x'), 1) AS dims;
SHOW clinembed.model;
RESET ROLE;

-- once loaded, file and library settings are superuser-only: 42501
SET ROLE clinembed_clerk;
SET clinembed.model = '/etc';
\echo :LAST_ERROR_SQLSTATE
SET clinembed.onnxruntime_library = '/tmp/evil.so';
\echo :LAST_ERROR_SQLSTATE
-- ... also through a function's SET clause
CREATE FUNCTION sneaky() RETURNS real[] LANGUAGE sql SET clinembed.model = '/etc' AS $$ SELECT embed_text('x') $$;
\echo :LAST_ERROR_SQLSTATE

-- an ordinary role embeds, uses the triggers on its own tables and backfills them
CREATE TABLE clerk_notes (id int PRIMARY KEY, exp_text text, embedding real[], embedding_model text);
CREATE TRIGGER e BEFORE INSERT OR UPDATE ON clerk_notes
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model');
INSERT INTO clerk_notes VALUES (1, 'Clerk note.');
ALTER TABLE clerk_notes DISABLE TRIGGER e;
INSERT INTO clerk_notes VALUES (2, 'Second clerk note.');
SET client_min_messages = warning;
CALL embed_backfill('clerk_notes', 'exp_text', 'embedding', model_column => 'embedding_model');
RESET client_min_messages;
SELECT count(embedding) AS embedded FROM clerk_notes;
SELECT state, rows_done FROM backfill_status WHERE relation = 'clerk_notes';

-- the progress table: it may add runs only for its own backend and tables it
-- may update (row-level security; the cases are in embed_hardening), and may
-- not delete, nor touch columns other than the progress ones: 42501
INSERT INTO backfill_runs (relid, source_column, target_column, model_id, batch_size, pid, rows_total)
VALUES ('clerk_notes'::regclass, 'exp_text', 'embedding', 'm', 1, 1, 1);
\echo :LAST_ERROR_SQLSTATE
UPDATE backfill_runs SET model_id = 'other';
\echo :LAST_ERROR_SQLSTATE
DELETE FROM backfill_runs;
\echo :LAST_ERROR_SQLSTATE
-- and it can only advance unfinished runs of its own backend
RESET ROLE;
INSERT INTO backfill_runs (relid, source_column, target_column, model_id, batch_size, rows_total)
VALUES ('clerk_notes'::regclass, 'exp_text', 'embedding', 'm', 1, 10);
UPDATE backfill_runs SET pid = 1 WHERE rows_total = 10 AND model_id = 'm';
SET ROLE clinembed_clerk;
UPDATE backfill_runs SET rows_done = 1000, finished_at = now() WHERE model_id = 'm';
SELECT rows_done, finished_at IS NULL AS unfinished FROM backfill_runs WHERE model_id = 'm';
-- it cannot embed from a table it may not read
RESET ROLE;
CREATE TABLE secret_notes (id int PRIMARY KEY, exp_text text, embedding real[]);
INSERT INTO secret_notes VALUES (1, 'Secret.');
SET ROLE clinembed_clerk;
CALL embed_backfill('secret_notes', 'exp_text', 'embedding');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- the embedding queue holds keys for the extension's owner alone: a role
-- may neither read nor write it, nor queue rows of a table it may not write,
-- and sees the status only of tables it may read
CREATE TRIGGER q BEFORE INSERT OR UPDATE ON secret_notes
    FOR EACH ROW EXECUTE FUNCTION embed_queue_trigger('exp_text', 'embedding');
SET ROLE clinembed_clerk;
SELECT count(*) FROM embed_queue;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO embed_queue (relid, key) VALUES ('secret_notes'::regclass, '{1}');
\echo :LAST_ERROR_SQLSTATE
SELECT embed_queue_enqueue('secret_notes');
\echo :LAST_ERROR_SQLSTATE
SELECT embed_queue_retry('secret_notes');
SELECT count(*) AS tables_shown FROM embed_queue_status;
RESET ROLE;
SELECT count(*) AS queued FROM embed_queue;

DROP TABLE clerk_notes, secret_notes;
DELETE FROM backfill_runs;
REVOKE CREATE ON SCHEMA public FROM clinembed_clerk;
DROP ROLE clinembed_clerk;
