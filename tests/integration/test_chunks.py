"""Chunk tables kept in sync by embed_chunks_trigger and the queue workers,
against the scratch cluster (conftest.py).

Every chunk table here has an audit trigger that records each chunk row a
worker inserts, in the worker's transaction, so "written exactly once" is
counted: a batch rolled back (cancel, terminate, kill -9) leaves no audit
row.  The set-up checks and what the trigger does in the writing
transaction are also in tests/regress/sql/embed_chunk_tables.sql.

    ONLY=chunks bash scripts/test.sh                     # the tier
    .venv/bin/python -m pytest tests/integration/test_chunks.py -k kill  # one test
"""

import os
import signal
import time

import psycopg
import pytest

from conftest import alter_system, connect, drop_database, fresh_database, one
from conftest import wait_until as wait_for

pytestmark = pytest.mark.every_major

DB = "clinembed_chunks"
WAIT_S = float(os.environ.get("QUEUE_WAIT_S", "120"))
# A discharge summary in sections, several windows long.
NOTE = (
    "Admission Date: 2150-01-0{n}\n"
    "CHIEF COMPLAINT: chest pain.\n"
    "HISTORY OF PRESENT ILLNESS:\n"
    + "67 y/o M with CAD and HTN presents with substernal chest pain radiating to the left arm, "
      "worse with exertion, relieved by rest. " * 6
    + "\nMEDICATIONS:\n1. aspirin 81 mg daily\n2. metoprolol 25 mg BID\n3. atorvastatin 40 mg nightly\n"
    "ASSESSMENT AND PLAN:\n"
    + "Acute coronary syndrome ruled out by serial troponins; continue aspirin and statin, "
      "stress test as an outpatient. " * 5
)
# About 1,000 tokens a note: a batch takes seconds, long enough to hit mid-batch.
LONG = "Note {n}.\nHPI:\n" + "Patient afebrile, vitals stable, lungs clear, plan unchanged. " * 40 + \
    "\nPLAN:\n" + "Continue current management and follow up in clinic. " * 30

AUDIT = """
CREATE TABLE chunk_audit (tbl text, key text, chunk int, at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION chunk_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.chunk_audit (tbl, key, chunk)
    VALUES (TG_TABLE_NAME, (to_jsonb(NEW) - 'chunk' - 'section' - 'char_start' - 'char_end'
                            - 'tokens' - 'embedding' - 'model')::text, NEW.chunk);
    RETURN NEW;
END $$;
"""


def tables_sql(name, vector="real[]"):
    return [
        f"CREATE TABLE {name} (id int PRIMARY KEY, body text, other int DEFAULT 0)",
        f"CREATE TABLE {name}_chunks (id int REFERENCES {name} ON DELETE CASCADE ON UPDATE CASCADE, "
        f"chunk int, section text, char_start int, char_end int, tokens int, embedding {vector}, model text)",
        f"CREATE INDEX ON {name}_chunks (id)",
        f"CREATE TRIGGER chunks BEFORE INSERT OR UPDATE ON {name} FOR EACH ROW "
        f"EXECUTE FUNCTION embed_chunks_trigger('body', '{name}_chunks', 'embedding', 'model')",
        f"CREATE TRIGGER zz_audit AFTER INSERT ON {name}_chunks FOR EACH ROW EXECUTE FUNCTION chunk_audit()",
    ]


@pytest.fixture(scope="module", autouse=True)
def database():
    alter_system({"clinembed.queue_idle_exit": "5", "clinembed.queue_max_attempts": "2"})
    fresh_database(DB, [AUDIT])
    yield
    drop_database(DB)
    alter_system({"clinembed.queue_idle_exit": None, "clinembed.queue_max_attempts": None,
                  "clinembed.queue_max_workers_per_database": None})


def q(sql, *args):
    with connect(DB) as c:
        return one(c, sql, *args)


def run(*sqls):
    with connect(DB) as c:
        for sql in sqls:
            c.execute(sql)


def wait_until(predicate, limit_s=WAIT_S, step=0.1):
    return wait_for(predicate, limit_s, step)


def drained(table):
    return q("SELECT count(*) FROM embed_queue WHERE relid = %s::regclass", table) == 0


