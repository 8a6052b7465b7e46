"""The upgrade path, against the scratch cluster (conftest.py): every
earlier release is installed from its frozen script
(tests/upgrade/clinembed--X.sql), updated with ALTER EXTENSION clinembed
UPDATE, and compared with a fresh install of the current version, object by
object; and no released script has changed since its release
(tests/upgrade/released.sha256).

    ONLY=upgrade bash scripts/test.sh
    .venv/bin/python -m pytest tests/integration/test_upgrade.py -k 0.5.0
"""

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from conftest import connect, drop_database, one, pg_config

REPO = Path(__file__).resolve().parents[2]
FROZEN = REPO / "tests" / "upgrade"
RELEASED = FROZEN / "released.sha256"
CURRENT = re.search(r'^version = "(.*)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
EARLIER = sorted((p.name[len("clinembed--"):-len(".sql")] for p in FROZEN.glob("clinembed--*.sql")),
                 key=lambda v: tuple(int(x) for x in v.split(".")))
EARLIER = [v for v in EARLIER if v != CURRENT]

# Every member object of the extension, with what defines it.
SCHEMA = """
SELECT kind || ' ' || ident || ' ' || definition FROM (
    SELECT 'function' AS kind, p.oid::regprocedure::text AS ident,
           concat_ws(' | ', pg_get_function_result(p.oid), p.prokind, p.provolatile, p.proparallel, p.procost, p.prorows,
                     p.proisstrict, p.prosecdef, p.proconfig::text, p.probin, md5(p.prosrc), p.proacl::text) AS definition
      FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clinembed')
    UNION ALL
    SELECT 'relation', c.oid::regclass::text,
           concat_ws(' | ', c.relkind, c.relacl::text,
                     (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
                                        || ' ' || a.attidentity::text, ', ' ORDER BY a.attnum)
                        FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                     CASE WHEN c.relkind = 'v' THEN md5(pg_get_viewdef(c.oid)) END)
      FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clinembed')
    UNION ALL
    SELECT 'index', i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
      FROM pg_index i WHERE i.indrelid IN (
          SELECT d.objid FROM pg_depend d
           WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
             AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clinembed'))
) o ORDER BY 1
"""


def released():
    """(path, sha256) of every released script, as released.sha256 lists them."""
    lines = [line.split() for line in RELEASED.read_text().splitlines() if line.strip()]
    return [(REPO / name, digest) for digest, name in lines]


def test_released_scripts_are_unchanged():
    changed = [str(path.relative_to(REPO)) for path, digest in released()
               if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != digest]
    assert not changed, f"released scripts changed (add a new upgrade script instead): {changed}"


def test_every_release_is_frozen_and_every_upgrade_script_released_or_next():
    # Every frozen install script is listed; an upgrade script not yet
    # listed can only lead to the current version.
    listed = {path for path, _ in released()}
    frozen = set(FROZEN.glob("clinembed--*.sql"))
    assert frozen - listed <= {FROZEN / f"clinembed--{CURRENT}.sql"}, sorted(frozen - listed)
    unreleased = [p.name for p in (REPO / "sql").glob("clinembed--*--*.sql") if p not in listed]
    assert all(name.endswith(f"--{CURRENT}.sql") for name in unreleased), unreleased


def test_every_unreleased_upgrade_script_refuses_psql():
    # The guard line that ends a script run with psql -f before it does
    # anything; released scripts stay as they were released.
    listed = {path for path, _ in released()}
    missing = []
    for p in sorted((REPO / "sql").glob("clinembed--*--*.sql")):
        target = p.name[:-len(".sql")].split("--")[2]
        guard = f"\\echo Use \"ALTER EXTENSION clinembed UPDATE TO '{target}'\" to load this file. \\quit"
        if p not in listed and guard not in p.read_text().splitlines():
            missing.append(p.name)
    assert not missing, f"upgrade scripts without the \\echo ... \\quit guard line: {missing}"


def extension_dir():
    return Path(pg_config("--sharedir"), "extension")


def statements(script):
    """An install script without pgrx's source-location comments, which
    move whenever code moves."""
    return [line for line in script.splitlines() if not re.match(r"-- \S+\.rs:\d+$", line)]


def test_a_released_version_installs_what_it_released():
    # Once the current version is frozen, the library may not change what
    # its install script creates: a change needs the next version.
    frozen = FROZEN / f"clinembed--{CURRENT}.sql"
    if not frozen.exists():
        pytest.skip(f"{CURRENT} is not released yet")
    installed = (extension_dir() / frozen.name).read_text()
    assert statements(installed) == statements(frozen.read_text()), (
        f"the install script of released {CURRENT} changed; bump the version and add an upgrade script")


def schema(db):
    with connect(db) as c:
        return [r[0] for r in c.execute(SCHEMA)]


@pytest.fixture
def databases():
    names = ("clinembed_upgrade_from", "clinembed_fresh")
    for name in names:
        drop_database(name)
        with connect("postgres") as c:
            c.execute(f"CREATE DATABASE {name}")
    yield names
    for name in names:
        drop_database(name)


@pytest.fixture(scope="module")
def releases():
    """Every earlier release's frozen install script in the extension
    directory, where CREATE EXTENSION ... VERSION reads it (only the current
    one is installed); those this module added are removed after it."""
    added = []
    for version in EARLIER:
        target = extension_dir() / f"clinembed--{version}.sql"
        if not target.exists():
            added.append(target)
        shutil.copy(FROZEN / target.name, target)
    yield
    for target in added:
        target.unlink()


@pytest.mark.parametrize("version", EARLIER)
def test_an_update_from_each_release_equals_a_fresh_install(version, releases, databases):
    upgraded, fresh = databases
    with connect(upgraded) as c:
        c.execute(f"CREATE EXTENSION clinembed VERSION '{version}'")
        c.execute("ALTER EXTENSION clinembed UPDATE")
        assert one(c, "SELECT extversion FROM pg_extension WHERE extname = 'clinembed'") == CURRENT
    with connect(fresh) as c:
        c.execute("CREATE EXTENSION clinembed")
    want = schema(fresh)
    assert len(want) > 10, "the fresh install has the extension's objects"
    assert schema(upgraded) == want
    with connect(upgraded) as c:
        # the updated extension works
        assert one(c, "SELECT array_length(embed_text('upgraded'), 1) = (SELECT dimensions FROM embed_model_info())")


def test_triggers_of_a_database_not_yet_updated_say_what_to_run(releases, databases):
    # The library of this version serves a database still at the last
    # release: functions it no longer has answer with 55000 and the command
    # that fixes it, and no row is written without its vector.
    previous = EARLIER[-1]
    upgraded, _ = databases
    with connect(upgraded) as c:
        c.execute(f"CREATE EXTENSION clinembed VERSION '{previous}'")
        c.execute("CREATE TABLE rows_t (id int PRIMARY KEY, body text, emb real[])")
        c.execute("CREATE TRIGGER r BEFORE INSERT ON rows_t FOR EACH ROW EXECUTE FUNCTION embed_trigger('body', 'emb')")
        c.execute("CREATE TABLE batch_t (id int PRIMARY KEY, body text, emb real[])")
        c.execute("CREATE TRIGGER b AFTER INSERT ON batch_t REFERENCING NEW TABLE AS new_rows "
                  "FOR EACH STATEMENT EXECUTE FUNCTION embed_batch_trigger('body', 'emb')")
        for table in ("rows_t", "batch_t"):
            with pytest.raises(Exception) as e:
                c.execute(f"INSERT INTO {table} VALUES (1, 'Afebrile.')")
            assert e.value.sqlstate == "55000", (table, e.value)
            assert "older than its library" in str(e.value)
            assert e.value.diag.message_hint == "Run ALTER EXTENSION clinembed UPDATE; in this database."
            assert one(c, f"SELECT count(*) FROM {table}") == 0
        c.execute("ALTER EXTENSION clinembed UPDATE")
        for table in ("rows_t", "batch_t"):
            c.execute(f"INSERT INTO {table} VALUES (1, 'Afebrile.')")
            assert one(c, f"SELECT array_length(emb, 1) FROM {table}") == one(c, "SELECT dimensions FROM embed_model_info()")


def test_plpgsql_is_left_only_where_postgresql_requires_it():
    # The triggers are C functions; what stays PL/pgSQL is the backfill's
    # procedure, whose COMMIT between batches needs a procedural language.
    with connect("postgres") as c:
        c.execute("DROP DATABASE IF EXISTS clinembed_plpgsql")
        c.execute("CREATE DATABASE clinembed_plpgsql")
    try:
        with connect("clinembed_plpgsql") as c:
            c.execute("CREATE EXTENSION clinembed")
            bodies = c.execute(
                "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang "
                "JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e' "
                "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'clinembed' "
                "WHERE l.lanname = 'plpgsql'").fetchall()
            assert sorted(name for name, _ in bodies) == ["embed_backfill"]
            assert sum(len(src.strip().splitlines()) for _, src in bodies) <= 30
            triggers = c.execute(
                "SELECT string_agg(p.proname || ' ' || l.lanname, ', ' ORDER BY p.proname) FROM pg_proc p "
                "JOIN pg_language l ON l.oid = p.prolang WHERE p.proname IN "
                "('embed_trigger', 'embed_batch_trigger', 'embed_queue_trigger')").fetchone()[0]
            assert triggers == "embed_batch_trigger c, embed_queue_trigger c, embed_trigger c"
    finally:
        drop_database("clinembed_plpgsql")
