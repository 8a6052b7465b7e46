"""Reranking and asymmetric query encoders, on models made here.

No trained cross-encoder is reachable from this project, so the reranker is
a random-weight BERT sequence classifier (num_labels 1) built here with
transformers and the default model's WordPiece tokenizer, exported by
`scripts/export-model.sh --cross-encoder` (optimum, task
text-classification, with the export's own check against PyTorch).  What is
tested is the path, not the quality of the scores: embed_rerank's scores
equal the checkpoint run in PyTorch (AutoModelForSequenceClassification),
and embed_search's rerank => n reorders its head by them.

Everything is installed in a models root of this test's own cluster
(clinembed.models_root), never in the installed model directory.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest

from conftest import small_bert_checkpoint, REPO, models_cluster, scratch_dir
from model_tools.reference import framework_scores

pytestmark = [pytest.mark.multicluster]

ROOT = Path("/tmp/clinembed-rerank-test")
RERANKER = "clinembed-test-reranker"
E5 = "clinembed-test-e5"
ARTICLE = "clinembed-test-article"
QUERY_ENCODER = "clinembed-test-query"
TOLERANCE = 1e-4
QUERY = "chest pain with troponin elevation"
TEXTS = ["Patient denies chest pain.", "Pt c/o SOB x3d; h/o CHF, EF 30%.", None,
         "Café, 患者主诉胸痛, 🙂", "Admitted with pneumonia, treated with ceftriaxone. " * 80, ""]
NOTES = ["Chest pain with troponin elevated at 0.84; heparin drip started.",
         "Right hip fracture after a fall; orthopedics consulted for ORIF.",
         "Community acquired pneumonia treated with ceftriaxone and azithromycin.",
         "Diabetic ketoacidosis on an insulin drip, glucose 512 with anion gap 24.",
         "Acute kidney injury with creatinine 3.2; holding lisinopril and NSAIDs."]


@pytest.fixture(scope="module")
def work():
    return scratch_dir(ROOT)


@pytest.fixture(scope="module")
def checkpoint(work):
    return small_bert_checkpoint(work / "checkpoint", 20261207, cross_encoder=True)


@pytest.fixture(scope="module")
def exported(work, checkpoint):
    out = work / "reranker"
    done = subprocess.run(["bash", str(REPO / "scripts" / "export-model.sh"), str(checkpoint), str(out),
                           "--cross-encoder"], env={**os.environ, "PYTHON": sys.executable},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    return out, done.stdout


def model_copy(models, name, settings):
    """The default model's files under another name, with more settings."""
    dest = models / name
    shutil.copytree(os.environ["CLINEMBED_MODEL_DIR"], dest)
    path = dest / "clinembed.json"
    merged = {**(json.loads(path.read_text()) if path.exists() else {}), **settings}
    path.write_text(json.dumps(merged))


@pytest.fixture(scope="module")
def cluster(work, exported):
    models = work / "models"
    models.mkdir()
    shutil.copytree(exported[0], models / RERANKER)
    shutil.copytree(os.environ["CLINEMBED_MODEL_DIR"], models / Path(os.environ["CLINEMBED_MODEL_DIR"]).name)
    model_copy(models, E5, {"query_prefix": "query: "})
    model_copy(models, QUERY_ENCODER, {"pooling": "cls"})
    model_copy(models, ARTICLE, {"query_model": QUERY_ENCODER})
    node = models_cluster(work, models, extensions=("vector", "clinembed"))
    try:
        yield node
    finally:
        if not os.environ.get("KEEP"):
            node.stop()


def test_the_export_is_a_cross_encoder_checked_against_pytorch(exported):
    out, log = exported
    assert "check: PyTorch vs exported ONNX, logits of" in log
    assert json.loads((out / "clinembed.json").read_text())["kind"] == "cross-encoder"


def test_embed_rerank_equals_the_checkpoint_in_pytorch(cluster, checkpoint):
    present = [t for t in TEXTS if t is not None]
    want = framework_scores(checkpoint, [(QUERY, t) for t in present])
    with cluster.connect() as c:
        got = c.execute("SELECT embed_rerank(%s, %s, model => %s)", (QUERY, TEXTS, RERANKER)).fetchone()[0]
    assert len(got) == len(TEXTS) and got[TEXTS.index(None)] is None
    got = [g for g, t in zip(got, TEXTS) if t is not None]
    worst = max(abs(g - w) for g, w in zip(got, want))
    print(f"worst {worst:.2e} over {len(want)} pairs")
    assert worst <= TOLERANCE
    # The scores differ between texts: the test would see a swapped order.
    assert len({round(w, 4) for w in want}) == len(want)


def test_the_setting_names_the_reranker_and_nothing_is_refused_clearly(cluster):
    with cluster.connect() as c:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="no reranking model"):
            c.execute("SELECT embed_rerank('q', ARRAY['a'])")
        c.execute(f"SET clinembed.rerank_model = '{RERANKER}'")
        by_setting = c.execute("SELECT embed_rerank('q', ARRAY['a', 'b'])").fetchone()[0]
        by_name = c.execute("SELECT embed_rerank('q', ARRAY['a', 'b'], model => %s)", (RERANKER,)).fetchone()[0]
        assert by_setting == by_name


def test_each_kind_refuses_the_others_work(cluster):
    with cluster.connect() as c:
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="a cross-encoder makes scores, not vectors"):
            c.execute("SELECT embed_text('chest pain', model => %s)", (RERANKER,))
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="an embedding model makes vectors"):
            c.execute("SELECT embed_rerank('q', ARRAY['a'], model => %s)", (E5,))
        kinds = dict(c.execute("SELECT name, kind FROM embed_models()").fetchall())
        assert kinds[RERANKER] == "cross-encoder" and kinds[E5] == "embedding"
        assert c.execute("SELECT dimensions, pooling FROM embed_models() WHERE name = %s",
                         (RERANKER,)).fetchone() == (None, None)


