"""Beyond one server, with PostgreSQL's own machinery and no coordinator of
ours: three clusters of this module's own (a coordinator and two shards, each
with clinembed and pgvector and its own models root holding the same model),
a partitioned notes table on the coordinator whose partitions are
postgres_fdw foreign tables on the shards, and a streaming replica of one
shard.  Covers: inserts through the coordinator embedded by the shards'
triggers; an UPDATE with the pinned form run on the shards; a backfill fanned
out to every shard at once with dblink, cancelled and resumed; a global top-k
search through the coordinator; one model identity on every shard, and a
clear failure when one differs; embed_text on a hot standby.  Needs
postgres_fdw and dblink (PostgreSQL's contrib).

    ONLY=sharded bash scripts/test.sh
    .venv/bin/python -m pytest tests/integration/test_sharded.py -k standby

Each test needs only the module's fixtures: the clusters, and for the search
and the standby, every shard backfilled.
"""

import os
import re
from pathlib import Path

import psycopg
import pytest

from conftest import (Cluster, as_postgres, models_root, one, pg_config,
                      run_in, scratch_dir, set_models_root, wait_until)

pytestmark = pytest.mark.multicluster

ROOT = Path("/tmp/clinembed-sharded")
MODEL = os.path.basename(os.environ.get("CLINEMBED_MODEL_DIR", "all-minilm-l6-v2"))
K = 5
SHARDS = ("s1", "s2")
QUERY_TEXT = "chest pain radiating to the arm"
LIVE_NOTES = 40
ARCHIVED = range(41, 1241)



def run(node, *statements):
    run_in(node, "notes_db", *statements)


def at(node, sql, *args):
    return node.one(sql, *args, dbname="notes_db")