def worker_pids():
    with connect(DB) as c:
        return [r[0] for r in c.execute(
            "SELECT w.pid FROM embed_queue_workers() w JOIN pg_database d ON d.oid = w.datid "
            "WHERE d.datname = %s", (DB,)).fetchall()]


def per_database(value):
    alter_system({"clinembed.queue_max_workers_per_database": value})
    want = value or "1"

    def seen():
        with connect(DB) as c:
            c.execute("LOAD 'clinembed'")
            return one(c, "SHOW clinembed.queue_max_workers_per_database") == want

    assert wait_until(seen, 10, 0.05) is not None


def pause():
    per_database("0")
    for pid in worker_pids():
        run(f"SELECT pg_terminate_backend({pid})")
    assert wait_until(lambda: not worker_pids(), 30) is not None


def resume():
    per_database(None)
    run("SELECT embed_queue_start()")


def mismatches(notes, keys="id"):
    """Chunk rows that differ from embed_chunks of their note's text (a row
    missing on either side, another span, section or token count, or a
    vector off by more than 1e-5), and chunk rows of another model."""
    k = ", ".join(f"n.{c}" for c in keys.split(", "))
    on = " AND ".join(f"c.{c} = e.{c}" for c in keys.split(", "))
    return q(f"""
        SELECT count(*) FROM
          (SELECT {k}, e.* FROM {notes} n, embed_chunks(n.body) e) e
          FULL JOIN {notes}_chunks c ON {on} AND c.chunk = e.chunk
         WHERE c.chunk IS NULL OR e.chunk IS NULL
            OR c.section IS DISTINCT FROM e.section
            OR c.char_start <> e.char_start OR c.char_end <> e.char_end OR c.tokens <> e.tokens
            OR c.model IS DISTINCT FROM embed_model_id()
            OR (SELECT max(abs(a - b)) FROM unnest(c.embedding::real[], e.embedding) u(a, b)) > 1e-5""")


def written_once(notes):
    """Each chunk row present was inserted once by a worker, and no note's
    rows were written for a text it no longer has."""
    assert q(f"SELECT count(*) FROM (SELECT key, chunk FROM chunk_audit WHERE tbl = '{notes}_chunks' "
             "GROUP BY key, chunk HAVING count(*) > 1) d") == 0
    assert q(f"SELECT count(*) FROM chunk_audit WHERE tbl = '{notes}_chunks'") == \
        q(f"SELECT count(*) FROM {notes}_chunks")


def test_inserted_notes_get_the_chunk_rows_of_embed_chunks():
    run(*tables_sql("c_insert"),
        "INSERT INTO c_insert (id, body) SELECT g, replace(%s, '{n}', g::text) FROM generate_series(1, 6) g"
        .replace("%s", "$n$" + NOTE + "$n$"),
        "INSERT INTO c_insert (id, body) VALUES (7, NULL), (8, '')")
    assert wait_until(lambda: drained("c_insert")) is not None
    assert mismatches("c_insert") == 0
    # windows stay inside sections, and carry their names
    assert q("SELECT count(*) > 6 FROM c_insert_chunks WHERE section = 'history_of_present_illness'")
    assert q("SELECT count(DISTINCT section) FROM c_insert_chunks WHERE id = 1") >= 4
    # no text, no chunk rows; an empty text has the one empty window embed_chunks gives
    assert q("SELECT count(*) FROM c_insert_chunks WHERE id = 7") == 0
    assert q("SELECT count(*) FROM c_insert_chunks WHERE id = 8") == 1
    written_once("c_insert")


def test_a_new_text_replaces_its_rows_and_quick_updates_are_embedded_once():
    run(*tables_sql("c_update"), f"INSERT INTO c_update (id, body) VALUES (1, $n${NOTE}$n$)")
    assert wait_until(lambda: drained("c_update")) is not None
    before = q("SELECT count(*) FROM chunk_audit WHERE tbl = 'c_update_chunks'")
    pause()
    try:
        with connect(DB) as c:
            with c.transaction():
                c.execute("UPDATE c_update SET body = 'IMPRESSION: version 0.' WHERE id = 1")
                # never a chunk beside a text it was not cut from
                assert one(c, "SELECT count(*) FROM c_update_chunks WHERE id = 1") == 0
        for i in (1, 2):
            run(f"UPDATE c_update SET body = 'IMPRESSION: version {i}.' WHERE id = 1")
        assert q("SELECT count(*) FROM embed_queue WHERE relid = 'c_update'::regclass") == 1
    finally:
        resume()
    assert wait_until(lambda: drained("c_update")) is not None
    assert mismatches("c_update") == 0
    assert q("SELECT section FROM c_update_chunks WHERE id = 1") == "impression"
    # the three versions were embedded once, with the last text
    assert q("SELECT count(*) FROM chunk_audit WHERE tbl = 'c_update_chunks'") == before + 1


