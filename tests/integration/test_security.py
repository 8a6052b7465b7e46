"""Whose rights clinembed's statements run with, against real roles in real
sessions of the scratch cluster (conftest.py): an ordinary role must
not become superuser through the queue trigger or its workers, and hostile
objects placed before pg_catalog in a search_path must never run as anyone
but their author.

Each attack is the one a review found on 0.10.0 (issue "Superuser
escalations through the queue worker ..."):

- a table owner's trigger changes the worker's session search_path
  (set_config(..., false)) and waits for the worker's next statement;
- a database owner's ALTER DATABASE ... SET search_path reaches a
  superuser's INSERT through the queue trigger, and direct calls of the
  queue's internal functions;
- a partition created by a superuser under an ordinary role's partitioned
  table makes the worker write, and fire the role's triggers, as superuser;
- a role with the TRIGGER privilege on a superuser's table adds a trigger
  the worker would run as the superuser.

The hostile schema holds operators for every type the queue's statements
compare, functions named as the catalog's, and domains named as its types;
each records the role it ran as and tries ALTER ROLE ... SUPERUSER.

    ONLY=security bash scripts/test.sh
    .venv/bin/python -m pytest tests/integration/test_security.py -k partition
"""

import os
import time

import pytest

from conftest import alter_system, connect, drop_database, fresh_database, one
from conftest import wait_until as wait_for

pytestmark = pytest.mark.every_major

DB = "clinembed_security"
WAIT_S = float(os.environ.get("QUEUE_WAIT_S", "90"))
SHORT = "Patient seen in clinic, afebrile, plan unchanged."
# clinembed_core::rows::queue::RESTART_SECONDS: how soon the postmaster would start
# a failed worker again.
RESTART_S = 5

# (operator, type): every comparison and arithmetic the queue's statements
# make, each shadowed in the hostile schema.
OPERATORS = [
    ("=", "oid"), ("=", "text"), ("=", "name"), ("=", "tid"), ("=", "text[]"), ("=", "integer"),
    ("=", '"char"'), ("<>", '"char"'), ("<>", "text"), ("<>", "oid"), (">", "smallint"),
    ("<=", "timestamp with time zone"), ("<", "timestamp with time zone"),
]
# Functions named as the catalog's that the statements call (by schema: none
# of these may run).
FUNCTIONS = [
    ("clock_timestamp()", "timestamp with time zone", "pg_catalog.clock_timestamp()"),
    ("quote_ident(text)", "text", "pg_catalog.quote_ident($1)"),
    ("unnest(text[])", "SETOF text", "SELECT pg_catalog.unnest($1)"),
    ("has_table_privilege(oid, oid, text)", "boolean", "pg_catalog.has_table_privilege($1, $2, $3)"),
    ("format_type(oid, integer)", "text", "pg_catalog.format_type($1, $2)"),
]
# Domains named as built-in types the statements cast to.
DOMAINS = ["float8", "int4", "text", "oid", "tid"]


