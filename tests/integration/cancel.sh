#!/usr/bin/env bash
# Cancellation against the running scratch cluster (PGHOST, PGPORT,
# CLUSTER_DIR from scripts/lib.sh's cluster_start): statement_timeout and
# pg_cancel_backend stop a long SELECT embed_text(...) FROM ..., a large
# embed_texts call and a backfill within about one micro-batch, and the same
# session works afterwards; pg_terminate_backend ends a backend cleanly; the
# server log shows no crash.
# Prints "ok - name" / "not ok - name" lines and "cancel: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
. tests/integration/lib.sh

DB=clinembed_cancel
LIMIT_S=${CANCEL_LIMIT_S:-2.0} # seconds from cancel to the backend being idle

fresh_db
pg -d "$DB" <<'SQL'
CREATE EXTENSION clinembed;
CREATE TABLE notes (id int PRIMARY KEY, exp_text text, embedding real[]);
-- about 400 tokens each: long enough that the whole table takes many seconds
INSERT INTO notes (id, exp_text)
SELECT g, format('Note %s. %s', g, repeat('Patient afebrile, vitals stable, lungs clear, plan unchanged. ', 40))
  FROM generate_series(1, 2000) g;
SQL

# A session that runs one long statement, then proves it still works.
# session NAME STATEMENT [SETTINGS]: runs in the background, output in /tmp.
session() {
    local name=$1 stmt=$2 settings=${3:-}
    PGAPPNAME="cancel-$name" "$PG_BIN/psql" -X -q -At -h "$PGHOST" -p "$PGPORT" -U postgres -d "$DB" \
        >"/tmp/clinembed-cancel-$name.out" 2>&1 <<SQL &
\\set ON_ERROR_STOP 0
SELECT embed_model_id() IS NOT NULL;
$settings
$stmt;
\\echo sqlstate :LAST_ERROR_SQLSTATE
RESET statement_timeout;
SELECT 'alive ' || array_length(embed_text('after the cancel'), 1);
SQL
    BG=$!
}
active() { q "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'cancel-$1' AND state = 'active'"; }
wait_active() { for _ in $(seq 1 100); do [ "$(active "$1")" = 1 ] && return 0; sleep 0.1; done; return 1; }
# latency NAME: seconds until the session's statement stops being active.
latency() {
    local t0 t1
    t0=$(date +%s.%N)
    for _ in $(seq 1 300); do [ "$(active "$1")" = 0 ] && break; sleep 0.05; done
    t1=$(date +%s.%N)
    python3 -c "print(f'{$t1 - $t0:.2f}')"
}
fast() { python3 -c "print('yes' if $1 <= $LIMIT_S else 'no ($1 s)')"; }

STATEMENTS=(
    "row|SELECT count(embed_text(exp_text)) FROM notes"
    "batch|SELECT count(*) FROM embed_texts((SELECT array_agg(exp_text) FROM notes))"
    "backfill|CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 64)"
)
for entry in "${STATEMENTS[@]}"; do
    name=${entry%%|*} stmt=${entry#*|}
    # statement_timeout: the statement ends with 57014 soon after the timeout
    session "$name-timeout" "$stmt" "SET client_min_messages = warning; SET statement_timeout = '1500ms';"
    t0=$(date +%s.%N)
    wait "$BG"
    t1=$(date +%s.%N)
    check "$name: statement_timeout stops it (57014)" \
        "$(grep -c '^sqlstate 57014$' "/tmp/clinembed-cancel-$name-timeout.out")" "1"
    check "$name: statement_timeout lands within ${LIMIT_S}s of the timeout" \
        "$(fast "$(python3 -c "print(f'{$t1 - $t0 - 1.5:.2f}')")")" "yes"
    check "$name: the session works after the timeout" \
        "$(grep -c '^alive [0-9]' "/tmp/clinembed-cancel-$name-timeout.out")" "1"
    # pg_cancel_backend from another session
    session "$name-cancel" "$stmt" "SET client_min_messages = warning;"
    wait_active "$name-cancel"
    sleep 1
    q "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'cancel-$name-cancel'" >/dev/null
    check "$name: pg_cancel_backend stops it within ${LIMIT_S}s" "$(fast "$(latency "$name-cancel")")" "yes"
    wait "$BG"
    check "$name: cancelled with 57014" "$(grep -c '^sqlstate 57014$' "/tmp/clinembed-cancel-$name-cancel.out")" "1"
    check "$name: the session works after the cancel" \
        "$(grep -c '^alive [0-9]' "/tmp/clinembed-cancel-$name-cancel.out")" "1"
done

# pg_terminate_backend in the middle of a batch: the backend exits, the
# server carries on (no crash recovery), other sessions keep embedding.
session terminate "SELECT count(*) FROM embed_texts((SELECT array_agg(exp_text) FROM notes))"
wait_active terminate
sleep 1
q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'cancel-terminate'" >/dev/null
check "pg_terminate_backend ends the backend within ${LIMIT_S}s" "$(fast "$(latency terminate)")" "yes"
wait "$BG"
check "the terminated session's client saw the connection end" \
    "$(grep -c 'terminating connection due to administrator command' /tmp/clinembed-cancel-terminate.out)" "1"
check "other sessions still embed" "$(q "SELECT array_length(embed_text('still up'), 1) > 0")" "t"
check "no crash, PANIC or crash recovery in the server log" \
    "$(crashes)" "0"

finish cancel
