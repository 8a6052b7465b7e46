"""Shared weights, against the scratch cluster (conftest.py).

Sessions map a model's weights from a form derived once per server
(clinembed.shared_weights, clinembed.weights_cache).  These tests need
several sessions at once, the server log or files the server writes, so
they run here, with psycopg and real threads:

    ONLY=weights bash scripts/test.sh          # the tier
    .venv/bin/python -m pytest tests/integration/test_shared_weights.py -k parallel
                                               # one test
"""

import os
import shutil
import subprocess
import threading
from pathlib import Path

import psycopg
import pytest

from conftest import SERVER_LOG, alter_system, one

pytestmark = pytest.mark.every_major

TEXTS = [
    "",
    "chest pain",
    "Pt c/o SOB x3d, O2 sat 91% RA. café 胸痛",
    "CT chest: no pulmonary embolism. Small bilateral pleural effusions, right greater than left.",
    "Discharge summary. Admitted with community-acquired pneumonia, treated with ceftriaxone "
    "and azithromycin, afebrile since day two, discharged home with follow-up in one week. " * 8,
]
SCRATCH = Path("/tmp/clinembed-weights-test")
MODEL_DIR = Path(os.environ.get("CLINEMBED_MODEL_DIR", ""))
BUILT = "derived the shared weights of model"
DB = "clinembed_weights"


def connect(**kw):
    return psycopg.connect(dbname=kw.pop("dbname", DB), autocommit=True, **kw)


@pytest.fixture(scope="module", autouse=True)
def database():
    """A database of this module's own, with the extension."""
    with connect(dbname="postgres") as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB}")
        c.execute(f"CREATE DATABASE {DB}")
    with connect() as c:
        c.execute("CREATE EXTENSION clinembed")
    yield
    with connect(dbname="postgres") as c:
        c.execute(f"DROP DATABASE {DB} WITH (FORCE)")


def reload_with(**settings):
    """clinembed.NAME = value for each setting (None resets), then a reload."""
    alter_system({f"clinembed.{name}": value for name, value in settings.items()})


def vectors(conn):
    rows = conn.execute(
        "SELECT embedding FROM embed_texts(%s) ORDER BY ord", (TEXTS,)
    ).fetchall()
    singles = [one(conn, "SELECT embed_text(%s)", t) for t in TEXTS]
    return [r[0] for r in rows] + singles


def max_diff(a, b):
    return max(abs(x - y) for va, vb in zip(a, b) for x, y in zip(va, vb))


def log_mark():
    return SERVER_LOG.stat().st_size


def log_since(mark):
    with open(SERVER_LOG, "rb") as f:
        f.seek(mark)
        return f.read().decode(errors="replace")


def entries(cache):
    return sorted(p for p in cache.iterdir() if p.is_dir() and p.name != "sources")


@pytest.fixture
def cache():
    """A weights cache of this test's own, empty; the default one after."""
    SCRATCH.mkdir(exist_ok=True)
    os.chmod(SCRATCH, 0o777)
    path = SCRATCH / "cache"
    shutil.rmtree(path, ignore_errors=True)
    reload_with(weights_cache=str(path))
    yield path
    reload_with(weights_cache=None)
    shutil.rmtree(path, ignore_errors=True)


def test_shared_and_private_forms_give_the_same_vectors(cache):
    with connect() as c:
        c.execute("SET clinembed.shared_weights = off")
        assert one(c, "SELECT weights FROM embed_model_info()") == "private"
        private = vectors(c)
        c.execute("SET clinembed.shared_weights = on")
        info = c.execute("SELECT weights, weights_detail FROM embed_model_info()").fetchone()
        assert info[0] == "shared" and info[1].startswith(str(cache)), info
        shared = vectors(c)
        assert one(c, "SELECT weights FROM embed_stats()") == "shared"
    assert len(private) == len(shared) == 2 * len(TEXTS)
    assert max_diff(private, shared) <= 1e-6


