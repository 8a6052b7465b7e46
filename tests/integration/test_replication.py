"""clinembed with logical replication: three clusters of this module's own.
A publisher holds the notes; one subscriber embeds the replicated rows
itself, with clinembed's triggers set to fire for replicated rows
(`ENABLE ALWAYS TRIGGER`); another receives the publisher's vectors and does
no inference (no model is installed there at all).  The apply workers run
the triggers as PostgreSQL's own background workers.

    ONLY=replication bash scripts/test.sh
    .venv/bin/python -m pytest tests/integration/test_replication.py -k always

Each test needs only the module's fixture.
"""

import os
from pathlib import Path

import pytest

from conftest import Cluster, models_root, one, run_in, scratch_dir, wait_until

pytestmark = pytest.mark.multicluster

ROOT = Path("/tmp/clinembed-replication")
MODEL = os.path.basename(os.environ.get("CLINEMBED_MODEL_DIR", "all-minilm-l6-v2"))
NOTES = 120
NOTE = ("format('Discharge note %s. %s', g, (ARRAY['Chest pain radiating to the left arm, troponin pending.', "
        "'Afebrile overnight, tolerating diet.', 'Started apixaban 5 mg BID for atrial fibrillation.'])[1 + g % 3])")
TABLE = "(id bigint PRIMARY KEY, exp_text text, embedding vector(384), embedding_model text)"



def run(node, *statements):
    run_in(node, "notes_db", *statements)


def at(node, sql, *args):
    return node.one(sql, *args, dbname="notes_db")


def vectors(node, table):
    return at(node, f"SELECT md5(string_agg(id || ':' || coalesce(embedding::text, '-') || coalesce(embedding_model, '-'), "
                    f"',' ORDER BY id)) FROM {table}")


@pytest.fixture(scope="module")
def clusters():
    scratch_dir(ROOT)
    nodes = {}
    try:
        # "embeds": a subscriber with the model; "copies": one without any
        for name, with_model in (("publisher", True), ("embeds", True), ("copies", False)):
            node = Cluster(ROOT, name).initdb()
            node.configure({"wal_level": "logical", "clinembed.models_root": models_root(ROOT, name, with_model)})
            node.start()
            node.run("CREATE DATABASE notes_db")
            run(node, "CREATE EXTENSION vector", "CREATE EXTENSION clinembed")
            nodes[name] = node
        pub = nodes["publisher"]
        # raw_notes: text only on the publisher, which runs no model for it;
        # notes: embedded on the publisher by its row trigger.
        run(pub, f"CREATE TABLE raw_notes {TABLE}", f"CREATE TABLE queued_notes {TABLE}", f"CREATE TABLE notes {TABLE}",
            "CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE OF exp_text ON notes FOR EACH ROW "
            "EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model')",
            "CREATE PUBLICATION raw_notes FOR TABLE raw_notes (id, exp_text), queued_notes (id, exp_text)",
            "CREATE PUBLICATION notes FOR TABLE notes")
        embeds, copies = nodes["embeds"], nodes["copies"]
        # The subscriber that embeds: the row trigger, and the queue trigger
        # on a second table, both firing for replicated rows too.
        run(embeds, f"CREATE TABLE raw_notes {TABLE}", f"CREATE TABLE queued_notes {TABLE}",
            "CREATE TRIGGER raw_notes_embed BEFORE INSERT OR UPDATE OF exp_text ON raw_notes FOR EACH ROW "
            "EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model')",
            "ALTER TABLE raw_notes ENABLE ALWAYS TRIGGER raw_notes_embed",
            "CREATE TRIGGER queued_notes_embed BEFORE INSERT OR UPDATE ON queued_notes FOR EACH ROW "
            "EXECUTE FUNCTION embed_queue_trigger('exp_text', 'embedding', 'embedding_model')",
            "ALTER TABLE queued_notes ENABLE ALWAYS TRIGGER queued_notes_embed")
        # The subscriber that copies: the publisher's vectors; its own
        # trigger, for local writes, does not fire for replicated rows.
        run(copies, f"CREATE TABLE notes {TABLE}",
            "CREATE TRIGGER notes_embed BEFORE INSERT OR UPDATE OF exp_text ON notes FOR EACH ROW "
            "EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model')")
        for node, publication in ((embeds, "raw_notes"), (copies, "notes")):
            run(node, f"CREATE SUBSCRIPTION {publication} CONNECTION 'host={ROOT} port={pub.port} "
                      f"dbname=notes_db user=postgres' PUBLICATION {publication}")
        yield nodes
    finally:
        if not os.environ.get("KEEP"):
            for node in nodes.values():
                node.stop()


