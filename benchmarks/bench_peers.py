"""Measured peers of the launch: a running podman container (``podman exec``) and
``systemd-nspawn`` (a one-shot container).

The podman container runs the same root filesystem archive as the benchmark's distribution, imported
with ``podman import`` (images cannot be pulled on these hosts) into a private podman storage in
the benchmark's scratch folder (``--root``/``--runroot``, the vfs driver: no mounts are left
behind), with the options these hosts need (``--runtime runc --cgroup-manager=cgroupfs`` and
1024 as the nofile/nproc limits). Closing the peer removes the container, the image and the storage.

``NspawnRoot`` unpacks the same archive into the scratch folder; each run is a whole
``systemd-nspawn`` container (no registration with machined, no unit of its own, as the host
may run no systemd) that runs one command and ends. Closing it removes the tree.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from pathlib import Path

from bench_proc import BenchError, run_checked, shorten
from bench_rootfs import remove_tree

__all__ = ["NspawnRoot", "PodmanContainer"]

IMAGE = "pywsl-bench-image"
CONTAINER = "pywsl-bench-container"


class PodmanContainer:
    """A container kept running (``sleep``) so that ``exec_argv`` measures a warm ``podman exec``."""

    def __init__(self, folder: Path, archive: Path, env: dict[str, str], log: Callable[[str], None]) -> None:
        program = shutil.which("podman", path=env.get("PATH"))
        if program is None:
            raise BenchError("podman is not installed (Debian packages podman and runc)")
        self.folder = folder
        self.env = env
        self.log = log
        self.base = [
            program,
            "--root",
            str(folder / "root"),
            "--runroot",
            str(folder / "run"),
            "--runtime",
            "runc",
            "--cgroup-manager=cgroupfs",
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
        ]
        folder.mkdir(parents=True)
        self.started = False
        try:
            run_checked([*self.base, "import", str(archive), IMAGE], env)
            run_checked(
                [
                    *self.base,
                    "run",
                    "-d",
                    "--name",
                    CONTAINER,
                    "--network",
                    "none",
                    "--ulimit",
                    "nofile=1024:1024",
                    "--ulimit",
                    "nproc=1024:1024",
                    IMAGE,
                    "sleep",
                    "1000000",
                ],
                env,
            )
            self.started = True
        except BenchError:
            self.close()
            raise

    def exec_argv(self, *command: str) -> list[str]:
        return [*self.base, "exec", CONTAINER, *command]

    def close(self) -> None:
        for arguments in (["rm", "-f", "-t", "0", CONTAINER], ["rmi", "-f", IMAGE]):
            with contextlib.suppress(BenchError):
                run_checked([*self.base, *arguments], self.env)
        try:
            remove_tree(self.folder)
        except (BenchError, OSError) as error:
            self.log(f"cleanup: {shorten(str(error))}")

    def __enter__(self) -> PodmanContainer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class NspawnRoot:
    """The archive unpacked for ``systemd-nspawn``; ``run_argv`` is one container running a command."""

    def __init__(self, folder: Path, archive: Path, env: dict[str, str], log: Callable[[str], None]) -> None:
        program = shutil.which("systemd-nspawn", path=env.get("PATH"))
        if program is None:
            raise BenchError("systemd-nspawn is not installed (Debian package systemd-container)")
        self.program = program
        self.folder = folder
        self.log = log
        folder.mkdir(parents=True)
        try:
            run_checked(["tar", "-xf", str(archive), "-C", str(folder), "--numeric-owner"], env)
        except BenchError:
            self.close()
            raise

    def run_argv(self, *command: str) -> list[str]:
        return [
            self.program,
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--directory",
            str(self.folder),
            *command,
        ]

    def close(self) -> None:
        try:
            remove_tree(self.folder)
        except (BenchError, OSError) as error:
            self.log(f"cleanup: {shorten(str(error))}")

    def __enter__(self) -> NspawnRoot:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
