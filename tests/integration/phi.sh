#!/usr/bin/env bash
# PHI: no note text in any error, notice, warning or log line.  Every error
# path that sees a note is fired with a sentinel string inside the note, with
# the server logging as much as it can; the sentinel must appear neither in
# the server log nor in anything the client received.  The sentinel reaches
# the server only as table data, so the server's own "STATEMENT:" lines (the
# query text, which holds no note) cannot hide a leak or cause a false one.
# Prints "ok - name" / "not ok - name" lines and "phi: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
. tests/integration/lib.sh

DB=clinembed_phi
SENTINEL=PHISENTINEL7F3A
fresh_db
CLIENT=/tmp/clinembed-phi-client.log
: > "$CLIENT"

# The notes: short, long (past 512 tokens) and huge, each holding the sentinel.
pg -d "$DB" <<SQL >/dev/null
CREATE EXTENSION clinembed;
CREATE EXTENSION vector;
CREATE TABLE src (id int PRIMARY KEY, t text);
INSERT INTO src VALUES
    (1, 'Patient $SENTINEL reports chest pain.'),
    (2, repeat('Vitals stable $SENTINEL. ', 400)),
    (3, repeat('$SENTINEL ', 200000));
SQL
pg -c "ALTER SYSTEM SET log_min_messages = debug1" -c "ALTER SYSTEM SET log_error_verbosity = verbose" \
   -c "ALTER SYSTEM SET log_min_error_statement = debug1" -c "SELECT pg_reload_conf()" >/dev/null

# run LABEL SQL: runs SQL with errors allowed; everything the client gets
# (results, errors with detail, hint and context, notices) goes to $CLIENT.
run() {
    echo "-- $1" >> "$CLIENT"
    "$PG_BIN/psql" -X -h "$PGHOST" -p "$PGPORT" -U postgres -d "$DB" -v VERBOSITY=verbose \
        -c "\\set VERBOSITY verbose" -c "SET client_min_messages = debug1" -c "$2" >> "$CLIENT" 2>&1 || true
    # each path must really have failed
    grep -q "ERROR:" <(tail -n 30 "$CLIENT") || { echo "not ok - $1 raised no error"; FAIL=$((FAIL + 1)); }
}

run "missing model" "SET clinembed.model = '/nonexistent'; SELECT embed_text(t) FROM src"
run "corrupt model" "SET clinembed.model = '/tmp/clinembed-regress-corrupt'; SELECT embed_text(t) FROM src"
run "broken tokenizer" "SET clinembed.model = '/tmp/clinembed-regress-badtokenizer'; SELECT embed_token_count(t) FROM src"
run "missing library" "SET clinembed.onnxruntime_library = '/nonexistent/libonnxruntime.so'; SELECT embed_text(t) FROM src"
run "too many texts" "SET clinembed.batch_max_texts = 2; SELECT * FROM embed_texts((SELECT array_agg(t) FROM src))"
run "too many tokens" "SET clinembed.batch_max_tokens = 20; SELECT * FROM embed_texts((SELECT array_agg(t ORDER BY id DESC) FROM src))"
run "statement timeout" "SET statement_timeout = '300ms'; SELECT embed_text(t || g) FROM src, generate_series(1, 500) g"
run "dimension mismatch (trigger)" "CREATE TABLE w (id int PRIMARY KEY, t text, e vector(768));
    CREATE TRIGGER w BEFORE INSERT ON w FOR EACH ROW EXECUTE FUNCTION embed_trigger('t', 'e');
    INSERT INTO w SELECT id, t FROM src"
run "dimension mismatch (batched trigger)" "CREATE TABLE wb (id int PRIMARY KEY, t text, e vector(768));
    CREATE TRIGGER wb AFTER INSERT ON wb REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e');
    INSERT INTO wb SELECT id, t FROM src"
run "bad column (trigger)" "CREATE TABLE b (id int PRIMARY KEY, t text, e real[]);
    CREATE TRIGGER b BEFORE INSERT ON b FOR EACH ROW EXECUTE FUNCTION embed_trigger('nope', 'e');
    INSERT INTO b SELECT id, t FROM src"
run "backfill dimension mismatch" "CREATE TABLE f (id int PRIMARY KEY, t text, e vector(768));
    INSERT INTO f SELECT id, t FROM src; CALL embed_backfill('f', 't', 'e')"
run "backfill inside a transaction block" "CREATE TABLE g (id int PRIMARY KEY, t text, e real[]);
    INSERT INTO g SELECT id, t FROM src; BEGIN; CALL embed_backfill('g', 't', 'e'); COMMIT"
run "target of a wrong type" "CREATE TABLE x (id int PRIMARY KEY, t text, e text);
    CREATE TRIGGER x BEFORE INSERT ON x FOR EACH ROW EXECUTE FUNCTION embed_trigger('t', 'e');
    INSERT INTO x SELECT id, t FROM src"
run "constraint violation (batched trigger)" "CREATE TABLE c (id int PRIMARY KEY, t text, e real[] CHECK (array_length(e, 1) = 768));
    CREATE TRIGGER c AFTER INSERT ON c REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e');
    INSERT INTO c SELECT id, t FROM src"
run "constraint violation (backfill)" "CREATE TABLE cb (id int PRIMARY KEY, t text, e real[] CHECK (array_length(e, 1) = 768));
    INSERT INTO cb SELECT id, t FROM src; CALL embed_backfill('cb', 't', 'e')"
run "unique violation on the model column (batched trigger)" "CREATE TABLE u (id int PRIMARY KEY, t text, e real[], m text UNIQUE);
    CREATE TRIGGER u AFTER INSERT ON u REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('t', 'e', 'm');
    INSERT INTO u SELECT id, t FROM src"
# and the successful paths that print NOTICEs
pg -d "$DB" -c "CREATE TABLE ok (id int PRIMARY KEY, t text, e real[])" -c "INSERT INTO ok SELECT id, t FROM src" >/dev/null
"$PG_BIN/psql" -X -h "$PGHOST" -p "$PGPORT" -U postgres -d "$DB" -c "SET client_min_messages = debug1" \
    -c "CALL embed_backfill('ok', 't', 'e', batch_size => 1)" >> "$CLIENT" 2>&1

pg -c "ALTER SYSTEM RESET log_min_messages" -c "ALTER SYSTEM RESET log_error_verbosity" \
   -c "ALTER SYSTEM RESET log_min_error_statement" -c "SELECT pg_reload_conf()" >/dev/null

check "the error paths were exercised" "$(grep -c 'ERROR:' "$CLIENT")" "16"
check "the backfill printed its progress" "$(grep -c 'clinembed backfill of public.ok: 3 of 3 rows' "$CLIENT")" "1"
check "no sentinel in anything the client received" "$(grep -c "$SENTINEL" "$CLIENT")" "0"
check "no sentinel in the server log" "$(server_log | grep -c "$SENTINEL")" "0"
check "the server log did record the errors" "$(server_log | grep -c 'ERROR:')" "16"
finish phi