def test_other_columns_rollbacks_and_deletes():
    run(*tables_sql("c_other"), f"INSERT INTO c_other (id, body) VALUES (1, $n${NOTE}$n$), (2, 'PLAN: rest.')")
    assert wait_until(lambda: drained("c_other")) is not None
    before = q("SELECT count(*) FROM chunk_audit WHERE tbl = 'c_other_chunks'")
    run("UPDATE c_other SET other = other + 1")
    with connect(DB) as c:
        c.execute("BEGIN")
        c.execute("UPDATE c_other SET body = 'PLAN: changed.' WHERE id = 1")
        c.execute("ROLLBACK")
    assert q("SELECT count(*) FROM embed_queue WHERE relid = 'c_other'::regclass") == 0
    time.sleep(1)
    assert q("SELECT count(*) FROM chunk_audit WHERE tbl = 'c_other_chunks'") == before
    assert mismatches("c_other") == 0
    # a deleted note leaves no chunk rows (here by the foreign key's cascade)
    run("DELETE FROM c_other WHERE id = 1")
    assert q("SELECT count(*) FROM c_other_chunks WHERE id = 1") == 0
    assert mismatches("c_other") == 0


def test_enqueue_fills_a_chunk_table_for_stored_notes_resumably():
    run("CREATE TABLE c_stored (id int PRIMARY KEY, body text)",
        "CREATE TABLE c_stored_chunks (id int, chunk int, section text, char_start int, char_end int, "
        "tokens int, embedding real[], model text)",
        "INSERT INTO c_stored SELECT g, 'HPI: note ' || g || '. PLAN: rest.' FROM generate_series(1, 30) g",
        "CREATE TRIGGER chunks BEFORE INSERT OR UPDATE OR DELETE ON c_stored FOR EACH ROW "
        "EXECUTE FUNCTION embed_chunks_trigger('body', 'c_stored_chunks', 'embedding', 'model')")
    pause()
    try:
        assert q("SELECT embed_queue_enqueue('c_stored')") == 30
    finally:
        resume()
    assert wait_until(lambda: drained("c_stored")) is not None
    assert mismatches("c_stored") == 0
    # done: nothing to queue; a note that lost its rows is queued again
    assert q("SELECT embed_queue_enqueue('c_stored')") == 0
    run("DELETE FROM c_stored_chunks WHERE id = 7")
    assert q("SELECT embed_queue_enqueue('c_stored')") == 1
    assert wait_until(lambda: drained("c_stored")) is not None
    assert mismatches("c_stored") == 0
    # the trigger's DELETE: the note's rows go with it
    run("DELETE FROM c_stored WHERE id = 7")
    assert q("SELECT count(*) FROM c_stored_chunks WHERE id = 7") == 0


def test_partitioned_notes_with_a_key_of_two_columns():
    run("CREATE TABLE c_part (site text, id int, body text, PRIMARY KEY (site, id)) PARTITION BY LIST (site)",
        "CREATE TABLE c_part_a PARTITION OF c_part FOR VALUES IN ('a')",
        "CREATE TABLE c_part_b PARTITION OF c_part FOR VALUES IN ('b')",
        "CREATE TABLE c_part_chunks (site text, id int, chunk int, section text, char_start int, "
        "char_end int, tokens int, embedding real[], model text)",
        "CREATE TRIGGER chunks BEFORE INSERT OR UPDATE OR DELETE ON c_part FOR EACH ROW "
        "EXECUTE FUNCTION embed_chunks_trigger('body', 'c_part_chunks', 'embedding', 'model')",
        "INSERT INTO c_part SELECT s, g, 'HPI: site ' || s || ' note ' || g || '. PLAN: rest.' "
        "FROM generate_series(1, 5) g, unnest(ARRAY['a', 'b']) s")
    assert wait_until(lambda: drained("c_part_a") and drained("c_part_b")) is not None
    assert mismatches("c_part", keys="site, id") == 0
    # a note moved to another partition keeps its rows in step
    run("UPDATE c_part SET site = 'b', id = 10, body = 'PLAN: moved.' WHERE site = 'a' AND id = 1")
    assert q("SELECT count(*) FROM c_part_chunks WHERE site = 'a' AND id = 1") == 0
    assert wait_until(lambda: drained("c_part_b")) is not None
    assert mismatches("c_part", keys="site, id") == 0


