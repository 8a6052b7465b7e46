#!/usr/bin/env bash
# Every tier on every PostgreSQL major this project can install (15, 17, 18),
# then pg_upgrade from 15 (15.18 built from source, see scripts/setup.sh) to
# each newer one.  About 15 minutes a major on the
# 2-core development machine, plus a build of each major the first time.
# Ends with one line "total: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PG_MAJORS="15 17 18 15src" bash scripts/setup.sh >/tmp/clinembed-matrix-setup.log 2>&1 \
    || { tail -n 20 /tmp/clinembed-matrix-setup.log; exit 1; }
P=0 F=0
add() { # major: adds what scripts/test.sh on that major counted (its totals file)
    local p f
    local t=/tmp/clinembed-test-logs/pg$1/totals
    if [ -f "$t" ] && read -r p f < "$t"; then P=$((P + p)); F=$((F + f)); else F=$((F + 1)); fi
}
echo "==> PostgreSQL 16: not tested. No Debian suite this project reaches (bookworm and its backports, trixie, sid) has a PostgreSQL 16 source package, and no PyPI package ships its server headers."
for m in 15 17 18; do
    echo "==> PostgreSQL $m: every tier"
    PG=$m ALSO= bash scripts/test.sh >"/tmp/clinembed-matrix-$m.log" 2>&1
    grep -E '^(    (ok|FAILED)|==> |total: )' "/tmp/clinembed-matrix-$m.log" | sed 's/^/    /'
    add "$m"
done
for m in 17 18; do
    echo "==> pg_upgrade 15 (15.18 from source) -> $m"
    ONLY=pg_upgrade ALSO=$m bash scripts/test.sh >"/tmp/clinembed-matrix-upgrade-$m.log" 2>&1
    grep -E '^(    (ok|FAILED|pytest: )|total: )' "/tmp/clinembed-matrix-upgrade-$m.log" | sed 's/^/    /'
    add 15
done
echo "total: $P passed, $F failed"
[ "$F" -eq 0 ]
