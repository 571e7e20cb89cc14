"""The native interop client against the Python one, on the host, with the server's side played here.

Each client runs as a child with the caller's environment set here and ``WSL_INTEROP`` naming a
socket in ``tmp_path``; the test accepts its connection, reads the request with its descriptors,
answers as the server would and compares what both clients sent, printed and exited with.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pywsl.guest import interop_init, interop_native, interop_paths
from pywsl.guest import interop_messages as messages

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")

REPOSITORY = Path(__file__).resolve().parents[1]
MOUNT = "/mnt/host"
ROOTFS = "/srv/distros/d/rootfs"
HOST_FOLDER = "/opt/host tools/%bin"
INVOKED = f"{interop_paths.HOST_PATH_FOLDER}/{interop_paths.escape_folder(HOST_FOLDER)}/prog"
DEADLINE = 30.0
PYTHON_CLIENT = (
    f"import sys; sys.path.insert(0, {str(REPOSITORY)!r}); "
    "from pywsl.guest.interop_client import main; sys.exit(main(sys.argv[1:]))"
)


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cache = tmp_path_factory.mktemp("cache")
    saved = os.environ.get(interop_native.CACHE_ROOT_ENV)
    os.environ[interop_native.CACHE_ROOT_ENV] = str(cache)
    try:
        built = interop_native.build()
        assert built is not None and built.path.startswith(str(cache)), "the native client was not built"
        yield built.path
    finally:
        if saved is None:
            os.environ.pop(interop_native.CACHE_ROOT_ENV, None)
        else:
            os.environ[interop_native.CACHE_ROOT_ENV] = saved


def _command(client: str, native: str, arguments: list[str]) -> list[str]:
    context = [MOUNT, ROOTFS]
    if client == "native":
        return [native, "--context", *context, *arguments]
    return [sys.executable, "-I", "-S", "-c", PYTHON_CLIENT, *context, *arguments]


class Caller:
    """One client run against a listening socket of the test's."""

    def __init__(
        self, tmp_path: Path, command: list[str], environment: dict[str, str], cwd: str, listen: bool = True
    ) -> None:
        self.path = str(tmp_path / "interop.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if listen:
            self.listener.bind(self.path)
            self.listener.listen(1)
        self.listener.settimeout(DEADLINE)
        env = dict(environment, WSL_INTEROP=self.path)
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.connection: socket.socket | None = None

    def accept(self) -> tuple[bytes, list[int]]:
        """The request (read whole) and the descriptors that came with it."""
        self.connection, _ = self.listener.accept()
        self.connection.settimeout(DEADLINE)
        data, fds, _flags, _address = socket.recv_fds(self.connection, messages.MAX_REQUEST_BYTES, 8)
        size = messages.HEADER.unpack_from(data)[1]
        while len(data) < size:
            chunk = self.connection.recv(size - len(data))
            assert chunk
            data += chunk
        return data, fds

    def answer(self, *frames: bytes) -> None:
        assert self.connection is not None
        for frame in frames:
            self.connection.sendall(frame)

    def finish(self) -> tuple[int, str]:
        """Exit code and stderr (the connection and the listener closed first)."""
        if self.connection is not None:
            self.connection.close()
        self.listener.close()
        _out, err = self.process.communicate(timeout=DEADLINE)
        return self.process.returncode, err.decode()


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


ENVIRONMENTS = [
    {"PATH": f"/bin:{INVOKED.rsplit('/', 1)[0]}", "TERM": "xterm"},
    {
        "PATH": "/bin",
        "WSLENV": "A/p:B/l:C/u:D/w::A:E=x:PATH/l:MISSING:F",
        "A": "/mnt/host/srv/a",
        "B": "/etc:/mnt/host/x",
        "C": "c",
        "D": "/d",
        "F": "é ü",
        "OTHER": "not sent",
    },
    {"WSLENV": "", "PYWSL_INTEROP_ROOTFS": "/forged"},
    {},
]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("client", ["native", "python"])
def test_the_request_is_the_bytes_interop_messages_builds(
    native: str, tmp_path: Path, environment: dict[str, str], client: str
) -> None:
    arguments = ["one", "", "two words", "ß"]
    cwd = tmp_path / "folder with space"
    cwd.mkdir()
    caller = Caller(tmp_path, _command(client, native, [INVOKED, *arguments]), environment, str(cwd))
    data, fds = caller.accept()
    _close(fds)
    expected_environment = interop_paths.forwarded_environment(environment, MOUNT, ROOTFS)
    expected = messages.encode_create_process(
        f"{HOST_FOLDER}/prog", str(cwd), arguments, expected_environment
    )
    assert data == expected
    assert len(fds) == 3
    caller.answer(messages.encode_response(0), messages.encode_exit_status(7))
    assert caller.finish() == (7, "")


def test_the_launch_form_runs_an_absolute_host_path(native: str, tmp_path: Path) -> None:
    caller = Caller(tmp_path, _command("native", native, ["/run/WSL/interop/launch", "/bin/x", "a"]), {}, "/")
    data, fds = caller.accept()
    _close(fds)
    request = messages.decode_create_process(data, 10, 10)
    assert (request.filename, request.cwd, request.arguments) == ("/bin/x", "/", ["a"])
    caller.answer(messages.encode_response(0), messages.encode_exit_status(300))
    assert caller.finish() == (300 & 0xFF, "")


def _refused(result: int) -> Callable[[Caller], None]:
    def play(caller: Caller) -> None:
        _data, fds = caller.accept()
        _close(fds)
        caller.answer(messages.encode_response(result))

    return play


def _closed_after_start(caller: Caller) -> None:
    _data, fds = caller.accept()
    _close(fds)
    caller.answer(messages.encode_response(0))


def _nobody_listens(caller: Caller) -> None:
    assert not os.path.exists(caller.path)


@pytest.mark.parametrize(
    ("play", "code"),
    [
        (_refused(errno.ENOENT), 127),
        (_refused(errno.EACCES), 126),
        (_refused(errno.EPERM), 1),
        (_closed_after_start, 1),
        (_nobody_listens, 1),
    ],
)
def test_errors_as_the_python_client_prints_them(
    native: str, tmp_path: Path, play: Callable[[Caller], None], code: int
) -> None:
    results = []
    for client in ("native", "python"):
        folder = tmp_path / client
        folder.mkdir()
        listen = play is not _nobody_listens
        caller = Caller(folder, _command(client, native, [INVOKED]), {}, "/", listen)
        play(caller)
        exit_code, err = caller.finish()
        results.append((exit_code, err.replace(str(folder), "FOLDER")))
    assert results[0] == results[1]
    assert results[0][0] == code
    assert results[0][1].startswith("pywsl: ")


def test_usage_errors(native: str) -> None:
    for arguments in ([], ["/run/WSL/interop/launch"], ["/run/WSL/interop/launch", "relative"]):
        result = subprocess.run(
            [native, "--context", MOUNT, ROOTFS, *arguments], capture_output=True, timeout=DEADLINE
        )
        assert result.returncode == 1
        assert result.stderr.startswith(b"pywsl: usage: launch HOSTPATH")


def test_as_the_launcher_itself_it_reads_the_instance_context(native: str) -> None:
    # The file init writes exists only inside a distribution (the end-to-end tests use it).
    assert not os.path.exists(interop_init.CONTEXT_FILE)
    result = subprocess.run(
        [INVOKED], executable=native, capture_output=True, timeout=DEADLINE, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"pywsl: cannot read {interop_init.CONTEXT_FILE}: ")


@pytest.mark.parametrize(
    ("invoked", "environment"),
    [("/usr/bin/wslpath", {}), (INVOKED, {"PYWSL_INTEROP_CLIENT": "python"})],
)
def test_what_the_python_client_does_goes_to_it(
    native: str, invoked: str, environment: dict[str, str]
) -> None:
    assert not os.path.exists(interop_init.PYTHON_LAUNCHER)  # only inside: here the exec fails
    result = subprocess.run(
        [native, "--context", MOUNT, ROOTFS, invoked],
        capture_output=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
        env=environment,
    )
    assert result.returncode == 126
    assert result.stderr.decode().startswith(f"pywsl: cannot start {interop_init.PYTHON_LAUNCHER}: ")


def test_signals_go_to_the_host_program(native: str, tmp_path: Path) -> None:
    caller = Caller(tmp_path, _command("native", native, [INVOKED]), {}, "/")
    _data, fds = caller.accept()
    _close(fds)
    caller.answer(messages.encode_response(0))
    assert caller.connection is not None
    forwarded = []
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2):
        caller.process.send_signal(number)
        frame = caller.connection.recv(20, socket.MSG_WAITALL)
        assert messages.HEADER.unpack_from(frame)[0] == messages.SIGNAL_PROCESS
        forwarded.append(messages.int32_at_16(frame))
    assert forwarded == [signal.SIGINT, signal.SIGTERM, signal.SIGUSR2]
    caller.answer(messages.encode_exit_status(130))
    assert caller.finish() == (130, "")


