"""The service with real users: isolation, symlink attacks, crashes of the service, many clients.

The service runs as root from this interpreter on a private socket; clients run as two
unprivileged users created for the module (``useradd``, removed with ``userdel -r``), with an
interpreter every user can run: a virtual environment made from the system's Python holding a
copy of pywsl and its pure-Python dependencies. ``session_factory`` runs one scenario both
in-process and through the service.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from busybox_images import BUSYBOX, busybox_archive, os_release_text
from multiuser_support import (
    WSLCONFIG,
    ServiceProcess,
    User,
    Workspace,
    as_user,
    created_users,
    service,
    start_as_user,
    user_folder,
    workspace,
)
from multiuser_support import digest as _digest
from multiuser_support import tree as _tree

__all__ = ["pytestmark", "service", "users", "workspace"]  # module fixtures, shared with the CLI tests

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="creates users and runs the service as root"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)"),
]


@pytest.fixture(scope="module")
def users(service: ServiceProcess, workspace: Workspace) -> Iterator[tuple[User, User]]:
    with created_users(workspace, service, "pwsa", "pwsb") as made:
        yield made[0], made[1]


@pytest.fixture(scope="module")
def alpha(users: tuple[User, User], workspace: Workspace) -> dict[str, str]:
    """User A's distribution "Alpha"."""
    a, _ = users
    archive = busybox_archive(workspace.folder / "alpha.tar", os_release=os_release_text("alpha"))
    answer = as_user(
        workspace,
        a,
        {
            "op": "import",
            "name": "Alpha",
            "archive": str(archive),
            "location": str(a.home / "distros" / "alpha"),
        },
    )
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
    assert as_user(workspace, a, {"op": "run", "distro": "Alpha", "command": ["cat /etc/os-release"]})[
        "result"
    ]["stdout"].startswith("ID=alpha")
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
    answer = as_user(
        workspace,
        b,
        {"op": "import", "name": "Alpha", "archive": str(archive), "location": str(b.home / "alpha")},
    )
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
    user_folder(b, data)
    link = data / "pywsl"
    saved = data / "pywsl.saved"
    if link.exists():
        link.rename(saved)
    attempts = 0

    def attack(**action: Any) -> None:
        nonlocal attempts
        attempts += 1
        answer = as_user(
            workspace, b, {"op": "import", "name": f"Evil{attempts}", "archive": str(archive), **action}
        )
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
        workspace,
        a,
        {
            "op": "run",
            "distro": "Alpha",
            "passthrough": True,
            "command": ["echo started; sleep 2; echo still here"],
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
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
        workspace,
        a,
        {"op": "import", "name": "Half", "archive": "-", "location": str(location)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
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


@pytest.fixture
def load(users: tuple[User, User], workspace: Workspace) -> Iterator[str]:
    """User B's distribution "Load", for one test; unregistered after it."""
    _, b = users
    archive = busybox_archive(workspace.folder / "load.tar", os_release=os_release_text("load"))
    answer = as_user(
        workspace,
        b,
        {"op": "import", "name": "Load", "archive": str(archive), "location": str(b.home / "load")},
    )
    assert "result" in answer, answer
    try:
        yield "Load"
    finally:
        assert as_user(workspace, b, {"op": "unregister", "distro": "Load"}) == {"result": None}
        archive.unlink()


def test_64_concurrent_clients_20_launches_each(
    users: tuple[User, User], workspace: Workspace, alpha: dict[str, str], load: str
) -> None:
    a, b = users
    clients = []
    for index in range(64):
        user, distro = (a, "Alpha") if index % 2 else (b, load)
        clients.append(
            start_as_user(
                workspace,
                user,
                {"op": "launches", "distro": distro, "count": 20, "token": f"c{index}"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
        )
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
    request: pytest.FixtureRequest,
    service: ServiceProcess,
    workspace: Workspace,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[], Any]]:
    """A callable returning root's session: ``UserSession()`` in this process, or a
    ``ServiceClient`` of the running service. Both see a private registry and VM runtime folder.
    (Reuse it by importing ``session_factory``, ``service`` and ``workspace`` from this module.)"""
    from pywsl.api.service.client import ServiceClient
    from pywsl.api.session.user_session import UserSession

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
    for name, value in (
        ("HOME", home),
        ("XDG_DATA_HOME", home / "data"),
        ("XDG_CONFIG_HOME", home / ".config"),
        ("PYWSL_RUNTIME_ROOT", runtime),
    ):
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
    from pywsl.api.session.registry import DistributionState

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

    process = session.create_lx_process(
        name, ["echo", "a  b"], filename="/bin/echo", stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert process.communicate() == (b"a  b\n", None) and process.returncode == 0
    process = session.create_lx_process(
        info.id, ["cat; exit 3"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
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