def plan(node, sql):
    with node.connect("notes_db") as c:
        return "\n".join(r[0] for r in c.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {sql}"))


@pytest.fixture(scope="module")
def nodes():
    sharedir = pg_config("--sharedir")
    missing = [e for e in ("postgres_fdw", "dblink", "vector", "clinembed")
               if not os.path.exists(f"{sharedir}/extension/{e}.control")]
    assert not missing, f"not installed in this PostgreSQL: {missing}"
    scratch_dir(ROOT)
    nodes = {}
    try:
        for name in ("coord", *SHARDS):
            node = Cluster(ROOT, name).initdb()
            node.configure({"clinembed.models_root": models_root(ROOT, name)})
            node.start()
            node.run("CREATE DATABASE notes_db")
            nodes[name] = node
        # The shards: the notes table, embedded by a row trigger as rows arrive.
        for s in SHARDS:
            run(nodes[s], "CREATE EXTENSION vector", "CREATE EXTENSION clinembed",
                "CREATE TABLE notes (id bigint PRIMARY KEY, patient int, exp_text text, embedding vector(384), "
                "embedding_model text)",
                "CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE OF exp_text ON notes FOR EACH ROW "
                "EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model')")
        # The coordinator: notes partitioned by hash of id over foreign tables on
        # the shards; postgres_fdw may ship clinembed's and pgvector's immutable
        # functions and operators to them.
        coord = nodes["coord"]
        run(coord, "CREATE EXTENSION vector", "CREATE EXTENSION clinembed", "CREATE EXTENSION postgres_fdw",
            "CREATE EXTENSION dblink",
            "CREATE TABLE notes (id bigint, patient int, exp_text text, embedding vector(384), embedding_model text) "
            "PARTITION BY HASH (id)")
        for r, s in enumerate(SHARDS):
            run(coord, f"CREATE SERVER {s} FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host '{ROOT}', "
                       f"port '{nodes[s].port}', dbname 'notes_db', extensions 'clinembed, vector')",
                f"CREATE USER MAPPING FOR postgres SERVER {s} OPTIONS (user 'postgres')",
                f"CREATE FOREIGN TABLE notes_{s} PARTITION OF notes FOR VALUES WITH (MODULUS 2, REMAINDER {r}) "
                f"SERVER {s} OPTIONS (table_name 'notes')")
        # Notes written through the coordinator, embedded by the shards' triggers.
        run(coord, f"""INSERT INTO notes (id, patient, exp_text)
            SELECT g, g % 17, format('Progress note %s. %s', g, (ARRAY['Chest pain radiating to the left arm, troponin pending.',
                   'Afebrile overnight, tolerating diet.', 'Shortness of breath on exertion, crackles at both bases.',
                   'Fall at home, right hip pain, unable to bear weight.'])[1 + g % 4])
              FROM generate_series(1, {LIVE_NOTES}) g""")
        # An archive loaded before clinembed: rows without vectors, for the backfill.
        for s in SHARDS:
            run(nodes[s], "ALTER TABLE notes DISABLE TRIGGER notes_embed")
        run(coord, f"""INSERT INTO notes (id, patient, exp_text)
            SELECT g, g % 17, format('Archived note %s. %s', g,
                                     repeat('Vital signs stable, afebrile, ambulating with assistance. ', 1 + g % 3))
              FROM generate_series({ARCHIVED.start}, {ARCHIVED.stop - 1}) g""")
        for s in SHARDS:
            run(nodes[s], "ALTER TABLE notes ENABLE TRIGGER notes_embed")
        yield nodes
    finally:
        if not os.environ.get("KEEP"):  # KEEP=1 leaves the clusters running, to look around
            for node in nodes.values():
                node.stop()


@pytest.fixture(scope="module")
def identity(nodes):
    return at(nodes["s1"], "SELECT embed_model_id(%s)", MODEL)


def current(node, identity, where="true"):
    """Whether every row (matching `where`) holds its own note's vector, from
    the model `identity`."""
    return at(node, f"SELECT count(*) FILTER (WHERE embedding = embed_text(exp_text)::vector "
                    f"AND embedding_model = %s) = count(*) FROM notes WHERE {where}", identity)


def stale(node, identity):
    return at(node, "SELECT count(*) FROM notes WHERE embedding IS NULL OR embedding_model IS DISTINCT FROM %s",
              identity)


FANOUT_START = """
SELECT count(dblink_connect('backfill_' || srvname, srvname)) FROM pg_foreign_server WHERE srvname IN ('s1', 's2');
SELECT count(dblink_send_query('backfill_' || srvname,
       $$CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 50, model_column => 'embedding_model')$$))
  FROM pg_foreign_server WHERE srvname IN ('s1', 's2')"""
FANOUT_WAIT = """
SELECT srvname, status FROM pg_foreign_server, dblink_get_result('backfill_' || srvname, false) AS r(status text)
 WHERE srvname IN ('s1', 's2') ORDER BY srvname"""
FANOUT_END = """
SELECT count(*) FROM pg_foreign_server, dblink_get_result('backfill_' || srvname) AS r(status text)
 WHERE srvname IN ('s1', 's2');
SELECT count(dblink_disconnect('backfill_' || srvname)) FROM pg_foreign_server WHERE srvname IN ('s1', 's2')"""


def fanout(coord, cancel_s1=None):
    """Runs every shard's own embed_backfill at once from the coordinator,
    with dblink's asynchronous calls (one connection per shard); with
    `cancel_s1` = (run id, rows), cancels s1's run once a run after that id
    has done that many rows.  Returns the (shard, status) rows of the
    results."""
    with coord.connect("notes_db") as c:
        c.execute("SET client_min_messages = warning")
        c.execute(FANOUT_START)
        if cancel_s1 is not None:
            progress = ("SELECT n FROM dblink('s1', 'SELECT coalesce(max(rows_done), 0) FROM backfill_status "
                        f"WHERE run_id > {cancel_s1[0]}') AS t(n bigint)")
            assert wait_until(lambda: one(c, progress) >= cancel_s1[1], 60) is not None, "s1 made no progress"
            c.execute("SELECT dblink_cancel_query('backfill_s1')")
        rows = c.execute(FANOUT_WAIT).fetchall()
        c.execute(FANOUT_END)
        return rows


@pytest.fixture(scope="module")
def backfilled(nodes, identity):
    """Every shard's rows embedded (a backfill on each, where needed)."""
    for s in SHARDS:
        run(nodes[s], "CALL embed_backfill('notes', 'exp_text', 'embedding', model_column => 'embedding_model')")
    return nodes


def test_an_insert_through_the_coordinator_is_embedded_by_the_shards(nodes, identity):
    new = "id BETWEEN 5001 AND 5020"
    with nodes["coord"].connect("notes_db") as c:
        c.execute("INSERT INTO notes (id, patient, exp_text) SELECT g, g % 17, 'Admission note ' || g || "
                  "'. Cough and fever for three days.' FROM generate_series(5001, 5020) g")
        assert one(c, "SELECT count(*) FROM embed_stats()") == 0, "the coordinator loaded a model"
    try:
        for s in SHARDS:
            assert at(nodes[s], f"SELECT count(*) FROM notes WHERE {new}") > 0, f"no rows on {s}"
            assert current(nodes[s], identity, new), f"{s}'s trigger did not embed them"
        assert at(nodes["coord"], f"SELECT count(*) FROM notes WHERE {new}") == 20
    finally:
        run(nodes["coord"], f"DELETE FROM notes WHERE {new}")


def test_the_pinned_form_runs_on_the_shards(nodes, identity):
    # postgres_fdw ships it in the remote UPDATE; the STABLE embed_text would
    # make the coordinator fetch every row and embed it itself.
    coord = nodes["coord"]
    update = (f"UPDATE notes SET embedding = embed_text_pinned(exp_text, '{identity}')::vector(384), "
              f"embedding_model = '{identity}' WHERE id <= {LIVE_NOTES}")
    shipped = f"Remote SQL: UPDATE public.notes SET embedding = public.embed_text_pinned(exp_text, '{identity}'::text)"
    assert plan(coord, update).count(shipped) == 2
    stable = plan(coord, "UPDATE notes SET embedding = embed_text(exp_text)::vector(384)")
    assert stable.count("Remote SQL: UPDATE") == 2
    assert len(re.findall(r"Remote SQL: SELECT .* FOR UPDATE", stable)) == 2
    run(coord, f"UPDATE notes SET embedding = NULL, embedding_model = NULL WHERE id <= {LIVE_NOTES}")
    with coord.connect("notes_db") as c:
        c.execute(update)
        assert one(c, "SELECT count(*) FROM embed_stats()") == 0, "the coordinator embedded"
    for s in SHARDS:
        assert current(nodes[s], identity, f"id <= {LIVE_NOTES}"), s


def test_a_backfill_fanned_out_with_dblink_is_cancelled_and_resumed(nodes, identity):
    s1, s2 = nodes["s1"], nodes["s2"]
    for s in SHARDS:  # the archive unembedded, whatever ran before
        run(nodes[s], f"UPDATE notes SET embedding = NULL, embedding_model = NULL WHERE id >= {ARCHIVED.start}")
    before = {s: stale(nodes[s], identity) for s in SHARDS}
    assert all(n > 0 for n in before.values()), f"both shards need work: {before}"
    run_before = {s: at(nodes[s], "SELECT coalesce(max(run_id), 0) FROM backfill_runs") for s in SHARDS}

    fanout(nodes["coord"], cancel_s1=(run_before["s1"], 100))
    latest = "SELECT {} FROM backfill_status ORDER BY run_id DESC LIMIT 1"
    assert at(s1, latest.format("state || ' ' || (rows_done < rows_total)")) == "interrupted true"
    assert at(s2, latest.format("state || ' ' || (rows_done = rows_total)")) == "done true"
    # the two runs overlapped in time: the fan-out ran them at once
    span = "SELECT started_at, updated_at FROM backfill_status WHERE run_id > %s ORDER BY run_id LIMIT 1"
    with s1.connect("notes_db") as c1, s2.connect("notes_db") as c2:
        a = c1.execute(span, (run_before["s1"],)).fetchone()
        b = c2.execute(span, (run_before["s2"],)).fetchone()
    assert a[0] < b[1] and b[0] < a[1], f"s1 ran {a}, s2 ran {b}"
    left = stale(s1, identity)
    assert 0 < left < before["s1"], "the cancelled shard kept the batches it committed"

    results = fanout(nodes["coord"])
    assert results == [("s1", "CALL"), ("s2", "CALL")]
    assert at(s1, latest.format("state || ' ' || rows_total")) == f"done {left}", "s1 resumed with what was left"
    assert at(s2, latest.format("state || ' ' || rows_total")) == "done 0", "s2 had nothing left"
    for s in SHARDS:
        assert current(nodes[s], identity), f"every row on {s} holds its own note's vector"


def query_vector(identity):
    return f"embed_text_pinned('{QUERY_TEXT}', '{identity}')::vector(384)"


def top_k(node, identity, relation="notes"):
    return at(node, f"SELECT string_agg(id::text, ',' ORDER BY d, id) FROM ("
                    f"SELECT id, embedding <=> {query_vector(identity)} AS d FROM {relation} ORDER BY 2, 1 LIMIT {K}) t")


def test_a_global_top_k_through_the_coordinator(backfilled, identity):
    # Each shard returns its own k nearest (ORDER BY ... LIMIT in the Remote
    # SQL), the coordinator merges them, and the query vector is computed
    # once, on the coordinator, when the pinned form's constant call is
    # folded at planning.
    coord = backfilled["coord"]
    run(coord, """CREATE OR REPLACE FUNCTION nearest_notes(query vector, k int) RETURNS TABLE (id bigint, distance float8)
        LANGUAGE sql STABLE AS $$
            SELECT * FROM ((SELECT id, embedding <=> query FROM notes_s1 ORDER BY 2 LIMIT k)
                 UNION ALL (SELECT id, embedding <=> query FROM notes_s2 ORDER BY 2 LIMIT k)) top
             ORDER BY 2, 1 LIMIT k $$""")
    nearest = f"SELECT id FROM nearest_notes({query_vector(identity)}, {K})"
    explained = plan(coord, nearest)
    remote = (r"Remote SQL: SELECT id, embedding FROM public.notes ORDER BY \(embedding OPERATOR\(public.<=>\) "
              rf"'\[.*\]'\) ASC NULLS LAST LIMIT {K}::bigint")
    assert len(re.findall(remote, explained)) == 2, explained
    assert "embed_text_pinned" not in "".join(re.findall(r"Remote SQL:.*", explained)), "the shards got the call"
    with coord.connect("notes_db") as c:
        top = one(c, f"SELECT string_agg(id::text, ',' ORDER BY distance, id) "
                     f"FROM nearest_notes({query_vector(identity)}, {K})")
        assert one(c, "SELECT texts FROM embed_stats()") == 1, "the query vector is computed once"
    # The truth: every row fetched to the coordinator and ranked there.
    run(coord, "DROP TABLE IF EXISTS every_note", "CREATE TABLE every_note AS SELECT id, embedding FROM notes")
    assert top == top_k(coord, identity, "every_note")
    assert at(coord, f"SELECT count(DISTINCT tableoid) FROM notes WHERE id = ANY('{{{top}}}'::bigint[])") == 2, \
        "the global top k draws on both shards"
    assert top_k(coord, identity) == top, "the same query on the partitioned table agrees"


IDENTITIES = ("SELECT count(DISTINCT id) FROM pg_foreign_server s, dblink(s.srvname, "
              f"$$SELECT embed_model_id('{MODEL}')$$) AS t(id text) WHERE s.srvname IN ('s1', 's2')")



def test_a_shard_with_another_model_fails_the_pinned_update(nodes, identity):
    # One model identity on every shard, checked from the coordinator; a
    # shard with another model under the same name fails the pinned UPDATE,
    # naming both identities, and nothing is written anywhere.
    coord, s1, s2 = nodes["coord"], nodes["s1"], nodes["s2"]
    assert at(coord, IDENTITIES) == 1
    other = models_root(ROOT, "other")
    with open(other / MODEL / "clinembed.json", "w") as f:
        f.write('{"pooling": "mean", "normalize": true}\n')
    set_models_root(s2, other)
    try:
        assert wait_until(lambda: at(coord, IDENTITIES) == 2, 10) is not None, "the check sees two identities"
        before = at(s1, "SELECT md5(string_agg(embedding::text, ',' ORDER BY id)) FROM notes")
        with coord.connect("notes_db") as c, pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
            c.execute(f"UPDATE notes SET embedding = embed_text_pinned(exp_text, '{identity}')::vector(384), "
                      f"embedding_model = '{identity}'")
        assert e.value.diag.message_primary == f'installed model "{MODEL}" is not the pinned model'
        assert e.value.diag.message_detail.startswith(
            f"The call pins {identity}; the model installed under that name is {MODEL}@")
        assert at(s1, "SELECT md5(string_agg(embedding::text, ',' ORDER BY id)) FROM notes") == before, \
            "the failed UPDATE wrote nothing on the other shard"
    finally:
        set_models_root(s2, None)
    assert wait_until(lambda: at(coord, IDENTITIES) == 1, 10) is not None, "one identity again"


def test_a_hot_standby_embeds_and_searches_and_writes_nothing(backfilled, identity):
    s1 = backfilled["s1"]
    standby = Cluster(ROOT, "standby")
    as_postgres([str(standby.bin / "pg_basebackup"), "-h", str(ROOT), "-p", str(s1.port), "-U", "postgres",
                 "-D", str(standby.data), "-R", "-X", "stream"])
    standby.configure({"clinembed.models_root": models_root(ROOT, "standby")})
    standby.start()
    try:
        assert at(standby, "SELECT pg_is_in_recovery()") is True
        same = "SELECT md5(embed_text(%s)::text)"
        assert at(standby, same, QUERY_TEXT) == at(s1, same, QUERY_TEXT)
        assert top_k(standby, identity) == top_k(s1, identity)
        with standby.connect("notes_db") as c, pytest.raises(psycopg.errors.ReadOnlySqlTransaction) as e:
            c.execute("CALL embed_backfill('notes', 'exp_text', 'embedding')")
        assert e.value.diag.message_primary == "cannot backfill on a server in recovery"
    finally:
        if not os.environ.get("KEEP"):
            standby.stop()