def long_notes(table, n):
    run(*tables_sql(table),
        f"INSERT INTO {table} (id, body) SELECT g, replace($n${LONG}$n$, '{{n}}', g::text) "
        f"FROM generate_series(1, {n}) g")


def busy_worker():
    found = {}

    def busy():
        with connect(DB) as c:
            r = c.execute("SELECT pid FROM embed_queue_workers() w JOIN pg_database d ON d.oid = w.datid "
                          "WHERE d.datname = %s AND rows_in_flight > 0 LIMIT 1", (DB,)).fetchone()
        if r:
            found["pid"] = r[0]
        return bool(r)

    assert wait_until(busy, 60, 0.05) is not None
    time.sleep(0.3)
    return found["pid"]


def _up():
    try:
        return q("SELECT true")
    except Exception:
        return False


@pytest.mark.parametrize("how", ["cancel", "terminate", "kill -9"])
def test_a_worker_stopped_mid_batch_writes_every_chunk_exactly_once(how):
    table = "c_stop_" + how.split()[0]
    long_notes(table, 60)
    pid = busy_worker()
    if how == "cancel":
        assert q(f"SELECT pg_cancel_backend({pid})")
    elif how == "terminate":
        assert q(f"SELECT pg_terminate_backend({pid})")
    else:
        os.kill(pid, signal.SIGKILL)
        time.sleep(1)
    assert wait_until(lambda: _up() and drained(table), 240) is not None
    assert mismatches(table) == 0
    written_once(table)


def test_a_failing_note_is_parked_with_its_key_and_sqlstate_never_its_text():
    run(*tables_sql("c_fail", vector="real[]"),
        # a check the worker's rows break: windows longer than 5 tokens
        "ALTER TABLE c_fail_chunks ADD CHECK (tokens <= 5)",
        "INSERT INTO c_fail (id, body) VALUES (1, 'PLAN: secret words of a long plan here.'), (2, 'PLAN: ok.')")
    assert wait_until(lambda: q(
        "SELECT count(*) FROM embed_queue WHERE relid = 'c_fail'::regclass AND parked_at IS NULL") == 0) is not None
    key, sqlstate, message = None, None, None
    with connect(DB) as c:
        key, sqlstate, message = c.execute(
            "SELECT key, sqlstate, message FROM embed_queue_failures WHERE relation = 'c_fail'::regclass").fetchone()
    assert key == ["1"] and sqlstate == "23514"
    # the constraint's own message is not kept (its detail would quote the row)
    assert message.startswith("SQLSTATE 23514") and "secret" not in message
    assert q("SELECT count(*) FROM c_fail_chunks WHERE id = 2") == 1
    assert q("SELECT count(*) FROM c_fail_chunks WHERE id = 1") == 0


def test_a_chunk_table_with_a_foreign_trigger_is_refused():
    """The worker writes chunk rows as the notes table's owner: a trigger on
    the chunk table whose function another role owns would run with those
    rights."""
    run("CREATE ROLE c_owner", "CREATE ROLE c_other_role",
        "CREATE TABLE c_sec (id int PRIMARY KEY, body text)",
        "CREATE TABLE c_sec_chunks (id int, chunk int, section text, char_start int, char_end int, "
        "tokens int, embedding real[])",
        "ALTER TABLE c_sec OWNER TO c_owner", "ALTER TABLE c_sec_chunks OWNER TO c_owner",
        "CREATE FUNCTION c_other_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "ALTER FUNCTION c_other_fn() OWNER TO c_other_role",
        "CREATE TRIGGER other BEFORE INSERT ON c_sec_chunks FOR EACH ROW EXECUTE FUNCTION c_other_fn()",
        "CREATE TRIGGER chunks BEFORE INSERT OR UPDATE ON c_sec FOR EACH ROW "
        "EXECUTE FUNCTION embed_chunks_trigger('body', 'c_sec_chunks')",
        "INSERT INTO c_sec VALUES (1, 'PLAN: rest.')")
    assert wait_until(lambda: q(
        "SELECT count(*) FROM embed_queue WHERE relid = 'c_sec'::regclass AND parked_at IS NULL") == 0) is not None
    assert q("SELECT sqlstate FROM embed_queue_failures WHERE relation = 'c_sec'::regclass") == "42501"
    assert "trigger function" in q("SELECT message FROM embed_queue_failures WHERE relation = 'c_sec'::regclass")
    assert q("SELECT count(*) FROM c_sec_chunks") == 0
    run("DROP TABLE c_sec, c_sec_chunks", "DROP FUNCTION c_other_fn()", "DROP ROLE c_owner", "DROP ROLE c_other_role")