def test_two_backends_loading_a_new_model_build_it_once(cache):
    mark = log_mark()
    barrier = threading.Barrier(3)
    results, errors = [], []

    def first_call():
        try:
            with connect() as c:
                barrier.wait()
                one(c, "SELECT embed_text('chest pain')")
                results.append(c.execute("SELECT weights, weights_detail FROM embed_model_info()").fetchone())
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=first_call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 3
    assert all(r[0] == "shared" for r in results), results
    assert len({r[1] for r in results}) == 1, results
    assert log_since(mark).count(BUILT) == 1
    assert len(entries(cache)) == 1


@pytest.mark.parametrize("damage", ["truncate", "overwrite", "manifest"])
def test_a_damaged_derived_file_is_rebuilt_never_used(cache, damage):
    with connect() as c:
        want = vectors(c)
        path = Path(one(c, "SELECT weights_detail FROM embed_model_info()"))
    data = path.parent / "model.data"
    size = data.stat().st_size
    if damage == "truncate":
        os.truncate(data, size // 2)
    elif damage == "overwrite":
        with open(data, "r+b") as f:
            f.seek(4096)
            f.write(b"\xff" * 4096)
    else:
        (path.parent / "manifest.json").unlink()
    mark = log_mark()
    with connect() as c:
        got = vectors(c)
        assert one(c, "SELECT weights_detail FROM embed_model_info()") == str(path)
    assert log_since(mark).count(BUILT) == 1, "rebuilt once"
    assert data.stat().st_size == size
    assert max_diff(want, got) <= 1e-6


def test_a_changed_model_file_gets_its_own_entry(cache):
    model = SCRATCH / "model" / "m"
    shutil.rmtree(model.parent, ignore_errors=True)
    shutil.copytree(MODEL_DIR, model)
    # No recorded checksum: the test replaces model.onnx with other bytes.
    (model / "clinembed.json").write_text('{"pooling": "mean", "max_length": 512}\n')
    subprocess.run(["chmod", "-R", "a+rX", str(SCRATCH)], check=True)
    with connect() as c:
        c.execute(f"SET clinembed.model = '{model}'")
        first = one(c, "SELECT weights_detail FROM embed_model_info()")
        before = one(c, "SELECT embed_text('chest pain')")
    # The same bytes under a new file: the same entry, nothing rebuilt.
    shutil.copy(model / "model.onnx", model / "copy.onnx")
    os.replace(model / "copy.onnx", model / "model.onnx")
    mark = log_mark()
    with connect() as c:
        c.execute(f"SET clinembed.model = '{model}'")
        assert one(c, "SELECT weights_detail FROM embed_model_info()") == first
    assert BUILT not in log_since(mark)
    # Other bytes (the graph as ONNX Runtime's basic optimizer rewrites it):
    # another entry, built once, and still the same model's vectors.
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(model / "rewritten.onnx")
    ort.InferenceSession(str(model / "model.onnx"), so, providers=["CPUExecutionProvider"])
    os.chmod(model / "rewritten.onnx", 0o644)
    os.replace(model / "rewritten.onnx", model / "model.onnx")
    mark = log_mark()
    with connect() as c:
        c.execute(f"SET clinembed.model = '{model}'")
        second = one(c, "SELECT weights_detail FROM embed_model_info()")
        after = one(c, "SELECT embed_text('chest pain')")
    assert second != first
    assert log_since(mark).count(BUILT) == 1
    assert len(entries(cache)) == 2
    assert max(abs(x - y) for x, y in zip(before, after)) <= 1e-4
    shutil.rmtree(model.parent)


def renameat2_exchange(a, b):
    """Swaps the names a and b atomically (renameat2 RENAME_EXCHANGE)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


@pytest.mark.parametrize("weights", ["on", "off"])
def test_a_model_directory_swapped_during_loads_mixes_no_models(cache, weights):
    # Two models of the same shape, other weights, in two directories whose
    # names are swapped every few milliseconds while new backends load one
    # of them by name.  On 0.10.0 the identity was hashed from one file and
    # ONNX Runtime read the other by name: sessions (and, with shared
    # weights, the cache entry) held one model's weights under the other's
    # identity, across restarts.  Every load must now either fail with
    # "model files changed while loading" or embed with the model whose
    # identity it reports; and afterwards each model loads as itself.
    import onnx
    from onnx import numpy_helper

    base = SCRATCH / "swap"
    shutil.rmtree(base, ignore_errors=True)
    a, b = base / "m", base / "other"
    for d in (a, b):
        shutil.copytree(MODEL_DIR, d)
        # no recorded checksum: b's model.onnx has other bytes
        (d / "clinembed.json").write_text('{"pooling": "mean", "max_length": 512}\n')
    graph = onnx.load(str(a / "model.onnx"))
    for init in graph.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype.kind == "f":
            init.CopyFrom(numpy_helper.from_array((w * 1.05).astype(w.dtype), init.name))
    onnx.save(graph, str(b / "model.onnx"))
    subprocess.run(["chmod", "-R", "a+rX", str(SCRATCH)], check=True)

    def load(path):
        """(vector, identity of the session that made it) in a new backend."""
        with connect() as c:
            c.execute(f"SET clinembed.shared_weights = {weights}")
            c.execute(f"SET clinembed.model = '{path}'")
            v = one(c, "SELECT embed_text('chest pain')")
            ids = [r[0] for r in c.execute("SELECT model_id FROM embed_stats()").fetchall()]
            assert len(ids) == 1, ids
            return v, ids[0]

    def content(identity):
        """The identity's hash, of the model's bytes and settings (its name
        part is the directory's name, which the swaps exchange)."""
        return identity.split("@", 1)[1]

    want = {content(i): v for v, i in (load(p) for p in (a, b))}
    assert len(want) == 2 and max_diff(*([v] for v in want.values())) > 1e-3

    def consistent(v, identity):
        return content(identity) in want and max_diff([v], [want[content(identity)]]) <= 1e-5

    shutil.rmtree(cache, ignore_errors=True)  # the first loads below build the entries
    stop = threading.Event()

    def swapper():
        while not stop.is_set():
            renameat2_exchange(a, b)
            stop.wait(0.003)

    t = threading.Thread(target=swapper)
    t.start()
    loaded = failed = 0
    try:
        for _ in range(12):
            try:
                v, identity = load(a)
            except psycopg.Error as e:
                assert "model files changed while loading" in str(e), e
                failed += 1
                continue
            assert consistent(v, identity), f"a vector of one model under identity {identity}"
            loaded += 1
    finally:
        stop.set()
        t.join()
    assert loaded > 0, f"every load failed ({failed})"
    # Nothing poisoned: each directory, loaded quietly, embeds as itself.
    for p in (a, b):
        assert consistent(*load(p))
    shutil.rmtree(base)


def test_an_ordinary_role_cannot_move_or_disable_the_cache(cache):
    with connect() as c:
        c.execute("DROP ROLE IF EXISTS clinembed_weights_role")
        c.execute("CREATE ROLE clinembed_weights_role LOGIN")
    try:
        with connect(user="clinembed_weights_role") as c:
            # The library loads with the first call (an ordinary role may
            # not LOAD it); its settings exist from then on.
            assert one(c, "SELECT weights FROM embed_model_info()") == "shared"
            for sql, state in [
                ("SET clinembed.weights_cache = '/tmp/elsewhere'", "55P02"),
                ("SET clinembed.shared_weights = off", "42501"),
                ("ALTER SYSTEM SET clinembed.weights_cache = '/tmp/elsewhere'", "42501"),
            ]:
                with pytest.raises(psycopg.Error) as e:
                    c.execute(sql)
                assert e.value.sqlstate == state, (sql, e.value.sqlstate)
            assert one(c, "SELECT weights FROM embed_model_info()") == "shared"
            assert one(c, "SELECT weights_detail FROM embed_model_info()").startswith(str(cache))
    finally:
        with connect() as c:
            c.execute("DROP ROLE clinembed_weights_role")


@pytest.mark.parametrize("kind", ["under-a-file", "writable-by-others"])
def test_an_unusable_cache_warns_and_embeds_privately(kind):
    SCRATCH.mkdir(exist_ok=True)
    if kind == "under-a-file":
        blocker = SCRATCH / "a-file"
        blocker.write_text("not a directory")
        path, reason = blocker / "cache", "cache"
    else:
        blocker = SCRATCH / "open-cache"
        blocker.mkdir(exist_ok=True)
        os.chmod(blocker, 0o777)
        path, reason = blocker, "writable by no one else"
    reload_with(weights_cache=str(path))
    try:
        with connect() as c:
            notices = []
            c.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.message_primary)))
            assert len(one(c, "SELECT embed_text('chest pain')")) == 384
            info = c.execute("SELECT weights, weights_detail FROM embed_model_info()").fetchone()
        assert info[0] == "private" and reason in info[1], info
        assert ("WARNING", "model weights are not shared: this backend holds its own copy") in notices
    finally:
        reload_with(weights_cache=None)
        if blocker.is_dir():
            shutil.rmtree(blocker)
        else:
            blocker.unlink()


