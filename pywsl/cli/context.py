"""The user session behind one command line: opened on first use, like wsl.exe's `SvcComm`.

wsl.exe creates its COM session object only when a verb or a launch needs the service; pywsl opens
its `UserSession` (in-process for root, the service proxy otherwise) the same way, once per
command line, and closes it when the command line is done.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # the fast launch path imports this module: `typing` would cost it more
if TYPE_CHECKING:
    import uuid
    from collections.abc import Sequence

    import click

    from pywsl.api.session.user_session import UserSession

__all__ = ["CliState", "current_session", "open_session", "prestart_vm", "quick_launch", "state_of"]


def open_session() -> UserSession:
    """`pywsl.connect()`: imported here so that parsing alone never loads the library."""
    from pywsl.api.connect import connect

    return connect()


def prestart_vm() -> None:
    """Root's launch with no VM running: start the VM's interpreter now, as early as the launch is
    known to be one (`pywsl.api.session.cold_start`); its boot takes it, or it is ended."""
    if sys.platform == "linux" and os.geteuid() == 0:
        from pywsl.api.session.cold_start import prestart_if_no_vm

        prestart_if_no_vm()


def quick_launch(
    distribution: str | None, command_line: Sequence[str], *, filename: str | None, cwd: str, user: str
) -> int | None:
    """A launch on this process's std streams without opening the session: root's in-process
    (`pywsl.api.session.quick_launch`), anybody else's as one request to the service
    (`pywsl.api.service.launch_client`). The process's exit status, or None when the launch
    needs the session (then nothing ran)."""
    if sys.platform != "linux":
        return None  # Windows: every launch goes to the installed WslService (`ComUserSession`)
    if os.geteuid() == 0:
        from pywsl.api.session.quick_launch import launch  # (the fast path started the VM's interpreter)
    else:
        from pywsl.api.service.launch_client import launch
    from pywsl.cli.launch_run import finish_launch

    process = launch(
        distribution, command_line, filename=filename, cwd=cwd, username=user, environ=os.environ
    )
    if process is None:
        return None
    try:
        if process.warnings:
            from pywsl.cli import report
            from pywsl.cli.streams import utf8_streams

            utf8_streams()
            for warning in process.warnings:
                report.print_user_warning(warning)
        status = process.wait()
    finally:
        process.close()
    return finish_launch(status, process.status_lost, lambda: _still_running(process.distribution))


def _still_running(distribution: str | None) -> bool:
    """Whether the distribution of a process whose exit status was lost still runs."""
    from pywsl.api.errors import WslError
    from pywsl.cli.launch_run import distribution_running

    state = CliState()
    try:
        session = state.get_session()
        try:
            distro = None if distribution is None else session.get_distribution_id(distribution)
        except WslError:
            return False
        return distribution_running(session, distro)
    finally:
        state.close()


class CliState:
    """Per command line: the session (opened lazily) and the distribution chosen by -d."""

    def __init__(self, session: UserSession | None = None, distro: uuid.UUID | None = None) -> None:
        self.session = session
        self.distro = distro

    def __repr__(self) -> str:
        return f"CliState(session={self.session!r}, distro={self.distro!r})"

    def get_session(self) -> UserSession:
        if self.session is None:
            self.session = open_session()
        return self.session

    def close(self) -> None:
        session, self.session = self.session, None
        close = getattr(session, "close", None)
        if callable(close):
            close()


def state_of(ctx: click.Context) -> CliState:
    """The state of this command line, kept on the root context."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        state = CliState()
        root.obj = state
        root.call_on_close(state.close)
    return root.obj


def current_session() -> UserSession:
    """The user session of the command line being run, opened on first use."""
    import click

    return state_of(click.get_current_context()).get_session()