@pytest.fixture(scope="module")
def identity(clusters):
    return at(clusters["publisher"], "SELECT embed_model_id(%s)", MODEL)


def current(node, table, identity, where="true"):
    return at(node, f"SELECT count(*) FILTER (WHERE embedding = embed_text(exp_text)::vector AND embedding_model = "
                    f"%s) = count(*) AND count(*) > 0 FROM {table} WHERE {where}", identity)


def replicated(node, table, n):
    return wait_until(lambda: at(node, f"SELECT count(*) FROM {table}") == n, 60) is not None


def test_a_subscriber_with_always_triggers_embeds_replicated_rows(clusters, identity):
    pub, embeds = clusters["publisher"], clusters["embeds"]
    run(pub, f"INSERT INTO raw_notes (id, exp_text) SELECT g, {NOTE} FROM generate_series(1, {NOTES}) g")
    assert replicated(embeds, "raw_notes", NOTES)
    assert current(embeds, "raw_notes", identity), "the apply worker's trigger embedded every row"
    assert at(pub, "SELECT count(*) FROM raw_notes WHERE embedding IS NOT NULL") == 0, "the publisher ran no model"
    # A text changed on the publisher is embedded again on the subscriber.
    run(pub, "UPDATE raw_notes SET exp_text = exp_text || ' Seen again on day 2.' WHERE id <= 10")
    changed = "SELECT count(*) FROM raw_notes WHERE id <= 10 AND exp_text LIKE '%day 2.'"
    assert wait_until(lambda: at(embeds, changed) == 10, 60) is not None
    assert current(embeds, "raw_notes", identity)
    run(pub, "DELETE FROM raw_notes WHERE id > 100")
    assert replicated(embeds, "raw_notes", 100)


def test_a_subscriber_queues_replicated_rows_for_its_workers(clusters, identity):
    # The queue trigger fired by the apply worker: the apply only queues
    # keys, and the subscriber's queue workers embed after its commits.
    pub, embeds = clusters["publisher"], clusters["embeds"]
    run(pub, f"INSERT INTO queued_notes (id, exp_text) SELECT g, {NOTE} FROM generate_series(1, {NOTES}) g")
    assert replicated(embeds, "queued_notes", NOTES)
    done = "SELECT count(*) FROM queued_notes WHERE embedding IS NOT NULL"
    assert wait_until(lambda: at(embeds, done) == NOTES, 120) is not None, "the queue was not drained"
    assert current(embeds, "queued_notes", identity)
    assert at(embeds, "SELECT count(*) FROM embed_queue") == 0


def test_a_subscriber_receiving_vectors_runs_no_model(clusters, identity):
    pub, copies = clusters["publisher"], clusters["copies"]
    run(pub, f"INSERT INTO notes (id, exp_text) SELECT g, {NOTE} FROM generate_series(1, {NOTES}) g",
        "UPDATE notes SET exp_text = exp_text || ' Seen again on day 2.' WHERE id <= 10")
    assert current(pub, "notes", identity)
    assert wait_until(lambda: vectors(copies, "notes") == vectors(pub, "notes"), 60) is not None, \
        "the publisher's vectors and model identities arrive unchanged"
    # No model is installed on this subscriber: had its trigger fired for
    # the replicated rows, the apply would have failed instead.
    with copies.connect("notes_db") as c:
        assert one(c, "SELECT count(*) FROM embed_models()") == 0
        assert one(c, "SELECT count(*) FROM pg_stat_subscription_stats WHERE apply_error_count > 0") == 0
