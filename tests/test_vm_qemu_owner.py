"""The qemu backend through the root service for an unprivileged user: QEMU runs as that user.

The service runs as root (``multiuser_support``); a user made for this module selects the qemu
backend in its own configuration, imports a busybox distribution and runs a command. QEMU and
everything it starts must have the user's ids on the host, and the kernel must be one the user
can read (a user cannot boot a file of root's)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive
from multiuser_support import (
    ServiceProcess,
    User,
    Workspace,
    as_user,
    created_users,
    make_workspace,
)
from qemu_guest_setup import ensure_kernel, ensure_qemu

from pywsl.vm.backends.base import running_backend

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="creates users and runs the service as root"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)"),
]


@pytest.fixture(scope="module")
def guest_kernel() -> tuple[Path, Path]:
    if ensure_qemu() is None:
        pytest.skip("qemu-system-x86 is not installed and apt-get cannot install it here")
    return ensure_kernel()


@pytest.fixture(scope="module")
def workspace() -> Iterator[Workspace]:
    with make_workspace() as made:
        yield made


@pytest.fixture(scope="module")
def service(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    running = ServiceProcess(workspace)
    running.env["PYWSL_CACHE_ROOT"] = str(tmp_path_factory.mktemp("qemu-cache"))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def users(service: ServiceProcess, workspace: Workspace) -> Iterator[list[User]]:
    """Two users, made together (a uid is not reused while the service runs)."""
    with created_users(workspace, service, "pwqo", "pwqk") as made:
        yield made


def _configure(user: User, wslconfig: str) -> None:
    path = user.home / ".config" / "pywsl" / "wslconfig"
    path.write_text(wslconfig)
    os.chown(path, user.uid, user.gid)


def _qemu_config(kernel: Path, modules: Path) -> str:
    return (
        "[general]\ninstanceIdleTimeout=120000\n"
        f"[wsl2]\nvmIdleTimeout=300000\nkernel={kernel}\nkernelModules={modules}\n"
        "kernelBootTimeout=150000\nmemory=512MB\nprocessors=1\nlocalhostForwarding=true\n"
        "[pywsl]\nbackend=qemu\n"
    )


def _user_of(pid: int) -> str:
    return subprocess.run(
        ["ps", "-o", "user=", "-p", str(pid)], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parent = int(Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1])
                children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def test_an_unprivileged_users_vm_runs_as_that_user(
    guest_kernel: tuple[Path, Path], users: list[User], workspace: Workspace
) -> None:
    image, modules = guest_kernel
    archive = busybox_archive(workspace.folder / "box.tar", usr_bin_links=True)
    user = users[0]
    _configure(user, _qemu_config(image, modules))
    imported = as_user(
        workspace,
        user,
        {"op": "import", "name": "Box", "archive": str(archive), "location": str(user.home / "box")},
        timeout=300,
    )
    assert "result" in imported, imported
    answer = as_user(workspace, user, {"op": "run", "distro": "Box", "command": ["echo hello; uname -r"]})
    assert answer["result"] == {"code": 0, "stdout": f"hello\n{modules.name}\n"}, answer
    runtime = workspace.runtime / str(user.uid)
    assert running_backend(runtime) == "qemu"
    qemu_pid = int((runtime / "mini_init.pid").read_text().split()[0])
    assert Path(f"/proc/{qemu_pid}/comm").read_text().startswith("qemu-system")
    assert _user_of(qemu_pid) == user.name
    status = Path(f"/proc/{qemu_pid}/status").read_text().splitlines()
    ids = {line.split(":")[0]: line.split()[1:] for line in status if line.startswith(("Uid", "Gid"))}
    assert ids == {"Uid": [str(user.uid)] * 4, "Gid": [str(user.gid)] * 4}
    assert all(_user_of(pid) == user.name for pid in _descendants(qemu_pid))
    # a host program called inside runs on the host as the user (the interop worker became them)
    program = Path(os.path.realpath(sys.executable)).name
    host = as_user(
        workspace,
        user,
        {"op": "run", "distro": "Box", "command": [f"{program} -c 'import os; print(os.getuid())'"]},
    )
    assert host["result"] == {"code": 0, "stdout": f"{user.uid}\n"}, host
    # the user's own shutdown ends the VM: nothing of it is left on the host
    assert "result" in as_user(workspace, user, {"op": "shutdown"})
    deadline = time.monotonic() + 30
    while Path(f"/proc/{qemu_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{qemu_pid}").exists()
    assert sorted(os.listdir(runtime)) == ["mini_init.log"]


def test_a_kernel_the_user_cannot_read_is_refused(
    guest_kernel: tuple[Path, Path], users: list[User], workspace: Workspace
) -> None:
    image, modules = guest_kernel
    secret = workspace.folder / "root-only-kernel"
    secret.write_bytes(image.read_bytes())
    os.chmod(secret, 0o600)
    archive = busybox_archive(workspace.folder / "box.tar", usr_bin_links=True)
    user = users[1]
    _configure(user, _qemu_config(secret, modules))
    answer = as_user(
        workspace,
        user,
        {"op": "import", "name": "Box", "archive": str(archive), "location": str(user.home / "box")},
        timeout=300,
    )
    assert "error" in answer and "cannot be read by the VM's owner" in answer["message"], answer
    assert not (workspace.runtime / str(user.uid) / "mini_init.pid").exists()
