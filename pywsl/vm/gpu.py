"""The host's GPU user-space driver, found as the NVIDIA container toolkit finds it.

WSL shares the Windows GPU driver's libraries into every distribution at ``/usr/lib/wsl/lib``
(read-only), with ``nvidia-smi`` next to them. pywsl takes the host's own NVIDIA libraries: the
entries of the host's ``ldconfig -p`` whose names start with one of :data:`LIBRARY_PREFIXES`,
for the host's own architecture, plus ``nvidia-smi``. The VM binds them by path (the VM's mount
namespace is a copy of the host's) under their ``ldconfig`` name, e.g. ``libcuda.so.1``.

Nothing runs when the host has no GPU node (``/dev/nvidiactl`` or ``/dev/dri``): no GPU, nothing
changes. A file is only taken when it is a regular file owned by root that neither its group nor
others may write, so no host user can place a program or library into another user's
distributions.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

LIBRARY_PREFIXES = (
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-ml.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-nvvm.so",
    "libnvidia-opencl.so",
    "libnvidia-gpucomp.so",
    "libnvidia-allocator.so",
    "libnvidia-cfg.so",
    "libnvidia-pkcs11.so",
    "libnvidia-pkcs11-openssl3.so",
    "libnvidia-encode.so",
    "libnvcuvid.so",
    "libnvidia-opticalflow.so",
    "libnvidia-fatbinaryloader.so",
    "libnvidia-compiler.so",
)
PROGRAMS = ("nvidia-smi",)
PROGRAM_FOLDERS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin")
LDCONFIG_CANDIDATES = ("/sbin/ldconfig", "/usr/sbin/ldconfig")
LDCONFIG_TIMEOUT = 5.0
MAX_LDCONFIG_OUTPUT = 4 * 1024 * 1024
# ldconfig's name for the native ABI of each machine (the part after "libc6," in its listing).
_ABI = {"x86_64": "x86-64", "aarch64": "AArch64", "ppc64le": "64bit", "riscv64": "64bit"}

GpuFiles = tuple[tuple[str, str], ...]  # (name in /usr/lib/wsl/lib, host path)


def host_has_gpu(dev_root: Path = Path("/dev")) -> bool:
    """True when the host has an NVIDIA control node or a DRI folder with nodes."""
    if (dev_root / "nvidiactl").exists():
        return True
    try:
        return any(True for _ in os.scandir(dev_root / "dri"))
    except OSError:
        return False


def parse_ldconfig(text: str, machine: str | None = None) -> GpuFiles:
    """The GPU libraries in ``ldconfig -p`` output, for the native ABI of ``machine``; first entry wins."""
    abi = _ABI.get(machine or os.uname().machine)
    found: dict[str, str] = {}
    for line in text.splitlines():
        left, separator, path = line.partition(" => ")
        if not separator:
            continue
        name, _, flags = left.strip().partition(" ")
        flags = flags.strip().strip("()")
        path = path.strip()
        if abi is not None and abi not in flags.split(","):
            continue
        if not path.startswith("/") or name in found or "/" in name:
            continue
        if any(name == prefix or name.startswith(prefix + ".") for prefix in LIBRARY_PREFIXES):
            found[name] = path
    return tuple(sorted(found.items()))


def trusted_file(path: str) -> bool:
    """A regular file (after links) owned by root that its group and others cannot write."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == 0 and not info.st_mode & 0o022


def find_programs(folders: tuple[str, ...] = PROGRAM_FOLDERS) -> GpuFiles:
    """``nvidia-smi`` from the host's system folders, when there is a trusted one."""
    found: list[tuple[str, str]] = []
    for name in PROGRAMS:
        for folder in folders:
            path = f"{folder}/{name}"
            if trusted_file(path):
                found.append((name, path))
                break
    return tuple(found)


def _ldconfig_listing() -> str:
    import subprocess  # only on a host with a GPU (`discover_gpu_libraries`)

    for candidate in LDCONFIG_CANDIDATES:
        if not trusted_file(candidate):
            continue
        try:
            result = subprocess.run(
                [candidate, "-p"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=LDCONFIG_TIMEOUT,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        return result.stdout[:MAX_LDCONFIG_OUTPUT].decode("utf-8", "replace")
    return ""


def discover_gpu_libraries(
    dev_root: Path = Path("/dev"),
    listing: str | None = None,
    program_folders: tuple[str, ...] = PROGRAM_FOLDERS,
) -> GpuFiles:
    """What goes to ``/usr/lib/wsl/lib``; empty (and nothing run) when the host has no GPU."""
    if not host_has_gpu(dev_root):
        return ()
    text = _ldconfig_listing() if listing is None else listing
    libraries = tuple((name, path) for name, path in parse_ldconfig(text) if trusted_file(path))
    return libraries + find_programs(program_folders)
