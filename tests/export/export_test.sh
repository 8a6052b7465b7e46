#!/usr/bin/env bash
# Slow test, not part of scripts/test.sh (it needs PyTorch, transformers and
# optimum: several GB): the README's path from a checkpoint to
# SELECT embed_text(...), offline, on a small BERT made here.
#   bash tests/export/export_test.sh
# 1. makes a local checkpoint (safetensors, config, tokenizer) with
#    transformers.BertModel(BertConfig(...)) and the default model's
#    WordPiece tokenizer;
# 2. runs scripts/export-model.sh on it;
# 3. installs the result as model "clinembed-export-test";
# 4. embeds texts in PostgreSQL with it, per call, and compares them with the
#    checkpoint run in PyTorch (the notebook's method).
# Runs in the project's Python environment (scripts/python-env.sh; PYTHON
# names another with torch and transformers); scripts/export-model.sh runs
# optimum in the exporter's own.
# Prints "ok - ..." / "not ok - ..." and "export: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

WORK=/tmp/clinembed-export-test
rm -rf "$WORK" && mkdir -p "$WORK"
PASS=0 FAIL=0
check() { if [ "$2" = "$3" ]; then echo "ok - $1"; PASS=$((PASS + 1)); else echo "not ok - $1 (got '$2', want '$3')"; FAIL=$((FAIL + 1)); fi; }
PY=${PYTHON:-$(bash scripts/python-env.sh)}
TOKENIZER=$(default_model_dir)/tokenizer.json

# 1. the checkpoint
"$PY" - "$WORK/checkpoint" "$TOKENIZER" <<'PY' || { echo "not ok - checkpoint"; exit 1; }
import sys, torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast
out, tokenizer = sys.argv[1], sys.argv[2]
torch.manual_seed(20261126)
model = BertModel(BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=256, max_position_embeddings=512), add_pooling_layer=False)
model.save_pretrained(out, safe_serialization=True)
PreTrainedTokenizerFast(tokenizer_file=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512).save_pretrained(out)
PY
check "local checkpoint has safetensors, config and tokenizer" \
    "$(ls "$WORK/checkpoint" | grep -cE '^(model.safetensors|config.json|tokenizer.json)$')" "3"

# 2. the export
PYTHON=$PY bash scripts/export-model.sh "$WORK/checkpoint" "$WORK/model" > "$WORK/export.log" 2>&1
check "export-model.sh succeeds, and its own PyTorch check passes" "$?" "0"
tail -n 4 "$WORK/export.log" | sed 's/^/    /'
check "the model directory has what clinembed loads" \
    "$(ls "$WORK/model" | grep -cE '^(model.onnx|tokenizer.json|config.json|clinembed.json)$')" "4"

# 3. install
DEST=$("$PG_CONFIG" --sharedir)/clinembed/models/clinembed-export-test
rm -rf "$DEST" && cp -r "$WORK/model" "$DEST" && chmod -R a+rX "$DEST"
install_release "$WORK/build.log"
cluster_start export "$(free_port)"
trap 'cluster_stop; rm -rf "$DEST"' EXIT

# 4. PostgreSQL against PyTorch
PG_BIN=$PG_BIN "$PY" - "$WORK/checkpoint" <<'PY' > "$WORK/compare.txt" 2>&1
import os, sys, subprocess, json
import numpy as np, torch
from transformers import AutoModel, AutoTokenizer
ckpt = sys.argv[1]
texts = ["Patient denies chest pain.", "Pt c/o SOB x3d; h/o CHF, EF 30%.", "Café, 患者主诉胸痛, 🙂",
         "Admitted with pneumonia, treated with ceftriaxone. " * 80, ""]
tok = AutoTokenizer.from_pretrained(ckpt)
model = AutoModel.from_pretrained(ckpt).eval()
psql = [os.path.join(os.environ["PG_BIN"], "psql"), "-X", "-At", "-h", os.environ["PGHOST"], "-p", os.environ["PGPORT"], "-U", "postgres"]
subprocess.run(psql + ["-c", "CREATE EXTENSION IF NOT EXISTS clinembed"], check=True, capture_output=True)
worst = 0.0
for t in texts:
    enc = tok(t, truncation=True, max_length=512, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    want = ((h * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()[0]
    # the text travels as a psql variable, quoted by psql (:'t'), on stdin
    out = subprocess.run(psql + ["-v", f"t={t}", "-f", "-"],
                         input="SELECT array_to_json(embed_text(:'t', model => 'clinembed-export-test'));\n",
                         check=True, capture_output=True, text=True).stdout
    got = np.array(json.loads(out), dtype=np.float32)
    worst = max(worst, float(np.max(np.abs(got - want))))
print(f"worst {worst:.2e}")
PY
cat "$WORK/compare.txt" | tail -n 3 | sed 's/^/    /'
worst=$(sed -n 's/^worst //p' "$WORK/compare.txt")
check "embed_text in PostgreSQL equals the checkpoint in PyTorch within 1e-4 (worst ${worst:-none})" \
    "$(python3 -c "print('${worst:-inf}' != 'inf' and float('${worst:-inf}') <= 1e-4)")" "True"
check "the exported model is listed with its checksum" \
    "$(pg -At -c "SELECT dimensions || ' ' || (sha256 IS NOT NULL) FROM embed_models() WHERE name = 'clinembed-export-test'")" "128 true"

echo "export: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
