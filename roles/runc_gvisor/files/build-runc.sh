#!/usr/bin/env bash
# build-runc.sh: build runc with the k3s-gvisor patch set (see patches/*.patch).
#
# Usage (inside a Debian build container, as root, on a plain kernel):
#   build-runc.sh [--mode debian|upstream] [--source TARBALL] [--prepare-only]
#                 PATCH_DIR OUT_DIR
# Usage (on a docker host: runs itself in a container with plain runc):
#   build-runc.sh --docker IMAGE [--cache-image NAME] PATCH_DIR OUT_DIR
#   build-runc.sh --docker IMAGE --cache-image NAME --prepare-only
#
# Modes:
#   debian    (default) Debian's runc source package (apt-get source runc,
#             de-vendored) built in GOPATH mode against /usr/share/gocode, with
#             patched copies of the patched libraries first in GOPATH.
#   upstream  an upstream release tarball (runc-X.Y.Z.tar.xz, with vendor/),
#             given by --source or RUNC_UPSTREAM_URL, built in module mode with
#             -mod=vendor; the library patches go to vendor/<import path>.
#
# Every *.patch in PATCH_DIR carries a "Target: <import path>" line in its
# header. It is applied with `patch -p1 -d DIR` where DIR is that import
# path's root: runc's root for github.com/opencontainers/runc, the library's
# root otherwise. The same patch files serve both modes. A patch that does not
# apply (exactly: no fuzz) stops the build.
#
# Output: OUT_DIR/runc, OUT_DIR/runc.sha256 (sha256sum format), OUT_DIR/build-info.txt
#
# Environment:
#   RUNC_DEB_VERSION   Debian source version to fetch (default 1.3.6+ds1-1;
#                      empty: whatever apt offers)
#   RUNC_UPSTREAM_URL  upstream mode: where to fetch the tarball if --source
#                      is not given (needs network access to it)
#   RUNC_GO_TOOLCHAIN  upstream mode: GOTOOLCHAIN value (default "local", the
#                      installed go; e.g. go1.24.6 makes go fetch that
#                      toolchain, which needs the Go module proxy)
#   APT_NO_VALIDITY_CHECK  1 (default): pass Check-Valid-Until/Check-Date=false
#                      to apt (frozen mirror snapshots); 0: don't
set -euo pipefail

PROG=${0##*/}
MODE=debian
SOURCE=
PREPARE_ONLY=0
DOCKER_IMAGE=
CACHE_IMAGE=
RUNC_DEB_VERSION=${RUNC_DEB_VERSION-1.3.6+ds1-1}
RUNC_GO_TOOLCHAIN=${RUNC_GO_TOOLCHAIN:-local}
APT_NO_VALIDITY_CHECK=${APT_NO_VALIDITY_CHECK:-1}
# Static (as upstream's `make static`): one build serves every node of the
# fleet, whatever its distribution's libc and libseccomp.
GO_TAGS="seccomp urfave_cli_no_docs netgo osusergo"
GO_STATIC_LDFLAGS="-extldflags -static"
RUNC_IMPORT=github.com/opencontainers/runc

die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --mode) MODE=${2:?}; shift 2 ;;
        --mode=*) MODE=${1#*=}; shift ;;
        --source) SOURCE=${2:?}; shift 2 ;;
        --source=*) SOURCE=${1#*=}; shift ;;
        --prepare-only) PREPARE_ONLY=1; shift ;;
        --docker) DOCKER_IMAGE=${2:?}; shift 2 ;;
        --docker=*) DOCKER_IMAGE=${1#*=}; shift ;;
        --cache-image) CACHE_IMAGE=${2:?}; shift 2 ;;
        --cache-image=*) CACHE_IMAGE=${1#*=}; shift ;;
        -h|--help) usage ;;
        --) shift; break ;;
        -*) die "unknown option $1" ;;
        *) break ;;
    esac
done
case $MODE in debian|upstream) ;; *) die "--mode must be debian or upstream" ;; esac

if [ "$PREPARE_ONLY" = 1 ]; then
    PATCH_DIR='' OUT_DIR=''
