"""docs/models.md's path from a checkpoint to SELECT embed_text(...), offline, on
a small BERT made here.  Slow and outside the test command (it exports with
optimum in the exporter's environment, scripts/python-env.sh export):

    .venv/bin/python -m pytest -m slow tests/integration/test_export.py

1. makes a local checkpoint (safetensors, config, tokenizer) with
   transformers.BertModel(BertConfig(...)) and the default model's WordPiece
   tokenizer;
2. runs scripts/export-model.sh on it (its own PyTorch check included);
3. installs the library (cargo pgrx install --release) and the result, as
   model "clinembed-export-test", in a models root of a cluster of its own
   (clinembed.models_root), never in the installed model directory;
4. embeds texts in PostgreSQL with it, one call each, and compares them with
   the checkpoint run in PyTorch (the notebook's method).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import small_bert_checkpoint, models_cluster, scratch_dir

pytestmark = [pytest.mark.slow, pytest.mark.multicluster]

REPO = Path(__file__).resolve().parents[2]
ROOT = Path("/tmp/clinembed-export-test")
MODEL = "clinembed-export-test"
TEXTS = ["Patient denies chest pain.", "Pt c/o SOB x3d; h/o CHF, EF 30%.", "Café, 患者主诉胸痛, 🙂",
         "Admitted with pneumonia, treated with ceftriaxone. " * 80, ""]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def work():
    return scratch_dir(ROOT)


@pytest.fixture(scope="module")
def checkpoint(work):
    return small_bert_checkpoint(work / "checkpoint", 20261126)


@pytest.fixture(scope="module")
def exported(work, checkpoint):
    out = work / "model"
    log = work / "export.log"
    with open(log, "w") as f:
        done = subprocess.run(["bash", str(REPO / "scripts" / "export-model.sh"), str(checkpoint), str(out)],
                              env={**os.environ, "PYTHON": sys.executable}, stdout=f, stderr=subprocess.STDOUT)
    return out, done.returncode, log.read_text()


@pytest.fixture(scope="module")
def cluster(work, exported):
    model, returncode, _ = exported
    assert returncode == 0, "the export failed"
    models = work / "models"
    shutil.copytree(model, models / MODEL)
    node = models_cluster(work, models)
    try:
        yield node
    finally:
        if not os.environ.get("KEEP"):
            node.stop()


def test_the_checkpoint_has_safetensors_config_and_tokenizer(checkpoint):
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in checkpoint.iterdir()}


def test_export_model_succeeds_and_its_own_pytorch_check_passes(exported):
    _, returncode, log = exported
    assert returncode == 0, log[-2000:]
    assert "check: PyTorch vs exported ONNX" in log


def test_the_model_directory_has_what_clinembed_loads(exported):
    model, _, _ = exported
    assert {"model.onnx", "tokenizer.json", "config.json", "clinembed.json"} <= {p.name for p in model.iterdir()}


def test_embed_text_in_postgresql_equals_the_checkpoint_in_pytorch(cluster, checkpoint):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModel.from_pretrained(checkpoint).eval()
    worst = 0.0
    with cluster.connect() as c:
        for text in TEXTS:
            enc = tok(text, truncation=True, max_length=512, return_tensors="pt")
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            want = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()[0]
            got = np.array(c.execute("SELECT embed_text(%s, model => %s)", (text, MODEL)).fetchone()[0],
                           dtype=np.float32)
            worst = max(worst, float(np.max(np.abs(got - want))))
    print(f"worst {worst:.2e}")
    assert worst <= TOLERANCE


def test_the_exported_model_is_listed_with_its_checksum(cluster):
    with cluster.connect() as c:
        assert c.execute("SELECT dimensions, sha256 IS NOT NULL FROM embed_models() WHERE name = %s",
                         (MODEL,)).fetchone() == (128, True)
