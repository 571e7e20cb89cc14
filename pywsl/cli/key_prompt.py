"""wsl.exe's `--prompt-before-exit`: "Press any key to exit..." and one key press, on a terminal only.

wsl.exe prints the message and waits for a key (`_getch`) after flushing pending input, and only
when its console is interactive; piped or redirected input never blocks.
"""

from __future__ import annotations

import os
import sys

from pywsl.cli import messages
from pywsl.cli.report import print_error

__all__ = ["prompt_for_key_press"]


def prompt_for_key_press(stdin_fd: int = 0) -> None:
    """Wait for one key press on the terminal `stdin_fd`, after WSL's message; nothing otherwise."""
    if not os.isatty(stdin_fd):
        return
    print_error(messages.PRESS_ANY_KEY_TO_EXIT)
    if sys.platform == "win32":
        import msvcrt

        while msvcrt.kbhit():  # type: ignore[attr-defined]
            msvcrt.getwch()  # type: ignore[attr-defined]
        msvcrt.getwch()  # type: ignore[attr-defined]
        return
    import termios
    import tty

    saved = termios.tcgetattr(stdin_fd)
    try:
        termios.tcflush(stdin_fd, termios.TCIFLUSH)
        tty.setcbreak(stdin_fd)
        os.read(stdin_fd, 1)
    finally:
        termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
