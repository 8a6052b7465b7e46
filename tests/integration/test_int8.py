"""int8: what scripts/quantize-model.sh makes of the trained default model,
and how the extension runs it, for both forms it makes: the default (one
activation scale per batch) and --per-token (one per token).

1. quantize-model.sh quantizes the installed default model (all-MiniLM-L6-v2,
   trained weights) into a directory of this test's own and reports its
   agreement with fp32 on 200 notes of scripts/gen_notes.py; the report must
   keep the form's floor, which docs/models.md gives (FORMS).
2. In PostgreSQL (the scratch cluster, clinembed.model set to that
   directory), the int8 model's vectors from embed_text equal the Python
   reference's (reference.py: onnxruntime, one text at a time) within
   TOLERANCE, on every parity text.
3. The default form gives each batch one activation scale, so a text's
   vector depends on what it is batched with: embed_model_info() reports it
   is not batch-invariant, and embed_texts runs it one text per
   micro-batch.  The per-token form is batch-invariant and embed_texts
   batches it.  Either way embed_texts' vectors equal embed_text's.
4. In the database, int8 and fp32 vectors of the same notes keep the floor.

    .venv/bin/python -m pytest tests/integration/test_int8.py
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import REPO, connect, drop_database, fresh_database, scratch_dir
from model_tools.agreement import unit
from model_tools.files import sha256
from model_tools.reference import Reference
from parity_texts import TEXTS
import gen_notes

ROOT = Path("/tmp/clinembed-int8-test")
DB = "clinembed_int8"
NOTES = 200
# Each form's agreement with fp32 on these 200 notes, one text at a time
# (bench/RESULTS.md, issue 29): the default gave mean cosine 0.9931, minimum
# 0.9880, 10-nearest-neighbour overlap 0.939; --per-token 0.9973, 0.9954,
# 0.967.  A change that loses more than these margins is a regression, not
# drift (quantization and inference are deterministic on one machine;
# another CPU's kernels move the figures by far less).
FORMS = {
    "default": ([], {"cosine_mean": 0.99, "cosine_min": 0.98, "nn_overlap_at_10": 0.90}, False),
    "per-token": (["--per-token"], {"cosine_mean": 0.995, "cosine_min": 0.99, "nn_overlap_at_10": 0.95}, True),
}
# int8 GEMMs are exact in int32; what differs between the extension and the
# reference is only fp32 rounding around them (the same session options,
# other buffers), which can move one activation across a quantization step.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def work():
    return scratch_dir(ROOT)


@pytest.fixture(scope="module", params=list(FORMS))
def form(request):
    return request.param


@pytest.fixture(scope="module")
def quantized(work, form):
    out = work / f"all-minilm-l6-v2-int8-{form}"
    done = subprocess.run(["bash", str(REPO / "scripts" / "quantize-model.sh"), os.environ["CLINEMBED_MODEL_DIR"],
                           str(out), "--notes", str(NOTES)] + FORMS[form][0],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    os.chmod(out, 0o755)
    for f in out.iterdir():
        os.chmod(f, 0o644)
    return out


@pytest.fixture(scope="module")
def conn(quantized):
    fresh_database(DB)
    with connect(DB) as c:
        c.execute("SELECT set_config('clinembed.model', %s, false)", (str(quantized),))
        yield c
    drop_database(DB)


def test_quantize_model_writes_an_int8_model_directory_clinembed_loads(quantized, form):
    settings = json.loads((quantized / "clinembed.json").read_text())
    assert settings["sha256"] == sha256(quantized / "model.onnx")
    ops = {n.op_type for n in onnx.load(str(quantized / "model.onnx"), load_external_data=False).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops if form == "default" else "MatMulIntegerToFloat" in ops
    fp32 = Path(os.environ["CLINEMBED_MODEL_DIR"]) / "model.onnx"
    assert (quantized / "model.onnx").stat().st_size < 0.7 * fp32.stat().st_size
    assert (quantized / "tokenizer.json").read_bytes() == (fp32.parent / "tokenizer.json").read_bytes()


def test_its_agreement_with_fp32_keeps_the_floor(quantized, form):
    report = json.loads((quantized / "agreement.json").read_text())
    assert report["texts"] == NOTES
    print({k: round(report[k], 5) for k in FORMS[form][1]})
    for key, floor in FORMS[form][1].items():
        assert report[key] >= floor, f"{key} {report[key]:.5f} < {floor}"


def test_embed_text_equals_the_python_reference(conn, quantized):
    ref = Reference(str(quantized), threads=os.cpu_count())
    worst = 0.0
    for name, text in TEXTS:
        got = np.array(conn.execute("SELECT embed_text(%s)", (text,)).fetchone()[0], np.float32)
        want, _ = ref.embed(text)
        assert got.shape == want.shape, name
        worst = max(worst, float(np.abs(got - want).max()))
    print(f"worst {worst:.2e} over {len(TEXTS)} texts")
    assert worst <= TOLERANCE


def test_embed_texts_batches_it_only_if_batch_invariant_and_equals_embed_text(conn, form):
    invariant = FORMS[form][2]
    assert conn.execute("SELECT batch_invariant FROM embed_model_info()").fetchone()[0] is invariant
    texts = [t for _, t in TEXTS]
    batched = np.array([r[0] for r in conn.execute("SELECT embedding FROM embed_texts(%s) ORDER BY ord", (texts,))])
    alone = np.array([conn.execute("SELECT embed_text(%s)", (t,)).fetchone()[0] for t in texts])
    # One text per micro-batch runs exactly embed_text's computation; a
    # batch-invariant model within the probe's tolerance.
    assert np.abs(batched - alone).max() <= (2e-6 if invariant else 0.0)


def test_in_the_database_int8_keeps_the_floor_against_fp32(conn, form):
    texts = [row[4] for row in gen_notes.notes(NOTES, 20261126)]
    int8 = np.array([r[0] for r in conn.execute("SELECT embedding FROM embed_texts(%s) ORDER BY ord", (texts,))])
    installed = os.path.basename(os.environ["CLINEMBED_MODEL_DIR"])  # the default model, by its installed name
    fp32 = np.array([r[0] for r in conn.execute(
        "SELECT embedding FROM embed_texts(%s, model => %s) ORDER BY ord", (texts, installed))])
    cos = np.sum(unit(int8) * unit(fp32), axis=1)
    print(f"cosine mean {cos.mean():.5f}, min {cos.min():.5f}")
    floor = FORMS[form][1]
    assert cos.mean() >= floor["cosine_mean"] and cos.min() >= floor["cosine_min"]
