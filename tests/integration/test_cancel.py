"""Cancellation, against the scratch cluster (conftest.py).

statement_timeout and pg_cancel_backend stop a long `SELECT embed_text(...)
FROM ...`, a large `embed_texts` call and a backfill within about one
micro-batch (CANCEL_LIMIT_S, default 2 s), with SQLSTATE 57014, and the
session works afterwards; pg_terminate_backend ends a backend in the middle
of a batch while the server and other sessions carry on; the server log shows
no crash.  Real sessions on real threads:

    ONLY=cancel bash scripts/test.sh           # the tier
    .venv/bin/python -m pytest tests/integration/test_cancel.py -k "cancel and backfill"  # one test
"""

import os
import time

import psycopg
import pytest

from conftest import connect, drop_database, fresh_database, in_background, one, wait_until

DB = "clinembed_cancel"
LIMIT_S = float(os.environ.get("CANCEL_LIMIT_S", "2.0"))
TIMEOUT_S = 1.5
STATEMENTS = {
    "row": "SELECT count(embed_text(exp_text)) FROM notes",
    "batch": "SELECT count(*) FROM embed_texts((SELECT array_agg(exp_text) FROM notes))",
    "backfill": "CALL embed_backfill('notes', 'exp_text', 'embedding', batch_size => 64)",
}


@pytest.fixture(scope="module", autouse=True)
def database():
    # About 400 tokens a note: the whole table takes many seconds.
    fresh_database(DB, [
        "CREATE TABLE notes (id int PRIMARY KEY, exp_text text, embedding real[])",
        "INSERT INTO notes (id, exp_text) SELECT g, format('Note %s. %s', g, "
        "repeat('Patient afebrile, vitals stable, lungs clear, plan unchanged. ', 40)) "
        "FROM generate_series(1, 2000) g",
    ])
    yield
    drop_database(DB)


def session(name):
    """A connection with the model loaded, named for pg_stat_activity."""
    conn = connect(DB, application_name=f"cancel-{name}")
    conn.execute("SET client_min_messages = warning")
    assert one(conn, "SELECT embed_model_id() IS NOT NULL")
    return conn


def active(name):
    with connect(DB) as c:
        return one(c, "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND state = 'active'",
                   f"cancel-{name}")


def still_works(conn):
    conn.execute("RESET statement_timeout")
    return one(conn, "SELECT array_length(embed_text('after the cancel'), 1)")


@pytest.mark.parametrize("kind", list(STATEMENTS))
def test_statement_timeout(kind):
    with session(f"{kind}-timeout") as conn:
        conn.execute(f"SET statement_timeout = '{int(TIMEOUT_S * 1000)}ms'")
        t0 = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute(STATEMENTS[kind])
        late = time.monotonic() - t0 - TIMEOUT_S
        assert late <= LIMIT_S, f"landed {late:.2f} s after the timeout"
        assert still_works(conn) == 384


def signal_mid_statement(name, conn, sql, function):
    """Runs `sql` on `conn` in the background, calls pg_cancel_backend or
    pg_terminate_backend (`function`) on it a second after it starts, and
    returns (seconds until it stopped being active, the error it raised)."""
    thread, outcome = in_background(conn, sql)
    assert wait_until(lambda: active(name) == 1, 10) is not None, "the statement never ran"
    time.sleep(1)
    with connect(DB) as c:
        assert one(c, f"SELECT {function}(pid) FROM pg_stat_activity WHERE application_name = %s",
                   f"cancel-{name}")
    took = wait_until(lambda: active(name) == 0, 15)
    thread.join(30)
    assert took is not None and took <= LIMIT_S, f"stopped after {took} s"
    return outcome.get("error")


@pytest.mark.parametrize("kind", list(STATEMENTS))
def test_cancel_backend(kind):
    name = f"{kind}-cancel"
    with session(name) as conn:
        error = signal_mid_statement(name, conn, STATEMENTS[kind], "pg_cancel_backend")
        assert isinstance(error, psycopg.errors.QueryCanceled), error
        assert still_works(conn) == 384


def test_terminate_backend_mid_batch(server_log):
    conn = session("terminate")
    error = signal_mid_statement("terminate", conn, STATEMENTS["batch"], "pg_terminate_backend")
    assert isinstance(error, psycopg.OperationalError), error
    assert "terminating connection due to administrator command" in str(error)
    assert conn.closed or conn.broken
    # the server carries on: other sessions embed, and nothing crashed
    with connect(DB) as c:
        assert one(c, "SELECT array_length(embed_text('still up'), 1)") == 384
    assert server_log.crashes() == []
    conn.close()
