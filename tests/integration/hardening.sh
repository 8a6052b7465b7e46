#!/usr/bin/env bash
# Hardening (issue 15), the cases that need several sessions, a server
# restart or the backend's own memory figures: the peak memory of huge texts
# and of a huge micro-batch budget, a second backfill with another model, a
# cancelled backfill whose session stays connected, and error details with
# RUST_BACKTRACE in the server's environment.  The single-session cases are in
# tests/regress/sql/embed_hardening.sql.
# Prints "ok - name" / "not ok - name" lines and "hardening: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
. tests/integration/lib.sh

DB=clinembed_hardening
fresh_db
# A second model identity: the default model with normalized output.
OTHER_MODEL=/tmp/clinembed-hardening-normalized
rm -rf "$OTHER_MODEL" && cp -r "$(default_model_dir)" "$OTHER_MODEL"
printf '{"pooling": "mean", "normalize": true}\n' > "$OTHER_MODEL/clinembed.json"
chmod -R a+rX "$OTHER_MODEL"
q "CREATE EXTENSION clinembed" >/dev/null
q "DROP ROLE IF EXISTS clinembed_hard_role" >/dev/null 2>&1; q "CREATE ROLE clinembed_hard_role" >/dev/null

# peak_mb SQL: runs SQL in a new session, then the backend's peak resident
# memory (VmHWM) in MB, read by the backend itself.
peak_mb() {
    pg -d "$DB" -At -c "$1" \
       -c "RESET ROLE" \
       -c "SELECT (regexp_match(pg_read_file('/proc/self/status'), 'VmHWM:\s+(\d+)'))[1]::bigint / 1024" | tail -n 1
}