def hostile_schema(attacker):
    """SQL that creates schema `intruder` (owned by the current role) with
    objects that, wherever they run, record current_user in intruder.calls
    and try to make `attacker` superuser."""
    sql = [
        "CREATE SCHEMA intruder",
        "CREATE TABLE intruder.calls (who text, what text, at timestamptz DEFAULT pg_catalog.clock_timestamp())",
        "GRANT USAGE ON SCHEMA intruder TO PUBLIC",
        "GRANT INSERT, SELECT ON intruder.calls TO PUBLIC",
        f"""CREATE FUNCTION intruder.hit(what text) RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO intruder.calls (who, what) VALUES (current_user::pg_catalog.text, what);
            BEGIN
                EXECUTE 'ALTER ROLE {attacker} SUPERUSER';
            EXCEPTION WHEN OTHERS THEN NULL;
            END;
            RETURN true;
        END $$""",
    ]
    for n, (op, ty) in enumerate(OPERATORS):
        sql.append(
            f"CREATE FUNCTION intruder.op{n}(l {ty}, r {ty}) RETURNS boolean LANGUAGE plpgsql AS $$ "
            f"DECLARE b boolean; BEGIN PERFORM intruder.hit('operator {op} {ty}'); "
            f"EXECUTE 'SELECT $1 OPERATOR(pg_catalog.{op}) $2' INTO b USING l, r; RETURN b; END $$")
        sql.append(f"CREATE OPERATOR intruder.{op} (LEFTARG = {ty}, RIGHTARG = {ty}, FUNCTION = intruder.op{n})")
    for signature, returns, body in FUNCTIONS:
        name = signature.split("(")[0]
        if returns.startswith("SETOF"):
            sql.append(f"CREATE FUNCTION intruder.{signature} RETURNS {returns} LANGUAGE sql AS $$ "
                       f"SELECT FROM intruder.hit('function {name}'); {body} $$")
        else:
            sql.append(f"CREATE FUNCTION intruder.{signature} RETURNS {returns} LANGUAGE plpgsql AS $$ "
                       f"BEGIN PERFORM intruder.hit('function {name}'); RETURN {body}; END $$")
    for d in DOMAINS:
        sql.append(f"CREATE DOMAIN intruder.{d} AS pg_catalog.{d} CHECK (intruder.hit('domain {d}'))")
    return sql


# The tests' own statements, where the database's search_path is hostile:
# these sessions pin theirs, so only clinembed's statements meet it.
SAFE = "-c search_path=pg_catalog,public"


