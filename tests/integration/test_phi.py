"""PHI: no note text in any error, notice, warning or log line.

Every error path that sees a note is fired with a sentinel string inside the
note, with the server logging as much as it can; the sentinel must appear
neither in the server log nor in anything the client received (every field
of every error and notice).  The sentinel reaches the server only as table
data, so the server's own "STATEMENT:" lines (the query text, which holds no
note) cannot hide a leak or cause a false one.

    ONLY=phi bash scripts/test.sh              # the tier
    .venv/bin/python -m pytest tests/integration/test_phi.py -k backfill  # one path

The queue's workers are covered too: their failures, parked and logged.
"""

import time

import psycopg
import pytest

from conftest import ServerLog, alter_system, connect, drop_database, fresh_database, one

DB = "clinembed_phi"
SENTINEL = "PHISENTINEL7F3A"
VERBOSE_LOG = {"log_min_messages": "debug1", "log_error_verbosity": "verbose",
               "log_min_error_statement": "debug1"}

# (name, statements): the last statement must fail.
PATHS = [
    ("missing model", ["SET clinembed.model = '/nonexistent'", "SELECT embed_text(t) FROM src"]),
    ("corrupt model", ["SET clinembed.model = '/tmp/clinembed-regress-corrupt'", "SELECT embed_text(t) FROM src"]),
    ("broken tokenizer", ["SET clinembed.model = '/tmp/clinembed-regress-badtokenizer'",
                          "SELECT embed_token_count(t) FROM src"]),
    ("missing library", ["SET clinembed.onnxruntime_library = '/nonexistent/libonnxruntime.so'",
                         "SELECT embed_text(t) FROM src"]),
    ("too many texts", ["SET clinembed.batch_max_texts = 2",
                        "SELECT * FROM embed_texts((SELECT array_agg(t) FROM src))"]),
    ("too many tokens", ["SET clinembed.batch_max_tokens = 20",
                         "SELECT * FROM embed_texts((SELECT array_agg(t ORDER BY id DESC) FROM src))"]),
    ("statement timeout", ["SET statement_timeout = '300ms'",
                           "SELECT embed_text(t || g) FROM src, generate_series(1, 500) g"]),
    ("dimension mismatch, row trigger", [
        "CREATE TABLE w (id int PRIMARY KEY, t text, e vector(768))",
        "CREATE TRIGGER w BEFORE INSERT ON w FOR EACH ROW EXECUTE FUNCTION embed_trigger('t', 'e')",
        "INSERT INTO w SELECT id, t FROM src"]),
    ("dimension mismatch, batched trigger", [
        "CREATE TABLE wb (id int PRIMARY KEY, t text, e vector(768))",
        "CREATE TRIGGER wb AFTER INSERT ON wb REFERENCING NEW TABLE AS n FOR EACH STATEMENT "
        "EXECUTE FUNCTION embed_batch_trigger('t', 'e')",
        "INSERT INTO wb SELECT id, t FROM src"]),
    ("bad column, row trigger", [
        "CREATE TABLE b (id int PRIMARY KEY, t text, e real[])",
        "CREATE TRIGGER b BEFORE INSERT ON b FOR EACH ROW EXECUTE FUNCTION embed_trigger('nope', 'e')",
        "INSERT INTO b SELECT id, t FROM src"]),
    ("backfill dimension mismatch", [
        "CREATE TABLE f (id int PRIMARY KEY, t text, e vector(768))",
        "INSERT INTO f SELECT id, t FROM src", "CALL embed_backfill('f', 't', 'e')"]),
    ("backfill inside a transaction block", [
        "CREATE TABLE g (id int PRIMARY KEY, t text, e real[])",
        "INSERT INTO g SELECT id, t FROM src", "BEGIN", "CALL embed_backfill('g', 't', 'e')"]),
    ("target of a wrong type", [
        "CREATE TABLE x (id int PRIMARY KEY, t text, e text)",
        "CREATE TRIGGER x BEFORE INSERT ON x FOR EACH ROW EXECUTE FUNCTION embed_trigger('t', 'e')",
        "INSERT INTO x SELECT id, t FROM src"]),
    ("constraint violation, batched trigger", [
        "CREATE TABLE c (id int PRIMARY KEY, t text, e real[] CHECK (array_length(e, 1) = 768))",
        "CREATE TRIGGER c AFTER INSERT ON c REFERENCING NEW TABLE AS n FOR EACH STATEMENT "
        "EXECUTE FUNCTION embed_batch_trigger('t', 'e')",
        "INSERT INTO c SELECT id, t FROM src"]),
    ("constraint violation, backfill", [
        "CREATE TABLE cb (id int PRIMARY KEY, t text, e real[] CHECK (array_length(e, 1) = 768))",
        "INSERT INTO cb SELECT id, t FROM src", "CALL embed_backfill('cb', 't', 'e')"]),
    ("unique violation on the model column, batched trigger", [
        "CREATE TABLE u (id int PRIMARY KEY, t text, e real[], m text UNIQUE)",
        "CREATE TRIGGER u AFTER INSERT ON u REFERENCING NEW TABLE AS n FOR EACH STATEMENT "
        "EXECUTE FUNCTION embed_batch_trigger('t', 'e', 'm')",
        "INSERT INTO u SELECT id, t FROM src"]),
]


