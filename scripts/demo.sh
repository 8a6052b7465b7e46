#!/usr/bin/env bash
# The main job on the default model: a scratch PostgreSQL, a few hundred
# synthetic clinical notes loaded with COPY and embedded on the way in by
# clinembed's trigger into a pgvector column, and a similarity search.  Run as root on Debian 12;
# PG=18 bash scripts/demo.sh runs it on another major (15, 17, 18).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

NOTES=${NOTES:-300}
bash scripts/setup.sh
echo "==> building and installing clinembed (release)"
install_release /tmp/clinembed-demo-build.log
echo "==> starting a scratch PostgreSQL $PG cluster"
cluster_start demo "$(free_port)"
trap cluster_stop EXIT

python3 scripts/gen_notes.py --count "$NOTES" > /tmp/clinembed-demo-notes.tsv
python3 scripts/gen_notes.py --count "$NOTES" --queries > /tmp/clinembed-demo-queries.tsv
chmod 0644 /tmp/clinembed-demo-notes.tsv /tmp/clinembed-demo-queries.tsv

pg <<'SQL'
CREATE EXTENSION vector;
CREATE EXTENSION clinembed;
CREATE TABLE notes (
    note_id         int PRIMARY KEY,
    patient_id      int NOT NULL,
    note_type       text NOT NULL,
    topic           text NOT NULL,
    exp_text        text NOT NULL,
    embedding       vector(384),
    embedding_model text
);
-- Notes are embedded on their way in: a bulk load in batches, later edits
-- one row at a time (only when the text changes).
CREATE TRIGGER notes_embed_insert AFTER INSERT ON notes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model');
CREATE TRIGGER notes_embed_update BEFORE UPDATE OF exp_text ON notes
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model');
-- Every note is also kept whole as chunk rows, one per window inside a
-- section, filled by the queue's workers: discharge summaries, all past
-- 512 tokens, lose nothing to truncation there.
CREATE TABLE note_chunks (
    note_id    int REFERENCES notes ON DELETE CASCADE ON UPDATE CASCADE,
    chunk      int,
    section    text,
    char_start int,
    char_end   int,
    tokens     int,
    embedding  vector(384),
    model      text
);
CREATE INDEX ON note_chunks (note_id);
CREATE TRIGGER notes_chunks BEFORE INSERT OR UPDATE ON notes
    FOR EACH ROW EXECUTE FUNCTION embed_chunks_trigger('exp_text', 'note_chunks', 'embedding', 'model');

\echo == loading the notes with COPY; the trigger embeds them in batches
SELECT clock_timestamp() AS t0 \gset
\copy notes (note_id, patient_id, note_type, topic, exp_text) FROM '/tmp/clinembed-demo-notes.tsv'
SELECT count(*) AS notes, count(embedding) AS embedded,
       round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 2) AS seconds,
       round(count(*) / extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric, 1) AS notes_per_s,
       min(embedding_model) AS model_id
FROM notes;

\echo
\echo == the notes: synthetic, a realistic mix of lengths (tokens before truncation at 512)
SELECT note_type, count(*) AS notes,
       round(avg(embed_token_count(exp_text))) AS avg_tokens,
       max(embed_token_count(exp_text)) AS max_tokens,
       count(*) FILTER (WHERE embed_token_count(exp_text) > 512) AS truncated
FROM notes GROUP BY note_type ORDER BY avg_tokens;

\echo == notes as chunk rows: queue workers fill note_chunks
SELECT clock_timestamp() AS t1 \gset
DO $$
BEGIN
    FOR i IN 1..600 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM embed_queue_status WHERE relation = 'notes'::regclass AND pending + in_flight > 0);
        PERFORM pg_sleep(0.5);
    END LOOP;
END $$;
SELECT count(DISTINCT note_id) AS notes, count(*) AS chunk_rows,
       round(extract(epoch FROM clock_timestamp() - :'t1'::timestamptz)::numeric, 1) AS seconds_after_copy
FROM note_chunks;
\echo coverage of the discharge summaries: their tokens, and those embedded (truncation at 512 keeps at most 510)
SELECT count(*) AS notes, sum(c.tokens) AS tokens, sum(c.tokens_embedded) AS tokens_embedded,
       sum(least(c.tokens, 510)) AS tokens_kept_by_truncation,
       round(avg(c.windows), 1) AS windows_per_note, round(avg(c.sections), 1) AS sections_per_note
