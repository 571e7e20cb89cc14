"""`InstallBuiltinDistribution`: what the service accepts, its build queue, its cache, cancelling a
real debootstrap run, and the client's words when the service is not running."""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import pid_alive, wait_until

from pywsl.api.cancellation import CancelToken, cancel_scope
from pywsl.api.errors import WslError
from pywsl.api.install.builtin_cache import BUILD_CACHE_ENV, BuildCache, check_root_only
from pywsl.api.install.builtin_catalog import find_builtin, lookup_builtin
from pywsl.api.install.builtin_service import BuildQueue, builtin_entry, install_builtin_distribution
from pywsl.api.service import rpc
from pywsl.api.service import server as service
from pywsl.api.service.client import ServiceClient, _unreachable

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the build folder belongs to root")

HOSTILE_NAMES = [
    "../Debian",
    "/usr/share/debootstrap/scripts/sid",
    "Debian/../../etc",
    "http://127.0.0.1:1/debian",
    "file:///etc/shadow",
    "bookworm",
    "noble",
    "Debian ",
    "Debian\n",
    "-Debian",
    "Debian;id",
    "",
    ".",
    "~root",
    "Debian-12/..",
    "x" * 5000,
]


class UntouchableSession:
    """A session that fails the test if a refused request reaches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the refused request used the session ({name})")


def _request(parameters: dict[str, Any]) -> rpc.Request:
    return rpc.Request(f"{rpc.INTERFACE}.InstallBuiltinDistribution", parameters, [])


@pytest.fixture
def cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv(BUILD_CACHE_ENV, str(folder))
    return folder


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_only_a_catalog_name_is_accepted(name: str, cache_env: Path) -> None:
    answer = service.handle_request(UntouchableSession(), _request({"distribution": name}))
    assert answer["error"] == rpc.ERROR_WSL, answer
    assert answer["parameters"]["code"] == "WSL_E_DISTRO_NOT_FOUND"
    assert "--list --online" in answer["parameters"]["message"]
    assert len(answer["parameters"]["message"]) < 200
    assert not cache_env.exists(), "nothing is prepared for a refused name"


@pytest.mark.parametrize(
    "parameters, refused",
    [
        ({"distribution": "Debian", "mirror": "http://127.0.0.1:1/"}, "mirror"),
        ({"distribution": "Debian", "suite": "sid"}, "suite"),
        ({"distribution": "Debian", "script": "/tmp/x"}, "script"),
        ({"distribution": "Debian", "keyring": "/tmp/k.gpg"}, "keyring"),
        ({"distribution": "Debian", "location": "relative/folder"}, "location"),
        ({"distribution": "Debian", "name": "a\0b"}, "name"),
        ({"distribution": ["Debian"]}, "distribution"),
        ({}, "distribution"),
    ],
)
def test_nothing_but_the_name_location_and_version_is_taken(
    parameters: dict[str, Any], refused: str, cache_env: Path
) -> None:
    answer = service.handle_request(UntouchableSession(), _request(parameters))
    assert answer["error"] == rpc.ERROR_INVALID_PARAMETER, answer
    assert answer["parameters"]["parameter"] == refused
    assert not cache_env.exists()


def test_a_known_name_is_its_catalog_entry_case_insensitively() -> None:
    entry = find_builtin("Debian")
    if entry is None:
        pytest.skip("this host cannot build Debian")
    assert builtin_entry("dEBIAN") == entry
    assert builtin_entry("debian-12").suite == "bookworm"


def test_a_name_this_host_cannot_build_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = lookup_builtin("Debian")
    assert entry is not None
    from dataclasses import replace

    from pywsl.api.install import builtin_catalog

    missing = replace(entry, unavailable="debootstrap is not installed; run 'apt-get install debootstrap'")
    monkeypatch.setattr(builtin_catalog, "builtin_catalog", lambda tools=None: [missing])
    with pytest.raises(WslError) as caught:
        builtin_entry("Debian")
    assert caught.value.code == "ERROR_FILE_NOT_FOUND"
    assert "apt-get install debootstrap" in caught.value.message


class NamedSession:
    """A session that knows one name, to check the early "name taken" answer (before any build)."""

    def __init__(self, taken: str) -> None:
        self.taken = taken

    def get_distribution_id(self, name: str, *, list_all: bool = False) -> object:
        if name.casefold() == self.taken.casefold():
            return object()
        raise WslError("WSL_E_DISTRO_NOT_FOUND")


def test_a_taken_name_is_refused_before_building(cache_env: Path) -> None:
    if find_builtin("Debian") is None:
        pytest.skip("this host cannot build Debian")
    with pytest.raises(WslError) as caught:
        install_builtin_distribution(NamedSession("debian"), "Debian")
    assert caught.value.code == "ERROR_ALREADY_EXISTS"
    with pytest.raises(WslError) as caught:
        install_builtin_distribution(NamedSession("Mine"), "Debian", name="bad/name")
    assert caught.value.code == "E_INVALIDARG"
    assert not cache_env.exists()


# -- the build queue ------------------------------------------------------------------------------


class Holder(threading.Thread):
    """Takes a turn of the queue and keeps it until `release` is set."""

    def __init__(self, queue: BuildQueue, uid: int, token: CancelToken | None = None) -> None:
        super().__init__(daemon=True)
        self.queue, self.uid, self.token = queue, uid, token or CancelToken()
        self.waiting = threading.Event()
        self.holding = threading.Event()
        self.release = threading.Event()
        self.error: WslError | None = None

    def run(self) -> None:
        try:
            with self.queue.turn(self.uid, self.token, on_wait=self.waiting.set):
                self.holding.set()
                self.release.wait(30)
        except WslError as error:
            self.error = error


def _busy(queue: BuildQueue, uid: int) -> WslError:
    with pytest.raises(WslError) as caught, queue.turn(uid, CancelToken()):
        pass
    assert caught.value.code == "ERROR_BUSY"
    return caught.value


def test_one_build_at_a_time_and_a_bounded_queue() -> None:
    queue = BuildQueue(max_waiting=2, wait_seconds=60)
    first = Holder(queue, 1001)
    first.start()
    assert first.holding.wait(10)
    assert "already being built for you" in _busy(queue, 1001).message
    waiters = [Holder(queue, 1002), Holder(queue, 1003)]
    for waiter in waiters:
        waiter.start()
        assert waiter.waiting.wait(10)
    assert queue.waiting == 2
    assert "try again later" in _busy(queue, 1004).message
    first.release.set()
    first.join(10)
    assert wait_until(lambda: any(w.holding.is_set() for w in waiters), 10)
    holders = [w for w in waiters if w.holding.is_set()]
    assert len(holders) == 1, "only one waiter gets the turn"
    assert "already being built for you" in _busy(queue, holders[0].uid).message
    holders[0].release.set()
    other = next(w for w in waiters if w is not holders[0])
    assert other.holding.wait(10)
    other.release.set()
    for thread in (*waiters, first):
        thread.join(10)
        assert thread.error is None
    with queue.turn(1004, CancelToken()):
        assert queue.waiting == 0


def test_the_wait_is_bounded_in_time() -> None:
    queue = BuildQueue(max_waiting=4, wait_seconds=0.3)
    first = Holder(queue, 1001)
    first.start()
    assert first.holding.wait(10)
    started = time.monotonic()
    error = _busy(queue, 1002)
    assert "still being built after" in error.message
    assert time.monotonic() - started < 10
    first.release.set()
    first.join(10)
    with queue.turn(1002, CancelToken()):
        pass


def test_a_cancelled_waiter_leaves_the_queue_at_once() -> None:
    queue = BuildQueue(max_waiting=1, wait_seconds=600)
    first = Holder(queue, 1001)
    first.start()
    assert first.holding.wait(10)
    token = CancelToken()
    waiter = Holder(queue, 1002, token)
    waiter.start()
    assert waiter.waiting.wait(10)
    started = time.monotonic()
    token.cancel()
    waiter.join(10)
    assert not waiter.is_alive() and time.monotonic() - started < 10
    assert waiter.error is not None and waiter.error.code == "E_ABORT"
    assert not waiter.holding.is_set()
    assert queue.waiting == 0
    first.release.set()
    first.join(10)
    with queue.turn(1002, CancelToken()):  # its user may ask again
        pass


# -- the cache ------------------------------------------------------------------------------------


@root_only
def test_the_build_folder_is_root_only(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "cache")
    cache.prepare()
    info = os.lstat(cache.folder)
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o700)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(WslError) as caught:
        BuildCache(shared / "cache").prepare()
    assert caught.value.code == "E_ACCESSDENIED" and "writable by other users" in caught.value.message
    assert not (shared / "cache").exists()
    owned = tmp_path / "owned"
    owned.mkdir()
    os.chown(owned, 65534, 65534)
    with pytest.raises(WslError) as caught:
        BuildCache(owned).prepare()
    assert "owned by uid 65534" in caught.value.message
    link = tmp_path / "link"
    link.symlink_to(cache.folder)
    with pytest.raises(WslError):
        check_root_only(link / "x")
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    BuildCache(sticky / "cache").prepare()  # as /tmp: others cannot replace root's entries


@root_only
def test_a_kept_archive_is_reused_only_while_it_is_sound(tmp_path: Path) -> None:
    entry = lookup_builtin("Debian")
    assert entry is not None
    cache = BuildCache(tmp_path / "cache", max_age=3600)
    mirror = "http://127.0.0.1:9/debian"
    assert cache.open_fresh(entry, mirror) is None
    path = cache.path_for(entry, mirror)
    assert path.parent == cache.folder and path.name.startswith("Debian-bookworm-")
    assert cache.path_for(entry, "http://127.0.0.1:9/other") != path
    path.write_bytes(b"a root filesystem")
    os.chmod(path, 0o600)
    fd = cache.open_fresh(entry, mirror)
    assert fd is not None
    try:
        assert os.read(fd, 100) == b"a root filesystem"
        with pytest.raises(OSError) as caught:
            os.write(fd, b"x")
        assert caught.value.errno == errno.EBADF, "handed out read-only"
    finally:
        os.close(fd)
    os.chmod(path, 0o644)
    assert cache.open_fresh(entry, mirror) is None and not path.exists()
    path.write_bytes(b"old")
    os.chmod(path, 0o600)
    old = time.time() - 7200
    os.utime(path, (old, old))
    assert cache.open_fresh(entry, mirror) is None and not path.exists(), "expired: removed"
    path.symlink_to("/etc/shadow")
    assert cache.open_fresh(entry, mirror) is None


# -- cancelling a real build ----------------------------------------------------------------------


class SilentMirror:
    """A loopback TCP port that accepts connections and never answers (a stalled mirror)."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.connected = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/debian"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)
            self.connected.set()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(10)
        for connection in self.held:
            connection.close()


