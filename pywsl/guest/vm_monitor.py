"""The VM monitor: the host-side process of a ``namespaces`` utility VM, HCS's role in WSL.

WSL's utility VM is a compute system that Hyper-V runs and tears down. Here the VM is a set of
namespaces, and this process, still host root and outside them, plays the hypervisor:

1. it forks a child that joins the VM's cgroups, prepares the VM's view of the host in a mount
   namespace of its own (``host_view``: a locked read-only ``/sys``, the masked host tree for
   ``/mnt/host``), then unshares the user, mount, pid, ipc, uts and cgroup namespaces (and net
   for ``networkingMode=none``); the monitor writes that child's uid/gid maps (only a process
   privileged in the parent namespace may map whole ranges);
2. the child forks pid 1 of the VM, ``mini_init``, which becomes the monitor's child (the monitor
   is a child subreaper);
3. it writes ``mini_init.pid`` and reports readiness once ``mini_init`` serves, or gives up after
   ``kernelBootTimeout`` (``--boot-timeout``) and undoes everything;
4. while the VM runs it clones mount trees for ``mini_init``: a directory the host passed as a
   file descriptor belongs to the host's mount namespace, which the VM cannot bind-mount from,
   but a detached copy made here (``open_tree``) can be attached inside the VM; and it is the
   interop server: each interop connection mini_init passes on goes to a worker of its own,
   which became the VM's owner before reading a byte and runs the host program
   (``interop_workers``, ``interop_server``);
5. when ``mini_init`` exits (idle, shutdown, killed) the kernel ends everything in the VM; the
   monitor removes ``mini_init.sock``, ``mini_init.pid`` and the VM's cgroups, then exits.

Like a VM whose hypervisor dies, the VM stops when the monitor is killed: ``mini_init`` sees its
end of the clone service close and exits. The host then removes what is left (``remove_leftovers``
in ``pywsl.vm.backends.namespaces``).

The monitor itself never parses anything from the guest but those requests (one fd each); an
interop request is read by its worker, with the owner's rights only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import selectors
import struct
import time
from collections.abc import Callable

from pywsl.cgroup_tables import has_process
from pywsl.guest import forking, guest_log, host_view, mounts, path_folder_store, syscalls
from pywsl.guest import lean_signal as signal
from pywsl.guest.boot import BootArguments
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass

    from pywsl.guest.interop_workers import InteropWorkers
else:
    from pywsl.records import dataclass

log = guest_log.getLogger("pywsl.vm-monitor")

SOCKET_NAME = "mini_init.sock"
PID_FILE_NAME = "mini_init.pid"
PREVIOUS_LOG_NAME = "mini_init.log.previous"  # the previous VM's log, set aside by the boot
CGROUP_REMOVE_TIMEOUT = 5.0
# s after the VM serves before the monitor leaves the VM's groups: a move waits for an RCU grace
# period and stalls every fork on the host meanwhile, which the VM's first start should not meet.
GROUP_LEAVE_DELAY = 0.5
_RESULT = struct.Struct("<i")
INTEROP_REQUEST = b"I"  # mini_init -> monitor, with an interop connection: run a host program


class TreeCloner:
    """mini_init's side of the clone service: a host directory fd in, a detached mount tree out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def clone(self, fd: int) -> int:
        """A detached, recursive copy of the mount tree at ``fd``; OSError if the monitor refuses."""
        socket.send_fds(self.sock, [b"C"], [fd])
        data, fds, _flags, _address = socket.recv_fds(self.sock, _RESULT.size, 1)
        if len(data) != _RESULT.size:
            for received in fds:
                os.close(received)
            raise OSError(errno.EPIPE, "the VM monitor did not answer a clone request")
        code = _RESULT.unpack(data)[0]
        if code == 0 and len(fds) == 1:
            return fds[0]
        for received in fds:
            os.close(received)
        code = code or errno.EIO
        raise OSError(code, f"cannot clone the directory's mount tree: {os.strerror(code)}")

    def forward_interop(self, fd: int) -> None:
        """Pass an interop connection (``interop_init``) to the monitor; no answer comes back."""
        socket.send_fds(self.sock, [INTEROP_REQUEST], [fd], socket.MSG_DONTWAIT)

    def release_disk(self, lun: int) -> None:
        """A use of the disk at ``lun`` ended: only a real VM has disks (``vm_mini_init``)."""