FROM embed_chunk_coverage('notes') c JOIN notes n ON n.note_id = c.key[1]::int
WHERE n.note_type = 'discharge';
SELECT section, count(*) AS chunk_rows FROM note_chunks GROUP BY section ORDER BY chunk_rows DESC LIMIT 8;

\echo == the right section of the right note: nearest chunk rows to a query
\echo query: 'What was the patient discharged on? apixaban 5 mg BID, levothyroxine 75 mcg daily'
SELECT c.note_id, n.topic, c.section, round((c.embedding <=> q)::numeric, 3) AS distance,
       left(regexp_replace(substr(n.exp_text, c.char_start + 1, c.char_end - c.char_start), '\s+', ' ', 'g'), 70) AS chunk_start
FROM note_chunks c JOIN notes n USING (note_id),
     (SELECT embed_text('What was the patient discharged on? apixaban 5 mg BID, levothyroxine 75 mcg daily')::vector(384) AS q) query
ORDER BY c.embedding <=> q
LIMIT 5;

\echo == search in one call: vectors and full text fused, chunk rows collapsed to notes
CREATE INDEX ON note_chunks USING hnsw (embedding vector_cosine_ops);
CREATE INDEX ON notes USING gin (to_tsvector('english', exp_text));
\echo query: 'atrial fibrillation on apixaban 5 mg BID'
SELECT n.note_id, n.topic, s.vector_rank AS v_rank, s.lexical_rank AS l_rank, round(s.score::numeric, 4) AS score, s.section,
       left(regexp_replace(substr(n.exp_text, s.char_start + 1, s.char_end - s.char_start), '\s+', ' ', 'g'), 60) AS best_chunk
FROM embed_search('note_chunks', 'atrial fibrillation on apixaban 5 mg BID', 5) s
JOIN notes n ON n.note_id = s.key[1]::int
ORDER BY s.score DESC;

\echo == which mode finds the notes? labelled queries (scripts/gen_notes.py --queries), measures at 10
CREATE TABLE eval_pairs (query text, kind text, note_id int);
\copy eval_pairs FROM '/tmp/clinembed-demo-queries.tsv'
CREATE VIEW eval_exact AS SELECT * FROM eval_pairs WHERE kind = 'exact';
CREATE VIEW eval_paraphrase AS SELECT * FROM eval_pairs WHERE kind = 'paraphrase';
SELECT q.queries, e.mode, e.queries AS n, round(e.recall::numeric, 3) AS recall_at_10,
       round(e.mrr::numeric, 3) AS mrr_at_10, round(e.ndcg::numeric, 3) AS ndcg_at_10
FROM (VALUES (1, 'all', 'eval_pairs'), (2, 'exact terms', 'eval_exact'), (3, 'paraphrases', 'eval_paraphrase')) q(o, queries, pairs),
     LATERAL embed_eval(q.pairs::regclass, ARRAY['note_chunks']::regclass[], k => 10) e
ORDER BY q.o, array_position('{vector,lexical,hybrid}', e.mode);

CREATE INDEX notes_embedding_hnsw ON notes USING hnsw (embedding vector_cosine_ops);
SELECT model, dimensions, max_length, pooling, onnxruntime_version FROM embed_model_info();

\echo == nearest notes to a new query note (cosine distance, HNSW index)
\echo query: 'Crushing substernal chest pain radiating to the jaw; troponin elevated, ST depressions on ECG. Cardiology consulted for catheterization.'
SELECT note_id, note_type, topic,
       round((embedding <=> q)::numeric, 3) AS distance,
       left(regexp_replace(exp_text, '\s+', ' ', 'g'), 90) AS note_start
FROM notes,
     (SELECT embed_text('Crushing substernal chest pain radiating to the jaw; troponin elevated, ST depressions on ECG. Cardiology consulted for catheterization.')::vector(384) AS q) query
ORDER BY embedding <=> q
LIMIT 5;

\echo == does the neighbourhood make sense? topic of each note vs. topics of its 5 nearest notes
SELECT round(100.0 * avg((n.topic = m.topic)::int), 1) AS pct_same_topic_in_top5,
       round(100.0 / (SELECT count(DISTINCT topic) FROM notes), 1) AS pct_by_chance
FROM notes n
CROSS JOIN LATERAL (SELECT topic FROM notes m WHERE m.note_id <> n.note_id
                    ORDER BY m.embedding <=> n.embedding LIMIT 5) m;

\echo == memory of this backend after embedding
SELECT rss_kb / 1024 AS backend_rss_mb, private_kb / 1024 AS private_mb, shared_kb / 1024 AS shared_mb
  FROM embed_stats() LIMIT 1;
SQL
echo "==> demo done"
