#!/usr/bin/env bash
# Makes sure a pinned Python environment is installed and prints its python:
#   bash scripts/python-env.sh          the project's environment, .venv, from
#                                       requirements.lock: everything Python
#                                       does here (references, checks, tests,
#                                       benchmarks)
#   bash scripts/python-env.sh export   the exporter, scripts/model_tools/.venv-export,
#                                       from scripts/model_tools/requirements-export.lock:
#                                       optimum's ONNX exporter and nothing else
# Every wheel is pinned by sha256 (--require-hashes); an environment is
# (re)installed when its lock changes.  The lock's sha256 is recorded in
# VENV/.requirements only after a complete install, so a matching record is
# the whole check (importing torch to probe would cost seconds per call, and
# the test command calls this once per tier).  Progress goes to stderr.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
case ${1:-project} in
    project) VENV=$REPO/.venv LOCK=$REPO/requirements.lock ;;
    export) VENV=$REPO/scripts/model_tools/.venv-export LOCK=$REPO/scripts/model_tools/requirements-export.lock ;;
    *) echo "usage: $0 [project|export]" >&2; exit 2 ;;
esac
WANT=$(sha256sum "$LOCK" | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$WANT" ] || [ ! -x "$VENV/bin/python" ]; then
    echo "installing $(basename "$LOCK") into $VENV (several GB the first time)" >&2
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --require-hashes --only-binary=:all: -r "$LOCK" >&2
    echo "$WANT" > "$VENV/.requirements"
fi
# scripts/ on the environment's path: the tools import as a package
# (model_tools.reference), the notes generator as gen_notes.
for site in "$VENV"/lib/python3*/site-packages; do
    [ "$(cat "$site/clinembed.pth" 2>/dev/null)" = "$REPO/scripts" ] || echo "$REPO/scripts" > "$site/clinembed.pth"
done
echo "$VENV/bin/python"
