"""Running a launch once its command line is read: wsl.exe's `LaunchProcess`, without click.

Both readers of the command line end here: the click grammar (`pywsl.cli.launch`) and the fast
path for the common launch lines (`pywsl.cli.fast_launch`). Nothing here imports click or the
rendering modules; the library is imported when the launch runs.

* no command line: the default user's shell, as a login shell;
* a command line (after `--` or not), run as `<shell> -c "<line>"`: WSL passes the raw rest of its
  command line as one string, so one argument is the line itself (`pywsl -- "echo a; exit 3"`),
  and several are joined with spaces, each that holds whitespace or a double quote (or is empty)
  in double quotes, as a Windows program's caller quotes it: `pywsl -- sh -c 'ls -l'` runs
  `sh -c "ls -l"`. Inside the quotes the shell still expands `$` and backquotes, as in WSL;
* `-e`/`--exec` or `--shell-type none`: filename = argv[0], argv passed as is.

The process's exit status becomes pywsl's, except 67 and 87, which init uses for "user not found"
and "too many terminals" and wsl.exe turns into those errors.
"""

from __future__ import annotations

import gc
import os
import sys
import time

from pywsl.cli import messages
from pywsl.cli.report import fail

TYPE_CHECKING = False  # `typing` would cost a warm launch more than this module
if TYPE_CHECKING:
    import uuid
    from collections.abc import Callable, Sequence

    from pywsl.api.session.user_session import UserSession
    from pywsl.cli.invocation import Invocation

__all__ = [
    "TTY_LIMIT_STATUS",
    "USER_NOT_FOUND_STATUS",
    "finish_launch",
    "launch_process",
    "process_arguments",
    "shell_command_line",
    "working_directory",
]

# Exit statuses of init's relay child that wsl.exe maps to errors (LX_INIT_USER_NOT_FOUND, _TTY_LIMIT).
USER_NOT_FOUND_STATUS = 67
TTY_LIMIT_STATUS = 87
# How long a distribution whose relay went away without an exit status may take to stop before
# the launch says the instance terminated (it is then still running: the status alone was lost).
LOST_STATUS_GRACE = 2.0


def working_directory(value: str | None) -> str:
    """--cd's value, else the caller's folder (WSL's default: the current Windows directory).

    On Windows the caller's folder is left to the session: "" makes `ComUserSession` send the
    current Windows directory, which the service translates, as wsl.exe does."""
    if value is None:
        if sys.platform == "win32":
            return ""
        from pywsl.api.process.launch_request import host_directory

        try:
            return host_directory(os.getcwd())
        except OSError:
            return ""  # the caller's folder is gone: the user's home, as WSL when it has none
    if sys.platform == "win32" and not value.startswith(("/", "~")):
        return _enter_windows_directory(value)
    if not value.startswith(("/", "~")):
        raise fail("E_INVALIDARG", messages.INVALID_CWD.format(value=value))
    return value


def _enter_windows_directory(value: str) -> str:
    """--cd with an absolute Windows path: wsl.exe makes it its current directory, which then
    travels as the Windows folder of the launch ("")."""
    import ntpath

    if not ntpath.isabs(value):
        raise fail("E_INVALIDARG", messages.INVALID_CWD.format(value=value))
    try:
        os.chdir(value)
    except OSError as error:
        from pywsl.api.errors import from_os_error

        raise fail(from_os_error(error).code) from None
    return ""


def process_arguments(invocation: Invocation, shell_type: str | None) -> tuple[str | None, list[str], bool]:
    """(filename, command line, login) for `create_lx_process`, as wsl.exe builds them."""
    arguments: Sequence[str] = invocation.arguments
    if invocation.mode == "exec" or shell_type == "none":
        if not arguments:
            raise fail("E_INVALIDARG")  # wsl.exe: exec mode with an empty command line
        return arguments[0], list(arguments), False
    command_line = [shell_command_line(arguments)] if arguments else []
    login = shell_type == "login" or (shell_type is None and not arguments)
    return None, command_line, login


def shell_command_line(arguments: Sequence[str]) -> str:
    """The raw command line wsl.exe would hand the shell for these arguments (see the module)."""
    if len(arguments) == 1:
        return arguments[0]
    return " ".join(_quoted(argument) for argument in arguments)


def _quoted(argument: str) -> str:
    if argument and '"' not in argument and not any(character.isspace() for character in argument):
        return argument
    return '"' + argument.replace("\\", "\\\\").replace('"', '\\"') + '"'


def launch_process(
    session: UserSession,
    distro: uuid.UUID | None,
    invocation: Invocation,
    *,
    user: str = "",
    cwd: str = "",
    shell_type: str | None = None,
) -> int:
    """Run the process and return its exit status (wsl.exe's `LaunchProcess`)."""
    filename, command_line, login = process_arguments(invocation, shell_type)
    if filename is None and not command_line:
        # The default shell: the first-run setup of an installed distribution runs before it.
        from pywsl.api.install.oobe import run_oobe_if_pending

        oobe_status = run_oobe_if_pending(session, distro)
        if oobe_status is not None:
            return oobe_status
    process = session.create_lx_process(
        distro, command_line, filename=filename, cwd=cwd, username=user, login=login, wslenv_source=os.environ
    )
    _resume_collection()
    status = process.wait()
    return finish_launch(status, process.exit_status_lost, lambda: distribution_running(session, distro))


def finish_launch(status: int, status_lost: bool, still_running: Callable[[], bool]) -> int:
    """What wsl.exe makes of a process's end: the instance's end reported when the exit status
    was lost and the distribution no longer runs (`still_running`, asked only then), init's
    "user not found" and "too many terminals" statuses as errors, else the status itself."""
    if status_lost and _stops_soon(still_running):
        _report_instance_terminated()
        return status
    if status == USER_NOT_FOUND_STATUS:
        raise fail("WSL_E_USER_NOT_FOUND")
    if status == TTY_LIMIT_STATUS:
        raise fail("WSL_E_TTY_LIMIT")
    return status


def _stops_soon(still_running: Callable[[], bool]) -> bool:
    """Whether the distribution stops within `LOST_STATUS_GRACE` seconds: a relay that went away
    without a status is usually its instance stopping, which can take a moment to finish (init
    waits for its processes) after the relay is gone."""
    deadline = time.monotonic() + LOST_STATUS_GRACE
    while still_running():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _resume_collection() -> None:
    """The collector on again for the wait, which may be long: the fast path turned it off while the
    launch set up (`pywsl.cli.main`). What was made meanwhile (the launch's modules, mostly) is
    frozen first, so that the first collection does not walk all of it."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def distribution_running(session: UserSession, distro: uuid.UUID | None) -> bool:
    """Whether the distribution (None: the default one) still runs; False when that cannot be told."""
    from pywsl.api.errors import WslError
    from pywsl.api.session.registry import DistributionState

    try:
        infos = session.enumerate_distributions()
    except WslError:
        return False
    for info in infos:
        if (info.id == distro) if distro is not None else info.is_default:
            return info.state is DistributionState.RUNNING
    return False


def _report_instance_terminated() -> None:
    """The process's instance (or the whole VM) ended under it: say so, as wsl.exe does."""
    from pywsl.api.process.lx_process import instance_terminated_error
    from pywsl.cli.report import error_text, print_error

    print_error(error_text(instance_terminated_error()))
