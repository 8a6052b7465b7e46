#!/usr/bin/env python3
"""The parity texts embedded by the original framework: the checkpoint run in
PyTorch through HF transformers (not through ONNX), tokenized by its own
tokenizer with truncation at --max-length, attention-masked mean pooling of
last_hidden_state, one text at a time.  Writes {"framework", "vectors":
{label: [floats]}} to OUT for `parity.py --framework OUT`.  Runs in the
project's environment (requirements.txt), whose tokenizers is the
extension's.
"""

import argparse
import json
import sys

import torch
import transformers

from model_tools.reference import framework_vectors
from texts import TEXTS


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("checkpoint", help="the checkpoint directory (safetensors, config, tokenizer)")
    ap.add_argument("out")
    ap.add_argument("--max-length", type=int, default=512)
    args = ap.parse_args()

    vectors = framework_vectors(args.checkpoint, [t for _, t in TEXTS], args.max_length)
    framework = f"PyTorch {torch.__version__} + transformers {transformers.__version__}"
    with open(args.out, "w") as out:
        json.dump({"framework": framework,
                   "vectors": {name: [float(x) for x in v] for (name, _), v in zip(TEXTS, vectors)}}, out)
    print(f"{framework}: {len(vectors)} vectors of {len(vectors[0])} dimensions", file=sys.stderr)


if __name__ == "__main__":
    main()
