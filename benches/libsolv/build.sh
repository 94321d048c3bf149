#!/usr/bin/env bash
# Build libsolv (Debian's source package, upstream 0.7.23 on bookworm) with
# conda support, statically, and compile our benchmark driver conda_solve.c
# against it.
#
# Usage: benches/libsolv/build.sh [OUTDIR]
#   OUTDIR defaults to ${TMPDIR:-/tmp}/envstore-libsolv
#
# Idempotent: re-running reuses the fetched source, the cmake build tree and
# the installed static libraries, and only recompiles the driver when
# conda_solve.c is newer than the binary.  Progress and tool output go to
# stderr (full logs under OUTDIR/logs/); the LAST LINE OF STDOUT is the path
# of the driver binary.
#
# Needs: Debian (bookworm) with apt, run as root (or with sudo available).
# Network: only deb.debian.org (apt) is used.
#
# Environment knobs:
#   LIBSOLV_EXPECT_VERSION  upstream version we expect (default 0.7.23);
#                           a mismatch is a warning, not an error.
#   JOBS                    parallel make jobs (default 2).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-${TMPDIR:-/tmp}/envstore-libsolv}"
EXPECT="${LIBSOLV_EXPECT_VERSION:-0.7.23}"
JOBS="${JOBS:-2}"

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SRCROOT="$OUT/src"
BUILD="$OUT/build"
PREFIX="$OUT/install"
LOGS="$OUT/logs"
BIN="$OUT/bin"
mkdir -p "$SRCROOT" "$BUILD" "$PREFIX" "$LOGS" "$BIN"

log() { printf '[libsolv-build] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=(sudo); else
    log "not root and no sudo: apt steps will fail if anything is missing"; fi
fi
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- apt deps --
# cmake/gcc/make: the build; dpkg-dev: dpkg-source for `apt-get source`;
# zlib1g-dev + libexpat1-dev: libsolv's CMakeLists requires both
# unconditionally (ZLIB for solv_xfopen, EXPAT for the XML readers) even though
# the conda reader uses neither.
DEPS=(cmake make gcc libc6-dev dpkg-dev zlib1g-dev libexpat1-dev)
missing=()
for p in "${DEPS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
APT_UPDATED=0
apt_update() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    "${SUDO[@]}" apt-get update -qq >"$LOGS/apt-update.log" 2>&1 \
      || { cat "$LOGS/apt-update.log" >&2; die "apt-get update failed"; }
    APT_UPDATED=1
  fi
}
if [ "${#missing[@]}" -gt 0 ]; then
  apt_update
  log "apt-get install ${missing[*]}"
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >"$LOGS/apt-install.log" 2>&1 \
    || { tail -n 30 "$LOGS/apt-install.log" >&2; die "apt-get install failed"; }
fi

# ------------------------------------------------------------ fetch source --
SRC="$(find "$SRCROOT" -mindepth 1 -maxdepth 1 -type d -name 'libsolv-*' | sort | tail -n 1)"
if [ -z "$SRC" ] || [ ! -f "$SRC/CMakeLists.txt" ]; then
  # deb-src entry, only if apt does not already know libsolv's source package.
  if ! apt-cache showsrc libsolv 2>/dev/null | grep -q '^Version:'; then
    CODENAME="$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")"
    CODENAME="${CODENAME:-bookworm}"
    SRCLIST=/etc/apt/sources.list.d/deb-src.sources
    if [ ! -e "$SRCLIST" ]; then
      log "adding deb-src entry $SRCLIST (suite $CODENAME)"
      printf '%s\n' \
        'Types: deb-src' \
        'URIs: http://deb.debian.org/debian' \
        "Suites: $CODENAME" \
        'Components: main' \
        'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
        | "${SUDO[@]}" tee "$SRCLIST" >/dev/null
    fi
    APT_UPDATED=0
    apt_update
    apt-cache showsrc libsolv 2>/dev/null | grep -q '^Version:' \
      || die "apt still has no source package for libsolv (deb-src not usable?)"
  fi
  log "apt-get source libsolv -> $SRCROOT"
  rm -rf "$SRCROOT" && mkdir -p "$SRCROOT"
  # _apt cannot write into root-owned dirs: apt then downloads unsandboxed
  # and prints a harmless warning; let _apt in when it exists anyway.
  chmod 0777 "$SRCROOT" 2>/dev/null || true
  (cd "$SRCROOT" && apt-get source -qq libsolv) >"$LOGS/apt-source.log" 2>&1 \
    || { tail -n 30 "$LOGS/apt-source.log" >&2; die "apt-get source libsolv failed"; }
  SRC="$(find "$SRCROOT" -mindepth 1 -maxdepth 1 -type d -name 'libsolv-*' | sort | tail -n 1)"
  [ -n "$SRC" ] && [ -f "$SRC/CMakeLists.txt" ] || die "no libsolv-* source dir after apt-get source"
