#!/usr/bin/env bash
# pg_upgrade of a database that uses clinembed, from PostgreSQL $OLD_PG
# (default 15src, a 15.18 built from source: Debian 12's 15.20 cannot be
# pg_upgraded to 18.6, see scripts/setup.sh) to $NEW_PG (default 18), both
# with clinembed and pgvector installed: the vectors, their model identities, the triggers and the
# backfill's progress come through, and the triggers and the backfill work
# afterwards.  Two clusters of its own, on ports it picks.
# Prints "ok - ..." / "not ok - ..." lines and "pg_upgrade: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
. tests/integration/lib.sh

OLD=${OLD_PG:-15src} NEW=${NEW_PG:-18}
OLD_BIN=$(pg_prefix "$OLD")/bin NEW_BIN=$(pg_prefix "$NEW")/bin
# This build of clinembed in both (the release build is cached per major).
for v in "$OLD" "$NEW"; do
    PG_CONFIG=$(pg_prefix "$v")/bin/pg_config install_release "/tmp/clinembed-pg_upgrade-install-$v.log" \
        || { echo "not ok - install clinembed into $v"; echo "pg_upgrade: 0 passed, 1 failed"; exit 1; }
done
DIR=/tmp/clinembed-pg_upgrade
OLD_PORT=$(free_port) NEW_PORT=$(free_port)
q_at() { # bin port sql
    "$1/psql" -X -At -v ON_ERROR_STOP=1 -h "$DIR" -p "$2" -U postgres -d notes_db -c "$3"
}
ctl() { # bin data port action
    as_pg env -u RUST_BACKTRACE "$1/pg_ctl" -D "$2" -l "$DIR/$(basename "$2").log" \
        -o "-p $3 -k $DIR -c listen_addresses=''" -w "$4" >/dev/null
}
for bin in "$OLD_BIN" "$NEW_BIN"; do
    [ -x "$bin/pg_upgrade" ] || { echo "not ok - $bin/pg_upgrade missing"; echo "pg_upgrade: 0 passed, 1 failed"; exit 1; }
done

for v in "$OLD" "$NEW"; do as_pg "$(pg_prefix "$v")/bin/pg_ctl" -D "$DIR/data$v" -m immediate stop >/dev/null 2>&1; done
rm -rf "$DIR" && install -d -m 0700 -o postgres -g postgres "$DIR"
as_pg "$OLD_BIN/initdb" -D "$DIR/data$OLD" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DIR/initdb-old.log" 2>&1
# 18 turns data checksums on by default; pg_upgrade needs the old cluster's setting.
checksums=(); [ "$NEW" -ge 18 ] && checksums=(--no-data-checksums)
as_pg "$NEW_BIN/initdb" -D "$DIR/data$NEW" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 "${checksums[@]}" \
    >"$DIR/initdb-new.log" 2>&1
ctl "$OLD_BIN" "$DIR/data$OLD" "$OLD_PORT" start
"$OLD_BIN/psql" -X -q -h "$DIR" -p "$OLD_PORT" -U postgres -c "CREATE DATABASE notes_db"
"$OLD_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$OLD_PORT" -U postgres -d notes_db <<'SQL' >/dev/null
SET client_min_messages = warning;
CREATE EXTENSION vector;
CREATE EXTENSION clinembed;
CREATE TABLE notes (id int PRIMARY KEY, exp_text text, embedding vector(384), embedding_model text);
CREATE TRIGGER notes_embed_insert AFTER INSERT ON notes REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model');
CREATE TRIGGER notes_embed_update BEFORE UPDATE OF exp_text ON notes
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model');
INSERT INTO notes SELECT g, 'Progress note ' || g || '. Afebrile, ambulating.' FROM generate_series(1, 200) g;
ALTER TABLE notes DISABLE TRIGGER notes_embed_insert;
INSERT INTO notes SELECT g, 'Late note ' || g || '. Pain controlled.' FROM generate_series(201, 260) g;
ALTER TABLE notes ENABLE TRIGGER notes_embed_insert;
CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 20, model_column => 'embedding_model');
CREATE INDEX notes_hnsw ON notes USING hnsw (embedding vector_cosine_ops);
SQL
BEFORE=$(q_at "$OLD_BIN" "$OLD_PORT" "SELECT md5(string_agg(id || ':' || embedding::text || ':' || embedding_model, ',' ORDER BY id)) FROM notes")
RUNS_BEFORE=$(q_at "$OLD_BIN" "$OLD_PORT" "SELECT string_agg(relation || ' ' || state || ' ' || rows_done, ',') FROM backfill_status")
ctl "$OLD_BIN" "$DIR/data$OLD" "$OLD_PORT" stop

