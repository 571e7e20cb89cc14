"""Real unprivileged users and a root service on a private socket, for tests that need both.

The service runs as root from the tests' interpreter on a private socket and runtime folder;
clients run as unprivileged users created for a module (``useradd``, removed with ``userdel -r``),
with an interpreter every user can run: a virtual environment made from the system's Python
holding a copy of pywsl and its pure-Python dependencies. ``workspace`` and ``service`` are
module-scoped fixtures for the modules that import them (``test_service_multiuser.py``,
``tests/security/conftest.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from coverage_report import passed_on

REPO = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")
# Pure-Python packages the client side imports (copied into the users' environment).
CLIENT_PACKAGES = ("construct", "click", "rich", "markdown_it", "mdurl", "pygments")
WSLCONFIG = "[general]\ninstanceIdleTimeout=120000\n[wsl2]\nvmIdleTimeout=120000\n"


DRIVER = r"""
import json, os, subprocess, sys, uuid
from pywsl.api.service.client import ServiceClient
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
"""


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


@contextlib.contextmanager
def make_workspace() -> Iterator[Workspace]:
    """A folder every user can reach with an interpreter, pywsl, the driver, socket and runtime paths."""
    if not SYSTEM_PYTHON.is_file():
        raise RuntimeError(f"{SYSTEM_PYTHON} is missing: the unprivileged clients need the system's Python")
    folder = Path(tempfile.mkdtemp(prefix="pywsl-multiuser-"))
    os.chmod(folder, 0o755)
    try:
        venv = folder / "venv"
        created = subprocess.run(
            [str(SYSTEM_PYTHON), "-m", "venv", "--without-pip", str(venv)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"cannot make a virtual environment from {SYSTEM_PYTHON}: {created.stderr.strip()}"
            )
        python = venv / "bin" / "python3"
        site = Path(
            subprocess.run(
                [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout.strip()
        )
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
    """``python -m pywsl.api.service.server`` as root on the workspace's socket."""

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
            "PYTHONPATH": str(REPO),  # the service runs this checkout, not an installed copy
            **passed_on(),  # the service and the VMs it boots are measured too
        }

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pywsl.api.service.server", "--socket", str(self.workspace.socket)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
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


def shutdown_vm(uid: int, runtime: Path, env: dict[str, str]) -> None:
    """Stop the VM of ``uid`` (as root, in a helper process with the service's environment)."""
    if not (runtime / str(uid)).exists():
        return
    script = (
        "import sys\n"
        "from pywsl.api.session.user_session import UserSession\n"
        "UserSession(uid=int(sys.argv[1])).shutdown()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(uid)], env=env, timeout=60, check=False, capture_output=True
    )


def user_folder(user: User, folder: Path) -> Path:
    """`folder` (under `user`'s home) made with its missing parents, each owned by `user`: a
    folder root makes in a user's home would keep the service, acting as that user, out."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir()
        os.chown(path, user.uid, user.gid)
    return missing[0] if missing else folder


def add_user(prefix: str) -> User:
    name = f"{prefix}{secrets.token_hex(4)}"
    subprocess.run(
        ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", name],
        check=True,
        capture_output=True,
        timeout=60,
    )
    entry = pwd.getpwnam(name)
    home = Path(entry.pw_dir)
    user = User(name, entry.pw_uid, entry.pw_gid, home)
    config = user_folder(user, home / ".config" / "pywsl")
    (config / "wslconfig").write_text(WSLCONFIG)
    os.chown(config / "wslconfig", user.uid, user.gid)
    return user


def as_user(
    workspace: Workspace,
    user: User,
    action: dict[str, Any],
    *,
    timeout: float = 120,
    stdin: bytes | None = None,
) -> dict[str, Any]:
    """Run one driver action as ``user``; its JSON answer."""
    result = subprocess.run(
        [str(workspace.python), str(workspace.driver), json.dumps(action)],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=user_env(workspace, user),
        cwd=user.home,
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    answer: dict[str, Any] = json.loads(result.stdout.decode().splitlines()[-1])
    return answer


def user_env(workspace: Workspace, user: User) -> dict[str, str]:
    return {
        "HOME": str(user.home),
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYWSL_SERVICE_SOCKET": str(workspace.socket),
    }


def start_as_user(
    workspace: Workspace, user: User, action: dict[str, Any], **popen: Any
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(workspace.python), str(workspace.driver), json.dumps(action)],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=user_env(workspace, user),
        cwd=user.home,
        **popen,
    )


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def created_users(workspace: Workspace, service: ServiceProcess, *prefixes: str) -> Iterator[list[User]]:
    """Unprivileged users made for a block, removed with their VMs and files afterwards."""
    made: list[User] = []
    try:
        for prefix in prefixes:
            made.append(add_user(prefix))
        yield made
    finally:
        for user in made:
            shutdown_vm(user.uid, workspace.runtime, service.env)
            subprocess.run(
                ["userdel", "--remove", "--force", user.name], capture_output=True, timeout=60, check=False
            )
            shutil.rmtree(workspace.runtime / str(user.uid), ignore_errors=True)


@pytest.fixture(scope="module")
def workspace() -> Iterator[Workspace]:
    with make_workspace() as made:
        yield made


@pytest.fixture(scope="module")
def service(workspace: Workspace) -> Iterator[ServiceProcess]:
    running = ServiceProcess(workspace)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        shutdown_vm(0, workspace.runtime, running.env)
