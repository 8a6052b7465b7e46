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
chmod 0644 /tmp/clinembed-demo-notes.tsv

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
