"""Fixtures of the security tests: a root service on a private socket and two unprivileged users.

Every module gets its own service, users and VMs (module scope), all removed afterwards. The
helpers (``as_user``, ``start_as_user``, the driver's actions) are in ``tests/multiuser_support.py``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from busybox_images import BUSYBOX
from multiuser_support import ServiceProcess, User, Workspace, created_users, service, workspace

__all__ = ["service", "users", "workspace"]  # the shared module fixtures, and the two users


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/security/" in str(item.path):
            item.add_marker(pytest.mark.security)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="attacks on the root service need root"))
            elif shutil.which("useradd") is None:
                item.add_marker(pytest.mark.skip(reason="needs useradd (passwd)"))
            elif not BUSYBOX.is_file():
                item.add_marker(pytest.mark.skip(reason="needs a static /bin/busybox (busybox-static)"))


@pytest.fixture(scope="module")
def users(service: ServiceProcess, workspace: Workspace) -> Iterator[tuple[User, User]]:
    """Two unprivileged users, the attacker and the victim; removed with their files and VMs."""
    with created_users(workspace, service, "pwxa", "pwxb") as made:
        yield made[0], made[1]
