"""The service with real users: isolation, symlink attacks, crashes of the service, many clients.

The service runs as root from this interpreter on a private socket; clients run as two
unprivileged users created for the module (``useradd``, removed with ``userdel -r``), with an
interpreter every user can run: a virtual environment made from the system's Python holding a
copy of pywsl and its pure-Python dependencies. ``session_factory`` runs one scenario both
in-process and through the service.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from busybox_images import BUSYBOX, busybox_archive, os_release_text

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")
# Pure-Python packages the client side imports (copied into the users' environment).
CLIENT_PACKAGES = ("construct", "click", "rich", "markdown_it", "mdurl", "pygments")
WSLCONFIG = "[general]\ninstanceIdleTimeout=120000\n[wsl2]\nvmIdleTimeout=120000\n"


def _library_ready() -> bool:
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("pywsl.api.session", "pywsl.vm.core_vm", "pywsl.guest.mini_init")
    )


pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creates users and runs the service as root"),
    pytest.mark.skipif(not _library_ready(), reason="the session and the VM are not available"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd"),
]


# ------------------------------------------------------------------------------------------------
# The client program the users run
# ------------------------------------------------------------------------------------------------

DRIVER = r'''
import json, os, subprocess, sys, uuid
from pywsl.api.client import ServiceClient
from pywsl.api.errors import WslError


def distro(value):
    return uuid.UUID(value["id"]) if isinstance(value, dict) else value


def run(client, action):
    op = action["op"]
    if op == "list":
        return [{"name": d.name, "id": str(d.id), "state": int(d.state)}
                for d in client.enumerate_distributions()]
    if op == "id":
        return str(client.get_distribution_id(action["name"]))
    if op == "config":
        return client.get_distribution_configuration(distro(action["distro"])).name
    if op == "import":
        source = sys.stdin.buffer if action["archive"] == "-" else action["archive"]
        info = client.register_distribution(action["name"], source, location=action.get("location"))
        return str(info.id)
    if op == "run":
        process = client.create_lx_process(
            distro(action["distro"]), action["command"],
            stdin=subprocess.DEVNULL,
            stdout=None if action.get("passthrough") else subprocess.PIPE)
        if action.get("passthrough"):
            return {"code": process.wait()}
        out, _ = process.communicate()
        return {"code": process.returncode, "stdout": out.decode()}
    if op == "launches":
        failures = []
        for index in range(action["count"]):
            token = f"{action['token']}-{index}"
            try:
                process = client.create_lx_process(
                    action["distro"], ["echo", token], filename="/bin/echo",
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
                out, _ = process.communicate()
                if process.returncode != 0 or out != f"{token}\n".encode():
                    failures.append(f"{token}: code {process.returncode}, output {out!r}")
            except Exception as error:
                failures.append(f"{token}: {type(error).__name__}: {error}")
        return failures
    if op == "terminate":
        return client.terminate_distribution(distro(action["distro"]))
    if op == "export":
        return client.export_distribution(distro(action["distro"]), action["target"])
    if op == "unregister":
        return client.unregister_distribution(distro(action["distro"]))
    if op == "set_default":
        return client.set_default_distribution(distro(action["distro"]))
    if op == "shutdown":
        return client.shutdown(force=True)
    raise SystemExit(f"unknown op {op}")


client = ServiceClient()
try:
    result = {"result": run(client, json.loads(sys.argv[1]))}
except WslError as error:
    result = {"error": error.code, "message": error.message}
sys.stdout.flush()
print(json.dumps(result), flush=True)
'''


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: Path


@dataclass
class Workspace:
    folder: Path  # reachable by every user
    python: Path  # an interpreter every user can run, with pywsl importable
    driver: Path
    socket: Path
    runtime: Path


def _copy_package(name: str, site: Path) -> None:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return
    origin = Path(spec.origin)
    if origin.name == "__init__.py":
        shutil.copytree(origin.parent, site / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        shutil.copy2(origin, site / origin.name)


def _make_readable(top: Path) -> None:
    for path in [top, *top.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        os.chmod(path, mode | 0o444 | (0o111 if path.is_dir() or mode & 0o100 else 0))


@pytest.fixture(scope="module")
def workspace() -> Iterator[Workspace]:
    if not SYSTEM_PYTHON.is_file():
        pytest.skip("needs the system's /usr/bin/python3 for the unprivileged clients")
    folder = Path(tempfile.mkdtemp(prefix="pywsl-multiuser-"))
    os.chmod(folder, 0o755)
    try:
        venv = folder / "venv"
        created = subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)],
                                 capture_output=True, text=True, timeout=120, check=False)
        if created.returncode != 0:
            pytest.skip(f"cannot make a virtual environment from {SYSTEM_PYTHON}: {created.stderr.strip()}")
        python = venv / "bin" / "python3"
        site = Path(subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True, text=True, check=True, timeout=60).stdout.strip())
        shutil.copytree(REPO / "pywsl", site / "pywsl", ignore=shutil.ignore_patterns("__pycache__"))
        for name in CLIENT_PACKAGES:
            _copy_package(name, site)
        _make_readable(venv)
        driver = folder / "driver.py"
        driver.write_text(DRIVER)
        os.chmod(driver, 0o644)
        runtime = folder / "run"
        runtime.mkdir(mode=0o755)
        yield Workspace(folder, python, driver, folder / "service.sock", runtime)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ServiceProcess:
    """``python -m pywsl.api.service`` as root on the workspace's socket."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.root_home = workspace.folder / "root-home"
        self.root_home.mkdir(mode=0o700, exist_ok=True)
        (self.root_home / ".config" / "pywsl").mkdir(parents=True, exist_ok=True)
        (self.root_home / ".config" / "pywsl" / "wslconfig").write_text(WSLCONFIG)
        self.log = workspace.folder / "service.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.root_home),
            "XDG_DATA_HOME": str(self.root_home / "data"),
            "XDG_CONFIG_HOME": str(self.root_home / ".config"),
            "PYWSL_RUNTIME_ROOT": str(workspace.runtime),
            "LANG": "C.UTF-8",
        }

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pywsl.api.service", "--socket", str(self.workspace.socket)],
                env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/",
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.workspace.socket))
                return
            except OSError:
                time.sleep(0.05)
            finally:
                probe.close()
        raise AssertionError(f"the service did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        """``kill -9``: no cleanup of any kind."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self.process = None

    @contextlib.contextmanager
    def running_after(self, client: subprocess.Popen[bytes]) -> Iterator[None]:
        """Around a test that kills the service under ``client``: whatever happens, the client is
        gone afterwards and the service runs again."""
        try:
            yield
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()
            if self.process is None:
                self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
            self.process = None


@pytest.fixture(scope="module")
def service(workspace: Workspace) -> Iterator[ServiceProcess]:
    running = ServiceProcess(workspace)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        _shutdown_vm(0, workspace.runtime, running.env)


def _shutdown_vm(uid: int, runtime: Path, env: dict[str, str]) -> None:
    """Stop the VM of ``uid`` (as root, in a helper process with the service's environment)."""
    if not (runtime / str(uid)).exists():
        return
    script = (
        "import sys\n"
        "from pywsl.api.session import UserSession\n"
        "UserSession(uid=int(sys.argv[1])).shutdown()\n"
    )
    subprocess.run([sys.executable, "-c", script, str(uid)], env=env, timeout=60, check=False,
                   capture_output=True)


def _add_user(prefix: str) -> User:
    name = f"{prefix}{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
                   check=True, capture_output=True, timeout=60)
    entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    config = home / ".config" / "pywsl"
    config.mkdir(parents=True)
    (config / "wslconfig").write_text(WSLCONFIG)
    for path in (home / ".config", config, config / "wslconfig"):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return User(name, entry.pw_uid, entry.pw_gid, home)


