"""Turns optimum's ONNX export of a BERT-family checkpoint into a clinembed
model directory, and checks it against the checkpoint run in PyTorch.

Writes OUT/model.onnx, tokenizer.json, config.json (a local checkpoint's own
files, else the exporter's) and clinembed.json
(pooling, max_length = min(512, the model's positions), normalize, and the
SHA-256 of model.onnx), then embeds a few texts both ways (attention-masked
mean pooling) and fails if they differ by more than --tol.  With
--cross-encoder (optimum's text-classification export of a model with one
label), clinembed.json says "kind": "cross-encoder" and the check compares
the one logit of a few (query, text) pairs instead.
"""

import argparse
import os
import shutil
import sys

import numpy as np

from files import write_settings
from reference import (DEFAULT_MAX_LENGTH, PairReference, Reference, framework_scores, framework_vectors,
                       position_limit)

PAIRS = [
    ("chest pain with troponin elevation", "Patient denies chest pain or shortness of breath."),
    ("heart failure", "Pt c/o SOB x3d, DOE, orthopnea; h/o CHF, HFrEF EF 30%."),
    ("pneumonia antibiotics", "DISCHARGE SUMMARY: admitted with community-acquired pneumonia, treated with ceftriaxone. " * 40),
    ("empty", ""),
]
TEXTS = [
    "Patient denies chest pain or shortness of breath.",
    "Pt c/o SOB x3d, DOE, orthopnea; h/o CHF, HFrEF EF 30%.",
    "DISCHARGE SUMMARY: admitted with community-acquired pneumonia, treated with ceftriaxone. " * 40,
    "",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("source", help="the checkpoint: a hub id or a local directory")
    ap.add_argument("export", help="optimum's output directory")
    ap.add_argument("out", help="the clinembed model directory to write")
    ap.add_argument("--pooling", default="mean", choices=["mean", "cls", "max"])
    ap.add_argument("--normalize", action="store_true")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--cross-encoder", action="store_true",
                    help="a sequence-classification export with one label: a reranker")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    if any(f.endswith(".onnx_data") for f in os.listdir(args.export)):
        sys.exit("the export has external data files; clinembed loads a single model.onnx (models under 2 GB)")
    if not os.path.exists(os.path.join(args.export, "tokenizer.json")):
        # only a slow tokenizer in the checkpoint: convert it
        AutoTokenizer.from_pretrained(args.source, use_fast=True).save_pretrained(args.export)
    os.makedirs(args.out, exist_ok=True)
    for f in ("model.onnx", "tokenizer.json", "config.json"):
        # A local checkpoint's own tokenizer and config, byte for byte (the
        # exporter writes its own serialisation of them).
        own = os.path.join(args.source, f)
        keep = f != "model.onnx" and os.path.isfile(own)
        shutil.copy(own if keep else os.path.join(args.export, f), os.path.join(args.out, f))
    # min(512, the position limit): the same rule the reference applies.
    max_length = min(DEFAULT_MAX_LENGTH, position_limit(args.out) or DEFAULT_MAX_LENGTH)
    if args.cross_encoder:
        write_settings(args.out, {"kind": "cross-encoder", "max_length": max_length})
    else:
        write_settings(args.out, {"pooling": args.pooling, "max_length": max_length, "normalize": args.normalize})

    if args.cross_encoder:
        check_cross_encoder(args, max_length)
        return
    # The check: the checkpoint in PyTorch against the exported graph, both
    # mean-pooled, through the one reference (reference.py).
    ref = Reference(args.out, pooling="mean", normalize=False)
    if ref.output != "last_hidden_state":
        sys.exit("the export has no last_hidden_state output; clinembed needs it (task feature-extraction)")
    inputs = ref.inputs
    want = framework_vectors(args.source, TEXTS, max_length, tokenizer_dir=args.out)
    worst = max(float(np.max(np.abs(ref.embed(t)[0] - w))) for t, w in zip(TEXTS, want))
    print(f"wrote {args.out}: max_length {max_length}, pooling {args.pooling}, inputs {sorted(inputs)}, "
          f"{os.path.getsize(os.path.join(args.out, 'model.onnx')) / 1e6:.0f} MB")
    print(f"check: PyTorch vs exported ONNX, mean pooling, {len(TEXTS)} texts: max abs diff {worst:.2e} (tolerance {args.tol:g})")
    if worst > args.tol:
        sys.exit("the export does not match the checkpoint")


def check_cross_encoder(args, max_length):
    """The checkpoint's logits in PyTorch against the exported graph's."""
    ref = PairReference(args.out)
    if "logits" not in ref.outputs:
        sys.exit("the export has no logits output; a cross-encoder needs it (task text-classification)")
    want = framework_scores(args.source, PAIRS, max_length, tokenizer_dir=args.out)
    got = [ref.score(q, t) for q, t in PAIRS]
    worst = max(abs(g - w) for g, w in zip(got, want))
    print(f"wrote {args.out}: cross-encoder, max_length {max_length}, inputs {sorted(ref.inputs)}, "
          f"{os.path.getsize(os.path.join(args.out, 'model.onnx')) / 1e6:.0f} MB")
    print(f"check: PyTorch vs exported ONNX, logits of {len(PAIRS)} pairs: max abs diff {worst:.2e} (tolerance {args.tol:g})")
    if worst > args.tol:
        sys.exit("the export does not match the checkpoint")


if __name__ == "__main__":
    main()
