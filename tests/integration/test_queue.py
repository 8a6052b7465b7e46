"""The embedding queue and its background workers, against the scratch
cluster (conftest.py) (restarted by some tests, with and without
clinembed in shared_preload_libraries).

Every table here has an audit trigger that records each write of a vector
in the same transaction as the write, so "embedded exactly once" is counted,
not assumed: a batch rolled back (cancel, terminate, crash) leaves no audit
row.

    ONLY=queue bash scripts/test.sh            # the tier
    .venv/bin/python -m pytest tests/integration/test_queue.py -k cancel  # one test
"""

import os
import signal
import time

import pytest

from conftest import ServerLog, alter_system, connect, drop_database, fresh_database, one, restart
from conftest import wait_until as wait_for

pytestmark = pytest.mark.every_major

DB = "clinembed_queue"
WAIT_S = float(os.environ.get("QUEUE_WAIT_S", "90"))
SHORT = "Patient seen in clinic, afebrile, plan unchanged."
# About 400 tokens: a batch of 64 takes seconds, long enough to hit mid-batch.
LONG = "Note {}. " + "Patient afebrile, vitals stable, lungs clear, plan unchanged. " * 40

AUDIT = """
CREATE TABLE audit (tbl text, id int, body text, emb real[], at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION audit_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.emb IS NOT NULL AND NEW.emb IS DISTINCT FROM OLD.emb THEN
        INSERT INTO public.audit (tbl, id, body, emb) VALUES (TG_TABLE_NAME, NEW.id, NEW.body, NEW.emb::real[]);
    END IF;
    RETURN NEW;
END $$;
"""


