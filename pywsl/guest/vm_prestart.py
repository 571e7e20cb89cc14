"""The VM's interpreter started ahead of its boot arguments (`pywsl.vm.backends.namespaces_prestart`).

``python -S -P -c 'from pywsl.guest.vm_prestart import run; run()' --runtime-dir DIR --handoff-fd FD``
(:data:`pywsl.vm.backends.namespaces_prestart.PRESTART_CODE`) loads mini_init and its
roles and does the start that needs no boot arguments (``mini_init.prepare``), then waits up to
:data:`HANDOFF_TIMEOUT` seconds for one message on the socket ``FD``: the boot arguments
(NUL-separated) with two descriptors, the listening socket and the log. It then boots as
mini_init started with ``<arguments>`` would, with the log as its stdout and stderr
(what it wrote before comes first) and ``--listen-fd`` naming the socket it received, except that
it becomes the VM's monitor itself (``vm_monitor.run_here``) rather than forking one and exiting:
it is in a session of its own already, and the host hears on the socket ``FD`` that the VM
serves. It then lives as long as the VM (the host's process is usually gone long before; while
it lives, it does not wait for this one). No message
(the host booted another way, or is gone) ends it quietly; arguments for another runtime folder are
refused.
"""

from __future__ import annotations

import gc
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


__all__ = ["HANDOFF_TIMEOUT", "boot_arguments_from", "main", "run"]

HANDOFF_TIMEOUT = 30.0  # s: the host decides to boot after reading its configuration
MAX_ARGUMENTS = 1 << 16  # bytes of boot arguments
EXPECTED_FDS = 2  # the listening socket, the log


def boot_arguments_from(payload: bytes, listen_fd: int, runtime_dir: str) -> list[str] | None:
    """mini_init's arguments from the host's message: `--listen-fd` set to `listen_fd`; None when
    they are not for `runtime_dir` or name no listening socket."""
    arguments = payload.decode("utf-8", "surrogateescape").split("\0")
    folder = _value_of(arguments, "--runtime-dir")
    if (
        folder is None
        or os.path.abspath(folder) != runtime_dir
        or _value_of(arguments, "--listen-fd") is None
    ):
        return None
    index = arguments.index("--listen-fd")
    return [*arguments[: index + 1], str(listen_fd), *arguments[index + 2 :]]


def _value_of(arguments: list[str], option: str) -> str | None:
    """The value after `option`'s only occurrence; None when it is missing, repeated or last."""
    if arguments.count(option) != 1:
        return None
    index = arguments.index(option)
    return arguments[index + 1] if index + 1 < len(arguments) else None


def _options(argv: list[str]) -> tuple[str, int] | None:
    """(runtime folder, handoff descriptor) from this process's own command line."""
    if len(argv) != 4 or argv[0] != "--runtime-dir" or argv[2] != "--handoff-fd" or not argv[3].isdigit():
        return None
    return os.path.abspath(argv[1]), int(argv[3])


def _receive(handoff_fd: int) -> tuple[bytes, list[int]]:
    """The host's message on the handoff socket (nothing when none came in time). The socket stays
    open: the VM's monitor says on it that the VM serves."""
    from pywsl.wire import unix_sockets as socket

    handoff = socket.socket(fileno=handoff_fd)
    try:
        handoff.settimeout(HANDOFF_TIMEOUT)
        try:
            payload, fds, _flags, _address = socket.recv_fds(handoff, MAX_ARGUMENTS, EXPECTED_FDS)
        except OSError:  # TimeoutError included: nobody boots with this interpreter
            return b"", []
        return payload, fds
    finally:
        handoff.detach()


def main(argv: list[str] | None = None) -> int:
    gc.disable()  # as for mini_init's own start: many objects and no garbage while the roles load
    os.chdir("/")  # started in the caller's folder (`-P` kept it out of the module path): hold none
    options = _options(sys.argv[1:] if argv is None else argv)
    if options is None:
        print("usage: vm_prestart --runtime-dir DIR --handoff-fd FD", file=sys.stderr)
        return 2
    runtime_dir, handoff_fd = options
    # What the start writes before the log exists is kept, and goes to the log first.
    early = os.memfd_create("vm-prestart-output", os.MFD_CLOEXEC)
    os.dup2(early, 1)
    os.dup2(early, 2)
    boot: Callable[..., int] | None = None
    try:
        from pywsl.guest import mini_init

        mini_init.prepare()
        boot = mini_init.boot
    except Exception:
        import traceback

        traceback.print_exc()
    payload, fds = _receive(handoff_fd)
    if len(fds) != EXPECTED_FDS or not payload:
        for fd in fds:
            os.close(fd)
        os.close(handoff_fd)
        _leave_groups(runtime_dir)
        return 0  # no boot for this interpreter
    listen_fd, log_fd = fds
    sys.stdout.flush()
    sys.stderr.flush()
    _copy_all(early, log_fd)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    os.close(early)
    if boot is None:
        return 1
    arguments = boot_arguments_from(payload, listen_fd, runtime_dir)
    if arguments is None:
        sys.stderr.write(f"pywsl.guest.vm_prestart: boot arguments not for {runtime_dir}\n")
        return 1
    from pywsl.guest.boot import parse_boot_arguments

    # This process becomes the VM's monitor (no fork of it on the cold launch's way); it tells
    # the host on the handoff socket as soon as the VM serves, and lives as long as the VM.
    return boot(parse_boot_arguments(arguments), handoff_fd, in_place=True)


def _leave_groups(runtime_dir: str) -> None:
    """No boot: leave the VM's groups the launch moved this interpreter into, and remove them
    when they are empty (the launch may be gone without ending this process), also those it was
    never moved into (the launch, and the shell it started to move it, ended first)."""
    from pywsl.cgroup_tables import group_name, leave_groups, remove_unused

    name = group_name(os.geteuid(), runtime_dir)
    try:
        leave_groups(name)
        remove_unused(name)
    except OSError:
        return


def _copy_all(source: int, target: int) -> None:
    offset = 0
    while chunk := os.pread(source, 65536, offset):
        offset += len(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view) :]


def run() -> None:
    """The process's whole life (the host starts ``python -S -P -c`` with a call of this):
    as mini_init's own start, the host waits for its exit, and there is no interpreter teardown."""
    from pywsl.guest import forking

    forking.exit_now(main())


if __name__ == "__main__":
    run()