else
    [ $# -eq 2 ] || usage
    PATCH_DIR=$(cd "$1" && pwd) || die "no patch dir $1"
    mkdir -p "$2"
    OUT_DIR=$(cd "$2" && pwd)
    ls "$PATCH_DIR"/*.patch >/dev/null 2>&1 || die "no *.patch in $PATCH_DIR"
fi

# ---------------------------------------------------------------------------
# Outer mode: run this script inside a container (plain runc, not gVisor).
# ---------------------------------------------------------------------------
if [ -n "$DOCKER_IMAGE" ]; then
    # --docker IMAGE --cache-image NAME --prepare-only: only make sure NAME
    # (IMAGE plus the build dependencies) exists, e.g. to build the wrapper.
    [ "$PREPARE_ONLY" = 0 ] || [ -n "$CACHE_IMAGE" ] || die "--docker with --prepare-only needs --cache-image"
    self=$(cd "$(dirname "$0")" && pwd)/${0##*/}
    image=$DOCKER_IMAGE
    if [ -n "$CACHE_IMAGE" ]; then
        if docker image inspect "$CACHE_IMAGE" >/dev/null 2>&1; then
            log "using cached build image $CACHE_IMAGE"
        else
            prep=kg-runc-build-prep-$$
            log "preparing $CACHE_IMAGE from $DOCKER_IMAGE (build dependencies)"
            docker run --runtime=runc --name "$prep" \
                -v "$self:/k3s-gvisor/build-runc.sh:ro" \
                -e RUNC_DEB_VERSION -e APT_NO_VALIDITY_CHECK \
                "$DOCKER_IMAGE" bash /k3s-gvisor/build-runc.sh --mode "$MODE" --prepare-only \
                || { docker rm -f "$prep" >/dev/null 2>&1; die "preparing the build image failed"; }
            docker commit "$prep" "$CACHE_IMAGE" >/dev/null
            docker rm -f "$prep" >/dev/null
        fi
        image=$CACHE_IMAGE
    fi
    [ "$PREPARE_ONLY" = 0 ] || exit 0
    src_args=()
    if [ -n "$SOURCE" ]; then
        src_abs=$(cd "$(dirname "$SOURCE")" && pwd)/${SOURCE##*/}
        src_args=(-v "$src_abs:/k3s-gvisor/src/${SOURCE##*/}:ro" --source "/k3s-gvisor/src/${SOURCE##*/}")
    fi
    vols=(-v "$self:/k3s-gvisor/build-runc.sh:ro" -v "$PATCH_DIR:/k3s-gvisor/patches:ro"
          -v "$OUT_DIR:/k3s-gvisor/out")
    [ ${#src_args[@]} -eq 0 ] || vols+=("${src_args[0]}" "${src_args[1]}")
    exec docker run --rm --runtime=runc "${vols[@]}" \
        -e RUNC_DEB_VERSION -e RUNC_UPSTREAM_URL -e RUNC_GO_TOOLCHAIN -e APT_NO_VALIDITY_CHECK \
        "$image" bash /k3s-gvisor/build-runc.sh --mode "$MODE" \
        ${src_args[2]:+"${src_args[2]}" "${src_args[3]}"} \
        /k3s-gvisor/patches /k3s-gvisor/out
fi

# ---------------------------------------------------------------------------
# Inside the build container.
# ---------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (apt-get)"
T0=$(date +%s)

APT_OPTS=()
if [ "$APT_NO_VALIDITY_CHECK" = 1 ]; then
    APT_OPTS=(-o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false)
fi
apt_get() { DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" -q "$@"; }

# Add deb-src entries mirroring the container's own deb entries (same mirror,
# suites and components), unless some deb-src entry exists already.
ensure_deb_src() {
    local list=/etc/apt/sources.list.d/k3s-gvisor-deb-src.list f
    local -a files=()
    [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && files+=("$f"); done
    if [ ${#files[@]} -gt 0 ] && grep -hqE '^[[:space:]]*deb-src[[:space:]]' "${files[@]}"; then
        return 0
    fi
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        if grep -qiE '^Types:.*deb-src' "$f"; then return 0; fi
    done
    : > "$list.tmp"
    if [ ${#files[@]} -gt 0 ]; then
        grep -hE '^[[:space:]]*deb[[:space:]]' "${files[@]}" \
            | sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /' >> "$list.tmp" || true
    fi
    # deb822 files: same stanzas with Types: deb-src
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        sed -E 's/^Types:.*/Types: deb-src/I' "$f" \
            > "/etc/apt/sources.list.d/k3s-gvisor-deb-src-${f##*/}"
    done
    if [ -s "$list.tmp" ]; then
        mv "$list.tmp" "$list"
        log "added deb-src entries: $(tr '\n' ';' < "$list")"
    else
        rm -f "$list.tmp"
        ls /etc/apt/sources.list.d/k3s-gvisor-deb-src-*.sources >/dev/null 2>&1 \
            || die "no deb entries in apt's sources to derive a deb-src entry from"
    fi
}

prepare_debian() {
    ensure_deb_src
    apt_get update
    apt_get install -y --no-install-recommends dpkg-dev patch ca-certificates xz-utils
    apt_get build-dep -y runc
}

prepare_upstream() {
    apt_get update
    # Same build dependencies as Debian's package (go, libseccomp-dev, pkg-config,
    # gcc), without the packaged Go libraries being used.
    apt_get install -y --no-install-recommends golang-go libseccomp-dev pkg-config gcc libc6-dev \
        patch ca-certificates xz-utils curl
}

if [ "$PREPARE_ONLY" = 1 ]; then
    "prepare_$MODE"
    apt-get clean
    log "build dependencies installed ($(( $(date +%s) - T0 )) s)"
    exit 0
fi

WORK=$(mktemp -d /tmp/build-runc.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Apply one patch with patch -p1 -d DIR, exactly (no fuzz), dry run first so a
# failing patch leaves nothing half-applied; fail loudly.
apply_patch() {
    local p=$1 dir=$2
    [ -d "$dir" ] || die "$(basename "$p"): target directory $dir does not exist"
    if ! patch -p1 -N --fuzz=0 --dry-run -d "$dir" < "$p" > "$WORK/patch.log" 2>&1; then
        cat "$WORK/patch.log" >&2
        die "patch $(basename "$p") does not apply to $dir"
    fi
    patch -p1 -N --fuzz=0 --no-backup-if-mismatch -d "$dir" < "$p" > "$WORK/patch.log" 2>&1 \
        || { cat "$WORK/patch.log" >&2; die "patch $(basename "$p") failed on $dir"; }
    log "applied $(basename "$p") -> $dir"
}

patch_target() {
    local t
    t=$(sed -n '/^diff \|^--- /q; s/^Target:[[:space:]]*//p' "$1" | sed -n 1p)
    [ -n "$t" ] || die "$(basename "$1") has no 'Target: <import path>' header line"
    echo "$t"
}

# Short digest of the patch set, recorded in the binary's commit string.
PATCHSET_SHA=$(cat "$PATCH_DIR"/*.patch | sha256sum | cut -c1-12)

build_debian() {
    prepare_debian
    local srcroot=$WORK/src
    mkdir -p "$srcroot"
    (cd "$srcroot" && apt_get source "runc${RUNC_DEB_VERSION:+=$RUNC_DEB_VERSION}") \
        || die "apt-get source runc${RUNC_DEB_VERSION:+=$RUNC_DEB_VERSION} failed"
    local src
    src=$(find "$srcroot" -mindepth 1 -maxdepth 1 -type d -name 'runc-*' | sed -n 1p)
    [ -n "$src" ] || die "no runc source tree after apt-get source"
    local debver upver
    debver=$(cd "$src" && dpkg-parsechangelog -S Version)
    upver=${debver%-*}

    GP=$WORK/gopath
    mkdir -p "$GP/src/${RUNC_IMPORT%/*}"
    cp -a "$src" "$GP/src/$RUNC_IMPORT"
    local p target dir
    for p in "$PATCH_DIR"/*.patch; do
        target=$(patch_target "$p")
        if [ "$target" = "$RUNC_IMPORT" ]; then
            dir=$GP/src/$RUNC_IMPORT
        else
            dir=$GP/src/$target
            if [ ! -d "$dir" ]; then
                [ -d "/usr/share/gocode/src/$target" ] \
                    || die "$(basename "$p"): /usr/share/gocode/src/$target is not installed"
                mkdir -p "$(dirname "$dir")"
                # A patched copy, first in GOPATH, shadows the packaged one.
                cp -rL "/usr/share/gocode/src/$target" "$dir"
            fi
        fi
        apply_patch "$p" "$dir"
    done

    log "building runc $debver (GOPATH mode, $(go version))"
    local tb
    tb=$(date +%s)
    (cd "$GP/src/$RUNC_IMPORT" &&
        GO111MODULE=off GOPATH="$GP:/usr/share/gocode" GOFLAGS='' GOTOOLCHAIN=local CGO_ENABLED=1 \
        go build -trimpath -tags "$GO_TAGS" \
            -ldflags "-s -w $GO_STATIC_LDFLAGS -X main.version=$upver+k3sgvisor -X main.gitCommit=$debver+patches.$PATCHSET_SHA" \
            -o "$WORK/runc" .)
    BUILD_SECONDS=$(( $(date +%s) - tb ))
    SRC_DESC="Debian source runc $debver"
}

build_upstream() {
    prepare_upstream
    local tarball=$SOURCE
    if [ -z "$tarball" ]; then
        [ -n "${RUNC_UPSTREAM_URL:-}" ] || die "upstream mode needs --source TARBALL or RUNC_UPSTREAM_URL"
        tarball=$WORK/${RUNC_UPSTREAM_URL##*/}
        curl -fsSL -o "$tarball" "$RUNC_UPSTREAM_URL" || die "cannot download $RUNC_UPSTREAM_URL"
    fi
    [ -f "$tarball" ] || die "no such tarball $tarball"
    mkdir -p "$WORK/src"
    tar -C "$WORK/src" -xf "$tarball"
    local src
    src=$(find "$WORK/src" -mindepth 1 -maxdepth 1 -type d | sed -n 1p)
    if [ ! -f "$src/go.mod" ] || [ ! -d "$src/vendor" ]; then
        die "$tarball is not a runc release tree with vendor/"
    fi
    local upver
    upver=$(cat "$src/VERSION" 2>/dev/null || echo unknown)

    local p target dir
    for p in "$PATCH_DIR"/*.patch; do
        target=$(patch_target "$p")
        if [ "$target" = "$RUNC_IMPORT" ]; then dir=$src; else dir=$src/vendor/$target; fi
        apply_patch "$p" "$dir"
    done

    log "building runc $upver (module mode, vendor/, GOTOOLCHAIN=$RUNC_GO_TOOLCHAIN)"
    local tb
    tb=$(date +%s)
    (cd "$src" &&
        GO111MODULE=on GOFLAGS=-mod=vendor GOTOOLCHAIN="$RUNC_GO_TOOLCHAIN" CGO_ENABLED=1 \
        go build -trimpath -tags "$GO_TAGS" \
            -ldflags "-s -w $GO_STATIC_LDFLAGS -X main.version=$upver+k3sgvisor -X main.gitCommit=v$upver+patches.$PATCHSET_SHA" \
            -o "$WORK/runc" .)
    BUILD_SECONDS=$(( $(date +%s) - tb ))
    SRC_DESC="upstream tarball ${tarball##*/} (runc $upver)"
}

"build_$MODE"

install -m 0755 "$WORK/runc" "$OUT_DIR/runc"
(cd "$OUT_DIR" && sha256sum runc > runc.sha256)
VERSION_LINE=$("$OUT_DIR/runc" --version | sed -n 1p)
{
    echo "source: $SRC_DESC"
    echo "mode: $MODE"
    echo "patches: $(cd "$PATCH_DIR" && printf '%s ' ./*.patch)(set sha256 prefix $PATCHSET_SHA)"
    echo "go: $(go version)"
    echo "compile_seconds: $BUILD_SECONDS"
    echo "total_seconds: $(( $(date +%s) - T0 ))"
    echo "size_bytes: $(stat -c %s "$OUT_DIR/runc")"
    echo "sha256: $(cut -d' ' -f1 "$OUT_DIR/runc.sha256")"
    "$OUT_DIR/runc" --version
} > "$OUT_DIR/build-info.txt"
cat "$OUT_DIR/build-info.txt" >&2
echo "$VERSION_LINE"
