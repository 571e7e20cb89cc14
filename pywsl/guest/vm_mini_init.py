"""mini_init inside a real VM (the ``qemu`` backend): the same ``MiniInit`` as the namespaces
backend, with what the VM monitor gives it there made here.

* **Boot arguments** come from the kernel command line (the kernel hands the ``PYWSL_*`` words to
  pid 1 as environment variables): ``PYWSL_VM_IDLE_TIMEOUT`` and ``PYWSL_INSTANCE_IDLE_TIMEOUT``
  (ms, negative = never). The instances share the VM's network (QEMU's user networking, or none).
* **Mount trees**: a directory the host named is a folder of the shared distributions folder,
  opened here by the port demultiplexer; it belongs to this kernel, so pid 1 clones it itself
  (``LocalCloner``), where the namespaces backend asks its monitor.
* **/mnt/host**: the host's tree the monitor's second file server serves (``/run/pywsl/host``,
  the host's ``/proc``, ``/sys`` and ``/dev`` masked there, seen with the VM's mapped ids); an
  empty read-only tmpfs when it is not served.
* **The monitor's socket**: the demultiplexer's process holds the other end, so pid 1 stops the
  VM when the demultiplexer (the VM's only way to the host) is gone, as mini_init does when its
  monitor dies.
* **Interop**: an interop connection goes to the demultiplexer (on the watch socket), which
  opens a channel to the host for it (``port_demux``); the host's interop worker, the VM's
  owner, runs the program. When the demultiplexer cannot take it, the request is answered at
  once with ``EOPNOTSUPP`` (the caller prints "cannot run <program> on the host: Operation not
  supported"), without waiting on the caller.
"""

from __future__ import annotations

import errno
import os
import struct

from pywsl.guest import guest_log, interop_messages, mini_init, mounts, syscalls
from pywsl.guest.boot import BootArguments
from pywsl.guest.devices import DeviceSettings
from pywsl.guest.port_demux import DISK_RELEASED
from pywsl.guest.vm_monitor import TreeCloner, VmContext
from pywsl.wire import unix_sockets as socket

log = guest_log.getLogger("pywsl.vm_mini_init")

DEFAULT_VM_IDLE_TIMEOUT_MS = 60_000
DEFAULT_INSTANCE_IDLE_TIMEOUT_MS = 15_000
HOST_FILES_PATH = "/run/pywsl/host"  # the host's files, when the host serves them (initramfs)
HOST_TREE_PATH = "/run/pywsl/empty-host"
_FULL_RANGE = [(0, 0, (1 << 32) - 1)]
_MAX_DRAIN_READS = 32  # what an interop caller sent before its refusal (a request is ~1 MiB at most)
_kept: list[socket.socket] = []  # the ready socket's peer: mini_init reports once, nobody reads


def _environment_ms(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


class LocalCloner(TreeCloner):
    """The clone service of pid 1 in a real VM: the directories are this kernel's own. Its socket
    (``fileno``) is the demultiplexer's watch socket: readable (closed) when that process is gone."""

    def clone(self, fd: int) -> int:
        return mounts.clone_tree(fd)

    def forward_interop(self, fd: int) -> None:
        """Pass an interop connection to the demultiplexer (``fd`` stays the caller's to close)."""
        try:
            socket.send_fds(self.sock, [b"I"], [fd], socket.MSG_DONTWAIT)
        except OSError as error:
            log.warning("interop: the port demultiplexer cannot take a request: %s", error)
            refuse_interop(fd)

    def release_disk(self, lun: int) -> None:
        """Tell the demultiplexer (and through it the host) that a use of the disk at ``lun`` ended."""
        self.sock.sendall(DISK_RELEASED + struct.pack("<I", lun))


def refuse_interop(fd: int) -> None:
    """Answer the interop connection ``fd`` (the caller's to close) with ``EOPNOTSUPP``, never
    blocking: what the caller already sent is read and its descriptors closed first (a socket
    closed with unread bytes would reset the caller's end), then the answer and the end of it."""
    connection = socket.socket(fileno=os.dup(fd))
    try:
        connection.setblocking(False)
        for _ in range(_MAX_DRAIN_READS):
            try:
                data, fds, _flags, _address = socket.recv_fds(connection, 65536, 8)
            except (BlockingIOError, InterruptedError):
                break
            for received in fds:
                os.close(received)
            if not data:
                break
        connection.send(interop_messages.encode_response(errno.EOPNOTSUPP))
        connection.shutdown(socket.SHUT_WR)
    except OSError as error:
        log.warning("cannot refuse an interop request: %s", error)
    finally:
        connection.close()


def _host_tree() -> int:
    """The host's files the file server serves (``/run/pywsl/host``), else an empty tree."""
    if os.path.ismount(HOST_FILES_PATH):
        return os.open(HOST_FILES_PATH, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return _empty_host_tree()


def _empty_host_tree() -> int:
    """A read-only tmpfs with only ``proc`` (where the instance's own /proc goes), for /mnt/host."""
    os.makedirs(HOST_TREE_PATH, exist_ok=True)
    flags = syscalls.MS_NOSUID | syscalls.MS_NODEV
    syscalls.mount("tmpfs", HOST_TREE_PATH, "tmpfs", flags, "mode=755")
    os.mkdir(os.path.join(HOST_TREE_PATH, "proc"), 0o555)
    syscalls.mount(None, HOST_TREE_PATH, None, flags | syscalls.MS_REMOUNT | syscalls.MS_RDONLY)
    return os.open(HOST_TREE_PATH, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def vm_context(listener: socket.socket, watch: socket.socket) -> VmContext:
    """What pid 1 serves with: the listening socket, the demultiplexer's watch socket."""
    boot = BootArguments(
        runtime_dir="/run/pywsl",
        listen_fd=listener.detach(),
        uid_map=_FULL_RANGE,
        gid_map=_FULL_RANGE,
        networking_mode="mirrored",  # the instances share the VM's own network
        hostname=socket.gethostname(),
        instance_idle_timeout_ms=_environment_ms(
            "PYWSL_INSTANCE_IDLE_TIMEOUT", DEFAULT_INSTANCE_IDLE_TIMEOUT_MS
        ),
        vm_idle_timeout_ms=_environment_ms("PYWSL_VM_IDLE_TIMEOUT", DEFAULT_VM_IDLE_TIMEOUT_MS),
        owner_uid=0,
        cgroups=(),
        devices=DeviceSettings(nested_virtualization=False, gpu_support=False),
    )
    ready, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    _kept.append(peer)
    cloner = LocalCloner(watch)
    return VmContext(boot=boot, cloner=cloner, ready=ready, host_tree=_host_tree())


def serve(listener: socket.socket, watch: socket.socket) -> int:
    """Serve mini_init channels until ``ShutdownVm``, ``vmIdleTimeout`` or the demultiplexer's end."""
    return mini_init.serve(vm_context(listener, watch))
