#!/usr/bin/env bash
# Faults that need several sessions or a crash, against the running scratch
# cluster:
#   - the model directory is replaced while backends hold sessions: a session
#     picks up the new files at its next statement, and no statement mixes
#     vectors or identities of the two;
#   - kill -9 of a backend in the middle of a trigger-driven COPY: after crash
#     recovery no row holds a partial or mismatched embedding, and the server
#     embeds again.
# Prints "ok - name" / "not ok - name" lines and "faults: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
. tests/integration/lib.sh

DB=clinembed_faults
SWAP=/tmp/clinembed-swap
fresh_db
# Two versions of one model directory: the default model, then the same with
# normalize on (other vectors, other identity).
rm -rf "$SWAP" && mkdir -p "$SWAP"
cp -r "$(default_model_dir)" "$SWAP/m"
cp -r "$SWAP/m" "$SWAP/m-next"
printf '{"pooling": "mean", "normalize": true}\n' > "$SWAP/m-next/clinembed.json"
chmod -R a+rX "$SWAP"
swap() { mv "$SWAP/m" "$SWAP/m-old" && mv "$SWAP/m-next" "$SWAP/m"; }

pg -d "$DB" <<'SQL'
CREATE EXTENSION clinembed;
-- 1 when a vector has unit length, 0 otherwise
CREATE FUNCTION unit(v real[]) RETURNS int LANGUAGE sql IMMUTABLE
    AS $$ SELECT (abs(sqrt(sum(x::float8 * x)) - 1) < 1e-4)::int FROM unnest(v) x $$;
CREATE TABLE swapped (id int PRIMARY KEY, exp_text text, embedding real[], embedding_model text);
CREATE TRIGGER embed AFTER INSERT ON swapped REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model');
CREATE TABLE copied (id int PRIMARY KEY, exp_text text, embedding real[], embedding_model text);
CREATE TRIGGER embed AFTER INSERT ON copied REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model');
SQL

# 1. One session across the swap: old files before it, new files after it.
out=$("$PG_BIN/psql" -X -q -At -h "$PGHOST" -p "$PGPORT" -U postgres -d "$DB" <<SQL 2>&1
SET clinembed.model = '$SWAP/m';
SELECT embed_model_id() AS before_id \gset
SELECT 'before ' || unit(embed_text('chest pain'));
\! mv "$SWAP/m" "$SWAP/m-old" && mv "$SWAP/m-next" "$SWAP/m"
SELECT 'after ' || unit(embed_text('chest pain'));
SELECT 'identity changed ' || (embed_model_id() <> :'before_id');
SQL
)
check "before the swap the session uses the old files" "$(echo "$out" | grep -c '^before 0$')" "1"
check "at its next statement the session uses the new files" "$(echo "$out" | grep -c '^after 1$')" "1"
check "and reports the new identity" "$(echo "$out" | grep -c '^identity changed true$')" "1"

# 2. A statement in flight during the swap: one model for all its rows.
mv "$SWAP/m" "$SWAP/m-next" && mv "$SWAP/m-old" "$SWAP/m"
PGAPPNAME=swap-insert pg -d "$DB" -c "SET clinembed.model = '$SWAP/m'" -c "SELECT embed_model_id()" \
    -c "INSERT INTO swapped SELECT g, format('Note %s. %s', g, repeat('Vitals stable, plan unchanged. ', 30)) FROM generate_series(1, 400) g" \
    >/dev/null 2>&1 &
BG=$!
for _ in $(seq 1 100); do
    [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'swap-insert' AND query LIKE 'INSERT%' AND state = 'active'")" = 1 ] && break
    sleep 0.1
done
sleep 1
swap
wait "$BG"
check "the in-flight statement finished" "$(q "SELECT count(embedding) FROM swapped")" "400"
check "its rows carry one model identity" "$(q "SELECT count(DISTINCT embedding_model) FROM swapped")" "1"
check "and vectors of that model only (old files: not normalized)" "$(q "SELECT sum(unit(embedding)) FROM swapped")" "0"
check "a new statement in a new session uses the new files" \
    "$(pg -d "$DB" -At -c "SET clinembed.model = '$SWAP/m'" -c "SELECT unit(embed_text('x'))")" "1"

# 3. kill -9 of the backend running a trigger-driven COPY.
q "COPY (SELECT g, format('Note %s. %s', g, repeat('Afebrile, lungs clear. ', 40)) FROM generate_series(1, 600) g) TO '/tmp/clinembed-faults-copy.tsv'" >/dev/null
PGAPPNAME=copy-killed pg -d "$DB" -c "COPY copied (id, exp_text) FROM '/tmp/clinembed-faults-copy.tsv'" >/dev/null 2>&1 &
BG=$!
for _ in $(seq 1 100); do
    [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'copy-killed' AND state = 'active'")" = 1 ] && break
    sleep 0.1
done
sleep 2 # the rows are in; the statement trigger is embedding them
PID=$(q "SELECT pid FROM pg_stat_activity WHERE application_name = 'copy-killed'")
kill -9 "$PID"
wait "$BG"
for _ in $(seq 1 100); do "$PG_BIN/pg_isready" -q -h "$PGHOST" -p "$PGPORT" && break; sleep 0.2; done
sleep 1
for _ in $(seq 1 50); do q "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
check "the server went through crash recovery" "$(server_log | grep -c 'all server processes terminated; reinitializing')" "1"
check "after recovery no row holds a partial or mismatched embedding" \
    "$(q "SELECT count(*) FROM copied WHERE (embedding IS NULL) <> (embedding_model IS NULL) OR cardinality(embedding) <> 384")" "0"
check "the killed COPY left no rows (one transaction)" "$(q "SELECT count(*) FROM copied")" "0"
q "COPY copied (id, exp_text) FROM '/tmp/clinembed-faults-copy.tsv'" >/dev/null
check "the same COPY then embeds every row" "$(q "SELECT count(embedding) FROM copied")" "600"

rm -rf "$SWAP"
finish faults
