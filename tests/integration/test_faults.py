"""Faults that need several sessions or a crash, against the scratch cluster
(conftest.py):

  - the model directory is replaced while backends hold sessions: a session
    picks up the new files at its next statement, and no statement mixes
    vectors or identities of the two;
  - kill -9 of a backend in the middle of a trigger-driven COPY: after crash
    recovery no row holds a partial or mismatched embedding, and the server
    embeds again.

    ONLY=faults bash scripts/test.sh           # the tier
    .venv/bin/python -m pytest tests/integration/test_faults.py -k kill  # one test

Runs as root (or as the server's user): it kills a backend.
"""

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import connect, drop_database, fresh_database, one

DB = "clinembed_faults"
SWAP = Path("/tmp/clinembed-swap")
MODEL_DIR = Path(os.environ.get("CLINEMBED_MODEL_DIR", ""))
COPY_FILE = "/tmp/clinembed-faults-copy.tsv"
BATCH_TABLE = ("CREATE TABLE {0} (id int PRIMARY KEY, exp_text text, embedding real[], embedding_model text); "
               "CREATE TRIGGER embed AFTER INSERT ON {0} REFERENCING NEW TABLE AS new_rows "
               "FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('exp_text', 'embedding', 'embedding_model')")


@pytest.fixture(scope="module", autouse=True)
def database():
    fresh_database(DB, [
        # 1 when a vector has unit length, 0 otherwise
        "CREATE FUNCTION unit(v real[]) RETURNS int LANGUAGE sql IMMUTABLE "
        "AS $$ SELECT (abs(sqrt(sum(x::float8 * x)) - 1) < 1e-4)::int FROM unnest(v) x $$",
        BATCH_TABLE.format("swapped"),
        BATCH_TABLE.format("copied"),
    ])
    yield
    drop_database(DB)


@pytest.fixture
def swap_dirs():
    """Two versions of one model directory: the default model (m), then the
    same with normalize on (m-next: other vectors, other identity)."""
    shutil.rmtree(SWAP, ignore_errors=True)
    SWAP.mkdir(parents=True)
    shutil.copytree(MODEL_DIR, SWAP / "m")
    shutil.copytree(SWAP / "m", SWAP / "m-next")
    (SWAP / "m-next" / "clinembed.json").write_text('{"pooling": "mean", "normalize": true}\n')
    for p in [SWAP, *SWAP.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield SWAP
    shutil.rmtree(SWAP, ignore_errors=True)


def swap():
    (SWAP / "m").rename(SWAP / "m-old")
    (SWAP / "m-next").rename(SWAP / "m")


def model_session(**kw):
    conn = connect(DB, **kw)
    conn.execute("SELECT set_config('clinembed.model', %s, false)", (str(SWAP / "m"),))
    return conn


def wait_active(name, like="%"):
    with connect(DB) as c:
        for _ in range(100):
            if one(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                      "AND state = 'active' AND query LIKE %s", name, like) == 1:
                return True
            time.sleep(0.1)
    return False


def test_a_session_picks_up_new_files_at_its_next_statement(swap_dirs):
    with model_session() as conn:
        before = one(conn, "SELECT embed_model_id()")
        assert one(conn, "SELECT unit(embed_text('chest pain'))") == 0
        swap()
        assert one(conn, "SELECT unit(embed_text('chest pain'))") == 1
        assert one(conn, "SELECT embed_model_id()") != before


def test_a_statement_in_flight_keeps_one_model(swap_dirs):
    conn = model_session(application_name="swap-insert")
    one(conn, "SELECT embed_model_id()")
    done = {}

    def insert():
        try:
            conn.execute("INSERT INTO swapped SELECT g, format('Note %s. %s', g, "
                         "repeat('Vitals stable, plan unchanged. ', 30)) FROM generate_series(1, 400) g")
            done["ok"] = True
        except psycopg.Error as e:
            done["error"] = e

    thread = threading.Thread(target=insert)
    thread.start()
    assert wait_active("swap-insert", "INSERT%")
    time.sleep(1)
    swap()
    thread.join(120)
    conn.close()
    assert done == {"ok": True}
    with connect(DB) as c:
        assert one(c, "SELECT count(embedding) FROM swapped") == 400
        assert one(c, "SELECT count(DISTINCT embedding_model) FROM swapped") == 1
        # vectors of the old files only (not normalized)
        assert one(c, "SELECT sum(unit(embedding)) FROM swapped") == 0
    with model_session() as c:
        assert one(c, "SELECT unit(embed_text('x'))") == 1


def test_kill_9_mid_copy_leaves_no_partial_rows(server_log):
    with connect(DB) as c:
        c.execute(f"COPY (SELECT g, format('Note %s. %s', g, repeat('Afebrile, lungs clear. ', 40)) "
                  f"FROM generate_series(1, 600) g) TO '{COPY_FILE}'")
    conn = connect(DB, application_name="copy-killed")
    outcome = {}

    def copy():
        try:
            conn.execute(f"COPY copied (id, exp_text) FROM '{COPY_FILE}'")
        except psycopg.Error as e:
            outcome["error"] = e

    thread = threading.Thread(target=copy)
    thread.start()
    assert wait_active("copy-killed")
    time.sleep(2)  # the rows are in; the statement trigger is embedding them
    with connect(DB) as c:
        pid = one(c, "SELECT pid FROM pg_stat_activity WHERE application_name = 'copy-killed'")
    os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert isinstance(outcome.get("error"), psycopg.OperationalError), outcome
    conn.close()
    # crash recovery, then the server accepts connections again
    deadline = time.monotonic() + 60
    while True:
        try:
            with connect(DB) as c:
                one(c, "SELECT 1")
            break
        except psycopg.OperationalError:
            assert time.monotonic() < deadline, "the server did not come back"
            time.sleep(0.2)
    assert server_log.text().count("all server processes terminated; reinitializing") == 1
    with connect(DB) as c:
        assert one(c, "SELECT count(*) FROM copied WHERE (embedding IS NULL) <> (embedding_model IS NULL) "
                      "OR cardinality(embedding) <> 384") == 0
        # one transaction: the killed COPY left no rows
        assert one(c, "SELECT count(*) FROM copied") == 0
        c.execute(f"COPY copied (id, exp_text) FROM '{COPY_FILE}'")
        assert one(c, "SELECT count(embedding) FROM copied") == 600
