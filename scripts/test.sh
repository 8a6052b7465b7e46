#!/usr/bin/env bash
# Every test tier, as root on Debian 12:
#   1. lint       cargo fmt --check, cargo clippy -D warnings
#   2. core       cargo test of the Postgres-free inference core, on the real model
#   3. pg_test    #[pg_test]s inside a real PostgreSQL (debug build)
#   4. regress    pg_regress golden SQL against the installed release build
#   5. pytest     every Python test in one run (pytest.ini; the scratch
#                 cluster is a session fixture, clusters of a test's own
#                 are marked multicluster), by file: embed_text vs Python
#                 onnxruntime + tokenizers within 1e-5, the default model
#                 also vs its checkpoint run in PyTorch (parity); shared
#                 weights (weights); backfill progress, pg_terminate_backend
#                 and crash recovery mid-backfill, resume (integration);
#                 statement_timeout, pg_cancel_backend, pg_terminate_backend
#                 (cancel); model directory replaced, kill -9 mid-COPY
#                 (faults); no note text in any message or log line (phi);
#                 the embedding queue and its background workers (queue);
#                 chunk tables kept in sync through the queue (chunks); no
#                 ordinary role becomes superuser (security); memory and
#                 time bounds, concurrent backfills (hardening); a
#                 coordinator, two shards and a hot standby (sharded);
#                 released scripts unchanged, ALTER EXTENSION UPDATE from
#                 every frozen release equals a fresh install (upgrade);
#                 two clusters, a publication and a subscription
#                 (replication)
#   6. citus      a Citus coordinator and two workers (16 to 18 only, where
#                 setup built Citus from ../shared/vendor; skipped elsewhere
#                 with one line)
#   7. package    the Debian packages (scripts/package.sh) of this clone and
#                 of the previous release on a clean Debian 12 root made by
#                 debootstrap: install, CREATE EXTENSION, embed, search,
#                 upgrade, ALTER EXTENSION UPDATE, purge (15 only)
# All of them on PostgreSQL $PG (default 15); then, for each major in $ALSO
# (default 18, the newest), the pg_test, regress and citus tiers and the pytest
# tests marked every_major (parity among them), and pg_upgrade (pytest -m pg_upgrade) of a
# database with clinembed from $PG to it.
#   PG=18 bash scripts/test.sh           every tier on 18 (and nothing else)
#   ONLY="regress hardening" bash ...     just those tiers (pytest ones by file), on $PG
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

stage() { # name command...: runs a wanted tier (see run_stage)
    wanted "$1" || return 0
    run_stage "$@"
}
run_stage() { # name command...: runs a tier, logs it, notes a failure
    local name=$1; shift
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
    # Every statement is built in the core's statements modules
    # (core/src/rows/statements.rs, core/src/search/statements.rs; the
    # #[pg_test]s aside): an SQL literal anywhere in src/ fails the tier.
    if grep -rnE '"(SELECT|WITH|UPDATE|INSERT|DELETE) ' src --include='*.rs' | grep -v '^src/pg_tests.rs:'; then
        echo "SQL text outside the core's statements modules" >&2; return 1
    fi
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
stage install install_release "$LOGS/install-cargo.log"
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
    PASSED=$((PASSED + passed)) FAILED=$((FAILED + failed))
    [ "$failed" -eq 0 ]
}
# (stage runs a tier in this shell: what regress counts stays counted.)
stage regress regress

# The project's Python environment (.venv, scripts/python-env.sh): the
# parity reference, PyTorch for the check against the original framework,
# and pytest.
python_env() { PY=$(bash scripts/python-env.sh) || return 1; }

# cluster_stop: the SQL tiers are done with it; pytest starts its own.
cluster_stop
trap - EXIT

# Every pytest test in one run (pytest.ini; the scratch cluster is a session
# fixture in tests/integration/conftest.py), counted from the JUnit summary
# pytest writes.  ONLY names tiers by file (below), pytest (all of them) or
# every_major (the tests marked so).
PYTEST_TIERS="parity:test_parity int8:test_int8 weights:test_shared_weights cancel:test_cancel faults:test_faults
    integration:test_backfill_resume phi:test_phi queue:test_queue chunks:test_chunks rerank:test_rerank security:test_security
    hardening:test_hardening sharded:test_sharded replication:test_replication upgrade:test_upgrade"
