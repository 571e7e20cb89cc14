"""The initramfs of the ``qemu`` backend, built once per kernel and cached.

It holds only what the guest needs to reach pid 1: a static busybox (``/busybox``), the kernel
modules for virtio-mmio, the virtio console (the channel port), 9p (the host's ``/usr`` and
pywsl's own folders, shared read-only), virtiofs, the NIC and virtio-blk (the swap disk), each
with its dependencies in load order (from ``modules.dep``, or from the modules' own ``.modinfo``
when the tree has no ``modules.dep``), and ``/init``, a shell script that mounts them (and, over
virtiofs, the shared distributions folder and the host's files), turns the swap disk
(``[wsl2] swap``, ``/dev/vda``) into swap, sets up the network for ``networkingMode=NAT`` (QEMU's
user networking: 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3) and execs the host's Python on
``pywsl.guest.vm_pid1``. Per-VM settings travel on the kernel command line (``PYWSL_*`` words,
which the kernel hands to ``/init`` as environment variables).

The archive is a gzip'd ``newc`` cpio, cached as ``<cache>/initramfs-<key>.img`` where the key
hashes everything in it: the kernel release, the modules (path, size, time), busybox and ``/init``
(pywsl itself is not in the archive: the guest imports it from the host's folder).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import lzma
import os
import stat
import struct
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pywsl.vm.errors import VmError
from pywsl.vm.kernel import GuestKernel

__all__ = ["GUEST_MODULES", "build_initramfs", "find_busybox", "init_script", "resolve_modules"]

FORMAT_VERSION = "4"
# What the guest loads, in this order (each after its dependencies).
GUEST_MODULES = (
    "virtio_mmio",
    "virtio_console",
    "9pnet_virtio",
    "9p",
    "virtiofs",
    "virtio_net",
    "virtio_blk",
    "virtio_scsi",  # disks attached while the VM runs (distributions on disks, --mount)
    "sd_mod",
    "crc32c_generic",  # ext4's checksums (a soft dependency: loaded before ext4)
    "ext4",
)
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
GUEST_PID1_ARGV = ("-S", "-m", "pywsl.guest.vm_pid1")
SHARE_MOUNT_OPTIONS = "trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144"
DISTRIBUTIONS_TAG = "pywsl.dist"
DISTRIBUTIONS_FOLDER = "/run/pywsl/distributions"
HOST_FILES_TAG = "pywsl.host"
HOST_FILES_FOLDER = "/run/pywsl/host"
NAT_ADDRESS = "10.0.2.15/24"
NAT_GATEWAY = "10.0.2.2"
NAT_DNS = "10.0.2.3"


def init_script() -> str:
    """``/init``: load the modules, mount the basics and the shares on a tmpfs root, exec pid 1.

    The initramfs itself cannot be the root of the VM: ``pivot_root`` (which every instance's init
    does) refuses to move the initial root filesystem away, so ``/init`` builds the real root on a
    tmpfs and ``switch_root``s into it. Any failure ends ``/init``: the kernel panics, reboots
    (``panic=-1``) and QEMU exits (``-no-reboot``), so a broken boot never leaves a VM that does
    not answer.
    """
    pid1 = " ".join(GUEST_PID1_ARGV)
    return f"""#!/busybox sh
b=/busybox
r=/root
fail() {{ echo "pywsl initramfs: $*" >&2; exit 1; }}
$b mount -t proc proc /proc || fail "cannot mount /proc"
$b mount -t sysfs sysfs /sys || fail "cannot mount /sys"
$b mount -t devtmpfs devtmpfs /dev || fail "cannot mount /dev"
while read -r module; do
    $b insmod "/modules/$module" || fail "cannot load $module"
done < /modules.list
$b mount -t tmpfs -o mode=0755 tmpfs $r || fail "cannot mount the root"
for folder in dev proc sys usr run tmp etc mnt; do $b mkdir -p "$r/$folder"; done
for link in bin sbin lib lib64; do $b ln -s "usr/$link" "$r/$link"; done
$b cp /busybox $r/busybox
$b mount --move /proc $r/proc && $b mount --move /sys $r/sys && $b mount --move /dev $r/dev \
    || fail "cannot move /proc, /sys and /dev"
