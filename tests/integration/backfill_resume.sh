#!/usr/bin/env bash
# Multi-session test of embed_backfill against the running scratch cluster
# (PGHOST, PGPORT, CLUSTER_DIR from scripts/lib.sh's cluster_start):
#   - progress is visible from a second session while a backfill runs;
#   - pg_terminate_backend mid-run leaves no half-written row;
#   - an immediate server stop (crash recovery) mid-run does the same;
#   - a rerun completes, and every row was embedded exactly once.
# Prints "ok - name" / "not ok - name" lines and "integration: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
. tests/integration/lib.sh

DB=clinembed_integration

fresh_db
pg -d "$DB" <<'SQL'
CREATE EXTENSION clinembed;
CREATE EXTENSION vector;
CREATE TABLE notes (
    id int PRIMARY KEY,
    exp_text text,
    embedding vector(384),
    embedding_model text,
    writes int NOT NULL DEFAULT 0
);
-- Counts how often each row's vector is written.
CREATE FUNCTION count_writes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.embedding IS DISTINCT FROM OLD.embedding THEN
        NEW.writes := OLD.writes + 1;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER count_writes BEFORE UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION count_writes();
INSERT INTO notes (id, exp_text)
SELECT g, format('Progress note %s. %s', g,
                 repeat('Vital signs stable, afebrile, tolerating diet, ambulating with assistance. ', 2 + g % 4))
  FROM generate_series(1, 3000) g;
SQL
TOTAL=$(q "SELECT count(*) FROM notes")

# backfill_bg: starts a backfill in the background as application "backfill".
backfill_bg() {
    RUNS_BEFORE=$(q "SELECT coalesce(max(run_id), 0) FROM backfill_runs")
    PGAPPNAME=backfill pg -d "$DB" -c \
        "CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 100, model_column => 'embedding_model')" \
        >/dev/null 2>&1 &
    BG=$!
}
# wait_progress N: waits until a run started after the last backfill_bg has
# at least N rows done.
wait_progress() {
    for _ in $(seq 1 600); do
        local d
        d=$(q "SELECT coalesce(max(rows_done), 0) FROM backfill_runs WHERE run_id > $RUNS_BEFORE")
        [ "${d:-0}" -ge "$1" ] && return 0
        sleep 0.2
    done
    return 1
}
consistent() { # rows whose vector and model identity disagree, or are partial
    q "SELECT count(*) FROM notes
        WHERE (embedding IS NULL) <> (embedding_model IS NULL)
           OR (embedding IS NOT NULL AND vector_dims(embedding) <> 384)
           OR writes > 1"
}

# 1. progress from a second session, then pg_terminate_backend
backfill_bg
wait_progress 300
check "progress visible from another session while running" \
    "$(q "SELECT state, rows_total = $TOTAL, rows_done >= 300, rows_per_second > 0, eta IS NOT NULL FROM backfill_status ORDER BY run_id DESC LIMIT 1")" \
    "running|t|t|t|t"
check "terminate the backfill backend" \
    "$(q "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'backfill') t")" "1"
wait "$BG"
check "terminated run shows as interrupted" \
    "$(q "SELECT state FROM backfill_status ORDER BY run_id DESC LIMIT 1")" "interrupted"
check "after terminate: no half-written row" "$(consistent)" "0"
check "after terminate: embedded rows equal committed progress" \
    "$(q "SELECT (SELECT count(embedding) FROM notes) = (SELECT sum(rows_done) FROM backfill_runs)")" "t"

# 2. an immediate stop (crash, then recovery) in the middle of a second run
DONE1=$(q "SELECT count(embedding) FROM notes")
backfill_bg
wait_progress 200
as_pg env -u RUST_BACKTRACE "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -m immediate -w restart >/dev/null 2>&1
wait "$BG"
check "after crash recovery: no half-written row" "$(consistent)" "0"
check "after crash recovery: embedded rows equal committed progress" \
    "$(q "SELECT (SELECT count(embedding) FROM notes) = (SELECT sum(rows_done) FROM backfill_runs)")" "t"
check "after crash recovery: the second run resumed past the first" \
    "$(q "SELECT count(embedding) > $DONE1 FROM notes")" "t"

# 3. rerun to completion
pg -d "$DB" -c "SET client_min_messages = warning" \
    -c "CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 100, model_column => 'embedding_model')"
check "rerun completes every row" "$(q "SELECT count(*) FROM notes WHERE embedding IS NULL")" "0"
check "every row embedded exactly once" "$(q "SELECT min(writes) || '|' || max(writes) FROM notes")" "1|1"
check "progress of all runs adds up to the table" "$(q "SELECT sum(rows_done) FROM backfill_runs")" "$TOTAL"
check "vectors equal embed_text" \
    "$(q "SELECT bool_and(embedding = embed_text(exp_text)::vector) FROM notes WHERE id % 500 = 1")" "t"
check "server log shows no crash" \
    "$(crashes)" "0"

finish integration
