"""The first-run setup ("OOBE") of a distribution installed with `--install`.

In WSL the registration keeps `RunOOBE = 1` after `--install` (never after `--import`). The first
launch of the default shell while it is set (`AllowOOBE`: no filename, no command line) makes the
relay child read `/etc/wsl-distribution.conf`, run `[oobe] command` as root through `/bin/sh -c`
on the caller's terminal, and report `OobeResult`: on success the service clears `RunOOBE` and
stores `[oobe] defaultUid` (when present) as the default uid, and the shell then starts as that
user; on failure it prints `OOBE command "<command>" failed, exiting`, that launch ends with exit
status 1, and OOBE stays pending for the next launch.

pywsl runs the same steps from the client side, before the shell starts: the command is an ordinary
`create_lx_process` as root, and the result goes to the session's `complete_oobe` (WSL's handling of
`OobeResult`: RunOOBE cleared, DefaultUid stored). The file is read from the installed root
filesystem without following links (`distribution_conf.read_distribution_conf`); when the caller
may not read it there, it is read inside the distribution, as WSL's relay does.

The setup is meant for a person at a terminal (WSL's images ask for a user name and password), so
it runs only when the launch's stdin is a terminal: a default-shell launch fed from a pipe or a
file starts the shell as the current default user and leaves the setup pending for the next
interactive launch, as `--install --no-launch` does.

On Windows the installed WslService runs the setup itself, as in WSL: a session that says so
(`runs_oobe_in_service`) is left alone.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from pywsl.api.install.distribution_conf import (
    CONFIG_PATH,
    DistributionConf,
    parse_distribution_conf,
    read_distribution_conf,
)
from pywsl.wire.config_format import MAX_CONFIG_BYTES

__all__ = [
    "find_distribution",
    "is_terminal",
    "oobe_failed_message",
    "read_oobe_settings",
    "run_oobe_if_pending",
]

Distro = str | uuid.UUID | None
Stream = int | IO[Any] | None


def oobe_failed_message(command: str) -> str:
    """WSL's text when the OOBE command fails."""
    return f'OOBE command "{command}" failed, exiting'


def find_distribution(session: Any, distro: Distro) -> Any | None:
    """The `DistributionInfo` of `distro` (name, GUID or None for the default) from the enumeration."""
    for info in session.enumerate_distributions():
        if distro is None and info.is_default:
            return info
        if isinstance(distro, uuid.UUID) and info.id == distro:
            return info
        if isinstance(distro, str) and info.name.casefold() == distro.casefold():
            return info
    return None


def _read_inside(session: Any, distro_id: uuid.UUID) -> DistributionConf | None:
    """Read the file through the distribution itself, as root (its own view of its links)."""
    process = session.create_lx_process(
        distro_id,
        ["/bin/sh", "-c", f"exec cat {CONFIG_PATH} 2>/dev/null"],
        filename="/bin/sh",
        username="root",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    output, _ = process.communicate()
    if process.wait() != 0:
        return None
    data = output or b""
    if len(data) > MAX_CONFIG_BYTES:
        too_big = f"{CONFIG_PATH}: file larger than {MAX_CONFIG_BYTES} bytes, ignored"
        return DistributionConf(warnings=[too_big])
    return parse_distribution_conf(data.decode("utf-8", errors="replace"))


def read_oobe_settings(session: Any, info: Any) -> DistributionConf:
    """The distribution's `[oobe]` settings (empty when it has no wsl-distribution.conf)."""
    rootfs = Path(info.base_path) / "rootfs"
    try:
        conf = read_distribution_conf(rootfs)
    except PermissionError:
        conf = _read_inside(session, info.id)
    except OSError as error:
        return DistributionConf(warnings=[f"{CONFIG_PATH}: cannot be read: {error.strerror}"])
    return conf if conf is not None else DistributionConf()


def is_terminal(stream: Stream) -> bool:
    """Whether a launch's stdin (None: this process's own) is a terminal."""
    try:
        if stream is None:
            return os.isatty(0)
        if isinstance(stream, int):
            return stream >= 0 and os.isatty(stream)
        return os.isatty(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def _write_error(stderr: Stream, text: str) -> None:
    line = (text + "\n").encode()
    with contextlib.suppress(OSError, ValueError):
        if stderr is None:
            sys.stderr.flush()
            os.write(2, line)
        elif isinstance(stderr, int):
            if stderr >= 0:
                os.write(stderr, line)
        else:
            stderr.flush()
            os.write(stderr.fileno(), line)


def run_oobe_if_pending(
    session: Any,
    distro: Distro = None,
    *,
    command_line: Sequence[str] = (),
    filename: str | None = None,
    stdin: Stream = None,
    stdout: Stream = None,
    stderr: Stream = None,
    on_warning: Callable[[str], None] | None = None,
    interactive: bool | None = None,
) -> int | None:
    """Run the distribution's first-run setup if this launch is the one WSL runs it in.

    Call it before starting the user's process. `command_line`/`filename` are that launch's: OOBE
    runs only for the default shell (both empty). Returns None when the launch goes on (no OOBE
    pending, or the setup succeeded and was recorded), or the exit status that ends the launch (1
    when the OOBE command failed; its message went to `stderr`). The setup command gets `stdin`,
    `stdout` and `stderr` (None = this process's own, a terminal stays a terminal). It is skipped,
    and stays pending, when the launch is not `interactive` (default: when `stdin` is not a
    terminal).
    """
    if command_line or filename or getattr(session, "runs_oobe_in_service", False):
        return None  # not the default shell, or a service that runs the setup itself (Windows')
    if not (is_terminal(stdin) if interactive is None else interactive):
        return None
    info = find_distribution(session, distro)
    if info is None or not info.run_oobe:
        return None
    conf = read_oobe_settings(session, info)
    for warning in conf.warnings:
        if on_warning is not None:
            on_warning(warning)
        else:
            _write_error(stderr, warning)
    if conf.oobe_command:
        process = session.create_lx_process(
            info.id,
            ["/bin/sh", "-c", conf.oobe_command],
            filename="/bin/sh",
            username="root",
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
        status = process.wait()
        if status != 0:
            _write_error(stderr, oobe_failed_message(conf.oobe_command))
            return 1
    session.complete_oobe(info.id, conf.default_uid)
    return None