fi
UPVER="$(basename "$SRC")"; UPVER="${UPVER#libsolv-}"
[ "$UPVER" = "$EXPECT" ] || log "WARNING: libsolv source is $UPVER, expected $EXPECT"
log "libsolv source: $SRC"

# ------------------------------------------------------------ cmake build --
# ENABLE_CONDA: repo_add_conda, pool_conda_matchspec, conda version semantics
#               (it forces MULTI_SEMANTICS on, which pool_setdisttype needs).
# DISABLE_SHARED + ENABLE_STATIC: only libsolv.a / libsolvext.a, so the driver
#               is self-contained and cannot pick up Debian's (conda-less)
#               libsolv shared library by accident.
CMAKE_FLAGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_INSTALL_PREFIX="$PREFIX"
  -DCMAKE_INSTALL_LIBDIR=lib
  -DENABLE_CONDA=ON
  -DMULTI_SEMANTICS=ON
  -DDISABLE_SHARED=ON
  -DENABLE_STATIC=ON
)
STAMP="$PREFIX/.envstore-stamp"
WANT_STAMP="$UPVER ${CMAKE_FLAGS[*]}"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT_STAMP" ] \
   && [ -f "$PREFIX/lib/libsolv.a" ] && [ -f "$PREFIX/lib/libsolvext.a" ] \
   && [ -f "$PREFIX/include/solv/conda.h" ]; then
  log "libsolv already built and installed in $PREFIX"
else
  log "cmake configure ($BUILD)"
  cmake -S "$SRC" -B "$BUILD" "${CMAKE_FLAGS[@]}" >"$LOGS/cmake.log" 2>&1 \
    || { tail -n 40 "$LOGS/cmake.log" >&2; die "cmake configure failed"; }
  log "make -j$JOBS (libsolv, libsolvext, tools incl. testsolv)"
  make -C "$BUILD" -j"$JOBS" >"$LOGS/make.log" 2>&1 \
    || { tail -n 40 "$LOGS/make.log" >&2; die "make failed"; }
  make -C "$BUILD" install >"$LOGS/make-install.log" 2>&1 \
    || { tail -n 40 "$LOGS/make-install.log" >&2; die "make install failed"; }
  [ -f "$PREFIX/include/solv/conda.h" ] || die "conda.h not installed: ENABLE_CONDA did not take"
  grep -q '^#define LIBSOLV_FEATURE_CONDA' "$PREFIX/include/solv/solvversion.h" \
    || die "solvversion.h lacks LIBSOLV_FEATURE_CONDA: ENABLE_CONDA did not take"
  printf '%s\n' "$WANT_STAMP" >"$STAMP"
fi
[ -x "$BUILD/tools/testsolv" ] && log "testsolv: $BUILD/tools/testsolv"

# ------------------------------------------------------------ our driver ----
DRIVER="$BIN/conda_solve"
if [ ! -x "$DRIVER" ] || [ "$HERE/conda_solve.c" -nt "$DRIVER" ] \
   || [ "$PREFIX/lib/libsolv.a" -nt "$DRIVER" ]; then
  log "compiling $DRIVER"
  # libsolvext before libsolv (static link order); zlib/expat are what
  # libsolvext may reference (--as-needed drops what is unused).
  cc -O2 -std=gnu99 -Wall -Wextra -o "$DRIVER.tmp" "$HERE/conda_solve.c" \
     -isystem "$PREFIX/include" \
     "$PREFIX/lib/libsolvext.a" "$PREFIX/lib/libsolv.a" \
     -Wl,--as-needed -lexpat -lz \
    || die "compiling conda_solve.c failed"
  mv -f "$DRIVER.tmp" "$DRIVER"
else
  log "driver up to date"
fi
echo "$DRIVER"
