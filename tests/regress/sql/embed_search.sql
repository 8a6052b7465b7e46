-- Search: embed_search's modes, the fusion, chunk rows collapsed to notes,
-- filters that still return k rows, privileges and row-level security,
-- the errors, and embed_eval's figures against a recomputation.
CREATE EXTENSION IF NOT EXISTS vector;
CREATE EXTENSION IF NOT EXISTS clinembed;
\set SHOW_CONTEXT never

-- 60 short notes on 5 topics, 4 patients; vectors of the default model, by
-- a trigger whose arguments tell embed_search the text, vector and model
-- columns
CREATE TABLE s_notes (id int PRIMARY KEY, patient int, kind text, body text,
                      embedding vector(384), model text);
CREATE TRIGGER embed BEFORE INSERT OR UPDATE OF body ON s_notes
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('body', 'embedding', 'model');
INSERT INTO s_notes (id, patient, kind, body)
SELECT i, 100 + i % 4, (ARRAY['nursing', 'radiology'])[1 + i % 2],
       (ARRAY['Chest pain with troponin elevated at 0.84; heparin drip started.',
              'Right hip fracture after a fall; orthopedics consulted for ORIF.',
              'Community acquired pneumonia treated with ceftriaxone and azithromycin.',
              'Diabetic ketoacidosis on an insulin drip, glucose 512 with anion gap 24.',
              'Acute kidney injury with creatinine 3.2; holding lisinopril and NSAIDs.'])[1 + i % 5]
       || ' Seen on day ' || i || '.'
  FROM generate_series(1, 60) i;
SELECT count(*) AS notes, count(embedding) AS embedded, bool_and(model = embed_model_id()) AS model FROM s_notes;
CREATE INDEX ON s_notes USING hnsw (embedding vector_cosine_ops);
CREATE INDEX ON s_notes USING gin (to_tsvector('english', body));

-- vector: the notes nearest the query, as a brute-force ranking orders them
SELECT array_agg(s.key[1]::int ORDER BY s.vector_rank) =
       (SELECT array_agg(id) FROM (SELECT id FROM s_notes
         ORDER BY embedding <=> embed_text('broken hip after falling')::vector, id LIMIT 5) b) AS brute_force,
       bool_and(n.body LIKE '%hip fracture%') AS all_on_topic,
       bool_and(s.lexical_rank IS NULL AND s.chunk IS NULL) AS vector_only
  FROM embed_search('s_notes', 'broken hip after falling', 5, mode => 'vector') s
  JOIN s_notes n ON n.id = s.key[1]::int;
-- lexical: every note whose text matches, by text rank; no vectors read
SELECT count(*) AS found, bool_and(n.body LIKE '%creatinine 3.2%') AS all_match,
       array_agg(s.lexical_rank ORDER BY s.lexical_rank) = array(SELECT generate_series(1, 12)) AS ranks,
       bool_and(s.vector_rank IS NULL AND s.distance IS NULL) AS lexical_only
  FROM embed_search('s_notes', 'creatinine 3.2', 50, mode => 'lexical') s
  JOIN s_notes n ON n.id = s.key[1]::int;
SELECT count(*) AS matching FROM s_notes WHERE to_tsvector('english', body) @@ websearch_to_tsquery('english', 'creatinine 3.2');
-- hybrid (the default): the score is the sum of weight / (60 + rank) over
-- the legs, best first
SELECT count(*) AS found,
       bool_and(abs(score - (coalesce(1.0 / (60 + vector_rank), 0) + coalesce(1.0 / (60 + lexical_rank), 0))) < 1e-12) AS rrf,
       bool_and(vector_rank IS NOT NULL AND lexical_rank IS NOT NULL) AS both_legs_in_top
  FROM embed_search('s_notes', 'kidney injury creatinine', 5);
SELECT array_agg(score ORDER BY score DESC) = array_agg(score) AS best_first
  FROM embed_search('s_notes', 'kidney injury creatinine', 20);
-- weights and the constant are parameters: with the lexical leg weighed 0,
-- the vector leg's order; with rrf_k 1, 1 / (1 + rank)
SELECT array_agg(vector_rank) = array(SELECT generate_series(1, 8)) AS vector_order
  FROM embed_search('s_notes', 'kidney injury creatinine', 8, lexical_weight => 0);
