#!/usr/bin/env bash
# build-runc.sh: build runc with the k3s-gvisor patch set (see patches/*.patch).
#
# Usage (natively, no docker, no root; Go, gcc, libc6-dev, patch, pkg-config):
#   build-runc.sh --mode module [--module-dir DIR] PATCH_DIR OUT_DIR
#   build-runc.sh --mode module [--module-dir DIR] --prepare-only
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
#   module    runc's release as a Go module, required by the build module in
#             --module-dir (default: runc-module/ beside this script), whose
#             go.sum pins runc and every dependency by checksum. `go mod
#             vendor` (module cache, or the Go module proxy), then every patch
#             goes to vendor/<import path> (runc's own to
#             vendor/github.com/opencontainers/runc) and runc is built with
#             -mod=vendor. Runs on the host itself, offline given a warm module
#             cache (fill it with --prepare-only). Installs nothing: where
#             libseccomp-dev is not installed, its .deb is fetched with
#             `apt-get download` and unpacked in the build directory.
#
# Every *.patch in PATCH_DIR carries a "Target: <import path>" line in its
# header. It is applied with `patch -p1 -d DIR` where DIR is that import
# path's root: runc's root for github.com/opencontainers/runc, the library's
# root otherwise. The same patch files serve all modes. A patch that does not
# apply (exactly: no fuzz) stops the build.
#
# Output: OUT_DIR/runc, OUT_DIR/runc.sha256 (sha256sum format), OUT_DIR/build-info.txt
# The binary is static in every mode (as upstream's `make static`).
#
# Environment:
#   RUNC_DEB_VERSION   Debian source version to fetch (default 1.3.6+ds1-1;
#                      empty: whatever apt offers)
#   RUNC_UPSTREAM_URL  upstream mode: where to fetch the tarball if --source
#                      is not given (needs network access to it)
#   RUNC_GO_TOOLCHAIN  upstream and module modes: GOTOOLCHAIN value (default
#                      "local", the installed go; e.g. go1.27.3 makes go use
#                      that toolchain, from the module cache or the Go module
#                      proxy)
#   APT_NO_VALIDITY_CHECK  1 (default): pass Check-Valid-Until/Check-Date=false
#                      to apt (frozen mirror snapshots); 0: don't
#   TMPDIR             where the build directory is made (default /tmp); it
#                      is removed on exit, also on failure
# Module mode takes the user's Go settings (GOPROXY, GOMODCACHE, GOSUMDB, ...)
# as they are and never writes them; it sets only what makes the binary
# (GOTOOLCHAIN, GOFLAGS, GOWORK=off, CGO_*, GOAMD64) and a build cache and
# temporary directory inside the build directory (GOCACHE, GOTMPDIR), for
# this process only.
set -euo pipefail

PROG=${0##*/}
MODE=debian
SOURCE=
PREPARE_ONLY=0
DOCKER_IMAGE=
CACHE_IMAGE=
MODULE_DIR=
RUNC_DEB_VERSION=${RUNC_DEB_VERSION-1.3.6+ds1-1}
RUNC_GO_TOOLCHAIN=${RUNC_GO_TOOLCHAIN:-local}
APT_NO_VALIDITY_CHECK=${APT_NO_VALIDITY_CHECK:-1}
# Static (as upstream's `make static`): one build serves every node of the
# fleet, whatever its distribution's libc and libseccomp.
GO_TAGS="seccomp urfave_cli_no_docs netgo osusergo"
GO_STATIC_LDFLAGS="-extldflags -static"
RUNC_IMPORT=github.com/opencontainers/runc
# Lines added to build-info.txt by a mode (what else went into the binary).
EXTRA_INFO=()

die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

while [ $# -gt 0 ]; do
    case $1 in
        --mode) MODE=${2:?}; shift 2 ;;
        --mode=*) MODE=${1#*=}; shift ;;
        --source) SOURCE=${2:?}; shift 2 ;;
        --source=*) SOURCE=${1#*=}; shift ;;
        --module-dir) MODULE_DIR=${2:?}; shift 2 ;;
        --module-dir=*) MODULE_DIR=${1#*=}; shift ;;
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
case $MODE in debian|upstream|module) ;; *) die "--mode must be debian, upstream or module" ;; esac
if [ "$MODE" = module ]; then
    # It is the native route: the docker modes exist for hosts without Go.
    [ -z "$DOCKER_IMAGE" ] || die "--mode module builds on this host; it takes no --docker"
    [ -z "$SOURCE" ] || die "--mode module takes no --source: the source is the module in --module-dir"
    MODULE_DIR=${MODULE_DIR:-$(cd "$(dirname "$0")" && pwd)/runc-module}
    if [ ! -f "$MODULE_DIR/go.mod" ] || [ ! -f "$MODULE_DIR/go.sum" ]; then
        die "no go.mod and go.sum in $MODULE_DIR (the runc build module)"
    fi
    MODULE_DIR=$(cd "$MODULE_DIR" && pwd)
