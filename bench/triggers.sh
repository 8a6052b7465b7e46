#!/usr/bin/env bash
# Row versus bulk: the same notes embedded on their way into a table through
# each path clinembed offers, in notes per second.
#   bash bench/triggers.sh                 # default model, 1000 notes
#   NOTES=300 MODEL=bert-base-bench bash bench/triggers.sh
#   MAX_CHARS=300 NOTES=3000 bash bench/triggers.sh   # short notes only
# MODEL is an installed model name (bench/run.sh installs bert-base-bench).
# Prints one line per path; run as root on Debian 12 after scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

NOTES=${NOTES:-1000}
MODEL=${MODEL:-$DEFAULT_MODEL}
MAX_CHARS=${MAX_CHARS:-0}
install_release /tmp/clinembed-bench-build.log
cluster_start bench-triggers "$(free_port)"
trap cluster_stop EXIT
python3 scripts/gen_notes.py --count "$NOTES" > /tmp/clinembed-bench-notes.tsv
chmod 0644 /tmp/clinembed-bench-notes.tsv

server_model "$MODEL" >/dev/null
pg <<'SQL'
CREATE EXTENSION clinembed;
CREATE TABLE source (note_id int PRIMARY KEY, patient_id int, note_type text, topic text, exp_text text);
\copy source FROM '/tmp/clinembed-bench-notes.tsv'
-- one table per path, each with a real[] column sized by the model
CREATE TABLE by_row  (note_id int PRIMARY KEY, exp_text text, embedding real[], embedding_model text);
CREATE TABLE by_stmt (LIKE by_row INCLUDING ALL);
CREATE TABLE by_copy (LIKE by_row INCLUDING ALL);
CREATE TABLE by_fill (LIKE by_row INCLUDING ALL);
CREATE TRIGGER embed BEFORE INSERT OR UPDATE OF exp_text ON by_row
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model');
CREATE TRIGGER embed AFTER INSERT ON by_stmt REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model');
CREATE TRIGGER embed AFTER INSERT ON by_copy REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model');
SQL
if [ "$MAX_CHARS" -gt 0 ]; then
    pg -c "DELETE FROM source WHERE length(exp_text) > $MAX_CHARS"
    NOTES=$(pg -At -c "SELECT count(*) FROM source")
fi
pg -c "COPY (SELECT note_id, exp_text FROM source ORDER BY note_id) TO '/tmp/clinembed-bench-copy.tsv'"

# rate LABEL SQL...: runs the statements in a fresh session after loading the
# model, and prints notes per second for the timed part.
rate() {
    local label=$1; shift
    local out t0 t1
    out=$(pg -At -c "SELECT embed_model_id()" -c "SELECT 't0 ' || extract(epoch FROM clock_timestamp())" "$@" \
        -c "SELECT 't1 ' || extract(epoch FROM clock_timestamp())")
    t0=$(echo "$out" | sed -n 's/^t0 //p') t1=$(echo "$out" | sed -n 's/^t1 //p')
    python3 -c "import sys; n=$NOTES; s=$t1-$t0; print(f'{sys.argv[1]:<58} {s:8.2f} s {n/s:9.1f} notes/s')" "$label"
}

echo "model: $MODEL, notes: $NOTES$([ "$MAX_CHARS" -gt 0 ] && echo " of at most $MAX_CHARS characters"), $(pg -At -c "SELECT round(avg(embed_token_count(exp_text))) FROM source") tokens on average, $(nproc) CPUs, $(date -u +%F)"
rate "INSERT ... SELECT, row trigger (one inference per row)" \
    -c "INSERT INTO by_row (note_id, exp_text) SELECT note_id, exp_text FROM source"
rate "INSERT ... SELECT, statement trigger (batched)" \
    -c "INSERT INTO by_stmt (note_id, exp_text) SELECT note_id, exp_text FROM source"
rate "COPY, statement trigger (batched)" \
    -c "COPY by_copy (note_id, exp_text) FROM '/tmp/clinembed-bench-copy.tsv'"
pg -c "INSERT INTO by_fill (note_id, exp_text) SELECT note_id, exp_text FROM source"
rate "CALL embed_backfill, batch_size 256" \
    -c "SET client_min_messages = warning" \
    -c "CALL embed_backfill('by_fill', 'exp_text', 'embedding', batch_size => 256, model_column => 'embedding_model')"
rate "reference: SELECT embed_text(exp_text) per row, no writes" \
    -c "SELECT count(embed_text(exp_text)) FROM source"
rate "reference: SELECT embed_texts(all notes), no table writes" \
    -c "SELECT count(*) FROM embed_texts((SELECT array_agg(exp_text) FROM source))"
pg -At -c "SELECT 'check: ' || string_agg(t || '=' || n, ' ') FROM (
    SELECT 'by_row' t, count(embedding) n FROM by_row UNION ALL SELECT 'by_stmt', count(embedding) FROM by_stmt
    UNION ALL SELECT 'by_copy', count(embedding) FROM by_copy UNION ALL SELECT 'by_fill', count(embedding) FROM by_fill) c"
