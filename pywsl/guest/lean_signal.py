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
    from signal import (
        NSIG,
        SIG_BLOCK,
        SIG_DFL,
        SIG_IGN,
        SIG_SETMASK,
        SIG_UNBLOCK,
        SIGCHLD,
        SIGCONT,
        SIGHUP,
        SIGINT,
        SIGKILL,
        SIGPIPE,
        SIGRTMIN,
        SIGSTOP,
        SIGTERM,
        getsignal,
        pthread_sigmask,
        set_wakeup_fd,
        signal,
        valid_signals,
    )
else:
    from _signal import (
        NSIG,
        SIG_BLOCK,
        SIG_DFL,
        SIG_IGN,
        SIG_SETMASK,
        SIG_UNBLOCK,
        SIGCHLD,
        SIGCONT,
        SIGHUP,
        SIGINT,
        SIGKILL,
        SIGPIPE,
        SIGRTMIN,
        SIGSTOP,
        SIGTERM,
        getsignal,
        pthread_sigmask,
        set_wakeup_fd,
        signal,
        valid_signals,
    )

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