@pytest.fixture(scope="module")
def users(service: ServiceProcess, workspace: Workspace) -> Iterator[tuple[User, User]]:
    made: list[User] = []
    try:
        made.append(_add_user("pwsa"))
        made.append(_add_user("pwsb"))
        yield made[0], made[1]
    finally:
        for user in made:
            _shutdown_vm(user.uid, workspace.runtime, service.env)
            subprocess.run(["userdel", "--remove", "--force", user.name], capture_output=True, timeout=60,
                           check=False)
            shutil.rmtree(workspace.runtime / str(user.uid), ignore_errors=True)


def as_user(workspace: Workspace, user: User, action: dict[str, Any], *, timeout: float = 120,
            stdin: bytes | None = None) -> dict[str, Any]:
    """Run one driver action as ``user``; its JSON answer."""
    result = subprocess.run(
        [str(workspace.python), str(workspace.driver), json.dumps(action)],
        user=user.uid, group=user.gid, extra_groups=[], env=_user_env(workspace, user), cwd=user.home,
        input=stdin, capture_output=True, timeout=timeout, check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    answer: dict[str, Any] = json.loads(result.stdout.decode().splitlines()[-1])
    return answer


def _user_env(workspace: Workspace, user: User) -> dict[str, str]:
    return {"HOME": str(user.home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8",
            "PYWSL_SERVICE_SOCKET": str(workspace.socket)}


def start_as_user(workspace: Workspace, user: User, action: dict[str, Any], **popen: Any
                  ) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(workspace.python), str(workspace.driver), json.dumps(action)],
        user=user.uid, group=user.gid, extra_groups=[], env=_user_env(workspace, user), cwd=user.home,
        **popen,
    )


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def alpha(users: tuple[User, User], workspace: Workspace) -> dict[str, str]:
    """User A's distribution "Alpha"."""
    a, _ = users
    archive = busybox_archive(workspace.folder / "alpha.tar", os_release=os_release_text("alpha"))
    answer = as_user(workspace, a, {"op": "import", "name": "Alpha", "archive": str(archive),
                                    "location": str(a.home / "distros" / "alpha")})
    assert "result" in answer, answer
    return {"id": answer["result"], "name": "Alpha"}