def escalating_trigger_function(name, log_table, attacker):
    """SQL for a trigger function that records the role it runs as in
    `log_table` (column cur) and tries to make `attacker` superuser."""
    return f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO {log_table} (cur) VALUES (current_user);
            BEGIN
                EXECUTE 'ALTER ROLE {attacker} SUPERUSER';
            EXCEPTION WHEN OTHERS THEN NULL;
            END;
            RETURN NEW;
        END $$"""


def q(sql, *args, db=DB, user=None):
    kw = {"user": user} if user else {}
    with connect(db, options=SAFE, **kw) as c:
        return one(c, sql, *args)


def run(*sqls, db=DB, user=None):
    kw = {"user": user} if user else {}
    with connect(db, **kw) as c:
        for sql in sqls:
            c.execute(sql)


def wait_until(predicate, limit_s=WAIT_S, step=0.1):
    return wait_for(predicate, limit_s, step)


def superuser(role):
    return q("SELECT rolsuper FROM pg_roles WHERE rolname = %s", role, db="postgres")


def role(name):
    run(f"DROP ROLE IF EXISTS {name}", f"CREATE ROLE {name} LOGIN", db="postgres")


def calls_as_others(attacker, db=DB):
    """What the hostile objects ran as anyone but `attacker`."""
    with connect(db, options=SAFE) as c:
        return c.execute("SELECT who, what, count(*) FROM intruder.calls WHERE who <> %s "
                         "GROUP BY 1, 2 ORDER BY 1, 2", (attacker,)).fetchall()


def drained(table, db=DB):
    return q("SELECT count(*) FROM embed_queue WHERE relid = %s::regclass AND parked_at IS NULL",
             table, db=db) == 0


@pytest.fixture(scope="module", autouse=True)
def database():
    alter_system({"clinembed.queue_idle_exit": "5", "clinembed.queue_max_attempts": "1"})
    fresh_database(DB)
    yield
    drop_database(DB)
    alter_system({"clinembed.queue_idle_exit": None, "clinembed.queue_max_attempts": None})


def test_a_table_owners_trigger_cannot_change_the_workers_search_path():
    attacker = "sec_mallory"
    role(attacker)
    run(f"GRANT CREATE ON DATABASE {DB} TO {attacker}", f"GRANT CREATE ON SCHEMA public TO {attacker}")
    run(*hostile_schema(attacker), user=attacker)
    run("CREATE TABLE t_path (id int PRIMARY KEY, body text, emb real[])",
        """CREATE FUNCTION repath() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_catalog.set_config('search_path', 'intruder, pg_catalog, pg_temp', false);
            RETURN NEW;
        END $$""",
        "CREATE TRIGGER a_repath BEFORE UPDATE ON t_path FOR EACH ROW EXECUTE FUNCTION repath()",
        "CREATE TRIGGER q BEFORE INSERT OR UPDATE ON t_path FOR EACH ROW "
        "EXECUTE FUNCTION embed_queue_trigger('body', 'emb')",
        user=attacker)
    # several batches, so the worker runs its statements after the trigger's
    for batch in range(3):
        run(f"INSERT INTO t_path SELECT g, '{SHORT} ' || g FROM generate_series({batch * 10 + 1}, {batch * 10 + 10}) g",
            user=attacker)
        assert wait_until(lambda: drained("t_path")) is not None
    assert q("SELECT count(*) FROM t_path WHERE emb IS NULL") == 0
    assert q("SELECT bool_and(emb = embed_text(body)) FROM t_path")
    assert not superuser(attacker)
    assert calls_as_others(attacker) == []


def test_a_database_owners_search_path_does_not_reach_a_superusers_writes():
    attacker, db = "sec_dbowner", DB + "_owned"
    role(attacker)
    drop_database(db)
    run(f"CREATE DATABASE {db} OWNER {attacker}", db="postgres")
    with connect(db) as c:
        c.execute("CREATE EXTENSION clinembed")
    run(*hostile_schema(attacker), db=db, user=attacker)
    run(f"ALTER DATABASE {db} SET search_path = intruder, pg_catalog, public", db=db, user=attacker)
    try:
        # a superuser's own table and writes, in new sessions that take the
        # database's search_path
        with connect(db, options=SAFE) as c:
            c.execute("CREATE TABLE public.t_su (id int PRIMARY KEY, body text, emb real[])")
            c.execute("CREATE TRIGGER q BEFORE INSERT OR UPDATE ON public.t_su FOR EACH ROW "
                      "EXECUTE FUNCTION public.embed_queue_trigger('body', 'emb')")
        # from here on, sessions with the database's search_path; their own
        # statements name the operators they use, so that every call the
        # hostile schema records comes from clinembed
        with connect(db) as c:
            assert one(c, "SHOW search_path") == "intruder, pg_catalog, public"
        run(f"INSERT INTO public.t_su SELECT g, '{SHORT} ' || g FROM generate_series(1, 20) g",
            "UPDATE public.t_su SET body = body || ' (amended)' WHERE id <= 5", db=db)
        assert wait_until(lambda: drained("public.t_su", db)) is not None
        # the queue's internal functions, called directly by the superuser
        run("UPDATE public.t_su SET emb = NULL WHERE id OPERATOR(pg_catalog.=) 1", db=db)
        with connect(db) as c:
            assert one(c, "SELECT public._embed_queue_enqueue('public.t_su'::pg_catalog.regclass)") >= 0
            assert one(c, "SELECT public._embed_queue_retry(NULL)") >= 0
            assert one(c, "SELECT public._embed_queue_retry('public.t_su'::pg_catalog.regclass)") >= 0
            assert one(c, "SELECT public.embed_queue_enqueue('public.t_su')") >= 0
        assert wait_until(lambda: drained("public.t_su", db)) is not None
        assert q("SELECT count(*) FROM public.t_su WHERE emb IS NULL", db=db) == 0
        assert not superuser(attacker)
        assert calls_as_others(attacker, db) == []
    finally:
        drop_database(db)


def test_a_partition_a_superuser_created_does_not_make_the_worker_write_as_superuser():
    attacker = "sec_parts"
    role(attacker)
    run(f"GRANT CREATE ON SCHEMA public TO {attacker}")
    run("CREATE TABLE who_parts (cur text, at timestamptz DEFAULT clock_timestamp())",
        f"GRANT INSERT ON who_parts TO {attacker}")
    run("CREATE TABLE t_parts (site int, id int, body text, emb real[], PRIMARY KEY (site, id)) "
        "PARTITION BY LIST (site)",
        escalating_trigger_function("escalate_parts", "public.who_parts", attacker),
        "CREATE TRIGGER a BEFORE UPDATE ON t_parts FOR EACH ROW EXECUTE FUNCTION escalate_parts()",
        "CREATE TRIGGER q BEFORE INSERT OR UPDATE ON t_parts FOR EACH ROW "
        "EXECUTE FUNCTION embed_queue_trigger('body', 'emb')",
        "CREATE TABLE t_parts_mine PARTITION OF t_parts FOR VALUES IN (1)",
        user=attacker)
    # the superuser's partition, with the parent's triggers cloned onto it
    run("CREATE TABLE t_parts_su PARTITION OF t_parts FOR VALUES IN (2)")
    run(f"INSERT INTO t_parts VALUES (1, 1, '{SHORT}'), (2, 1, '{SHORT}')", user=attacker)
    # the role's own partition is embedded as the role; the superuser's is
    # not written as the superuser: its row waits, parked with 42501
    assert wait_until(lambda: q("SELECT emb IS NOT NULL FROM t_parts_mine WHERE id = 1")) is not None
    assert wait_until(lambda: q("SELECT count(*) FROM embed_queue WHERE relid = 't_parts_su'::regclass "
                                "AND parked_at IS NOT NULL") == 1) is not None
    assert q("SELECT sqlstate FROM embed_queue_failures WHERE relation = 't_parts_su'::regclass") == "42501"
    assert q("SELECT emb IS NULL FROM t_parts_su") is True
    assert not superuser(attacker)
    assert q("SELECT coalesce(string_agg(DISTINCT cur, ','), '') FROM who_parts") in ("", attacker)


def test_a_trigger_added_with_the_trigger_privilege_does_not_run_as_the_owner():
    attacker = "sec_trigger"
    role(attacker)
    run(f"GRANT CREATE ON SCHEMA public TO {attacker}")
    run("CREATE TABLE t_granted (id int PRIMARY KEY, body text, emb real[])",
        "CREATE TRIGGER q BEFORE INSERT OR UPDATE ON t_granted FOR EACH ROW "
        "EXECUTE FUNCTION embed_queue_trigger('body', 'emb')",
        f"GRANT INSERT, TRIGGER ON t_granted TO {attacker}",
        "CREATE TABLE who_granted (cur text)", f"GRANT INSERT ON who_granted TO {attacker}")
    run(escalating_trigger_function("escalate_granted", "public.who_granted", attacker),
        "CREATE TRIGGER a BEFORE UPDATE ON t_granted FOR EACH ROW EXECUTE FUNCTION escalate_granted()",
        user=attacker)
    run(f"INSERT INTO t_granted VALUES (1, '{SHORT}')", user=attacker)
    assert wait_until(lambda: q("SELECT count(*) FROM embed_queue WHERE relid = 't_granted'::regclass "
                                "AND parked_at IS NOT NULL") == 1) is not None
    assert q("SELECT sqlstate FROM embed_queue_failures WHERE relation = 't_granted'::regclass") == "42501"
    assert not superuser(attacker)
    assert q("SELECT count(*) FROM who_granted") == 0
    # the owner takes the function over: the row goes through
    run("ALTER FUNCTION escalate_granted() OWNER TO postgres",
        "SELECT embed_queue_retry('t_granted')")
    assert wait_until(lambda: q("SELECT emb IS NOT NULL FROM t_granted WHERE id = 1")) is not None


def test_keys_are_read_back_whatever_the_writers_date_style():
    run("CREATE TABLE t_dates (day date, at timestamp, body text, emb real[], PRIMARY KEY (day, at))",
        "CREATE TRIGGER q BEFORE INSERT OR UPDATE ON t_dates FOR EACH ROW "
        "EXECUTE FUNCTION embed_queue_trigger('body', 'emb')")
    with connect(DB) as c:
        c.execute("SET DateStyle = 'SQL, DMY'")
        c.execute(f"INSERT INTO t_dates VALUES ('01/02/2024', '01/02/2024 10:00', '{SHORT} February')")
        c.execute("SET DateStyle = 'German, DMY'")
        c.execute(f"INSERT INTO t_dates VALUES ('03.02.2024', '03.02.2024 11:30:15.25', '{SHORT} third')")
        c.execute("SET DateStyle = 'SQL, MDY'")
        c.execute(f"INSERT INTO t_dates VALUES ('01/02/2024', '01/02/2024 10:00', '{SHORT} January')")
    assert wait_until(lambda: drained("t_dates")) is not None
    assert q("SELECT count(*) FROM embed_queue WHERE relid = 't_dates'::regclass") == 0
    assert q("SELECT count(*) FROM t_dates WHERE emb IS NULL") == 0
    assert q("SELECT bool_and(emb = embed_text(body)) FROM t_dates")


def test_intra_op_threads_are_capped_at_the_cpus():
    with connect(DB) as c:
        c.execute("SET clinembed.intra_op_threads = 256")
        c.execute("SELECT embed_text('chest pain')")
        pid = one(c, "SELECT pg_backend_pid()")
        assert one(c, "SELECT intra_op_threads FROM embed_model_info()") <= os.cpu_count()
        threads = len(os.listdir(f"/proc/{pid}/task"))
        # the backend's own thread, the pool (one fewer than its size: the
        # caller's thread runs work too) and a few of ONNX Runtime's
        assert threads <= os.cpu_count() + 4, threads


def test_a_database_that_allows_no_connections_gives_its_worker_slot_back(server_log):
    db = DB + "_closed"
    fresh_database(db, ["CREATE TABLE t (id int PRIMARY KEY, body text, emb real[])",
                        "CREATE TRIGGER q BEFORE INSERT ON t FOR EACH ROW "
                        "EXECUTE FUNCTION embed_queue_trigger('body', 'emb')"])
    mark = len(server_log.text())
    try:
        # a session that stays open across ALLOW_CONNECTIONS false queues a
        # row, and its commit launches a worker into the closed database
        with connect(db) as c:
            run(f"ALTER DATABASE {db} ALLOW_CONNECTIONS false", db="postgres")
            c.execute(f"INSERT INTO t VALUES (1, '{SHORT}')")
            assert wait_until(lambda: "does not allow connections" in server_log.text()[mark:], 30) is not None
            # the row stays queued, in plain sight; the slot is free again
            assert one(c, "SELECT count(*) FROM embed_queue WHERE parked_at IS NULL") == 1
        time.sleep(2 * RESTART_S)
        assert q("SELECT count(*) FROM embed_queue_workers() w JOIN pg_database d ON d.oid = w.datid "
                 "WHERE d.datname = %s", db) == 0
        assert "FATAL" not in server_log.text()[mark:]
        # and the other databases' queues drain
        run("CREATE TABLE t_open (id int PRIMARY KEY, body text, emb real[])",
            "CREATE TRIGGER q BEFORE INSERT ON t_open FOR EACH ROW EXECUTE FUNCTION embed_queue_trigger('body', 'emb')",
            f"INSERT INTO t_open VALUES (1, '{SHORT}')")
        assert wait_until(lambda: q("SELECT emb IS NOT NULL FROM t_open WHERE id = 1")) is not None
    finally:
        run(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true", db="postgres")
        drop_database(db)