@pytest.fixture
def silent_mirror() -> Iterator[SilentMirror]:
    mirror = SilentMirror()
    try:
        yield mirror
    finally:
        mirror.close()


def _processes_under(folder: Path) -> list[int]:
    """Processes whose command line names something in `folder`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            command = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        if str(folder).encode() in command:
            found.append(int(entry.name))
    return found


@root_only
def test_a_cancelled_build_kills_debootstrap_and_leaves_nothing(
    tmp_path: Path, silent_mirror: SilentMirror
) -> None:
    entry = find_builtin("Debian")
    if entry is None:
        pytest.skip("this host cannot build Debian")
    cache = BuildCache(tmp_path / "cache")
    token = CancelToken()
    outcome: list[BaseException | int] = []

    def build() -> None:
        with cancel_scope(token):
            try:
                outcome.append(cache.build(entry, mirror=silent_mirror.url))
            except BaseException as error:
                outcome.append(error)

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    assert silent_mirror.connected.wait(60), "debootstrap reached the mirror"
    builders = _processes_under(cache.folder)
    assert builders, "debootstrap runs in the private build folder"
    private = [p for p in cache.folder.iterdir() if p.is_dir() and p.name != "logs"]
    assert len(private) == 1 and stat.S_IMODE(private[0].stat().st_mode) == 0o700
    started = time.monotonic()
    token.cancel()
    worker.join(30)
    assert not worker.is_alive() and time.monotonic() - started < 30
    assert len(outcome) == 1 and isinstance(outcome[0], WslError) and outcome[0].code == "E_ABORT", outcome
    assert wait_until(lambda: not any(pid_alive(pid) for pid in builders), 10)
    assert [p.name for p in cache.folder.iterdir() if p.name != "logs"] == []
    assert list((cache.folder / "logs").iterdir()) == [], "no log of a cancelled build"


# -- the client when the service is not there -----------------------------------------------------


def _not_running(path: str) -> WslError:
    with pytest.raises(WslError) as caught:
        ServiceClient(path).enumerate_distributions()
    return caught.value


def test_a_missing_socket_says_how_to_start_the_service(tmp_path: Path) -> None:
    error = _not_running(str(tmp_path / "service.sock"))
    assert error.code == "ERROR_SERVICE_NOT_ACTIVE"
    assert "The pywsl service is not running" in error.message
    assert "systemctl enable --now pywsl.socket" in error.message
    assert "'pywsl-service'" in error.message and str(tmp_path / "service.sock") in error.message


def test_a_stale_socket_says_how_to_start_the_service(tmp_path: Path) -> None:
    path = tmp_path / "service.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: connect() is refused
    error = _not_running(str(path))
    assert error.code == "ERROR_SERVICE_NOT_ACTIVE"
    assert "Connection refused" in error.message and "systemctl enable --now pywsl.socket" in error.message


def test_a_socket_the_user_cannot_reach_is_access_denied() -> None:
    error = _unreachable("/run/pywsl/service.sock", OSError(errno.EACCES, os.strerror(errno.EACCES)))
    assert error.code == "E_ACCESSDENIED" and "Permission denied" in error.message


@root_only
def test_a_build_that_takes_too_long_is_stopped(
    tmp_path: Path, silent_mirror: SilentMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pywsl.api.install import builtin_service

    entry = find_builtin("Debian")
    if entry is None:
        pytest.skip("this host cannot build Debian")

    class LoopbackCache(BuildCache):
        """The service's cache, building from the stalled loopback mirror."""

        def build(self, entry: Any, *, progress: Any = None, mirror: str | None = None) -> int:
            return super().build(entry, progress=progress, mirror=silent_mirror.url)

    cache = LoopbackCache(tmp_path / "cache")
    monkeypatch.setattr(builtin_service, "BUILD_TIMEOUT_SECONDS", 5.0)
    started = time.monotonic()
    with cancel_scope(CancelToken()), pytest.raises(WslError) as caught:
        builtin_service._bounded_build(entry, cache, lambda done, total, text: None)
    assert caught.value.code == "WSL_E_INSTALL_PROCESS_FAILED" and "was stopped" in caught.value.message
    assert silent_mirror.connected.is_set(), "debootstrap was running when the time ran out"
    assert time.monotonic() - started < 30
    assert [p.name for p in cache.folder.iterdir() if p.name != "logs"] == []
    assert wait_until(lambda: _processes_under(cache.folder) == [], 10)
