"""Helpers for the launch tests: a session leader in a child process, and the host's side of
CreateProcessUtilityVm (what CoreInstance.create_process sends), without any VM.

Run as a script, ``python test_launch_support.py client <json>`` is a tiny wsl.exe: it starts its
own session leader, launches one process with its own stdio through ``LxProcess`` and exits with
the process's exit status (used under a real PTY).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack

import pytest

from pywsl.api.process.lx_process import LxProcess, PreparedStdio, StdioSpec
from pywsl.wire import LX_INIT_CREATE_PROCESS_FLAGS, schema
from pywsl.wire.channel import MessageChannel

CREATE_PROCESS = schema("LX_INIT_CREATE_PROCESS_UTILITY_VM")
RESULT = schema("RESULT_MESSAGE<uint32_t>")
EXIT_STATUS = schema("LX_INIT_PROCESS_EXIT_STATUS")
WINDOW_SIZE_CHANGED = schema("LX_INIT_WINDOW_SIZE_CHANGED")
SIGNAL_PROCESS = schema("PYWSL_SIGNAL_PROCESS")
UINT_MAX = 0xFFFFFFFF
DISTRIBUTION = "TestDistro"
TEST_UID = 12345
TEST_GID = 12345
EXTRA_GID = 23456
DEFAULT_ENVIRONMENT = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM=xterm-256color",
    "LANG=C.UTF-8",
    "HOSTTYPE=x86_64",
)
_CONSOLE_FLAGS = (
    LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdInConsole,
    LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdOutConsole,
    LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdErrConsole,
)

REPOSITORY = Path(__file__).resolve().parents[1]

_LEADER_CODE = (
    "import socket, sys\n"
    "from pywsl.guest.session_leader import serve\n"
    "if sys.argv[6] == 'block-imports':\n"
    "    class NoMoreImports:\n"
    "        def find_spec(self, name, path=None, target=None):\n"
    "            sys.stderr.write(f'late import of {name}\\n')\n"
    "            raise ImportError(f'late import of {name}')\n"
    "    sys.meta_path.insert(0, NoMoreImports())\n"
    "serve(socket.socket(fileno=int(sys.argv[1])), distribution_name=sys.argv[2],\n"
    "      default_uid=int(sys.argv[3]), default_user=sys.argv[4] or None, etc_root=sys.argv[5])\n"
)


def make_etc(root: Path) -> Path:
    """A distribution-like ``etc`` with root, a test user and nobody; homes under ``root/home``."""
    home = root / "home"
    (home / "tester" / "sub").mkdir(parents=True)
    (home / "root").mkdir()
    etc = root / "etc"
    etc.mkdir()
    (etc / "passwd").write_text(
        f"root:x:0:0:root:{home / 'root'}:/bin/bash\n"
        f"tester:x:{TEST_UID}:{TEST_GID}:Test User:{home / 'tester'}:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        "noshell:x:23000:23000::/:\n"
    )
    (etc / "group").write_text(
        f"root:x:0:\ntty:x:5:\ntester:x:{TEST_GID}:\nextra:x:{EXTRA_GID}:nobody,tester\nnogroup:x:65534:\n"
    )
    os.chmod(home / "tester", 0o755)
    return root


class ProcessOptions(TypedDict, total=False):
    """What ``Leader.create_process`` takes besides the descriptors, command line and console."""

    filename: str
    cwd: str
    environment: Sequence[str]
    username: str
    default_uid: int
    login: bool


@dataclass
class Leader:
    """A session leader serving one end of a socket pair (what init forks per CreateSession)."""

    process: subprocess.Popen[bytes]
    channel: MessageChannel
    lock: threading.Lock = field(default_factory=threading.Lock)

    def create_process(
        self,
        fds: Sequence[int],
        *,
        command_line: Sequence[str] = (),
        filename: str = "",
        cwd: str = "",
        environment: Sequence[str] = DEFAULT_ENVIRONMENT,
        username: str = "",
        default_uid: int = 0,
        login: bool = False,
        console: tuple[bool, bool, bool] = (False, False, False),
        rows: int = 0,
        columns: int = 0,
    ) -> int:
        """Send CreateProcessUtilityVm with ``fds``; the reply (relay pid or UINT_MAX)."""
        flags = 0
        for flag, on in zip(_CONSOLE_FLAGS, console, strict=True):
            if on:
                flags |= flag
        common = {
            "Filename": filename,
            "CurrentWorkingDirectory": cwd,
            "CommandLine": list(command_line),
            "Environment": list(environment),
            "NtEnvironment": [],
            "NtPath": "",
            "Username": username,
            "ShellOptions": 1 if login else 0,
            "DefaultUid": default_uid,
            "Flags": flags,
        }
        with self.lock:
            reply = self.channel.request(
                CREATE_PROCESS, RESULT, fds=list(fds), timeout=20, Rows=rows, Columns=columns, Common=common
            )
        return int(reply.Result)

    def launch(
        self,
        command_line: Sequence[str] = (),
        *,
        stdin: StdioSpec = None,
        stdout: StdioSpec = None,
        stderr: StdioSpec = None,
        **request: Unpack[ProcessOptions],
    ) -> LxProcess:
        """What UserSession.create_lx_process does: prepare stdio, CreateProcessUtilityVm, LxProcess."""

        def send(prepared: PreparedStdio) -> int:
            pid = self.create_process(
                prepared.relay_fds,
                command_line=command_line,
                console=prepared.console,
                rows=prepared.rows,
                columns=prepared.columns,
                **request,
            )
            if pid == UINT_MAX:
                raise RuntimeError("the session leader could not start a relay")
            return pid

        return LxProcess.start(send, stdin=stdin, stdout=stdout, stderr=stderr, args=list(command_line))

    def run(
        self,
        command_line: Sequence[str] = (),
        *,
        stdin: StdioSpec = subprocess.DEVNULL,
        **request: Unpack[ProcessOptions],
    ) -> tuple[int, bytes, bytes]:
        """Launch with captured stdout/stderr; ``(exit status, stdout, stderr)``."""
        process = self.launch(
            command_line, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **request
        )
        out, err = process.communicate(timeout=30)
        assert process.returncode is not None
        return process.returncode, out or b"", err or b""

    def close(self) -> None:
        self.channel.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def python_environment() -> dict[str, str]:
    """This environment, with the repository importable by a child interpreter."""
    paths = [str(REPOSITORY), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def start_leader(
    etc_root: Path,
    *,
    default_user: str = "",
    default_uid: int = 0,
    block_imports: bool = False,
    wrapper: Sequence[str] = (),
) -> Leader:
    """A session leader; ``block_imports`` makes any import after start-up fail (as after
    pivot_root, where the interpreter's files are out of reach); ``wrapper`` runs it through
    another command (which must exec the rest of its arguments)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with theirs:
        process = subprocess.Popen(
            [
                *wrapper,
                sys.executable,
                "-c",
                _LEADER_CODE,
                str(theirs.fileno()),
                DISTRIBUTION,
                str(default_uid),
                default_user,
                str(etc_root),
                "block-imports" if block_imports else "",
            ],
            pass_fds=[theirs.fileno()],
            start_new_session=True,
            env=python_environment(),
        )
    return Leader(process, MessageChannel(ours, name="test session leader"))


@contextlib.contextmanager
def leader_for(etc_root: Path, **options: Any) -> Iterator[Leader]:
    leader = start_leader(etc_root, **options)
    try:
        yield leader
    finally:
        leader.close()


@pytest.fixture(scope="module")
def etc_root() -> Iterator[Path]:
    """A module's ``make_etc`` tree; not under pytest's own (0700) temporary folder: other users
    must reach their homes."""
    with tempfile.TemporaryDirectory(prefix="pywsl-launch-") as directory:
        os.chmod(directory, 0o755)
        yield make_etc(Path(directory))


@pytest.fixture(scope="module")
def leader(etc_root: Path) -> Iterator[Leader]:
    """A module's session leader on ``etc_root``."""
    with leader_for(etc_root) as running:
        yield running


def _client_main(spec: dict[str, Any]) -> int:
    """A tiny wsl.exe on this process's own stdio."""
    with tempfile.TemporaryDirectory() as directory, leader_for(make_etc(Path(directory))) as leader:
        process = leader.launch(spec.get("command_line", ()), **spec.get("request", {}))
        code = process.wait()
        print(f"\r\n[client exit {code}]", flush=True)
        return code


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "client":
        sys.exit(_client_main(json.loads(sys.argv[2])))
    sys.exit("usage: test_launch_support.py client <json>")