@dataclass
class VmContext:
    """What pid 1 of the VM gets from the monitor."""

    boot: BootArguments
    cloner: TreeCloner
    ready: socket.socket  # send b"R" once serving, then close
    host_tree: int  # O_PATH fd of the host tree for /mnt/host (``host_view``)
    # The host PATH folders kept on the host (``path_folder_store``; -1: none): the folder, which
    # only the builder writes, and its read-only mount (locked) that the instances attach.
    path_folder_store: int = -1
    path_folder_tree: int = -1


ServeFunction = Callable[[VmContext], int]


def _write_map(pid: int, name: str, lines: list[tuple[int, int, int]]) -> None:
    text = "".join(f"{inside} {outside} {count}\n" for inside, outside, count in lines)
    with open(f"/proc/{pid}/{name}", "w") as handle:
        handle.write(text)


def _join_cgroups(paths: tuple[str, ...]) -> None:
    """Join the VM's groups; one this process is in already (the host moved the interpreter that
    it was forked from) is not joined again: a move waits for an RCU grace period even then."""
    for path in paths:
        if has_process(path, os.getpid()):
            continue
        try:
            with open(os.path.join(path, "cgroup.procs"), "w") as handle:
                handle.write("0")
        except OSError as error:
            log.warning("cannot move the VM into cgroup %s: %s", path, error)


def _leave_cgroups(paths: tuple[str, ...]) -> None:
    """Leave the VM's groups for the ones they were made in (the host moved the interpreter this
    process was forked from into them): the monitor is the host's side, and a group it is in
    cannot be removed."""
    for path in paths:
        if not has_process(path, os.getpid()):
            continue
        try:
            with open(os.path.join(os.path.dirname(path), "cgroup.procs"), "w") as handle:
                handle.write("0")
        except OSError as error:
            log.warning("cannot leave the VM's cgroup %s: %s", path, error)


def _namespace_flags(boot: BootArguments) -> int:
    flags = (
        syscalls.CLONE_NEWUSER
        | syscalls.CLONE_NEWNS
        | syscalls.CLONE_NEWPID
        | syscalls.CLONE_NEWIPC
        | syscalls.CLONE_NEWUTS
        | syscalls.CLONE_NEWCGROUP
    )
    if boot.networking_mode == "none":
        flags |= syscalls.CLONE_NEWNET
    return flags


def _enter_vm(
    boot: BootArguments,
    sync: socket.socket,
    ready: socket.socket,
    cloner: socket.socket,
    serve: ServeFunction,
) -> None:
    """The first child: enter the VM's namespaces, fork pid 1, report its pid, exit.

    It leads a process group of its own, which pid 1 inherits: a failed boot kills the group.
    """
    try:
        os.setpgid(0, 0)
        _join_cgroups(boot.cgroups)
        host_view.enter()
        # The kept host PATH folders: opened before the host tree covers the runtime folder, a
        # read-only bind staged after it (locked read-only in the VM by the unshare below).
        store = path_folder_store.open_store(
            boot.runtime_dir, path_folder_store.owner_of(boot.uid_map, boot.gid_map)
        )
        host_view.attach_host_tree(boot.runtime_dir)
        if store >= 0 and not path_folder_store.stage(store, boot.runtime_dir):
            os.close(store)
            store = -1
        syscalls.unshare(_namespace_flags(boot))
        # Still the host's root (no mapping yet): the runtime folder is reachable, unlike later.
        host_tree = host_view.open_host_tree(boot.runtime_dir)
        stores = _open_staged_store(store, boot.runtime_dir)
        sync.send(b"U")
        if sync.recv(1) != b"G":
            forking.exit_now(1)
        os.setgroups([])
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        syscalls.sethostname(boot.hostname)
        mounts.make_private()
        if boot.networking_mode == "none":
            syscalls.set_link_up("lo")
        pid = os.fork()
        if pid == 0:
            sync.close()
            _run_pid1(boot, ready, cloner, host_tree, stores, serve)
        sync.send(b"P" + str(pid).encode())
        forking.exit_now(0)
    except BaseException as error:
        with suppress(OSError):
            sync.send(b"E" + str(error).encode(errors="replace")[:4000])
        forking.exit_now(1)


def _open_staged_store(store: int, runtime_dir: str) -> tuple[int, int]:
    """(the kept host PATH folders' folder, its staged read-only mount), or (-1, -1)."""
    if store < 0:
        return -1, -1
    try:
        return store, path_folder_store.open_staged(store, runtime_dir)
    except OSError as error:
        log.warning("the host PATH folders are not kept: %s", error)
        os.close(store)
        return -1, -1


