#!/usr/bin/env bash
# Beyond one server, with PostgreSQL's own machinery and no coordinator of
# ours: three clusters of its own (a coordinator and two shards, each with
# clinembed and pgvector and its own models root holding the same model), a
# partitioned notes table on the coordinator whose partitions are
# postgres_fdw foreign tables on the shards, and a streaming replica of one
# shard.  Covers: inserts through the coordinator embedded by the shards'
# triggers; an UPDATE with the pinned form run on the shards; a backfill
# fanned out to every shard at once with dblink, cancelled and resumed; a
# global top-k search through the coordinator; one model identity on every
# shard, and a clear failure when one differs; embed_text on a hot standby.
# Needs postgres_fdw and dblink (PostgreSQL's contrib).
# Prints "ok - ..." / "not ok - ..." lines and "sharded: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
. tests/integration/lib.sh

DIR=/tmp/clinembed-sharded
MODEL=$DEFAULT_MODEL
K=5
finish() { # KEEP=1 leaves the clusters running, to look around
    [ -n "${KEEP:-}" ] || for n in coord s1 s2 standby; do
        [ -f "$DIR/$n/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$DIR/$n" -m fast -w stop >/dev/null 2>&1
    done
    echo "sharded: $PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
}
for ext in postgres_fdw dblink vector clinembed; do
    if [ ! -f "$("$PG_CONFIG" --sharedir)/extension/$ext.control" ]; then
        echo "not ok - extension $ext is installed in PostgreSQL $PG"; FAIL=$((FAIL + 1)); finish; exit 1
    fi
done

declare -A PORT
# at NODE SQL...: psql on a node's notes_db, one session, unaligned output.
at() {
    local node=$1; shift
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$DIR" -p "${PORT[$node]}" -U postgres -d notes_db "${args[@]}"
}
start() { # node [postgres -c options]
    local node=$1; shift
    local opts="-p ${PORT[$node]} -k $DIR -c listen_addresses=''"
    for o in "$@"; do opts="$opts -c $o"; done
    as_pg env -u RUST_BACKTRACE "$PG_BIN/pg_ctl" -D "$DIR/$node" -l "$DIR/$node.log" -o "$opts" -w start >/dev/null
}

for n in coord s1 s2 standby; do
    [ -f "$DIR/$n/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$DIR/$n" -m immediate -w stop >/dev/null 2>&1
done
rm -rf "$DIR" && install -d -m 0700 -o postgres -g postgres "$DIR"
[ "$(id -u)" -eq 0 ] || chmod 0700 "$DIR"
# Each node reads installed models from its own root: the same files here,
# as a deployment installs the same model on every node.
installed=$(default_model_dir)
for n in coord s1 s2 standby; do
    mkdir -p "$DIR/models-$n" && cp -r "$installed" "$DIR/models-$n/$MODEL"
done
chown -R postgres:postgres "$DIR" 2>/dev/null || true
for n in coord s1 s2; do
    PORT[$n]=$(free_port)
    as_pg "$PG_BIN/initdb" -D "$DIR/$n" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$DIR/initdb-$n.log" 2>&1
    # In the configuration file, where ALTER SYSTEM can override it (a
    # command-line setting would win over both).
    echo "clinembed.models_root = '$DIR/models-$n'" >> "$DIR/$n/postgresql.conf"
    start "$n"
    "$PG_BIN/psql" -X -q -h "$DIR" -p "${PORT[$n]}" -U postgres -c "CREATE DATABASE notes_db"
done
PORT[standby]=$(free_port)

# The shards: the notes table, embedded by a row trigger as rows arrive.
for n in s1 s2; do
    at "$n" "SET client_min_messages = warning" "CREATE EXTENSION vector" "CREATE EXTENSION clinembed" \
        "CREATE TABLE notes (id bigint PRIMARY KEY, patient int, exp_text text, embedding vector(384), embedding_model text)" \
        "CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE OF exp_text ON notes
             FOR EACH ROW EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model')"
done
# The coordinator: notes partitioned by hash of id over foreign tables on the
# shards; postgres_fdw may ship clinembed's and pgvector's immutable
# functions and operators to them.
at coord "SET client_min_messages = warning" \
    "CREATE EXTENSION vector" "CREATE EXTENSION clinembed" "CREATE EXTENSION postgres_fdw" "CREATE EXTENSION dblink" \
    "CREATE TABLE notes (id bigint, patient int, exp_text text, embedding vector(384), embedding_model text) PARTITION BY HASH (id)"
r=0
for n in s1 s2; do
    at coord "CREATE SERVER $n FOREIGN DATA WRAPPER postgres_fdw
                  OPTIONS (host '$DIR', port '${PORT[$n]}', dbname 'notes_db', extensions 'clinembed, vector')" \
        "CREATE USER MAPPING FOR postgres SERVER $n OPTIONS (user 'postgres')" \
        "CREATE FOREIGN TABLE notes_$n PARTITION OF notes FOR VALUES WITH (MODULUS 2, REMAINDER $r)
             SERVER $n OPTIONS (table_name 'notes')"
    r=$((r + 1))
done
ID=$(at s1 "SELECT embed_model_id('$MODEL')")

# 1. An INSERT through the coordinator lands on a shard and is embedded there
# by the shard's trigger; the coordinator loads no model.
stats=$(at coord "INSERT INTO notes (id, patient, exp_text)
                  SELECT g, g % 17, format('Progress note %s. %s', g, (ARRAY['Chest pain radiating to the left arm, troponin pending.',
                         'Afebrile overnight, tolerating diet.', 'Shortness of breath on exertion, crackles at both bases.',
                         'Fall at home, right hip pain, unable to bear weight.'])[1 + g % 4])
                    FROM generate_series(1, 40) g" \
                 "SELECT count(*) FROM embed_stats()")
check "an INSERT through the coordinator loads no model there" "$stats" "0"
for n in s1 s2; do
    check "rows inserted through the coordinator are on $n and embedded by its trigger" \
        "$(at "$n" "SELECT count(*) > 0 AND count(*) = count(*) FILTER (WHERE embedding = embed_text(exp_text)::vector
                                                                      AND embedding_model = '$ID') FROM notes")" "t"
done
check "every row reached a shard" "$(at coord "SELECT count(*) FROM notes")" "40"

# An archive loaded before clinembed: rows without vectors, for the backfill.
for n in s1 s2; do at "$n" "ALTER TABLE notes DISABLE TRIGGER notes_embed"; done
at coord "INSERT INTO notes (id, patient, exp_text)
          SELECT g, g % 17, format('Archived note %s. %s', g, repeat('Vital signs stable, afebrile, ambulating with assistance. ', 1 + g % 3))
            FROM generate_series(41, 1240) g"
for n in s1 s2; do at "$n" "ALTER TABLE notes ENABLE TRIGGER notes_embed"; done

# 2. The pinned form runs on the shards: postgres_fdw ships it in the remote
# UPDATE (the STABLE embed_text would make the coordinator fetch every row
# and embed it itself).
update="UPDATE notes SET embedding = embed_text_pinned(exp_text, '$ID')::vector(384), embedding_model = '$ID' WHERE id <= 40"
plan=$(at coord "EXPLAIN (VERBOSE, COSTS OFF) $update")
check "EXPLAIN VERBOSE shows the pinned form in the Remote SQL of both shards" \
    "$(grep -c "Remote SQL: UPDATE public.notes SET embedding = public.embed_text_pinned(exp_text, '$ID'::text)" <<<"$plan")" "2"
plan=$(at coord "EXPLAIN (VERBOSE, COSTS OFF) UPDATE notes SET embedding = embed_text(exp_text)::vector(384)")
check "the STABLE embed_text is not shipped: the coordinator would fetch the rows" \
    "$(grep -c 'Remote SQL: UPDATE' <<<"$plan") $(grep -c 'Remote SQL: SELECT .* FOR UPDATE' <<<"$plan")" "2 2"
at coord "UPDATE notes SET embedding = NULL, embedding_model = NULL WHERE id <= 40"
stats=$(at coord "$update" "SELECT count(*) FROM embed_stats()")
check "the coordinator's embed_stats() shows no inference after the UPDATE" "$stats" "0"
for n in s1 s2; do
    check "the UPDATE through the coordinator embedded $n's rows on $n" \
        "$(at "$n" "SELECT count(*) FILTER (WHERE embedding = embed_text(exp_text)::vector AND embedding_model = '$ID')
                      = count(*) FROM notes WHERE id <= 40")" "t"
done

# 3. A backfill on every shard at once, fanned out from the coordinator with
# dblink's asynchronous calls: one connection per shard, each running the
# shard's own embed_backfill.  Shard s1's run is cancelled part way, then the
# same fan-out resumes it.
FANOUT_START="SELECT count(dblink_connect('backfill_' || srvname, srvname)) FROM pg_foreign_server WHERE srvname IN ('s1', 's2');
SELECT count(dblink_send_query('backfill_' || srvname,
       \$\$CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 50, model_column => 'embedding_model')\$\$))
  FROM pg_foreign_server WHERE srvname IN ('s1', 's2');"
FANOUT_WAIT="SELECT srvname, status FROM pg_foreign_server, dblink_get_result('backfill_' || srvname, false) AS r(status text)
 WHERE srvname IN ('s1', 's2') ORDER BY srvname;
SELECT count(*) FROM pg_foreign_server, dblink_get_result('backfill_' || srvname) AS r(status text) WHERE srvname IN ('s1', 's2');
SELECT count(dblink_disconnect('backfill_' || srvname)) FROM pg_foreign_server WHERE srvname IN ('s1', 's2');"
stale() { at "$1" "SELECT count(*) FROM notes WHERE embedding IS NULL OR embedding_model IS DISTINCT FROM '$ID'"; }
before_s1=$(stale s1) before_s2=$(stale s2)
"$PG_BIN/psql" -X -q -At -h "$DIR" -p "${PORT[coord]}" -U postgres -d notes_db >"$DIR/fanout1.out" 2>&1 <<SQL
SET client_min_messages = warning;
$FANOUT_START
DO \$\$
BEGIN
    FOR i IN 1..1200 LOOP
        EXIT WHEN (SELECT n FROM dblink('s1', 'SELECT rows_done FROM backfill_status ORDER BY run_id DESC LIMIT 1') AS t(n bigint)) >= 100;
        PERFORM pg_sleep(0.05);
    END LOOP;
END \$\$;
SELECT dblink_cancel_query('backfill_s1');
$FANOUT_WAIT
SQL
first=$(at s1 "SELECT state, rows_done < rows_total FROM backfill_status ORDER BY run_id DESC LIMIT 1")
check "the cancelled shard's run is interrupted part way" "$first" "interrupted|t"
check "the other shard's run finished" "$(at s2 "SELECT state, rows_done = rows_total FROM backfill_status ORDER BY run_id DESC LIMIT 1")" "done|t"
check "both shards had work" "$(( before_s1 > 0 && before_s2 > 0 ))" "1"
# The two runs overlapped in time: the fan-out ran them at once.
s1_span=$(at s1 "SELECT extract(epoch FROM started_at), extract(epoch FROM updated_at) FROM backfill_status ORDER BY run_id LIMIT 1")
s2_span=$(at s2 "SELECT extract(epoch FROM started_at), extract(epoch FROM updated_at) FROM backfill_status ORDER BY run_id LIMIT 1")
check "the shards' backfills ran at the same time" \
    "$(python3 -c "a=[float(x) for x in '$s1_span'.split('|')]; b=[float(x) for x in '$s2_span'.split('|')]; print(a[0] < b[1] and b[0] < a[1])")" "True"
left_s1=$(stale s1)
check "the cancelled shard kept the batches it committed" "$(( left_s1 > 0 && left_s1 < before_s1 ))" "1"
"$PG_BIN/psql" -X -q -At -h "$DIR" -p "${PORT[coord]}" -U postgres -d notes_db >"$DIR/fanout2.out" 2>&1 <<SQL
SET client_min_messages = warning;
$FANOUT_START
$FANOUT_WAIT
SQL
check "the second fan-out reports CALL from both shards" "$(grep -c '|CALL$' "$DIR/fanout2.out")" "2"
check "the resumed run on s1 embedded only what was left" \
    "$(at s1 "SELECT state, rows_total FROM backfill_status ORDER BY run_id DESC LIMIT 1")" "done|$left_s1"
check "s2 had nothing left" "$(at s2 "SELECT state, rows_total FROM backfill_status ORDER BY run_id DESC LIMIT 1")" "done|0"
for n in s1 s2; do
    check "every row on $n holds its own note's vector after the fan-out" \
        "$(at "$n" "SELECT count(*) FILTER (WHERE embedding = embed_text(exp_text)::vector AND embedding_model = '$ID') = count(*) FROM notes")" "t"
done

# 4. A similarity search through the coordinator: each shard returns its own
# k nearest (ORDER BY ... LIMIT in the Remote SQL), the coordinator merges
# them, and the query vector is computed once, on the coordinator, when the
# pinned form's constant call is folded at planning.
at coord "CREATE FUNCTION nearest_notes(query vector, k int) RETURNS TABLE (id bigint, distance float8)
          LANGUAGE sql STABLE AS \$\$
              SELECT * FROM ((SELECT id, embedding <=> query FROM notes_s1 ORDER BY 2 LIMIT k)
                   UNION ALL (SELECT id, embedding <=> query FROM notes_s2 ORDER BY 2 LIMIT k)) top
               ORDER BY 2, 1 LIMIT k \$\$"
QUERY="embed_text_pinned('chest pain radiating to the arm', '$ID')::vector(384)"
plan=$(at coord "EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM nearest_notes($QUERY, $K)")
check "each shard's Remote SQL orders by distance and limits to k" \
    "$(grep -cE "Remote SQL: SELECT id, embedding FROM public.notes ORDER BY \(embedding OPERATOR\(public.<=>\) '\[.*\]'\) ASC NULLS LAST LIMIT $K::bigint" <<<"$plan")" "2"
check "the shards receive the query vector, not the call" "$(grep -c 'Remote SQL:.*embed_text_pinned' <<<"$plan")" "0"
out=$(at coord "SELECT string_agg(id::text, ',' ORDER BY distance, id) FROM nearest_notes($QUERY, $K)" \
               "SELECT texts FROM embed_stats()")
top=$(head -n 1 <<<"$out")
check "the query vector is computed once on the coordinator" "$(tail -n 1 <<<"$out")" "1"
# The truth: every row fetched to the coordinator and ranked there.
truth=$(at coord "CREATE TEMP TABLE every_note AS SELECT id, embedding FROM notes" \
                 "SELECT string_agg(id::text, ',' ORDER BY d, id) FROM (
                      SELECT id, embedding <=> $QUERY AS d FROM every_note ORDER BY 2, 1 LIMIT $K) t")
check "the top $K through the coordinator is the global top $K" "$top" "$truth"
check "the global top $K draws on both shards" \
    "$(at coord "SELECT count(DISTINCT tableoid) FROM notes WHERE id = ANY('{$top}'::bigint[])")" "2"
plain=$(at coord "SELECT string_agg(id::text, ',' ORDER BY d, id) FROM (
                      SELECT id, embedding <=> $QUERY AS d FROM notes ORDER BY 2, 1 LIMIT $K) t")
check "the same query on the partitioned table agrees" "$plain" "$truth"

# 5. One model identity on every shard, checked from the coordinator; a shard
# with another model under the same name fails the pinned UPDATE, naming both
# identities, and nothing is written anywhere.
IDENTITIES="SELECT count(DISTINCT id) FROM pg_foreign_server s,
    dblink(s.srvname, \$\$SELECT embed_model_id('$MODEL')\$\$) AS t(id text) WHERE s.srvname IN ('s1', 's2')"
check "every shard has the coordinator's model identity" "$(at coord "$IDENTITIES")" "1"
# Shard s2 now reads its models from a root where the model normalizes.
mkdir -p "$DIR/models-other" && cp -r "$installed" "$DIR/models-other/$MODEL"
printf '{"pooling": "mean", "normalize": true}\n' > "$DIR/models-other/$MODEL/clinembed.json"
chown -R postgres:postgres "$DIR/models-other" 2>/dev/null || true
at s2 "LOAD 'clinembed'" "ALTER SYSTEM SET clinembed.models_root = '$DIR/models-other'" "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
check "the identity check sees two identities" "$(at coord "$IDENTITIES")" "2"
before=$(at s1 "SELECT md5(string_agg(embedding::text, ',' ORDER BY id)) FROM notes")
err=$("$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -v VERBOSITY=verbose -h "$DIR" -p "${PORT[coord]}" -U postgres -d notes_db \
      -c "UPDATE notes SET embedding = embed_text_pinned(exp_text, '$ID')::vector(384), embedding_model = '$ID'" 2>&1)
check "the pinned UPDATE fails with the shard's 55000" "$(grep -c "ERROR:  55000: installed model \"$MODEL\" is not the pinned model" <<<"$err")" "1"
check "the error names the pinned identity and the shard's" \
    "$(grep -c "DETAIL:  The call pins $ID; the model installed under that name is $MODEL@" <<<"$err")" "1"
check "the failed UPDATE wrote nothing on the other shard" \
    "$(at s1 "SELECT md5(string_agg(embedding::text, ',' ORDER BY id)) FROM notes")" "$before"
at s2 "ALTER SYSTEM RESET clinembed.models_root" "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
check "with the model restored, one identity again" "$(at coord "$IDENTITIES")" "1"

# 6. A hot standby of shard s1 embeds queries and searches; it writes nothing.
as_pg "$PG_BIN/pg_basebackup" -h "$DIR" -p "${PORT[s1]}" -U postgres -D "$DIR/standby" -R -X stream >"$DIR/basebackup.log" 2>&1
sed -i "s|^clinembed.models_root = .*|clinembed.models_root = '$DIR/models-standby'|" "$DIR/standby/postgresql.conf"
start standby
check "the standby is in recovery" "$(at standby "SELECT pg_is_in_recovery()")" "t"
check "embed_text on the standby equals the primary's" \
    "$(at standby "SELECT md5(embed_text('chest pain radiating to the arm')::text)")" \
    "$(at s1 "SELECT md5(embed_text('chest pain radiating to the arm')::text)")"
check "a search on the standby equals the primary's" \
    "$(at standby "SELECT string_agg(id::text, ',' ORDER BY d, id) FROM (SELECT id, embedding <=> $QUERY AS d FROM notes ORDER BY 2, 1 LIMIT $K) t")" \
    "$(at s1 "SELECT string_agg(id::text, ',' ORDER BY d, id) FROM (SELECT id, embedding <=> $QUERY AS d FROM notes ORDER BY 2, 1 LIMIT $K) t")"
err=$("$PG_BIN/psql" -X -q -At -v VERBOSITY=verbose -h "$DIR" -p "${PORT[standby]}" -U postgres -d notes_db \
      -c "CALL embed_backfill('notes', 'exp_text', 'embedding')" 2>&1)
check "a backfill on the standby is refused as a write (25006)" "$(grep -c 'ERROR:  25006' <<<"$err")" "1"
finish
