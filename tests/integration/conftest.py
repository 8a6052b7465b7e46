"""What the pytest tests share: the scratch cluster every test module uses
(started once per run, stopped at its end), a database per test module, its
server log, waiting and running statements on threads, and clusters of a
test's own.

One run takes every file here (`pytest` from the repository root reads
pytest.ini); one test alone is, say,

    .venv/bin/python -m pytest tests/integration/test_queue.py -k exactly_once

after `cargo pgrx install --release` into the PostgreSQL under test.
Settings, all optional: PG (the major, default 15) or PG_BIN (its
binaries), CLINEMBED_MODEL_DIR (the default model's directory; default:
where scripts/setup.sh installs it for that major).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]


def _pg_bin():
    """scripts/lib.sh's pg_prefix, for $PG."""
    major = os.environ.get("PG", "15")
    prefix = "/usr/lib/postgresql/15" if major == "15" else f"/opt/clinembed/postgresql-{major}"
    return os.environ.get("PG_BIN") or f"{prefix}/bin"


def _default_model():
    """The default model's name, from core/src/lib.rs where it is defined once."""
    text = (REPO / "core/src/lib.rs").read_text()
    return re.search(r'macro_rules! default_model \{\s*\(\) => \{\s*"([^"]+)"', text).group(1)


PG_BIN = _pg_bin()
DEFAULT_MODEL = _default_model()
# The helpers and the test modules read these two from the environment.
os.environ["PG_BIN"] = PG_BIN
if not os.environ.get("CLINEMBED_MODEL_DIR"):
    sharedir = subprocess.run([os.path.join(PG_BIN, "pg_config"), "--sharedir"], check=True,
                              capture_output=True, text=True).stdout.strip()
    os.environ["CLINEMBED_MODEL_DIR"] = f"{sharedir}/clinembed/models/{DEFAULT_MODEL}"
# The scratch cluster: data directory CLUSTER_DIR/data, its socket in
# CLUSTER_DIR, its log SERVER_LOG.
CLUSTER_DIR = Path("/tmp/clinembed-pytest-" + Path(PG_BIN).parent.name)
SERVER_LOG = CLUSTER_DIR / "server.log"
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


def as_postgres(cmd, env=None, **kw):
    """Runs `cmd` as the postgres OS user (as ourselves unless root), with a
    clean environment for the server: no RUST_BACKTRACE or RUST_LOG from the
    caller, plus `env` (a dict)."""
    cmd = ["env", "-u", "RUST_BACKTRACE", "-u", "RUST_LIB_BACKTRACE", "-u", "RUST_LOG",
           *[f"{k}={v}" for k, v in (env or {}).items()], *cmd]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def restart(mode="fast", env=None):
    """Restarts the scratch cluster with `pg_ctl -m MODE` (and `env`, a dict,
    in the server's environment)."""
    SCRATCH.ctl("restart", "-m", mode, env=env)


