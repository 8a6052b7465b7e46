-- Settings across PostgreSQL majors: what a fresh session sees before the
-- library loads, ALTER SYSTEM before and after LOAD, the reserved prefix,
-- and who may set what.  PostgreSQL 17 and later accept ALTER SYSTEM of a
-- custom setting no loaded library defines; 15 refuses it until the library
-- is loaded (expected/embed_settings.out is 15, embed_settings_1.out 17+).
CREATE EXTENSION IF NOT EXISTS clinembed;
\set SHOW_CONTEXT never
\c
-- a new session: the library is not loaded, its settings are unknown
SELECT count(*) AS defined_before_load FROM pg_settings WHERE name LIKE 'clinembed.%';
ALTER SYSTEM SET clinembed.intra_op_threads = 1;
\echo :SQLSTATE
ALTER SYSTEM RESET clinembed.intra_op_threads;
-- LOAD (or any clinembed call) defines them; ALTER SYSTEM works on every major
LOAD 'clinembed';
ALTER SYSTEM SET clinembed.intra_op_threads = 1;
\echo :SQLSTATE
ALTER SYSTEM RESET clinembed.intra_op_threads;
-- the prefix is reserved: a misspelt setting is an error, not a placeholder
SET clinembed.intra_op_thread = 1;
\echo :SQLSTATE
-- every setting, with who may set it
SELECT name, context, vartype, boot_val FROM pg_settings WHERE name LIKE 'clinembed.%' ORDER BY name;
-- clinembed.models_root is the server's, not a session's: only the
-- configuration (or ALTER SYSTEM and a reload) sets it
SET clinembed.models_root = '/tmp';
\echo :SQLSTATE
