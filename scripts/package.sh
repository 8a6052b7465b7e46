#!/usr/bin/env bash
# Builds Debian packages of clinembed from this clone, into $DIST (default
# dist/):
#   postgresql-N-clinembed_V-1_amd64.deb     for each major in PG_MAJORS
#       (default: every major setup installed here, of 15, 17 and 18): the
#       extension's library, control file, install and upgrade scripts, the
#       ONNX Runtime library it loads, licences.  Depends on postgresql-N,
#       recommends postgresql-N-pgvector and the default model's package.
#   clinembed-model-<default model>_V-1_all.deb   the default model's files,
#       in /usr/share/clinembed/models, the packages' models root for every
#       major (each major's $sharedir/clinembed/models links there)
# V is Cargo.toml's version.  Files go where Debian's (and apt.postgresql.org's)
# postgresql-N packages keep them, /usr/lib/postgresql/N/lib and
# /usr/share/postgresql/N, whatever prefix the build's PostgreSQL had; no path
# of the build machine is left inside (--remap-path-prefix).
#   bash scripts/package.sh
#   PG_MAJORS=15 bash scripts/package.sh
#   REV=v PG_MAJORS=15 bash scripts/package.sh   the extension as it was at
#       commit v (an earlier release, for the clean-root upgrade test),
#       packaged by these rules; its version is that commit's Cargo.toml's
# Run scripts/setup.sh first (it installs the toolchain, ONNX Runtime and the
# default model these packages carry).  Prints the paths of the packages.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

DIST=${DIST:-$REPO/dist}
REV=${REV:-}
DEB_REVISION=1
MAINTAINER=${DEB_MAINTAINER:-clinembed developers <clinembed@packages.invalid>}
HOMEPAGE=${DEB_HOMEPAGE:-}
MODELS_ROOT=/usr/share/clinembed/models

