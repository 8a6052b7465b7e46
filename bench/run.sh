#!/usr/bin/env bash
# One command: bash bench/run.sh   (as root; NOTES=300 by default, ~10 minutes)
#              bash bench/run.sh sweep   (the settings sweep, bench/sweep.py)
#              NOTES=2000 bash bench/run.sh memory  (memory per backend, first-call latency
#                  and throughput, shared against private weights, on this model and on the
#                  default model; serial against parallel plans on the default: bench/memory.py)
#              bash bench/run.sh memo  (a new connection's first call with shared weights, the
#                  memo of hashed model versions kept or removed, on the bench model, on the
#                  same checkpoint exported by scripts/export-model.sh, and on the default)
# Builds the BERT-base-shaped model, installs it as clinembed model
# "bert-base-bench", starts a scratch cluster and runs bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
NOTES=${NOTES:-300}
WORK=bench/.work
bash scripts/setup.sh >/dev/null
PY=$(bash scripts/python-env.sh)
SHARE=$("$PG_CONFIG" --sharedir)
if [ ! -f "$WORK/model/onnx/model.onnx" ]; then
    echo "==> generating the BERT-base-shaped model"
    "$PY" bench/make_model.py --tokenizer "$(default_model_dir)/tokenizer.json" --out "$WORK/model"
fi
DEST=$SHARE/clinembed/models/bert-base-bench
install -d -m 0755 "$DEST"
for f in model.onnx tokenizer.json config.json clinembed.json; do install -m 0644 "$WORK/model/onnx/$f" "$DEST/$f"; done
if [ "${1:-}" = memo ]; then
    # The same checkpoint through the standard exporter (optimum), whose
    # clinembed.json records model.onnx's sha256, as every export does.
    if [ ! -f "$WORK/optimum/model.onnx" ]; then
        echo "==> exporting the checkpoint with scripts/export-model.sh"
        bash scripts/export-model.sh "$WORK/model/hf" "$WORK/optimum" >"$WORK/export.log" 2>&1 \
            || { tail -n 30 "$WORK/export.log" >&2; exit 1; }
    fi
    DEST=$SHARE/clinembed/models/bert-base-optimum
    install -d -m 0755 "$DEST"
    for f in model.onnx tokenizer.json config.json clinembed.json; do install -m 0644 "$WORK/optimum/$f" "$DEST/$f"; done
fi
echo "==> building and installing clinembed (release)"
install_release /tmp/clinembed-bench-build.log
cluster_start bench "$(free_port)" shared_buffers=256MB
trap cluster_stop EXIT
pg -c 'CREATE DATABASE bench'
python3 scripts/gen_notes.py --count "$NOTES" > /tmp/clinembed-bench-notes.tsv
pg -d bench <<'SQL'
CREATE EXTENSION clinembed;
CREATE TABLE notes (note_id int PRIMARY KEY, patient_id int, note_type text, topic text, exp_text text NOT NULL);
\copy notes FROM '/tmp/clinembed-bench-notes.tsv'
VACUUM ANALYZE notes;
LOAD 'clinembed';
ALTER SYSTEM SET clinembed.model = 'bert-base-bench';
SELECT pg_reload_conf();
SQL
if [ "${1:-}" = memory ]; then
    # MEMORY_PARTS="throughput" ROUNDS=4 bash bench/run.sh memory: just those
    # parts; the thread part needs NOTES=2000.  MEMORY_MODELS: which models
    # (default both).
    for model in ${MEMORY_MODELS:-bert-base-bench $DEFAULT_MODEL}; do
        parts=${MEMORY_PARTS:-memory,first,throughput}
        [ "$model" = "$DEFAULT_MODEL" ] && [ "$NOTES" -ge 2000 ] && parts=${MEMORY_PARTS:-threads,$parts}
        PGDATABASE=bench "$PY" bench/memory.py --dsn "dbname=bench" --model "$model" \
            --parts "$parts" --rounds "${ROUNDS:-2}" --json "$WORK/memory-$model.json"
    done
    exit
fi
if [ "${1:-}" = memo ]; then
    for model in ${MEMORY_MODELS:-bert-base-optimum bert-base-bench $DEFAULT_MODEL}; do
        PGDATABASE=bench "$PY" bench/memory.py --dsn "dbname=bench" --model "$model" \
            --parts memo --first "${FIRST:-10}" --rounds "${ROUNDS:-2}" --json "$WORK/memo-$model.json"
    done
    exit
fi
if [ "${1:-}" = sweep ]; then
    PGDATABASE=bench "$PY" bench/sweep.py "$NOTES"
    exit
fi
PGDATABASE=bench "$PY" bench/run.py --notes "$NOTES" --model "$WORK/model" --out "$WORK/results"