$b mount -t tmpfs -o mode=0755 tmpfs $r/run || fail "cannot mount /run"
$b mount -t tmpfs -o mode=1777 tmpfs $r/tmp || fail "cannot mount /tmp"
$b mount -t 9p -o {SHARE_MOUNT_OPTIONS} usr $r/usr || fail "cannot mount the host's /usr"
paths=""
i=0
while [ "$i" -lt "${{PYWSL_SHARES:-0}}" ]; do
    $b mkdir -p "$r/run/pywsl/share$i"
    $b mount -t 9p -o {SHARE_MOUNT_OPTIONS} "pywsl$i" "$r/run/pywsl/share$i" || fail "cannot mount share $i"
    paths="$paths${{paths:+:}}/run/pywsl/share$i"
    i=$((i + 1))
done
$b mkdir -p $r{DISTRIBUTIONS_FOLDER}
if [ "$PYWSL_DISTRIBUTIONS" = 1 ]; then
    $b mount -t virtiofs {DISTRIBUTIONS_TAG} $r{DISTRIBUTIONS_FOLDER} || fail "cannot mount the distributions"
fi
$b mkdir -p $r{HOST_FILES_FOLDER}
if [ "$PYWSL_HOST_FILES" = 1 ]; then
    $b mount -t virtiofs -o nosuid,nodev {HOST_FILES_TAG} $r{HOST_FILES_FOLDER} \
        || fail "cannot mount the host's files"
fi
if [ "$PYWSL_SWAP" = 1 ]; then
    i=0
    while [ ! -b $r/dev/vda ] && [ "$i" -lt 200 ]; do $b usleep 10000; i=$((i + 1)); done
    {{ $b mkswap $r/dev/vda >/dev/null && $b swapon $r/dev/vda; }} || echo "pywsl initramfs: no swap" >&2
fi
$b ip link set lo up
: > $r/etc/resolv.conf
if [ "$PYWSL_NETWORK" = nat ]; then
    $b ip addr add {NAT_ADDRESS} dev eth0 || fail "cannot configure eth0"
    $b ip link set eth0 up || fail "cannot bring eth0 up"
    $b ip route add default via {NAT_GATEWAY} || fail "cannot add the default route"
    echo "nameserver {NAT_DNS}" > $r/etc/resolv.conf