SELECT bool_and(abs(score - 2 * (1.0 / (1 + vector_rank))) < 1e-12) AS weighted
  FROM embed_search('s_notes', 'kidney injury', 5, mode => 'vector', rrf_k => 1, vector_weight => 2);

-- scope: equality filters on columns, as data; every row found matches,
-- and k rows come back when k match
SELECT count(*) AS found, bool_and(n.patient = 101 AND n.kind = 'radiology') AS all_in_scope
  FROM embed_search('s_notes', 'chest pain', 5, filter => '{"patient": 101, "kind": "radiology"}') s
  JOIN s_notes n ON n.id = s.key[1]::int;
SELECT count(*) AS in_scope FROM s_notes WHERE patient = 101 AND kind = 'radiology';
UPDATE s_notes SET kind = NULL WHERE id IN (7, 8);
SELECT array_agg(key[1] ORDER BY key) AS null_filter FROM embed_search('s_notes', 'chest pain', 5, filter => '{"kind": null}');
UPDATE s_notes SET kind = (ARRAY['nursing', 'radiology'])[1 + id % 2] WHERE id IN (7, 8);

-- A filter that an HNSW scan alone under-fills: 3,000 vectors, 12 of one
-- patient, ef_search 10.  The index scan without iterative scans finds
-- fewer than 10 of them; embed_search finds 10, the exact top 10.
CREATE TABLE s_many (id int PRIMARY KEY, patient int, body text, embedding vector(384));
SELECT setseed(0.26);
INSERT INTO s_many
SELECT i, CASE WHEN i % 250 = 0 THEN 7 ELSE i % 97 + 1000 END, 'note ' || i,
       array(SELECT random() - 0.5 FROM generate_series(1, 384))::vector
  FROM generate_series(1, 3000) i;
CREATE INDEX ON s_many USING hnsw (embedding vector_cosine_ops);
ANALYZE s_many;
SET hnsw.ef_search = 10;
SET enable_seqscan = off;
CREATE TEMP TABLE q AS SELECT embed_text('chest pain')::vector AS v;
SELECT count(*) < 10 AS plain_scan_underfills FROM (
  SELECT id FROM s_many WHERE patient = 7 ORDER BY embedding <=> (SELECT v FROM q) LIMIT 10) p;
SELECT count(*) AS found,
       array_agg(key[1]::int ORDER BY vector_rank) =
       (SELECT array_agg(id) FROM (SELECT id FROM (SELECT id, embedding <=> (SELECT v FROM q) AS d
          FROM s_many WHERE patient = 7 OFFSET 0) x ORDER BY d LIMIT 10) e) AS exact_top
  FROM embed_search('s_many', 'chest pain', 10, mode => 'vector', filter => '{"patient": 7}');
RESET enable_seqscan;
RESET hnsw.ef_search;
-- and its settings do not outlive the call
SELECT current_setting('hnsw.iterative_scan') AS iterative_scan_after;

-- Chunk rows: notes of several sections, chunk rows as the chunk trigger
-- keeps them (filled here from embed_chunks), collapsed to notes.
CREATE TABLE s_long (id int PRIMARY KEY, patient int, body text);
CREATE TABLE s_long_chunks (id int, chunk int, section text, char_start int, char_end int,
                            tokens int, embedding vector(384), model text);
INSERT INTO s_long
SELECT i, 100 + i % 2,
       'HISTORY OF PRESENT ILLNESS: ' || repeat('Admitted with shortness of breath and a productive cough. ', 6) || E'\n'
       || 'HOSPITAL COURSE: ' || repeat(CASE WHEN i % 3 = 0 THEN 'Creatinine rose to 3.2 and lisinopril was held. '
                                             ELSE 'Treated with ceftriaxone and azithromycin, oxygen weaned. ' END, 12) || E'\n'
       || 'DISCHARGE MEDICATIONS: aspirin 81 mg daily; apixaban 5 mg BID.'
  FROM generate_series(1, 9) i;
INSERT INTO s_long_chunks
SELECT n.id, c.chunk, c.section, c.char_start, c.char_end, c.tokens, c.embedding::vector, embed_model_id()
  FROM s_long n, embed_chunks(n.body) c;
CREATE TRIGGER chunks BEFORE INSERT OR UPDATE OR DELETE ON s_long FOR EACH ROW
    EXECUTE FUNCTION embed_chunks_trigger('body', 's_long_chunks', 'embedding', 'model');
