-- Several models: the installed list, a model per call, the per-backend
-- session cap, checksums, and the model root.  Fixtures under
-- /tmp/clinembed-regress-models (the models root while the tier runs) are
-- made by scripts/test.sh.
CREATE EXTENSION IF NOT EXISTS clinembed;
\set SHOW_CONTEXT never

-- installed models, read without loading them
SELECT name, dimensions, max_length, pooling, normalize, sha256 IS NOT NULL AS has_sha256, error
  FROM embed_models() WHERE name IN ('all-minilm-l6-v2', 'clinembed-regress-cls', 'clinembed-regress-badsum')
 ORDER BY name;

-- two models in one session, in one query
SELECT embed_text('chest pain') = embed_text('chest pain', model => 'all-minilm-l6-v2') AS default_by_name,
       embed_text('chest pain') <> embed_text('chest pain', model => 'clinembed-regress-cls') AS other_model_differs;
SELECT embed_model_id() <> embed_model_id('clinembed-regress-cls') AS identities_differ,
       embed_model_id('clinembed-regress-cls') ~ '^clinembed-regress-cls@[0-9a-f]{16}$' AS id_format;
SELECT count(*) AS rows, count(DISTINCT e.embedding IS NULL) AS kinds
  FROM embed_texts(ARRAY['a', NULL, 'b'], model => 'clinembed-regress-cls') e;
SELECT model, texts > 0 AS used FROM embed_stats() ORDER BY model;
-- the backend's memory: resident = private + shared, and PSS between them
SELECT DISTINCT private_kb + shared_kb = rss_kb AS adds_up, pss_kb BETWEEN private_kb AND rss_kb AS pss_between,
       rss_kb > 100000 AS holds_a_model, weights
  FROM embed_stats();
SELECT name, loaded FROM embed_models() WHERE name IN ('all-minilm-l6-v2', 'clinembed-regress-cls') ORDER BY name;

-- model => on every function that embeds or tokenizes: the same as with
-- clinembed.model set to that model
CREATE TEMP TABLE long_note AS SELECT repeat('Dyspnea on exertion, bibasilar crackles, started furosemide. ', 40) AS t;
SET clinembed.model = 'clinembed-regress-cls';
CREATE TEMP TABLE by_setting AS
SELECT embed_text_chunked(t) AS chunked, embed_text_chunked(t, 64, 16) AS chunked_64,
       (SELECT array_agg(embedding ORDER BY chunk) FROM embed_chunks(t, 64, 16)) AS chunks,
       embed_token_count(t) AS tokens, (embed_truncation(t)).max_length AS max_length
  FROM long_note;
RESET clinembed.model;
SELECT embed_text_chunked(t, model => 'clinembed-regress-cls') = b.chunked AS chunked,
       embed_text_chunked(t, model => 'clinembed-regress-cls') <> embed_text_chunked(t) AS chunked_other_model,
       embed_text_chunked(t, model => 'clinembed-regress-cls', window_tokens => 64, overlap_tokens => 16) = b.chunked_64 AS chunked_64,
       (SELECT array_agg(embedding ORDER BY chunk) FROM embed_chunks(t, model => 'clinembed-regress-cls', window_tokens => 64, overlap_tokens => 16)) = b.chunks AS chunks,
       embed_token_count(t, model => 'clinembed-regress-cls') = b.tokens AS tokens,
       (embed_truncation(t, model => 'clinembed-regress-cls')).max_length = b.max_length AS max_length
  FROM long_note, by_setting b;
\set VERBOSITY terse
SELECT embed_token_count('x', model => 'no-such-model');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
DROP TABLE long_note, by_setting;

-- at most clinembed.max_loaded_models models stay loaded; the least recently used goes
SET clinembed.max_loaded_models = 1;
SELECT array_length(embed_text('x', model => 'clinembed-regress-cls'), 1) AS dims;
SELECT model FROM embed_stats();
SELECT array_length(embed_text('x'), 1) AS dims;
SELECT model FROM embed_stats();
RESET clinembed.max_loaded_models;

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

-- a recorded checksum is verified at load: a wrong one is F0000
SELECT error_of($$SELECT embed_text('x', model => 'clinembed-regress-badsum')$$);

-- names only: no paths, no climbing out (22023); no links out of the root (42501)
SELECT embed_text('x', model => '../all-minilm-l6-v2');
\echo :LAST_ERROR_SQLSTATE
SELECT embed_text('x', model => '/tmp/clinembed-regress-normalized');
\echo :LAST_ERROR_SQLSTATE
SELECT error_of($$SELECT embed_text('x', model => 'clinembed-regress-link')$$);
SELECT error_of($$SELECT embed_text('x', model => 'no-such-model')$$);
DROP FUNCTION error_of(text);
-- a superuser may allow links explicitly; an ordinary role may not
SET clinembed.allow_model_links = on;
SELECT array_length(embed_text('x', model => 'clinembed-regress-link'), 1) AS dims_through_link;
RESET clinembed.allow_model_links;
CREATE ROLE clinembed_reader;
SET ROLE clinembed_reader;
SET clinembed.allow_model_links = on;
\echo :LAST_ERROR_SQLSTATE
-- ... but may choose any installed model per call
SELECT array_length(embed_text('x', model => 'clinembed-regress-cls'), 1) AS dims_as_reader;
RESET ROLE;
DROP ROLE clinembed_reader;
