-- Errors carry a SQLSTATE, a detail and a hint, and the backend keeps working
-- once the setting is fixed.  No message echoes the text being embedded.
CREATE EXTENSION IF NOT EXISTS clinembed;
SELECT array_length(embed_text('warm up'), 1) AS dims;

-- a model directory that does not exist: 58P01, then recovery
SET clinembed.model = '/nonexistent/clinembed-model';
SELECT embed_text('chest pain');
\echo :LAST_ERROR_SQLSTATE
RESET clinembed.model;
SELECT array_length(embed_text('chest pain'), 1) AS recovered;

-- a corrupt model.onnx (fixture made by scripts/test.sh): F0000, then recovery
\set VERBOSITY terse
SET clinembed.model = '/tmp/clinembed-regress-corrupt';
SELECT embed_text('chest pain');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
RESET clinembed.model;
SELECT array_length(embed_text('chest pain'), 1) AS recovered;

-- a model name may not climb out of the models directory: 22023
SET clinembed.model = '../../../etc';
SELECT embed_text('chest pain');
\echo :LAST_ERROR_SQLSTATE
RESET clinembed.model;

-- Error details that name install paths, which differ between majors, are
-- shown with $sharedir and $pkglibdir in place of the paths.
CREATE OR REPLACE FUNCTION error_of(statement text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE state text; message text; detail text;
BEGIN
    EXECUTE statement;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    RETURN format(E'%s: %s\nDETAIL: %s', state, message,
                  replace(replace(detail, (SELECT setting FROM pg_config WHERE name = 'SHAREDIR'), '$sharedir'),
                          (SELECT setting FROM pg_config WHERE name = 'PKGLIBDIR'), '$pkglibdir'));
END $f$;

-- an installed name that is not there
SET clinembed.model = 'no-such-model';
SELECT error_of($$SELECT embed_text('chest pain')$$);
RESET clinembed.model;

-- a second ONNX Runtime library cannot replace the loaded one in a process,
-- and the change is noticed even while a model is loaded
SELECT array_length(embed_text('chest pain'), 1) AS loaded;
SET clinembed.onnxruntime_library = '/nonexistent/libonnxruntime.so';
SELECT error_of($$SELECT embed_text('chest pain')$$);
RESET clinembed.onnxruntime_library;
SELECT array_length(embed_text('chest pain'), 1) AS recovered;
DROP FUNCTION error_of(text);

-- in a fresh backend a missing library is 58P01, and fixing it recovers
\c
SET clinembed.onnxruntime_library = '/nonexistent/libonnxruntime.so';
SELECT embed_text('chest pain');
\echo :LAST_ERROR_SQLSTATE
RESET clinembed.onnxruntime_library;
SELECT array_length(embed_text('chest pain'), 1) AS recovered;

-- file and library settings are superuser-only; embedding is not
CREATE ROLE clinembed_regress_user;
SET ROLE clinembed_regress_user;
SET clinembed.model = '/tmp';
\echo :LAST_ERROR_SQLSTATE
SET clinembed.onnxruntime_library = '/tmp/evil.so';
\echo :LAST_ERROR_SQLSTATE
SET clinembed.intra_op_threads = 2;
SELECT array_length(embed_text('chest pain'), 1) AS user_can_embed;
RESET ROLE;
DROP ROLE clinembed_regress_user;

-- thread setting bounds
SET clinembed.intra_op_threads = -1;
\echo :LAST_ERROR_SQLSTATE
