#!/usr/bin/env bash
# The Debian packages on a clean Debian 12 root, as a hospital's database
# server would get them:
#   1. builds postgresql-15-clinembed and the default model's package from
#      this clone (scripts/package.sh), and from the previous release: the
#      last commit at the newest version frozen in tests/upgrade;
#   2. debootstraps Debian 12 (minbase) from this machine's Debian mirror
#      into a scratch directory: no Rust, no cargo-pgrx, no compiler, no
#      Python;
#   3. in a chroot there: installs postgresql-15 from Debian, then the
#      previous release's packages with apt-get install ./...; starts a
#      cluster; CREATE EXTENSION clinembed; embeds notes and finds the
#      nearest ones; installs this clone's packages over the old ones; ALTER
#      EXTENSION clinembed UPDATE; embeds with a trigger and searches with
#      embed_search; DROP EXTENSION; purges both packages and finds none of
#      their files left;
#   4. lintian on this clone's packages: any error or warning fails.
# As root, after scripts/setup.sh:
#   bash tests/package/clean_root.sh        (about 8 minutes)
# Ends with "package: N passed, M failed".  tests/package/last-run.txt is
# its last output, with machine and date.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

[ "$(id -u)" -eq 0 ] || { echo "run as root (debootstrap, chroot, mount)" >&2; exit 2; }
MAJOR=15
SUITE=bookworm
WORK=$(mktemp -d /tmp/clinembed-clean-root.XXXXXX)
ROOT=$WORK/root
PASSED=0 FAILED=0

cleanup() {
    if [ -d "$ROOT/etc/postgresql" ]; then
        chroot "$ROOT" pg_ctlcluster "$MAJOR" main stop -m fast >/dev/null 2>&1 || true
    fi
    for m in dev/shm proc; do
        mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# expect WHAT GOT WANTED: one check.
expect() {
    if [ "$2" = "$3" ]; then
        echo "ok      $1"; PASSED=$((PASSED + 1))
    else
        echo "FAILED  $1: got \"$2\", wanted \"$3\""; FAILED=$((FAILED + 1))
    fi
}
step() { echo "==> [$((SECONDS / 60))m$((SECONDS % 60))s] $*"; }
echo "clean root: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME") host"

# ------------------------------------------------------------ packages
# The previous release: the commit that froze the newest install script in
# tests/upgrade (a release commit).
PREV_VERSION=$(find tests/upgrade -name 'clinembed--*.sql' | sed 's/.*clinembed--//; s/\.sql$//' | sort -V | tail -n1)
PREV_REV=$(git log --diff-filter=A --format=%H -- "tests/upgrade/clinembed--$PREV_VERSION.sql" | tail -n1)
[ -n "$PREV_REV" ] || { echo "no commit added tests/upgrade/clinembed--$PREV_VERSION.sql (a shallow clone?)" >&2; exit 1; }
VERSION=$(extension_version)
step "packages of $PREV_VERSION (commit $(git rev-parse --short "$PREV_REV")) and of this clone ($VERSION)"
REV=$PREV_REV PG_MAJORS=$MAJOR DIST=$WORK/debs-prev bash scripts/package.sh >"$WORK/package-prev.log" 2>&1 \
    || { tail -n 30 "$WORK/package-prev.log"; exit 1; }
PG_MAJORS=$MAJOR DIST=$WORK/debs-new bash scripts/package.sh >"$WORK/package-new.log" 2>&1 \
    || { tail -n 30 "$WORK/package-new.log"; exit 1; }
(cd "$WORK" && ls debs-prev debs-new | sed 's/^/    /')
# The old package's install script is the released one (source-location
# comments aside, as the upgrade tier compares them).
released_sql() { grep -v '^-- [a-z/_]*\.rs:[0-9]*$'; }
expect "the $PREV_VERSION package installs the released script" \
    "$(dpkg-deb --fsys-tarfile "$WORK"/debs-prev/postgresql-$MAJOR-clinembed_*.deb \
        | tar -xO "./usr/share/postgresql/$MAJOR/extension/clinembed--$PREV_VERSION.sql" | released_sql | sha256sum)" \
    "$(released_sql < "tests/upgrade/clinembed--$PREV_VERSION.sql" | sha256sum)"

