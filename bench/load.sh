#!/usr/bin/env bash
# Load and memory stability on the default model (not part of scripts/test.sh:
# it takes several minutes).
#   bash bench/load.sh
# Phase 1, pgbench: 8 clients insert notes through embed_trigger (one note
#   per transaction) while 4 clients run similarity searches through an HNSW
#   index, a fixed number of transactions each.  Reports errors, throughput,
#   latency percentiles, and the RSS of every pgbench backend at the start
#   and the end; then checks that every inserted row has exactly one
#   embedding, from the right model.
# Phase 2, one backend: 10,000 embed_text calls of varying lengths (1 to
#   ~600 tokens), RSS sampled every 1,000 calls.
# Exit status 1 if a check fails.  Run as root on Debian 12 after setup.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

INSERTS_PER_CLIENT=${INSERTS_PER_CLIENT:-100}
SEARCHES_PER_CLIENT=${SEARCHES_PER_CLIENT:-100}
CALLS=${CALLS:-10000}
WORK=/tmp/clinembed-load-work
rm -rf "$WORK" && mkdir -p "$WORK" && chmod 0777 "$WORK"
install_release "$WORK/build.log"
# One intra-op thread per backend: 12 busy backends share 2 cores.
cluster_start load "$(free_port)" clinembed.intra_op_threads=1 max_connections=50
trap cluster_stop EXIT
python3 scripts/gen_notes.py --count 1000 > "$WORK/notes.tsv"
chmod 0644 "$WORK/notes.tsv"

pg <<SQL
CREATE EXTENSION vector;
CREATE EXTENSION clinembed;
CREATE TABLE corpus (note_id int PRIMARY KEY, patient_id int, note_type text, topic text, exp_text text);
\\copy corpus FROM '$WORK/notes.tsv'
CREATE TABLE notes (
    id bigserial PRIMARY KEY,
    corpus_id int NOT NULL,
    exp_text text NOT NULL,
    embedding vector(384),
    embedding_model text
);
CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE OF exp_text ON notes
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model');
-- something to search from the start
INSERT INTO notes (corpus_id, exp_text) SELECT note_id, exp_text FROM corpus WHERE note_id <= 200;
CREATE INDEX notes_hnsw ON notes USING hnsw (embedding vector_cosine_ops);
SQL

cat > "$WORK/insert.sql" <<'SQL'
\set c random(1, 1000)
INSERT INTO notes (corpus_id, exp_text) SELECT note_id, exp_text FROM corpus WHERE note_id = :c;
SQL
cat > "$WORK/search.sql" <<'SQL'
\set c random(1, 1000)
SELECT id FROM notes
 ORDER BY embedding <=> embed_text((SELECT left(exp_text, 300) FROM corpus WHERE note_id = :c))::vector(384)
 LIMIT 5;
SQL

rss_of_app() { # application_name -> "pid rss_kb" lines
    local pid
    for pid in $(pg -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$1'"); do
        echo "$pid $(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)"
    done
}

echo "== phase 1: pgbench, 8 inserting clients x $INSERTS_PER_CLIENT, 4 searching clients x $SEARCHES_PER_CLIENT"
before=$(pg -At -c "SELECT count(*) FROM notes")
cd "$WORK"
PGAPPNAME=load-insert "$PG_BIN/pgbench" -n -c 8 -j 2 -t "$INSERTS_PER_CLIENT" -f insert.sql -l --log-prefix=insert \
    -h "$PGHOST" -p "$PGPORT" -U postgres postgres > insert.out 2>&1 &
INS=$!
PGAPPNAME=load-search "$PG_BIN/pgbench" -n -c 4 -j 2 -t "$SEARCHES_PER_CLIENT" -f search.sql -l --log-prefix=search \
    -h "$PGHOST" -p "$PGPORT" -U postgres postgres > search.out 2>&1 &
SRCH=$!
cd - >/dev/null
sleep 10
# every 5 s: "pid rss_kb" of each pgbench backend; each backend's first and
# last sample are compared
: > "$WORK/rss-samples.txt"
while kill -0 "$INS" 2>/dev/null || kill -0 "$SRCH" 2>/dev/null; do
    { rss_of_app load-insert; rss_of_app load-search; } >> "$WORK/rss-samples.txt" 2>/dev/null || true
    sleep 5
done
wait "$INS"; ins_rc=$?
wait "$SRCH"; srch_rc=$?
for kind in insert search; do
    echo "-- $kind clients"
    grep -E "number of (transactions actually processed|failed transactions)|latency average|^tps" "$WORK/$kind.out" | sed 's/^/   /'
    cat "$WORK"/$kind.[0-9]* | python3 -c '
import sys
lat = sorted(int(l.split()[2]) / 1000 for l in sys.stdin)
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(f"   latency ms: p50 {p(0.50):.0f}, p95 {p(0.95):.0f}, p99 {p(0.99):.0f}, max {lat[-1]:.0f} ({len(lat)} transactions)")'
done
python3 - "$WORK/rss-samples.txt" <<'PY'
import sys
first, last = {}, {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 2 and parts[1] != "0":
        first.setdefault(parts[0], int(parts[1]))
        last[parts[0]] = int(parts[1])
growth = [(last[p] - first[p]) / 1024 for p in first]
print(f"-- RSS of {len(first)} pgbench backends, first to last sample 5 s apart: "
      f"first {min(first.values())/1024:.0f}-{max(first.values())/1024:.0f} MB, "
      f"growth {min(growth):+.1f} to {max(growth):+.1f} MB")
PY
after=$(pg -At -c "SELECT count(*) FROM notes")
bad=$(pg -At -c "SELECT count(*) FROM notes WHERE embedding IS NULL OR embedding_model IS DISTINCT FROM embed_model_id() OR vector_dims(embedding) <> 384")
echo "-- rows inserted: $((after - before)) (expected $((8 * INSERTS_PER_CLIENT))); rows without exactly one embedding of the current model: $bad"
echo "-- server log: $(grep -cE 'ERROR|PANIC|terminated by signal' "$CLUSTER_DIR/server.log") ERROR/PANIC/crash lines"

echo "== phase 2: one backend, $CALLS embed_text calls of varying lengths, RSS every 1000"
pg -At <<SQL
SELECT embed_model_id() IS NOT NULL;
CREATE TEMP TABLE rss (calls int, rss_kb bigint);
DO \$\$
DECLARE
    done int := 0;
BEGIN
    WHILE done < $CALLS LOOP
        PERFORM embed_text(left(c.exp_text, 1 + (g * 7919) % 3000))
           FROM generate_series(done + 1, done + 1000) g
           JOIN corpus c ON c.note_id = 1 + g % 1000;
        done := done + 1000;
        INSERT INTO rss SELECT done, s.rss_kb FROM embed_stats() s;
    END LOOP;
END \$\$;
SELECT format('   after %5s calls: RSS %s MB', calls, round(rss_kb / 1024.0)) FROM rss ORDER BY calls;
SELECT format('-- growth from 2000 to %s calls: %s MB', max(calls),
              round(((SELECT rss_kb FROM rss ORDER BY calls DESC LIMIT 1) - (SELECT rss_kb FROM rss WHERE calls = 2000)) / 1024.0, 1))
  FROM rss;
SQL

[ "$ins_rc" -eq 0 ] && [ "$srch_rc" -eq 0 ] && [ "$bad" -eq 0 ] && [ $((after - before)) -eq $((8 * INSERTS_PER_CLIENT)) ]
