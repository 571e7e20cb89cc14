"""The session leader: serves ``CreateProcessUtilityVm`` for one session of a distribution.

In WSL, init forks a session leader per console (``CreateSession``); the service sends it one
``CreateProcessUtilityVm`` transaction per process, and the leader forks a relay for each and
answers with the port the relay listens on (wsl-reference §4.3 steps 4-5). In pywsl the five
connections of that relay arrive with the message as file descriptors (stdin, stdout, stderr,
terminal control, exit) and the reply ``RESULT_MESSAGE<uint32_t>`` carries the relay's pid
(``LX_INIT_UTILITY_VM_INVALID_PORT`` = UINT_MAX when no relay could be started).

The leader returns to its loop as soon as a relay is forked, reaps relays as they exit, and
returns when its channel closes; the relays live on. A relay is forked ahead (`SpareRelay`): by a
spare leader while it waits for its channel, and whenever the leader has been idle for
`SPARE_DELAY`. A request is then handed to the waiting relay over a socket pair, and the reply
does not wait for a fork of the interpreter, which costs a launch milliseconds. A leader forked
for a session, whose first request is usually waiting already, forks that request's relay first:
a spare forked before it would only put the request behind a fork. Everything a relay runs is
imported before the leader serves, so a relay starts at once; the messages are decoded with the
launch codec (``pywsl.wire.launch_codec``).
"""

from __future__ import annotations

import gc
import os
import select
import struct
from collections.abc import Sequence
from types import FrameType

from pywsl.guest import forking, syscalls, users
from pywsl.guest import lean_signal as signal
from pywsl.guest.interop_init import InteropSettings
from pywsl.guest.path_folders import host_path_folders
from pywsl.guest.relay import LaunchRequest, RelayContext, RelayDescriptors, run_relay
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket
from pywsl.wire.channel import MessageChannel
from pywsl.wire.constants import LX_INIT_UTILITY_VM_INVALID_PORT
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.launch_codec import CREATE_PROCESS_UTILITY_VM as _CREATE_PROCESS
from pywsl.wire.launch_codec import RESULT_UINT32 as _RESULT

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import replace
else:
    from pywsl.records import replace

__all__ = ["SPARE_DELAY", "SPARE_RELAY_TITLE", "SessionLeader", "SpareRelay", "serve"]

_CREATE_PROCESS_TYPE = _CREATE_PROCESS.message_type


def _log(message: str) -> None:
    with suppress(OSError):
        os.write(2, f"pywsl session leader[{os.getpid()}]: {message}\n".encode(errors="replace"))


def _close_fds(fds: Sequence[int]) -> None:
    for fd in fds:
        with suppress(OSError):
            os.close(fd)


def _reap_relays(number: int, frame: FrameType | None) -> None:
    """SIGCHLD: collect every relay that has exited."""
    forking.reap_children()


SPARE_DELAY = 0.005  # a relay is forked ahead once the leader has been idle this long (seconds)
SPARE_RELAY_TITLE = "SpareRelay"  # its name until it runs a request (init's idle check skips it)
# A request handed to a spare relay: its length, and the uid tried when no user resolves (-1:
# none), which the leader may have learned after it forked the spare (`SessionLeader.use_default_uid`).
_HANDED = struct.Struct("<Ii")


class SpareRelay:
    """A relay forked ahead of its request: it waits on a socket pair for one request (its bytes
    and five descriptors) and then runs as a relay forked for it would; the pair's end is its exit."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self._sock = sock

    @classmethod
    def fork(cls, context: RelayContext, host_path: str = "") -> SpareRelay | None:
        """A new spare relay; None when the fork fails (the request then forks one itself). With
        a `host_path`, it makes that host PATH's folders while it waits (`_await_request`)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError as error:
            _log(f"cannot fork a spare relay: {error}")
            ours.close()
            theirs.close()
            return None
        if pid == 0:
            try:
                forking.close_other_fds([theirs.fileno()])
                syscalls.set_process_title(SPARE_RELAY_TITLE)
                _await_request(theirs.fileno(), context, host_path)
            finally:
                os._exit(1)
        theirs.close()
        return cls(pid, ours)

    def hand(self, data: bytes, fds: Sequence[int], fallback_uid: int | None) -> bool:
        """Give the request (and the session's `fallback_uid`) to the spare relay; False when it
        is gone (nothing was handed)."""
        try:
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))]
            header = _HANDED.pack(len(data), -1 if fallback_uid is None else fallback_uid)
            self._sock.sendmsg([header], ancillary)
            self._sock.sendall(data)
        except OSError as error:
            _log(f"the spare relay is gone: {error}")
            return False
        finally:
            self._sock.close()
        return True

    def close(self) -> None:
        """Not needed: the spare relay exits when its socket ends."""
        self._sock.close()


