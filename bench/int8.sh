#!/usr/bin/env bash
# The int8 row: BERT-base (the benchmark's model, bench/make_model.py) next to
# its int8 quantization, on the same notes, against the notebook's PyTorch loop.
#   bash bench/int8.sh          (as root, after bash bench/run.sh made the model; NOTES=300)
# Prints notes/s for PyTorch (the notebook), embed_texts on the fp32 model and
# on the int8 model, and the agreement report of scripts/quantize-model.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
NOTES=${NOTES:-300}
WORK=bench/.work
SHARE=$("$PG_CONFIG" --sharedir)
[ -f "$WORK/model/onnx/model.onnx" ] || { echo "run bash bench/run.sh first: it makes the BERT-base model"; exit 1; }
echo "==> quantizing, and the agreement report on $NOTES synthetic notes"
rm -rf "$WORK/model-int8"
bash scripts/quantize-model.sh "$WORK/model/onnx" "$WORK/model-int8" --notes "$NOTES"
DEST=$SHARE/clinembed/models/bert-base-bench-int8
rm -rf "$DEST" && install -d -m 0755 "$DEST"
for f in model.onnx tokenizer.json config.json clinembed.json; do install -m 0644 "$WORK/model-int8/$f" "$DEST/$f"; done
install_release /tmp/clinembed-bench-build.log
cluster_start bench-int8 "$(free_port)"
trap cluster_stop EXIT
python3 scripts/gen_notes.py --count "$NOTES" > /tmp/clinembed-bench-notes.tsv
chmod 0644 /tmp/clinembed-bench-notes.tsv
pg -c 'CREATE DATABASE bench' >/dev/null
pg -d bench -q <<'SQL'
CREATE EXTENSION clinembed;
CREATE TABLE notes (note_id int PRIMARY KEY, patient_id int, note_type text, topic text, exp_text text NOT NULL);
\copy notes FROM '/tmp/clinembed-bench-notes.tsv'
SQL
"$(bash scripts/python-env.sh)" bench/int8.py --notes "$NOTES" --model "$WORK/model" --agreement "$WORK/model-int8/agreement.json"
