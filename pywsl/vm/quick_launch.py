"""A process started in a running VM by the launch client, on its own light channels.

`CoreVm.launch_instance` and `CoreInstance.create_process` serve every caller (the service's
threads, the API, terminations, imports) and load `socket`, `threading`, `pathlib` and the backends
to do it. A warm `pywsl -d D -- cmd` needs none of that: it sends the same messages in the same
order on `LaunchLink`s, from one thread:

1. mini_init's channel (`mini_init.sock` in the runtime folder): `GuestCapabilities`, then
   `LaunchInit` with the root filesystem's descriptor and the init channel's other end (the running
   instance is attached to; a stopped one is started);
2. the init channel: `CreateInstanceResult`, `Initialize` → `InitializeResponse`, `CreateSession`
   with the session leader channel's other end → `CreateSessionResponse`;
3. the session leader's channel: `CreateProcessUtilityVm` with the five descriptors → the relay's pid.

`launch` returns None, with nothing run, when it should not go on here: no VM runs (then, if the
caller asks, the VM's interpreter is started ahead of the full path's boot) or it is going away,
the instance stopped as it was reached, or the VM answered with a failure. The caller then takes
the full path, which boots, retries and reports as `CoreVm` does. Once `CreateProcessUtilityVm`
is sent the process may run: from then on a failure is a `VmError`.
"""

from __future__ import annotations

import _socket
import os

from pywsl.vm.process_request import create_process_values
from pywsl.vm.runtime_names import SOCKET_NAME
from pywsl.wire import launch_codec as codec
from pywsl.wire.constants import LX_INIT_UTILITY_VM_INVALID_PORT
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.launch_link import LaunchLink, connect_unix, socket_pair

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pywsl.vm.process_request import ProcessRequest

__all__ = [
    "DEFAULT_DISTRIBUTION_START_TIMEOUT_MS",
    "GREETING_TIMEOUT",
    "REQUEST_TIMEOUT",
    "SOCKET_NAME",
    "Started",
    "describe_directory",
    "initialize_values",
    "launch",
    "mini_init_values",
]

GREETING_TIMEOUT = 10.0  # for mini_init's GuestCapabilities
REQUEST_TIMEOUT = 30.0  # for an answer of a running VM
DEFAULT_DISTRIBUTION_START_TIMEOUT_MS = 60_000  # .wslconfig [wsl2] distributionStartTimeout
# LX_MINI_INIT_MOUNT_DEVICE_TYPE: Invalid (a folder: the descriptor is the tree), Lun (a disk).
_DEVICE_TYPE_INVALID = 0
_DEVICE_TYPE_LUN = 1


class Started:
    """A process the VM started: its relay's pid, and what init said when the instance was reached."""

    __slots__ = ("default_uid", "flavor", "relay_pid", "version", "warnings")

    def __init__(
        self, relay_pid: int, warnings: list[str], flavor: str | None, version: str | None, default_uid: int
    ) -> None:
        self.relay_pid = relay_pid
        self.warnings = warnings  # the boot's and init's, when this launch started them
        self.flavor = flavor
        self.version = version
        self.default_uid = default_uid

    def __repr__(self) -> str:
        return f"Started(relay_pid={self.relay_pid}, flavor={self.flavor!r}, version={self.version!r})"


def describe_directory(fd: int) -> str:
    """A folder descriptor's host path for `InstallPath` (`wslpath -w` inside), "" when unknown."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
    return path if path.startswith("/") and not path.endswith(" (deleted)") else ""


def launch(
    runtime_dir: str,
    request: ProcessRequest,
    *,
    name: str,
    rootfs: int,
    hostname: str,
    timezone: str,
    stdio: tuple[int, int, int],
    control_fd: int,
    exit_fd: int,
    start_timeout: float,
    prestart_vm: bool = False,
    boot: Callable[[], list[str] | None] | None = None,
) -> Started | None:
    """Start `request` in distribution `name` (root filesystem: the folder descriptor `rootfs`).
    With `prestart_vm`, finding no VM starts the VM's interpreter for the boot that follows
    (`namespaces_prestart`). `boot` boots the VM when none runs: the warnings of the boot, which
    come first in `Started.warnings`, or None to leave the boot to the caller's full path."""
    try:
        messages = _built(request, name, hostname, timezone)
    except ProtocolError:
        return None  # text the messages cannot carry (not UTF-8): the full path reports it
    sock, boot_warnings = _connect(runtime_dir, prestart_vm, boot)
    if sock is None:
        return None
    # Every channel stays open until the process has started, as with `CoreVm` and `CoreInstance`.
    links = [LaunchLink(sock, "mini_init channel", GREETING_TIMEOUT)]
    try:
        try:
            initialize, session, process = _send_requests(
                links, messages, name, rootfs, [*stdio, control_fd, exit_fd]
            )
        except ConnectionError:
            return None  # the VM is going away
        mini_init, init, leader = links
        init.timeout = start_timeout
        try:
            mini_init.receive(codec.GUEST_CAPABILITIES)
            result, _ = init.receive(codec.CREATE_INSTANCE_RESULT)
            if result.Result != 0:
                return None  # nothing ran (init never read the requests): the full path says why
            init.timeout = REQUEST_TIMEOUT
            response = init.receive_reply(initialize, codec.INITIALIZE_RESPONSE)
            created = init.receive_reply(session, codec.CREATE_SESSION_RESPONSE)
        except (ChannelClosed, ConnectionError, ProtocolError):
            return None  # the VM or the instance stopped as it was reached (idle): start them anew
        except TimeoutError as error:
            raise _vm_error(f"distribution {name} did not answer: {error}") from None
        if created.Port == LX_INIT_UTILITY_VM_INVALID_PORT:
            return None  # no session leader took the channel: the request was never read
        # A session leader has the request from here on: the process may run, so no second try.
        return Started(
            _relay_pid(leader, process, name),
            [*boot_warnings, *(line for line in (result.Warnings or "").split("\n") if line)],
            response.Flavor or None,
            response.Version or None,
            int(response.DefaultUid),
        )
    finally:
        for link in links:
            link.close()