elif [ -n "$MODULE_DIR" ]; then
    die "--module-dir is for --mode module"
fi

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
# The build itself: inside the build container (debian, upstream) or on this
# host (module).
# ---------------------------------------------------------------------------
# The debian and upstream modes install their build dependencies with apt.
[ "$MODE" = module ] || [ "$(id -u)" = 0 ] || die "run as root (apt-get)"
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

# The build directory, removed on every exit: success, failure, and the
# signals that end the script (bash runs the EXIT trap for HUP, INT, TERM).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/build-runc.XXXXXX")
trap 'rm -rf "$WORK" 2>/dev/null || { sleep 2; rm -rf "$WORK"; }' EXIT

# A signal to the script alone (a supervisor's TERM, not a terminal's ^C
# to the whole process group) must also end the compiler it waits for, or
# `go build` goes on compiling into a removed WORK.
CHILD=
on_signal() {
    if [ -n "$CHILD" ]; then kill "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; fi
    exit "$1"
}
trap 'on_signal 129' HUP
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# run_in DIR CMD...: CMD in DIR, as the child on_signal ends.
run_in() {
    local dir=$1 rc=0
    shift
    (cd "$dir" && exec "$@") &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=
    return "$rc"
}

# ---------------------------------------------------------------------------
# Module mode: Go's own tools, pinned by the build module's go.sum.
# ---------------------------------------------------------------------------

# Only what decides the binary is set, and only for this process (never
# `go env -w`): the toolchain; GOFLAGS, which would otherwise come from the
# user's go env file (an empty GOFLAGS does not override it); no workspace;
# cgo's flags and the amd64 level at Go's defaults, so one user's settings
# do not change the fleet's binary.
module_go_env() {
    export GOTOOLCHAIN=$RUNC_GO_TOOLCHAIN GOWORK=off GOFLAGS=-mod=readonly
    export CGO_ENABLED=1 CGO_CFLAGS="-O2 -g" CGO_LDFLAGS="-O2 -g" GOAMD64=v1
}

# The Go that builds: the toolchain RUNC_GO_TOOLCHAIN selects. Missing when
# it cannot be had (offline and not in the module cache: "toolchain not
# available") or is too old for the build module's `tool` directive (1.24).
check_go() {
    local out ver minor
    if ! command -v go >/dev/null; then
        MISSING+=("Go (Debian: golang-go; a Go >= 1.21 can fetch GOTOOLCHAIN=$RUNC_GO_TOOLCHAIN)")
        return
    fi
    if ! out=$(go version 2>&1); then
        MISSING+=("Go toolchain GOTOOLCHAIN=$RUNC_GO_TOOLCHAIN ($(echo "$out" | tail -n 1); offline, it must be in the module cache: --prepare-only fills it)")
        return
    fi
    ver=$(echo "$out" | awk '{print $3}')
    minor=$(echo "$ver" | sed -nE 's/^go1\.([0-9]+).*/\1/p')
    if [ -z "$minor" ] || [ "$minor" -lt 24 ]; then
        MISSING+=("Go >= 1.24 (GOTOOLCHAIN=$RUNC_GO_TOOLCHAIN gives $ver; a Go < 1.21 ignores GOTOOLCHAIN)")
        return
    fi
    GO_OK=1
}

