"""`pywsl`: wsl.exe's command line on a Linux host (the `pywsl` console script).

`main()` reads the arguments and runs the launch or the verb, and exits with wsl.exe's exit
status: the Linux process's own status for a launch, 0 for a verb that succeeded, 255 (wsl.exe's
-1) after printing an error. Text is UTF-8 whatever the locale (wsl.exe's `WSL_UTF8=1`). pywsl's
own messages go to stderr; stdout carries only the output of the command or of the verb. Warnings
the library emits for the user (configuration warnings when the VM or a distribution starts) are
printed as `wsl: <warning>`, unless `WSL_DISABLE_WARNINGS=1`.

The common launch lines (`[-d NAME] [-u USER] [--cd DIR] -- CMD...`) take the fast path
(`pywsl.cli.fast_launch`), which never imports click, and leave without the interpreter's
teardown (`_leave`); every other line goes to the click command of `pywsl.cli.command`, the full
grammar.
"""

from __future__ import annotations

import atexit
import gc
import os
import sys

from pywsl.cli.streams import flush_stdout

TYPE_CHECKING = False  # `typing` alone would cost a warm launch a sixth of its time
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import NoReturn

    from pywsl.cli.command import Pywsl

__all__ = ["build_command", "main", "run"]


def build_command() -> Pywsl:
    """The `pywsl` click command (the full grammar)."""
    from pywsl.cli.command import build_command as build

    return build()


def _fast_launch(argv: Sequence[str] | None, *, exiting: bool = False) -> int | None:
    """`fast_launch.run`, with the garbage collector off while the launch imports and sets up:
    those make many objects and no garbage, and collecting would add about a tenth to a warm
    launch. `launch_run.launch_process` freezes what was made meanwhile and turns it on again
    before it waits for the process; unless the process is `exiting`, they are unfrozen after.
    A process `exiting` with the launch's status leaves with the collector still off: turned on
    here, it would first walk every object the launch made (a cold launch's boot included, 1.5 to
    2.5 ms of it) to free nothing before the process ends."""
    frozen = gc.get_freeze_count()
    gc.disable()
    status: int | None = None
    try:
        from pywsl.cli import fast_launch

        status = fast_launch.run(argv)
        return status
    finally:
        if not (exiting and status is not None):
            gc.enable()
        if not exiting and not frozen and gc.get_freeze_count():
            gc.unfreeze()


def run(argv: Sequence[str] | None = None) -> int:
    """Run one command line; returns the exit status."""
    status = _fast_launch(argv)
    if status is not None:
        return status
    return build_command().main(argv, standalone_mode=False)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The console script."""
    status = _fast_launch(argv, exiting=True)
    if status is not None:
        flush_stdout()
        _leave(status)
    build_command().main(argv)
    raise AssertionError("unreachable: main() exits")


def _leave(status: int) -> NoReturn:
    """Exit with `status` as `sys.exit` would, without tearing the interpreter down.

    A launch has loaded a hundred modules, and freeing them one by one took about a seventh of a
    warm launch; the process ends anyway. The atexit functions run and the std streams are
    flushed as at a normal exit; a thread still running, or a stream that cannot be flushed,
    takes the normal way out (which waits for the thread, or reports the stream)."""
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(status)
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        sys.exit(status)
    os._exit(status)


if __name__ == "__main__":
    main()