# pytest_args: the files (in this order, the order the tiers have always
# run in on one cluster) or marks of the wanted tiers; "none" when ONLY
# wants no pytest tier.
pytest_args() {
    local t args=()
    for t in $PYTEST_TIERS; do
        if [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" pytest "* ]] || wanted "${t%%:*}"; then
            args+=("tests/integration/${t#*:}.py")
        fi
    done
    if [[ " ${ONLY:-} " == *" every_major "* ]]; then args=(tests/integration -m every_major); fi
    [ ${#args[@]} -gt 0 ] && echo "${args[@]}" || echo none
}
pytest_run() { # junit-file [pytest arguments...]
    python_env || return 1
    local junit=$1; shift
    rm -f "$junit"
    env PG_BIN="$PG_BIN" "$PY" -m pytest -v --junitxml="$junit" "$@"
}
# count_junit FILE: adds the tests of a JUnit summary to PASSED and FAILED
# (none: pytest did not get as far as writing it, which the tier's failure
# counts).
count_junit() {
    local c
    c=$(python3 -c 'import sys, xml.etree.ElementTree as E
r = E.parse(sys.argv[1]).getroot()
n = lambda k: sum(int(s.get(k, 0)) for s in r.iter("testsuite"))
print(n("tests") - n("failures") - n("errors") - n("skipped"), n("failures") + n("errors"))' "$1" 2>/dev/null) || return 0
    PASSED=$((PASSED + ${c% *})) FAILED=$((FAILED + ${c#* }))
    echo "    pytest: ${c% *} passed, ${c#* } failed"
}
args=$(pytest_args)
if [ "$args" != none ]; then
    # shellcheck disable=SC2086  # file names and marks, no spaces
    run_stage pytest pytest_run "$LOGS/pytest.xml" $args
    count_junit "$LOGS/pytest.xml"
fi

# Citus: a coordinator and two workers (tests/integration/test_citus.py), on
# the majors Citus supports, where setup built it from the vendored archive.
if wanted citus; then
    if ! citus_major "$PG"; then
        [[ " ${ONLY:-} " == *" citus "* ]] && echo "==> citus: skipped: Citus $CITUS_VERSION needs PostgreSQL 16 to 18 (PG=18 ONLY=citus bash scripts/test.sh)"
    elif ! citus_installed "$PG"; then
        echo "==> citus: skipped: no $CITUS_VENDOR/$CITUS_TARBALL on this machine, and Citus is built only from it"
    else
        run_stage citus pytest_run "$LOGS/citus.xml" tests/integration/test_citus.py
        count_junit "$LOGS/citus.xml"
    fi
fi

# Nothing of the tests' own is left among the installed models.
left=$(find "$("$PG_CONFIG" --sharedir)/clinembed/models" -mindepth 1 -maxdepth 1 -name 'clinembed-regress-*' | wc -l)
if [ "$left" -eq 0 ]; then PASSED=$((PASSED + 1)); echo "==> no test fixture left in the installed model directory"
else FAILED=$((FAILED + 1)); echo "==> FAILED: $left test fixtures left in the installed model directory"; fi

# The Debian packages on a clean Debian 12 root (tests/package/clean_root.sh),
# on 15, the major Debian 12 packages: counted from its last line.
if wanted package && [ "$PG" = 15 ]; then
    run_stage package bash tests/package/clean_root.sh
    if c=$(sed -n 's/^package: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' "$LOGS/package.log") && [ -n "$c" ]; then
        PASSED=$((PASSED + ${c% *})) FAILED=$((FAILED + ${c#* }))
        echo "    package: ${c% *} passed, ${c#* } failed"
    fi
fi

# The other majors: the tiers that touch PostgreSQL's APIs, then pg_upgrade
# from this major to each.
pg_upgrade_tier() { # old new: this build of clinembed in both, then the test
    local v
    for v in "$1" "$2"; do
        PG_CONFIG=$(pg_prefix "$v")/bin/pg_config install_release "$LOGS/pg_upgrade-install-$v.log" || return 1
    done
    OLD_PG_BIN="$(pg_prefix "$1")/bin" NEW_PG_BIN="$(pg_prefix "$2")/bin" \
        pytest_run "$LOGS/pg_upgrade.xml" -m pg_upgrade tests/integration/test_pg_upgrade.py
}
for m in $ALSO; do
    stage "pg$m" env PG="$m" ALSO= ONLY="pg_test regress every_major citus" bash scripts/test.sh
    grep -sE '^(==> |    (ok|FAILED|pytest: )|total: )' "$LOGS/pg$m.log" | sed 's/^/    /' || true
    # what that run counted (its TOTALS file, below)
    t=/tmp/clinembed-test-logs/pg$m/totals
    if [ -f "$t" ] && read -r p f < "$t"; then PASSED=$((PASSED + p)) FAILED=$((FAILED + f)); fi
    if [ -n "$UPGRADE_FROM" ]; then
        stage pg_upgrade pg_upgrade_tier "$UPGRADE_FROM" "$m"
        count_junit "$LOGS/pg_upgrade.xml"
    fi
done

if [ ${#BROKEN[@]} -gt 0 ]; then
    echo "failed tiers: ${BROKEN[*]}"
    FAILED=$((FAILED > 0 ? FAILED : 1))
fi
echo "$PASSED $FAILED" > "$LOGS/totals"
echo "total: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