# gcc and a static libc: cgo (nsenter, libseccomp) and -extldflags -static.
check_cc() {
    local cc=${CC:-gcc} libc
    [ "$GO_OK" = 0 ] || cc=$(go env CC)
    if ! command -v "$cc" >/dev/null; then
        MISSING+=("C compiler $cc (Debian: gcc)")
        return
    fi
    # gcc prints the bare name when it has no such file.
    libc=$("$cc" -print-file-name=libc.a 2>/dev/null || true)
    case $libc in
        /*) [ -f "$libc" ] || MISSING+=("static libc libc.a (Debian: libc6-dev)") ;;
        *) MISSING+=("static libc libc.a (Debian: libc6-dev)") ;;
    esac
    CC_DESC="$("$cc" --version | sed -n 1p); $(dpkg_version libc6-dev)"
}

dpkg_version() {
    dpkg-query -W -f='${Package} ${Version}' "$1" 2>/dev/null || echo "$1 (not from dpkg)"
}

# libseccomp's headers and static library, for the seccomp build tag. The
# installed libseccomp-dev if there is one; else its .deb, fetched with
# `apt-get download` (verified by apt's signed indexes; installs nothing)
# and unpacked into WORK, with a copy of its .pc file pointing there.
find_libseccomp() {
    local libdir pc
    if command -v pkg-config >/dev/null && pkg-config --exists libseccomp; then
        libdir=$(pkg-config --variable=libdir libseccomp)
        if [ -f "$libdir/libseccomp.a" ]; then
            SECCOMP_DESC="$(dpkg_version libseccomp-dev), installed"
            return
        fi
    fi
    mkdir -p "$WORK/debs"
    if ! (cd "$WORK/debs" && apt_get download libseccomp-dev) > "$WORK/apt.log" 2>&1; then
        MISSING+=("libseccomp-dev (not installed, and apt-get download libseccomp-dev failed: $(grep -E '^(E|Err):' "$WORK/apt.log" | head -n 2 | tr '\n' ' '))")
        return
    fi
    dpkg-deb -x "$WORK"/debs/libseccomp-dev_*.deb "$WORK/sysroot"
    pc=$(find "$WORK/sysroot" -name libseccomp.pc | sed -n 1p)
    [ -n "$pc" ] || die "libseccomp-dev's .deb has no libseccomp.pc"
    mkdir -p "$WORK/pkgconfig"
    # pkg-config --define-prefix would take usr/lib, not usr, as the prefix
    # of a multiarch path (usr/lib/<triplet>/pkgconfig): set it by hand.
    sed "s|^prefix=.*|prefix=$WORK/sysroot/usr|" "$pc" > "$WORK/pkgconfig/libseccomp.pc"
    # Only this .pc: cgo asks pkg-config for libseccomp and nothing else.
    export PKG_CONFIG_LIBDIR=$WORK/pkgconfig
    unset PKG_CONFIG_PATH
    SECCOMP_DESC="$(dpkg-deb -f "$WORK"/debs/libseccomp-dev_*.deb Package Version | awk '{printf "%s ", $2}')(apt-get download, unpacked in the build directory)"
}

# Everything the build needs, checked before it starts; all of what is
# missing is named at once.
module_preflight() {
    MISSING=() GO_OK=0 CC_DESC='' SECCOMP_DESC=''
    check_go
    check_cc
    command -v patch >/dev/null || MISSING+=("patch (Debian: patch)")
    command -v pkg-config >/dev/null || MISSING+=("pkg-config (Debian: pkg-config or pkgconf)")
    find_libseccomp
    if [ ${#MISSING[@]} -gt 0 ]; then
        local m
        for m in "${MISSING[@]}"; do log "missing: $m"; done
        die "cannot build runc in module mode (nothing was built)"
    fi
    log "using $(go version); $CC_DESC; libseccomp: $SECCOMP_DESC"
}

# The build module, copied into WORK and vendored. go.sum pins every module:
# -mod=readonly refuses to add or change a checksum, and go.mod and go.sum
# must come out unchanged.
vendor_module() {
    local mod=$1
    mkdir -p "$mod"
    cp "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum" "$mod/"
    (cd "$mod" && go mod vendor) \
        || die "go mod vendor failed (above); offline, the module cache must hold what go.sum pins: --prepare-only fills it"
    if ! cmp -s "$MODULE_DIR/go.mod" "$mod/go.mod" || ! cmp -s "$MODULE_DIR/go.sum" "$mod/go.sum"; then
        die "go mod vendor changed go.mod or go.sum: $MODULE_DIR is not tidy"
    fi
    # The cached copies the vendor tree came from must still match go.sum.
    (cd "$mod" && go mod verify >/dev/null) || die "go mod verify failed: the module cache does not match go.sum"
    local f
    for f in VERSION libcontainer/nsenter/nsexec.c; do
        [ -f "$mod/vendor/$RUNC_IMPORT/$f" ] \
            || die "vendor/$RUNC_IMPORT/$f is missing: go.mod needs 'tool $RUNC_IMPORT'"
    done
}

# --prepare-only in module mode: fill the module cache (toolchain and the
# modules go.sum pins), so that the build can later run offline.
prepare_module() {
    module_go_env
    local mod=$WORK/module
    mkdir -p "$mod"
    cp "$MODULE_DIR/go.mod" "$MODULE_DIR/go.sum" "$mod/"
    (cd "$mod" && go mod download) || die "go mod download failed"
    log "module cache $(go env GOMODCACHE) holds $(go version | cut -d' ' -f3) and the modules of $MODULE_DIR/go.sum"
}

build_module() {
    module_go_env
    module_preflight
    # A build cache of its own, removed with WORK: Go's cache keys cgo
    # packages without pkg-config's output or libseccomp's headers and
    # library (golang/go#24544), so a shared cache would link against the
    # unpacked libseccomp of an earlier, deleted WORK, or a stale one. (runc's
    # own release script rebuilds everything with -a for the same reason.)
    # go's own temporary files go there too, so nothing outlives WORK.
    export GOCACHE=$WORK/gocache GOTMPDIR=$WORK/gotmp
    mkdir -p "$GOTMPDIR"
    local mod=$WORK/module runc_ver upver
    vendor_module "$mod"
    runc_ver=$(cd "$mod" && go list -m -f '{{.Version}}' "$RUNC_IMPORT")
    upver=$(tr -d '[:space:]' < "$mod/vendor/$RUNC_IMPORT/VERSION")
    [ "v$upver" = "$runc_ver" ] || die "vendored runc's VERSION is $upver, go.mod requires $runc_ver"
    apply_patches_vendor "$mod/vendor/$RUNC_IMPORT" "$mod/vendor"

    log "building runc $upver (Go module $RUNC_IMPORT@$runc_ver, -mod=vendor, GOTOOLCHAIN=$GOTOOLCHAIN)"
    local tb
    tb=$(date +%s)
    # -buildid= : Go's build ID hashes the link's inputs, paths included (the
    # unpacked libseccomp's -L is in a random WORK), so two builds of the same
    # sources would differ in it; without it ld's own build ID is a digest of
    # the content.
    run_in "$mod" env GOFLAGS=-mod=vendor \
        go build -trimpath -tags "$GO_TAGS" \
            -ldflags "-s -w -buildid= $GO_STATIC_LDFLAGS -X main.version=$upver+k3sgvisor -X main.gitCommit=$runc_ver+patches.$PATCHSET_SHA" \
            -o "$WORK/runc" "$RUNC_IMPORT"
    BUILD_SECONDS=$(( $(date +%s) - tb ))
    check_static "$WORK/runc"
    SRC_DESC="Go module $RUNC_IMPORT@$runc_ver ($(awk -v m="$RUNC_IMPORT" -v v="$runc_ver" '$1 == m && $2 == v {print $3}' "$MODULE_DIR/go.sum"))"
    EXTRA_INFO=("module_dir: $MODULE_DIR (go.mod sha256 $(sha256sum < "$MODULE_DIR/go.mod" | cut -c1-12), go.sum sha256 $(sha256sum < "$MODULE_DIR/go.sum" | cut -c1-12))"
                "goroot: $(go env GOROOT)"
                "cc: $CC_DESC"
                "libseccomp-dev: $SECCOMP_DESC")
}

# A static binary has no program interpreter (readelf comes with gcc's binutils).
check_static() {
    if readelf -lW "$1" | grep -q 'Requesting program interpreter'; then
        die "$1 is dynamically linked"
    fi
}

# ---------------------------------------------------------------------------
# Patches
# ---------------------------------------------------------------------------

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

# Every patch, in a vendored tree: runc's own to RUNC_ROOT, a library's to
# VENDOR/<import path>.
apply_patches_vendor() {
    local runc_root=$1 vendor=$2 p target
    for p in "$PATCH_DIR"/*.patch; do
        target=$(patch_target "$p")
        if [ "$target" = "$RUNC_IMPORT" ]; then
            apply_patch "$p" "$runc_root"
        else
            apply_patch "$p" "$vendor/$target"
        fi
    done
}

if [ "$PREPARE_ONLY" = 1 ]; then
    "prepare_$MODE"
    [ "$MODE" = module ] || apt-get clean
    log "build dependencies in place ($(( $(date +%s) - T0 )) s)"
    exit 0
fi

# Short digest of the patch set, recorded in the binary's commit string.
PATCHSET_SHA=$(cat "$PATCH_DIR"/*.patch | sha256sum | cut -c1-12)

# ---------------------------------------------------------------------------
# Debian and upstream modes (in a build container)
# ---------------------------------------------------------------------------

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

    apply_patches_vendor "$src" "$src/vendor"

    log "building runc $upver (module mode, vendor/, GOTOOLCHAIN=$RUNC_GO_TOOLCHAIN)"
    # build-info's `go version` must name the toolchain that built it.
    export GOTOOLCHAIN=$RUNC_GO_TOOLCHAIN
    local tb
    tb=$(date +%s)
    (cd "$src" &&
        GO111MODULE=on GOFLAGS=-mod=vendor CGO_ENABLED=1 \
        go build -trimpath -tags "$GO_TAGS" \
            -ldflags "-s -w $GO_STATIC_LDFLAGS -X main.version=$upver+k3sgvisor -X main.gitCommit=v$upver+patches.$PATCHSET_SHA" \
            -o "$WORK/runc" .)
    BUILD_SECONDS=$(( $(date +%s) - tb ))
    SRC_DESC="upstream tarball ${tarball##*/} (runc $upver)"
}

# ---------------------------------------------------------------------------
# Build, then the output: the same three files in every mode.
# ---------------------------------------------------------------------------

"build_$MODE"

install -m 0755 "$WORK/runc" "$OUT_DIR/runc"
(cd "$OUT_DIR" && sha256sum runc > runc.sha256)
VERSION_LINE=$("$OUT_DIR/runc" --version | sed -n 1p)
{
    echo "source: $SRC_DESC"
    echo "mode: $MODE"
    echo "patches: $(cd "$PATCH_DIR" && printf '%s ' ./*.patch)(set sha256 prefix $PATCHSET_SHA)"
    echo "go: $(go version)"
    [ ${#EXTRA_INFO[@]} -eq 0 ] || printf '%s\n' "${EXTRA_INFO[@]}"
    echo "compile_seconds: $BUILD_SECONDS"
    echo "total_seconds: $(( $(date +%s) - T0 ))"
    echo "size_bytes: $(stat -c %s "$OUT_DIR/runc")"
    echo "sha256: $(cut -d' ' -f1 "$OUT_DIR/runc.sha256")"
    "$OUT_DIR/runc" --version
} > "$OUT_DIR/build-info.txt"
cat "$OUT_DIR/build-info.txt" >&2
echo "$VERSION_LINE"
