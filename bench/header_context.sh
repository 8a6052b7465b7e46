#!/usr/bin/env bash
# A section's header embedded as context for its windows, against the
# windows as embed_chunks embeds them (bench/header_context.py says what
# each figure is).
#   bash bench/header_context.sh             # 1,000 synthetic notes, default model
#   NOTES=300 bash bench/header_context.sh   # fewer
# Run as root on Debian 12 after scripts/setup.sh.  Prints the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

NOTES=${NOTES:-1000}
PY=$(bash scripts/python-env.sh)
install_release /tmp/clinembed-bench-build.log
cluster_start bench-header "$(free_port)"
trap cluster_stop EXIT
bench_notes "$NOTES"
echo "clinembed $(pg -d bench -At -c "SELECT extversion FROM pg_extension WHERE extname = 'clinembed'"), $DEFAULT_MODEL, $(nproc) CPUs, $(date -u +%F), notes: $NOTES"
PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=postgres "$PY" bench/header_context.py --dbname bench
