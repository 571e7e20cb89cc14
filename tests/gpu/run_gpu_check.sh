#!/bin/sh
# End-to-end GPU check for a host with an NVIDIA GPU and its driver (see README.md here).
# Installs this checkout into a private venv, builds a plain Debian with debootstrap, imports it
# into a private registry and runtime folder, runs nvidia-smi and cuInit(0) inside, prints PASS/FAIL.
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /var/tmp/pywsl-gpu-check.XXXXXX)
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
export XDG_CONFIG_HOME="$WORK/config" XDG_DATA_HOME="$WORK/data" PYWSL_RUNTIME_ROOT="$WORK/run"
NAME=pywsl-gpu-check
cleanup() {
    [ -x "$WORK/venv/bin/pywsl" ] && "$WORK/venv/bin/pywsl" --unregister "$NAME" >/dev/null 2>&1
    [ -x "$WORK/venv/bin/pywsl" ] && "$WORK/venv/bin/pywsl" --shutdown --force >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root"
[ -e /dev/nvidiactl ] || fail "no /dev/nvidiactl: this host has no NVIDIA GPU driver loaded"
command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install debootstrap)"
python3 -m venv "$WORK/venv" || fail "python3 -m venv"
"$WORK/venv/bin/pip" install -q "$REPO" || fail "pip install"
debootstrap --variant=minbase --include=python3-minimal "$SUITE" "$WORK/rootfs" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || fail "debootstrap (see $WORK/debootstrap.log)"
tar -C "$WORK/rootfs" -czf "$WORK/debian.tar.gz" . || fail "tar"
"$WORK/venv/bin/pywsl" --import "$NAME" "$WORK/distro" "$WORK/debian.tar.gz" || fail "pywsl --import"
echo "--- nvidia-smi inside $NAME"
"$WORK/venv/bin/pywsl" -d "$NAME" -u root -- nvidia-smi || fail "nvidia-smi inside the distribution"
echo "--- cuInit(0) inside $NAME"
RESULT=$("$WORK/venv/bin/pywsl" -d "$NAME" -u root -- python3 -c \
    "import ctypes; print(ctypes.CDLL('libcuda.so.1').cuInit(0))") || fail "python3/libcuda inside"
[ "$RESULT" = 0 ] || fail "cuInit(0) returned $RESULT"
echo "PASS: nvidia-smi and cuInit(0) work inside a plain Debian distribution"