step "lintian"
# The host's tools, from Debian, when missing.
if ! command -v lintian >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends lintian debootstrap >/dev/null
fi
lintian "$WORK"/debs-new/*.deb >"$WORK/lintian.txt" 2>&1 || true
grep -v 'running with root privileges' "$WORK/lintian.txt" | sed 's/^/    /' || true
expect "lintian: no errors or warnings" "$(grep -cE '^[EW]: ' "$WORK/lintian.txt" || true)" 0

# ------------------------------------------------------------ the root

MIRROR=$(debian_mirror)
step "debootstrap --variant=minbase $SUITE from the machine's Debian mirror"
debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log"; exit 1; }
mount -t proc proc "$ROOT/proc"
mount -t tmpfs -o mode=1777 shm "$ROOT/dev/shm"
# No service starts from a package's maintainer script in the chroot.
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d" && chmod 0755 "$ROOT/usr/sbin/policy-rc.d"

in_root() {
    chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@"
}
apt_root() { in_root apt-get -y -q -o Dpkg::Use-Pty=0 "$@" >>"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log"; return 1; }; }
sql() { in_root runuser -u postgres -- psql -X -q -At -v ON_ERROR_STOP=1 -h /var/run/postgresql -d clinical "$@"; }

step "installing postgresql-$MAJOR from Debian in the root"
apt_root update
apt_root install --no-install-recommends "postgresql-$MAJOR"
expect "the root has no Rust, cargo-pgrx, C compiler or Python" \
    "$(in_root sh -c 'for c in rustc cargo cargo-pgrx cc gcc python3; do command -v $c; done' || true)" ""
# Unix socket only: nothing listens beside the host's clusters.
echo "listen_addresses = ''" >> "$ROOT/etc/postgresql/$MAJOR/main/postgresql.conf"

# A few notes, and the query that should find each.
NOTES="(1, 'Patient denies chest pain. ECG shows normal sinus rhythm.'),
       (2, 'Started metformin 500 mg twice daily for type 2 diabetes; HbA1c 8.1.'),
       (3, 'Right lower lobe pneumonia on chest x-ray; ceftriaxone started.')"
nearest() { # query: the note nearest to it by cosine, over real[] (no pgvector in Debian 12)
    sql -v q="$1" <<'SQL'
SELECT id FROM notes, LATERAL (SELECT embed_text(:'q') AS v) q
ORDER BY (SELECT sum(a * b) / sqrt(sum(a * a) * sum(b * b)) FROM unnest(notes.embedding::float8[], q.v::float8[]) AS t(a, b)) DESC
LIMIT 1;
SQL
}

step "installing the $PREV_VERSION packages and starting a cluster"
mkdir -p "$ROOT/tmp/debs-prev" "$ROOT/tmp/debs-new"
cp "$WORK"/debs-prev/*.deb "$ROOT/tmp/debs-prev/" && cp "$WORK"/debs-new/*.deb "$ROOT/tmp/debs-new/"
apt_root install $(cd "$ROOT/tmp/debs-prev" && printf './tmp/debs-prev/%s ' *.deb)
expect "installed: postgresql-$MAJOR-clinembed $PREV_VERSION" \
    "$(in_root dpkg-query -W -f='${Version}' "postgresql-$MAJOR-clinembed")" "$PREV_VERSION-1"
in_root pg_ctlcluster "$MAJOR" main start
in_root runuser -u postgres -- createdb -h /var/run/postgresql clinical
sql <<SQL
CREATE EXTENSION clinembed;
CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL, embedding real[]);
INSERT INTO notes (id, body) VALUES $NOTES;
UPDATE notes SET embedding = embed_text(body);
SQL
expect "CREATE EXTENSION clinembed: version $PREV_VERSION" \
    "$(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'clinembed'")" "$PREV_VERSION"
expect "embed_text with the packaged default model: 3 vectors of 384" \
    "$(sql -c "SELECT count(*) FROM notes WHERE array_length(embedding, 1) = 384")" 3
expect "nearest note to 'medication for high blood sugar'" "$(nearest 'medication for high blood sugar')" 2
expect "nearest note to 'lung infection treated with antibiotics'" "$(nearest 'lung infection treated with antibiotics')" 3
OLD_ID=$(sql -c "SELECT embed_model_id()")

step "installing the $VERSION packages over them; ALTER EXTENSION clinembed UPDATE"
apt_root install $(cd "$ROOT/tmp/debs-new" && printf './tmp/debs-new/%s ' *.deb)
expect "installed: postgresql-$MAJOR-clinembed $VERSION" \
    "$(in_root dpkg-query -W -f='${Version}' "postgresql-$MAJOR-clinembed")" "$VERSION-1"
sql -c "ALTER EXTENSION clinembed UPDATE"
expect "ALTER EXTENSION clinembed UPDATE: version $VERSION" \
    "$(sql -c "SELECT extversion FROM pg_extension WHERE extname = 'clinembed'")" "$VERSION"
expect "the default model keeps its identity across the upgrade" "$(sql -c "SELECT embed_model_id()")" "$OLD_ID"
expect "vectors made before the upgrade equal the new library's" \
    "$(sql -c "SELECT count(*) FROM notes WHERE embedding = embed_text(body)")" 3
sql <<'SQL'
ALTER TABLE notes ADD COLUMN embedding_model text;
CREATE TRIGGER embed BEFORE INSERT OR UPDATE OF body ON notes
    FOR EACH ROW EXECUTE FUNCTION embed_trigger('body', 'embedding', 'embedding_model');
INSERT INTO notes (id, body) VALUES (4, 'Apixaban 5 mg BID started for new atrial fibrillation.');
SQL
expect "embed_trigger embeds a new note" \
    "$(sql -c "SELECT array_length(embedding, 1) FROM notes WHERE id = 4")" 384
expect "nearest note to 'blood thinner for an irregular heartbeat'" "$(nearest 'blood thinner for an irregular heartbeat')" 4
expect "embed_search (lexical, no pgvector here) finds the exact drug name" \
    "$(sql -c "SELECT key[1] FROM embed_search('notes', 'ceftriaxone', 1, mode => 'lexical')")" 3

step "DROP EXTENSION; purging the packages"
sql -c "DROP TABLE notes" -c "DROP EXTENSION clinembed"
in_root pg_ctlcluster "$MAJOR" main stop -m fast
LISTED=$(in_root dpkg -L "postgresql-$MAJOR-clinembed" "clinembed-model-$DEFAULT_MODEL" | grep -E '\.(so|sql|control|onnx|json)(\.[0-9.]+)?$')
apt_root purge "postgresql-$MAJOR-clinembed" "clinembed-model-$DEFAULT_MODEL"
left=
while read -r f; do [ -e "$ROOT$f" ] && left="$left $f"; done <<<"$LISTED"
expect "purge leaves none of the packages' $(wc -l <<<"$LISTED") files" "$left" ""
expect "purge leaves no clinembed directory" \
    "$(find "$ROOT/usr" "$ROOT/etc" -name '*clinembed*' | sed "s|^$ROOT||" | tr '\n' ' ')" ""

step "done"
echo "package: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
