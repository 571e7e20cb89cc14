"""The user's systemd session for a launch into a distribution whose pid 1 is systemd, as in WSL.

WSL's init, before a process of a user runs, makes sure that user's systemd manager runs
(``user@<uid>.service``, bounded by ``[boot] initTimeout``; a warning when it does not start) and
gives the process ``XDG_RUNTIME_DIR=/run/user/<uid>`` and
``DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/<uid>/bus``, so that ``systemctl --user`` works.
Here the relay's child, as the distribution's root before it drops its rights, does the same with
``systemctl start user@<uid>.service``: systemd starts ``user-runtime-dir@<uid>.service`` (the
``/run/user/<uid>`` tmpfs, made by ``systemd-user-runtime-dir`` with logind's limits) and the user's
manager, and the start returns once that manager is ready. A manager already up (its
``systemd/private`` socket is in the runtime folder) is not asked again, so only a user's first
launch waits for it. When it does not start, the process gets a ``wsl:`` warning and keeps the
variables it had. (WSL opens a logind session with ``login -f``, which needs ``pam_systemd``;
``user@<uid>.service`` is what that session starts; with the drop-in ``systemd_units`` writes, it
needs no PAM module.)

When the caller's Wayland or PulseAudio socket was shared (``/mnt/wslg/runtime-dir``), links to
them are made in ``/run/user/<uid>`` as WSL's ``wslg-session`` user unit makes them, so that
``WAYLAND_DISPLAY`` (a name in ``XDG_RUNTIME_DIR``) and ``$XDG_RUNTIME_DIR/pulse/native`` keep
working with the user's own runtime folder.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping

from pywsl.guest import programs
from pywsl.lean_context import suppress

SYSTEMCTL = ("/usr/bin/systemctl", "/bin/systemctl")
RUNTIME_ROOT = "/run/user"
WSLG_RUNTIME_DIR = "/mnt/wslg/runtime-dir"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

_timeout_ms: int | None = None


def enable(timeout_ms: int | None) -> None:
    """Set by init once systemd is pid 1 (``[boot] initTimeout`` bounds each start); None turns it off."""
    global _timeout_ms
    _timeout_ms = timeout_ms


def enabled() -> bool:
    return _timeout_ms is not None


def runtime_dir(uid: int) -> str:
    return f"{RUNTIME_ROOT}/{uid}"


def manager_running(uid: int) -> bool:
    """The user's manager listens on its private socket (it is removed with ``/run/user/<uid>``)."""
    try:
        return stat.S_ISSOCK(os.lstat(f"{runtime_dir(uid)}/systemd/private").st_mode)
    except OSError:
        return False


def start_manager(uid: int, timeout_ms: int) -> str | None:
    """``systemctl start user@<uid>.service``, bounded; None when it started, else why not."""
    program = next((path for path in SYSTEMCTL if os.access(path, os.X_OK)), None)
    if program is None:
        return "the distribution has no systemctl"
    try:
        result = programs.run(
            [program, "--no-ask-password", "start", f"user@{uid}.service"],
            {"PATH": PATH},
            stdout=programs.DEVNULL,
            timeout=max(timeout_ms, 1) / 1000,
        )
    except TimeoutError:
        return f"not started within [boot] initTimeout ({timeout_ms} ms)"
    except OSError as error:
        return f"systemctl cannot run: {error.strerror or error}"
    if result.returncode != 0:
        reason = result.errors.decode("utf-8", "replace").strip().splitlines()
        return reason[-1] if reason else f"systemctl exited with {result.returncode}"
    return None


def _link(folder_fd: int, name: str, target: str) -> None:
    """``name`` in the folder: a link to ``target`` (an existing link elsewhere is replaced)."""
    try:
        if os.readlink(name, dir_fd=folder_fd) == target:
            return
        os.unlink(name, dir_fd=folder_fd)
    except FileNotFoundError:
        pass
    except OSError as error:
        if error.errno != errno.EINVAL:  # EINVAL: not a link, left alone
            raise
        return
    os.symlink(target, name, dir_fd=folder_fd)


def _open_folder(path: str, dir_fd: int | None = None) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def link_gui_sockets(uid: int, gid: int, gui: Mapping[str, str]) -> None:
    """Links in ``/run/user/<uid>`` to the shared Wayland and Pulse sockets (WSL's ``wslg-session``)."""
    wayland = gui.get("WAYLAND_DISPLAY")
    pulse = gui.get("PULSE_SERVER")
    if wayland is None and pulse is None:
        return
    folder = _open_folder(runtime_dir(uid))
    try:
        if os.fstat(folder).st_uid != uid:
            raise OSError(errno.EPERM, f"{runtime_dir(uid)} is not the user's")
        if wayland is not None:
            _link(folder, wayland, f"{WSLG_RUNTIME_DIR}/{wayland}")
        if pulse is not None:
            with suppress(FileExistsError):
                os.mkdir("pulse", 0o755, dir_fd=folder)
                os.chown("pulse", uid, gid, dir_fd=folder, follow_symlinks=False)
            pulse_folder = _open_folder("pulse", folder)
            try:
                _link(pulse_folder, "native", f"{WSLG_RUNTIME_DIR}/pulse/native")
            finally:
                os.close(pulse_folder)
    finally:
        os.close(folder)


def prepare(uid: int, gid: int, name: str, gui: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """As the distribution's root: the user's manager up; the variables for the process and warnings."""
    if _timeout_ms is None:
        return {}, []
    warnings: list[str] = []
    if not manager_running(uid):
        problem = start_manager(uid, _timeout_ms)
        if problem is not None:
            warnings.append(
                f"the systemd user session for '{name}' did not start ({problem}); see journalctl"
            )
    runtime = runtime_dir(uid)
    if not manager_running(uid):
        return {}, warnings  # no runtime folder of the user's to point at
    try:
        link_gui_sockets(uid, gid, gui)
    except OSError as error:
        warnings.append(f"GUI sockets not linked in {runtime}: {error.strerror or error}")
    return {"XDG_RUNTIME_DIR": runtime, "DBUS_SESSION_BUS_ADDRESS": f"unix:path={runtime}/bus"}, warnings