SELECT count(*) AS chunk_rows, count(DISTINCT id) AS notes FROM s_long_chunks;
-- each note once, with its best chunk (the nearest chunk row, as brute force
-- finds it) and that chunk's section and span
WITH s AS (SELECT * FROM embed_search('s_long_chunks', 'Creatinine rose to 3.2 and lisinopril was held', 9, mode => 'vector')),
     b AS (SELECT DISTINCT ON (id) id, chunk, section, char_start, char_end
             FROM s_long_chunks ORDER BY id, embedding <=> embed_text('Creatinine rose to 3.2 and lisinopril was held')::vector, chunk)
SELECT count(*) AS notes, count(DISTINCT s.key) AS distinct_notes,
       bool_and(s.chunk = b.chunk AND s.section IS NOT DISTINCT FROM b.section
                AND s.char_start = b.char_start AND s.char_end = b.char_end) AS best_chunks,
       (array_agg(s.section ORDER BY s.vector_rank))[1] AS top_section,
       bool_and((s.key[1]::int % 3 = 0) = (s.vector_rank <= 3)) AS kidney_notes_first
  FROM s JOIN b ON b.id = s.key[1]::int;
-- the notes table with the chunk trigger finds its chunk rows itself; the
-- lexical leg matches the notes' text and gives the best-ranked chunk's span
SELECT count(*) AS found, bool_and(s.section = 'hospital_course') AS spans_in_course,
       bool_and(substr(n.body, s.char_start + 1, s.char_end - s.char_start) LIKE '%Creatinine rose to 3.2%') AS span_holds_terms
  FROM embed_search('s_long', 'creatinine 3.2 lisinopril held', 10, mode => 'lexical') s
  JOIN s_long n ON n.id = s.key[1]::int;
SELECT count(*) AS found, count(*) FILTER (WHERE vector_rank IS NOT NULL AND lexical_rank IS NOT NULL) AS in_both,
       bool_and(chunk IS NOT NULL) AS every_note_has_a_span
  FROM embed_search('s_long', 'creatinine 3.2 lisinopril held', 9);
SELECT count(*) AS found FROM embed_search('s_long', 'apixaban', 10, filter => '{"patient": 101}');

-- Privileges and row-level security: it runs as the calling role.
CREATE ROLE embed_search_reader;
GRANT SELECT ON s_notes TO embed_search_reader;
ALTER TABLE s_notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY one_patient ON s_notes TO embed_search_reader USING (patient = 102);
SET ROLE embed_search_reader;
SELECT count(*) AS found, bool_and(n.patient = 102) AS only_visible_rows
  FROM embed_search('s_notes', 'chest pain', 10) s JOIN s_notes n ON n.id = s.key[1]::int;
-- a table the role cannot read is refused by PostgreSQL's own check
SELECT count(*) FROM embed_search('s_long', 'chest pain', 5);
RESET ROLE;
REVOKE SELECT ON s_notes FROM embed_search_reader;
GRANT SELECT (id, body) ON s_notes TO embed_search_reader;
SET ROLE embed_search_reader;
SELECT count(*) FROM embed_search('s_notes', 'chest pain', 5);
RESET ROLE;
DROP POLICY one_patient ON s_notes;
ALTER TABLE s_notes DISABLE ROW LEVEL SECURITY;
DROP OWNED BY embed_search_reader;
DROP ROLE embed_search_reader;

-- The query is embedded with the model the vectors carry: an identity the
-- installed files do not have is refused, and so are vectors of two models
SELECT count(*) FROM embed_search('s_notes', 'chest pain', 5, model_id => 'all-minilm-l6-v2@0000000000000000');
SELECT count(*) FROM embed_search('s_notes', 'chest pain', 5, model_id => 'no-such-model@0000000000000000');
UPDATE s_notes SET model = 'all-minilm-l6-v2@0000000000000000' WHERE id = 1;
SELECT count(*) FROM embed_search('s_notes', 'chest pain with troponin', 60, mode => 'vector');
-- model_id => searches one model's rows only
SELECT count(*) AS found, bool_and(key[1] <> '1') AS without_the_other
  FROM embed_search('s_notes', 'chest pain with troponin', 60, mode => 'vector', model_id => embed_model_id());
UPDATE s_notes SET model = embed_model_id() WHERE id = 1;