@pytest.fixture(scope="module")
def notes(cluster):
    with cluster.connect() as c:
        c.execute("CREATE TABLE notes (id int PRIMARY KEY, body text, embedding vector(384), model text)")
        c.execute("CREATE TRIGGER embed BEFORE INSERT OR UPDATE OF body ON notes FOR EACH ROW "
                  "EXECUTE FUNCTION embed_trigger('body', 'embedding', 'model')")
        c.execute("INSERT INTO notes (id, body) SELECT i, (%s::text[])[1 + i %% 5] || ' Day ' || i || '.' "
                  "FROM generate_series(1, 40) i", (NOTES,))
    return "notes"


def test_search_reranks_its_head_by_the_cross_encoder(cluster, notes):
    with cluster.connect() as c:
        plain = c.execute("SELECT key[1]::int FROM embed_search('notes', %s, 8)", (QUERY,)).fetchall()
        rows = c.execute("SELECT key[1]::int, rerank_score FROM embed_search('notes', %s, 8, rerank => 5, "
                         "rerank_model => %s)", (QUERY, RERANKER)).fetchall()
        head, tail = rows[:5], rows[5:]
        # The same notes, the first five reordered by their scores, the rest
        # in fused order without one.
        assert {k for k, _ in head} == {k for (k,) in plain[:5]}
        assert [k for k, _ in tail] == [k for (k,) in plain[5:]]
        assert all(s is None for _, s in tail)
        scores = [s for _, s in head]
        assert scores == sorted(scores, reverse=True)
        # Each score is the cross-encoder's for the note's text.
        for key, score in head:
            want = c.execute("SELECT (embed_rerank(%s, ARRAY[body], model => %s))[1] FROM notes WHERE id = %s",
                             (QUERY, RERANKER, key)).fetchone()[0]
            assert abs(want - score) < 1e-6
        # rerank past k still returns k notes: the head of the reranked n
        assert len(c.execute("SELECT * FROM embed_search('notes', %s, 3, rerank => 10, rerank_model => %s)",
                             (QUERY, RERANKER)).fetchall()) == 3


def test_evaluation_reports_hybrid_reranked(cluster, notes):
    with cluster.connect() as c:
        c.execute("CREATE TABLE pairs (query text, id int)")
        c.execute("INSERT INTO pairs SELECT %s, id FROM notes WHERE body LIKE 'Chest pain%%'", (QUERY,))
        rows = c.execute("SELECT mode, queries FROM embed_eval('pairs', ARRAY['notes']::regclass[], "
                         "rerank => 10, rerank_model => %s)", (RERANKER,)).fetchall()
        assert rows == [("vector", 1), ("lexical", 1), ("hybrid", 1), ("hybrid+rerank", 1)]


def cosine_distance(a, b):
    a, b = np.array(a, dtype=np.float64), np.array(b, dtype=np.float64)
    return 1 - a.dot(b) / np.linalg.norm(a) / np.linalg.norm(b)


@pytest.mark.parametrize("model, query_side", [
    (E5, "SELECT embed_text('query: ' || %s, model => %s)"),
    (ARTICLE, "SELECT embed_text(%s, model => '" + QUERY_ENCODER + "') WHERE %s::text IS NOT NULL"),
])
def test_an_asymmetric_model_embeds_the_query_its_way(cluster, model, query_side):
    """A query prefix (e5) and a query encoder of its own (MedCPT) from the
    model's clinembed.json: the distances embed_search reports are to the
    query embedded that way."""
    table = f"docs_{model.replace('-', '_')}"
    with cluster.connect() as c:
        c.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text, embedding vector(384), model text)")
        c.execute(f"INSERT INTO {table} SELECT i, (%s::text[])[i], embed_text((%s::text[])[i], model => %s)::vector, "
                  f"embed_model_id(%s) FROM generate_series(1, 5) i", (NOTES, NOTES, model, model))
        q = c.execute(query_side, (QUERY, model)).fetchone()[0]
        plain = c.execute("SELECT embed_text(%s, model => %s)", (QUERY, model)).fetchone()[0]
        assert cosine_distance(q, plain) > 1e-4, "the query side would not be told apart"
        found = c.execute(f"SELECT key[1]::int, distance FROM embed_search('{table}', %s, 5, mode => 'vector', "
                          f"text_column => 'body', model_column => 'model')", (QUERY,)).fetchall()
        assert len(found) == 5
        for key, distance in found:
            v = c.execute(f"SELECT embedding::real[] FROM {table} WHERE id = %s", (key,)).fetchone()[0]
            assert abs(distance - cosine_distance(q, v)) < 1e-5


def test_a_long_rerank_is_cancelled_between_micro_batches(cluster):
    """Bounded and cancellable like embed_texts: a statement_timeout lands
    while thousands of long pairs are scored, and the session goes on."""
    import time

    with cluster.connect() as c:
        c.execute("SET statement_timeout = '1s'")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute("SELECT embed_rerank('chest pain', array_fill(repeat('Admitted with chest pain. ', 100), "
                      "ARRAY[4000]), model => %s)", (RERANKER,))
        assert time.monotonic() - started < 5
        c.execute("RESET statement_timeout")
        assert len(c.execute("SELECT embed_rerank('q', ARRAY['a'], model => %s)", (RERANKER,)).fetchone()[0]) == 1
