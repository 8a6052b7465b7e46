#!/usr/bin/env bash
# Makes sure scripts/model_tools/.venv-export holds the export tools (PyTorch,
# transformers, optimum: requirements-export.txt, every wheel pinned by sha256
# in requirements-export.lock) and prints its python.  (Re)installed when the
# lock changes.  Used by scripts/export-model.sh (and so scripts/setup.sh) and
# by the parity tier's check against PyTorch.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VENV=$HERE/.venv-export
LOCK=$HERE/requirements-export.lock
WANT=$(sha256sum "$LOCK" | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$WANT" ] ||
   ! "$VENV/bin/python" -c 'import torch, transformers, optimum.exporters.onnx, onnxruntime' 2>/dev/null; then
    echo "installing PyTorch, transformers and optimum into $VENV (about 3 GB)" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --require-hashes --only-binary=:all: -r "$LOCK" >&2
    echo "$WANT" > "$VENV/.requirements"
fi
echo "$VENV/bin/python"
