#!/usr/bin/env bash
# Every test tier, as root on Debian 12:
#   1. lint       cargo fmt --check, cargo clippy -D warnings
#   2. core       cargo test of the Postgres-free inference core, on the real model
#   3. pg_test    #[pg_test]s inside a real PostgreSQL (debug build)
#   4. regress    pg_regress golden SQL against the installed release build
#   5. parity     embed_text vs Python onnxruntime + tokenizers, within 1e-5;
#                 the default model also vs its checkpoint run in PyTorch
#      weights    shared weights (pytest): the same vectors as private
#                 weights, built once by racing backends, damaged files
#                 rebuilt, parallel workers, memory per extra backend
#   6. integration several sessions, on pytest with psycopg (tests/integration/):
#                 backfill progress, pg_terminate_backend and crash recovery
#                 mid-backfill, resume (integration); statement_timeout,
#                 pg_cancel_backend, pg_terminate_backend (cancel); model
#                 directory replaced, kill -9 mid-COPY (faults); no note text
#                 in any message or log line (phi); the embedding queue and
#                 its background workers: exactly once through cancel,
#                 terminate, kill -9, two workers, restarts with and without
#                 shared_preload_libraries; no superuser rights (queue);
#                 hostile search_paths, operators, functions and domains
#                 before pg_catalog, partitions and triggers of other
#                 roles: no ordinary role becomes superuser (security);
#                 memory and time bounds, concurrent backfills, cancelled
#                 runs, no backtraces in errors (hardening); a coordinator
#                 and two shards (postgres_fdw, dblink) and a hot standby
#                 (sharded)
#   7. upgrade    (pytest) released scripts unchanged; ALTER EXTENSION UPDATE
#                 from every frozen earlier release equals a fresh install
# All of them on PostgreSQL $PG (default 15); then, for each major in $ALSO
# (default 18, the newest), the pg_test, regress, parity, weights, queue and
# security tiers, and pg_upgrade (pytest) of a database with clinembed from $PG to it.
#   PG=18 bash scripts/test.sh           every tier on 18 (and nothing else)
#   ONLY="regress hardening" bash ...     just those tiers, on $PG
#   ONLY=pg_upgrade bash ...              just pg_upgrade from 15 to 18
#   REGRESS=embed_rule ONLY=regress ...   just that regress file
#   bash scripts/test-matrix.sh          every tier on every major here
# Ends with one line "total: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# The other majors: 18 after 15 unless ONLY names tiers (ONLY=pg_upgrade
# still upgrades to 18).
if [ "$PG" = 15 ] && { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" pg_upgrade "* ]]; }; then
    ALSO=${ALSO-18}
else
    ALSO=${ALSO:-}
fi
# pg_upgrade to the other majors starts from a 15.18 built from source (see
# scripts/setup.sh on why not Debian's 15.20).
UPGRADE_FROM=; [ -n "$ALSO" ] && [ "$PG" = 15 ] && UPGRADE_FROM=15src
PG_MAJORS="$PG $ALSO $UPGRADE_FROM" bash scripts/setup.sh
echo "==> PostgreSQL $PG: $("$PG_CONFIG" --version)"
LOGS=/tmp/clinembed-test-logs/pg$PG
rm -rf "$LOGS" && mkdir -p "$LOGS"
PASSED=0 FAILED=0 BROKEN=()

# Adds the counts from cargo's "test result:" lines in a log.
count_cargo() {
    local p f
    [ -f "$1" ] || return 0
    p=$(grep -hoE 'test result: [A-Za-z]+\. [0-9]+ passed' "$1" | awk '{s+=$4} END {print s+0}')
    f=$(grep -hoE '[0-9]+ failed;' "$1" | awk '{s+=$1} END {print s+0}')
    PASSED=$((PASSED + p)) FAILED=$((FAILED + f))
}