def test_parallel_workers_embed_what_the_leader_embeds_on_one_thread(cache):
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS weights_notes")
        c.execute("CREATE TABLE weights_notes (id int, body text)")
        c.execute(
            "INSERT INTO weights_notes SELECT g, 'note ' || g || ': ' || repeat('chest pain, dyspnea. ', g % 17 + 1) "
            "FROM generate_series(1, 120) g"
        )
        c.execute("ANALYZE weights_notes")
        serial = dict(c.execute("SELECT id, embed_text(body) FROM weights_notes").fetchall())
        major = one(c, "SHOW server_version_num")
        force = "debug_parallel_query" if int(major) >= 160000 else "force_parallel_mode"
        for sql in [
            f"SET {force} = on",
            "SET parallel_setup_cost = 0",
            "SET parallel_tuple_cost = 0",
            "SET min_parallel_table_scan_size = 0",
            "SET max_parallel_workers_per_gather = 2",
            "SET parallel_leader_participation = off",
        ]:
            c.execute(sql)
        plan = "\n".join(r[0] for r in c.execute(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) SELECT id, embed_text(body) FROM weights_notes"
        ).fetchall())
        assert "Workers Launched: " in plan and "Workers Launched: 0" not in plan, plan
        parallel = dict(c.execute("SELECT id, embed_text(body) FROM weights_notes").fetchall())
        # The thread rule: a parallel worker runs one intra-op thread when
        # clinembed.intra_op_threads is 0 (one per CPU in other backends).
        worker_threads = one(c, "SELECT intra_op_threads FROM embed_model_info()")
        c.execute(f"RESET {force}")
        c.execute("RESET parallel_leader_participation")
        leader_threads = one(c, "SELECT intra_op_threads FROM embed_model_info()")
        c.execute("DROP TABLE weights_notes")
    assert worker_threads == 1
    assert leader_threads == os.cpu_count()
    assert serial.keys() == parallel.keys()
    assert max_diff([serial[k] for k in serial], [parallel[k] for k in serial]) <= 1e-6


def test_extra_backends_cost_their_activations_not_the_weights(cache):
    """Private memory (/proc/self/smaps_rollup) of a third backend that has
    the model loaded: with shared weights it holds less than with private
    weights by at least the weights' size."""

    def private_kb(shared):
        conns = [connect() for _ in range(3)]
        try:
            for c in conns:
                c.execute(f"SET clinembed.shared_weights = {'on' if shared else 'off'}")
                one(c, "SELECT embed_text('chest pain')")
            return one(conns[-1], "SELECT private_kb FROM embed_stats()")
        finally:
            for c in conns:
                c.close()

    shared, private = private_kb(True), private_kb(False)
    weights_kb = (MODEL_DIR / "model.onnx").stat().st_size // 1024
    print(f"private kB of the third backend: shared {shared}, private {private}; model.onnx {weights_kb} kB")
    assert private - shared >= weights_kb // 2