# 1. Memory is bounded whatever the text and whatever an ordinary role sets.
# A fresh backend with the default model loaded peaks at about 300 MB; before
# the bounds, these peaked at 1.56 GB, 3 GB and 15.5 GB.
base=$(peak_mb "SELECT embed_text('warm up') IS NOT NULL")
comma=$(peak_mb "SELECT embed_text(repeat('a,', 2500000)) IS NOT NULL")
word=$(peak_mb "SET statement_timeout = '20s'; SELECT embed_text(repeat('a', 50000000)) IS NOT NULL")
count=$(peak_mb "SELECT embed_token_count(repeat('a,', 2500000)) > 0")
budget=$(peak_mb "SET ROLE clinembed_hard_role; SET clinembed.batch_tokens = 1048576;
    SELECT count(*) FROM embed_texts(ARRAY(SELECT repeat('Patient stable overnight, afebrile. ', 100) FROM generate_series(1, 200)))")
echo "# peak MB: warm $base, 5 MB text without spaces $comma, 50 MB word $word, counting 5 MB $count, batch_tokens 1048576 $budget"
check "a 5 MB text without whitespace adds under 300 MB" "$(( ${comma:-99999} - ${base:-0} < 300 ))" "1"
check "a 50 MB word adds under 300 MB (the text itself is 50 MB)" "$(( ${word:-99999} - ${base:-0} < 300 ))" "1"
check "counting 5 MB without whitespace adds under 300 MB" "$(( ${count:-99999} - ${base:-0} < 300 ))" "1"
check "batch_tokens 1048576 by an ordinary role adds under 500 MB" "$(( ${budget:-99999} - ${base:-0} < 500 ))" "1"

# 2. Tokenizing is bounded in time: a 1 s statement_timeout lands on a 50 MB
# word (it took 21.7 s before the bound), here as an error or a result.
start=$(date +%s%N)
pg -d "$DB" -At -c "SET statement_timeout = '1s'" -c "SELECT embed_token_count(repeat('a', 50000000)) > 0" >/dev/null 2>&1
elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
echo "# counting a 50 MB word under a 1 s statement_timeout returned after $elapsed ms"
check "a statement_timeout lands within 3 s on a 50 MB word" "$(( elapsed < 3000 ))" "1"

# A table whose backfill takes a few seconds.
q "CREATE TABLE notes (id int PRIMARY KEY, t text, e real[], m text)" >/dev/null
q "INSERT INTO notes SELECT g, 'Note ' || g || ': ' || repeat('Vital signs stable, afebrile. ', 6) FROM generate_series(1, 6000) g" >/dev/null

# wait_state STATE: waits until the newest run is in STATE.
wait_state() {
    for _ in $(seq 1 300); do
        [ "$(q "SELECT state FROM backfill_status ORDER BY run_id DESC LIMIT 1")" = "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

# 3. A second backfill with another model on the same table is refused while
# the first runs; one with the same model joins it.
PGAPPNAME=bf_first pg -d "$DB" -c "SET client_min_messages = warning" \
    -c "CALL embed_backfill('notes', 't', 'e', batch_size => 20, model_column => 'm')" >/dev/null 2>&1 &
FIRST=$!
wait_state running
other=$(pg -d "$DB" -At -v VERBOSITY=verbose -c "SET clinembed.model = '$OTHER_MODEL'" \
    -c "CALL embed_backfill('notes', 't', 'e', batch_size => 20, model_column => 'm')" 2>&1)
check "a second model's backfill is refused while the first runs (55006)" \
    "$(grep -c 'ERROR:  55006: another backfill of public.notes is running with another model' <<<"$other")" "1"
same=$(pg -d "$DB" -At -c "SET client_min_messages = warning" \
    -c "CALL embed_backfill('notes', 't', 'e', batch_size => 20, model_column => 'm')" 2>&1)
check "a backfill with the same model joins it" "$same" ""
wait "$FIRST"
check "both runs together embedded every row once, with the first model" \
    "$(q "SELECT count(*) FILTER (WHERE m = embed_model_id()), (SELECT sum(rows_done) FROM backfill_runs) FROM notes")" "6000|6000"

# 4. A cancelled backfill whose session stays connected shows as interrupted.
q "UPDATE notes SET e = NULL, m = NULL" >/dev/null
PGAPPNAME=bf_cancel "$PG_BIN/psql" -X -q -h "$PGHOST" -p "$PGPORT" -U postgres -d "$DB" \
    -c "SET client_min_messages = warning" \
    -c "CALL embed_backfill('notes', 't', 'e', batch_size => 20, model_column => 'm')" \
    -c "SELECT pg_sleep(8)" >/dev/null 2>&1 &
CANCELLED=$!
wait_state running
check "cancel the backfill" \
    "$(q "SELECT count(*) FROM (SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'bf_cancel') c")" "1"
sleep 1
check "its session is still connected" \
    "$(q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'bf_cancel'")" "1"
check "the cancelled run shows as interrupted" \
    "$(q "SELECT state FROM backfill_status ORDER BY run_id DESC LIMIT 1")" "interrupted"
check "... to an ordinary role as well" \
    "$(pg -d "$DB" -At -c "SET ROLE clinembed_hard_role" -c "SELECT state FROM backfill_status ORDER BY run_id DESC LIMIT 1")" "interrupted"
wait "$CANCELLED"

# 5. With RUST_BACKTRACE=1 in the server's environment, error details carry
# no Rust backtrace.
restart_with() { # env args...
    as_pg env -u RUST_BACKTRACE -u RUST_LIB_BACKTRACE "$@" "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" \
        -l "$CLUSTER_DIR/server.log" -m fast -w restart >/dev/null
}
restart_with RUST_BACKTRACE=1
err=$("$PG_BIN/psql" -X -h "$PGHOST" -p "$PGPORT" -U postgres -d "$DB" -v VERBOSITY=verbose \
    -c "SET clinembed.batch_max_texts = 1" -c "SELECT * FROM embed_texts(ARRAY['a', 'b'])" 2>&1)
restart_with
check "the error was raised with its detail" "$(grep -c 'DETAIL:' <<<"$err")" "1"
check "no backtrace in the error" "$(grep -ciE 'backtrace|rust_begin_unwind|[0-9]+: .*::' <<<"$err")" "0"

check "server log shows no crash" "$(crashes)" "0"
q "DROP TABLE notes" >/dev/null
pg -c "DROP ROLE IF EXISTS clinembed_hard_role" >/dev/null 2>&1
rm -rf "$OTHER_MODEL"
finish hardening