def _connect(
    runtime_dir: str, prestart_vm: bool, boot: Callable[[], list[str] | None] | None
) -> tuple[_socket.socket | None, list[str]]:
    """mini_init's channel, booting the VM first when none runs (`launch`), and the boot's
    warnings; no channel when the caller's full path is to boot."""
    path = os.path.join(runtime_dir, SOCKET_NAME)
    sock = connect_unix(path)
    if sock is not None:
        return sock, []
    if prestart_vm:
        from pywsl.vm.backends import namespaces_prestart

        namespaces_prestart.begin(runtime_dir)
    warnings = None if boot is None else boot()
    if warnings is None:
        return None, []
    return connect_unix(path), warnings  # None: it stopped again at once (the full path reports)


def initialize_values(name: str, hostname: str, timezone: str, default_uid: int) -> dict[str, Any]:
    """`Initialize`'s fields for distribution `name` (as `CoreVm.launch_instance` sends them too)."""
    return {
        "Hostname": hostname,
        "Domainname": "",
        "WindowsHosts": "",
        "DistributionName": name,
        "Plan9Socket": "",
        "Timezone": timezone,
        "DrvFsVolumesBitmap": 0,
        "DrvFsDefaultOwner": default_uid,
        "FeatureFlags": 0,
        "DrvfsMount": 0,
    }


def mini_init_values(
    message_type: int,
    *,
    name: str = "",
    install_path: str = "",
    flags: int = 0,
    disk: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """`LX_MINI_INIT_MESSAGE`'s fields (`LaunchInit`, `Import`, `ImportInplace`, `Export`); `disk`
    is the file system type and mount options of a disk that comes as the directory's descriptor
    (the VM attaches it and finds its LUN itself), None for a folder."""
    return {
        "Header": {"MessageType": message_type},
        "MountDeviceType": _DEVICE_TYPE_LUN if disk else _DEVICE_TYPE_INVALID,
        "DeviceId": 0,
        "FsType": disk[0] if disk else "",
        "MountOptions": disk[1] if disk else "",
        "VmId": "",
        "DistributionName": name,
        "SharedMemoryRoot": "",
        "InstallPath": install_path,
        "UserProfile": "",
        "Flags": flags,
        "ConnectPort": 0,
    }


def _built(request: ProcessRequest, name: str, hostname: str, timezone: str) -> tuple[bytes, bytes]:
    """`Initialize` and `CreateProcessUtilityVm`, built before anything is sent: a value they cannot
    carry is then found while nothing has started."""
    initialize = codec.INITIALIZE.build(**initialize_values(name, hostname, timezone, request.default_uid))
    return initialize, codec.CREATE_PROCESS_UTILITY_VM.build(**create_process_values(request))


def _send_requests(
    links: list[LaunchLink], messages: tuple[bytes, bytes], name: str, rootfs: int, process_fds: list[int]
) -> tuple[int, int, int]:
    """Every request of the launch at once, each on the channel the one before it creates:
    `LaunchInit` (with the init channel), `Initialize` and `CreateSession` (with the session
    leader's channel), `CreateProcessUtilityVm`. Each new channel is added to `links`; the ids of
    the three transactions whose replies are read."""
    mini_init = links[0]
    init, init_peer = _new_link(links, f"init channel of {name}")
    leader, leader_peer = _new_link(links, f"session leader of {name}")
    initialize_message, process_message = messages
    try:
        mini_init.send_request(
            codec.MINI_INIT_MESSAGE,
            [rootfs, init_peer.fileno()],
            **mini_init_values(
                codec.MINI_INIT_MESSAGE.message_type, name=name, install_path=describe_directory(rootfs)
            ),
        )
        init_peer.close()
        initialize = init.send_built_request(initialize_message)
        session = init.send_request(codec.CREATE_SESSION, [leader_peer.fileno()], ConsoleId=0)
    finally:
        init_peer.close()
        leader_peer.close()
    process = leader.send_built_request(process_message, process_fds)
    return initialize, session, process


def _new_link(links: list[LaunchLink], name: str) -> tuple[LaunchLink, _socket.socket]:
    """A new channel: our link (added to `links`) and the other end, which travels to the VM."""
    ours, theirs = socket_pair()
    link = LaunchLink(ours, name, REQUEST_TIMEOUT)
    links.append(link)
    return link, theirs


def _relay_pid(leader: LaunchLink, process: int, name: str) -> int:
    """The answer to `CreateProcessUtilityVm`: the relay's pid; `VmError` when it did not start."""
    try:
        reply = leader.receive_reply(process, codec.RESULT_UINT32)
    except (ChannelClosed, ConnectionError):
        raise _vm_error(f"the session leader of {name} went away") from None
    except TimeoutError as error:
        raise _vm_error(f"the session leader of {name} did not answer: {error}") from None
    if reply.Result == LX_INIT_UTILITY_VM_INVALID_PORT:
        raise _vm_error(f"distribution {name} could not start the process")
    return int(reply.Result)


def _vm_error(message: str) -> Exception:
    from pywsl.vm.errors import VmError

    return VmError(message)