def _run_pid1(
    boot: BootArguments,
    ready: socket.socket,
    cloner: socket.socket,
    host_tree: int,
    stores: tuple[int, int],
    serve: ServeFunction,
) -> None:
    code = 1
    try:
        syscalls.set_process_name("mini_init")
        syscalls.mount("proc", "/proc", "proc", syscalls.MS_NOSUID | syscalls.MS_NODEV | syscalls.MS_NOEXEC)
        code = serve(VmContext(boot, TreeCloner(cloner), ready, host_tree, *stores))
    except BaseException:
        log.exception("mini_init failed")
        with suppress(OSError):
            ready.send(b"Emini_init failed, see the log")
    forking.exit_now(code)


class Monitor:
    def __init__(self, boot: BootArguments) -> None:
        self.boot = boot
        self.socket_path = os.path.join(boot.runtime_dir, SOCKET_NAME)
        self.pid_path = os.path.join(boot.runtime_dir, PID_FILE_NAME)
        try:
            self.socket_inode: int | None = os.stat(self.socket_path).st_ino
        except OSError:
            self.socket_inode = None
        self.vm_pid: int | None = None
        self.first_reaped = False
        self.vm_status = 1
        self.boot_deadline = time.monotonic() + boot.boot_timeout_ms / 1000
        self.interop_workers: InteropWorkers | None = None  # after the first interop connection
        self.leave_groups_at: float | None = None  # when the monitor leaves the VM's groups
        # The monitor is the process the host started (`run_here`), whose exit the host awaits
        # after a failed boot while it holds the runtime folder's lock.
        self.in_place = False

    def run(self, serve: ServeFunction, ready_fd: int, notify_fd: int = -1) -> int:
        syscalls.set_process_name("pywsl-vm")
        syscalls.set_child_subreaper()
        for number in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(number, signal.SIG_IGN)
        # sync: the first child's steps (U, then P<pid>); ready: pid 1's R (or E<reason>).
        sync, sync_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ready, ready_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        clones, clones_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        children = (sync_child, ready_child, clones_child)
        first = os.fork()
        if first == 0:
            forking.become_child([0, 1, 2, self.boot.listen_fd, *(item.fileno() for item in children)])
            _enter_vm(self.boot, sync_child, ready_child, clones_child, serve)
        for item in children:
            item.close()
        os.close(self.boot.listen_fd)
        try:
            self._boot(first, sync, ready)
            # When nobody reads this any more (the host gave up waiting), the write fails and the
            # VM is stopped below rather than left running unseen.
            if ready_fd >= 0:
                forking.write_all(ready_fd, b"1")
            _notify_ready(notify_fd)
            # The VM's first child was forked in its groups; the monitor leaves them once the
            # VM's first start is over (`_serve_clones`), or before its first interop worker.
            self.leave_groups_at = time.monotonic() + GROUP_LEAVE_DELAY
        except Exception as error:
            log.error("the VM did not start: %s", error)
            # Only unreaped children are signalled: their pids cannot belong to anyone else yet.
            if not self.first_reaped:
                with suppress(ProcessLookupError):
                    os.killpg(first, signal.SIGKILL)
                with suppress(ProcessLookupError):
                    os.kill(first, signal.SIGKILL)
            if self.vm_pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(self.vm_pid, signal.SIGKILL)
            self._wait_all()
            _close_given(ready_fd)
            _close_given(notify_fd)  # the host sees the end without b"1": the exit status follows
            self._cleanup_after_failure()
            return 1
        _close_given(ready_fd)
        sync.close()
        ready.close()
        self._serve_clones(clones)
        self._cleanup()
        return self.vm_status

    def _receive(self, sync: socket.socket, expected: bytes) -> bytes:
        remaining = self.boot_deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError()
            sync.settimeout(remaining)
            data = sync.recv(8192)
        except TimeoutError:
            raise RuntimeError(
                f"the VM did not serve within kernelBootTimeout ({self.boot.boot_timeout_ms} ms)"
            ) from None
        if data.startswith(b"E"):
            raise RuntimeError(data[1:].decode(errors="replace"))
        if not data.startswith(expected):
            raise RuntimeError(f"unexpected boot message {data[:32]!r}")
        return data[len(expected) :]

    def _boot(self, first: int, sync: socket.socket, ready: socket.socket) -> None:
        self._receive(sync, b"U")
        for name, lines in (("uid_map", self.boot.uid_map), ("gid_map", self.boot.gid_map)):
            try:
                _write_map(first, name, lines)
            except OSError as error:
                raise RuntimeError(f"the kernel refused the VM's {name} {lines}: {error.strerror}") from None
        sync.send(b"G")
        self.vm_pid = int(self._receive(sync, b"P"))
        forking.wait_for(first)
        self.first_reaped = True
        self._write_pid_file()
        self._receive(ready, b"R")

    def _write_pid_file(self) -> None:
        temporary = self.pid_path + ".new"
        with open(temporary, "w") as handle:
            handle.write(f"{self.vm_pid}\n{os.getpid()}\n")
        os.rename(temporary, self.pid_path)

    @staticmethod
    def _wait_all() -> None:
        """Reap every child (after a failed boot, once they have been killed)."""
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
            except InterruptedError:
                continue

    def _serve_clones(self, clones: socket.socket) -> None:
        wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: self._kill_vm())
        selector = selectors.DefaultSelector()
        selector.register(clones, selectors.EVENT_READ)
        selector.register(wakeup_read, selectors.EVENT_READ)
        running = not self._reap()
        while running:
            if self.leave_groups_at is not None and time.monotonic() >= self.leave_groups_at:
                self._leave_groups()
                self._remove_previous_log()  # the first start is over: free its blocks now
            timeout = None if self.leave_groups_at is None else self.leave_groups_at - time.monotonic()
            for key, _events in selector.select(timeout):
                if key.fileobj is clones:
                    if not self._clone_one(clones):
                        selector.unregister(clones)
                else:
                    with suppress(BlockingIOError):
                        os.read(wakeup_read, 512)
                    running = not self._reap()
        selector.close()

    def _kill_vm(self) -> None:
        if self.vm_pid is not None:
            with suppress(ProcessLookupError):
                os.kill(self.vm_pid, signal.SIGKILL)

    def _reap(self) -> bool:
        """Reap exited children; True once pid 1 of the VM is among them."""
        reaped, running = forking.reap_children()
        for pid, status in reaped:
            if pid == self.vm_pid:
                self.vm_status = forking.exit_code(status)
                log.info("the VM stopped (mini_init exit code %d)", self.vm_status)
                return True
        return not running

    def _clone_one(self, clones: socket.socket) -> bool:
        try:
            data, fds, _flags, _address = socket.recv_fds(clones, 16, 2)
        except OSError:
            return False
        if not data:
            return False
        try:
            if data == INTEROP_REQUEST and len(fds) == 1:
                self._start_interop(fds[0])
                return True
            if data != b"C" or len(fds) != 1:
                raise OSError(errno.EINVAL, "malformed clone request")
            tree = mounts.clone_tree(fds[0])
            try:
                socket.send_fds(clones, [_RESULT.pack(0)], [tree], socket.MSG_DONTWAIT)
            finally:
                os.close(tree)
        except OSError as error:
            with suppress(OSError):
                clones.send(_RESULT.pack(error.errno or errno.EIO), socket.MSG_DONTWAIT)
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _remove_previous_log(self) -> None:
        """Remove the previous VM's log, which the boot set aside (`namespaces._new_log`)."""
        with suppress(OSError):
            os.unlink(os.path.join(self.boot.runtime_dir, PREVIOUS_LOG_NAME))

    def _leave_groups(self) -> None:
        """Leave the VM's groups (once): the monitor and its interop workers are the host's side."""
        self.leave_groups_at = None
        _leave_cgroups(self.boot.cgroups)

    def _start_interop(self, fd: int) -> None:
        """Give one interop connection to its worker (``fd`` stays the caller's to close)."""
        if self.leave_groups_at is not None:
            self._leave_groups()  # the worker is never born in the VM's groups
        if self.interop_workers is None:
            # Loaded with the first interop connection, not with the VM: the monitor never leaves
            # the host's namespaces, so the interpreter's files are still there to load it from.
            from pywsl.guest.interop_workers import InteropWorkers

            self.interop_workers = InteropWorkers(self.boot.owner_uid)
        self.interop_workers.serve(fd)

    def _cleanup_after_failure(self) -> None:
        """`_cleanup` after a boot that failed. In place, the host waits for this process's exit
        status while it holds the runtime folder's lock, which `_cleanup` takes: a child of this
        process cleans up once this one has exited, as a forked monitor does after the process
        the host started (`launch`). If that fork fails, this process cleans up first."""
        if self.in_place:
            try:
                cleaner = os.fork()
            except OSError:
                cleaner = -1
            if cleaner == 0:
                try:
                    self._cleanup()
                finally:
                    forking.exit_now(0)
            if cleaner > 0:
                return
        self._cleanup()

    def _cleanup(self) -> None:
        """Remove the VM's cgroups, then its runtime files (under the runtime folder's lock).

        ``mini_init.pid`` goes last: once it is gone, nothing of the VM is left.
        """
        deadline = time.monotonic() + CGROUP_REMOVE_TIMEOUT
        _leave_cgroups(self.boot.cgroups)  # (a boot that failed before it left them)
        for path in self.boot.cgroups:
            _remove_cgroup(path, deadline)
        try:
            lock_fd = os.open(self.boot.runtime_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            lock_fd = -1
        try:
            if lock_fd >= 0:
                fcntl.flock(lock_fd, fcntl.LOCK_EX)
            self._remove_previous_log()
            self._remove_runtime_files()
        finally:
            if lock_fd >= 0:
                os.close(lock_fd)

    def _remove_runtime_files(self) -> None:
        with suppress(OSError):
            if self.socket_inode is not None and os.stat(self.socket_path).st_ino == self.socket_inode:
                os.unlink(self.socket_path)
        with suppress(OSError):
            with open(self.pid_path) as handle:
                first = handle.readline().strip()
            if self.vm_pid is not None and first == str(self.vm_pid):
                os.unlink(self.pid_path)


def _remove_cgroup(path: str, deadline: float) -> None:
    """Remove a cgroup and any sub-group, deepest first; a group still busy is retried until ``deadline``."""
    for folder, _dirs, _files in list(os.walk(path, topdown=False)):
        while True:
            try:
                os.rmdir(folder)
                break
            except FileNotFoundError:
                break
            except OSError as error:
                if error.errno != errno.EBUSY or time.monotonic() > deadline:
                    log.warning("cannot remove cgroup %s: %s", folder, error)
                    return
                time.sleep(0.02)


def _close_given(fd: int) -> None:
    """Close `fd`, unless it is -1 (none was given)."""
    if fd >= 0:
        os.close(fd)


def _notify_ready(fd: int) -> None:
    """Tell the host on its socket `fd` (closed here; -1: none) that the VM serves."""
    if fd < 0:
        return
    with suppress(OSError):  # the host gave up: its exit status check follows
        os.write(fd, b"1")
    os.close(fd)


def run_here(boot: BootArguments, serve: ServeFunction, notify_fd: int) -> int:
    """Be the VM's monitor in this process, without the fork of `launch`: for the interpreter a
    cold launch started ahead (`pywsl.guest.vm_prestart`), which is in a session of its own
    already and which the host does not wait for (it hears on `notify_fd` that the VM serves, and
    leaves the process to exit on its own). A fork of the loaded interpreter and that
    interpreter's exit, both on a cold launch's way, are spared. The status once the VM has
    stopped (1 when it did not start)."""
    code = 1
    try:
        monitor = Monitor(boot)
        monitor.in_place = True
        code = monitor.run(serve, -1, notify_fd)
    except BaseException:
        log.exception("the VM monitor failed")
    return code


def launch(boot: BootArguments, serve: ServeFunction, notify_fd: int = -1) -> int:
    """Start the VM detached: fork the monitor, return 0 once the VM serves (1 if it failed).

    The process the host started exits right away with that status, so the host never keeps a
    child for the VM's lifetime; the monitor is reparented to the host's init. The monitor also
    writes b"1" on `notify_fd` (a socket of the host's, -1 for none) once the VM serves, and
    closes it either way: the host hears of the VM without waiting for this process's exit.
    """
    ready_read, ready_write = os.pipe()
    monitor = os.fork()
    if monitor == 0:
        os.close(ready_read)
        os.setsid()
        code = 1
        try:
            code = Monitor(boot).run(serve, ready_write, notify_fd)
        except BaseException:
            log.exception("the VM monitor failed")
        forking.exit_now(code)
    os.close(ready_write)
    os.close(boot.listen_fd)
    if notify_fd >= 0:
        os.close(notify_fd)  # the monitor's now
    ready = os.read(ready_read, 1)
    return 0 if ready == b"1" else 1