@pytest.fixture(scope="module", autouse=True)
def database():
    # The notes: short, long (past 512 tokens) and huge, each holding the sentinel.
    fresh_database(DB, [
        "CREATE EXTENSION vector",
        "CREATE TABLE src (id int PRIMARY KEY, t text)",
        f"INSERT INTO src VALUES (1, 'Patient {SENTINEL} reports chest pain.'), "
        f"(2, repeat('Vitals stable {SENTINEL}. ', 400)), (3, repeat('{SENTINEL} ', 200000))",
    ])
    alter_system(VERBOSE_LOG)
    yield
    alter_system({name: None for name in VERBOSE_LOG})
    drop_database(DB)


def diagnostics(diag):
    """Every field of an error or notice the client receives."""
    fields = ["severity", "sqlstate", "message_primary", "message_detail", "message_hint", "context",
              "statement_position", "internal_position", "internal_query", "schema_name", "table_name",
              "column_name", "datatype_name", "constraint_name", "source_file", "source_line",
              "source_function"]
    return " | ".join(str(getattr(diag, f)) for f in fields)


def received(statements):
    """Runs `statements` in a new session logging everything to the client;
    returns what it received and the error the last statement raised."""
    seen = []
    with connect(DB) as conn:
        conn.add_notice_handler(lambda n: seen.append(diagnostics(n)))
        conn.execute("SET client_min_messages = debug1")
        error = None
        for sql in statements:
            try:
                cur = conn.execute(sql)
                if cur.description:
                    seen.extend(repr(row) for row in cur.fetchall())
            except psycopg.Error as e:
                error = e
                seen.append(str(e))
                seen.append(diagnostics(e.diag))
                break
    return "\n".join(seen), error


@pytest.mark.parametrize("name,statements", PATHS, ids=[p[0] for p in PATHS])
def test_error_path_leaks_no_note_text(name, statements):
    log = ServerLog()
    text, error = received(statements)
    assert error is not None, "the path raised no error"
    assert SENTINEL not in text, "note text reached the client"
    server = log.text()
    assert "ERROR:" in server, "the server log did not record the error"
    assert SENTINEL not in server, "note text reached the server log"


def test_backfill_progress_notices_leak_no_note_text():
    log = ServerLog()
    with connect(DB) as c:
        c.execute("CREATE TABLE ok (id int PRIMARY KEY, t text, e real[])")
        c.execute("INSERT INTO ok SELECT id, t FROM src")
    text, error = received(["CALL embed_backfill('ok', 't', 'e', batch_size => 1)"])
    assert error is None
    assert "clinembed backfill of public.ok: 3 of 3 rows" in text
    assert SENTINEL not in text
    assert SENTINEL not in log.text()


@pytest.mark.parametrize("name,table", [
    ("dimension mismatch", "CREATE TABLE {t} (id int PRIMARY KEY, t text, e vector(768))"),
    ("constraint violation", "CREATE TABLE {t} (id int PRIMARY KEY, t text, e real[] CHECK (array_length(e, 1) = 768))"),
    ("unique violation on the model column", "CREATE TABLE {t} (id int PRIMARY KEY, t text, e real[], m text UNIQUE)"),
])
def test_queue_worker_failures_leak_no_note_text(name, table):
    """The queue workers' failures: parked with the key, SQLSTATE and message,
    and logged (at debug1, verbose) without the note."""
    t = "q_" + name.split()[0]
    log = ServerLog()
    alter_system({"clinembed.queue_max_attempts": "1"})
    try:
        with connect(DB) as c:
            c.execute(table.format(t=t))
            model = ", 'm'" if "model" in name else ""
            c.execute(f"CREATE TRIGGER q BEFORE INSERT ON {t} FOR EACH ROW "
                      f"EXECUTE FUNCTION embed_queue_trigger('t', 'e'{model})")
            c.execute(f"INSERT INTO {t} SELECT id, t FROM src")
            for _ in range(600):
                if one(c, f"SELECT count(*) FROM embed_queue_failures WHERE relation = '{t}'::regclass "
                          "AND state = 'parked'") >= 1:
                    break
                time.sleep(0.1)
            failures = c.execute(f"SELECT * FROM embed_queue_failures WHERE relation = '{t}'::regclass").fetchall()
    finally:
        alter_system({"clinembed.queue_max_attempts": None})
    assert failures, "no row was parked"
    assert SENTINEL not in repr(failures)
    server = log.text()
    assert "clinembed queue worker: a queued row" in server
    assert SENTINEL not in server, "note text reached the server log"
