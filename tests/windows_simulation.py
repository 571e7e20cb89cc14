"""Runs the `pywsl` command line or an examples/ script as on Windows, against a fake WslService.

    python windows_simulation.py cli ARG...          # `pywsl ARG...`
    python windows_simulation.py example SCRIPT ARG...

Before pywsl is imported, the process is made to look like Windows to pywsl: `sys.platform` is
"win32", the Linux-only modules (fcntl, termios, pwd, grp, pty, tty, resource) cannot be imported,
and the Linux-only names (os.getuid/geteuid/uname/fork..., SIGHUP/SIGQUIT/SIGWINCH..., AF_UNIX,
SCM_RIGHTS, CMSG_*) are gone. The standard library and click, which pick their Windows parts at
import, are imported first with their Linux parts. `pywsl.connect()` then takes its Windows path,
whose COM start-up is replaced by a fake `ILxssUserSession` (tests/test_com_session.py) with two
distributions, Debian (default, running) and Ubuntu (stopped). Its `CreateLxProcess` plays the
Linux relay for two commands, `echo WORDS` and `exit N`, over five socket pairs. Each
`CreateLxProcess` call's arguments are appended, as JSON, to the file named by
`PYWSL_SIMULATION_RECORD`.
"""

from __future__ import annotations

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


def install_fake_service() -> None:
    sys.path.insert(0, str(TESTS))
    from test_com_session import FakeSession, PosixHost, allocate, fail_with

    from pywsl.api.com import layout, win32
    from pywsl.api.com.vtable import ComInterface

    fake, host = FakeSession(), PosixHost()
    host.current_directory = os.getcwd  # type: ignore[method-assign]  # the folder --cd may change
    names = {"debian": DEBIAN, "ubuntu": UBUNTU}
    record = os.environ.get("PYWSL_SIMULATION_RECORD")
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
            guid = seen["DistroGuid"]
            with open(record, "a", encoding="utf-8") as file:
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

    def register_distribution(name: int, version: int, file: int, *args: Any) -> int:
        names[layout.read_wide(name).lower()] = IMPORTED
        ctypes.memmove(args[-1], IMPORTED.bytes_le, 16)
        return 0

    def export_distribution(distro: Any, file: int, stderr: int, flags: int, error: Any) -> int:
        os.write(file, b"archive of " + str(layout.uuid_from_guid(distro.contents)).encode())
        return 0

    fake.handlers.update(
        EnumerateDistributions=enumerate_distributions,
        GetDistributionId=get_distribution_id,
        CreateLxProcess=create_lx_process,
        RegisterDistribution=register_distribution,
        ExportDistribution=export_distribution,
    )
    win32.open_session_interface = lambda environ=None: ComInterface(fake.pointer, host.free)
    win32.WindowsHost = lambda: host  # type: ignore[assignment,misc,return-value]
    win32.registry_details = lambda distro_id: {}


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
