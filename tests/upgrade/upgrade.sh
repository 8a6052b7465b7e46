#!/usr/bin/env bash
# Upgrade test against the running scratch cluster: installs every earlier
# release from its frozen script (tests/upgrade/clinembed--X.sql), runs
# ALTER EXTENSION clinembed UPDATE, and compares the resulting schema with a
# fresh install of the current version, object by object.
# Prints "ok - ..." / "not ok - ..." lines and "upgrade: N passed, M failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

EXTDIR=$("$PG_CONFIG" --sharedir)/extension
CURRENT=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
PASS=0 FAIL=0

# Every member object of the extension, with what defines it.
SCHEMA_QUERY=$(cat <<'SQL'
SELECT kind || ' ' || ident || ' ' || definition FROM (
    SELECT 'function' AS kind, p.oid::regprocedure::text AS ident,
           concat_ws(' | ', pg_get_function_result(p.oid), p.prokind, p.provolatile, p.proparallel, p.procost, p.prorows,
                     p.proisstrict, p.prosecdef, p.proconfig::text, p.probin, md5(p.prosrc), p.proacl::text) AS definition
      FROM pg_proc p JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clinembed')
    UNION ALL
    SELECT 'relation', c.oid::regclass::text,
           concat_ws(' | ', c.relkind, c.relacl::text,
                     (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull
                                        || ' ' || a.attidentity::text, ', ' ORDER BY a.attnum)
                        FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
                     CASE WHEN c.relkind = 'v' THEN md5(pg_get_viewdef(c.oid)) END)
      FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
     WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clinembed')
    UNION ALL
    SELECT 'index', i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
      FROM pg_index i WHERE i.indrelid IN (
          SELECT d.objid FROM pg_depend d
           WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
             AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'clinembed'))
) o ORDER BY 1
SQL
)

schema_of() { pg -d "$1" -At -c "$SCHEMA_QUERY"; }

# A released script is never edited: tests/upgrade/released.sha256 lists each
# with its checksum (a release adds its lines when it is cut).
if sha256sum --quiet --strict -c tests/upgrade/released.sha256; then
    echo "ok - released scripts are unchanged ($(wc -l < tests/upgrade/released.sha256) listed)"; PASS=$((PASS + 1))
else
    echo "not ok - a released script changed: add a new upgrade script instead"; FAIL=$((FAIL + 1))
fi
for f in sql/clinembed--*--*.sql tests/upgrade/clinembed--*.sql; do
    grep -q " $f\$" tests/upgrade/released.sha256 || echo "# $f is not released yet"
done

for frozen in tests/upgrade/clinembed--*.sql; do
    from=$(basename "$frozen" .sql | sed 's/^clinembed--//')
    [ "$from" = "$CURRENT" ] && continue
    install -m 0644 "$frozen" "$EXTDIR/"
    for db in upgrade_from fresh; do
        pg -c "DROP DATABASE IF EXISTS clinembed_$db" -c "CREATE DATABASE clinembed_$db" >/dev/null
    done
    pg -d clinembed_upgrade_from -c "CREATE EXTENSION clinembed VERSION '$from'" \
        -c "ALTER EXTENSION clinembed UPDATE" >/dev/null
    pg -d clinembed_fresh -c "CREATE EXTENSION clinembed" >/dev/null
    v=$(pg -d clinembed_upgrade_from -At -c "SELECT extversion FROM pg_extension WHERE extname = 'clinembed'")
    if [ "$v" = "$CURRENT" ]; then echo "ok - $from updates to $CURRENT"; PASS=$((PASS + 1));
    else echo "not ok - $from updates to $CURRENT (got $v)"; FAIL=$((FAIL + 1)); fi
    fresh_objects=$(schema_of clinembed_fresh | wc -l)
    if [ "$fresh_objects" -gt 10 ] && diff <(schema_of clinembed_upgrade_from) <(schema_of clinembed_fresh) >/tmp/clinembed-upgrade.diff; then
        echo "ok - $from -> $CURRENT schema equals a fresh install ($fresh_objects objects)"
        PASS=$((PASS + 1))
    else
        echo "not ok - $from -> $CURRENT schema differs from a fresh install ($fresh_objects objects):"
        cat /tmp/clinembed-upgrade.diff
        FAIL=$((FAIL + 1))
    fi
    # The updated extension works.
    if pg -d clinembed_upgrade_from -At -c "SELECT array_length(embed_text('upgraded'), 1) = (SELECT dimensions FROM embed_model_info())" | grep -qx t; then
        echo "ok - $from -> $CURRENT embeds after the update"; PASS=$((PASS + 1))
    else
        echo "not ok - $from -> $CURRENT embeds after the update"; FAIL=$((FAIL + 1))
    fi
    pg -c "DROP DATABASE clinembed_upgrade_from" -c "DROP DATABASE clinembed_fresh" >/dev/null
done
echo "upgrade: $PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
