"""The service path of a launch: an unprivileged user's `pywsl` through the root service.

``ServiceUser`` creates a user for the run (``useradd``; removed with ``userdel --remove`` when
closed), starts the root service (``<interpreter> -m pywsl.api.service.server``) on a private
socket in a folder every user can reach, and imports the benchmark's archive as that user through
the service. ``user_argv`` and ``root_argv`` give the same launch as the user and as root
(in-process), both started through ``setpriv``, so that both sides pay the same start-up.
Closing unregisters the user's distribution, shuts the user's VM down, stops the service and
removes the user, its home and the folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_env import WSLCONFIG, BenchEnvironment
from bench_proc import BenchError, run_checked, shorten
from bench_rootfs import remove_tree

__all__ = ["ServiceUser"]

DISTRIBUTION = "pywsl-bench-user"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0


class ServiceUser:
    """A user of the run, the root service on a private socket and the user's distribution."""

    def __init__(self, env: BenchEnvironment, archive: Path, log: Callable[[str], None]) -> None:
        for program in ("useradd", "userdel", "setpriv"):
            if shutil.which(program, path=env.env.get("PATH")) is None:
                raise BenchError(f"`{program}` is not installed (Debian packages passwd and util-linux)")
        self.env = env
        self.log = log
        self.name = f"pywslbench{secrets.token_hex(3)}"
        self.folder = Path(tempfile.mkdtemp(prefix="pywsl-bench-service-", dir=env.root.parent))
        os.chmod(self.folder, 0o755)  # the user reaches the socket through it
        self.socket = self.folder / "service.sock"
        self.service: subprocess.Popen[bytes] | None = None
        self.uid = self.gid = -1
        self.home = Path("/nonexistent")
        try:
            self._add_user()
            self._start_service()
            self._import(archive)
        except BaseException:
            self.close()
            raise

    # -- set-up ---------------------------------------------------------------------------------

    def _add_user(self) -> None:
        run_checked(
            ["useradd", "--create-home", "--user-group", "--shell", "/bin/sh", self.name], self.env.env
        )
        entry = pwd.getpwnam(self.name)
        self.uid, self.gid, self.home = entry.pw_uid, entry.pw_gid, Path(entry.pw_dir)
        config = self.home / ".config" / "pywsl"
        config.mkdir(parents=True)
        (config / "wslconfig").write_text(WSLCONFIG)
        for path in (self.home / ".config", config, config / "wslconfig"):
            os.chown(path, self.uid, self.gid)

    def _start_service(self) -> None:
        command = [
            self.env.launcher.interpreter,
            "-m",
            "pywsl.api.service.server",
            "--socket",
            str(self.socket),
        ]
        with open(self.env.scratch / "service.log", "ab") as log:
            self.service = subprocess.Popen(
                command, env=self.env.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/"
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.service.poll() is not None:
                raise BenchError(f"the service stopped at once: {self._service_log()}")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(self.socket))
                return
            except OSError:
                time.sleep(0.05)
            finally:
                probe.close()
        raise BenchError(f"the service did not listen within {START_TIMEOUT:g} s: {self._service_log()}")

    def _service_log(self) -> str:
        try:
            return shorten((self.env.scratch / "service.log").read_text(errors="replace"))
        except OSError:
            return "(no log)"

    def _import(self, archive: Path) -> None:
        copy = self.home / archive.name  # the user imports what the user can read
        shutil.copyfile(archive, copy)
        os.chown(copy, self.uid, self.gid)
        try:
            run_checked(
                self.user_argv("--import", DISTRIBUTION, str(self.home / DISTRIBUTION), str(copy)),
                self.user_env,
            )
        finally:
            copy.unlink()

    # -- commands -------------------------------------------------------------------------------

    @property
    def user_env(self) -> dict[str, str]:
        return {
            "PATH": self.env.env.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TERM": self.env.env.get("TERM", "xterm-256color"),
            "PYWSL_SERVICE_SOCKET": str(self.socket),
        }

    def user_argv(self, *arguments: str) -> list[str]:
        """`pywsl <arguments>` as the user (through the service)."""
        return [*_setpriv(self.uid, self.gid), *self.env.argv(*arguments)]

    def root_argv(self, *arguments: str) -> list[str]:
        """`pywsl <arguments>` as root (in-process), started the same way."""
        return [*_setpriv(0, 0), *self.env.argv(*arguments)]

    # -- clean-up -------------------------------------------------------------------------------

    def close(self) -> None:
        """Unregister, shut the user's VM down, stop the service, remove the user and the folder."""
        if self.uid >= 0 and self.service is not None and self.service.poll() is None:
            for arguments in (("--unregister", DISTRIBUTION), ("--shutdown",)):
                with contextlib.suppress(BenchError):
                    run_checked(self.user_argv(*arguments), self.user_env)
        self._stop_service()
        if self.uid >= 0:
            try:
                run_checked(["userdel", "--remove", "--force", self.name], self.env.env)
            except BenchError as error:
                self.log(f"cleanup: {shorten(str(error))}")
            with contextlib.suppress(BenchError, OSError):
                remove_tree(self.env.runtime_root / str(self.uid))
        with contextlib.suppress(BenchError, OSError):
            remove_tree(self.folder)

    def _stop_service(self) -> None:
        if self.service is None:
            return
        if self.service.poll() is None:
            self.service.send_signal(signal.SIGTERM)
            try:
                self.service.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait(STOP_TIMEOUT)
        self.service = None

    def __enter__(self) -> ServiceUser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _setpriv(uid: int, gid: int) -> list[str]:
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]
