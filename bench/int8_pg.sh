#!/usr/bin/env bash
# embed_texts in PostgreSQL on the BERT-base-shaped model in fp32 and in
# today's dynamic int8 form, with shared weights on and off, in one run:
#   bash bench/int8_pg.sh     (as root, after bench/int8.sh made
#                              bench/.work/model-int8; NOTES=200)
# Prints each call's time and notes/s, and int8's ratio to fp32 per setting.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
NOTES=${NOTES:-200}
WORK=bench/.work
[ -f "$WORK/model-int8/model.onnx" ] || { echo "run bash bench/int8.sh first: it makes the int8 model"; exit 1; }
MODELS="$("$PG_CONFIG" --sharedir)/clinembed/models"
for m in bert-base-bench:$WORK/model/onnx bert-base-bench-int8:$WORK/model-int8; do
    install -d -m 0755 "$MODELS/${m%%:*}"
    for f in model.onnx tokenizer.json config.json clinembed.json; do install -m 0644 "${m#*:}/$f" "$MODELS/${m%%:*}/$f"; done
done
cluster_start bench-int8-pg "$(free_port)"
trap 'cluster_stop; rm -rf "$MODELS/bert-base-bench" "$MODELS/bert-base-bench-int8"' EXIT
bench_notes "$NOTES"
echo "embed_texts over $NOTES notes of scripts/gen_notes.py, $(nproc) CPUs, $(date -u +%Y-%m-%d)"
for shared in on off; do
    pg -q -c "LOAD 'clinembed'" -c "ALTER SYSTEM SET clinembed.shared_weights = $shared" -c "SELECT pg_reload_conf()" >/dev/null
    fp32=
    for model in bert-base-bench bert-base-bench-int8; do
        # One session: the model loaded by a first call, then the timed call.
        ms=$(pg -d bench -At <<SQL | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p'
SELECT count(*) FROM embed_texts(ARRAY['warm up'], model => '$model');
\timing on
SELECT count(*) FROM embed_texts((SELECT array_agg(exp_text ORDER BY note_id) FROM source), model => '$model');
SQL
)
        line=$(python3 -c "print(f'shared_weights={\"$shared\":<3} $model: {$ms/1000:6.1f} s {$NOTES/($ms/1000):6.2f} notes/s')")
        if [ -z "$fp32" ]; then fp32=$ms; echo "$line"; else echo "$line $(python3 -c "print(f'{$fp32/$ms:.2f}x fp32')")"; fi
    done
done
