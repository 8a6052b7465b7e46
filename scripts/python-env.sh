#!/usr/bin/env bash
# Makes sure a pinned Python environment is installed and prints its python:
#   bash scripts/python-env.sh          the project's environment, .venv, from
#                                       requirements.lock: everything Python
#                                       does here (references, checks, tests,
#                                       benchmarks)
#   bash scripts/python-env.sh export   the exporter, scripts/model_tools/.venv-export,
#                                       from scripts/model_tools/requirements-export.lock:
#                                       optimum's ONNX exporter and nothing else, on
#                                       the project's PyTorch (its packages come
#                                       after the exporter's on the path)
#   bash scripts/python-env.sh build    setup's, scripts/model_tools/.venv-build,
#                                       from scripts/model_tools/requirements-build.lock:
#                                       onnx and numpy, enough to fill the default
#                                       model's graph skeleton (graph_skeleton.py)
# Every wheel is pinned by sha256 (--require-hashes).
#
# The wheels (several GB for project: PyPI's PyTorch brings CUDA's
# libraries; about 500 MB for export; about 90 MB for build) are installed
# once per machine and lock, not once per clone: into
# $CLINEMBED_PYTHON_ROOT/NAME-pyXY-SHA (default /var/cache/clinembed/python,
# XY python3's version, SHA the lock's sha256), a plain package directory
# (pip --target) renamed into place only after a complete install, so its
# existence is the whole check.  A clone's .venv is a small venv of its own (no pip) whose
# clinembed.pth adds that directory and the clone's scripts/ (the tools
# import as a package, model_tools.reference, the notes generator as
# gen_notes).  So the test command in a second clone, or CI's, reuses the
# installed wheels, and no clone carries a copy.  Progress goes to stderr.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BESIDE_LOCK= NO_DEPS=
case ${1:-project} in
    project) NAME=project VENV=$REPO/.venv LOCK=$REPO/requirements.lock ;;
    export) NAME=export VENV=$REPO/scripts/model_tools/.venv-export LOCK=$REPO/scripts/model_tools/requirements-export.lock
        # PyTorch is installed once, with the project's environment.
        bash "$0" project >/dev/null || exit 1
        # (--no-deps: torch and its dependencies, which optimum requires,
        # are the project's.)
        BESIDE_LOCK=$REPO/requirements.lock NO_DEPS=--no-deps ;;
    build) NAME=build VENV=$REPO/scripts/model_tools/.venv-build LOCK=$REPO/scripts/model_tools/requirements-build.lock ;;
    *) echo "usage: $0 [project|export|build]" >&2; exit 2 ;;
esac
ROOT=${CLINEMBED_PYTHON_ROOT:-/var/cache/clinembed/python}
PY_TAG=$(python3 -c 'import sys; print("py%d%d" % sys.version_info[:2])')
# packages NAME LOCK: where that lock's wheels are installed.
packages() { echo "$ROOT/$1-$PY_TAG-$(sha256sum "$2" | cut -d' ' -f1)"; }
PACKAGES=$(packages "$NAME" "$LOCK")
WANT=${PACKAGES##*-}
BESIDE=; [ -z "$BESIDE_LOCK" ] || BESIDE=$(packages project "$BESIDE_LOCK")

if [ ! -d "$PACKAGES" ]; then
    case $NAME in project) size="several GB" ;; export) size="about 500 MB" ;; *) size="about 90 MB" ;; esac
    echo "installing $(basename "$LOCK") into $PACKAGES ($size, once per machine and lock)" >&2
    mkdir -p "$ROOT"
    tmp=$(mktemp -d "$PACKAGES.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    # No pip cache: it would keep a second copy of every wheel.
    python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check --require-hashes \
        --only-binary=:all: --no-compile $NO_DEPS --target "$tmp" -r "$LOCK" >&2
    chmod -R a+rX "$tmp"
    # Another clone's install of the same lock may have finished first:
    # then its directory stays, and this one goes.
    mv -T "$tmp" "$PACKAGES" 2>/dev/null || rm -rf "$tmp"
    trap - EXIT
    [ -d "$PACKAGES" ] || { echo "could not install into $PACKAGES" >&2; exit 1; }
    # Environments of locks this clone no longer names stay until removed by
    # hand (another clone may still use them); say what they take.
    old=$(find "$ROOT" -mindepth 1 -maxdepth 1 -name "$NAME-*" ! -name "$NAME-$PY_TAG-$WANT" | head -n 3)
    [ -z "$old" ] || echo "other $NAME environments under $ROOT (remove when no clone uses them): $old" >&2
fi

# The clone's own venv: created when missing, pointed at the packages.
if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    python3 -m venv --without-pip "$VENV"
fi
PTH="import site; site.addsitedir('$PACKAGES')${BESIDE:+
import site; site.addsitedir('$BESIDE')}
$REPO/scripts"
for site in "$VENV"/lib/python3*/site-packages; do
    [ "$(cat "$site/clinembed.pth" 2>/dev/null)" = "$PTH" ] || printf '%s\n' "$PTH" > "$site/clinembed.pth"
done
echo "$VENV/bin/python"