-- errors
SELECT * FROM embed_search('s_notes', 'chest pain', 5, mode => 'semantic');
SELECT * FROM embed_search('s_notes', 'chest pain', 0);
SELECT * FROM embed_search('s_notes', 'chest pain', 5, language => 'klingon');
SELECT * FROM embed_search('s_notes', 'chest pain', 5, rrf_k => -1);
SELECT * FROM embed_search('s_notes', 'chest pain', 5, filter => '{"nurse": 1}');
SELECT * FROM embed_search('s_notes', 'chest pain', 5, filter => '[1]');
SELECT * FROM embed_search('s_notes', 'chest pain', 5, filter => '{"patient": [1, 2]}');
SELECT * FROM embed_search('s_notes', 'chest pain', 5, vector_column => 'body');
CREATE TABLE s_two (id int PRIMARY KEY, a text, b text, embedding vector(384));
SELECT * FROM embed_search('s_two', 'chest pain', 5);
SELECT count(*) FROM embed_search('s_two', 'chest pain', 5, text_column => 'a');
CREATE TABLE s_nokey (a text, embedding vector(384));
SELECT * FROM embed_search('s_nokey', 'chest pain', 5);
-- NULL arguments: no query, no rows; other NULLs take the defaults
SELECT count(*) AS no_query FROM embed_search('s_notes', NULL);
SELECT count(*) AS defaults FROM embed_search('s_notes', 'chest pain', NULL, NULL);

-- embed_eval: recall, MRR and nDCG at k per mode, equal to the same
-- measures computed here from embed_search's rankings
CREATE TABLE s_pairs (query text, id int);
INSERT INTO s_pairs SELECT 'creatinine 3.2', id FROM s_notes WHERE body LIKE '%creatinine 3.2%' AND id <= 20;
INSERT INTO s_pairs SELECT 'broken hip after falling', id FROM s_notes WHERE body LIKE '%hip fracture%' AND id <= 30;
INSERT INTO s_pairs VALUES ('glucose 512 anion gap', 3), ('glucose 512 anion gap', 8);
CREATE TEMP TABLE got AS SELECT * FROM embed_eval('s_pairs', ARRAY['s_notes']::regclass[], k => 5);
SELECT relation, model = embed_model_id() AS model, mode, queries FROM got ORDER BY mode;
WITH ranked AS (
  SELECT m.mode, q.query, s.key[1]::int AS id, s.r
    FROM (SELECT DISTINCT query FROM s_pairs) q, unnest('{vector,lexical,hybrid}'::text[]) m(mode),
         LATERAL embed_search('s_notes', q.query, 5, mode => m.mode)
           WITH ORDINALITY AS s(key, score, vector_rank, lexical_rank, distance, chunk, section, char_start, char_end, rerank_score, r)),
per_query AS (
  SELECT m.mode, q.query,
         (SELECT count(*) FROM ranked r JOIN s_pairs p ON p.query = r.query AND p.id = r.id
           WHERE r.mode = m.mode AND r.query = q.query)::float8
           / (SELECT count(*) FROM s_pairs p WHERE p.query = q.query) AS recall,
         coalesce((SELECT 1.0 / min(r.r) FROM ranked r JOIN s_pairs p ON p.query = r.query AND p.id = r.id
           WHERE r.mode = m.mode AND r.query = q.query), 0) AS mrr,
         (SELECT coalesce(sum(1 / log(2, r.r + 1)), 0) FROM ranked r JOIN s_pairs p ON p.query = r.query AND p.id = r.id
           WHERE r.mode = m.mode AND r.query = q.query)
           / (SELECT sum(1 / log(2, i + 1)) FROM generate_series(1, least(5, (SELECT count(*) FROM s_pairs p WHERE p.query = q.query))) i) AS ndcg
    FROM (SELECT DISTINCT query FROM s_pairs) q, unnest('{vector,lexical,hybrid}'::text[]) m(mode))
SELECT g.mode, abs(g.recall - avg(p.recall)) < 1e-9 AS recall, abs(g.mrr - avg(p.mrr)) < 1e-9 AS mrr,
       abs(g.ndcg - avg(p.ndcg)) < 1e-9 AS ndcg
  FROM got g JOIN per_query p ON p.mode = g.mode GROUP BY g.mode, g.recall, g.mrr, g.ndcg ORDER BY g.mode;
SELECT * FROM embed_eval('s_notes', ARRAY['s_notes']::regclass[]);
