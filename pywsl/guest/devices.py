"""The device nodes and GPU files a distribution gets beyond ``/dev/null`` and friends, as mount steps.

Every WSL distribution has ``/dev/fuse`` and ``/dev/net/tun``, ``/dev/kvm`` when nested
virtualisation is on (``.wslconfig [wsl2] nestedVirtualization``, default true), and, with GPU
support (``[wsl2] gpuSupport`` and the distribution's ``[gpu] enabled``), the GPU's nodes and its
user-space driver at ``/usr/lib/wsl/lib``. pywsl never creates a device node and never mounts a
devtmpfs: each node the VM's ``/dev`` (the host's) has is bind-mounted into the distribution's
``/dev`` tmpfs, so the host's own owner and mode apply unchanged. The host groups that own those
nodes (``kvm``, ``video``, ``render``) are mapped into the VM when its owner belongs to them
(``pywsl.vm.idmap``), so a distribution's users in a group of the same number use them as the
host's group allows, and nobody else does.

GPU libraries are found on the host (``pywsl.vm.gpu``) and passed to the VM by path; here they are
bind-mounted read-only, one file per library name, onto a tmpfs at :data:`GPU_LIBRARY_DIR`, which
is made read-only once filled.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence

from pywsl.guest import forking, syscalls
from pywsl.guest import lean_signal as signal
from pywsl.guest.mounts import Mount, Restrict, Step, apply_plan
from pywsl.guest.rootfs import write_file_atomic

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass
else:
    from pywsl.records import dataclass

GPU_LIBRARY_DIR = "/usr/lib/wsl/lib"
GPU_LOADER_CONF = "/etc/ld.so.conf.d/ld.wsl.conf"
# Nodes every distribution gets when the VM has them (path below /dev).
ALWAYS = ("fuse", "net/tun")
KVM = "kvm"
# The /proc files lxcfs computes from the reader's cgroups.
LXCFS_PROC_FILES = ("meminfo", "cpuinfo", "stat", "uptime", "swaps", "loadavg", "diskstats")
NVIDIA_CAPS = "nvidia-caps"
MAX_GPU_NODES = 256
LDCONFIG_PATHS = ("/sbin/ldconfig", "/usr/sbin/ldconfig")
LDCONFIG_TIMEOUT = 30.0


@dataclass(frozen=True)
class DeviceSettings:
    """The VM-wide device settings (boot arguments); each distribution may turn the GPU off."""

    nested_virtualization: bool = True
    gpu_support: bool = True
    gpu_libraries: tuple[tuple[str, str], ...] = ()  # (file name in GPU_LIBRARY_DIR, VM path)
    lxcfs: str | None = None  # where root's lxcfs is mounted (``pywsl.vm.lxcfs``)


def _is_char_device(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _is_nvidia_node(name: str) -> bool:
    if name in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"):
        return True
    return name.startswith("nvidia") and name[len("nvidia") :].isdigit()


def gpu_device_nodes(dev_root: str = "/dev") -> list[str]:
    """The GPU nodes under ``dev_root`` (paths relative to it): ``dri/*``, ``nvidia*``, ``nvidia-caps/*``."""
    found: list[str] = []
    try:
        names = sorted(os.listdir(dev_root))
    except OSError:
        return []
    for name in names:
        if _is_nvidia_node(name) and _is_char_device(f"{dev_root}/{name}"):
            found.append(name)
    for folder in ("dri", NVIDIA_CAPS):
        try:
            entries = sorted(os.listdir(f"{dev_root}/{folder}"))
        except OSError:
            continue
        found += [f"{folder}/{name}" for name in entries if _is_char_device(f"{dev_root}/{folder}/{name}")]
    return found[:MAX_GPU_NODES]


def has_gpu(dev_root: str = "/dev") -> bool:
    """True when the VM's ``/dev`` has an NVIDIA control node or a DRI node."""
    return bool(gpu_device_nodes(dev_root))


def device_nodes(settings: DeviceSettings, gpu_enabled: bool, dev_root: str = "/dev") -> list[str]:
    """The nodes (relative to ``/dev``) a distribution gets besides the basic ones."""
    wanted = list(ALWAYS)
    if settings.nested_virtualization:
        wanted.append(KVM)
    present = [name for name in wanted if _is_char_device(f"{dev_root}/{name}")]
    if settings.gpu_support and gpu_enabled:
        present += gpu_device_nodes(dev_root)
    return present


def device_plan(nodes: Sequence[str]) -> list[Step]:
    """Bind mounts of the VM's ``/dev/<node>`` onto the distribution's ``/dev`` tmpfs."""
    return [Mount(f"/dev/{name}", source=f"/dev/{name}", file=True) for name in nodes]


def gpu_library_plan(libraries: Sequence[tuple[str, str]]) -> list[Step]:
    """``/usr/lib/wsl/lib``: a tmpfs with each library bound read-only under its name, then read-only."""
    if not libraries:
        return []
    steps: list[Step] = [
        Mount(
            GPU_LIBRARY_DIR,
            "tmpfs",
            "tmpfs",
            "mode=755,size=64k,nr_inodes=1024",
            syscalls.MS_NOSUID | syscalls.MS_NODEV,
        )
    ]
    seen: set[str] = set()
    for name, source in libraries:
        if not _plain_name(name) or name in seen:
            continue
        seen.add(name)
        steps.append(Mount(f"{GPU_LIBRARY_DIR}/{name}", source=source, file=True, read_only=True))
    steps.append(Restrict(GPU_LIBRARY_DIR, syscalls.MOUNT_ATTR_RDONLY))
    return steps


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..") and "\0" not in name


def lxcfs_plan(lxcfs_root: str | None) -> list[Step]:
    """lxcfs' ``/proc`` files over the distribution's own (those lxcfs serves)."""
    if lxcfs_root is None:
        return []
    return [
        Mount(f"/proc/{name}", source=f"{lxcfs_root}/proc/{name}", file=True)
        for name in LXCFS_PROC_FILES
        if os.path.isfile(f"{lxcfs_root}/proc/{name}")
    ]


def distribution_devices(settings: DeviceSettings, gpu_enabled: bool, dev_root: str = "/dev") -> list[Step]:
    """Every device, GPU and lxcfs step of one distribution's start (after its /proc and /dev)."""
    steps = device_plan(device_nodes(settings, gpu_enabled, dev_root))
    if gpu_active(settings, gpu_enabled, dev_root):
        steps += gpu_library_plan(settings.gpu_libraries)
    return steps + lxcfs_plan(settings.lxcfs)


def gpu_active(settings: DeviceSettings, gpu_enabled: bool, dev_root: str = "/dev") -> bool:
    """GPU support on in the VM and the distribution, with GPU nodes and libraries to share."""
    return settings.gpu_support and gpu_enabled and bool(settings.gpu_libraries) and has_gpu(dev_root)


def apply_devices(root_fd: int, settings: DeviceSettings, gpu_enabled: bool) -> list[str]:
    """Apply :func:`distribution_devices` under ``root_fd`` one step at a time; failures are warnings."""
    warnings: list[str] = []
    for step in distribution_devices(settings, gpu_enabled):
        try:
            apply_plan(root_fd, [step])
        except OSError as error:
            warnings.append(f"{error.strerror or error}")
    return warnings


# Set by init when /usr/lib/wsl/lib is mounted and [gpu] appendLibPath is on; the session leaders
# and relays it forks inherit it.
_append_library_path = False


def configure_loader(append_library_path: bool, run_ldconfig: bool) -> list[str]:
    """After ``pivot_root``, with ``/usr/lib/wsl/lib`` mounted: the loader configuration (WSL's
    ``ld.wsl.conf``) and, as ``[automount] ldconfig`` asks, the distribution's ``ldconfig``."""
    global _append_library_path
    if not append_library_path:
        return []
    _append_library_path = True
    warnings: list[str] = []
    try:
        os.makedirs(os.path.dirname(GPU_LOADER_CONF), mode=0o755, exist_ok=True)
        write_file_atomic(GPU_LOADER_CONF, f"{GPU_LIBRARY_DIR}\n".encode())
    except OSError as error:
        return [f"cannot write {GPU_LOADER_CONF}: {error.strerror or error}"]
    if run_ldconfig:
        problem = _run_ldconfig()
        if problem is not None:
            warnings.append(problem)
    return warnings


def _run_ldconfig() -> str | None:
    program = next((path for path in LDCONFIG_PATHS if os.path.isfile(path)), None)
    if program is None:
        return None  # no loader cache in this distribution (busybox, musl): nothing to refresh
    pid = os.fork()
    if pid == 0:
        try:
            forking.become_child([])
            os.execve(program, [program], {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        finally:
            forking.exit_now(127)
    deadline = time.monotonic() + LDCONFIG_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = forking.exit_code(status)
            return None if code == 0 else f"{program} exited with {code}"
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"{program} did not finish within {LDCONFIG_TIMEOUT:g} s"
        time.sleep(0.01)


def launch_path(path: str) -> str:
    """A launched process's PATH, with ``/usr/lib/wsl/lib`` appended when the GPU's programs are there."""
    if not _append_library_path or GPU_LIBRARY_DIR in path.split(":"):
        return path
    return f"{path}:{GPU_LIBRARY_DIR}" if path else GPU_LIBRARY_DIR


def parse_gpu_library(text: str) -> tuple[str, str]:
    """A ``--gpu-library`` boot argument, ``name=/path``."""
    name, separator, path = text.partition("=")
    if not separator or not _plain_name(name) or not path.startswith("/"):
        raise ValueError(f"{text!r} is not name=/absolute/path")
    return name, path
