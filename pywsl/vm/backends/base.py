"""The interface a utility VM backend implements (WSL's HCS compute system, abstracted).

``CoreVm`` speaks WSL's protocol to mini_init; a backend only knows how to start the VM, reach
its mini_init and stop it hard:

* ``namespaces`` (``backends/namespaces.py``): Linux namespaces, AF_UNIX, directories passed as
  file descriptors;
* ``qemu`` (``backends/qemu.py``): a real kernel in QEMU, channels multiplexed over a virtio-serial
  port;
* ``hcs`` (later): AF_HYPERV, disk images.
"""

from __future__ import annotations

import abc
import os
from pathlib import Path

from pywsl.vm.runtime_names import LOG_NAME as LOG_NAME
from pywsl.vm.runtime_names import SOCKET_NAME as SOCKET_NAME
from pywsl.wire import unix_sockets as socket  # `socket` without its enums

TYPE_CHECKING = False  # `typing` would cost a cold launch's boot its load
if TYPE_CHECKING:
    import _socket
    from typing import ClassVar

    from pywsl.vm.config import VmConfig  # a dataclass: not loaded by a launch

# What every backend keeps in a VM's runtime folder.
BACKEND_FILE_NAME = "qemu.vm"  # present while a qemu VM (or what it left) is in the runtime folder
_LOG_TAIL = 4000


def running_backend(runtime_dir: Path) -> str:
    """The backend of the VM (running, or left behind) in ``runtime_dir``: a qemu VM's monitor marks
    the folder while the VM runs (and a killed monitor leaves the mark for ``remove_leftovers``).
    Told without importing any backend, so that reaching a running VM stays cheap."""
    return "qemu" if os.path.lexists(Path(runtime_dir) / BACKEND_FILE_NAME) else "namespaces"


def log_tail(runtime_dir: Path) -> str:
    """The end of the VM's log, for an error message ("" when there is none)."""
    try:
        data = (Path(runtime_dir) / LOG_NAME).read_bytes()
    except OSError:
        return ""
    return data[-_LOG_TAIL:].decode("utf-8", "replace").strip()


class VmBackend(abc.ABC):
    """How a utility VM is started, reached and stopped."""

    name: ClassVar[str]

    def connect(self, runtime_dir: Path) -> _socket.socket | None:
        """A new connection to the running VM's mini_init, or None when no VM runs."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(Path(runtime_dir) / SOCKET_NAME))
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            return None
        except BaseException:
            sock.close()
            raise
        return sock

    @abc.abstractmethod
    def start(self, config: VmConfig) -> _socket.socket:
        """Boot the VM and return a connection to its mini_init (attach if one already runs)."""

    @abc.abstractmethod
    def kill(self, runtime_dir: Path) -> None:
        """Stop the VM at once (``HcsTerminateComputeSystem``); nothing if it does not run."""

    @abc.abstractmethod
    def wait_stopped(self, runtime_dir: Path, timeout: float) -> bool:
        """Wait until the VM and everything it left behind are gone; False on timeout."""

    @abc.abstractmethod
    def has_leftovers(self, runtime_dir: Path) -> bool:
        """True when a VM that is no more may have left something behind (a cheap check)."""

    @abc.abstractmethod
    def remove_leftovers(self, runtime_dir: Path, timeout: float = 0.0) -> bool:
        """Remove what a VM that stopped without its monitor left; False if something remains."""

    @abc.abstractmethod
    def directory_handle(self, path: Path) -> int:
        """A file descriptor for a directory that LaunchInit, Import or Export carry."""


def backend(name: str) -> VmBackend:
    """The backend called ``name``."""
    if name == "namespaces":
        from pywsl.vm.backends.namespaces import NamespacesBackend

        return NamespacesBackend()
    if name == "qemu":
        from pywsl.vm.backends.qemu import QemuBackend

        return QemuBackend()
    raise ValueError(f"unknown VM backend {name!r} (available: namespaces, qemu)")
