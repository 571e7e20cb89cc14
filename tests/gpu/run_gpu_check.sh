#!/bin/sh
# End-to-end GPU check for a host with an NVIDIA GPU and its driver (see README.md here).
# Imports a plain Debian (built with debootstrap, or the archive ROOTFS names) into a private
# registry and runtime folder, then inside it: lists the GPU's files, runs nvidia-smi, and runs a
# CUDA kernel through the driver (cuda_check.c), comparing its result. Prints PASS or FAIL.
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d /var/tmp/pywsl-gpu-check.XXXXXX)
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
ROOTFS=${ROOTFS:-}
PYWSL_PYTHON=${PYWSL_PYTHON:-}
CUDA_CHECK=${CUDA_CHECK:-}
export XDG_CONFIG_HOME="$WORK/config" XDG_DATA_HOME="$WORK/data" PYWSL_RUNTIME_ROOT="$WORK/run"
NAME=pywsl-gpu-check
pywsl() {
    if [ -n "$PYWSL_PYTHON" ]; then
        PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYWSL_PYTHON" -m pywsl.cli.main "$@"
    else
        "$WORK/venv/bin/pywsl" "$@"
    fi
}
cleanup() {
    if [ -n "$PYWSL_PYTHON" ] || [ -x "$WORK/venv/bin/pywsl" ]; then
        pywsl --unregister "$NAME" >/dev/null 2>&1
        pywsl --shutdown --force >/dev/null 2>&1
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for log in "$WORK"/run/*/mini_init.log; do
        [ -f "$log" ] && { echo "--- the VM's log, last lines"; tail -n 40 "$log"; }
    done
    exit 1
}

[ "$(id -u)" = 0 ] || fail "run as root"
[ -e /dev/nvidiactl ] || fail "no /dev/nvidiactl: this host has no NVIDIA GPU driver loaded"
if [ -n "$PYWSL_PYTHON" ]; then
    "$PYWSL_PYTHON" -c 'import click, construct, rich' || fail "$PYWSL_PYTHON lacks click, construct or rich"
else
    python3 -m venv "$WORK/venv" || fail "python3 -m venv"
    "$WORK/venv/bin/pip" install -q "$REPO" || fail "pip install"
fi
if [ -z "$CUDA_CHECK" ]; then
    command -v cc >/dev/null || fail "no C compiler for cuda_check.c (install gcc, or name a built one in CUDA_CHECK)"
    CUDA_CHECK="$WORK/cuda-check"
    cc -O2 -o "$CUDA_CHECK" "$REPO/tests/gpu/cuda_check.c" -ldl || fail "cc cuda_check.c"
fi
if [ -z "$ROOTFS" ]; then
    command -v debootstrap >/dev/null || fail "debootstrap is not installed (apt-get install debootstrap), or name an archive in ROOTFS"
    debootstrap --variant=minbase "$SUITE" "$WORK/rootfs" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1 || fail "debootstrap (see $WORK/debootstrap.log)"
    ROOTFS="$WORK/debian.tar.gz"
    tar -C "$WORK/rootfs" -czf "$ROOTFS" . || fail "tar"
fi
pywsl --import "$NAME" "$WORK/distro" "$ROOTFS" || fail "pywsl --import"
echo "--- the GPU's files inside $NAME"
pywsl -d "$NAME" -u root -e sh -c 'ls -l /dev/nvidia* /dev/dri /usr/lib/wsl/lib; cat /etc/ld.so.conf.d/ld.wsl.conf; ldconfig -p | grep -c /usr/lib/wsl/lib' \
    || fail "the GPU's files inside the distribution"
echo "--- nvidia-smi inside $NAME"
pywsl -d "$NAME" -u root -- nvidia-smi || fail "nvidia-smi inside the distribution"
echo "--- a CUDA kernel inside $NAME (as root, then as an ordinary user)"
pywsl -d "$NAME" -u root -e sh -c 'cat >/usr/local/bin/cuda-check && chmod 755 /usr/local/bin/cuda-check' <"$CUDA_CHECK" \
    || fail "copying cuda-check into the distribution"
pywsl -d "$NAME" -u root -- cuda-check || fail "cuda-check as root inside the distribution"
pywsl -d "$NAME" -u root -- useradd -m gpu-check-user || fail "useradd inside the distribution"
pywsl -d "$NAME" -u gpu-check-user -- cuda-check || fail "cuda-check as an ordinary user inside the distribution"
echo "PASS: the GPU's nodes and driver, nvidia-smi and a CUDA kernel work inside a plain Debian distribution"
