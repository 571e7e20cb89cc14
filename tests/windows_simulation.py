"""Runs the `pywsl` command line or an examples/ script as on Windows, against a fake WslService.

    python windows_simulation.py cli ARG...          # `pywsl ARG...`
    python windows_simulation.py example SCRIPT ARG...

Before pywsl is imported, the process is made to look like Windows to pywsl: `sys.platform` is
"win32", the Linux-only modules (fcntl, termios, pwd, grp, pty, tty, resource) cannot be imported,
and the names Windows lacks (os.getuid/geteuid/uname/fork/pipe2/set_blocking/pread...,
os.O_CLOEXEC/O_NOCTTY/O_NOFOLLOW/O_NONBLOCK/O_DIRECTORY/O_PATH, SIGHUP/SIGQUIT/SIGWINCH..., AF_UNIX,
SCM_RIGHTS, CMSG_*) are gone. The standard library and click, which pick their Windows parts at
import, are imported first with their Linux parts. `pywsl.connect()` then takes its Windows path,
whose COM start-up is replaced by a fake `ILxssUserSession` (tests/test_com_session.py) with two
distributions, Debian (default, running) and Ubuntu (stopped). Its `CreateLxProcess` plays the
Linux relay for two commands, `echo WORDS` and `exit N`, over five socket pairs. Each
`CreateLxProcess` call's arguments are appended, as JSON, to the file named by
`PYWSL_SIMULATION_RECORD`; every method's calls (name and in-arguments) are written, as JSON
lines, to the file named by `PYWSL_SIMULATION_CALLS` when the process exits. The disk methods play
the service's answers: a disk whose file name starts with "attached" is already attached, "bad"
fails to mount (EINVAL), "busy" fails to detach (EBUSY); a relative path is not found by
`DetachDisk`.
`PYWSL_SIMULATION_LXSS` (JSON) holds the `Lxss` registry values (the manifest URLs, the user's
`DefaultVersion`; "lxss service": whether WSL 1's driver is installed); a `DefaultVersion` written
is recorded as a call named "HKCU DefaultVersion".
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import importlib.abc
import json
import os
import runpy
import signal
import socket
import subprocess  # noqa: F401 - imported with its Linux parts before the platform changes
import sys
import threading
import uuid
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

import click.shell_completion  # noqa: F401 - as above (click's Windows console code needs Windows)

TESTS = Path(__file__).resolve().parent
DEBIAN = uuid.UUID("11111111-2222-3333-4444-555555555555")
UBUNTU = uuid.UUID("66666666-7777-8888-9999-000000000000")
IMPORTED = uuid.UUID("99999999-8888-7777-6666-555555555555")
LINUX_ONLY_MODULES = ("fcntl", "termios", "pwd", "grp", "pty", "tty", "resource")
LINUX_ONLY_NAMES: dict[ModuleType, tuple[str, ...]] = {
    os: (
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "getgroups",
        "uname",
        "fork",
        "setsid",
        "killpg",
        "getpgid",
        "tcgetpgrp",
        "openpty",
        "getpgrp",
        "pread",
        "pwrite",
        "pipe2",
        "set_blocking",
        "get_blocking",
        "mkfifo",
        "fchown",
        "fchmod",
        "sched_getaffinity",
        "pidfd_open",
        "memfd_create",
        "eventfd",
        "O_CLOEXEC",
        "O_NOCTTY",
        "O_NOFOLLOW",
        "O_NONBLOCK",
        "O_DIRECTORY",
        "O_PATH",
    ),
    signal: (
        "SIGHUP",
        "SIGQUIT",
        "SIGWINCH",
        "SIGKILL",
        "SIGCHLD",
        "SIGUSR1",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTSTP",
        "SIGCONT",
        "SIGSTOP",
        "SIGTTIN",
        "SIGTTOU",
    ),
    socket: ("AF_UNIX", "SCM_RIGHTS", "CMSG_LEN", "CMSG_SPACE"),
}
AF_UNIX = socket.AF_UNIX  # the fake relay's socket pairs (Windows' socketpair() is TCP)


class LinuxOnlyBlocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name in LINUX_ONLY_MODULES:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def look_like_windows() -> None:
    libc = ctypes.util.find_library("c")  # for the fake's allocator; find_library needs os.uname
    ctypes.util.find_library = lambda name: libc if name == "c" else None
    for name in LINUX_ONLY_MODULES:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, LinuxOnlyBlocker())
    for module, names in LINUX_ONLY_NAMES.items():
        for name in names:
            if hasattr(module, name):
                delattr(module, name)
    ctypes.WINFUNCTYPE = ctypes.CFUNCTYPE  # type: ignore[attr-defined]  # one x64 convention
    sys.platform = "win32"


def relay(command: str, ends: list[socket.socket]) -> None:
    """The Linux side of one process: its output, then ExitStatus and the wait for the echo."""
    from pywsl.api.com.relay import read_message
    from pywsl.wire import schema

    exit_status = schema("LX_INIT_PROCESS_EXIT_STATUS")
    verb, _, rest = command.partition(" ")
    code = 0
    if verb == "echo":
        ends[1].sendall(rest.encode() + b"\n")
    elif verb == "head" and rest.endswith(" /dev/zero"):  # head -c N /dev/zero
        ends[1].sendall(bytes(int(rest.split()[1])))
    elif verb == "exit":
        code = int(rest)
    else:
        ends[2].sendall(f"/bin/sh: 1: {verb}: not found\n".encode())
        code = 127
    message = exit_status.build(ExitCode=code)
    ends[4].sendall(message)
    if read_message(ends[4]) != message:
        raise AssertionError("the exit status was not echoed")
    for sock in ends:
        sock.close()


def _json_value(value: Any) -> Any:
    """An in-argument as JSON: strings, numbers, GUIDs (as text) and bytes; pointers are left out."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return "<pointer>"


