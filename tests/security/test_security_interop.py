"""Interop through the root service: a host program started from inside an unprivileged user's
distribution runs on the host as that user (uid, gid, supplementary groups), never as root."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from busybox_images import busybox_archive, os_release_text
from multiuser_support import ServiceProcess, User, Workspace, as_user, user_env

CLIENT = """
import json, subprocess, sys
import pywsl
session = pywsl.connect()
process = session.create_lx_process(sys.argv[1], [sys.argv[2]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, wslenv_source={"PATH": sys.argv[3]})
out, err = process.communicate(b"from inside\\n", timeout=60)
print(json.dumps({"code": process.wait(), "out": out.decode(), "err": err.decode()}))
"""

HOST_PROGRAM = """#!/bin/sh
readlink /proc/self/ns/pid
id -u
id -g
id -G
pwd
cat
exit 7
"""


def _run(workspace: Workspace, user: User, distro: str, command: str, host_path: str) -> dict[str, object]:
    result = subprocess.run(
        [str(workspace.python), "-c", CLIENT, distro, command, host_path],
        user=user.uid,
        group=user.gid,
        extra_groups=[],
        env=user_env(workspace, user),
        cwd=user.home,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def test_host_program_runs_as_the_distribution_owner(
    service: ServiceProcess, workspace: Workspace, users: tuple[User, User]
) -> None:
    owner, _ = users
    host_bin = workspace.folder / "interop-bin"
    host_bin.mkdir(mode=0o755)
    program = host_bin / "whoami-on-host"
    program.write_text(HOST_PROGRAM)
    program.chmod(0o755)
    work = workspace.folder / "interop-work"
    work.mkdir(mode=0o755)
    archive: Path = busybox_archive(workspace.folder / "interop.tar", os_release=os_release_text("interop"))
    answer = as_user(workspace, owner, {"op": "import", "name": "Interop", "archive": str(archive)})
    assert "result" in answer, answer
    try:
        reply = _run(
            workspace, owner, "Interop", f"cd /mnt/host{work} && whoami-on-host", f"/usr/bin:/bin:{host_bin}"
        )
        assert reply["code"] == 7, reply
        namespace, uid, gid, groups, cwd, piped = str(reply["out"]).splitlines()
        assert namespace == os.readlink("/proc/self/ns/pid")  # on the host
        assert (int(uid), int(gid)) == (owner.uid, owner.gid)
        assert set(groups.split()) == {str(item) for item in os.getgrouplist(owner.name, owner.gid)}
        assert "0" not in groups.split()
        assert cwd == str(work)
        assert piped == "from inside"
    finally:
        as_user(workspace, owner, {"op": "unregister", "distro": "Interop"})
