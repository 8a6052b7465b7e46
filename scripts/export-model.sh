#!/usr/bin/env bash
# Exports a BERT-family checkpoint to a clinembed model directory with
# optimum's ONNX exporter (task feature-extraction, transformers library, not
# the sentence-transformers pooling head), then checks the export against the
# checkpoint run in PyTorch:
#   bash scripts/export-model.sh emilyalsentzer/Bio_ClinicalBERT OUTDIR   # from the hub
#   bash scripts/export-model.sh /path/to/checkpoint OUTDIR               # local: safetensors + config + tokenizer
# Options after OUTDIR: --pooling mean|cls|max, --normalize, --tol T (the
# largest difference from PyTorch accepted; default 1e-4), --cross-encoder
# (a sequence-classification checkpoint with one label, exported with task
# text-classification: a reranker for embed_rerank, checked on pairs' logits).
# Run it where the checkpoint is reachable; copy OUTDIR to the database server
# and install it as $(pg_config --sharedir)/clinembed/models/NAME (see
# docs/models.md, "Bio_ClinicalBERT from pip install to SELECT").  Two pinned
# Python environments (scripts/python-env.sh), one PyTorch: optimum's
# exporter runs in the exporter's own (scripts/model_tools/requirements-export.txt,
# on the project's PyTorch; EXPORTER_PYTHON names another interpreter with
# optimum), and the check, with the one reference, in the project's
# (requirements.txt; PYTHON names another).  A local checkpoint's own
# tokenizer.json and config.json are kept byte for byte.  The default model
# was exported this way once; setup fills its committed graph skeleton
# instead (docs/models.md, "The default model").
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,22p' "$0"; exit 2; }
SOURCE=$1 OUT=$2
shift 2
TASK=feature-extraction
for a in "$@"; do if [ "$a" = --cross-encoder ]; then TASK=text-classification; fi; done
HERE=$(cd "$(dirname "$0")" && pwd)
EXPORTER_PYTHON=${EXPORTER_PYTHON:-$(bash "$HERE/python-env.sh" export)}
PYTHON=${PYTHON:-$(bash "$HERE/python-env.sh")}
EXPORT=$(mktemp -d)
trap 'rm -rf "$EXPORT"' EXIT
"$EXPORTER_PYTHON" "$HERE/model_tools/optimum_export.py" --model "$SOURCE" --task "$TASK" \
    --library-name transformers --opset 17 "$EXPORT"
"$PYTHON" "$HERE/model_tools/finish_export.py" "$SOURCE" "$EXPORT" "$OUT" "$@"
echo "install on the database server (as root):"
echo "  cp -r $OUT \$(pg_config --sharedir)/clinembed/models/NAME && chmod -R a+rX \$(pg_config --sharedir)/clinembed/models/NAME"