# ONLY="regress hardening" bash scripts/test.sh runs just those tiers (the
# release build is installed whenever a tier needs the server).
wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY install " == *" $1 "* ]]; }

stage() { # name command...: runs a tier, logs it, notes a failure
    local name=$1; shift
    wanted "$name" || return 0
    echo "==> $name"
    if "$@" >"$LOGS/$name.log" 2>&1; then
        echo "    ok"
    else
        echo "    FAILED (log: $LOGS/$name.log)"; tail -n 30 "$LOGS/$name.log" | sed 's/^/    | /'
        BROKEN+=("$name")
    fi
}

# `stage` runs its command inside `if`, where bash ignores `set -e`: each step
# must fail the tier explicitly.
lint() {
    cargo fmt --all -- --check || return 1
    cargo clippy --workspace --all-targets --features "pg$PG pg_test" --no-default-features -- -D warnings || return 1
}
if wanted lint; then
    stage lint lint
    [ -z "${BROKEN[*]:-}" ] && PASSED=$((PASSED + 1)) || FAILED=$((FAILED + 1))
fi

stage core cargo test -p clinembed-core
count_cargo "$LOGS/core.log"

pg_tests() {
    local dir=/tmp/clinembed-pgrx-test-$PG
    rm -rf "$dir" && install -d -o postgres -g postgres "$dir"
    cargo pgrx test "pg$PG" --runas postgres --pgdata "$dir"
}
stage pg_test pg_tests
count_cargo "$LOGS/pg_test.log"

# The SQL tiers run against the release build in a scratch cluster.
stage install install_release
cluster_start "test-$PG" "$(free_port)"
trap cluster_stop EXIT