def wait_until(predicate, limit_s=60, step=0.05):
    """Seconds until `predicate()` holds, or None after `limit_s`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        if predicate():
            return time.monotonic() - t0
        time.sleep(step)
    return None


def in_background(conn, sql, params=None):
    """Runs `sql` on `conn` on its own thread; returns the thread and a dict
    where its outcome lands: "error" (None, or the psycopg.Error raised) and
    "rows" (what it returned, if anything)."""
    outcome = {}

    def run():
        try:
            cur = conn.execute(sql, params)
            outcome["rows"] = cur.fetchall() if cur.description else []
            outcome["error"] = None
        except psycopg.Error as e:
            outcome["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def pg_config(option, bin_dir=None):
    """What `pg_config OPTION` prints, for the binaries in `bin_dir`
    (default $PG_BIN)."""
    cmd = [os.path.join(bin_dir or os.environ["PG_BIN"], "pg_config"), option]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


def free_port():
    """A TCP port no one listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_bert_checkpoint(out, seed, cross_encoder=False):
    """A local checkpoint of a small BERT (2 layers, hidden 128) with seeded
    random weights, as safetensors, config and the default model's WordPiece
    tokenizer; with `cross_encoder`, a sequence classifier with one label.
    No trained weights of these shapes are reachable here: the tests check
    paths and parity, not quality."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, max_position_embeddings=512, num_labels=1)
    model = BertForSequenceClassification(config) if cross_encoder else BertModel(config, add_pooling_layer=False)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer = Path(os.environ["CLINEMBED_MODEL_DIR"]) / "tokenizer.json"
    PreTrainedTokenizerFast(tokenizer_file=str(tokenizer), unk_token="[UNK]", pad_token="[PAD]",
                            cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                            model_max_length=512).save_pretrained(out)
    return Path(out)


def models_cluster(work, models, extensions=("clinembed",)):
    """A started cluster of a test's own, WORK/pg, whose installed model
    names resolve in `models` (clinembed.models_root, never the installed
    model directory), after `cargo pgrx install --release` of this clone,
    with `extensions` created.  The caller stops it."""
    pg_config = Path(os.environ["PG_BIN"]) / "pg_config"
    subprocess.run(["cargo", "pgrx", "install", "--release", "--pg-config", str(pg_config)], cwd=REPO,
                   check=True, capture_output=True)
    if os.geteuid() == 0:
        for d, _, files in os.walk(models):
            shutil.chown(d, "postgres", "postgres")
            for f in files:
                shutil.chown(os.path.join(d, f), "postgres", "postgres")
    node = Cluster(work, "pg").initdb()
    node.configure({"clinembed.models_root": models})
    node.start()
    for e in extensions:
        node.run(f"CREATE EXTENSION {e}")
    return node


def models_root(parent, name, with_model=True):
    """PARENT/models-NAME, a models root of a cluster of a test's own
    holding the installed default model (none with `with_model` false), as
    a deployment installs the same model on every node, owned by postgres."""
    root = Path(parent) / f"models-{name}"
    root.mkdir()
    if with_model:
        model_dir = os.environ["CLINEMBED_MODEL_DIR"]
        shutil.copytree(model_dir, root / os.path.basename(model_dir))
    if os.geteuid() == 0:
        for d, _, files in os.walk(root):
            shutil.chown(d, "postgres", "postgres")
            for f in files:
                shutil.chown(os.path.join(d, f), "postgres", "postgres")
    return root


def set_models_root(node, root):
    """Points `node`'s clinembed.models_root at `root` (None: resets it),
    with a reload."""
    with node.connect() as c:
        c.execute("LOAD 'clinembed'")
        c.execute(f"ALTER SYSTEM SET clinembed.models_root = '{root}'" if root
                  else "ALTER SYSTEM RESET clinembed.models_root")
        c.execute("SELECT pg_reload_conf()")


def run_in(node, dbname, *statements):
    """Runs `statements` in one session of `node`'s database, warnings
    only."""
    with node.connect(dbname) as c:
        c.execute("SET client_min_messages = warning")
        for sql in statements:
            c.execute(sql)


def scratch_dir(path):
    """An empty directory at `path` (removed first if there) that the postgres
    OS user owns and may use for sockets, data directories and logs.  A
    cluster an interrupted run left running in it is shut down first
    (immediate shutdown, whatever its major)."""
    path = Path(path)
    for pidfile in path.glob("*/postmaster.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
            wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 30)
        except (OSError, ValueError, IndexError):
            pass  # not running
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o700, parents=True)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")
    return path


class Cluster:
    """A PostgreSQL cluster of a test's own: data directory ROOT/NAME, its
    Unix socket in ROOT (listening on no TCP address), log ROOT/NAME.log, a
    port picked free, binaries from `bin_dir` (default $PG_BIN); `log`
    another log file."""

    def __init__(self, root, name, bin_dir=None, log=None):
        self.root = Path(root)
        self.name = name
        self.data = self.root / name
        self.log = Path(log) if log else self.root / f"{name}.log"
        self.bin = Path(bin_dir or os.environ["PG_BIN"])
        self.port = free_port()

    def initdb(self, *args):
        as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                     "-E", "UTF8", "--locale=C.UTF-8", *args])
        return self

    def configure(self, settings):
        """Appends `settings` (a dict) to postgresql.conf, where ALTER SYSTEM
        can still override them (a command-line option would win)."""
        with open(self.data / "postgresql.conf", "a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = '{value}'\n")
        return self

    def ctl(self, action, *args, env=None):
        as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                     "-o", f"-p {self.port} -k {self.root} -c listen_addresses=''", "-w", action, *args], env)
        return self

    def start(self):
        return self.ctl("start")

    def stop(self, mode="fast"):
        if (self.data / "postmaster.pid").exists():
            self.ctl("stop", "-m", mode)

    def connect(self, dbname="postgres", **kw):
        return psycopg.connect(host=str(self.root), port=self.port, user="postgres", dbname=dbname,
                               autocommit=True, **kw)

    def run(self, sql, dbname="postgres"):
        """Runs a statement that returns no rows."""
        with self.connect(dbname) as c:
            c.execute(sql)

    def one(self, sql, *args, dbname="postgres"):
        with self.connect(dbname) as c:
            return one(c, sql, *args)


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


# The scratch cluster, started by the `scratch_cluster` fixture.
SCRATCH = Cluster(CLUSTER_DIR, "data", log=SERVER_LOG)


@pytest.fixture(scope="session", autouse=True)
def scratch_cluster():
    """The cluster the tests connect to through libpq's PGHOST, PGPORT and
    PGUSER: a fresh one per run, started before the first test and stopped
    after the last.  A test with clusters of its own (`multicluster`) does
    not use it, and it costs that test a second."""
    scratch_dir(CLUSTER_DIR)
    SCRATCH.initdb().start()
    os.environ.update(PGHOST=str(CLUSTER_DIR), PGPORT=str(SCRATCH.port), PGUSER="postgres")
    yield SCRATCH
    SCRATCH.stop()
