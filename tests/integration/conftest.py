"""What the pytest tiers share: connections to the scratch cluster of
scripts/test.sh, a database per test module, and its server log.

Environment: PGHOST, PGPORT, PGUSER of a running cluster with clinembed
installed, CLUSTER_DIR (its server.log is read; its data directory for a
restart), PG_BIN (its binaries) and CLINEMBED_MODEL_DIR (the default model's
directory).
"""

import os
import re
import subprocess
from pathlib import Path

import psycopg
import pytest

SERVER_LOG = Path(os.environ.get("CLUSTER_DIR", "/nonexistent")) / "server.log"
# A backend that died, as opposed to one that was asked to end.
CRASH = re.compile(r"terminated by signal|PANIC|was terminated|all server processes terminated")


def connect(dbname, **kw):
    return psycopg.connect(dbname=dbname, autocommit=True, **kw)


def one(conn, sql, *args):
    """The first column of the first row; `%` needs no doubling without args."""
    return conn.execute(sql, args or None).fetchone()[0]


def fresh_database(name, setup_sql=()):
    """Creates database `name` with clinembed (dropping any left over) and
    runs `setup_sql` in it."""
    with connect("postgres") as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    with connect(name) as c:
        c.execute("CREATE EXTENSION clinembed")
        for sql in setup_sql:
            c.execute(sql)


def drop_database(name):
    with connect("postgres") as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def alter_system(settings):
    """ALTER SYSTEM SET each setting (None: RESET), then a reload.  Loads
    clinembed first: PostgreSQL 15 refuses to set a placeholder setting
    that no loaded library defines."""
    with connect("postgres") as c:
        c.execute("LOAD 'clinembed'")
        for name, value in settings.items():
            if value is None:
                c.execute(f"ALTER SYSTEM RESET {name}")
            else:
                c.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        c.execute("SELECT pg_reload_conf()")


def restart(mode="fast"):
    """Restarts the scratch cluster with `pg_ctl -m MODE`, logging where it did."""
    pg_ctl = [os.path.join(os.environ["PG_BIN"], "pg_ctl"), "-D", os.path.join(os.environ["CLUSTER_DIR"], "data"),
              "-l", str(SERVER_LOG), "-m", mode, "-w", "restart"]
    if os.geteuid() == 0:
        pg_ctl = ["runuser", "-u", "postgres", "--", "env", "-u", "RUST_BACKTRACE", *pg_ctl]
    subprocess.run(pg_ctl, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class ServerLog:
    """The server log from the moment this object was made."""

    def __init__(self):
        self.start = SERVER_LOG.stat().st_size if SERVER_LOG.exists() else 0

    def text(self):
        with open(SERVER_LOG, "rb") as f:
            f.seek(self.start)
            return f.read().decode("utf-8", "replace")

    def crashes(self):
        return [line for line in self.text().splitlines() if CRASH.search(line)]


@pytest.fixture(scope="module")
def server_log():
    return ServerLog()
