#!/usr/bin/env bash
# Build a free-threaded CPython 3.13 (3.13t, `--disable-gil`) from Debian trixie's source
# package, into a cache folder that later runs reuse. Prints the interpreter's path last.
#
# Why trixie's source package: no free-threaded binary (and no 3.14 source) is reachable from
# the package registries these machines can use, but Debian's apt mirror is, and trixie ships
# python3.13 whose .orig tarball is the upstream release. apt checks the chain for us:
# trixie's InRelease is signed by a key in debian-archive-keyring (bookworm's keyring already
# carries the trixie keys), the Sources index pins the .dsc's hashes, and dpkg-source checks
# the .orig tarball against the .dsc.
#
# The machine's apt setup is not changed: the trixie entry is source-only (deb-src, so no
# trixie binary can ever be installed) and lives in a private apt configuration (its own
# sources list, lists and cache folders under a temporary folder), so the system's sources and
# package lists are exactly as they were, even if this script is killed. The trap removes the
# temporary folder. Nothing here is committed: the source and the binary stay outside the repo.
#
# Usage: scripts/build-python-ft.sh            (cache: ~/.cache/livemod/python3.13t)
#        LIVEMOD_FT_PREFIX=/some/dir scripts/build-python-ft.sh
#        LIVEMOD_FT_JOBS=4 scripts/build-python-ft.sh   (make -j, default 2)
set -euo pipefail

PREFIX=${LIVEMOD_FT_PREFIX:-$HOME/.cache/livemod/python3.13t}
JOBS=${LIVEMOD_FT_JOBS:-2}
NICE=${LIVEMOD_FT_NICE:-10}  # the build shares the machine with the test runs
MIRROR=${LIVEMOD_FT_MIRROR:-http://deb.debian.org/debian}
PY="$PREFIX/bin/python3.13t"
MARKER="$PREFIX/.livemod-build-complete"

log() { echo "build-python-ft: $*" >&2; }

is_ft_ok() {
    [[ -f "$MARKER" && -x "$PY" ]] &&
        "$PY" -c 'import sys, sysconfig; sys.exit(0 if sysconfig.get_config_var("Py_GIL_DISABLED") else 1)' \
            2>/dev/null
}

if is_ft_ok; then
    log "reusing $PY ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
    echo "$PY"
    exit 0
fi

if ! command -v apt-get >/dev/null || ! command -v dpkg-source >/dev/null; then
    log "needs apt-get and dpkg-source (a Debian-based machine); cannot build 3.13t here"
    exit 2
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then SUDO=(sudo); fi

# The only build dependency missing from the CI image. Installed from the machine's own
# (bookworm) sources, never from trixie.
if ! dpkg-query -W -f='${Status}' libgdbm-dev 2>/dev/null | grep -q "install ok installed"; then
    log "installing libgdbm-dev"
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends libgdbm-dev >/dev/null ||
        { "${SUDO[@]}" apt-get update -q >/dev/null &&
            "${SUDO[@]}" apt-get install -y -q --no-install-recommends libgdbm-dev >/dev/null; }
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/livemod-ft-build.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

# A private apt: one deb-src line for trixie, and lists/cache of its own.
mkdir -p "$WORK/apt/parts" "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial"
cat >"$WORK/apt/sources.list" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR trixie main
EOF
APT_OPTS=(
    -o "Dir::Etc::SourceList=$WORK/apt/sources.list"
    -o "Dir::Etc::SourceParts=$WORK/apt/parts"
    -o "Dir::State::Lists=$WORK/apt/lists"
    -o "Dir::Cache=$WORK/apt/cache"
    -o "APT::Sandbox::User=root"
)
log "fetching trixie's Sources index (private apt lists under $WORK)"
apt-get "${APT_OPTS[@]}" update -q >/dev/null
mkdir -p "$WORK/src"
(cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source -q --download-only python3.13/trixie >/dev/null)
DSC=$(ls "$WORK"/src/python3.13_*.dsc)
log "downloaded $(basename "$DSC"); checking its files against the .dsc's SHA-256 sums"
# apt checked the .dsc against the signed Sources index; the .dsc lists each file's SHA-256.
awk '/^Checksums-Sha256:/{on=1; next} /^[^ ]/{on=0} on && NF==3 {print $1"  "$3}' "$DSC" \
    >"$WORK/src/SHA256SUMS"
[[ -s "$WORK/src/SHA256SUMS" ]] || { log "no Checksums-Sha256 in $DSC"; exit 1; }
(cd "$WORK/src" && sha256sum --quiet -c SHA256SUMS)
ORIG=$(ls "$WORK"/src/python3.13_*.orig.tar.* | grep -v "\.asc$")
VERSION=$(basename "$ORIG" | sed -E 's/^python3\.13_([0-9.]+)\.orig\..*/\1/')

# Build the upstream tree (the .orig tarball), not Debian's patched one: we want CPython as
# released, with only the GIL switched off.
mkdir -p "$WORK/build"
tar -xf "$ORIG" -C "$WORK/build"
SRC=$(find "$WORK/build" -mindepth 1 -maxdepth 1 -type d | head -1)
log "building CPython $VERSION with --disable-gil into $PREFIX (make -j$JOBS)"
rm -rf "$PREFIX"
mkdir -p "$PREFIX"
(
    cd "$SRC"
    nice -n "$NICE" ./configure -q --disable-gil --prefix="$PREFIX" --with-ensurepip=install >"$WORK/configure.log" 2>&1 ||
        { tail -40 "$WORK/configure.log" >&2; exit 1; }
    nice -n "$NICE" make -s -j"$JOBS" >"$WORK/make.log" 2>&1 || { tail -60 "$WORK/make.log" >&2; exit 1; }
    nice -n "$NICE" make -s install >"$WORK/install.log" 2>&1 || { tail -60 "$WORK/install.log" >&2; exit 1; }
)
touch "$MARKER"
if ! is_ft_ok; then
    log "built $PY but it does not report Py_GIL_DISABLED"
    exit 1
fi
log "done: $("$PY" -VV)"
echo "$PY"
