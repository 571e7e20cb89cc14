"""A launched process waited for on this process's own std streams: `QuickProcess`.

Both quick launches end here (root's in-process one, `quick_launch`, and a user's through the
service, `pywsl.api.service.launch_client`): the process got this process's descriptors 0, 1 and
2 as they are, and this side keeps the relay's control and exit channels. The wait is
`LxProcess.wait` for that case, without `LxProcess`'s terminal relaying and capture (and their
imports): SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded as `SignalProcess`, the `ExitStatus` is
echoed to the relay, and a relay that goes away without one leaves the status lost.
"""

from __future__ import annotations

import os
import select
import sys

from pywsl.wire import launch_codec as codec
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.launch_link import LaunchLink

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    import signal as _signal
    from types import FrameType
else:
    import _signal  # `signal` without its enums (`enum` would cost a launch more than its round trips)

__all__ = ["FORWARDED_SIGNALS", "QuickProcess", "plain_streams"]

# What `LxProcess.wait` forwards to the Linux process on a Linux host.
FORWARDED_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP, _signal.SIGQUIT)
_EXIT_CHANNEL_CLOSED = 1  # the status when no ExitStatus came (as wsl.exe)
_CHANNEL_TIMEOUT = 5.0  # for the rest of a message that has begun to arrive


class QuickProcess:
    """A process started on this process's std streams: `wait()` for its exit status (signals
    forwarded, the ExitStatus echoed, as `LxProcess.wait`), then `close()`. `control` and
    `exit_end` are this side of the relay's control and exit channels."""

    __slots__ = ("_control", "_exit", "distribution", "status_lost", "warnings")

    def __init__(
        self, control: _socket.socket, exit_end: _socket.socket, warnings: list[str], distribution: str | None
    ) -> None:
        self._control = LaunchLink(control, "control", _CHANNEL_TIMEOUT)
        self._exit = LaunchLink(exit_end, "exit", _CHANNEL_TIMEOUT)
        self.warnings = warnings  # for the user: init's, when this launch started the distribution
        self.distribution = distribution  # its name as given (None: the default one)
        self.status_lost = False  # the relay went away without an ExitStatus

    def wait(self) -> int:
        """Forward signals until the process has exited; its exit status."""
        status, self.status_lost = _wait(self._control, self._exit)
        return status

    def close(self) -> None:
        self._control.close()
        self._exit.close()

    def __repr__(self) -> str:
        return f"QuickProcess(distribution={self.distribution!r})"


def plain_streams() -> bool:
    """Whether the standard streams are open and none is a terminal: the process gets them as
    they are (a terminal is relayed through a socket pair, as `LxProcess` does it)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            return False
        if os.isatty(fd):
            return False
    return True


def _wait(control: LaunchLink, exit_channel: LaunchLink) -> tuple[int, bool]:
    """Forward signals until the ExitStatus arrives; (status, lost: it never came)."""
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    received: list[int] = []

    def forward(number: int, frame: FrameType | None) -> None:
        received.append(number)
        try:
            os.write(wake_write, b"\0")
        except OSError:
            return

    previous = {number: _signal.signal(number, forward) for number in FORWARDED_SIGNALS}
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                continue
        poller = select.poll()
        poller.register(exit_channel.fileno(), select.POLLIN)
        poller.register(wake_read, select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == wake_read:
                    _drain(wake_read)
                    _forward(control, received)
                    continue
                return _exit_status(exit_channel)
    finally:
        for number, handler in previous.items():
            _signal.signal(number, handler)
        os.close(wake_read)
        os.close(wake_write)


def _forward(control: LaunchLink, received: list[int]) -> None:
    while received:
        number = received.pop(0)
        try:
            control.send(codec.SIGNAL_PROCESS, Signal=number)
        except (OSError, ProtocolError):
            return  # the relay is gone: its exit status (or the lack of one) follows


def _exit_status(exit_channel: LaunchLink) -> tuple[int, bool]:
    """ExitStatus → the same message back (the relay waits for it) → the status."""
    try:
        message, _ = exit_channel.receive(codec.EXIT_STATUS)
    except (ChannelClosed, ProtocolError, OSError, TimeoutError):
        return _EXIT_CHANNEL_CLOSED, True
    status = int(message.ExitCode)
    try:
        exit_channel.send(codec.EXIT_STATUS, ExitCode=status)
    except (OSError, ProtocolError):
        return status, False  # the relay is gone already: it needs no echo
    return status, False


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 256):
            pass
    except OSError:
        return
