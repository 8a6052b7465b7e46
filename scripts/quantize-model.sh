#!/usr/bin/env bash
# Quantizes a clinembed model directory to int8 and reports how well the int8
# model agrees with the original before anyone switches:
#   bash scripts/quantize-model.sh SRC_DIR DST_DIR [--per-token] [--corpus FILE] [--notes N]
# SRC_DIR is a model directory (model.onnx, tokenizer.json, ...), e.g. one
# made by scripts/export-model.sh.  DST_DIR gets the int8 model.onnx, the same
# tokenizer and settings, and the new sha256 in clinembed.json; install it
# like any model.  The report (mean and minimum cosine to the original, and
# nearest-neighbour overlap at 10) runs on FILE (one text per line), or on
# the synthetic notes of scripts/gen_notes.py, and is also written to
# DST_DIR/agreement.json.  Weights get one scale per output channel
# (--per-tensor: one per matrix), activations one per batch (--per-token: one
# per token, closer to fp32 and slower); --fuse fuses attention first.  Runs
# in the project's Python environment (scripts/python-env.sh; tokenizers as
# the extension's).  docs/models.md#int8 says which to choose.
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,15p' "$0"; exit 2; }
SRC=$1 DST=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
PY=$(bash "$HERE/python-env.sh")
# Quantizer options go to quantize.py, the rest to the agreement report.
QUANTIZE=() REPORT=()
for a in "$@"; do
    case "$a" in
        --per-tensor|--per-token|--fuse) QUANTIZE+=("$a") ;;
        *) REPORT+=("$a") ;;
    esac
done
"$PY" "$HERE/model_tools/quantize.py" "$SRC" "$DST" "${QUANTIZE[@]}"
"$PY" "$HERE/model_tools/agreement.py" "$SRC" "$DST" --json "$DST/agreement.json" "${REPORT[@]}"
