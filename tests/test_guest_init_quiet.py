"""init's quiet work (`Init._when_quiet`): the next spare session leader and the booting caller's
host PATH folders are forked once init has been quiet `SPARE_DELAY`, and no sooner than
`SESSION_QUIET` after the last CreateSession, so that the fork takes no processor from the
session's first process as it starts (on two processors it delayed a cold launch's exit).

The serve loop itself runs in every end-to-end launch; these tests drive its scheduling with the
forks recorded instead of made.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from pywsl.guest import init, interop_init
from pywsl.guest.wsl_conf import WslConf
from pywsl.wire import unix_sockets as socket


@pytest.fixture
def quiet_init(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[init.Init, list[str]]]:
    """An `Init` with no distribution behind it: its forks are recorded in the list."""
    ours, theirs = socket.socketpair()
    parameters = init.InitParameters(
        name="quiet",
        tree_fd=-1,
        host_tree_fd=-1,
        channel_fd=-1,
        control_fd=theirs.detach(),
        networking_mode="none",
        idle_timeout_ms=-1,
        host_path="/usr/bin:/bin",
    )
    instance = init.Instance(parameters, WslConf(), vm_pid=1, host_resolv_conf="", proc_fd=-1)
    forks: list[str] = []
    subject = init.Init(instance)

    def fork_spare() -> None:
        forks.append("spare leader")
        subject.spare = (0, socket.socket())

    monkeypatch.setattr(subject, "_fork_spare_leader", fork_spare)
    monkeypatch.setattr(
        interop_init, "prepare_path_folders", lambda path, conf: forks.append(f"path folders {path}")
    )
    monkeypatch.setattr(subject, "_fork_leader", lambda fd, settings, spare=False: 4242)
    try:
        yield subject, forks
    finally:
        if subject.spare is not None:
            subject.spare[1].close()
        subject.control.close()
        subject.selector.close()
        ours.close()


def create_session(subject: init.Init) -> int:
    """CreateSession with a channel (a socket, as the host sends), no spare leader waiting."""
    channel, peer = socket.socketpair()
    try:
        return subject._create_session(os.dup(channel.fileno()))
    finally:
        channel.close()
        peer.close()


def test_nothing_is_forked_while_a_session_starts(quiet_init: tuple[init.Init, list[str]]) -> None:
    subject, forks = quiet_init
    assert create_session(subject) == 4242  # forked for the session (no spare yet)
    timeout = subject._select_timeout()
    assert timeout is not None and init.SPARE_DELAY < timeout <= init.SESSION_QUIET
    subject._when_quiet()  # quiet, but the session has only just started
    assert forks == []
    time.sleep(timeout)
    subject._when_quiet()
    assert forks == ["path folders /usr/bin:/bin", "spare leader"]
    assert subject._select_timeout() is None  # nothing left to do when quiet (no idle timeout)


def test_quiet_work_before_any_session_waits_only_for_quiet(quiet_init: tuple[init.Init, list[str]]) -> None:
    subject, forks = quiet_init
    assert subject._select_timeout() == init.SPARE_DELAY
    subject._when_quiet()
    assert forks == ["path folders /usr/bin:/bin"]  # no session asked for yet: no spare leader


def test_each_session_puts_the_next_spare_off_again(quiet_init: tuple[init.Init, list[str]]) -> None:
    subject, forks = quiet_init
    create_session(subject)
    time.sleep(init.SESSION_QUIET)
    subject._when_quiet()
    assert forks[-1] == "spare leader"
    forks.clear()
    create_session(subject)  # hands the channel to the spare (a closed pair here: forked anew)
    assert subject.spare is None
    subject._when_quiet()
    assert forks == []
    time.sleep(init.SESSION_QUIET)
    subject._when_quiet()
    assert forks == ["spare leader"]
