"""embed_backfill with several sessions and a crash, against the scratch
cluster (conftest.py):

  - progress is visible from a second session while a backfill runs;
  - pg_terminate_backend mid-run leaves no half-written row;
  - an immediate server stop (crash recovery) mid-run does the same, and the
    next run resumes;
  - a rerun completes, and every row was embedded exactly once.

    ONLY=integration bash scripts/test.sh      # the tier
    .venv/bin/python -m pytest tests/integration/test_backfill_resume.py -k terminate  # one test

The crash test restarts the server with `pg_ctl -m immediate`, as root or
as the server's user.
"""

import threading
import time

import psycopg
import pytest

from conftest import connect, drop_database, fresh_database, one, restart

DB = "clinembed_integration"
TOTAL = 3000
BACKFILL = ("CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 100, "
            "model_column => 'embedding_model')")


@pytest.fixture(scope="module", autouse=True)
def database():
    fresh_database(DB, [
        "CREATE EXTENSION vector",
        "CREATE TABLE notes (id int PRIMARY KEY, exp_text text, embedding vector(384), "
        "embedding_model text, writes int NOT NULL DEFAULT 0)",
        # how often each row's vector is written
        "CREATE FUNCTION count_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.embedding IS DISTINCT FROM OLD.embedding THEN NEW.writes := OLD.writes + 1; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER count_writes BEFORE UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION count_writes()",
        f"INSERT INTO notes (id, exp_text) SELECT g, format('Progress note %s. %s', g, "
        f"repeat('Vital signs stable, afebrile, tolerating diet, ambulating with assistance. ', 2 + g % 4)) "
        f"FROM generate_series(1, {TOTAL}) g",
    ])
    yield
    drop_database(DB)


def q(sql, *args):
    with connect(DB) as c:
        return one(c, sql, *args)


def backfill_in_background():
    """Starts a backfill on its own thread; returns the thread and the last
    run id before it."""
    before = q("SELECT coalesce(max(run_id), 0) FROM backfill_runs")

    def run():
        try:
            with connect(DB, application_name="backfill") as c:
                c.execute("SET client_min_messages = warning")
                c.execute(BACKFILL)
        except psycopg.OperationalError:
            pass  # terminated or crashed: what the tests do to it

    thread = threading.Thread(target=run)
    thread.start()
    return thread, before


def wait_progress(after_run, rows, limit_s=120):
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if q("SELECT coalesce(max(rows_done), 0) FROM backfill_runs WHERE run_id > %s", after_run) >= rows:
            return True
        time.sleep(0.2)
    return False


def half_written():
    """Rows whose vector and model identity disagree, are partial, or were written twice."""
    return q("SELECT count(*) FROM notes WHERE (embedding IS NULL) <> (embedding_model IS NULL) "
             "OR (embedding IS NOT NULL AND vector_dims(embedding) <> 384) OR writes > 1")


def embedded_equals_progress():
    return q("SELECT (SELECT count(embedding) FROM notes) = (SELECT coalesce(sum(rows_done), 0) FROM backfill_runs)")


def test_progress_then_terminate():
    thread, before = backfill_in_background()
    assert wait_progress(before, 300)
    with connect(DB) as c:
        row = c.execute("SELECT state, rows_total, rows_done >= 300, rows_per_second > 0, eta IS NOT NULL "
                        "FROM backfill_status ORDER BY run_id DESC LIMIT 1").fetchone()
    assert row == ("running", TOTAL, True, True, True)
    assert q("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
             "WHERE application_name = 'backfill') t") == 1
    thread.join(60)
    assert q("SELECT state FROM backfill_status ORDER BY run_id DESC LIMIT 1") == "interrupted"
    assert half_written() == 0
    assert embedded_equals_progress()


def test_immediate_stop_then_resume():
    done_before = q("SELECT count(embedding) FROM notes")
    thread, before = backfill_in_background()
    assert wait_progress(before, 200)
    restart("immediate")
    thread.join(60)
    assert half_written() == 0
    assert embedded_equals_progress()
    assert q("SELECT count(embedding) FROM notes") > done_before


def test_rerun_completes_exactly_once(server_log):
    with connect(DB) as c:
        c.execute("SET client_min_messages = warning")
        c.execute(BACKFILL)
    assert q("SELECT count(*) FROM notes WHERE embedding IS NULL") == 0
    assert q("SELECT min(writes) || '|' || max(writes) FROM notes") == "1|1"
    assert q("SELECT sum(rows_done) FROM backfill_runs") == TOTAL
    assert q("SELECT bool_and(embedding = embed_text(exp_text)::vector) FROM notes WHERE id % 500 = 1")
    assert server_log.crashes() == []