def record_every_call(fake: Any, path: str) -> None:
    def write() -> None:
        with open(path, "w", encoding="utf-8") as file:
            for name, values in fake.seen:
                arguments = {key: _json_value(value) for key, value in values.items()}
                json.dump({"method": name, **arguments}, file)
                file.write("\n")

    atexit.register(write)


def disk_handlers(fail_with: Any, allocate_wide: Any) -> dict[str, Any]:
    """AttachDisk, MountDisk and DetachDisk as the service answers them (see the module's text)."""
    from pywsl.api.com import layout

    already_attached = fail_with(0x80040318, "The disk is already attached.", 0x1)
    not_found = fail_with(0x80070002, "The system cannot find the file specified.", 0x1)

    def attach(disk: int, flags: int, error: Any) -> int:
        if os.path.basename(layout.read_wide(disk)).startswith("attached"):
            return int(already_attached(disk, flags, error))
        return 0

    def mount(disk: int, flags: int, partition: int, name: int, *rest: Any) -> int:
        result, step, mount_name = rest[2], rest[3], rest[4]
        path = layout.read_wide(disk)
        if os.path.basename(path).startswith("bad"):
            result.contents.value, step.contents.value = -22, 2  # EINVAL while mounting
            return 0
        chosen = layout.read_wide(name) if name else "".join(c for c in path if c.isalnum()) + f"p{partition}"
        ctypes.cast(mount_name, ctypes.POINTER(ctypes.c_void_p)).contents.value = allocate_wide(chosen)
        return 0

    def detach(disk: int | None, result: Any, step: Any, error: Any) -> int:
        path = layout.read_wide(disk) if disk else ""
        if path and not os.path.isabs(path):
            return int(not_found(disk, result, step, error))
        result.contents.value = -16 if os.path.basename(path).startswith("busy") else 0  # EBUSY
        return 0

    return {"AttachDisk": attach, "MountDisk": mount, "DetachDisk": detach}


def record_launch(path: str, seen: dict[str, Any], command: list[str]) -> None:
    """One `CreateLxProcess` call, appended as a JSON line."""
    guid = seen["DistroGuid"]
    with open(path, "a", encoding="utf-8") as file:
        json.dump(
            {
                "distro": None if guid is None else str(guid),
                "command": command,
                "filename": seen["Filename"].decode() if seen["Filename"] else None,
                "cwd": seen["CurrentWorkingDirectory"],
                "user": seen["Username"],
            },
            file,
        )
        file.write("\n")


def archive_handlers(fake: Any, names: dict[str, uuid.UUID]) -> dict[str, Any]:
    """RegisterDistribution (the bytes read from the handle recorded as "Content"),
    ExportDistribution, ImportDistributionInplace and ResizeDistribution."""
    from pywsl.api.com import layout

    def register_distribution(name: int, version: int, file: int, *args: Any) -> int:
        os.lseek(file, 0, os.SEEK_SET)  # what the service reads from the handle, recorded
        fake.seen[-1][1]["Content"] = os.read(file, 1 << 20).decode(errors="replace")
        names[layout.read_wide(name).lower()] = IMPORTED
        ctypes.memmove(args[-1], IMPORTED.bytes_le, 16)
        return 0

    def export_distribution(distro: Any, file: int, stderr: int, flags: int, error: Any) -> int:
        kind = b"disk image of " if flags & layout.LXSS_EXPORT_DISTRO_FLAGS_VHD else b"archive of "
        os.write(file, kind + str(layout.uuid_from_guid(distro.contents)).encode())
        return 0

    def import_in_place(name: int, vhd: int, error: Any, result: Any) -> int:
        names[layout.read_wide(name).lower()] = IMPORTED
        ctypes.memmove(result, IMPORTED.bytes_le, 16)
        return 0

    def resize(distro: Any, output: int, size: int, error: Any) -> int:
        os.write(output, f"resize2fs: resized to {size} bytes\n".encode())
        return 0

    return {
        "RegisterDistribution": register_distribution,
        "ExportDistribution": export_distribution,
        "ImportDistributionInplace": import_in_place,
        "ResizeDistribution": resize,
    }


