"""clinembed on Citus: a coordinator and two workers of this module's own,
each with Citus, pgvector, clinembed and its own models root holding the
same model, and hash-distributed notes tables.  Covers: inserts through the
coordinator embedded on the workers by the shards' row, batched and queue
triggers (queue workers on each worker node drain their own shards); the
pinned UPDATE run on the workers with no inference on the coordinator; a
backfill of every shard at once with run_command_on_shards, cancelled and
resumed, every row written exactly once; a global top-k through the
coordinator equal to a brute-force ranking, and embed_search on a
distributed table; a worker with another model identity found before
anything is written; a worker stopped and restarted during a backfill and
during a queue drain.  Needs Citus (scripts/setup.sh builds it from
../shared/vendor for PostgreSQL 16 to 18); skipped where it is not installed.

    ONLY=citus PG=18 bash scripts/test.sh
    PG_BIN=/opt/clinembed/postgresql-18/bin .venv/bin/python -m pytest tests/integration/test_citus.py -k pinned

Each test needs only the module's fixtures.
"""

import os
import re
import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import Cluster, models_root, one, pg_config, run_in, scratch_dir, set_models_root, wait_until

pytestmark = pytest.mark.multicluster

ROOT = Path("/tmp/clinembed-citus")
MODEL = os.path.basename(os.environ.get("CLINEMBED_MODEL_DIR", "all-minilm-l6-v2"))
WORKERS = ("w1", "w2")
SHARDS = 8
K = 5
QUERY_TEXT = "chest pain radiating to the arm"
# A column that counts the committed writes of each row's vector (a trigger
# of the test's own): a vector written twice, or not at all, shows.
COUNTED = """CREATE FUNCTION count_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.embedding IS NOT NULL AND OLD.embedding IS NULL THEN NEW.writes := OLD.writes + 1; END IF;
        RETURN NEW;
    END $$"""
TABLE = "(id bigint PRIMARY KEY, patient int, exp_text text, embedding vector(384), embedding_model text, " \
        "writes int NOT NULL DEFAULT 0)"


def citus_installed():
    sharedir = pg_config("--sharedir")
    return os.path.exists(f"{sharedir}/extension/citus.control")


if not citus_installed():
    pytest.skip("Citus is not installed in this PostgreSQL (scripts/setup.sh builds it from ../shared/vendor "
                "for PostgreSQL 16 to 18)", allow_module_level=True)



def run(node, *statements):
    run_in(node, "notes_db", *statements)


def at(node, sql, *args):
    return node.one(sql, *args, dbname="notes_db")


def on_workers(coord, sql):
    """What `sql` returns on each worker node, by port, run the Citus way."""
    with coord.connect("notes_db") as c:
        rows = c.execute("SELECT nodeport, success, result FROM run_command_on_workers(%s) ORDER BY 1",
                         (sql,)).fetchall()
    assert all(ok for _, ok, _ in rows), rows
    return {port: result for port, _, result in rows}


def on_shards(coord, table, sql):
    """What `sql` (with %s for the shard's name) returns on each shard."""
    with coord.connect("notes_db") as c:
        rows = c.execute("SELECT shardid, success, result FROM run_command_on_shards(%s, %s) ORDER BY 1",
                         (table, sql)).fetchall()
    assert all(ok for _, ok, _ in rows), rows
    return [result for _, _, result in rows]


def current(coord, table, identity, where="true"):
    """Whether every row of `table` (matching `where`) holds its own note's
    vector from model `identity`, checked on each shard by its worker."""
    check = (f"SELECT count(*) FILTER (WHERE embedding = embed_text(exp_text)::vector AND embedding_model = "
             f"'{identity}') = count(*) FROM %s WHERE {where}")
    return set(on_shards(coord, table, check)) == {"t"}