def _await_request(sock_fd: int, context: RelayContext, host_path: str = "") -> None:
    """A spare relay's life: the request, then the relay; nothing when the leader closes the pair.
    While it waits, it parses the user database (`users.read_ahead`) and makes the folders of
    `host_path` (the host PATH its launch most likely has: the VM's booting caller's), which its
    launch would otherwise make first (as root, as the relay does:
    `interop_init.launch_environment`); one that fails is left to that launch, and so is what is
    left when the request comes first."""
    gc.collect()  # what the leader made since it froze its objects, as `run_relay` would

    def request_waiting() -> bool:  # the work ahead stops for it: the launch does what is left
        return bool(select.select([sock_fd], [], [], 0)[0])

    if not request_waiting():
        users.read_ahead(context.etc_root)
    interop = context.interop
    if host_path and interop is not None and interop.enabled and interop.append_host_path:
        try:
            host_path_folders(host_path, stop=request_waiting)
        except Exception as error:  # only ahead of time: the launch makes what is missing
            _log(f"the host PATH folders were not made ahead: {error!r}")
    with socket.socket(fileno=sock_fd) as sock:
        try:
            header, fds, _flags, _address = socket.recv_fds(sock, _HANDED.size, 5)
            if len(header) < _HANDED.size:
                _close_fds(fds)
                return  # the leader closed the pair: not needed
            size, fallback_uid = _HANDED.unpack(header)
            data = bytearray()
            while len(data) < size:
                chunk = sock.recv(size - len(data))
                if not chunk:
                    raise ProtocolError("the request ended early")
                data += chunk
            request = LaunchRequest.from_message(_CREATE_PROCESS.parse(bytes(data)))
            descriptors = RelayDescriptors.from_list(fds)
        except (OSError, ProtocolError, ValueError) as error:
            _log(f"a spare relay could not take its request: {error}")
            return
    session_uid = None if fallback_uid < 0 else fallback_uid
    if context.fallback_uid != session_uid:
        context = replace(context, fallback_uid=session_uid)
    run_relay(request, descriptors, context)


def _start_relay(channel: MessageChannel, data: bytes, fds: list[int], leader: SessionLeader) -> int:
    """A relay for one CreateProcessUtilityVm (the leader's spare, or a new fork); its pid, or
    UINT_MAX (fds closed either way). A request refused before that leaves the spare waiting."""
    context, spare = leader.context, leader.spare
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
    if spare is not None:
        handed = spare.hand(data, fds, context.fallback_uid)
        leader.spare = None  # handed over, or gone: either way it is used up
        if handed:
            _close_fds(fds)
            return spare.pid
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


class SessionLeader:
    """One session's leader: its relays' context, and a relay forked ahead (see the module)."""

    def __init__(
        self,
        *,
        distribution_name: str,
        default_uid: int,
        default_user: str | None,
        etc_root: str = "/",
        host_mount_point: str | None = None,
        interop: InteropSettings | None = None,
    ) -> None:
        self.context = RelayContext(
            distribution_name=distribution_name,
            default_user=default_user,
            fallback_uid=default_uid,
            etc_root=etc_root,
            host_mount_point=host_mount_point,
            interop=interop,
        )
        self.spare: SpareRelay | None = None
        self._prepared = False
        # The host PATH whose folders the first spare relay makes while it waits ("" for none):
        # the VM's booting caller's, for the leader forked as the distribution starts.
        self.warm_host_path = ""

    def use_default_uid(self, default_uid: int) -> None:
        """The session's default uid, learned after this leader was forked (a spare leader forked
        before the distribution's first Initialize gets it with its channel)."""
        if self.context.fallback_uid != default_uid:
            self.context = replace(self.context, fallback_uid=default_uid)

    def prepare(self) -> None:
        """Signals, frozen objects and the first spare relay: done by a spare leader while it waits."""
        self._settle()
        if self.spare is None:
            host_path, self.warm_host_path = self.warm_host_path, ""
            self.spare = SpareRelay.fork(self.context, host_path)

    def _settle(self) -> None:
        """Signals and frozen objects, once, before the first relay is forked."""
        if self._prepared:
            return
        self._prepared = True
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, _reap_relays)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        # Every relay is a fork of this process: what it holds now is frozen (never scanned again by
        # the collector, so a relay's own collection is quick and no copy-on-write page is touched).
        # Nothing is collected first: a scan of init's objects would delay every launch, and garbage
        # that is frozen is never finalized, so no socket of it can close a reused descriptor.
        gc.freeze()

    def serve(self, channel: socket.socket) -> None:
        """Serve CreateProcessUtilityVm transactions on ``channel`` until it closes. A leader
        forked for a session (not a spare) forks no relay ahead of its first request, which is
        usually waiting already: that request forks its relay, and a spare follows once idle."""
        previous = signal.getsignal(signal.SIGCHLD)
        self._settle()
        leader = MessageChannel(channel, name="session leader")
        poller = select.poll()
        poller.register(leader.fileno(), select.POLLIN)
        try:
            while True:
                if self.spare is None and not poller.poll(int(SPARE_DELAY * 1000)):
                    self.spare = SpareRelay.fork(self.context)  # idle: the fork delays no request
                transaction = leader.receive_transaction()
                try:
                    data, fds = transaction.receive()
                except ChannelClosed:
                    return
                except (ProtocolError, OSError) as error:
                    _log(f"closing the session: {error}")
                    return
                relay = _start_relay(leader, data, fds, self)
                try:
                    transaction.send(_RESULT, Result=relay)
                except (ProtocolError, OSError) as error:
                    _log(f"closing the session: cannot reply: {error}")
                    return
        finally:
            leader.close()
            if self.spare is not None:
                self.spare.close()
                self.spare = None
            signal.signal(signal.SIGCHLD, previous)


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
    SessionLeader(
        distribution_name=distribution_name,
        default_uid=default_uid,
        default_user=default_user,
        etc_root=etc_root,
        host_mount_point=host_mount_point,
        interop=interop,
    ).serve(channel)
