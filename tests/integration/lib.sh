# Helpers shared by the integration tests.  Source it after scripts/lib.sh.
# Tests on the scratch cluster (PGHOST, PGPORT, CLUSTER_DIR) have it running;
# tests that start clusters of their own use check and their own finish.
# Each test prints "ok - name" / "not ok - name" and ends with
# "SUITE: N passed, M failed" (see finish).

PASS=0 FAIL=0
[ -n "${CLUSTER_DIR:-}" ] && LOG_START=$(($(wc -l < "$CLUSTER_DIR/server.log") + 1))

check() { # name actual expected
    if [ "$2" = "$3" ]; then
        echo "ok - $1"; PASS=$((PASS + 1))
    else
        echo "not ok - $1 (got '$2', want '$3')"; FAIL=$((FAIL + 1))
    fi
}

# q SQL: one query in the test database ($DB), unaligned output.
q() { pg -d "$DB" -At -c "$1"; }

# fresh_db: (re)creates $DB.
fresh_db() { pg -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null 2>&1; }

# server_log: what the server logged since this test started.
server_log() { tail -n +"$LOG_START" "$CLUSTER_DIR/server.log"; }

# crashes: lines of the server log since the start that show a backend crash
# (an intended immediate shutdown is not one).
crashes() {
    server_log | grep -cE 'terminated by signal|PANIC|was terminated|all server processes terminated'
}

# finish SUITE: drops $DB, prints the summary, sets the exit status.
finish() {
    pg -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1
    echo "$1: $PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}
