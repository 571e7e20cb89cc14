"""The `signal` module's calls and numbers that the guest uses, from `_signal`: without its enums.

`signal` turns its numbers into enums when it loads (with `enum` itself, milliseconds of the VM's
start); the guest compares and passes plain numbers, which `_signal` takes and gives. Handlers and
masks are the same calls: a handler installed here is the one `signal.getsignal` reports, and
the other way round; only their types differ (numbers rather than `signal.Signals` and
`signal.Handlers`, which compare equal to them).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal  # the same calls, typed
else:
    import _signal

NSIG = _signal.NSIG
SIG_BLOCK = _signal.SIG_BLOCK
SIG_DFL = _signal.SIG_DFL
SIG_IGN = _signal.SIG_IGN
SIG_SETMASK = _signal.SIG_SETMASK
SIG_UNBLOCK = _signal.SIG_UNBLOCK
SIGCHLD = _signal.SIGCHLD
SIGCONT = _signal.SIGCONT
SIGHUP = _signal.SIGHUP
SIGINT = _signal.SIGINT
SIGKILL = _signal.SIGKILL
SIGPIPE = _signal.SIGPIPE
SIGRTMIN = _signal.SIGRTMIN
SIGSTOP = _signal.SIGSTOP
SIGTERM = _signal.SIGTERM
getsignal = _signal.getsignal
pthread_sigmask = _signal.pthread_sigmask
set_wakeup_fd = _signal.set_wakeup_fd
signal = _signal.signal
valid_signals = _signal.valid_signals

__all__ = [
    "NSIG",
    "SIGCHLD",
    "SIGCONT",
    "SIGHUP",
    "SIGINT",
    "SIGKILL",
    "SIGPIPE",
    "SIGRTMIN",
    "SIGSTOP",
    "SIGTERM",
    "SIG_BLOCK",
    "SIG_DFL",
    "SIG_IGN",
    "SIG_SETMASK",
    "SIG_UNBLOCK",
    "getsignal",
    "pthread_sigmask",
    "set_wakeup_fd",
    "signal",
    "valid_signals",
]
