#!/usr/bin/env bash
# embed_texts in PostgreSQL on an fp32 model and the int8 forms of it that
# bench/int8_forms.py --keep made, with shared weights on and off, in one run:
#   bash bench/int8_pg.sh [FP32_DIR FORMS_DIR [FORM ...]]
# (as root; default bench/.work/model/onnx and bench/.work/forms-bert with
# every form kept there; NOTES=200; REPEATS=3 timed calls per model in one
# session, the best one counted).  The models go into a models root of the
# bench cluster's own (clinembed.models_root), never the installed model
# directory.  Prints each timed call's seconds and notes/s, each form's ratio
# to fp32 under the same setting, and embed_model_info()'s batch_invariant
# (f: the extension runs that form one text per micro-batch, see
# docs/operations.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
NOTES=${NOTES:-200}
REPEATS=${REPEATS:-3}
FP32=${1:-bench/.work/model/onnx}
FORMS_DIR=${2:-bench/.work/forms-bert}
shift $(($# < 2 ? $# : 2))
FORMS=("$@")
[ ${#FORMS[@]} -gt 0 ] || mapfile -t FORMS < <(cd "$FORMS_DIR" 2>/dev/null && ls)
[ -f "$FP32/model.onnx" ] && [ ${#FORMS[@]} -gt 0 ] || {
    echo "no fp32 model in $FP32 or no forms in $FORMS_DIR: run bench/int8_forms.py MODEL --keep DIR first" >&2
    exit 2
}
ROOT=/tmp/clinembed-bench-int8-models
rm -rf "$ROOT"
install -d -m 0755 "$ROOT"
MODELS=(fp32)
install_model() { # name dir
    local f
    install -d -m 0755 "$ROOT/$1"
    for f in model.onnx tokenizer.json config.json clinembed.json; do
        [ ! -f "$2/$f" ] || install -m 0644 "$2/$f" "$ROOT/$1/$f"
    done
}
install_model fp32 "$FP32"
for form in "${FORMS[@]}"; do install_model "$form" "$FORMS_DIR/$form"; MODELS+=("$form"); done
[ "$(id -u)" -ne 0 ] || chown -R postgres:postgres "$ROOT"
cluster_start bench-int8-pg "$(free_port)" "clinembed.models_root=$ROOT"
trap 'cluster_stop; rm -rf "$ROOT"' EXIT
bench_notes "$NOTES"
echo "embed_texts over $NOTES notes of scripts/gen_notes.py; fp32 $FP32, forms from $FORMS_DIR;" \
    "$(nproc) CPUs, $(date -u +%Y-%m-%d), $(git rev-parse --short HEAD)"
for shared in on off; do
    pg -q -c "LOAD 'clinembed'" -c "ALTER SYSTEM SET clinembed.shared_weights = $shared" -c "SELECT pg_reload_conf()" >/dev/null
    fp32=
    for model in "${MODELS[@]}"; do
        # One session: the model loaded by a first call, then the timed call.
        out=$(pg -d bench -At <<SQL
SET clinembed.model = '$model';
SELECT count(*) FROM embed_texts(ARRAY['warm up']);
SELECT 'invariant=' || batch_invariant FROM embed_model_info();
\timing on
$(for _ in $(seq "$REPEATS"); do echo "SELECT count(*) FROM embed_texts((SELECT array_agg(exp_text ORDER BY note_id) FROM source));"; done)
SQL
)
        ms=$(sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' <<<"$out" | sort -n | head -1)
        inv=$(sed -n 's/^invariant=//p' <<<"$out")
        [ -n "$fp32" ] || fp32=$ms
        python3 -c "print(f'shared_weights={\"$shared\":<3} {\"$model\":<16} batch_invariant={\"$inv\"} {$ms/1000:6.1f} s {$NOTES/($ms/1000):6.2f} notes/s {$fp32/$ms:5.2f}x fp32')"
    done
done
