-- Long notes: embed_truncation, embed_chunks, the chunked policy.
CREATE EXTENSION IF NOT EXISTS clinembed;
\set SHOW_CONTEXT never
-- a note of about 20,000 tokens, and a short one
CREATE TABLE long_note AS
SELECT 'DISCHARGE SUMMARY. ' || string_agg(format('Day %s: afebrile, pneumothorax resolving; electrolytes repleted (K 3.1), hyperkalemia excluded.', g), ' ') AS t
  FROM generate_series(1, 640) g;
SELECT tokens > 19000 AS about_20000_tokens, truncated FROM long_note, embed_truncation(t);

-- windows of at most 128 tokens (126 plus [CLS] and [SEP]) that cover the
-- note from its first to its last character, each starting after the last
CREATE TEMP TABLE w AS SELECT c.* FROM long_note, embed_chunks(t) c;
SELECT count(*) > 150 AS many_windows, max(tokens) <= 126 AS within_window, min(tokens) > 60 AS not_tiny,
       min(char_start) = 0 AS from_start, max(char_end) = (SELECT length(t) FROM long_note) AS to_end,
       bool_and(cardinality(embedding) = 384) AS dims
  FROM w;
SELECT bool_and(b.char_start > a.char_start AND b.char_start < a.char_end) AS overlapping_in_order
  FROM w a JOIN w b ON b.chunk = a.chunk + 1;
-- offsets map back to the text, and no window splits a WordPiece: every
-- window's span, tokenized alone, has exactly the window's tokens
SELECT bool_and(embed_token_count(substr(t, char_start + 1, char_end - char_start)) = tokens + 2) AS spans_retokenize_exactly
  FROM long_note, w;
-- ... and its vector is the embedding of that span
SELECT max(abs(x - y)) < 1e-5 AS chunk_equals_span
  FROM long_note, w, unnest(w.embedding, embed_text(substr(t, char_start + 1, char_end - char_start))) u(x, y)
 WHERE w.chunk IN (1, 2, 50, (SELECT max(chunk) FROM w));
-- the overlap setting is respected in characters too: smaller overlap, fewer windows
SELECT (SELECT count(*) FROM long_note, embed_chunks(t, 128, 0)) < (SELECT count(*) FROM w) AS less_overlap_fewer_windows;

-- the chunked policy: the token-weighted mean of the windows
CREATE TEMP TABLE pooled AS
SELECT array_agg(v ORDER BY d) AS mean FROM (
    SELECT d, (sum(x::float8 * tokens) / sum(tokens))::real AS v
      FROM w, unnest(embedding) WITH ORDINALITY u(x, d) GROUP BY d) s;
SELECT max(abs(x - y)) < 1e-5 AS chunked_is_weighted_mean
  FROM long_note, pooled, unnest(embed_text_chunked(t), pooled.mean) u(x, y);
SET clinembed.long_text = 'chunk';
SELECT embed_model_id() ~ '\+chunk128/32$' AS identity_says_chunk;
SELECT max(abs(x - y)) < 1e-5 AS embed_text_follows_policy
  FROM long_note, pooled, unnest(embed_text(t), pooled.mean) u(x, y);
SELECT e.ord, e.embedding IS NULL AS is_null,
       max(abs(x - y)) < 1e-5 AS embed_texts_follows_policy
  FROM long_note, embed_texts(ARRAY[t, NULL, 'Short note.']) e
  LEFT JOIN LATERAL unnest(e.embedding, embed_text_chunked(coalesce((ARRAY[t, NULL, 'Short note.'])[e.ord], ''))) u(x, y) ON true
 GROUP BY e.ord, e.embedding IS NULL ORDER BY e.ord;
SET clinembed.chunk_tokens = 64;
SET clinembed.chunk_overlap = 8;
SELECT embed_model_id() ~ '\+chunk64/8$' AS identity_follows_window;
RESET clinembed.chunk_tokens;
RESET clinembed.chunk_overlap;
RESET clinembed.long_text;
-- a short note is one window: the same vector either way
SELECT max(abs(x - y)) AS short_note_diff
  FROM unnest(embed_text('Patient stable, discharged home.'), embed_text_chunked('Patient stable, discharged home.')) u(x, y);

-- edge cases
SELECT chunk, char_start, char_end, tokens FROM embed_chunks('');
-- a word of more tokens than a window (under the tokenizer's 100-character
-- word limit, past which a word is one [UNK]) is cut inside, at the window size
SELECT embed_token_count(repeat('zq', 49)) - 2 AS word_tokens;
SELECT count(*) > 1 AS long_word_split, max(tokens) <= 8 AS within_window FROM embed_chunks(repeat('zq', 49), 10, 2);
SELECT count(*) FROM embed_chunks(NULL);
-- bad windows: 22023
SELECT count(*) FROM embed_chunks('text', 600, 32);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM embed_chunks('text', 40, 38);
\echo :LAST_ERROR_SQLSTATE
SET clinembed.long_text = 'sliding';
\echo :LAST_ERROR_SQLSTATE
DROP TABLE long_note;