@pytest.fixture(scope="module")
def nodes():
    scratch_dir(ROOT)
    nodes = {}
    try:
        for name in ("coord", *WORKERS):
            node = Cluster(ROOT, name).initdb()
            # Citus commits a write to shards on several nodes with two-phase
            # commit; triggers on distributed tables are allowed on the
            # coordinator (citus.enable_unsafe_triggers, set apart from
            # CREATE TRIGGER: Citus refuses the two in one query string).
            # clinembed preloaded too: each node starts its queue workers at
            # server start, so keys queued before a restart are drained.
            node.configure({"shared_preload_libraries": "citus,clinembed", "max_prepared_transactions": 20,
                            "citus.enable_unsafe_triggers": "on",
                            "clinembed.models_root": models_root(ROOT, name)})
            node.start()
            node.run("CREATE DATABASE notes_db")
            run(node, "CREATE EXTENSION citus")
            nodes[name] = node
        coord = nodes["coord"]
        with coord.connect("notes_db") as c:
            c.execute("SELECT citus_set_coordinator_host(%s, %s)", (str(ROOT), coord.port))
            for w in WORKERS:
                c.execute("SELECT citus_add_node(%s, %s)", (str(ROOT), nodes[w].port))
        # Created on the coordinator, Citus creates them on every worker too.
        run(coord, "CREATE EXTENSION vector", "CREATE EXTENSION clinembed", COUNTED)
        for table, trigger in (
                ("notes", "BEFORE INSERT OR UPDATE OF exp_text ON notes FOR EACH ROW "
                          "EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model')"),
                ("batch_notes", "AFTER INSERT ON batch_notes REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                                "EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model')"),
                ("queued_notes", "BEFORE INSERT OR UPDATE ON queued_notes FOR EACH ROW "
                                 "EXECUTE FUNCTION embed_queue_trigger('exp_text', 'embedding', 'embedding_model')")):
            run(coord, f"CREATE TABLE {table} {TABLE}",
                f"SELECT create_distributed_table('{table}', 'id', shard_count => {SHARDS})",
                f"CREATE TRIGGER {table}_embed {trigger}",
                f"CREATE TRIGGER {table}_writes BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION count_write()")
        yield nodes
    finally:
        if not os.environ.get("KEEP"):  # KEEP=1 leaves the clusters running, to look around
            for node in nodes.values():
                node.stop()


@pytest.fixture(scope="module")
def identity(nodes):
    return at(nodes["w1"], "SELECT embed_model_id(%s)", MODEL)


NOTE = ("format('Progress note %s. %s', g, (ARRAY['Chest pain radiating to the left arm, troponin pending.', "
        "'Afebrile overnight, tolerating diet.', 'Shortness of breath on exertion, crackles at both bases.', "
        "'Fall at home, right hip pain, unable to bear weight.'])[1 + g % 4])")


def insert(coord, table, ids):
    run(coord, f"INSERT INTO {table} (id, patient, exp_text) SELECT g, g % 17, {NOTE} "
               f"FROM generate_series({ids.start}, {ids.stop - 1}) g")


def test_inserts_through_the_coordinator_are_embedded_on_the_workers(nodes, identity):
    coord = nodes["coord"]
    # the row trigger embeds before the INSERT writes; the batched trigger
    # after it, with one UPDATE of the statement's rows
    for table, writes in (("notes", 0), ("batch_notes", 1)):
        with coord.connect("notes_db") as c:
            c.execute(f"INSERT INTO {table} (id, patient, exp_text) SELECT g, g % 17, {NOTE} "
                      "FROM generate_series(1, 60) g")
            assert one(c, "SELECT count(*) FROM embed_stats()") == 0, "the coordinator loaded a model"
        assert at(coord, f"SELECT count(*) FROM {table} WHERE embedding IS NOT NULL") == 60, table
        assert current(coord, table, identity), f"{table}: the shards' triggers embedded every row"
        assert at(coord, "SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name = %s::regclass",
                  table) == 2, "the shards are on both workers"
        assert at(coord, f"SELECT count(*) FROM {table} WHERE writes <> {writes}") == 0, "each vector written once"


def test_queue_workers_on_each_worker_drain_their_own_shards(nodes, identity):
    # The coordinator's write reaches the shards on both workers in one
    # transaction, committed with two-phase commit: the queue trigger queues
    # each key on the shard's own node, and that node's worker (woken at
    # PREPARE, finding the keys at COMMIT PREPARED) embeds it.
    coord = nodes["coord"]
    insert(coord, "queued_notes", range(1, 201))
    assert wait_until(lambda: at(coord, "SELECT count(*) FROM queued_notes WHERE embedding IS NULL") == 0, 120) \
        is not None, "the queue was not drained"
    assert current(coord, "queued_notes", identity)
    assert at(coord, "SELECT count(*) FROM queued_notes WHERE writes <> 1") == 0, "each row written once"
    done = on_workers(coord, "SELECT coalesce(sum(rows), 0) FROM embed_queue_done")
    assert all(int(n) > 0 for n in done.values()) and sum(int(n) for n in done.values()) == 200, done
    assert at(coord, "SELECT count(*) FROM embed_queue") == 0, "nothing queued on the coordinator"
    assert at(coord, "SELECT count(*) FROM embed_queue_done") == 0, "no worker of the coordinator's wrote"
    # Seen from the coordinator, each worker's queue status (on a worker
    # itself, Citus hides shards from a psql session's catalog reads).
    status = on_workers(coord, "SELECT coalesce(sum(pending), 0) FROM embed_queue_status")
    assert set(status.values()) == {"0"}, status


def test_the_pinned_update_runs_on_the_workers(nodes, identity):
    coord = nodes["coord"]
    update = (f"UPDATE notes SET embedding = embed_text_pinned(exp_text, '{identity}')::vector(384), "
              f"embedding_model = '{identity}'")
    with coord.connect("notes_db") as c:
        plan = "\n".join(r[0] for r in c.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {update}"))
        assert f"Task Count: {SHARDS}" in plan
        assert re.search(rf"Query: UPDATE public\.notes_\d+ notes SET embedding = \(public\.embed_text_pinned\("
                         rf"exp_text, '{re.escape(identity)}'::text\)\)", plan), plan
        c.execute("UPDATE notes SET embedding = NULL, embedding_model = NULL, writes = 0")
        c.execute(update)
        assert one(c, "SELECT count(*) FROM embed_stats()") == 0, "the coordinator embedded"
        # The STABLE embed_text of a column cannot run on the workers: Citus
        # refuses it rather than embedding on the coordinator.
        with pytest.raises(psycopg.errors.FeatureNotSupported) as e:
            c.execute("UPDATE notes SET embedding = embed_text(exp_text)::vector(384)")
        assert "STABLE functions used in UPDATE queries cannot be called with column references" in str(e.value)
    assert current(coord, "notes", identity)
    assert at(coord, "SELECT count(*) FROM notes WHERE writes <> 1") == 0


# A backfill per worker node, all nodes at once (run_command_on_workers):
# each node backfills its own shards of the table one after another, so one
# model session at a time uses the node's cores.  Citus's catalog on each
# node says which shards are local.
BACKFILL = """DO $$
DECLARE shard text;
BEGIN
    FOR shard IN SELECT shard_name('notes'::regclass, s.shardid)
                   FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid)
                  WHERE s.logicalrelid = 'notes'::regclass
                    AND p.groupid = (SELECT groupid FROM pg_dist_local_group) ORDER BY 1
    LOOP
        CALL embed_backfill(shard::regclass, 'exp_text', 'embedding', batch_size => 20,
                            model_column => 'embedding_model');
    END LOOP;
END $$"""
ARCHIVE = range(1001, 1801)
RUNNING = "SELECT coalesce(sum(rows_done), 0) FROM backfill_status WHERE state = 'running'"


def backfill_all(coord, cancel_after=None):
    """Backfills every shard, a worker node's own shards on that node, all
    nodes at once; with `cancel_after` rows done on each node, cancels the
    coordinator's statement, which cancels the nodes' calls.  Returns the
    (success, result) of each node, or the error."""
    with coord.connect("notes_db") as c:
        pid = one(c, "SELECT pg_backend_pid()")
        outcome = {}

        def call():
            try:
                outcome["rows"] = c.execute("SELECT success, result FROM run_command_on_workers(%s) ORDER BY nodeport",
                                            (BACKFILL,)).fetchall()
            except psycopg.Error as e:
                outcome["error"] = e

        thread = threading.Thread(target=call)
        thread.start()
        if cancel_after is not None:
            assert wait_until(lambda: min(int(n) for n in on_workers(coord, RUNNING).values()) >= cancel_after,
                              120) is not None, "a node made no progress"
            at(coord, "SELECT pg_cancel_backend(%s::int)", pid)
        thread.join(300)
        assert not thread.is_alive()
        return outcome


def backfill_the_rest(coord, identity):
    """Runs the backfill again after an interrupted one: it completes, and
    every archived row was written exactly once over both."""
    again = backfill_all(coord)
    assert again.get("rows") == [(True, "DO")] * len(WORKERS), again
    assert unembedded(coord) == 0
    assert current(coord, "notes", identity)
    assert at(coord, f"SELECT count(*) FROM notes WHERE id >= {ARCHIVE.start} AND writes <> 1") == 0, \
        "every archived row written exactly once"


def unembedded(coord):
    return at(coord, "SELECT count(*) FROM notes WHERE embedding IS NULL")


@pytest.fixture(scope="module")
def archived(nodes):
    """An archive loaded into notes with the trigger off: rows without
    vectors."""
    coord = nodes["coord"]
    run(coord, "ALTER TABLE notes DISABLE TRIGGER notes_embed")
    try:
        insert(coord, "notes", ARCHIVE)
    finally:
        run(coord, "ALTER TABLE notes ENABLE TRIGGER notes_embed")
    return ARCHIVE


def test_a_backfill_of_every_shard_is_cancelled_and_resumed(nodes, archived, identity):
    coord = nodes["coord"]
    before = unembedded(coord)
    assert before == len(ARCHIVE)

    first = backfill_all(coord, cancel_after=40)
    assert isinstance(first.get("error"), psycopg.errors.QueryCanceled), first
    # the cancel reaches each node's call
    states = "SELECT string_agg(DISTINCT state, ',') FROM backfill_status"
    assert wait_until(lambda: set(on_workers(coord, states).values()) == {"interrupted"}, 30) is not None, \
        on_workers(coord, states)
    left = unembedded(coord)
    assert 0 < left < before, f"the cancelled runs kept the batches they committed ({left} of {before} left)"

    backfill_the_rest(coord, identity)
    resumed = on_workers(coord, "SELECT sum(rows_total) FROM (SELECT DISTINCT ON (relation) rows_total "
                                "FROM backfill_status ORDER BY relation, run_id DESC) t")
    assert sum(int(n) for n in resumed.values()) == left, "the resumed runs did what was left, no more"


NEAREST = (f"SELECT id FROM {{}} ORDER BY embedding <=> (SELECT embed_text('{QUERY_TEXT}')::vector(384) AS query), id "
           f"LIMIT {K}")


def test_a_global_top_k_through_the_coordinator(nodes, archived, identity):
    coord = nodes["coord"]
    if unembedded(coord):  # run alone, before the backfill test
        backfill_all(coord)
    with coord.connect("notes_db") as c:
        plan = "\n".join(r[0] for r in c.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {NEAREST.format('notes')}"))
    # the query vector a subplan on the coordinator; each shard returns its
    # own k nearest to it, and the coordinator merges them
    assert re.search(r"Distributed Subplan \S+\n\s+->  Result\n\s+Output: \(embed_text\(", plan), plan
    assert re.search(r"Query: SELECT .*read_intermediate_result.* ORDER BY .*LIMIT", plan), plan
    assert "embed_text(" not in "".join(re.findall(r"Query:.*", plan)), "the shards got the call"
    with coord.connect("notes_db") as c:
        top = [r[0] for r in c.execute(NEAREST.format("notes"))]
        assert one(c, "SELECT texts FROM embed_stats()") == 1, "the query vector is computed once"
    run(coord, "DROP TABLE IF EXISTS every_note", "CREATE TABLE every_note AS SELECT id, embedding FROM notes")
    with coord.connect("notes_db") as c:
        assert top == [r[0] for r in c.execute(NEAREST.format("every_note"))], \
            "equal to ranking every row on the coordinator"
    # embed_search on the distributed table: its vector leg is the same
    # ranking, its lexical leg PostgreSQL's full-text search on the shards.
    found = at(coord, f"SELECT array_agg(key[1]::bigint ORDER BY vector_rank) "
                      f"FROM embed_search('notes', '{QUERY_TEXT}', {K}, mode => 'vector')")
    assert found == top
    hybrid = "FROM embed_search('notes', 'troponin pending', 10, filter => '{\"patient\": 3}') s"
    assert at(coord, f"SELECT count(*) FILTER (WHERE lexical_rank IS NOT NULL) {hybrid}") > 0
    assert at(coord, f"SELECT bool_and(n.patient = 3) {hybrid} JOIN notes n ON n.id = s.key[1]::bigint")



IDENTITIES = f"SELECT embed_model_id('{MODEL}')"


def test_a_worker_with_another_model_is_found_before_anything_is_written(nodes, identity):
    coord, w2 = nodes["coord"], nodes["w2"]
    assert set(on_workers(coord, IDENTITIES).values()) == {identity}
    other = models_root(ROOT, "other")
    with open(other / MODEL / "clinembed.json", "w") as f:
        f.write('{"pooling": "mean", "normalize": true}\n')
    set_models_root(w2, other)
    try:
        assert wait_until(lambda: len(set(on_workers(coord, IDENTITIES).values())) == 2, 10) is not None, \
            "the check from the coordinator sees two identities"
        before = at(coord, "SELECT md5(string_agg(embedding::text || writes, ',' ORDER BY id)) FROM notes")
        with coord.connect("notes_db") as c, pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as e:
            c.execute(f"UPDATE notes SET embedding = embed_text_pinned(exp_text, '{identity}')::vector(384), "
                      f"embedding_model = '{identity}'")
        assert e.value.diag.message_primary == f'installed model "{MODEL}" is not the pinned model'
        assert at(coord, "SELECT md5(string_agg(embedding::text || writes, ',' ORDER BY id)) FROM notes") == before, \
            "the failed UPDATE wrote nothing on either worker"
    finally:
        set_models_root(w2, ROOT / "models-w2")
    assert wait_until(lambda: set(on_workers(coord, IDENTITIES).values()) == {identity}, 10) is not None


def restart_midway(coord, worker, progress, target, before=lambda: None):
    """Stops `worker` immediately (a crash) once `progress()` reaches
    `target`, then starts it again; returns what `before()` said just
    before the stop."""
    assert wait_until(lambda: progress() >= target, 120) is not None, "no progress before the stop"
    seen = before()
    worker.stop("immediate")
    time.sleep(1)
    worker.start()
    return seen


def test_a_worker_restarted_during_a_queue_drain_loses_nothing(nodes, identity):
    coord, w1 = nodes["coord"], nodes["w1"]
    ids = range(5001, 6001)
    insert(coord, "queued_notes", ids)
    embedded = f"SELECT count(*) FROM queued_notes WHERE id >= {ids.start} AND embedding IS NOT NULL"
    waiting = "SELECT count(*) FROM embed_queue"
    left = restart_midway(coord, w1, lambda: at(coord, embedded), 100,
                          before=lambda: int(on_workers(coord, waiting)[w1.port]))
    assert left > 0, "the node was stopped with keys still queued"
    # preloaded, clinembed starts w1's queue worker with the server
    assert wait_until(lambda: at(coord, embedded) == len(ids), 180) is not None, "rows were lost"
    assert current(coord, "queued_notes", identity, f"id >= {ids.start}")
    assert at(coord, f"SELECT count(*) FROM queued_notes WHERE id >= {ids.start} AND writes <> 1") == 0
    assert set(on_workers(coord, "SELECT count(*) FROM embed_queue").values()) == {"0"}


def test_a_worker_restarted_during_a_backfill_loses_nothing(nodes, archived, identity):
    coord, w2 = nodes["coord"], nodes["w2"]
    run(coord, f"UPDATE notes SET embedding = NULL, embedding_model = NULL, writes = 0 WHERE id >= {ARCHIVE.start}")
    outcome = {}

    def call():
        outcome.update(backfill_all(coord))

    thread = threading.Thread(target=call)
    thread.start()
    restart_midway(coord, w2, lambda: int(on_workers(coord, RUNNING)[w2.port]), 40)
    thread.join(300)
    assert "error" in outcome or not all(ok for ok, _ in outcome["rows"]), f"the stopped node's call failed: {outcome}"
    left = unembedded(coord)
    assert 0 < left < len(ARCHIVE)
    backfill_the_rest(coord, identity)