def fake_registry(win32: Any, fake: Any) -> None:
    """The registry reads and writes of `pywsl.api.com.win32`, from `PYWSL_SIMULATION_LXSS`; a
    `DefaultVersion` written is recorded as a call."""
    lxss = json.loads(os.environ.get("PYWSL_SIMULATION_LXSS", "{}"))

    def set_default_version(version: int) -> None:
        fake.seen.append(("HKCU DefaultVersion", {"Version": version}))

    win32.registry_details = lambda distro_id: {}
    win32.machine_settings = lambda: lxss
    win32.default_version = lambda: int(lxss.get("DefaultVersion", 2))
    win32.set_default_version = set_default_version
    win32.wsl1_component_present = lambda: bool(lxss.get("lxss service"))


def install_fake_service() -> None:
    sys.path.insert(0, str(TESTS))
    from test_com_session import FakeSession, PosixHost, allocate, fail_with, wide

    from pywsl.api.com import layout, win32
    from pywsl.api.com.vtable import ComInterface

    fake, host = FakeSession(), PosixHost()
    host.current_directory = os.getcwd  # type: ignore[method-assign]  # the folder --cd may change
    names = {"debian": DEBIAN, "ubuntu": UBUNTU}
    record = os.environ.get("PYWSL_SIMULATION_RECORD")
    every_call = os.environ.get("PYWSL_SIMULATION_CALLS")
    if every_call:
        record_every_call(fake, every_call)
    threads: list[threading.Thread] = []

    def enumerate_distributions(count: Any, array: Any, error: Any) -> int:
        rows = (layout.LXSS_ENUMERATE_INFO * 2)()
        for row, (guid, name, state, flags) in zip(
            rows, [(DEBIAN, "Debian", 2, 1), (UBUNTU, "Ubuntu", 1, 0)], strict=True
        ):
            row.DistroGuid = layout.guid_from_uuid(guid)
            row.State, row.Version, row.Flags = state, 2, flags
            data = name.encode("utf-16-le")
            ctypes.memmove(row.DistroName, data, len(data))
        count.contents.value = 2
        ctypes.cast(array, ctypes.POINTER(ctypes.c_void_p)).contents.value = allocate(bytes(rows))
        return 0

    not_found = fail_with(
        0x80040302, "There is no distribution with the supplied name.", 0x1 | 0x40 | 0x200000
    )  # Wsl/Service/GetDistroId

    def get_distribution_id(name: int, flags: int, error: Any, result: Any) -> int:
        guid = names.get(layout.read_wide(name).lower())
        if guid is None:
            return not_found(name, flags, error, result)
        ctypes.memmove(result, guid.bytes_le, 16)
        return 0

    def create_lx_process(*args: Any) -> int:
        seen = fake.named("CreateLxProcess")
        command = [args[3][i].decode() for i in range(args[2])]
        if record:
            record_launch(record, seen, command)
        ends: list[socket.socket] = []
        for out in args[18:23]:
            ours, theirs = socket.socketpair(AF_UNIX)
            ends.append(theirs)
            out.contents.value = ours.detach()
        ctypes.memmove(args[14], (seen["DistroGuid"] or DEBIAN).bytes_le, 16)
        thread = threading.Thread(target=relay, args=(" ".join(command), ends), daemon=True)
        threads.append(thread)
        thread.start()
        return 0

    fake.handlers.update(
        EnumerateDistributions=enumerate_distributions,
        GetDistributionId=get_distribution_id,
        CreateLxProcess=create_lx_process,
        **archive_handlers(fake, names),
        **disk_handlers(fail_with, wide),
    )
    win32.open_session_interface = lambda environ=None: ComInterface(fake.pointer, host.free)
    win32.WindowsHost = lambda: host  # type: ignore[assignment,misc,return-value]
    fake_registry(win32, fake)


def main(argv: list[str]) -> int:
    scenario, *arguments = argv
    look_like_windows()
    install_fake_service()
    if scenario == "cli":
        from pywsl.cli.main import main as pywsl_main

        sys.argv = ["pywsl", *arguments]
        pywsl_main(arguments)
    if scenario == "service":  # the `pywsl-service` console script
        from pywsl.api.service.server import main as service_main

        return service_main(arguments)
    sys.argv = arguments
    runpy.run_path(arguments[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
