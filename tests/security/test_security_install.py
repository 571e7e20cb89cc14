"""`InstallBuiltinDistribution`: an unprivileged user makes the root service build and import a
built-in distribution, and cannot make root build anything else or anywhere else.

The service of this module keeps its builds in a folder of the workspace (`$PYWSL_BUILD_CACHE`).
The install test puts a small image there as the kept build of Debian, so it exercises the method,
the import and the progress without running debootstrap; `test_cli_service_e2e` does the same with
this run's real Debian build (slow).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from busybox_images import busybox_archive, os_release_text
from multiuser_support import ServiceProcess, User, Workspace, as_user, digest, shutdown_vm, user_env

from pywsl.api.install.builtin_cache import BUILD_CACHE_ENV, BuildCache
from pywsl.api.install.builtin_catalog import find_builtin

CLIENT = r"""
import json, sys
from pywsl.api.service.client import ServiceClient
from pywsl.api.errors import WslError

client = ServiceClient()
results = []
for parameters in json.loads(sys.argv[1]):
    try:
        client.call("InstallBuiltinDistribution", parameters)
        results.append({"ok": True})
    except WslError as error:
        results.append({"error": error.code, "message": error.message})
print(json.dumps(results))
"""

INSTALL = r"""
import json, sys
from pywsl.api.service.client import ServiceClient
from pywsl.api.errors import WslError

statuses, progress = [], []
arguments = json.loads(sys.argv[1])
try:
    info = ServiceClient().install_builtin_distribution(
        arguments["distribution"], name=arguments["name"], location=arguments.get("location"),
        progress=lambda done, total: progress.append([done, total]), on_status=statuses.append)
    result = {"id": str(info.id), "name": info.name, "run_oobe": info.run_oobe, "flavor": info.flavor,
              "base_path": str(info.base_path)}
except WslError as error:
    result = {"error": error.code, "message": error.message}
print(json.dumps({"result": result, "statuses": statuses, "progress": progress}))
"""


@pytest.fixture(scope="module")
def build_cache(workspace: Workspace) -> Path:
    return workspace.folder / "build-cache"


@pytest.fixture(scope="module")
def service(workspace: Workspace, build_cache: Path) -> Iterator[ServiceProcess]:
    """This module's service, with its build folder in the workspace."""
    running = ServiceProcess(workspace)
    running.env[BUILD_CACHE_ENV] = str(build_cache)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        shutdown_vm(0, workspace.runtime, running.env)
        shutil.rmtree(build_cache, ignore_errors=True)


def _script(workspace: Workspace, user: User, script: str, argument: Any, timeout: float = 300) -> Any:
    result = subprocess.run(
        [str(workspace.python), "-c", script, json.dumps(argument)],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=user_env(workspace, user),
        cwd=user.home,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout.decode().splitlines()[-1])


def _debootstraps() -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                command = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(part.endswith(b"debootstrap") for part in command):
                found.append(int(entry.name))
    return found


def test_a_user_cannot_make_root_build_anything_but_a_catalog_entry(
    users: tuple[User, User], workspace: Workspace, service: ServiceProcess, build_cache: Path
) -> None:
    a, _ = users
    before = _debootstraps()
    requests = [
        {"distribution": "../../etc"},
        {"distribution": "/usr/share/debootstrap/scripts/sid"},
        {"distribution": "http://127.0.0.1:1/debian"},
        {"distribution": "bookworm"},
        {"distribution": str(a.home)},
        {"distribution": "Debian", "mirror": "http://127.0.0.1:1/debian"},
        {"distribution": "Debian", "suite": "sid"},
        {"distribution": "Debian", "script": str(a.home / "script")},
        {"distribution": "Debian", "keyring": str(a.home / "keys.gpg")},
        {"distribution": "Debian", "location": "relative"},
        {"distribution": "Debian", "name": "../escape"},
        {"distribution": "Debian", "name": "Legacy"},
    ]
    results = _script(workspace, a, CLIENT, requests)
    codes = [result.get("error") for result in results]
    # A bad name of the new distribution is only looked at when this host can build Debian at all.
    name_refused = "E_INVALIDARG" if find_builtin("Debian") is not None else "ERROR_FILE_NOT_FOUND"
    assert codes == ["WSL_E_DISTRO_NOT_FOUND"] * 5 + ["E_INVALIDARG"] * 5 + [name_refused] * 2, results
    assert "'--list --online'" in results[0]["message"]
    assert not build_cache.exists(), "no build was prepared for a refused request"
    assert _debootstraps() == before
    assert as_user(workspace, a, {"op": "list"}) == {"result": []}


