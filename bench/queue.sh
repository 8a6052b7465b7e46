#!/usr/bin/env bash
# The embedding queue, measured: write path (pgbench), freshness, drain
# throughput against embed_texts, memory per worker (bench/queue_bench.py says
# what each figure is).
#   bash bench/queue.sh                          # default model; BERT-base too if installed
#   NOTES=500 PARTS=drain bash bench/queue.sh    # a part, fewer notes
#   PARTS=drain BATCH_ROWS="64 256" MODELS=all-minilm-l6-v2 MODELS_SET=1 bash bench/queue.sh
#   PARTS=chunks NOTES=1000 bash bench/queue.sh  # chunk rows by the queue vs embed_chunks
# Run as root on Debian 12 after scripts/setup.sh; bench/run.sh installs the
# BERT-base-shaped model "bert-base-bench".  Prints one line per figure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

NOTES=${NOTES:-2000}
PARTS=${PARTS:-write,fresh,drain}
MODELS=${MODELS:-$DEFAULT_MODEL}
if [ -z "${MODELS_SET:-}" ] && [ -d "$("$PG_CONFIG" --sharedir)/clinembed/models/bert-base-bench" ]; then
    MODELS="$MODELS bert-base-bench"
fi
PY=$(bash scripts/python-env.sh)
install_release /tmp/clinembed-bench-build.log
cluster_start bench-queue "$(free_port)" shared_buffers=256MB
trap cluster_stop EXIT
bench_notes "$NOTES"
echo "clinembed $(pg -d bench -At -c "SELECT extversion FROM pg_extension WHERE extname = 'clinembed'"), PostgreSQL $PG, $(nproc) CPUs, $(date -u +%F), notes: $NOTES ($(pg -d bench -At -c "SELECT round(avg(length(exp_text))) FROM source") characters on average)"
PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=postgres "$PY" bench/queue_bench.py --dbname bench \
    --pgbench "$PG_BIN/pgbench" --notes "$NOTES" --models "$MODELS" --parts "$PARTS" \
    --batch-rows "${BATCH_ROWS:-}"