def refused(sql):
    """The SQLSTATE and message of the error `sql` raises (None: none)."""
    try:
        run(sql)
    except psycopg.Error as e:
        return e.sqlstate, e.diag.message_primary
    return None


def failure_of(table):
    with connect(DB) as c:
        return c.execute("SELECT sqlstate, message FROM embed_queue_failures WHERE relation = %s::regclass",
                         (table,)).fetchone()


def test_a_chunk_table_owned_by_a_role_with_fewer_rights_is_refused():
    """The worker writes as the notes table's owner: a chunk table (or a
    partition of one) owned by a role without its rights would run that
    role's code (here a column default) with them.  Refused at the first
    write, and by the worker for keys queued before the owner changed."""
    run("CREATE ROLE c_notes_owner", "CREATE ROLE c_lesser",
        "CREATE TABLE c_own (id int PRIMARY KEY, body text)",
        "CREATE TABLE c_own_chunks (id int, chunk int, section text, char_start int, char_end int, "
        "tokens int, embedding real[], seen text DEFAULT current_user)",
        "ALTER TABLE c_own OWNER TO c_notes_owner",
        "ALTER TABLE c_own_chunks OWNER TO c_lesser",
        "GRANT INSERT, DELETE, SELECT ON c_own_chunks TO c_notes_owner",
        "CREATE TRIGGER chunks BEFORE INSERT OR UPDATE ON c_own FOR EACH ROW "
        "EXECUTE FUNCTION embed_chunks_trigger('body', 'c_own_chunks')")
    sqlstate, message = refused("INSERT INTO c_own VALUES (1, 'PLAN: rest.')")
    assert sqlstate == "42501" and "chunk table's owner" in message
    # owned right, the note's rows arrive; then a key queued while workers
    # are paused meets a chunk table whose owner changed
    run("ALTER TABLE c_own_chunks OWNER TO c_notes_owner", "INSERT INTO c_own VALUES (1, 'PLAN: rest.')")
    assert wait_until(lambda: drained("c_own")) is not None
    assert q("SELECT count(*) FROM c_own_chunks") == 1
    pause()
    try:
        run("UPDATE c_own SET body = 'PLAN: walk.' WHERE id = 1",
            "ALTER TABLE c_own_chunks OWNER TO c_lesser",
            "GRANT INSERT, DELETE, SELECT ON c_own_chunks TO c_notes_owner")
    finally:
        resume()
    assert wait_until(lambda: q(
        "SELECT count(*) FROM embed_queue WHERE relid = 'c_own'::regclass AND parked_at IS NULL") == 0) is not None
    sqlstate, message = failure_of("c_own")
    assert sqlstate == "42501" and "chunk table's owner" in message
    assert q("SELECT count(*) FROM c_own_chunks") == 0
    run("DROP TABLE c_own, c_own_chunks", "DROP ROLE c_notes_owner", "DROP ROLE c_lesser")