# The regress tier's fixtures: broken model directories and libraries under
# /tmp/clinembed-regress-*, and a models root of its own,
# /tmp/clinembed-regress-models, that the cluster's clinembed.models_root
# points at while the tier runs: the default model (a copy), another pooling,
# a wrong recorded checksum, and a link out of the root.  Nothing is written
# into the installed model directory.
REGRESS_ROOT=/tmp/clinembed-regress-models
regress_fixtures() {
    local models; models=$(default_model_dir)
    local fixture=/tmp/clinembed-regress-corrupt
    rm -rf "$fixture" && mkdir -p "$fixture"
    printf 'not an onnx graph' > "$fixture/model.onnx"
    cp "$models/tokenizer.json" "$fixture/"
    # The default model with normalize on: another model identity, for the
    # model-change backfill in embed_columns.
    local normalized=/tmp/clinembed-regress-normalized
    rm -rf "$normalized" && cp -r "$models" "$normalized"
    printf '{"pooling": "mean", "normalize": true}\n' > "$normalized/clinembed.json"
    # Broken model directories and libraries for embed_faults.
    rm -rf /tmp/clinembed-regress-{nomodel,truncated,badtokenizer,fake-ort}
    mkdir -p /tmp/clinembed-regress-{nomodel,truncated,badtokenizer,fake-ort}
    cp "$models/tokenizer.json" /tmp/clinembed-regress-nomodel/
    head -c "$(($(stat -c %s "$models/model.onnx") / 2))" "$models/model.onnx" > /tmp/clinembed-regress-truncated/model.onnx
    cp "$models/tokenizer.json" /tmp/clinembed-regress-truncated/
    cp "$models/model.onnx" /tmp/clinembed-regress-badtokenizer/
    printf '{"version": "1.0", "model": {"type": "WordPiece", "vocab": ' > /tmp/clinembed-regress-badtokenizer/tokenizer.json
    printf 'not an ELF file' > /tmp/clinembed-regress-fake-ort/not-a-library.so
    cc -shared -fPIC -o /tmp/clinembed-regress-fake-ort/libonnxruntime.so.1.16.0 tests/regress/fixtures/fake_ort.c
    # The models root.
    rm -rf "$REGRESS_ROOT" && mkdir -p "$REGRESS_ROOT"
    cp -r "$models" "$REGRESS_ROOT/$DEFAULT_MODEL"
    cp -r "$models" "$REGRESS_ROOT/clinembed-regress-cls"
    printf '{"pooling": "cls"}\n' > "$REGRESS_ROOT/clinembed-regress-cls/clinembed.json"
    cp -r "$models" "$REGRESS_ROOT/clinembed-regress-badsum"
    printf '{"sha256": "%064d"}\n' 0 > "$REGRESS_ROOT/clinembed-regress-badsum/clinembed.json"
    ln -s "$normalized" "$REGRESS_ROOT/clinembed-regress-link"
    chmod -R a+rX "$REGRESS_ROOT" "$fixture" "$normalized" /tmp/clinembed-regress-{nomodel,truncated,badtokenizer,fake-ort}
}
# models_root ROOT: sets the cluster's clinembed.models_root ('' resets it).
models_root() {
    local set="ALTER SYSTEM SET clinembed.models_root = '$1'"
    [ -n "$1" ] || set="ALTER SYSTEM RESET clinembed.models_root"
    # PostgreSQL 15 refuses ALTER SYSTEM of a setting no loaded library defines.
    pg -c "LOAD 'clinembed'" -c "$set" -c "SELECT pg_reload_conf()" >/dev/null
}
# Each file runs alone, in a database of its own that pg_regress creates:
# REGRESS="embed_pinned embed_models" ONLY=regress bash scripts/test.sh runs
# just those files.
regress() {
    regress_fixtures
    models_root "$REGRESS_ROOT"
    local out=/tmp/clinembed-regress-out t passed=0 failed=0
    rm -rf "$out" && mkdir -p "$out"
    for t in ${REGRESS:-$(cd tests/regress/sql && ls *.sql | sed 's/\.sql$//')}; do
        if "$("$PG_CONFIG" --pkglibdir)/pgxs/src/test/regress/pg_regress" --dbname="clinembed_regress_$t" \
            --host="$PGHOST" --port="$PGPORT" --user=postgres \
            --inputdir=tests/regress --outputdir="$out/$t" "$t"; then
            passed=$((passed + 1))
        else
            failed=$((failed + 1))
            cat "$out/$t/regression.diffs" 2>/dev/null
        fi
        pg -c "DROP DATABASE IF EXISTS clinembed_regress_$t" >/dev/null
    done
    models_root ''
    echo "regress: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}
stage regress regress
c=$(grep -soE '^regress: [0-9]+ passed, [0-9]+ failed' "$LOGS/regress.log" | awk '{print $2, $4}' || true)
[ -n "$c" ] && { PASSED=$((PASSED + ${c% *})); FAILED=$((FAILED + ${c#* })); }

# The project's Python environment (.venv, scripts/python-env.sh): the
# parity reference, PyTorch for the check against the original framework,
# and pytest.
python_env() { PY=$(bash scripts/python-env.sh) || return 1; }
# The default model is also checked against its checkpoint run in PyTorch
# (the original framework, not ONNX).  (Under `stage`, every step must fail
# the tier explicitly.)
parity() {
    python_env || return 1
    local ckpt
    ckpt=$(default_checkpoint /tmp/clinembed-parity-checkpoint) || return 1
    "$PY" tests/parity/framework.py "$ckpt" /tmp/clinembed-parity-framework.json || return 1
    "$PY" tests/parity/parity.py --model-dir "$(default_model_dir)" --framework /tmp/clinembed-parity-framework.json
}
stage parity parity
grep -hs '^parity' "$LOGS/parity.log" || true
p=$(grep -soE '^parity: [0-9]+ passed, [0-9]+ failed' "$LOGS/parity.log" | awk '{print $2, $4}' || true)
[ -n "$p" ] && { PASSED=$((PASSED + ${p% *})); FAILED=$((FAILED + ${p#* })); }

# Tests on pytest with psycopg (several sessions on real threads, server
# restarts, clusters of their own, the upgrade paths): each test is one check,
# counted from pytest's verbose lines ("NAME: N passed, M failed").
pytest_tier() { # file [VAR=value...]: that file's tests, with those variables
    python_env || return 1
    env PG_BIN="$PG_BIN" CLINEMBED_MODEL_DIR="$(default_model_dir)" "${@:2}" \
        "$PY" -m pytest -v -p no:cacheprovider "$1"
}
count_pytest() { # name
    local lines=' (PASSED|FAILED|ERROR) +\[ *[0-9]+%\]$' p f
    grep -hsE "$lines" "$LOGS/$1.log" | sed 's/^/    /' || true
    p=$(grep -hsE "$lines" "$LOGS/$1.log" | grep -c ' PASSED' || true)
    f=$(grep -hsE "$lines" "$LOGS/$1.log" | grep -cE ' (FAILED|ERROR)' || true)
    [ -f "$LOGS/$1.log" ] && echo "$1: $p passed, $f failed" >> "$LOGS/$1.log"
    PASSED=$((PASSED + p)) FAILED=$((FAILED + f))
}
pytest_stage() { # name file
    stage "$1" pytest_tier "$2"
    count_pytest "$1"
}
pytest_stage weights tests/integration/test_shared_weights.py
pytest_stage cancel tests/integration/test_cancel.py
pytest_stage faults tests/integration/test_faults.py
pytest_stage integration tests/integration/test_backfill_resume.py
pytest_stage phi tests/integration/test_phi.py
pytest_stage queue tests/integration/test_queue.py
pytest_stage security tests/integration/test_security.py
pytest_stage hardening tests/integration/test_hardening.py
pytest_stage sharded tests/integration/test_sharded.py
pytest_stage upgrade tests/integration/test_upgrade.py

# Nothing of the tests' own is left among the installed models.
left=$(find "$("$PG_CONFIG" --sharedir)/clinembed/models" -mindepth 1 -maxdepth 1 -name 'clinembed-regress-*' | wc -l)
if [ "$left" -eq 0 ]; then PASSED=$((PASSED + 1)); echo "==> no test fixture left in the installed model directory"
else FAILED=$((FAILED + 1)); echo "==> FAILED: $left test fixtures left in the installed model directory"; fi
cluster_stop
trap - EXIT

# The other majors: the tiers that touch PostgreSQL's APIs, then pg_upgrade
# from this major to each.
pg_upgrade_tier() { # old new: this build of clinembed in both, then the test
    local v
    for v in "$1" "$2"; do
        PG_CONFIG=$(pg_prefix "$v")/bin/pg_config install_release "$LOGS/pg_upgrade-install-$v.log" || return 1
    done
    pytest_tier tests/integration/test_pg_upgrade.py OLD_PG_BIN="$(pg_prefix "$1")/bin" NEW_PG_BIN="$(pg_prefix "$2")/bin"
}
for m in $ALSO; do
    stage "pg$m" env PG="$m" ALSO= ONLY="pg_test regress parity weights queue security" bash scripts/test.sh
    grep -sE '^(==> |    (ok|FAILED)|parity|total: )' "$LOGS/pg$m.log" | sed 's/^/    /' || true
    c=$(grep -soE '^total: [0-9]+ passed, [0-9]+ failed' "$LOGS/pg$m.log" | awk '{print $2, $4}' || true)
    if [ -n "$c" ]; then PASSED=$((PASSED + ${c% *})); FAILED=$((FAILED + ${c#* })); fi
    if [ -n "$UPGRADE_FROM" ]; then
        stage pg_upgrade pg_upgrade_tier "$UPGRADE_FROM" "$m"
        count_pytest pg_upgrade
    fi
done

if [ ${#BROKEN[@]} -gt 0 ]; then
    echo "failed tiers: ${BROKEN[*]}"
    FAILED=$((FAILED > 0 ? FAILED : 1))
fi
echo "total: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
