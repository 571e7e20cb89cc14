"""CoreInstance: the host's handle on one running distribution (WSL's ``WslCoreInstance``).

It holds an init channel (after ``CreateInstanceResult`` and ``Initialize``), asks init for a
session leader (``CreateSession``, the leader's channel end passed as a file descriptor) and sends
it ``CreateProcessUtilityVm`` with the process's five descriptors. ``terminate`` sends
``TerminateInstance``; the channel closing is the success. The instance keeps running when this
object is closed: another host process can attach to it with ``CoreVm.launch_instance``. The
launch's messages use the struct codec (``pywsl.wire.launch_codec``): a launch never loads construct.
"""

from __future__ import annotations

import select
from _thread import allocate_lock  # `threading.Lock` (`threading` itself is not loaded for it)

from pywsl.lean_context import suppress
from pywsl.vm.errors import VmError
from pywsl.vm.process_request import ProcessRequest, create_process_values
from pywsl.vm.quick_launch import REQUEST_TIMEOUT
from pywsl.wire import unix_sockets as socket  # `socket` without its enums
from pywsl.wire.channel import MessageChannel
from pywsl.wire.constants import LX_INIT_UTILITY_VM_INVALID_PORT
from pywsl.wire.errors import ChannelClosed
from pywsl.wire.launch_codec import CREATE_PROCESS_UTILITY_VM as CREATE_PROCESS
from pywsl.wire.launch_codec import CREATE_SESSION, CREATE_SESSION_RESPONSE, RESULT_UINT32

TERMINATE_TIMEOUT = 60.0  # distributionStartTimeout's default


class CoreInstance:
    """A running distribution, as seen through one init channel."""

    def __init__(
        self,
        *,
        name: str,
        pid: int,
        channel: MessageChannel,
        warnings: list[str],
        default_uid: int,
        flavor: str | None,
        version: str | None,
        pid_namespace: int,
        terminate_timeout: float = TERMINATE_TIMEOUT,
    ) -> None:
        self.name = name
        self.pid = pid
        self.warnings = warnings
        self.default_uid = default_uid
        self.flavor = flavor
        self.version = version
        self.pid_namespace = pid_namespace
        self.terminate_timeout = terminate_timeout
        self._channel = channel
        self._leader: MessageChannel | None = None
        self._lock = allocate_lock()
        self._stopped = False

    @property
    def state(self) -> str:
        """ "Running", or "Stopped" once init has closed the channel (it exited or was terminated)."""
        if self._stopped or self._channel.closed:
            return "Stopped"
        poller = select.poll()
        poller.register(self._channel.fileno(), select.POLLIN)
        if poller.poll(0):
            with self._lock:
                sock = socket.socket(fileno=self._channel.fileno())
                try:
                    peeked = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    peeked = b"?"
                except OSError:
                    peeked = b""
                finally:
                    sock.detach()
            if not peeked:
                self._stopped = True
                return "Stopped"
        return "Running"

    def _session_leader(self) -> MessageChannel:
        """The leader's channel: ``CreateSession`` once, then reused for every process."""
        if self._leader is not None:
            return self._leader
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            response = self._channel.request(
                CREATE_SESSION,
                CREATE_SESSION_RESPONSE,
                fds=[theirs.fileno()],
                timeout=REQUEST_TIMEOUT,
                ConsoleId=0,
            )
        except ChannelClosed:
            ours.close()
            self._stopped = True
            raise VmError(f"distribution {self.name} is not running") from None
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if response.Port == LX_INIT_UTILITY_VM_INVALID_PORT:
            ours.close()
            raise VmError(f"distribution {self.name} could not start a session leader")
        self._leader = MessageChannel(ours, name=f"session leader of {self.name}")
        return self._leader

    def create_process(
        self, request: ProcessRequest, stdio: tuple[int, int, int], control_fd: int, exit_fd: int
    ) -> int:
        """``CreateProcessUtilityVm``: start a process; returns the relay's pid. VmError on failure."""
        with self._lock:
            leader = self._session_leader()
            try:
                reply = leader.request(
                    CREATE_PROCESS,
                    RESULT_UINT32,
                    fds=[*stdio, control_fd, exit_fd],
                    timeout=REQUEST_TIMEOUT,
                    **create_process_values(request),
                )
            except (ChannelClosed, ConnectionError):
                leader.close()
                self._leader = None
                raise VmError(f"the session leader of {self.name} went away") from None
        relay = int(reply.Result)
        if relay == LX_INIT_UTILITY_VM_INVALID_PORT:
            raise VmError(f"distribution {self.name} could not start the process")
        return relay

    def terminate(self, force: bool = True) -> None:
        """``TerminateInstance``: returns once init has closed the channel (every process has ended)."""
        with self._lock:
            if self._leader is not None:
                self._leader.close()
                self._leader = None
            from pywsl.wire import schema  # not on the launch path

            try:
                with self._channel.start_transaction(self.terminate_timeout) as transaction:
                    transaction.send(schema("LX_INIT_TERMINATE_INSTANCE"), Force=force)
                    reply, _fds = transaction.receive(schema("RESULT_MESSAGE<bool>"))
            except (ChannelClosed, ConnectionError):
                self._stopped = True
                return
            if not reply.Result:
                raise VmError(f"distribution {self.name} refused to terminate")

    def close(self) -> None:
        """Drop this handle; the distribution keeps running."""
        with self._lock:
            if self._leader is not None:
                self._leader.close()
                self._leader = None
            with suppress(OSError):
                self._channel.close()