fi
[ -n "$PYWSL_PYTHON" ] || fail "no PYWSL_PYTHON on the kernel command line"
export PYTHONPATH="$paths" PYTHONDONTWRITEBYTECODE=1 LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin
exec $b switch_root $r "$PYWSL_PYTHON" {pid1}
"""


def find_busybox() -> Path:
    """A static busybox of the host (Debian's ``busybox-static``)."""
    for candidate in BUSYBOX_CANDIDATES:
        try:
            with open(candidate, "rb") as handle:
                head = handle.read(4096)
        except OSError:
            continue
        if head.startswith(b"\x7fELF") and not _has_interpreter(candidate):
            return candidate
    raise VmError("the qemu backend needs a static busybox (install busybox-static)")


def _has_interpreter(path: Path) -> bool:
    """True for a dynamically linked ELF (it has a PT_INTERP program header)."""
    with open(path, "rb") as handle:
        header = handle.read(64)
        if header[4] != 2:  # not ELF64
            return True
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        handle.seek(phoff)
        table = handle.read(phentsize * phnum)
    return any(struct.unpack_from("<I", table, index * phentsize)[0] == 3 for index in range(phnum))


def _module_name(path: str) -> str:
    name = os.path.basename(path)
    for suffix in (".xz", ".gz", ".zst"):
        name = name.removesuffix(suffix)
    return name.removesuffix(".ko").replace("-", "_")


def _readable_by_everyone(fd: int, path: Path) -> None:
    """Refuse a module file not every user may read: the tree may be a user's (``[wsl2]
    kernelModules``) and is read with root's rights, so what goes into the VM is only what the
    VM's owner could read anyway. Checked on the opened file and the folders of its real path
    (``/proc/self/fd``): a folder or file of another user that is not open to all stops it."""
    real = Path(os.readlink(f"/proc/self/fd/{fd}"))
    if not os.fstat(fd).st_mode & stat.S_IROTH:
        raise VmError(f"the kernel module {path} ({real}) is not readable by every user")
    for folder in real.parents:
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            raise VmError(f"the kernel module {path} is in {folder}, which not every user may enter")


def _read_module(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise VmError(f"cannot read the kernel module {path}: {error.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VmError(f"the kernel module {path} is not a regular file")
        _readable_by_everyone(fd, path)
        os.set_blocking(fd, True)
        data = handle.read()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise VmError(f"{path}: zstd-compressed modules are not supported; use an uncompressed modules tree")
    return data


def _modinfo_depends(data: bytes) -> list[str]:
    """The ``depends=`` entry of a module's ``.modinfo`` ELF section."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return []
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        base = shoff + index * shentsize
        (name,) = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _name, names_offset, _size = section(shstrndx)
    for index in range(shnum):
        name, offset, size = section(index)
        end = data.index(b"\0", names_offset + name)
        if data[names_offset + name : end] == b".modinfo":
            for entry in data[offset : offset + size].split(b"\0"):
                if entry.startswith(b"depends="):
                    return [item for item in entry[8:].decode().split(",") if item]
    return []


def _dependency_table(modules: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (relative path, names it depends on)."""
    table: dict[str, tuple[str, list[str]]] = {}
    dep_file = modules / "modules.dep"
    if dep_file.is_file():
        for line in dep_file.read_text().splitlines():
            target, _colon, depends = line.partition(":")
            if target:
                table[_module_name(target)] = (target, [_module_name(item) for item in depends.split()])
        return table
    for path in (modules / "kernel").rglob("*.ko*"):
        relative = str(path.relative_to(modules))
        table[_module_name(relative)] = (relative, _modinfo_depends(_read_module(path)))
    return table


def _builtin(modules: Path) -> set[str]:
    try:
        return {_module_name(line) for line in (modules / "modules.builtin").read_text().split()}
    except OSError:
        return set()


def resolve_modules(modules: Path | None, wanted: Iterable[str] = GUEST_MODULES) -> list[str]:
    """The relative paths of the modules to load for ``wanted``, dependencies first (built-in ones
    are skipped). A module that is neither built in nor in the tree is an error."""
    if modules is None:
        return []
    table = _dependency_table(modules)
    builtin = _builtin(modules)
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = name.replace("-", "_")  # a module's name and its file's differ so (t10-pi)
        if name in seen or name in builtin:
            return
        if name in chain:
            raise VmError(f"kernel modules: dependency cycle through {name}")
        entry = table.get(name)
        if entry is None:
            raise VmError(f"kernel module {name} is neither built into the kernel nor in {modules}")
        for dependency in entry[1]:
            visit(dependency, (*chain, name))
        seen.add(name)
        order.append(entry[0])

    for name in wanted:
        visit(name.replace("-", "_"), ())
    return order


class _Cpio:
    """A ``newc`` cpio archive being written."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.inode = 1

    def add(self, name: str, mode: int, data: bytes = b"") -> None:
        encoded = name.encode() + b"\0"
        fields = (self.inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        self.buffer.write(b"070701" + b"".join(b"%08X" % value for value in fields))
        self.buffer.write(encoded)
        self._pad()
        self.buffer.write(data)
        self._pad()
        self.inode += 1

    def _pad(self) -> None:
        self.buffer.write(b"\0" * (-self.buffer.tell() % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.buffer.getvalue()


def _archive(kernel: GuestKernel, module_paths: list[str], busybox: bytes, script: str) -> bytes:
    cpio = _Cpio()
    for folder in ("dev", "proc", "sys", "root", "modules"):
        cpio.add(folder, stat.S_IFDIR | 0o755)
    cpio.add("busybox", stat.S_IFREG | 0o755, busybox)
    cpio.add("init", stat.S_IFREG | 0o755, script.encode())
    names = []
    for relative in module_paths:
        assert kernel.modules is not None
        name = _module_name(relative) + ".ko"
        cpio.add(f"modules/{name}", stat.S_IFREG | 0o644, _read_module(kernel.modules / relative))
        names.append(name)
    cpio.add("modules.list", stat.S_IFREG | 0o644, "".join(f"{name}\n" for name in names).encode())
    return gzip.compress(cpio.finish(), compresslevel=1, mtime=0)


def _cache_key(kernel: GuestKernel, module_paths: list[str], busybox: bytes, script: str) -> str:
    digest = hashlib.sha256()
    for part in (FORMAT_VERSION, kernel.release, script):
        digest.update(part.encode() + b"\0")
    digest.update(hashlib.sha256(busybox).digest())
    for relative in module_paths:
        assert kernel.modules is not None
        info = os.stat(kernel.modules / relative)
        digest.update(f"{relative}\0{info.st_size}\0{info.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:24]


def build_initramfs(kernel: GuestKernel, cache: Path) -> Path:
    """The cached initramfs for ``kernel`` (built on first use)."""
    module_paths = resolve_modules(kernel.modules)
    busybox = find_busybox().read_bytes()
    script = init_script()
    target = cache / f"initramfs-{_cache_key(kernel, module_paths, busybox, script)}.img"
    if target.is_file():
        return target
    cache.mkdir(mode=0o755, parents=True, exist_ok=True)
    data = _archive(kernel, module_paths, busybox, script)
    fd, temporary = tempfile.mkstemp(dir=cache, prefix=".initramfs-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    return target
