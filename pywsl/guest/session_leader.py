"""The session leader: serves ``CreateProcessUtilityVm`` for one session of a distribution.

In WSL, init forks a session leader per console (``CreateSession``); the service sends it one
``CreateProcessUtilityVm`` transaction per process, and the leader forks a relay for each and
answers with the port the relay listens on (wsl-reference §4.3 steps 4-5). In pywsl the five
connections of that relay arrive with the message as file descriptors (stdin, stdout, stderr,
terminal control, exit) and the reply ``RESULT_MESSAGE<uint32_t>`` carries the relay's pid
(``LX_INIT_UTILITY_VM_INVALID_PORT`` = UINT_MAX when no relay could be started).

The leader returns to its loop as soon as a relay is forked, reaps relays as they exit, and
returns when its channel closes; the relays live on. Everything a relay runs is imported before
the leader serves, so a relay starts at once; the messages are decoded with the launch codec
(``pywsl.wire.launch_codec``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import struct
from collections.abc import Sequence
from types import FrameType

from pywsl.guest import forking
from pywsl.guest.interop_init import InteropSettings
from pywsl.guest.relay import LaunchRequest, RelayContext, RelayDescriptors, run_relay
from pywsl.wire.channel import MessageChannel
from pywsl.wire.constants import LX_INIT_UTILITY_VM_INVALID_PORT
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.launch_codec import CREATE_PROCESS_UTILITY_VM as _CREATE_PROCESS
from pywsl.wire.launch_codec import RESULT_UINT32 as _RESULT

__all__ = ["serve"]

_CREATE_PROCESS_TYPE = _CREATE_PROCESS.message_type


def _log(message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(2, f"pywsl session leader[{os.getpid()}]: {message}\n".encode(errors="replace"))


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _reap_relays(number: int, frame: FrameType | None) -> None:
    """SIGCHLD: collect every relay that has exited."""
    forking.reap_children()


def _start_relay(channel: MessageChannel, data: bytes, fds: list[int], context: RelayContext) -> int:
    """Fork a relay for one CreateProcessUtilityVm; its pid, or UINT_MAX (fds closed either way)."""
    try:
        (message_type,) = struct.unpack_from("<I", data)
        if message_type != _CREATE_PROCESS_TYPE:
            raise ProtocolError(
                f"unexpected MessageType {message_type}, expected {_CREATE_PROCESS_TYPE}",
                struct=_CREATE_PROCESS.name,
                field="Header.MessageType",
            )
        request = LaunchRequest.from_message(_CREATE_PROCESS.parse(data))
        descriptors = RelayDescriptors.from_list(fds)
    except (ProtocolError, ValueError) as error:
        _log(f"rejected a create-process request: {error}")
        _close_fds(fds)
        return LX_INIT_UTILITY_VM_INVALID_PORT
    try:
        pid = os.fork()
    except OSError as error:
        _log(f"cannot fork a relay: {error}")
        _close_fds(fds)
        return LX_INIT_UTILITY_VM_INVALID_PORT
    if pid == 0:
        try:
            channel.close()
            run_relay(request, descriptors, context)
        finally:
            os._exit(1)
    _close_fds(fds)
    return pid


def serve(
    channel: socket.socket,
    *,
    distribution_name: str,
    default_uid: int,
    default_user: str | None,
    etc_root: str = "/",
    host_mount_point: str | None = None,
    interop: InteropSettings | None = None,
) -> None:
    """Serve CreateProcessUtilityVm transactions on ``channel`` until it closes.

    ``default_user`` is wsl.conf's ``[user] default``; ``default_uid`` is tried when neither the
    request's user name, that user, nor the request's DefaultUid resolve. ``etc_root`` is the
    directory whose ``etc/passwd`` and ``etc/group`` describe the users (``/`` in a
    distribution). ``host_mount_point`` is where the host is mounted (``/mnt/host``; None when
    wsl.conf disables automount): a host working directory is entered through it. A malformed
    frame or a broken sequence ends the session (WSL's leader treats it as fatal); a request that
    cannot be served is answered with UINT_MAX. ``interop`` is wsl.conf's ``[interop]`` (None: off).
    """
    signal.set_wakeup_fd(-1)
    previous = signal.signal(signal.SIGCHLD, _reap_relays)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    context = RelayContext(
        distribution_name=distribution_name,
        default_user=default_user,
        fallback_uid=default_uid,
        etc_root=etc_root,
        host_mount_point=host_mount_point,
        interop=interop,
    )
    leader = MessageChannel(channel, name="session leader")
    # Every relay is a fork of this process: what it holds now is frozen (never scanned again by
    # the collector, so a relay's own collection is quick and no copy-on-write page is touched).
    # Nothing is collected first: a scan of init's objects would delay every launch, and garbage
    # that is frozen is never finalized, so no socket of it can close a reused descriptor.
    gc.freeze()
    try:
        while True:
            transaction = leader.receive_transaction()
            try:
                data, fds = transaction.receive()
            except ChannelClosed:
                return
            except (ProtocolError, OSError) as error:
                _log(f"closing the session: {error}")
                return
            relay = _start_relay(leader, data, fds, context)
            try:
                transaction.send(_RESULT, Result=relay)
            except (ProtocolError, OSError) as error:
                _log(f"closing the session: cannot reply: {error}")
                return
    finally:
        leader.close()
        signal.signal(signal.SIGCHLD, previous)
