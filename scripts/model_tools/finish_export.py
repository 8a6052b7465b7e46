"""Turns optimum's ONNX export of a BERT-family checkpoint into a clinembed
model directory, and checks it against the checkpoint run in PyTorch.

Writes OUT/model.onnx, tokenizer.json, config.json (a local checkpoint's own
files, else the exporter's) and clinembed.json
(pooling, max_length = min(512, the model's positions), normalize, and the
SHA-256 of model.onnx), then embeds a few texts both ways (attention-masked
mean pooling) and fails if they differ by more than --tol.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np
import onnxruntime as ort

from files import sha256

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
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if any(f.endswith(".onnx_data") for f in os.listdir(args.export)):
        sys.exit("the export has external data files; clinembed loads a single model.onnx (models under 2 GB)")
    if not os.path.exists(os.path.join(args.export, "tokenizer.json")):
        # only a slow tokenizer in the checkpoint: convert it
        AutoTokenizer.from_pretrained(args.source, use_fast=True).save_pretrained(args.export)
    config = AutoConfig.from_pretrained(args.source)
    positions = getattr(config, "max_position_embeddings", 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        positions -= 2
    max_length = min(512, positions)

    os.makedirs(args.out, exist_ok=True)
    for f in ("model.onnx", "tokenizer.json", "config.json"):
        # A local checkpoint's own tokenizer and config, byte for byte (the
        # exporter writes its own serialisation of them).
        own = os.path.join(args.source, f)
        keep = f != "model.onnx" and os.path.isfile(own)
        shutil.copy(own if keep else os.path.join(args.export, f), os.path.join(args.out, f))
    settings = {"pooling": args.pooling, "max_length": max_length, "normalize": args.normalize,
                "sha256": sha256(os.path.join(args.out, "model.onnx"))}
    with open(os.path.join(args.out, "clinembed.json"), "w") as out:
        json.dump(settings, out, indent=2)
        out.write("\n")

    # The check: the checkpoint in PyTorch against the exported graph.
    sess = ort.InferenceSession(os.path.join(args.out, "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    outputs = [o.name for o in sess.get_outputs()]
    if "last_hidden_state" not in outputs:
        sys.exit(f"the export has outputs {outputs}; clinembed needs last_hidden_state (task feature-extraction)")
    tok = AutoTokenizer.from_pretrained(args.out, use_fast=True)
    model = AutoModel.from_pretrained(args.source).eval()
    worst = 0.0
    for text in TEXTS:
        enc = tok(text, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        want = ((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()[0]
        feed = {k: v.numpy().astype(np.int64) for k, v in enc.items() if k in inputs}
        got_hidden = sess.run(["last_hidden_state"], feed)[0]
        mask = feed["attention_mask"][..., None].astype(np.float32)
        got = ((got_hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None))[0]
        worst = max(worst, float(np.max(np.abs(got - want))))
    print(f"wrote {args.out}: max_length {max_length}, pooling {args.pooling}, inputs {sorted(inputs)}, "
          f"{os.path.getsize(os.path.join(args.out, 'model.onnx')) / 1e6:.0f} MB")
    print(f"check: PyTorch vs exported ONNX, mean pooling, {len(TEXTS)} texts: max abs diff {worst:.2e} (tolerance {args.tol:g})")
    if worst > args.tol:
        sys.exit("the export does not match the checkpoint")


if __name__ == "__main__":
    main()
