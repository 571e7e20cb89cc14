"""The guest kernel of the ``qemu`` backend: which image, its release and its modules tree.

``[wsl2] kernel`` names the image (WSL's custom kernel); without it the host's own
``/boot/vmlinuz-$(uname -r)`` is used when it is readable. ``[wsl2] kernelModules`` names the
modules tree for that kernel; without it ``/lib/modules/<release>``. The release is read from the
image itself (the x86 boot protocol's ``kernel_version`` string), so a kernel and a modules tree
that do not belong together are refused before anything boots.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from pywsl.vm.errors import VmError

__all__ = ["GuestKernel", "find_kernel", "kernel_release"]

HOST_BOOT_FOLDER = Path("/boot")
HOST_MODULES_FOLDER = Path("/lib/modules")
_SETUP_HEADER_MAGIC_OFFSET = 0x202  # "HdrS"
_KERNEL_VERSION_POINTER = 0x20E  # offset of the version string, minus 0x200
_HEADER_BYTES = 0x10000


@dataclass(frozen=True)
class GuestKernel:
    image: Path  # bzImage
    release: str  # e.g. "6.1.0-57-amd64" (what `uname -r` says inside)
    modules: Path | None  # /lib/modules/<release> of that kernel (None: built-in drivers only)


def kernel_release(image: Path) -> str:
    """The release of an x86 bzImage (its ``kernel_version`` string, first word)."""
    try:
        with open(image, "rb") as handle:
            header = handle.read(_HEADER_BYTES)
    except OSError as error:
        raise VmError(f"cannot read the kernel {image}: {error.strerror}") from None
    if header[_SETUP_HEADER_MAGIC_OFFSET : _SETUP_HEADER_MAGIC_OFFSET + 4] != b"HdrS":
        raise VmError(f"{image} is not an x86 Linux kernel image (bzImage)")
    (pointer,) = struct.unpack_from("<H", header, _KERNEL_VERSION_POINTER)
    start = pointer + 0x200
    end = header.find(b"\0", start)
    words = header[start:end].decode("ascii", "replace").split() if pointer and end > start else []
    if not words:
        raise VmError(f"{image} carries no kernel version string")
    return words[0]


def _modules_for(release: str, configured: Path | None) -> Path | None:
    if configured is not None:
        if not (configured / "modules.order").is_file() and not (configured / "kernel").is_dir():
            raise VmError(f"[wsl2] kernelModules {configured} is not a modules tree (no kernel/ folder)")
        return configured
    default = HOST_MODULES_FOLDER / release
    return default if default.is_dir() else None


def find_kernel(configured: Path | None = None, modules: Path | None = None) -> GuestKernel:
    """The kernel the VM boots: ``[wsl2] kernel``, else the host's own when readable."""
    if configured is not None:
        image = configured
    else:
        image = HOST_BOOT_FOLDER / f"vmlinuz-{os.uname().release}"
        if not os.access(image, os.R_OK):
            raise VmError(
                f"no kernel for the qemu backend: {image} is missing or unreadable; set "
                "[wsl2] kernel (and kernelModules) in the global configuration"
            )
    release = kernel_release(image)
    return GuestKernel(image=image, release=release, modules=_modules_for(release, modules))
