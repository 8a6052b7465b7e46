#!/usr/bin/env bash
# What the row trigger itself costs: single-row INSERTs with pgbench, one
# client, the same short note each time, through three statements in
# interleaved rounds:
#   trigger  INSERT INTO t (exp_text) VALUES (...)       embed_trigger embeds it
#   values   INSERT INTO t (exp_text, embedding, ...) VALUES (..., embed_text(...), embed_model_id())
#   plain    INSERT INTO t (exp_text) VALUES (...)       no trigger, no inference
# trigger - values is the trigger's own cost per row; values - plain is the
# inference's.  A short note makes the trigger's share as large as it gets.
#   bash bench/row_trigger.sh                       # default model, 3 rounds of 20 s
#   ROUNDS=5 SECONDS_EACH=30 bash bench/row_trigger.sh
# Run as root on Debian 12 after scripts/setup.sh; prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ROUNDS=${ROUNDS:-3}
SECONDS_EACH=${SECONDS_EACH:-20}
MODEL=${MODEL:-$DEFAULT_MODEL}
NOTE=${NOTE:-Pt c/o SOB x3d, denies chest pain; h/o CHF, EF 30%. Plan: diurese, recheck BMP.}
install_release /tmp/clinembed-bench-build.log
SCRIPTS=$(mktemp -d)
chmod 0755 "$SCRIPTS"
cluster_start bench-row-trigger "$(free_port)"
trap 'cluster_stop; rm -rf "$SCRIPTS"' EXIT
server_model "$MODEL" >/dev/null
pg <<'SQL'
CREATE EXTENSION clinembed;
CREATE TABLE by_trigger (id bigserial PRIMARY KEY, exp_text text, embedding real[], embedding_model text);
CREATE TABLE by_values (LIKE by_trigger INCLUDING ALL);
CREATE TABLE by_plain (LIKE by_trigger INCLUDING ALL);
CREATE TRIGGER embed BEFORE INSERT OR UPDATE OF exp_text ON by_trigger
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model');
SQL
lit=$(printf "%s" "$NOTE" | sed "s/'/''/g")
echo "INSERT INTO by_trigger (exp_text) VALUES ('$lit');" > "$SCRIPTS/trigger.sql"
echo "INSERT INTO by_values (exp_text, embedding, embedding_model) VALUES ('$lit', embed_text('$lit'), embed_model_id());" \
    > "$SCRIPTS/values.sql"
echo "INSERT INTO by_plain (exp_text) VALUES ('$lit');" > "$SCRIPTS/plain.sql"
chmod 0644 "$SCRIPTS"/*.sql

# latency KIND: mean ms per INSERT over SECONDS_EACH s, from pgbench.  Its
# first INSERT loads the model in the new connection (about 0.1 s, spread
# over thousands of rows).
latency() {
    as_pg "$PG_BIN/pgbench" -h "$CLUSTER_DIR" -p "$CLUSTER_PORT" -U postgres -n -c 1 -T "$SECONDS_EACH" -M prepared \
        -f "$SCRIPTS/$1.sql" postgres 2>/dev/null | awk '/^latency average/ { print $4 }'
}

echo "model: $MODEL, note: ${#NOTE} characters, $(pg -At -c "SELECT embed_token_count('$lit')") tokens," \
    "$(nproc) CPUs, $(date -u +%F), rounds: $ROUNDS of ${SECONDS_EACH} s each"
echo
echo "| round | trigger ms/row | values ms/row | plain ms/row | trigger - values | values - plain |"
echo "|---|---|---|---|---|---|"
for r in $(seq "$ROUNDS"); do
    t=$(latency trigger) v=$(latency values) p=$(latency plain)
    python3 -c "import sys; t, v, p = map(float, sys.argv[2:]); print(f'| {sys.argv[1]} | {t:.3f} | {v:.3f} | {p:.3f} | {t - v:+.3f} | {v - p:.3f} |')" \
        "$r" "$t" "$v" "$p"
done
pg -At -c "SELECT 'check: rows with a vector ' || (SELECT count(embedding) FROM by_trigger) || ' of ' || (SELECT count(*) FROM by_trigger)"