# ------------------------------------------------------------------------------------------------
# Isolation between users
# ------------------------------------------------------------------------------------------------


def test_another_user_cannot_see_or_touch_a_distribution(
    users: tuple[User, User], workspace: Workspace, alpha: dict[str, str]
) -> None:
    a, b = users
    by_name, by_id = "Alpha", {"id": alpha["id"]}
    assert as_user(workspace, a, {"op": "run", "distro": "Alpha", "command": ["cat /etc/os-release"]}
                   )["result"]["stdout"].startswith("ID=alpha")
    assert as_user(workspace, b, {"op": "list"}) == {"result": []}
    assert as_user(workspace, b, {"op": "id", "name": "alpha"})["error"] == "WSL_E_DISTRO_NOT_FOUND"
    for distro in (by_name, by_id):
        for op in ("run", "terminate", "config", "unregister", "set_default"):
            answer = as_user(workspace, b, {"op": op, "distro": distro, "command": ["echo leaked"]})
            assert answer.get("error") == "WSL_E_DISTRO_NOT_FOUND", (op, distro, answer)
            assert "leaked" not in json.dumps(answer)
        target = b.home / "stolen.tar"
        answer = as_user(workspace, b, {"op": "export", "distro": distro, "target": str(target)})
        assert answer.get("error") == "WSL_E_DISTRO_NOT_FOUND"
        assert not target.exists()

    # B's own "Alpha" is a different distribution.
    archive = busybox_archive(workspace.folder / "beta.tar", os_release=os_release_text("beta"))
    answer = as_user(workspace, b, {"op": "import", "name": "Alpha", "archive": str(archive),
                                    "location": str(b.home / "alpha")})
    assert answer["result"] != alpha["id"]
    answer = as_user(workspace, b, {"op": "run", "distro": "Alpha", "command": ["cat /etc/os-release"]})
    assert answer["result"]["stdout"].startswith("ID=beta")
    assert as_user(workspace, b, {"op": "unregister", "distro": "Alpha"}) == {"result": None}
    # A's distribution is untouched.
    [entry] = as_user(workspace, a, {"op": "list"})["result"]
    assert (entry["name"], entry["id"]) == ("Alpha", alpha["id"])
    assert (a.home / "distros" / "alpha" / "rootfs" / "bin" / "busybox").is_file()


def test_symlinks_never_make_the_service_write_elsewhere(
    users: tuple[User, User], workspace: Workspace, alpha: dict[str, str]
) -> None:
    a, b = users
    protected = workspace.folder / "protected"
    protected.mkdir(mode=0o755)
    (protected / "marker").write_text("root's")
    a_data = a.home / ".local" / "share" / "pywsl"
    a_before = {name: _digest(a_data / name) for name in _tree(a_data) if (a_data / name).is_file()}
    archive = busybox_archive(workspace.folder / "evil.tar", os_release=os_release_text("evil"))
    data = b.home / ".local" / "share"
    data.mkdir(parents=True, exist_ok=True)
    for path in (b.home / ".local", data):
        os.chown(path, b.uid, b.gid)
    link = data / "pywsl"
    saved = data / "pywsl.saved"
    if link.exists():
        link.rename(saved)
    attempts = 0

    def attack(**action: Any) -> None:
        nonlocal attempts
        attempts += 1
        answer = as_user(workspace, b, {"op": "import", "name": f"Evil{attempts}", "archive": str(archive),
                                        **action})
        assert "error" in answer, answer

    try:
        for target in (protected, a_data):
            # B's registry folder points at a folder of root's, then at A's registry folder.
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(target)
            os.chown(link, b.uid, b.gid, follow_symlinks=False)
            listed = as_user(workspace, b, {"op": "list"})
            assert listed.get("error") == "E_ACCESSDENIED", listed
            attack()
        link.unlink()
        # The install location (or a folder on its way) points at root's folder, then at A's.
        location = b.home / "place"
        for target in (protected / "inside", protected, a.home / "distros"):
            with contextlib.suppress(FileNotFoundError):
                location.unlink()
            location.symlink_to(target)
            os.chown(location, b.uid, b.gid, follow_symlinks=False)
            attack(location=str(location))
            attack(location=str(location / "evil"))
    finally:
        assert _tree(protected) == ["marker"]
        shutil.rmtree(protected)
        with contextlib.suppress(FileNotFoundError):
            (b.home / "place").unlink()
        if saved.exists():
            shutil.rmtree(link, ignore_errors=True)
            saved.rename(link)
    # Once the links are gone, nothing of the refused imports stays registered.
    listed = as_user(workspace, b, {"op": "list"})["result"]
    assert [entry["name"] for entry in listed if entry["name"].startswith("Evil")] == []
    a_after = {name: _digest(a_data / name) for name in _tree(a_data) if (a_data / name).is_file()}
    assert a_after == a_before
    assert sorted(os.listdir(a.home / "distros")) == ["alpha"]
    assert [d["name"] for d in as_user(workspace, a, {"op": "list"})["result"]] == ["Alpha"]