die() { printf 'package failed: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

command -v dpkg-deb >/dev/null || die "dpkg-deb not found"
command -v dpkg-shlibdeps >/dev/null || die "dpkg-shlibdeps not found: apt-get install dpkg-dev"
command -v cargo >/dev/null || die "cargo not found: run scripts/setup.sh first"

if [ -z "${PG_MAJORS:-}" ]; then
    PG_MAJORS=
    for m in 15 17 18; do
        [ -x "$(pg_prefix "$m")/bin/pg_config" ] && PG_MAJORS="$PG_MAJORS $m"
    done
fi
[ -n "${PG_MAJORS// /}" ] || die "no PostgreSQL installed here: run scripts/setup.sh first"

WORK=$(mktemp -d /tmp/clinembed-package.XXXXXX)
cleanup() {
    [ -n "$REV" ] && git -C "$REPO" worktree remove --force "$WORK/src" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

# The source to build: this clone, or commit $REV checked out beside it.
SRC=$REPO
if [ -n "$REV" ]; then
    git -C "$REPO" worktree add --detach "$WORK/src" "$REV" >/dev/null 2>&1 \
        || die "could not check out $REV"
    SRC=$WORK/src
fi
VERSION=$(extension_version "$SRC") || die "no version in $SRC/Cargo.toml"
DEB_VERSION=$VERSION-$DEB_REVISION
MODEL_PACKAGE=clinembed-model-$DEFAULT_MODEL

# Reproducible archives: every timestamp is the commit's.
SOURCE_DATE_EPOCH=$(git -C "$SRC" log -1 --format=%ct HEAD)
export SOURCE_DATE_EPOCH
CHANGE_DATE=$(date -u -R -d "@$SOURCE_DATE_EPOCH")

# Builds share one target directory of their own (other RUSTFLAGS than the
# test builds', so they would otherwise rebuild each other's dependencies).
TARGET=$REPO/target/package
REMAP=(
    "--remap-path-prefix=$SRC=/usr/src/clinembed-$VERSION"
    "--remap-path-prefix=$TARGET=/usr/src/clinembed-$VERSION/target"
    "--remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/usr/src/cargo"
    "--remap-path-prefix=${RUSTUP_HOME:-$HOME/.rustup}=/usr/src/rustup"
)

# stage_doc PACKAGE STAGE COPYRIGHT_FILE [LINTIAN_TAG: WHY]...: the
# documentation every package carries (copyright, a Debian changelog, the
# upstream changelog) and lintian overrides, each with its reason.
stage_doc() {
    local doc=$2/usr/share/doc/$1 package=$1 stage=$2 copyright=$3 tag
    shift 3
    install -d -m 0755 "$stage/usr/share/lintian/overrides"
    {
        echo "# Built by clinembed's scripts/package.sh, not uploaded to Debian: no bug to close."
        echo "initial-upload-closes-no-bugs"
        for tag in "$@"; do printf '# %s\n%s\n' "${tag#*: }" "${tag%%: *}"; done
    } > "$stage/usr/share/lintian/overrides/$package"
    chmod 0644 "$stage/usr/share/lintian/overrides/$package"
    set -- "$package" "$stage" "$copyright"
    install -d -m 0755 "$doc"
    install -m 0644 "$3" "$doc/copyright"
    printf '%s (%s) unstable; urgency=medium\n\n  * clinembed %s, built from commit %s.\n\n -- %s  %s\n' \
        "$1" "$DEB_VERSION" "$VERSION" "$(git -C "$SRC" rev-parse --short=12 HEAD)" "$MAINTAINER" "$CHANGE_DATE" \
        | gzip -9n > "$doc/changelog.Debian.gz"
    # (Releases before 0.10.1 had no CHANGELOG.md.)
    [ ! -f "$SRC/CHANGELOG.md" ] || gzip -9nc "$SRC/CHANGELOG.md" > "$doc/changelog.gz"
    chmod 0644 "$doc"/*.gz
}

# build_deb STAGE COMPRESSION: DEBIAN/md5sums, timestamps, owner and mode,
# then the archive in $DIST; prints its path.
build_deb() {
    local stage=$1 compression=$2 name version arch out
    name=$(sed -n 's/^Package: //p' "$stage/DEBIAN/control")
    version=$(sed -n 's/^Version: //p' "$stage/DEBIAN/control")
    arch=$(sed -n 's/^Architecture: //p' "$stage/DEBIAN/control")
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0r md5sum) \
        > "$stage/DEBIAN/md5sums"
    chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"
    find "$stage" -type d -exec chmod 0755 {} +
    find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    mkdir -p "$DIST"
    out=$DIST/${name}_${version}_$arch.deb
    dpkg-deb --root-owner-group "$compression" --build "$stage" "$out" >/dev/null || die "dpkg-deb failed for $name"
    echo "$out"
}

# copyright_extension MAJOR FILE: DEP-5 copyright of the extension's
# package: clinembed, the Rust crates linked into its library (from cargo
# tree), ONNX Runtime (its licence and third-party notices ship beside).
copyright_extension() {
    local crates
    crates=$(cd "$SRC" && cargo tree --offline -e normal --prefix none --no-default-features --features "pg$1" \
        -f '{p} {l}' 2>/dev/null | sed 's/ (.*)//; s/ (\*)//' | grep -v '^clinembed' | LC_ALL=C sort -u) \
        || die "cargo tree failed"
    {
        echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
        echo "Upstream-Name: clinembed"
        [ -z "$HOMEPAGE" ] || echo "Source: $HOMEPAGE"
        echo
        echo "Files: *"
        echo "Copyright: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) clinembed developers"
        echo "License: Apache-2.0"
        echo "Comment: The library links these Rust crates statically (name version licence):"
        sed 's/^/ /' <<<"$crates"
        echo
        echo "Files: usr/lib/postgresql/$1/lib/clinembed/libonnxruntime.so.*"
        echo "Copyright: Microsoft Corporation"
        echo "License: MIT"
        echo "Comment: ONNX Runtime $ORT_VERSION, from the onnxruntime wheel on PyPI.  Its"
        echo " third-party notices: /usr/share/doc/postgresql-$1-clinembed/onnxruntime-ThirdPartyNotices.txt.gz"
        echo
        echo "License: Apache-2.0"
        echo " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0."
        echo
        echo "License: MIT"
        sed 's/^$/./; s/^/ /' "$ORT_NOTICES/LICENSE"
    } > "$2"
}

# The ONNX Runtime licence and notices, from the pinned wheel that setup
# took the library from.
ORT_NOTICES=$WORK/ort
ort_notices() {
    [ -f "$ORT_NOTICES/LICENSE" ] && return 0
    mkdir -p "$ORT_NOTICES"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311 \
        --dest "$ORT_NOTICES" "onnxruntime==$ORT_VERSION" || die "could not download the onnxruntime wheel"
    [ "$(sha256sum "$ORT_NOTICES/$ORT_WHEEL" | cut -d' ' -f1)" = "$ORT_WHEEL_SHA256" ] \
        || die "checksum mismatch for $ORT_WHEEL"
    python3 - "$ORT_NOTICES/$ORT_WHEEL" "$ORT_NOTICES" <<'PY' || die "could not read the onnxruntime wheel's licence"
import pathlib, sys, zipfile
d = pathlib.Path(sys.argv[2])
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in ("LICENSE", "ThirdPartyNotices.txt"):
        (d / name).write_bytes(z.read("onnxruntime/" + name))
PY
}

# package_extension MAJOR: postgresql-MAJOR-clinembed.
package_extension() {
    local major=$1 pgc built pkglib share stage lib deps
    pgc=$(pg_prefix "$major")/bin/pg_config
    [ -x "$pgc" ] || die "PostgreSQL $major is not installed here (run PG_MAJORS=$major bash scripts/setup.sh)"
    log "building clinembed $VERSION for PostgreSQL $major"
    built=$WORK/built-$major
    (cd "$SRC" && CARGO_TARGET_DIR=$TARGET RUSTFLAGS="${REMAP[*]}" \
        cargo pgrx package --pg-config "$pgc" --out-dir "$built") >"$WORK/build-$major.log" 2>&1 \
        || { tail -n 30 "$WORK/build-$major.log" >&2; die "cargo pgrx package failed for PostgreSQL $major"; }
    pkglib=$built$("$pgc" --pkglibdir)
    share=$built$("$pgc" --sharedir)
    [ -f "$pkglib/clinembed.so" ] || die "the build left no clinembed.so in $pkglib"
    # Nothing of the build machine inside: its paths would name its users
    # and directories in every panic location.
    if grep -a -c -e "$REPO" -e "${CARGO_HOME:-$HOME/.cargo}" -e "$HOME/" "$pkglib/clinembed.so" >"$WORK/paths"; then
        die "clinembed.so still holds $(cat "$WORK/paths") build-machine paths (remap missed some)"
    fi

    stage=$WORK/stage-$major
    lib=$stage/usr/lib/postgresql/$major/lib
    install -d -m 0755 "$lib/clinembed" "$stage/usr/share/postgresql/$major/extension" \
        "$stage/usr/share/postgresql/$major/clinembed" "$stage$MODELS_ROOT"
    install -m 0644 "$pkglib/clinembed.so" "$lib/clinembed.so"
    strip --strip-unneeded --remove-section=.comment --remove-section=.note "$lib/clinembed.so"
    install -m 0644 "$share/extension/"clinembed* "$stage/usr/share/postgresql/$major/extension/"
    # ONNX Runtime as setup installed it, checked against its pin.
    install -m 0644 "$("$pgc" --pkglibdir)/clinembed/libonnxruntime.so.$ORT_VERSION" "$lib/clinembed/"
    [ "$(sha256sum "$lib/clinembed/libonnxruntime.so.$ORT_VERSION" | cut -d' ' -f1)" = "$ORT_LIB_SHA256" ] \
        || die "the installed libonnxruntime.so.$ORT_VERSION is not the pinned one: run scripts/setup.sh"
    # The models root: one for every major, where the model packages put
    # their files and an administrator adds models.
    ln -s "../../../clinembed/models" "$stage/usr/share/postgresql/$major/clinembed/models"

    ort_notices
    copyright_extension "$major" "$WORK/copyright-$major"
    stage_doc "postgresql-$major-clinembed" "$stage" "$WORK/copyright-$major" \
        "embedded-library: ONNX Runtime's own build, shipped unmodified and sha256-pinned, links these in"
    gzip -9nc "$ORT_NOTICES/ThirdPartyNotices.txt" \
        > "$stage/usr/share/doc/postgresql-$major-clinembed/onnxruntime-ThirdPartyNotices.txt.gz"
    chmod 0644 "$stage/usr/share/doc/postgresql-$major-clinembed/onnxruntime-ThirdPartyNotices.txt.gz"

    # What the two libraries need from the system, as Debian computes it.
    mkdir -p "$WORK/shlibs-$major/debian"
    printf 'Source: clinembed\n\nPackage: postgresql-%s-clinembed\nArchitecture: amd64\n' "$major" \
        > "$WORK/shlibs-$major/debian/control"
    deps=$(cd "$WORK/shlibs-$major" && dpkg-shlibdeps -O -e"$lib/clinembed.so" -e"$lib/clinembed/libonnxruntime.so.$ORT_VERSION" 2>"$WORK/shlibdeps.log" \
        | sed -n 's/^shlibs:Depends=//p') || { cat "$WORK/shlibdeps.log" >&2; die "dpkg-shlibdeps failed"; }

    install -d -m 0755 "$stage/DEBIAN"
    cat > "$stage/DEBIAN/control" <<EOF
Package: postgresql-$major-clinembed
Source: clinembed
Version: $DEB_VERSION
Architecture: amd64
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: postgresql-$major, ${deps}
Recommends: postgresql-$major-pgvector, $MODEL_PACKAGE
Section: database
Priority: optional
${HOMEPAGE:+Homepage: $HOMEPAGE
}Description: transformer embeddings for clinical notes inside PostgreSQL $major
 clinembed computes transformer embeddings of clinical notes in the
 database (embed_text, triggers, an in-database queue, backfills, hybrid
 search), so the notes never leave it.  It runs ONNX models with the ONNX
 Runtime library it carries.
 .
 The models live in $MODELS_ROOT; the default one comes
 with $MODEL_PACKAGE.
EOF
    build_deb "$stage" -Zxz
}

# package_model: the default model's package, from the files setup
# installed (checked against their pin).
package_model() {
    local src stage m
    for m in $PG_MAJORS; do
        src=$("$(pg_prefix "$m")/bin/pg_config" --sharedir)/clinembed/models/$DEFAULT_MODEL
        [ -f "$src/model.onnx" ] && break
    done
    [ -f "$src/model.onnx" ] || die "the default model is not installed here: run scripts/setup.sh"
    [ "$(sha256sum "$src/model.onnx" | cut -d' ' -f1)" = "$DEFAULT_MODEL_ONNX_SHA256" ] \
        || die "the installed $DEFAULT_MODEL/model.onnx is not the pinned one: run scripts/setup.sh"
    log "packaging the default model $DEFAULT_MODEL"
    stage=$WORK/stage-model
    install -d -m 0755 "$stage$MODELS_ROOT/$DEFAULT_MODEL"
    for f in config.json clinembed.json tokenizer.json model.onnx; do
        install -m 0644 "$src/$f" "$stage$MODELS_ROOT/$DEFAULT_MODEL/$f"
    done
    cat > "$WORK/copyright-model" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: all-MiniLM-L6-v2
Source: the sentence-transformers/all-MiniLM-L6-v2 checkpoint, as the PyPI
 wheel $DEFAULT_CHECKPOINT_SPEC carries it, exported to ONNX

Files: *
Copyright: 2021 the sentence-transformers authors
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOF
    stage_doc "$MODEL_PACKAGE" "$stage" "$WORK/copyright-model"
    install -d -m 0755 "$stage/DEBIAN"
    cat > "$stage/DEBIAN/control" <<EOF
Package: $MODEL_PACKAGE
Source: clinembed
Version: $DEB_VERSION
Architecture: all
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Section: database
Priority: optional
${HOMEPAGE:+Homepage: $HOMEPAGE
}Description: all-MiniLM-L6-v2 sentence embeddings model for clinembed
 The default model of clinembed (postgresql-N-clinembed): all-MiniLM-L6-v2,
 384 dimensions, mean pooling, truncation at 512 tokens, as ONNX with its
 tokenizer, in $MODELS_ROOT/$DEFAULT_MODEL.
EOF
    # gzip: xz takes minutes over the weights and saves little on them.
    build_deb "$stage" -Zgzip
}

for m in $PG_MAJORS; do
    package_extension "$m"
done
package_model