# pg_upgrade writes its reports in the new data directory and the cwd.
if (cd "$DIR" && as_pg "$NEW_BIN/pg_upgrade" -b "$OLD_BIN" -B "$NEW_BIN" -d "$DIR/data$OLD" -D "$DIR/data$NEW" \
        -p "$OLD_PORT" -P "$NEW_PORT" -s "$DIR" -U postgres >"$DIR/pg_upgrade.out" 2>&1); then
    check "pg_upgrade from $OLD to $NEW" ok ok
else
    check "pg_upgrade from $OLD to $NEW" "failed: $(tail -n 5 "$DIR/pg_upgrade.out" | tr '\n' ' ')" ok
    echo "pg_upgrade: $PASS passed, $FAIL failed"
    exit 1
fi
ctl "$NEW_BIN" "$DIR/data$NEW" "$NEW_PORT" start
check "the server is PostgreSQL $NEW" "$(q_at "$NEW_BIN" "$NEW_PORT" "SHOW server_version_num" | cut -c1-2)" "${NEW%src}"
check "the vectors and model identities came through unchanged" \
    "$(q_at "$NEW_BIN" "$NEW_PORT" "SELECT md5(string_agg(id || ':' || embedding::text || ':' || embedding_model, ',' ORDER BY id)) FROM notes")" "$BEFORE"
check "the backfill's progress came through" \
    "$(q_at "$NEW_BIN" "$NEW_PORT" "SELECT string_agg(relation || ' ' || state || ' ' || rows_done, ',') FROM backfill_status")" "$RUNS_BEFORE"
check "the same model identity on $NEW" \
    "$(q_at "$NEW_BIN" "$NEW_PORT" "SELECT count(*) FROM notes WHERE embedding_model = embed_model_id()")" "260"
check "stored vectors equal embed_text on $NEW" \
    "$(q_at "$NEW_BIN" "$NEW_PORT" "SELECT bool_and(embedding = embed_text(exp_text)::vector) FROM notes WHERE id % 20 = 1")" "t"
q_at "$NEW_BIN" "$NEW_PORT" "INSERT INTO notes (id, exp_text) SELECT g, 'After the upgrade ' || g FROM generate_series(300, 309) g" >/dev/null
check "the batched trigger embeds new rows" \
    "$(q_at "$NEW_BIN" "$NEW_PORT" "SELECT count(*) FROM notes WHERE id >= 300 AND embedding = embed_text(exp_text)::vector")" "10"
q_at "$NEW_BIN" "$NEW_PORT" "UPDATE notes SET exp_text = 'Edited after the upgrade.' WHERE id = 1" >/dev/null
check "the row trigger re-embeds an edit" \
    "$(q_at "$NEW_BIN" "$NEW_PORT" "SELECT embedding = embed_text('Edited after the upgrade.')::vector FROM notes WHERE id = 1")" "t"
q_at "$NEW_BIN" "$NEW_PORT" "UPDATE notes SET embedding = NULL WHERE id BETWEEN 100 AND 149" >/dev/null
"$NEW_BIN/psql" -X -q -h "$DIR" -p "$NEW_PORT" -U postgres -d notes_db -c "SET client_min_messages = warning" \
    -c "CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 20, model_column => 'embedding_model')" >/dev/null
check "a backfill completes on $NEW" "$(q_at "$NEW_BIN" "$NEW_PORT" "SELECT count(*) FROM notes WHERE embedding IS NULL")" "0"
check "the HNSW index answers a search" \
    "$(PGOPTIONS='-c enable_seqscan=off' q_at "$NEW_BIN" "$NEW_PORT" "SELECT id FROM notes ORDER BY embedding <=> embed_text('Progress note 7. Afebrile, ambulating.')::vector LIMIT 1")" "7"
ctl "$NEW_BIN" "$DIR/data$NEW" "$NEW_PORT" stop
echo "pg_upgrade: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
