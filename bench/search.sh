#!/usr/bin/env bash
# embed_search's latency on 100,000 chunk rows: p50 and p99 of each mode,
# the query's embedding apart, and a rerank of the top 20 by a BERT-base
# shaped cross-encoder (bench/search_bench.py says what each figure is).
#   bash bench/search.sh                 # NOTES=14800 (about 101,000 chunk rows)
#   NOTES=300 REPS=2 bash bench/search.sh
# Run as root on Debian 12 after scripts/setup.sh.  The cross-encoder has
# random weights (no trained one is reachable here): its cost is a real
# BERT-base reranker's, its scores mean nothing.  It is installed as model
# "bert-base-rerank-bench", as bench/run.sh installs "bert-base-bench".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
NOTES=${NOTES:-14800}
WORK=bench/.work
PY=$(bash scripts/python-env.sh)
if [ ! -f "$WORK/reranker/onnx/model.onnx" ]; then
    echo "==> generating and exporting the BERT-base-shaped cross-encoder"
    "$PY" - "$(default_model_dir)/tokenizer.json" "$WORK/reranker/hf" <<'PY'
import sys, torch
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast
torch.manual_seed(20261207)
BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
    num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512, num_labels=1)
).save_pretrained(sys.argv[2], safe_serialization=True)
PreTrainedTokenizerFast(tokenizer_file=sys.argv[1], unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
    sep_token="[SEP]", mask_token="[MASK]", model_max_length=512).save_pretrained(sys.argv[2])
PY
    bash scripts/export-model.sh "$WORK/reranker/hf" "$WORK/reranker/onnx" --cross-encoder \
        >"$WORK/reranker-export.log" 2>&1 || { tail -n 30 "$WORK/reranker-export.log" >&2; exit 1; }
fi
DEST=$("$PG_CONFIG" --sharedir)/clinembed/models/bert-base-rerank-bench
install -d -m 0755 "$DEST"
for f in model.onnx tokenizer.json config.json clinembed.json; do install -m 0644 "$WORK/reranker/onnx/$f" "$DEST/$f"; done
install_release /tmp/clinembed-bench-build.log
cluster_start bench-search "$(free_port)" shared_buffers=512MB maintenance_work_mem=1GB
trap cluster_stop EXIT
bench_notes "$NOTES"
echo "clinembed $(pg -d bench -At -c "SELECT extversion FROM pg_extension WHERE extname = 'clinembed'"), PostgreSQL $PG, pgvector $(pg -d bench -At -c "CREATE EXTENSION IF NOT EXISTS vector; SELECT extversion FROM pg_extension WHERE extname = 'vector'" | tail -n1), $(nproc) CPUs, $(date -u +%F), model $DEFAULT_MODEL, notes: $NOTES"
PGHOST=$PGHOST PGPORT=$PGPORT PGUSER=postgres "$PY" bench/search_bench.py --dbname bench \
    --notes "$NOTES" --reps "${REPS:-5}" --rerank-reps "${RERANK_REPS:-1}" --reranker bert-base-rerank-bench
