"""`--install` end to end: a real HTTP server on 127.0.0.1, real images, a real session and VM.

Every test installs into one session whose registry, distributions and VM runtime folder live in
a temporary folder; the VM is shut down and every file removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_install_support import (
    FileServer,
    closed_port_url,
    debian_archive,
    file_server,
    manifest_document,
    rootfs_tar,
    sha256_hex,
    version_entry,
)

from pywsl.api.errors import WslError
from pywsl.api.install import builtin_catalog, builtin_source
from pywsl.api.install.apt_sources import host_apt_sources, image_sources, mirror_for, security_mirror_for
from pywsl.api.install.download import TEMP_PREFIX, TemporaryFile
from pywsl.api.install.first_run_setup import SETUP_SCRIPT, SETUP_SCRIPT_PATH, distribution_conf
from pywsl.api.install.installer import install, launch_default_shell, list_online
from pywsl.api.install.manifest import APPEND_URL_ENV, URL_ENV
from pywsl.api.install.oobe import run_oobe_if_pending

__all__ = ["debian_archive", "file_server"]

REPOSITORY = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installing distributions in-process needs root")

# Debian's busybox has no adduser applet: the setup command creates the account by hand.
CREATE_USER = (
    "echo 'tiny:x:1000:1000:Tiny:/home/tiny:/bin/sh' >> /etc/passwd && "
    "echo 'tiny:x:1000:' >> /etc/group && mkdir -p /home/tiny && chown 1000:1000 /home/tiny && "
    "echo created tiny"
)
OOBE_CONF = f'[oobe]\ncommand = "{CREATE_USER}"\ndefaultUid = 1000\ndefaultName = Tiny-OOBE\n'


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The user environment of the session under test: every pywsl folder below one temporary one."""
    root = tmp_path_factory.mktemp("install-e2e")
    env = {
        "HOME": str(root / "home"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_STATE_HOME": str(root / "state"),
        "PYWSL_RUNTIME_ROOT": str(root / "run"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    for folder in ("home", "data", "config", "state", "run"):
        (root / folder).mkdir(mode=0o700)
    with pytest.MonkeyPatch.context() as patch:
        for key in ("PYWSL_RUNTIME_ROOT", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
            patch.setenv(key, env[key])
        patch.delenv(URL_ENV, raising=False)
        patch.delenv(APPEND_URL_ENV, raising=False)
        yield env
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def session(environment: dict[str, str]) -> Iterator[Any]:
    from pywsl.api.session.user_session import UserSession

    opened = UserSession(environ=environment)
    try:
        yield opened
    finally:
        for info in opened.enumerate_distributions():
            with contextlib.suppress(WslError):
                opened.unregister_distribution(info.id)
        with contextlib.suppress(WslError):
            opened.shutdown(force=True)


@pytest.fixture
def clean(session: Any) -> Iterator[Any]:
    """The session, with every distribution a test installed removed afterwards."""
    yield session
    for info in session.enumerate_distributions():
        with contextlib.suppress(WslError):
            session.unregister_distribution(info.id)


def data_dir(environment: dict[str, str]) -> Path:
    return Path(environment["XDG_DATA_HOME"]) / "pywsl"


def leftovers(environment: dict[str, str]) -> list[str]:
    folder = data_dir(environment)
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(TEMP_PREFIX))


Families = dict[str, list[dict[str, Any]]]


def run(session: Any, distro: str, command: str, *, user: str = "") -> tuple[int, str]:
    process = session.create_lx_process(
        distro,
        ["/bin/sh", "-c", command],
        filename="/bin/sh",
        username=user,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output, _ = process.communicate(timeout=60)
    return process.wait(), (output or b"").decode()


def publish(
    server: FileServer, families: Families, *, path: str = "/list.json", default: str | None = None
) -> str:
    return server.add(path, manifest_document(families, default=default))


def tiny_family(server: FileServer, *, marker: str = "main", prefix: str = "") -> Families:
    """A family "Tiny" with a default version Tiny-1 and a version Tiny-2, images on the server."""
    one = rootfs_tar(compression="gz", extra={"./etc/marker": marker + "-1\n"})
    two = rootfs_tar(compression="xz", extra={"./etc/marker": marker + "-2\n"})
    url_one = server.add(f"{prefix}/tiny-1.wsl", one)
    url_two = server.add(f"{prefix}/tiny-2.wsl", two)
    return {
        "Tiny": [
            version_entry("Tiny-1", "Tiny Linux 1", url_one, sha256_hex(one), default=True),
            version_entry("Tiny-2", "Tiny Linux 2", url_two, "0x" + sha256_hex(two).upper()),
        ]
    }


def test_family_name_installs_its_default_version(
    clean: Any, file_server: FileServer, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, publish(file_server, tiny_family(file_server)))
    statuses: list[str] = []
    seen: list[tuple[int, int | None]] = []
    info = install(
        clean,
        "tiny",
        no_launch=True,
        on_status=statuses.append,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert info.name == "Tiny-1" and info.run_oobe
    assert statuses[:2] == ["Downloading: Tiny Linux 1", "Installing: Tiny Linux 1"]
    assert statuses[2] == "Distribution successfully installed. It can be launched via 'pywsl -d Tiny-1'"
    assert seen and seen[-1][0] > 0
    assert run(clean, "Tiny-1", "cat /etc/marker") == (0, "main-1\n")
    assert leftovers(environment) == []


def test_version_name_with_name_and_location(
    clean: Any, file_server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, publish(file_server, tiny_family(file_server)))
    location = tmp_path / "where"
    info = install(clean, "TINY-2", name="Mine", location=location, no_launch=True)
    assert info.name == "Mine" and Path(info.base_path) == location
    assert run(clean, "Mine", "cat /etc/marker") == (0, "main-2\n")
    assert [p.name for p in tmp_path.iterdir()] == ["where"]


def test_append_manifest_wins(clean: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_ENV, publish(file_server, tiny_family(file_server)))
    override = publish(
        file_server,
        tiny_family(file_server, marker="override", prefix="/o"),
        path="/override.json",
        default="Tiny-2",
    )
    monkeypatch.setenv(APPEND_URL_ENV, override)
    warnings: list[str] = []
    info = install(clean, None, no_launch=True, on_warning=warnings.append)
    assert info.name == "Tiny-2"
    assert warnings == ['The distribution "Tiny-2" is provided by an override manifest.']
    assert run(clean, "Tiny-2", "cat /etc/marker") == (0, "override-2\n")
    names = [(e.name, e.source, e.is_default) for e in list_online()]
    assert ("Tiny-2", "manifest", True) in names and ("Tiny-1", "manifest", False) in names


def test_hash_mismatch_installs_nothing(
    clean: Any, file_server: FileServer, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    image = rootfs_tar()
    url = file_server.add("/bad.wsl", image)
    monkeypatch.setenv(
        URL_ENV, publish(file_server, {"Bad": [version_entry("Bad", "Bad", url, "00" * 32, default=True)]})
    )
    with pytest.raises(WslError) as caught:
        install(clean, "Bad", no_launch=True)
    assert caught.value.code == "TRUST_E_BAD_DIGEST"
    assert sha256_hex(image) in caught.value.message and "00" * 32 in caught.value.message
    assert clean.enumerate_distributions() == []
    assert leftovers(environment) == []


def test_manifest_errors(clean: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_ENV, file_server.add("/broken.json", b"{ nope"))
    with pytest.raises(WslError) as invalid:
        install(clean, "Tiny", no_launch=True)
    assert invalid.value.code == "WSL_E_INVALID_JSON"
    monkeypatch.setenv(URL_ENV, closed_port_url())
    with pytest.raises(WslError) as unreachable:
        install(clean, "Tiny", no_launch=True)
    assert unreachable.value.code == "WININET_E_CANNOT_CONNECT"
    monkeypatch.setenv(URL_ENV, publish(file_server, tiny_family(file_server)))
    with pytest.raises(WslError) as unknown:
        install(clean, "Nonesuch", no_launch=True)
    assert unknown.value.code == "WSL_E_DISTRO_NOT_FOUND"
    store_only = {
        "Name": "StoreOnly",
        "FriendlyName": "Store",
        "StoreAppId": "9X",
        "Amd64": True,
        "Arm64": True,
    }
    store = file_server.add("/store.json", json.dumps({"Distributions": [store_only]}).encode())
    monkeypatch.setenv(URL_ENV, store)
    with pytest.raises(WslError) as legacy:
        install(clean, "storeonly", no_launch=True)
    assert legacy.value.code == "WSL_E_DISTRO_ONLY_AVAILABLE_FROM_STORE"
    assert clean.enumerate_distributions() == []


def test_taken_name_fails_before_downloading(
    clean: Any, file_server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_ENV, publish(file_server, tiny_family(file_server)))
    install(clean, "Tiny", no_launch=True)
    file_server.requests.clear()
    with pytest.raises(WslError) as caught:
        install(clean, "Tiny-1", no_launch=True)
    assert caught.value.code == "ERROR_ALREADY_EXISTS"
    with pytest.raises(WslError):
        install(clean, "Tiny-2", name="tiny-1", no_launch=True)
    assert file_server.requests == ["/list.json", "/list.json"]


def test_from_file_default_name_and_name_needed(clean: Any, tmp_path: Path) -> None:
    named = tmp_path / "named.wsl"
    named.write_bytes(rootfs_tar(conf="[oobe]\ndefaultName = FromConf\n", compression="xz"))
    info = install(clean, None, from_file=named, no_launch=True)
    assert info.name == "FromConf" and info.run_oobe
    anonymous = tmp_path / "anonymous.tar"
    anonymous.write_bytes(rootfs_tar())
    with pytest.raises(WslError) as caught:
        install(clean, None, from_file=anonymous, no_launch=True)
    assert caught.value.code == "WSL_E_DISTRIBUTION_NAME_NEEDED"
    assert [i.name for i in clean.enumerate_distributions()] == ["FromConf"]
    with anonymous.open("rb") as stream:
        info = install(clean, None, from_file=stream, name="Given", no_launch=True)
    assert info.name == "Given"
    with pytest.raises(WslError) as both:
        install(clean, "Tiny", from_file=anonymous)
    assert both.value.code == "E_INVALIDARG"


def test_launch_after_install_uses_the_callable(clean: Any, tmp_path: Path) -> None:
    image = tmp_path / "image.wsl"
    image.write_bytes(rootfs_tar())
    launched: list[Any] = []
    statuses: list[str] = []
    info = install(
        clean, None, from_file=image, name="Launched", launch=launched.append, on_status=statuses.append
    )
    assert launched == [info]
    assert statuses[-1] == "Launching Launched..."


def test_launch_default_shell_without_a_terminal(clean: Any, tmp_path: Path) -> None:
    """Fed from a file, the shell starts as the current default user and the setup stays pending."""
    image = tmp_path / "image.wsl"
    image.write_bytes(rootfs_tar(conf="[oobe]\ncommand = echo setting up > /etc/oobe-ran\n"))
    info = install(clean, None, from_file=image, name="Plain", no_launch=True)
    script = tmp_path / "input"
    script.write_text("cat /etc/oobe-ran 2>/dev/null; id -u; exit 7\n")
    output = tmp_path / "output"
    with script.open("rb") as stdin, output.open("wb") as stdout:
        status = launch_default_shell(clean, info.name, stdin=stdin, stdout=stdout, stderr=stdout)
    assert status == 7
    assert output.read_text().split() == ["0"]
    (pending,) = [i for i in clean.enumerate_distributions() if i.name == "Plain"]
    assert pending.run_oobe
    # An interactive launch runs it (here told so: the setup command reads nothing).
    assert run_oobe_if_pending(clean, "Plain", stdin=subprocess.DEVNULL, interactive=True) is None
    with script.open("rb") as stdin, output.open("wb") as stdout:
        assert launch_default_shell(clean, info.name, stdin=stdin, stdout=stdout, stderr=stdout) == 7
    assert output.read_text().split() == ["setting", "up", "0"]
    (after,) = [i for i in clean.enumerate_distributions() if i.name == "Plain"]
    assert not after.run_oobe


def test_oobe_failure_keeps_it_pending(clean: Any, tmp_path: Path) -> None:
    image = tmp_path / "image.wsl"
    # Quoted: an unquoted ";" starts a comment in this file format, as in WSL.
    image.write_bytes(rootfs_tar(conf='[oobe]\ncommand = "echo nope; exit 3"\ndefaultUid = 1000\n'))
    install(clean, None, from_file=image, name="Failing", no_launch=True)
    errors = tmp_path / "errors"
    with errors.open("wb") as sink:
        status = run_oobe_if_pending(
            clean, "Failing", stdin=subprocess.DEVNULL, stdout=sink, stderr=sink, interactive=True
        )
    assert status == 1
    assert errors.read_text() == 'nope\nOOBE command "echo nope; exit 3" failed, exiting\n'
    (info,) = [i for i in clean.enumerate_distributions() if i.name == "Failing"]
    assert info.run_oobe and info.default_uid == 0
    # A launch with a command never runs OOBE.
    assert run_oobe_if_pending(clean, "Failing", command_line=["true"]) is None


_PTY_CLIENT = """
import sys
from pywsl.api.session.user_session import UserSession
from pywsl.api.install.installer import launch_default_shell
import json
sys.exit(launch_default_shell(UserSession(environ=json.loads(sys.argv[1])), sys.argv[2]))
"""


def _python_env(extra: dict[str, str]) -> dict[str, str]:
    paths = [str(REPOSITORY), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(paths), "TERM": "xterm"}


def _read_until(fd: int, needle: bytes, deadline: float) -> bytes:
    seen = b""
    while needle not in seen:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for {needle!r}; got {seen!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_oobe_creates_a_user_and_sets_the_default_uid_under_a_pty(
    clean: Any, tmp_path: Path, environment: dict[str, str]
) -> None:
    image = tmp_path / "oobe.wsl"
    image.write_bytes(rootfs_tar(conf=OOBE_CONF, compression="gz"))
    info = install(clean, None, from_file=image, no_launch=True)
    assert info.name == "Tiny-OOBE" and info.run_oobe and info.default_uid == 0
    master, slave = os.openpty()
    try:
        client = subprocess.Popen(
            [sys.executable, "-c", _PTY_CLIENT, json.dumps(environment), info.name],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env=_python_env(environment),
        )
        os.close(slave)
        slave = -1
        deadline = time.monotonic() + 60
        greeting = _read_until(master, b"$ ", deadline)
        assert b"created tiny" in greeting  # the setup command ran on this terminal
        os.write(master, b"echo uid=$(id -u) user=$(id -un)\n")
        text = _read_until(master, b"user=tiny", deadline)
        assert b"uid=1000" in text
        os.write(master, b"exit 5\n")
        assert client.wait(timeout=60) == 5
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    (after,) = [i for i in clean.enumerate_distributions() if i.name == "Tiny-OOBE"]
    assert after.default_uid == 1000 and not after.run_oobe
    assert run(clean, "Tiny-OOBE", "id -un") == (0, "tiny\n")


_INSTALL_CLIENT = """
import json, sys
from pywsl.api.session.user_session import UserSession
from pywsl.api.install.installer import install
install(UserSession(environ=json.loads(sys.argv[1])), "Tiny", no_launch=True)
"""


def _as_from_a_shell() -> None:
    """The signal state a shell gives the programs it starts (whatever the test process has)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_download_leaves_nothing(
    clean: Any, file_server: FileServer, environment: dict[str, str], sig: signal.Signals
) -> None:
    big = os.urandom(8 * 1024 * 1024)
    url = file_server.add("/big.wsl", big)
    file_server.stall["/big.wsl"] = release = threading.Event()
    entry = version_entry("Tiny", "Tiny", url, sha256_hex(big), default=True)
    manifest = publish(file_server, {"Tiny": [entry]})
    client = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-c", _INSTALL_CLIENT, json.dumps(environment)],
        env=_python_env({**environment, URL_ENV: manifest}),
        preexec_fn=_as_from_a_shell,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert file_server.stalled.wait(30)
        deadline = time.monotonic() + 10
        while not leftovers(environment) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(environment), "the download never created its temporary file"
        client.send_signal(sig)
        # Well within the download's own 15 s timeout: the signal ends it, not the stalled server.
        try:
            _, stderr = client.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            client.send_signal(signal.SIGABRT)  # faulthandler prints where the client was stuck
            _, stderr = client.communicate(timeout=10)
            pytest.fail(f"the client outlived {sig.name} by 8 s:\n{stderr.decode(errors='replace')}")
    finally:
        release.set()
        if client.poll() is None:
            client.kill()
            client.wait()
        file_server.stalled.clear()
    assert client.returncode != 0
    reason = "KeyboardInterrupt" if sig == signal.SIGINT else f"interrupted by signal {int(sig)}"
    assert reason in stderr.decode(errors="replace"), stderr
    assert leftovers(environment) == []
    assert clean.enumerate_distributions() == []


def test_stale_temporary_of_a_killed_install_is_cleaned(
    clean: Any, file_server: FileServer, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = data_dir(environment)
    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / f"{TEMP_PREFIX}Tiny-1-killed.wsl"
    stale.write_bytes(b"half a download")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    monkeypatch.setenv(URL_ENV, publish(file_server, tiny_family(file_server)))
    install(clean, "Tiny", no_launch=True)
    assert not stale.exists()
    assert leftovers(environment) == []


def _cached_build(debian_archive: Path, built: list[str]) -> Any:
    """A stand-in for `build_rootfs_archive` that hands out this test run's cached build."""

    def build(entry: builtin_catalog.BuiltinDistribution, work_dir: Path, **_: Any) -> TemporaryFile:
        built.append(entry.suite)
        archive = TemporaryFile(work_dir, entry.name, ".tar")
        with debian_archive.open("rb") as source, os.fdopen(os.dup(archive.fd), "wb") as target:
            shutil.copyfileobj(source, target)
        return archive

    return build


@pytest.mark.slow
def test_builtin_debian_when_the_manifest_is_unreachable(
    clean: Any, debian_archive: Path, environment: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built-in source takes over; its build step is the cached build of this test run."""
    if builtin_catalog.find_builtin("Debian") is None:
        pytest.skip("no built-in Debian on this host")
    built: list[str] = []
    monkeypatch.setattr(builtin_source, "build_rootfs_archive", _cached_build(debian_archive, built))
    monkeypatch.setenv(URL_ENV, closed_port_url())
    warnings: list[str] = []
    listed = list_online(on_warning=warnings.append)
    host_default = builtin_catalog.default_builtin().name
    assert (host_default, "built-in", True) in [(e.name, e.source, e.is_default) for e in listed]
    assert warnings and "Failed to fetch the distribution list" in warnings[0]
    info = install(clean, "Debian", no_launch=True, on_warning=warnings.append)
    assert built == ["bookworm"]
    assert info.name == "Debian" and info.flavor == "debian" and info.run_oobe
    status, output = run(
        clean, "Debian", ". /etc/os-release; echo $VERSION_CODENAME; apt-get --version | head -1"
    )
    assert status == 0 and output.startswith("bookworm\napt ")
    assert leftovers(environment) == []


@pytest.mark.slow
def test_builtin_debian_looks_like_wsls_image(clean: Any, debian_archive: Path) -> None:
    """The cached build's first-run setup file, apt sources and locale."""
    info = install(clean, None, from_file=debian_archive, name="Image", no_launch=True)
    assert info.run_oobe
    conf = run(clean, "Image", "cat /etc/wsl-distribution.conf")
    assert conf == (0, distribution_conf("Debian"))
    assert run(clean, "Image", f"stat -c '%U %a' {SETUP_SCRIPT_PATH}") == (0, "root 755\n")
    assert run(clean, "Image", f"cat {SETUP_SCRIPT_PATH}") == (0, SETUP_SCRIPT)
    host = host_apt_sources()
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    mirrors = mirror_for("debian", host), security_mirror_for("debian", host)
    expected = image_sources("debian", "bookworm", *mirrors, keyring)
    assert run(clean, "Image", "cat /etc/apt/sources.list.d/debian.sources") == (0, expected)
    assert run(clean, "Image", "grep -v '^#' /etc/apt/sources.list | wc -l") == (0, "0\n")
    # The LANG of every registration (en_US.UTF-8) exists: no complaint from locale, and it is listed.
    assert run(clean, "Image", "echo $LANG; locale 2>&1 >/dev/null; locale -a | grep -x en_US.utf8") == (
        0,
        "en_US.UTF-8\nen_US.utf8\n",
    )
    tools = "cat /etc/default/locale; for p in sudo useradd chpasswd; do command -v $p; done"
    assert run(clean, "Image", tools) == (
        0,
        "LANG=en_US.UTF-8\n/usr/bin/sudo\n/usr/sbin/useradd\n/usr/sbin/chpasswd\n",
    )


class Terminal:
    """`launch_default_shell` in a child process on a new pseudo-terminal, driven by what it prints."""

    def __init__(self, environment: dict[str, str], distro: str) -> None:
        self.master, slave = os.openpty()
        try:
            self.client = subprocess.Popen(
                [sys.executable, "-c", _PTY_CLIENT, json.dumps(environment), distro],
                stdin=slave,
                stdout=slave,
                stderr=slave,
                start_new_session=True,
                env=_python_env(environment),
            )
        finally:
            os.close(slave)
        self.deadline = time.monotonic() + 120
        self.seen = b""

    def expect(self, text: str) -> bytes:
        """Everything printed up to and including `text` since the last expectation."""
        needle = text.encode()
        while needle not in self.seen:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; got {self.seen!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"the terminal closed before {text!r}; got {self.seen!r}")
                self.seen += chunk
        before, found, after = self.seen.partition(needle)
        self.seen = after
        return before + found

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.client.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        finally:
            if self.client.poll() is None:
                self.client.kill()
                self.client.wait()
            os.close(self.master)


@pytest.mark.slow
def test_builtin_debian_first_launch_creates_the_default_user(
    clean: Any, debian_archive: Path, environment: dict[str, str]
) -> None:
    install(clean, None, from_file=debian_archive, name="First", no_launch=True)
    # End of input at the password prompt: the user just made is removed, the setup stays pending.
    terminal = Terminal(environment, "First")
    try:
        terminal.expect("Enter new UNIX username: ")
        terminal.type("alice\n")
        terminal.expect("New password: ")
        terminal.type("\x04")
        text = terminal.expect(f'OOBE command "{SETUP_SCRIPT_PATH}" failed, exiting')
    finally:
        status = terminal.close()
    assert status == 1 and b"this setup runs again at the next launch" in text
    assert run(clean, "First", "getent passwd 1000 alice || echo none; ls -A /home") == (0, "none\n")
    (pending,) = [i for i in clean.enumerate_distributions() if i.name == "First"]
    assert pending.run_oobe and pending.default_uid == 0

    password = "Correct-Horse-7"
    terminal = Terminal(environment, "First")
    try:
        terminal.expect("Enter new UNIX username: ")
        terminal.type("Bad Name\n")
        assert b"starts with a lower-case letter" in terminal.expect("Enter new UNIX username: ")
        terminal.type("root\n")
        assert b"root already exists" in terminal.expect("Enter new UNIX username: ")
        terminal.type("alice\n")
        terminal.expect("New password: ")
        terminal.type("one\n")
        terminal.expect("Retype new password: ")
        terminal.type("two\n")
        assert b"Sorry, passwords do not match." in terminal.expect("New password: ")
        terminal.type(password + "\n")
        terminal.expect("Retype new password: ")
        terminal.type(password + "\n")
        created = terminal.expect("Created alice, the default user of this distribution.")
        terminal.expect("$ ")
        terminal.type("echo user=$(id -un) uid=$(id -u) groups=$(id -Gn | tr ' ' ,) home=$HOME.\n")
        shown = terminal.expect("home=/home/alice.")
        terminal.type("exit 3\n")
    finally:
        status = terminal.close()
    assert status == 3
    assert password.encode() not in created and b"two" not in created  # passwords are not echoed
    assert b"user=alice uid=1000 groups=alice,adm,cdrom,sudo,dip,plugdev,users" in shown
    (after,) = [i for i in clean.enumerate_distributions() if i.name == "First"]
    assert after.default_uid == 1000 and not after.run_oobe
    assert run(clean, "First", "id -un; passwd -S alice | cut -d' ' -f2") == (0, "alice\nP\n")
    # The password works: sudo accepts it.
    sudo = f"echo {password} | sudo -S -p '' id -u 2>/dev/null"
    assert run(clean, "First", sudo, user="alice") == (0, "0\n")