@pytest.fixture
def kept_build(workspace: Workspace, service: ServiceProcess, build_cache: Path) -> Iterator[Path]:
    """A small image where the service keeps its build of the built-in Debian (as root, 0600), for one
    test; the build folder is removed after it."""
    entry = find_builtin("Debian")
    if entry is None:
        pytest.skip("this host cannot build Debian")
    image = busybox_archive(workspace.folder / "kept.tar", os_release=os_release_text("keptdebian"))
    try:
        cache = BuildCache(build_cache)
        cache.prepare()
        kept = cache.path_for(entry)
        shutil.copyfile(image, kept)
        os.chmod(kept, 0o600)
        yield kept
    finally:
        shutil.rmtree(build_cache, ignore_errors=True)
        image.unlink()


@pytest.fixture
def unregistered_after(users: tuple[User, User], workspace: Workspace) -> Iterator[None]:
    """After the test, the users' distributions it left (if it failed half-way) are unregistered."""
    yield
    for user in users:
        for entry in as_user(workspace, user, {"op": "list"})["result"]:
            as_user(workspace, user, {"op": "unregister", "distro": entry["name"]})


def test_a_user_installs_a_builtin_through_the_service(
    users: tuple[User, User], workspace: Workspace, kept_build: Path, unregistered_after: None
) -> None:
    """The method, the steps, the progress and the import with the user's rights; the service's
    kept build is a small image here (the slow test of `test_cli_service_e2e` uses real Debian)."""
    a, b = users
    kept = kept_build
    kept_digest = digest(kept)
    size = kept.stat().st_size
    entry = find_builtin("Debian")
    assert entry is not None

    # A location the user cannot write: refused with the user's rights, nothing registered.
    locked = workspace.folder / "locked"
    locked.mkdir(mode=0o755)
    refused = _script(
        workspace, a, INSTALL, {"distribution": "Debian", "name": "Deb", "location": str(locked / "deb")}
    )
    assert refused["result"]["error"] == "E_ACCESSDENIED", refused
    assert list(locked.iterdir()) == []
    assert as_user(workspace, a, {"op": "list"}) == {"result": []}

    answer = _script(workspace, a, INSTALL, {"distribution": "debian", "name": "Deb"})
    result = answer["result"]
    assert "error" not in result, answer
    assert (result["name"], result["run_oobe"], result["flavor"]) == ("Deb", True, "keptdebian")
    assert Path(result["base_path"]).is_relative_to(a.home)
    assert answer["statuses"] == [f"Installing: {entry.friendly_name}"], "built already: no build step"
    done = [step[0] for step in answer["progress"]]
    assert done and done == sorted(done) and done[-1] == size, answer["progress"][-3:]
    assert {step[1] for step in answer["progress"]} == {size}

    run = as_user(workspace, a, {"op": "run", "distro": "Deb", "command": [". /etc/os-release; echo $ID"]})
    assert run == {"result": {"code": 0, "stdout": "keptdebian\n"}}
    rootfs = Path(result["base_path"]) / "rootfs"
    assert os.stat(rootfs).st_uid != 0, "the root filesystem belongs to the user's ids, not root"
    assert digest(kept) == kept_digest, "the kept build is unchanged"
    for user in (a, b):
        probe = subprocess.run(
            [str(workspace.python), "-c", f"open({str(kept)!r}, 'rb')"],
            user=user.uid,
            group=user.gid,
            extra_groups=[],
            env=user_env(workspace, user),
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert probe.returncode != 0 and b"PermissionError" in probe.stderr

    again = _script(workspace, a, INSTALL, {"distribution": "Debian", "name": "deb"})
    assert again["result"]["error"] == "ERROR_ALREADY_EXISTS" and again["progress"] == []
    assert as_user(workspace, a, {"op": "unregister", "distro": "Deb"}) == {"result": None}
    other = _script(workspace, b, INSTALL, {"distribution": "Debian", "name": "Theirs"})
    assert other["result"]["flavor"] == "keptdebian", other
    assert as_user(workspace, b, {"op": "unregister", "distro": "Theirs"}) == {"result": None}
