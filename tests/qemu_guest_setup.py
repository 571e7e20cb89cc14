"""What the qemu backend's tests need on the host: QEMU and a Debian kernel, fetched once.

``python tests/qemu_guest_setup.py [CACHE]`` (CI runs it once per run) and the tests' fixture
both call `ensure_qemu` and `ensure_kernel`: QEMU comes from Debian's ``qemu-system-x86`` and
``qemu-utils``; the kernel is Debian's ``linux-image-amd64`` dependency, downloaded with
``apt-get download`` and unpacked with ``dpkg -x`` into the cache folder (nothing is installed
system-wide). A second call finds the unpacked kernel and does nothing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

QEMU = "qemu-system-x86_64"
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "pywsl-qemu-kernel"
APT_TIMEOUT = 600


def ensure_qemu() -> str | None:
    """The QEMU binary, installing Debian's packages if needed; None (with the reason printed) when
    they cannot be installed here."""
    found = shutil.which(QEMU)
    if found is not None:
        return found
    if shutil.which("apt-get") is None:
        print("no apt-get: cannot install qemu-system-x86", file=sys.stderr)
        return None
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "qemu-system-x86", "qemu-utils"],
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        print(f"apt-get install qemu-system-x86 failed: {result.stderr.strip()[-2000:]}", file=sys.stderr)
        return None
    return shutil.which(QEMU)


def _kernel_package() -> str:
    """``linux-image-<version>-amd64``: what Debian's ``linux-image-amd64`` depends on."""
    output = subprocess.run(
        ["apt-cache", "depends", "linux-image-amd64"],
        capture_output=True,
        text=True,
        timeout=APT_TIMEOUT,
        check=True,
    ).stdout
    for line in output.splitlines():
        word = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and word.startswith("linux-image-"):
            return word
    raise RuntimeError("apt-cache names no kernel package for linux-image-amd64")


def ensure_kernel(cache: Path = DEFAULT_CACHE) -> tuple[Path, Path]:
    """(kernel image, modules tree) of Debian's current kernel, unpacked under ``cache``."""
    package = _kernel_package()
    release = package.removeprefix("linux-image-")
    root = cache / package
    image, modules = root / "boot" / f"vmlinuz-{release}", root / "lib" / "modules" / release
    if image.is_file() and modules.is_dir():
        return image, modules
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        subprocess.run(
            ["apt-get", "download", "-qq", package],
            cwd=work,
            capture_output=True,
            timeout=APT_TIMEOUT,
            check=True,
        )
        (deb,) = Path(work).glob("*.deb")
        unpacked = Path(work) / "root"
        subprocess.run(["dpkg", "-x", str(deb), str(unpacked)], timeout=APT_TIMEOUT, check=True)
        if root.exists():
            shutil.rmtree(root)
        unpacked.rename(root)
    return image, modules


if __name__ == "__main__":
    if ensure_qemu() is None:
        sys.exit(1)
    print(*ensure_kernel(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CACHE))
