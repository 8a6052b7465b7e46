#!/usr/bin/env python3
"""Parity: embed_text() in PostgreSQL against an independent reference.

The reference is the notebook's method rebuilt from Python onnxruntime and HF
tokenizers on the same model files (scripts/model_tools/reference.py, the one
reference): special tokens added, truncation at min(512, position limit), no
padding for one text, attention-masked mean pooling of last_hidden_state.  Every text must agree within --tol (1e-5) max
absolute difference.  Then the same for every pooling and output option
(CLS, max, L2 normalization), each a copy of the model directory with its own
clinembed.json, against the same reference with that option.  Connects with
the usual PG* environment variables, as a superuser (it sets clinembed.model).
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
import psycopg

from texts import TEXTS

from model_tools.reference import Reference  # the one reference: scripts/model_tools/reference.py


# Every pooling and output option, as clinembed.json contents.
VARIANTS = [
    ("cls", {"pooling": "cls"}),
    ("max", {"pooling": "max"}),
    ("mean_normalized", {"pooling": "mean", "normalize": True}),
    ("cls_normalized", {"pooling": "cls", "normalize": True}),
    ("max_normalized", {"pooling": "max", "normalize": True}),
]


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


def check_model(conn, ref, label, tol):
    """embed_text and embed_texts against ref on every text: (passed, failed, worst)."""
    passed = failed = 0
    worst = 0.0
    for name, text in TEXTS:
        want, ntok = ref.embed(text)
        got = conn.execute("SELECT embed_text(%s)", (text,)).fetchone()[0]
        got = np.array(got, dtype=np.float32)
        ok = got.shape == want.shape and np.all(np.isfinite(got))
        diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")
        ok = ok and diff <= tol
        worst = max(worst, diff)
        passed += ok
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {label} {name:<18} tokens={ntok:<4} max_abs_diff={diff:.2e}")
    # The batched function over all texts at once: each within tol too.
    rows = conn.execute("SELECT ord, embedding FROM embed_texts(%s) ORDER BY ord", ([t for _, t in TEXTS],)).fetchall()
    assert [r[0] for r in rows] == list(range(1, len(TEXTS) + 1)), "embed_texts returns one row per input, in order"
    for (name, text), (_, got) in zip(TEXTS, rows):
        want, _ = ref.embed(text)
        diff = float(np.max(np.abs(np.array(got, dtype=np.float32) - want)))
        ok = diff <= tol
        worst = max(worst, diff)
        passed += ok
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {label} embed_texts {name:<18} max_abs_diff={diff:.2e}")
    return passed, failed, worst


def check_framework(conn, path, tol):
    """embed_text against the checkpoint run in its own framework: (passed, failed)."""
    with open(path) as f:
        want = json.load(f)
    passed = failed = 0
    worst = 0.0
    for name, text in TEXTS:
        got = np.array(conn.execute("SELECT embed_text(%s)", (text,)).fetchone()[0], dtype=np.float32)
        ref = np.array(want["vectors"][name], dtype=np.float32)
        diff = float(np.max(np.abs(got - ref))) if got.shape == ref.shape else float("inf")
        ok = diff <= tol
        worst = max(worst, diff)
        passed += ok
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} framework {name:<18} max_abs_diff={diff:.2e}")
    print(f"parity against {want['framework']}: worst max abs diff {worst:.2e} (tolerance {tol:g})")
    return passed, failed


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", required=True, help="the model directory (scripts/test.sh passes the default model's)")
    ap.add_argument("--model", default=None, help="value for clinembed.model (default: the server's default)")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--no-variants", action="store_true", help="check only the model as configured")
    ap.add_argument("--framework", metavar="FILE",
                    help="vectors of the same texts from the original framework (framework.py), "
                         "compared with embed_text of the model as configured")
    ap.add_argument("--summary", metavar="FILE", help="also write the counts there, as 'PASSED FAILED'")
    args = ap.parse_args()

    ref = Reference(args.model_dir)
    with psycopg.connect(dbname=os.environ.get("PGDATABASE", "postgres"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS clinembed")
        if args.model:
            conn.execute("SELECT set_config('clinembed.model', %s, false)", (args.model,))
        passed, failed, worst = check_model(conn, ref, ref.pooling, args.tol)
        print(f"parity over {len(TEXTS)} texts, worst max abs diff {worst:.2e} (tolerance {args.tol:g}), max_length {ref.max_length}")
        if args.framework:
            p, f = check_framework(conn, args.framework, args.tol)
            passed, failed = passed + p, failed + f
        for name, options in [] if args.no_variants else VARIANTS:
            path = variant_dir(args.model_dir, name, options)
            conn.execute("SELECT set_config('clinembed.model', %s, false)", (path,))
            p, f, w = check_model(conn, Reference(path), name, args.tol)
            print(f"parity {name}: {p} passed, {f} failed, worst max abs diff {w:.2e}")
            passed, failed = passed + p, failed + f
            shutil.rmtree(path, ignore_errors=True)
    print(f"parity: {passed} passed, {failed} failed")
    if args.summary:
        with open(args.summary, "w") as f:
            f.write(f"{passed} {failed}\n")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