def test_a_trigger_on_a_partition_of_the_chunk_table_is_checked_too():
    run("CREATE ROLE c_ptree_role",
        "CREATE TABLE c_ptree (id int PRIMARY KEY, body text)",
        "CREATE TABLE c_ptree_chunks (id int, chunk int, section text, char_start int, char_end int, "
        "tokens int, embedding real[]) PARTITION BY HASH (id)",
        "CREATE TABLE c_ptree_chunks_0 PARTITION OF c_ptree_chunks FOR VALUES WITH (MODULUS 1, REMAINDER 0)",
        "CREATE FUNCTION c_ptree_fn() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$",
        "ALTER FUNCTION c_ptree_fn() OWNER TO c_ptree_role",
        "CREATE TRIGGER other BEFORE INSERT ON c_ptree_chunks_0 FOR EACH ROW EXECUTE FUNCTION c_ptree_fn()",
        "CREATE TRIGGER chunks BEFORE INSERT OR UPDATE ON c_ptree FOR EACH ROW "
        "EXECUTE FUNCTION embed_chunks_trigger('body', 'c_ptree_chunks')",
        "INSERT INTO c_ptree VALUES (1, 'PLAN: rest.')")
    assert wait_until(lambda: q(
        "SELECT count(*) FROM embed_queue WHERE relid = 'c_ptree'::regclass AND parked_at IS NULL") == 0) is not None
    sqlstate, message = failure_of("c_ptree")
    assert sqlstate == "42501" and "trigger function" in message
    assert q("SELECT count(*) FROM c_ptree_chunks") == 0
    # without that trigger the same partitioned chunk table is filled
    run("DROP TRIGGER other ON c_ptree_chunks_0", "SELECT embed_queue_retry('c_ptree')")
    assert wait_until(lambda: drained("c_ptree")) is not None
    assert q("SELECT count(*) FROM c_ptree_chunks") == 1
    run("DROP TABLE c_ptree, c_ptree_chunks", "DROP FUNCTION c_ptree_fn()", "DROP ROLE c_ptree_role")


@pytest.mark.parametrize("trigger", [
    "BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW WHEN (NEW.other = 0) "
    "EXECUTE FUNCTION embed_chunks_trigger('body', '{t}_chunks')",
    "BEFORE INSERT OR UPDATE OF id ON {t} FOR EACH ROW EXECUTE FUNCTION embed_chunks_trigger('body', '{t}_chunks')",
], ids=["when", "update_of"])
def test_a_trigger_that_could_miss_a_text_change_is_refused(trigger):
    t = "c_partial"
    run(*tables_sql(t)[:3], f"CREATE TRIGGER chunks {trigger.format(t=t)}")
    sqlstate, message = refused(f"INSERT INTO {t} (id, body) VALUES (1, 'PLAN: rest.')")
    assert sqlstate == "39P01" and "every change" in message
    assert q(f"SELECT count(*) FROM {t}") == 0
    run(f"DROP TABLE {t}_chunks, {t}")


def test_a_second_queue_trigger_on_a_table_is_refused():
    """The queue holds one entry per note: two triggers would leave one of
    them unserved."""
    t = "c_two"
    run(*tables_sql(t)[:4], f"ALTER TABLE {t} ADD COLUMN v real[]",
        f"CREATE TRIGGER vector BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW "
        "EXECUTE FUNCTION embed_queue_trigger('body', 'v')")
    sqlstate, message = refused(f"INSERT INTO {t} (id, body) VALUES (1, 'PLAN: rest.')")
    assert sqlstate == "39P01" and "one embed_queue_trigger" in message
    run(f"DROP TRIGGER vector ON {t}", f"INSERT INTO {t} (id, body) VALUES (1, 'PLAN: rest.')")
    assert wait_until(lambda: drained(t)) is not None
    assert mismatches(t) == 0
    run(f"DROP TABLE {t}_chunks, {t}")


def test_an_insert_that_does_nothing_on_conflict_keeps_the_notes_rows():
    """BEFORE INSERT fires before the conflict is found: the stored note's
    rows are deleted, and queued again from the text it keeps."""
    t = "c_conflict"
    run(*tables_sql(t), f"INSERT INTO {t} (id, body) VALUES (1, $n${NOTE}$n$)")
    assert wait_until(lambda: drained(t)) is not None
    rows = q(f"SELECT count(*) FROM {t}_chunks")
    assert rows > 1
    for body in ("NULL", "'PLAN: other.'"):
        run(f"INSERT INTO {t} (id, body) VALUES (1, {body}) ON CONFLICT (id) DO NOTHING")
        assert wait_until(lambda: drained(t)) is not None
        assert q(f"SELECT count(*) FROM {t}_chunks") == rows
        assert mismatches(t) == 0