# ------------------------------------------------------------------------------------------------
# Crashes of the service
# ------------------------------------------------------------------------------------------------


def _read_line(stream: Any, timeout: float) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no output in time"
    line: bytes = stream.readline()
    return line


def test_kill_9_of_the_service_spares_running_commands(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess, alpha: dict[str, str]
) -> None:
    a, _ = users
    process = start_as_user(
        workspace, a,
        {"op": "run", "distro": "Alpha", "passthrough": True,
         "command": ["echo started; sleep 2; echo still here"]},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    with service.running_after(process):
        assert _read_line(process.stdout, 60) == b"started\n"
        service.kill()
        out, err = process.communicate(timeout=60)
    lines = out.decode().splitlines()
    assert lines[:-1] == ["still here"], err.decode()
    assert json.loads(lines[-1]) == {"result": {"code": 0}}
    [entry] = as_user(workspace, a, {"op": "list"})["result"]
    assert entry["name"] == "Alpha" and entry["state"] == 2, "the distribution kept running"
    answer = as_user(workspace, a, {"op": "run", "distro": "Alpha", "command": ["echo again"]})
    assert answer["result"] == {"code": 0, "stdout": "again\n"}


def test_kill_9_during_an_import_leaves_nothing_behind(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess, alpha: dict[str, str]
) -> None:
    a, _ = users
    archive = busybox_archive(os_release=os_release_text("big"), filler_bytes=8 << 20)
    location = a.home / "distros" / "half"
    process = start_as_user(
        workspace, a, {"op": "import", "name": "Half", "archive": "-", "location": str(location)},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    with service.running_after(process):
        process.stdin.write(archive[: len(archive) // 2])
        process.stdin.flush()
        deadline = time.monotonic() + 60
        while not (location / "rootfs" / "bin").exists():
            assert time.monotonic() < deadline, "the import did not start"
            assert process.poll() is None, process.communicate()
            time.sleep(0.05)
        service.kill()
        process.stdin.close()
        process.wait(60)
    deadline = time.monotonic() + 60
    while True:
        names = [entry["name"] for entry in as_user(workspace, a, {"op": "list"})["result"]]
        if names == ["Alpha"] and not location.exists():
            break
        assert time.monotonic() < deadline, (names, _tree(location)[:10])
        time.sleep(0.5)
    assert as_user(workspace, a, {"op": "id", "name": "Half"})["error"] == "WSL_E_DISTRO_NOT_FOUND"


# ------------------------------------------------------------------------------------------------
# Load
# ------------------------------------------------------------------------------------------------


def test_64_concurrent_clients_20_launches_each(
    users: tuple[User, User], workspace: Workspace, alpha: dict[str, str]
) -> None:
    a, b = users
    archive = busybox_archive(workspace.folder / "load.tar", os_release=os_release_text("load"))
    answer = as_user(workspace, b, {"op": "import", "name": "Load", "archive": str(archive),
                                    "location": str(b.home / "load")})
    assert "result" in answer, answer
    clients = []
    for index in range(64):
        user, distro = (a, "Alpha") if index % 2 else (b, "Load")
        clients.append(start_as_user(
            workspace, user, {"op": "launches", "distro": distro, "count": 20, "token": f"c{index}"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        ))
    failures: list[str] = []
    outputs: dict[int, tuple[bytes, bytes]] = {}

    def collect(index: int, process: subprocess.Popen[bytes]) -> None:
        outputs[index] = process.communicate(timeout=300)

    threads = [threading.Thread(target=collect, args=item) for item in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index, (out, err) in sorted(outputs.items()):
        if clients[index].returncode != 0 or not out:
            failures.append(f"client {index}: exit {clients[index].returncode}: {err.decode()[-500:]}")
            continue
        answer = json.loads(out.decode().splitlines()[-1])
        failures.extend(answer.get("result", [f"client {index}: {answer}"]))
    assert failures == []
    assert len(outputs) == 64


# ------------------------------------------------------------------------------------------------
# One scenario, two transports
# ------------------------------------------------------------------------------------------------


@pytest.fixture(params=["inprocess", "service"])
def session_factory(
    request: pytest.FixtureRequest, service: ServiceProcess, workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[], Any]]:
    """A callable returning root's session: ``UserSession()`` in this process, or a
    ``ServiceClient`` of the running service. Both see a private registry and VM runtime folder.
    (Reuse it by importing ``session_factory``, ``service`` and ``workspace`` from this module.)"""
    from pywsl.api.client import ServiceClient
    from pywsl.api.session import UserSession

    if request.param == "service":
        clients: list[ServiceClient] = []

        def make_client() -> ServiceClient:
            clients.append(ServiceClient(str(workspace.socket)))
            return clients[-1]

        yield make_client
        for client in clients:
            client.close()
        return
    home = workspace.folder / "inprocess-home"
    runtime = workspace.folder / "inprocess-run"
    (home / ".config" / "pywsl").mkdir(parents=True, exist_ok=True)
    (home / ".config" / "pywsl" / "wslconfig").write_text(WSLCONFIG)
    runtime.mkdir(mode=0o755, exist_ok=True)
    for name, value in (("HOME", home), ("XDG_DATA_HOME", home / "data"),
                        ("XDG_CONFIG_HOME", home / ".config"), ("PYWSL_RUNTIME_ROOT", runtime)):
        monkeypatch.setenv(name, str(value))
    monkeypatch.delenv("PYWSL_CONFIG", raising=False)
    try:
        yield UserSession
    finally:
        UserSession().shutdown(force=True)


def test_the_same_scenario_in_process_and_through_the_service(
    session_factory: Callable[[], Any], workspace: Workspace
) -> None:
    from pywsl.api.errors import WslError
    from pywsl.api.registry import DistributionState

    session = session_factory()
    name = f"Scenario{secrets.token_hex(3)}"
    archive = workspace.folder / f"{name}.tar"
    busybox_archive(archive, os_release=os_release_text("scenario"))
    location = workspace.folder / f"{name}-place"
    info = session.register_distribution(name, str(archive), location=str(location))
    assert (info.name, info.flavor, info.base_path) == (name, "scenario", location)
    assert session.get_distribution_id(name.upper()) == info.id
    assert info.id in [entry.id for entry in session.enumerate_distributions()]
    assert session.get_distribution_configuration(info.id).name == name

    process = session.create_lx_process(name, ["echo", "a  b"], filename="/bin/echo", stdout=subprocess.PIPE,
                                        stdin=subprocess.DEVNULL)
    assert process.communicate() == (b"a  b\n", None) and process.returncode == 0
    process = session.create_lx_process(info.id, ["cat; exit 3"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)
    assert process.communicate(b"round trip") == (b"round trip", None)
    assert process.returncode == 3
    [entry] = [d for d in session.enumerate_distributions() if d.id == info.id]
    assert entry.state is DistributionState.RUNNING
    session.terminate_distribution(name)
    [entry] = [d for d in session.enumerate_distributions() if d.id == info.id]
    assert entry.state is DistributionState.INSTALLED

    exported = workspace.folder / f"{name}-export.tar"
    session.export_distribution(name, str(exported))
    with tarfile.open(exported) as result:
        assert any(member.endswith("bin/busybox") for member in result.getnames())
    exported.unlink()

    session.unregister_distribution(info.id)
    with pytest.raises(WslError) as caught:
        session.get_distribution_id(name)
    assert caught.value.code == "WSL_E_DISTRO_NOT_FOUND"
    assert not (location / "rootfs").exists()
    with pytest.raises(WslError) as caught:
        session.create_lx_process(name, ["true"], stdin=subprocess.DEVNULL)
    assert caught.value.code == "WSL_E_DISTRO_NOT_FOUND"
    shutil.rmtree(location, ignore_errors=True)
