-- Faults in the files clinembed reads: each is an ERROR with a SQLSTATE, a
-- detail and a hint, and the backend goes on working.  Fixtures are made by
-- scripts/test.sh under /tmp/clinembed-regress-*.
CREATE EXTENSION IF NOT EXISTS clinembed;
\set SHOW_CONTEXT never

-- a model directory without model.onnx: 58P01
SET clinembed.model = '/tmp/clinembed-regress-nomodel';
SELECT embed_text('chest pain');
\echo :LAST_ERROR_SQLSTATE
-- a truncated model.onnx (its first half): F0000
SET clinembed.model = '/tmp/clinembed-regress-truncated';
\set VERBOSITY terse
SELECT embed_text('chest pain');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
-- a broken tokenizer.json: F0000
SET clinembed.model = '/tmp/clinembed-regress-badtokenizer';
SELECT embed_text('chest pain');
\echo :LAST_ERROR_SQLSTATE
-- the same session still embeds once the setting is fixed
RESET clinembed.model;
SELECT array_length(embed_text('chest pain'), 1) AS recovered;

-- a file that is not a shared library, in a fresh backend: 58000
\c
SET clinembed.onnxruntime_library = '/tmp/clinembed-regress-fake-ort/not-a-library.so';
\set VERBOSITY terse
SELECT embed_text('chest pain');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT 1 AS backend_alive;

-- an ONNX Runtime too old for clinembed (reports 1.16.0, lacks API 31): 58000
\c
SET clinembed.onnxruntime_library = '/tmp/clinembed-regress-fake-ort/libonnxruntime.so.1.16.0';
SELECT embed_text('chest pain');
\echo :LAST_ERROR_SQLSTATE
SELECT 1 AS backend_alive;

-- a new backend with the installed library works
\c
SELECT array_length(embed_text('chest pain'), 1) AS recovered;

-- a 10 MB note: bounded work, only its first 512 tokens are run
SELECT texts AS t0, tokens AS k0 FROM embed_stats() \gset
SELECT array_length(embed_text(repeat('Patient resting comfortably. ', 350000)), 1) AS dims;
SELECT texts - :t0 AS texts, tokens - :k0 AS tokens FROM embed_stats();
-- control characters and mixed scripts embed to finite vectors
SELECT bool_and(x = x AND x < 'Infinity' AND x > '-Infinity') AS finite
FROM unnest(embed_text(E'a\x01b\x07c\td\re\x1bf' || 'Ελληνικά 日本語 العربية עברית 😀' || chr(8203))) x;
