#!/usr/bin/env python3
"""The parity texts embedded by the original framework: the checkpoint run in
PyTorch through HF transformers (not through ONNX), tokenized by its own
tokenizer with truncation at --max-length, attention-masked mean pooling of
last_hidden_state, one text at a time.  Writes {"framework", "vectors":
{label: [floats]}} to OUT for `parity.py --framework OUT`.  Runs in the
export environment (scripts/model_tools/.venv-export), which has PyTorch.
"""

import argparse
import json
import sys

import torch
import transformers
from transformers import AutoModel, AutoTokenizer

from texts import TEXTS


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("checkpoint", help="the checkpoint directory (safetensors, config, tokenizer)")
    ap.add_argument("out")
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args()

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(args.checkpoint, use_fast=True)
    model = AutoModel.from_pretrained(args.checkpoint).eval()
    vectors = {}
    for name, text in TEXTS:
        enc = tok(text, truncation=True, max_length=args.max_length, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        vectors[name] = [float(x) for x in pooled[0]]
    framework = f"PyTorch {torch.__version__} + transformers {transformers.__version__}"
    with open(args.out, "w") as out:
        json.dump({"framework": framework, "vectors": vectors}, out)
    print(f"{framework}: {len(vectors)} vectors of {len(next(iter(vectors.values())))} dimensions", file=sys.stderr)


if __name__ == "__main__":
    main()
