"""pg_upgrade of a database that uses clinembed, from the PostgreSQL whose
binaries are in $OLD_PG_BIN to the one in $NEW_PG_BIN, both with clinembed
(this build) and pgvector installed: the vectors, their model identities, the
triggers and the backfill's progress come through, and the triggers, the
backfill and an HNSW index work afterwards.  Two clusters of this module's
own, on ports it picks.  scripts/test.sh runs it from 15.18 built from source
(Debian 12's 15.20 cannot be pg_upgraded to 18.6, see scripts/setup.sh) to
each newer major, after installing clinembed into both:

    ONLY=pg_upgrade bash scripts/test.sh
    OLD_PG_BIN=... NEW_PG_BIN=... .venv/bin/python -m pytest tests/integration/test_pg_upgrade.py
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import Cluster, as_postgres, one, pg_config, scratch_dir

pytestmark = [pytest.mark.multicluster, pytest.mark.pg_upgrade]

ROOT = Path("/tmp/clinembed-pg_upgrade")
OLD_BIN = os.environ.get("OLD_PG_BIN", "")
NEW_BIN = os.environ.get("NEW_PG_BIN", "")
ROWS = "SELECT md5(string_agg(id || ':' || embedding::text || ':' || embedding_model, ',' ORDER BY id)) FROM notes"
RUNS = "SELECT string_agg(relation || ' ' || state || ' ' || rows_done, ',') FROM backfill_status"
BACKFILL = "CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 20, model_column => 'embedding_model')"
SETUP = [
    "CREATE EXTENSION vector",
    "CREATE EXTENSION clinembed",
    "CREATE TABLE notes (id int PRIMARY KEY, exp_text text, embedding vector(384), embedding_model text)",
    "CREATE TRIGGER notes_embed_insert AFTER INSERT ON notes REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model')",
    "CREATE TRIGGER notes_embed_update BEFORE UPDATE OF exp_text ON notes "
    "FOR EACH ROW EXECUTE FUNCTION embed_trigger('exp_text', 'embedding', 'embedding_model')",
    "INSERT INTO notes SELECT g, 'Progress note ' || g || '. Afebrile, ambulating.' FROM generate_series(1, 200) g",
    "ALTER TABLE notes DISABLE TRIGGER notes_embed_insert",
    "INSERT INTO notes SELECT g, 'Late note ' || g || '. Pain controlled.' FROM generate_series(201, 260) g",
    "ALTER TABLE notes ENABLE TRIGGER notes_embed_insert",
    BACKFILL,
    "CREATE INDEX notes_hnsw ON notes USING hnsw (embedding vector_cosine_ops)",
]


def major(bin_dir):
    return int(re.search(r"PostgreSQL (\d+)", pg_config("--version", bin_dir)).group(1))


def at(node, sql):
    """Runs `sql` in the node's notes_db; the first column of its first row,
    if it returns rows."""
    with node.connect("notes_db") as c:
        c.execute("SET client_min_messages = warning")
        cur = c.execute(sql)
        return cur.fetchone()[0] if cur.description else None


@pytest.fixture(scope="module")
def upgraded():
    assert OLD_BIN and NEW_BIN, "set OLD_PG_BIN and NEW_PG_BIN to the two PostgreSQL bin directories"
    scratch_dir(ROOT)
    old = Cluster(ROOT, "old", OLD_BIN).initdb()
    # 18 turns data checksums on by default; pg_upgrade needs the old cluster's setting.
    new = Cluster(ROOT, "new", NEW_BIN).initdb(*(["--no-data-checksums"] if major(NEW_BIN) >= 18 else []))
    try:
        old.start()
        old.run("CREATE DATABASE notes_db")
        with old.connect("notes_db") as c:
            c.execute("SET client_min_messages = warning")
            for sql in SETUP:
                c.execute(sql)
            before = {"rows": one(c, ROWS), "runs": one(c, RUNS)}
        old.stop()
        # pg_upgrade writes its reports in the new data directory and the cwd.
        try:
            as_postgres([os.path.join(NEW_BIN, "pg_upgrade"), "-b", OLD_BIN, "-B", NEW_BIN, "-d", str(old.data),
                         "-D", str(new.data), "-p", str(old.port), "-P", str(new.port), "-s", str(ROOT), "-U", "postgres"],
                        cwd=ROOT)
        except subprocess.CalledProcessError as e:
            pytest.fail(f"pg_upgrade failed: {e.stdout[-2000:]}")
        new.start()
        yield new, before
    finally:
        old.stop()
        new.stop()


def test_the_server_is_the_new_major(upgraded):
    new, _ = upgraded
    assert int(at(new, "SHOW server_version_num")) // 10000 == major(NEW_BIN)


def test_vectors_model_identities_and_backfill_progress_come_through(upgraded):
    new, before = upgraded
    assert at(new, ROWS) == before["rows"]
    assert at(new, RUNS) == before["runs"]


def test_the_new_server_has_the_same_model_identity_and_vectors(upgraded):
    new, _ = upgraded
    assert at(new, "SELECT count(*) FROM notes WHERE embedding_model = embed_model_id()") == 260
    assert at(new, "SELECT bool_and(embedding = embed_text(exp_text)::vector) FROM notes WHERE id % 20 = 1")


def test_the_triggers_embed_after_the_upgrade(upgraded):
    new, _ = upgraded
    at(new, "INSERT INTO notes (id, exp_text) SELECT g, 'After the upgrade ' || g FROM generate_series(300, 309) g")
    assert at(new, "SELECT count(*) FROM notes WHERE id >= 300 AND embedding = embed_text(exp_text)::vector") == 10
    at(new, "UPDATE notes SET exp_text = 'Edited after the upgrade.' WHERE id = 1")
    assert at(new, "SELECT embedding = embed_text('Edited after the upgrade.')::vector FROM notes WHERE id = 1")


def test_a_backfill_completes_and_the_hnsw_index_answers(upgraded):
    new, _ = upgraded
    at(new, "UPDATE notes SET embedding = NULL WHERE id BETWEEN 100 AND 149")
    at(new, BACKFILL)
    assert at(new, "SELECT count(*) FROM notes WHERE embedding IS NULL") == 0
    with new.connect("notes_db", options="-c enable_seqscan=off") as c:
        assert one(c, "SELECT id FROM notes ORDER BY embedding <=> "
                      "embed_text('Progress note 7. Afebrile, ambulating.')::vector LIMIT 1") == 7
