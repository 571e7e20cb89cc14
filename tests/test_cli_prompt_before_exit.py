"""`--install --prompt-before-exit` waits for a key on a terminal, as wsl.exe does; never when piped."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

COMMAND = [sys.executable, "-m", "pywsl.cli.main", "--install", "--no-distribution", "--prompt-before-exit"]


def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{marker!r} not seen in {seen!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_a_terminal_waits_for_a_key() -> None:
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(COMMAND, stdin=terminal, stdout=terminal, stderr=terminal, close_fds=True)
        os.close(terminal)
        terminal = -1
        seen = _read_until(controller, b"Press any key to exit...", 30)
        assert b"The operation completed successfully." in seen
        # It waits: nothing ends it until a key arrives.
        assert process.poll() is None
        time.sleep(0.3)  # a wait that must not end on its own: the claim is that it keeps waiting
        assert process.poll() is None
        os.write(controller, b"x")
        assert process.wait(30) == 0
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)


def test_no_prompt_without_a_terminal() -> None:
    result = subprocess.run(COMMAND, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "Press any key" not in result.stdout + result.stderr
