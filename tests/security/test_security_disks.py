"""Disk images through the root service: a user reaches only what the user could open.

The service opens every disk a user names with that user's rights (a host block device only for
root) and the VM gets the descriptor; a user whose VM is a qemu VM therefore cannot mount, attach,
import in place or detach another user's image, root's files, or a host disk. These checks fail
before any VM starts.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from multiuser_support import User, Workspace, user_env, user_folder

CLIENT_TIMEOUT = 60
SCRIPT = r"""
import json, sys
from pywsl.api.service.client import ServiceClient
from pywsl.api.errors import WslError
call, args = sys.argv[1], json.loads(sys.argv[2])
client = ServiceClient()
try:
    result = getattr(client, call)(*args["args"], **args["kwargs"])
    print(json.dumps({"result": str(result)}))
except WslError as error:
    print(json.dumps({"error": error.code, "message": error.message}))
"""


def call_as(workspace: Workspace, user: User, call: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    result = subprocess.run(
        [str(workspace.python), "-c", SCRIPT, call, json.dumps({"args": args, "kwargs": kwargs})],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=user_env(workspace, user),
        cwd=user.home,
        capture_output=True,
        timeout=CLIENT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    answer: dict[str, Any] = json.loads(result.stdout.decode().splitlines()[-1])
    return answer


@pytest.fixture(scope="module")
def qemu_user(users: tuple[User, User]) -> User:
    """The attacker, with the qemu backend in its settings (its VM never needs to start here)."""
    attacker = users[0]
    config = Path(attacker.home) / ".config" / "pywsl"
    user_folder(attacker, config)
    (config / "wslconfig").write_text("[pywsl]\nbackend=qemu\n")
    os.chown(config / "wslconfig", attacker.uid, attacker.gid)
    return attacker


@pytest.fixture(scope="module")
def private_images(users: tuple[User, User], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """An image root keeps to itself, and one in the victim's home (mode 0600, the victim's)."""
    victim = users[1]
    root_image = tmp_path_factory.mktemp("root-disks") / "secret.img"
    root_image.write_bytes(b"\0" * 4096)
    root_image.chmod(0o600)
    victim_image = Path(victim.home) / "mine.vhdx"
    victim_image.write_bytes(b"vhdxfile" + b"\0" * 4096)
    os.chown(victim_image, victim.uid, victim.gid)
    victim_image.chmod(0o600)
    return [root_image, victim_image]


def test_another_users_or_roots_image_is_refused(
    workspace: Workspace, qemu_user: User, private_images: list[Path]
) -> None:
    for image in private_images:
        for call, args, kwargs in (
            ("mount_disk", [str(image)], {"vhd": True, "name": "stolen"}),
            ("attach_disk", [str(image)], {"vhd": True}),
            ("detach_disk", [str(image)], {}),
        ):
            answer = call_as(workspace, qemu_user, call, *args, **kwargs)
            assert answer.get("error") in ("E_ACCESSDENIED", "ERROR_ACCESS_DENIED"), (call, image, answer)
    copy = Path(qemu_user.home) / "copy"
    answer = call_as(workspace, qemu_user, "import_distribution_inplace", "Stolen", str(private_images[1]))
    assert "error" in answer, answer
    assert not copy.exists()
    listing = call_as(workspace, qemu_user, "enumerate_distributions")
    assert "Stolen" not in listing.get("result", "")


def test_a_host_block_device_needs_root(workspace: Workspace, qemu_user: User) -> None:
    devices = [
        name for name in ("/dev/loop0", "/dev/sda", "/dev/vda", "/dev/nvme0n1") if os.path.exists(name)
    ]
    if not devices:
        pytest.skip("this host shows no block device node")
    for call, kwargs in (("attach_disk", {}), ("mount_disk", {"name": "host"})):
        answer = call_as(workspace, qemu_user, call, devices[0], **kwargs)
        assert answer.get("error") == "WSL_E_ELEVATION_NEEDED_TO_MOUNT_DISK", answer


def test_a_symbolic_link_to_a_private_image_is_refused(
    workspace: Workspace, qemu_user: User, private_images: list[Path]
) -> None:
    link = Path(qemu_user.home) / "link.vhdx"
    link.unlink(missing_ok=True)
    link.symlink_to(private_images[0])
    answer = call_as(workspace, qemu_user, "mount_disk", str(link), vhd=True, name="link")
    assert answer.get("error") in ("E_ACCESSDENIED", "ERROR_ACCESS_DENIED"), answer
