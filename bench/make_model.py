#!/usr/bin/env python3
"""Builds the benchmark model: exactly BERT-base's shape (Bio_ClinicalBERT's:
12 layers, hidden 768, 12 heads, FFN 3072, 512 positions) with seeded random
weights, because no trained BERT-base can be downloaded here.  The cost per
token is the real model's; the vectors mean nothing.

Writes OUT/hf (config.json + weights, for the PyTorch notebook loop) and
OUT/onnx (model.onnx + tokenizer.json + config.json + clinembed.json, a
clinembed model directory).  The tokenizer is all-MiniLM-L6-v2's uncased
WordPiece (vocab 30522) from the installed default model; Bio_ClinicalBERT's
cased vocab has 28996 entries, which changes nothing but the embedding table.
"""

import argparse
import json
import os
import shutil

import torch
from transformers import BertConfig, BertModel


class LastHiddenState(torch.nn.Module):
    """The model with its inputs by name and only last_hidden_state out, as
    the exporter traces it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokenizer", required=True, help="tokenizer.json to pair with the model")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=20261126)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                        intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2,
                        attn_implementation="eager")
    model = BertModel(config, add_pooling_layer=False).eval()

    hf = os.path.join(args.out, "hf")
    onnx_dir = os.path.join(args.out, "onnx")
    os.makedirs(hf, exist_ok=True)
    os.makedirs(onnx_dir, exist_ok=True)
    model.save_pretrained(hf)
    shutil.copy(args.tokenizer, os.path.join(hf, "tokenizer.json"))

    ids = torch.ones((2, 16), dtype=torch.long)
    with torch.no_grad():
        torch.onnx.export(
            LastHiddenState(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            os.path.join(onnx_dir, "model.onnx"),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]},
            opset_version=17, do_constant_folding=True, dynamo=False)
    shutil.copy(args.tokenizer, os.path.join(onnx_dir, "tokenizer.json"))
    shutil.copy(os.path.join(hf, "config.json"), os.path.join(onnx_dir, "config.json"))
    with open(os.path.join(onnx_dir, "clinembed.json"), "w") as f:
        json.dump({"pooling": "mean", "max_length": 512, "normalize": False}, f)
    print(f"wrote {hf} and {onnx_dir}")


if __name__ == "__main__":
    main()
