-- embed_texts: order, NULL elements, empty input, equality with embed_text,
-- limits, and cancellation between micro-batches.
CREATE EXTENSION IF NOT EXISTS clinembed;

-- ord is the 1-based position; NULL elements give NULL embeddings
SELECT ord, array_length(embedding, 1) AS dims, embedding IS NULL AS is_null
FROM embed_texts(ARRAY['chest pain', NULL, '', 'fever', NULL]) ORDER BY ord;
SELECT ord, embedding IS NULL AS is_null FROM embed_texts(ARRAY[NULL, NULL]::text[]) ORDER BY ord;

-- an empty array gives no rows; a NULL array gives no rows (STRICT)
SELECT count(*) AS rows FROM embed_texts(ARRAY[]::text[]);
SELECT count(*) AS rows FROM embed_texts(NULL);

-- the same vectors as embed_text, within 1e-5, across many micro-batches of
-- mixed lengths (tiny budget), including texts past 512 tokens
SET clinembed.batch_tokens = 64;
WITH t AS (SELECT g AS i, 'note ' || g || ': ' || repeat('afebrile lungs clear ', (g * 7) % 41) AS txt
           FROM generate_series(1, 60) g
           UNION ALL SELECT 61, repeat('chest pain ', 400)
           UNION ALL SELECT 62, '胸痛 🙂 café'),
     b AS (SELECT ord, embedding FROM embed_texts((SELECT array_agg(txt ORDER BY i) FROM t)))
SELECT count(DISTINCT t.i) AS texts, max(abs(x - y)) <= 1e-5 AS within_1e5
FROM t JOIN b ON b.ord = t.i, unnest(embed_text(t.txt), b.embedding) u(x, y);
RESET clinembed.batch_tokens;

-- bounds on one call are errors with a hint
SET clinembed.batch_max_texts = 3;
SELECT count(*) FROM embed_texts(ARRAY['a', 'b', 'c', 'd']);
\echo :LAST_ERROR_SQLSTATE
RESET clinembed.batch_max_texts;
SET clinembed.batch_max_tokens = 10;
SELECT count(*) FROM embed_texts(ARRAY['chest pain', 'shortness of breath and fever for three days']);
\echo :LAST_ERROR_SQLSTATE
RESET clinembed.batch_max_tokens;

-- a statement timeout lands between micro-batches, and the backend goes on
SET statement_timeout = '300ms';
\set VERBOSITY terse
SELECT count(*) FROM embed_texts((SELECT array_agg(repeat('afebrile lungs clear ', 100)) FROM generate_series(1, 3000)));
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
RESET statement_timeout;
SELECT ord, array_length(embedding, 1) AS dims FROM embed_texts(ARRAY['still works']);

-- feeding a vector column from a table, in input order
CREATE TABLE t_notes (note_id int, exp_text text);
INSERT INTO t_notes VALUES (1, 'chest pain'), (2, NULL), (3, 'fractured wrist');
SELECT n.note_id, e.embedding IS NULL AS no_vector
FROM (SELECT array_agg(exp_text ORDER BY note_id) AS texts, array_agg(note_id ORDER BY note_id) AS ids FROM t_notes) a,
     embed_texts(a.texts) e JOIN t_notes n ON true
WHERE n.note_id = a.ids[e.ord] ORDER BY n.note_id;