def table_sql(name, extra=""):
    return [
        f"CREATE TABLE {name} (id int PRIMARY KEY, body text, other int DEFAULT 0, emb real[], model text{extra})",
        f"CREATE TRIGGER q BEFORE INSERT OR UPDATE ON {name} FOR EACH ROW "
        f"EXECUTE FUNCTION embed_queue_trigger('body', 'emb', 'model')",
        f"CREATE TRIGGER zz_audit AFTER UPDATE ON {name} FOR EACH ROW EXECUTE FUNCTION audit_write()",
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
    """conftest.wait_until with this tier's patience (QUEUE_WAIT_S)."""
    return wait_for(predicate, limit_s, step)


def drained(table):
    """Nothing of `table` queued, parked rows included (a parked row is a
    failure, which only the tests that make one expect)."""
    return q("SELECT count(*) FROM embed_queue WHERE relid = %s::regclass", table) == 0


def workers():
    return q("SELECT count(*) FROM embed_queue_workers() w JOIN pg_database d ON d.oid = w.datid "
             "WHERE d.datname = %s", DB)


def worker_pids():
    with connect(DB) as c:
        return [r[0] for r in c.execute(
            "SELECT w.pid FROM embed_queue_workers() w JOIN pg_database d ON d.oid = w.datid "
            "WHERE d.datname = %s AND w.state = 'running'", (DB,)).fetchall()]


def per_database(value):
    """Sets clinembed.queue_max_workers_per_database (None: the default) and
    waits until new sessions see it (a reload is asynchronous)."""
    alter_system({"clinembed.queue_max_workers_per_database": value})
    want = value or "1"

    def seen():
        with connect(DB) as c:
            c.execute("LOAD 'clinembed'")
            return one(c, "SHOW clinembed.queue_max_workers_per_database") == want

    assert wait_until(seen, 10, 0.05) is not None


def pause():
    """No worker for this database: none may start, and the running ones end."""
    per_database("0")
    for pid in worker_pids():
        run(f"SELECT pg_terminate_backend({pid})")
    assert wait_until(lambda: workers() == 0, 30) is not None


def resume():
    per_database(None)
    run("SELECT embed_queue_start()")


def exactly_once(table):
    """Every row with text has the vector of its current text, written once
    for that text; rows without text have none."""
    assert q(f"SELECT count(*) FROM {table} WHERE body IS NOT NULL AND emb IS NULL") == 0
    assert q(f"SELECT count(*) FROM {table} WHERE body IS NULL AND emb IS NOT NULL") == 0
    # one audit row per (row, text) version, and the row holds the last one
    assert q(f"SELECT count(*) FROM (SELECT id, body FROM audit WHERE tbl = '{table}' "
             "GROUP BY id, body HAVING count(*) > 1) d") == 0
    assert q(f"SELECT count(*) FROM {table} t WHERE t.emb IS NOT NULL AND NOT EXISTS "
             f"(SELECT FROM audit a WHERE a.tbl = '{table}' AND a.id = t.id AND a.body = t.body)") == 0


def test_insert_embeds_with_the_model_of_embed_text():
    run(*table_sql("t_insert"),
        "INSERT INTO t_insert (id, body) SELECT g, 'Note ' || g || '. ' || %s FROM generate_series(1, 20) g"
        .replace("%s", "'" + SHORT + "'"))
    assert wait_until(lambda: drained("t_insert")) is not None
    assert q("SELECT count(*) FROM t_insert WHERE emb IS NOT NULL") == 20
    assert q("SELECT bool_and(emb = embed_text(body) AND model = embed_model_id()) FROM t_insert")
    exactly_once("t_insert")


def test_the_trigger_clears_the_vector_in_the_writing_transaction():
    run(*table_sql("t_clear"), f"INSERT INTO t_clear (id, body) VALUES (1, '{SHORT}')")
    assert wait_until(lambda: q("SELECT emb IS NOT NULL FROM t_clear WHERE id = 1")) is not None
    with connect(DB) as c:
        with c.transaction():
            c.execute("UPDATE t_clear SET body = 'Changed text.' WHERE id = 1")
            # no vector describes a text it was not computed from
            assert one(c, "SELECT emb IS NULL AND model IS NULL FROM t_clear WHERE id = 1")
            assert one(c, "SELECT count(*) FROM embed_queue WHERE relid = 't_clear'::regclass") == 1
    assert wait_until(lambda: drained("t_clear")) is not None
    assert q("SELECT emb = embed_text('Changed text.') FROM t_clear WHERE id = 1")


def test_three_quick_updates_embed_once_with_the_latest_text():
    run(*table_sql("t_updates"), f"INSERT INTO t_updates (id, body) VALUES (1, '{SHORT}')")
    assert wait_until(lambda: drained("t_updates")) is not None
    pause()
    try:
        for i in range(3):
            run(f"UPDATE t_updates SET body = 'Version {i}. {SHORT}' WHERE id = 1")
        assert q("SELECT count(*) FROM embed_queue WHERE relid = 't_updates'::regclass") == 1
    finally:
        resume()
    assert wait_until(lambda: drained("t_updates")) is not None
    assert q(f"SELECT emb = embed_text('Version 2. {SHORT}') FROM t_updates WHERE id = 1")
    assert q("SELECT count(*) FROM audit WHERE tbl = 't_updates' AND body LIKE 'Version%%'") == 1
    exactly_once("t_updates")


def test_an_update_of_another_column_queues_nothing():
    run(*table_sql("t_other"), f"INSERT INTO t_other (id, body) VALUES (1, '{SHORT}')")
    assert wait_until(lambda: drained("t_other")) is not None
    writes = q("SELECT count(*) FROM audit WHERE tbl = 't_other'")
    run("UPDATE t_other SET other = other + 1 WHERE id = 1")
    assert q("SELECT count(*) FROM embed_queue WHERE relid = 't_other'::regclass") == 0
    assert q("SELECT emb IS NOT NULL FROM t_other WHERE id = 1")
    assert q("SELECT count(*) FROM audit WHERE tbl = 't_other'") == writes


def test_rollback_queues_nothing():
    run(*table_sql("t_rollback"))
    with connect(DB) as c:
        c.execute("BEGIN")
        c.execute(f"INSERT INTO t_rollback (id, body) VALUES (1, '{SHORT}')")
        c.execute("ROLLBACK")
    assert q("SELECT count(*) FROM embed_queue WHERE relid = 't_rollback'::regclass") == 0


def test_a_row_deleted_before_its_turn_is_dropped_quietly():
    run(*table_sql("t_delete"))
    pause()
    try:
        run(f"INSERT INTO t_delete (id, body) VALUES (1, '{SHORT}'), (2, '{SHORT}')",
            "DELETE FROM t_delete WHERE id = 1")
        assert q("SELECT count(*) FROM embed_queue WHERE relid = 't_delete'::regclass") == 2
    finally:
        resume()
    assert wait_until(lambda: q("SELECT count(*) FROM embed_queue WHERE relid = 't_delete'::regclass") == 0) is not None
    assert q("SELECT count(*) FROM embed_queue_failures WHERE relation = 't_delete'::regclass") == 0
    assert q("SELECT count(*) FROM audit WHERE tbl = 't_delete' AND id = 1") == 0
    assert q("SELECT emb IS NOT NULL FROM t_delete WHERE id = 2")


def test_a_failing_row_is_parked_without_its_text_and_the_rest_proceed(server_log):
    sentinel = "PHISENTINELQ9"
    run(*table_sql("t_fail", ", CONSTRAINT no13 CHECK (emb IS NULL OR id <> 13)"),
        f"INSERT INTO t_fail (id, body) SELECT g, 'Note {sentinel} ' || g FROM generate_series(1, 30) g")
    assert wait_until(lambda: q("SELECT count(*) FROM embed_queue_failures WHERE relation = 't_fail'::regclass "
                                "AND state = 'parked'") == 1) is not None
    assert q("SELECT count(*) FROM t_fail WHERE emb IS NOT NULL") == 29
    with connect(DB) as c:
        row = c.execute("SELECT key, attempts, sqlstate, message FROM embed_queue_failures "
                        "WHERE relation = 't_fail'::regclass").fetchone()
    assert row[0] == ["13"] and row[1] == 2 and row[2] == "23514"
    assert sentinel not in str(row)
    assert q("SELECT parked FROM embed_queue_status WHERE relation = 't_fail'::regclass") == 1
    log = server_log.text()
    assert "SQLSTATE 23514" in log
    assert sentinel not in log
    # fixed, and queued again
    run("ALTER TABLE t_fail DROP CONSTRAINT no13")
    assert q("SELECT embed_queue_retry('t_fail')") == 1
    assert wait_until(lambda: q("SELECT emb IS NOT NULL FROM t_fail WHERE id = 13")) is not None
    assert q("SELECT count(*) FROM embed_queue_failures WHERE relation = 't_fail'::regclass") == 0
    exactly_once("t_fail")


def test_a_failure_keeps_no_text_and_hides_rows_row_level_security_hides(server_log):
    # A user trigger fails with a message quoting the row's text (a failed
    # cast); a role may read the table, but a policy hides the row.  On
    # 0.10.0 the failures view showed that role the message, text and all.
    sentinel = "PHISENTINELRLS7"
    run("DROP ROLE IF EXISTS queue_reader", "CREATE ROLE queue_reader LOGIN",
        *table_sql("t_rls"),
        """CREATE FUNCTION cast_body() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.emb IS NOT NULL AND NEW.id = 1 THEN PERFORM NEW.body::int; END IF;
            RETURN NEW;
        END $$""",
        "CREATE TRIGGER a_cast BEFORE UPDATE ON t_rls FOR EACH ROW EXECUTE FUNCTION cast_body()",
        "GRANT SELECT ON t_rls TO queue_reader",
        "ALTER TABLE t_rls ENABLE ROW LEVEL SECURITY",
        "CREATE POLICY evens ON t_rls FOR SELECT TO queue_reader USING (id % 2 = 0)",
        f"INSERT INTO t_rls (id, body) VALUES (1, '{sentinel} chest pain'), (2, '{SHORT}')")
    assert wait_until(lambda: q("SELECT count(*) FROM embed_queue_failures WHERE relation = 't_rls'::regclass "
                                "AND state = 'parked'") == 1) is not None
    # the owner (whom the policy does not bind) sees the failure, without the text
    with connect(DB) as c:
        row = c.execute("SELECT key, sqlstate, message FROM embed_queue_failures "
                        "WHERE relation = 't_rls'::regclass").fetchone()
    assert row[0] == ["1"] and row[1] == "22P02"
    assert sentinel not in row[2] and "22P02" in row[2], row[2]
    # the reader sees counts, never keys or messages of rows a policy hides
    with connect(DB, user="queue_reader") as c:
        assert one(c, "SELECT count(*) FROM t_rls") == 1
        assert one(c, "SELECT count(*) FROM embed_queue_failures WHERE relation = 't_rls'::regclass") == 0
        assert one(c, "SELECT parked FROM embed_queue_status WHERE relation = 't_rls'::regclass") == 1
    assert sentinel not in server_log.text()
    assert q("SELECT emb IS NOT NULL FROM t_rls WHERE id = 2")


@pytest.mark.parametrize("queue_on", ["UPDATE", "UPDATE OF body, id"])
def test_a_trigger_that_rewrites_the_text_on_write_is_parked_not_looped(queue_on):
    # A user trigger appends a revision mark on every update, the worker's
    # write of the vector included.  On 0.10.0: with the queue trigger on
    # UPDATE OF body the row kept a vector of its previous text, nothing
    # queued; on every UPDATE, it was rewritten and embedded again for ever.
    table = "t_rev_all" if queue_on == "UPDATE" else "t_rev_of"
    run(f"CREATE TABLE {table} (id int PRIMARY KEY, body text, emb real[], model text)",
        f"CREATE TRIGGER q BEFORE INSERT OR {queue_on} ON {table} FOR EACH ROW "
        f"EXECUTE FUNCTION embed_queue_trigger('body', 'emb', 'model')",
        f"CREATE TRIGGER zz_audit AFTER UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION audit_write()",
        """CREATE OR REPLACE FUNCTION revise() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW.body := NEW.body || ' [rev]'; RETURN NEW; END $$""",
        f"CREATE TRIGGER a_rev BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION revise()",
        f"INSERT INTO {table} (id, body) VALUES (1, '{SHORT}'), (2, '{SHORT} two')")
    assert wait_until(lambda: q(f"SELECT count(*) FROM embed_queue_failures WHERE relation = '{table}'::regclass "
                                "AND state = 'parked'") == 2) is not None
    with connect(DB) as c:
        rows = c.execute("SELECT sqlstate, attempts, message FROM embed_queue_failures "
                         f"WHERE relation = '{table}'::regclass").fetchall()
    assert all(r[0] == "27000" and r[1] == 2 and "changed the text" in r[2] for r in rows), rows
    # every try rolled back: the texts as written, no vector, none ever written
    assert q(f"SELECT count(*) FROM {table} WHERE body LIKE '%[rev]%' OR emb IS NOT NULL") == 0
    assert q(f"SELECT count(*) FROM audit WHERE tbl = '{table}'") == 0
    # fixed, and queued again: embedded
    run(f"DROP TRIGGER a_rev ON {table}")
    assert q(f"SELECT embed_queue_retry('{table}')") == 2
    assert wait_until(lambda: drained(table)) is not None
    exactly_once(table)


def test_a_table_whose_rows_all_fail_starves_no_other():
    # Every row of t_bad fails (a check constraint refuses any vector), and
    # each failed batch is retried row by row: on 0.10.0 all of them went
    # before a table queued after them, for minutes with an audit trigger
    # that failed in the worker.  Now a failed batch hands the next turn to
    # another table with rows due.
    pause()
    try:
        run(*table_sql("t_bad", ", CONSTRAINT never CHECK (emb IS NULL)"),
            f"INSERT INTO t_bad (id, body) SELECT g, '{SHORT} ' || g FROM generate_series(1, 400) g",
            *table_sql("t_good"),
            f"INSERT INTO t_good (id, body) SELECT g, '{SHORT} ' || g FROM generate_series(1, 20) g")
    finally:
        resume()
    assert wait_until(lambda: drained("t_good")) is not None
    # t_good was done while most of t_bad had not been tried once
    untried = q("SELECT count(*) FROM embed_queue WHERE relid = 't_bad'::regclass AND attempts = 0")
    assert untried > 200, untried
    exactly_once("t_good")
    run("DROP TABLE t_bad")


def test_a_direct_call_of_the_trigger_is_refused():
    with connect(DB) as c:
        with pytest.raises(Exception) as e:
            c.execute("SELECT embed_queue_trigger()")
    assert e.value.sqlstate == "39P01" and "only be called as a trigger" in str(e.value)
    assert e.value.diag.message_detail and e.value.diag.message_hint


def test_the_worker_cannot_run_code_as_a_superuser():
    marker = "/tmp/clinembed-queue-superuser"
    if os.path.exists(marker):
        os.remove(marker)
    run("DROP ROLE IF EXISTS queue_alice", "CREATE ROLE queue_alice LOGIN",
        "GRANT CREATE ON SCHEMA public TO queue_alice")
    with connect(DB, user="queue_alice") as c:
        c.execute("CREATE TABLE t_owned (id int PRIMARY KEY, body text, emb real[])")
        c.execute(f"""CREATE FUNCTION escalate() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.emb IS NOT NULL AND NEW.id = 1 THEN ALTER ROLE queue_alice SUPERUSER; END IF;
                IF NEW.emb IS NOT NULL AND NEW.id = 2 THEN COPY (SELECT 1) TO PROGRAM 'touch {marker}'; END IF;
                IF NEW.emb IS NOT NULL AND NEW.id = 3 THEN
                    INSERT INTO public.who VALUES (current_user, session_user, current_setting('search_path'));
                END IF;
                RETURN NEW;
            END $$""")
        c.execute("CREATE TABLE who (cur text, sess text, path text)")
        c.execute("CREATE TRIGGER a AFTER UPDATE ON t_owned FOR EACH ROW EXECUTE FUNCTION escalate()")
        c.execute("CREATE TRIGGER q BEFORE INSERT OR UPDATE ON t_owned FOR EACH ROW "
                  "EXECUTE FUNCTION embed_queue_trigger('body', 'emb')")
        c.execute(f"INSERT INTO t_owned VALUES (1, '{SHORT}'), (2, '{SHORT}'), (3, '{SHORT}')")
    assert wait_until(lambda: q("SELECT count(*) FROM embed_queue_failures WHERE relation = 't_owned'::regclass "
                                "AND state = 'parked'") == 2) is not None
    assert not q("SELECT rolsuper FROM pg_roles WHERE rolname = 'queue_alice'")
    assert not os.path.exists(marker)
    assert q("SELECT string_agg(sqlstate, ',' ORDER BY key) FROM embed_queue_failures "
             "WHERE relation = 't_owned'::regclass") == "42501,42501"
    # the row whose trigger did only what its owner may was written as the owner
    assert q("SELECT cur || '|' || path FROM who") == "queue_alice|pg_catalog, pg_temp"
    assert q("SELECT emb IS NOT NULL FROM t_owned WHERE id = 3")


def test_a_key_changed_before_its_turn_is_queued_again():
    pause()
    try:
        run(*table_sql("t_rekey"))
        # inserted and re-keyed in one transaction
        with connect(DB) as c:
            with c.transaction():
                c.execute(f"INSERT INTO t_rekey (id, body) VALUES (1, '{SHORT} one')")
                c.execute("UPDATE t_rekey SET id = 101 WHERE id = 1")
        # re-keyed while a backlog waits, twice
        run(f"INSERT INTO t_rekey (id, body) VALUES (2, '{SHORT} two')",
            "UPDATE t_rekey SET id = 102 WHERE id = 2", "UPDATE t_rekey SET id = 202 WHERE id = 102")
    finally:
        resume()
    assert wait_until(lambda: drained("t_rekey")) is not None
    assert q("SELECT string_agg(id::text, ',' ORDER BY id) FROM t_rekey WHERE emb IS NOT NULL") == "101,202"
    assert q("SELECT bool_and(emb = embed_text(body)) FROM t_rekey")
    exactly_once("t_rekey")


def test_a_primary_key_replaced_while_keys_wait_loses_no_row():
    # Keys queued under one primary key, then the table's primary key moved
    # to another column: on 0.10.0 the worker looked the old keys up in the
    # new column, found nothing and dropped them; the rows kept no vector,
    # with nothing pending and no failure.
    pause()
    try:
        run("CREATE TABLE t_repk (id int PRIMARY KEY, code text NOT NULL UNIQUE, body text, emb real[], model text)",
            "CREATE TRIGGER q BEFORE INSERT OR UPDATE ON t_repk FOR EACH ROW "
            "EXECUTE FUNCTION embed_queue_trigger('body', 'emb', 'model')",
            "CREATE TRIGGER zz_audit AFTER UPDATE ON t_repk FOR EACH ROW EXECUTE FUNCTION audit_write()",
            f"INSERT INTO t_repk (id, code, body) SELECT g, 'c' || g, '{SHORT} ' || g FROM generate_series(1, 5) g",
            "ALTER TABLE t_repk DROP CONSTRAINT t_repk_pkey, ADD PRIMARY KEY (code)")
        assert q("SELECT count(*) FROM embed_queue WHERE relid = 't_repk'::regclass") == 5
    finally:
        resume()
    assert wait_until(lambda: q("SELECT count(*) FROM t_repk WHERE emb IS NOT NULL") == 5) is not None
    assert wait_until(lambda: drained("t_repk")) is not None
    assert q("SELECT bool_and(emb = embed_text(body)) FROM t_repk")
    exactly_once("t_repk")


def test_an_update_of_list_without_the_key_is_refused():
    run("CREATE TABLE t_of (id int PRIMARY KEY, body text, emb real[])",
        "CREATE TRIGGER q BEFORE INSERT OR UPDATE OF body ON t_of FOR EACH ROW "
        "EXECUTE FUNCTION embed_queue_trigger('body', 'emb')")
    with connect(DB) as c:
        with pytest.raises(Exception) as e:
            c.execute(f"INSERT INTO t_of VALUES (1, '{SHORT}')")
    assert e.value.sqlstate == "39P01" and "UPDATE OF" in str(e.value)
    assert e.value.diag.message_detail and e.value.diag.message_hint
    run("DROP TRIGGER q ON t_of", "CREATE TRIGGER q BEFORE INSERT OR UPDATE OF body, id ON t_of FOR EACH ROW "
        "EXECUTE FUNCTION embed_queue_trigger('body', 'emb')",
        f"INSERT INTO t_of VALUES (1, '{SHORT}')")
    assert wait_until(lambda: q("SELECT emb IS NOT NULL FROM t_of WHERE id = 1")) is not None


def long_notes(table, n):
    run(*table_sql(table),
        f"INSERT INTO {table} (id, body) SELECT g, format($f${LONG}$f$, g) FROM generate_series(1, {n}) g")


def busy_worker():
    """The pid of a worker with a batch in flight."""
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


def test_cancel_aborts_the_batch_and_the_worker_goes_on(server_log):
    long_notes("t_cancel", 150)
    pid = busy_worker()
    assert q(f"SELECT pg_cancel_backend({pid})")
    # the same process takes the next batch
    assert wait_until(lambda: q("SELECT rows_in_flight > 0 FROM embed_queue_workers() WHERE pid = %s", pid),
                      30, 0.05) is not None
    assert wait_until(lambda: drained("t_cancel")) is not None
    exactly_once("t_cancel")
    assert server_log.crashes() == []


def test_terminate_mid_batch_loses_nothing():
    long_notes("t_terminate", 150)
    pid = busy_worker()
    assert q(f"SELECT pg_terminate_backend({pid})")
    assert wait_until(lambda: drained("t_terminate")) is not None
    exactly_once("t_terminate")


def test_kill_9_and_crash_recovery_embed_every_row_exactly_once():
    long_notes("t_crash", 150)
    pid = busy_worker()
    os.kill(pid, signal.SIGKILL)
    time.sleep(1)
    assert wait_until(lambda: _up() and drained("t_crash")) is not None
    exactly_once("t_crash")


def _up():
    try:
        return q("SELECT true")
    except Exception:
        return False


def test_two_workers_never_embed_the_same_row_version_twice():
    per_database("2")
    try:
        seen = []
        long_notes("t_two", 300)

        def two():
            seen.append(workers())
            return max(seen) >= 2 or drained("t_two")

        wait_until(two, 60, 0.05)
        assert wait_until(lambda: drained("t_two")) is not None
        assert max(seen) == 2
        exactly_once("t_two")
    finally:
        per_database(None)


def test_status_from_another_session():
    long_notes("t_status", 100)
    pid = busy_worker()
    with connect(DB) as c:
        row = c.execute("SELECT pending, in_flight, lag > interval '0' FROM embed_queue_status "
                        "WHERE relation = 't_status'::regclass").fetchone()
        assert row[0] > 0 and row[1] > 0 and row[2]
        assert one(c, "SELECT state FROM embed_queue_workers() WHERE pid = %s", pid) == "running"
        assert one(c, "SELECT backend_type FROM pg_stat_activity WHERE pid = %s", pid) == "clinembed queue worker"
    # below the backends that write notes: clinembed.queue_worker_nice, 10 by default
    with open(f"/proc/{pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[16]) == 10
    assert wait_until(lambda: drained("t_status")) is not None
    assert q("SELECT rows_per_second > 0 FROM embed_queue_status WHERE relation = 't_status'::regclass")


def test_enqueue_queues_rows_without_a_current_vector():
    run("CREATE TABLE t_enqueue (id int PRIMARY KEY, body text, emb real[], model text)",
        f"INSERT INTO t_enqueue (id, body) SELECT g, '{SHORT} ' || g FROM generate_series(1, 40) g",
        "INSERT INTO t_enqueue (id, body, emb, model) VALUES (41, 'stale', '{1,2}', 'another-model@1')")
    with connect(DB) as c:
        with pytest.raises(Exception, match="no queue trigger"):
            c.execute("SELECT embed_queue_enqueue('t_enqueue')")
    run("CREATE TRIGGER q BEFORE INSERT OR UPDATE ON t_enqueue FOR EACH ROW "
        "EXECUTE FUNCTION embed_queue_trigger('body', 'emb', 'model')")
    assert q("SELECT embed_queue_enqueue('t_enqueue')") == 41
    assert wait_until(lambda: drained("t_enqueue")) is not None
    assert q("SELECT bool_and(emb = embed_text(body) AND model = embed_model_id()) FROM t_enqueue")
    assert q("SELECT embed_queue_enqueue('t_enqueue')") == 0


def test_the_trigger_refuses_what_it_cannot_do():
    run("CREATE TABLE t_nopk (id int, body text, emb real[])",
        "CREATE TRIGGER q BEFORE INSERT ON t_nopk FOR EACH ROW EXECUTE FUNCTION embed_queue_trigger('body', 'emb')",
        "CREATE TABLE t_after (id int PRIMARY KEY, body text, emb real[])",
        "CREATE TRIGGER q AFTER INSERT ON t_after FOR EACH ROW EXECUTE FUNCTION embed_queue_trigger('body', 'emb')",
        "CREATE TABLE t_badcol (id int PRIMARY KEY, body text, emb real[])",
        "CREATE TRIGGER q BEFORE INSERT ON t_badcol FOR EACH ROW EXECUTE FUNCTION embed_queue_trigger('nope', 'emb')")
    for table, state, message in [("t_nopk", "42P16", "needs a primary key"),
                                  ("t_after", "39P01", "must fire BEFORE"),
                                  ("t_badcol", "42703", "source column does not exist")]:
        with connect(DB) as c:
            with pytest.raises(Exception) as e:
                c.execute(f"INSERT INTO {table} VALUES (1, '{SHORT}')")
        assert e.value.sqlstate == state and message in str(e.value)
        assert e.value.diag.message_detail and e.value.diag.message_hint


def test_partitions_each_keep_their_own_queue():
    run("CREATE TABLE t_parts (site int, id int, body text, other int DEFAULT 0, emb real[], model text, "
        "PRIMARY KEY (site, id)) PARTITION BY LIST (site)",
        "CREATE TABLE t_parts_1 PARTITION OF t_parts FOR VALUES IN (1)",
        "CREATE TABLE t_parts_2 PARTITION OF t_parts FOR VALUES IN (2)",
        "CREATE TRIGGER q BEFORE INSERT OR UPDATE ON t_parts FOR EACH ROW "
        "EXECUTE FUNCTION embed_queue_trigger('body', 'emb', 'model')",
        "CREATE TRIGGER zz_audit AFTER UPDATE ON t_parts FOR EACH ROW EXECUTE FUNCTION audit_write()",
        # the same ids (and ctids) in both partitions, different texts
        f"INSERT INTO t_parts (site, id, body) SELECT s, g, 'Site ' || s || ', note ' || g || '. {SHORT}' "
        "FROM generate_series(1, 2) s, generate_series(1, 30) g")
    assert q("SELECT count(DISTINCT relid) FROM embed_queue WHERE relid IN "
             "('t_parts_1'::regclass, 't_parts_2'::regclass)") == 2
    assert wait_until(lambda: drained("t_parts_1") and drained("t_parts_2")) is not None
    assert q("SELECT bool_and(emb = embed_text(body)) AND count(*) = 60 FROM t_parts")
    assert q("SELECT count(*) FROM audit WHERE tbl IN ('t_parts_1', 't_parts_2')") == 60


def test_a_dropped_extension_ends_its_workers():
    db = DB + "_drop"
    fresh_database(db, [
        "CREATE TABLE t (id int PRIMARY KEY, body text, emb real[])",
        "CREATE TRIGGER q BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION embed_queue_trigger('body', 'emb')",
        f"INSERT INTO t VALUES (1, '{SHORT}')"])
    try:
        with connect(db) as c:
            assert wait_until(lambda: one(c, "SELECT emb IS NOT NULL FROM t")) is not None
            c.execute("DROP EXTENSION clinembed CASCADE")

        def gone():
            with connect("postgres") as c:
                return one(c, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                              "AND backend_type = 'clinembed queue worker'", db) == 0

        assert wait_until(gone, 30) is not None
    finally:
        drop_database(db)


def test_an_idle_worker_exits():
    run(*table_sql("t_idle"), f"INSERT INTO t_idle (id, body) VALUES (1, '{SHORT}')")
    assert wait_until(lambda: drained("t_idle")) is not None
    # clinembed.queue_idle_exit is 5 s here
    assert wait_until(lambda: workers() == 0, 30) is not None


def test_keys_of_a_prepared_transaction_are_embedded_after_commit_prepared():
    # Two-phase commit (Citus commits writes to several nodes so): the keys
    # appear at COMMIT PREPARED, which runs no callback; the worker woken at
    # PREPARE looks again until it finds them.  After a restart no worker
    # runs, so nothing else would find them.
    run(*table_sql("t_2pc"))
    alter_system({"max_prepared_transactions": "4"})
    try:
        restart("fast")
        assert wait_until(_up, 30) is not None
        with connect(DB) as c:
            c.execute("BEGIN")
            c.execute(f"INSERT INTO t_2pc (id, body) SELECT g, '{SHORT} ' || g FROM generate_series(1, 5) g")
            c.execute("PREPARE TRANSACTION 'clinembed_t_2pc'")
        time.sleep(1)
        assert q("SELECT count(*) FROM t_2pc") == 0, "not committed yet"
        run("COMMIT PREPARED 'clinembed_t_2pc'")
        assert wait_until(lambda: drained("t_2pc")) is not None
        exactly_once("t_2pc")
    finally:
        if q("SELECT count(*) FROM pg_prepared_xacts WHERE gid = 'clinembed_t_2pc'"):
            run("ROLLBACK PREPARED 'clinembed_t_2pc'")
        alter_system({"max_prepared_transactions": None})
        restart("fast")
        assert wait_until(_up, 30) is not None


def test_fast_shutdown_loses_nothing_and_a_preloaded_server_drains_after_restart():
    run(*table_sql("t_restart"))
    pause()
    run(f"INSERT INTO t_restart (id, body) SELECT g, '{SHORT} ' || g FROM generate_series(1, 30) g")
    alter_system({"clinembed.queue_max_workers_per_database": None,
                  "shared_preload_libraries": "clinembed"})
    try:
        restart("fast")
        # nothing was written since the restart: the launcher started a worker
        assert wait_until(lambda: _up() and drained("t_restart")) is not None
        exactly_once("t_restart")
        # preloaded, the queue works as before
        run(f"INSERT INTO t_restart (id, body) VALUES (100, '{SHORT}')")
        assert wait_until(lambda: drained("t_restart")) is not None
        assert q("SELECT emb IS NOT NULL FROM t_restart WHERE id = 100")
    finally:
        alter_system({"shared_preload_libraries": None})
        restart("fast")
        assert wait_until(_up, 30) is not None