def test_an_oversize_request_is_refused_before_connecting(native: str, tmp_path: Path) -> None:
    arguments = ["x" * 100_000] * (messages.MAX_STRINGS_BYTES // 100_000 + 1)  # each under MAX_ARG_STRLEN
    caller = Caller(tmp_path, _command("native", native, [INVOKED, *arguments]), {}, "/")
    code, err = caller.finish()
    assert code == 126
    assert "Argument list too long" in err


def test_the_build_is_cached_by_source_and_compiler(
    native: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = os.stat(native)
    assert stat.S_IMODE(info.st_mode) == 0o755 and info.st_uid == os.geteuid()
    monkeypatch.setenv(interop_native.CACHE_ROOT_ENV, str(Path(native).parents[1]))
    built = interop_native.build()
    assert built is not None and built.path == native
    assert os.stat(native).st_mtime_ns == info.st_mtime_ns  # not built again
    assert not [name for name in os.listdir(os.path.dirname(native)) if name.startswith(".")]
    monkeypatch.setenv(interop_native.DISABLE_ENV, "0")
    assert interop_native.build() is None


def test_a_cache_others_can_write_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "open"
    (root / "interop").mkdir(parents=True)
    (root / "interop").chmod(0o777)
    monkeypatch.setenv(interop_native.CACHE_ROOT_ENV, str(root))
    assert interop_native.build() is None
    assert os.listdir(root / "interop") == []


def test_no_compiler_no_native_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(interop_native.CACHE_ROOT_ENV, str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert interop_native.build() is None


def test_the_dynamic_build_serves_the_same_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(interop_native.CACHE_ROOT_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(interop_native, "LINKS", ((),))  # as on a host without a static C library
    built = interop_native.build()
    assert built is not None and not built.static
    caller = Caller(tmp_path, _command("native", built.path, [INVOKED, "a"]), {"TERM": "t"}, "/")
    data, fds = caller.accept()
    _close(fds)
    expected = messages.encode_create_process(
        f"{HOST_FOLDER}/prog", "/", ["a"], interop_paths.forwarded_environment({"TERM": "t"}, MOUNT, ROOTFS)
    )
    assert data == expected
    caller.answer(messages.encode_response(0), messages.encode_exit_status(0))
    assert caller.finish() == (0, "")
