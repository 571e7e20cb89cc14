"""init: pid 1 of a running distribution (WSL's ``InitEntryUtilityVm``).

mini_init's shim forks this role into fresh mount, pid, uts and ipc namespaces. It

* reads ``/etc/wsl.conf``, mounts the distribution's filesystems (``mounts.distribution_plan``)
  and ``pivot_root``s into the distribution;
* greets the host with ``CreateInstanceResult`` (its pid in the VM and the wsl.conf warnings);
* answers ``Initialize`` (host name, ``/etc/hosts``, ``/etc/resolv.conf``, the time zone,
  ``[boot] command`` on the first one) with ``InitializeResponse``;
* keeps a spare session leader forked ahead (waiting for its channel on a socket pair), so that
  a ``CreateSession`` hands the channel over, with the session's default uid, instead of waiting
  for a fork: the first one as soon as it has greeted the host (the distribution starts for a
  launch, whose session follows; that leader's first relay makes the booting caller's host PATH
  folders meanwhile), the next ones once init has been quiet a while after a session;
* ends its pid namespace on ``TerminateInstance`` (the channel closing is the success), on a
  stop request from mini_init (its control socket; signals from the distribution's own
  processes are ignored), or after ``instanceIdleTimeout`` ms with no process besides itself
  and its session leaders;
* reaps every orphan of the distribution, as pid 1 must.

A host process may attach to the running instance later: mini_init passes the new channel over the
control socket, and init greets it with ``CreateInstanceResult`` like the first.
"""

from __future__ import annotations

import errno
import os
import selectors
import stat
import struct
import time

from pywsl.guest import (
    devices,
    forking,
    fstab,
    guest_log,
    gui,
    interop_init,
    mounts,
    network_files,
    syscalls,
    systemd_boot,
    systemd_units,
    systemd_user,
    timezone,
)
from pywsl.guest import lean_signal as signal
from pywsl.guest.os_release import flavor_and_version
from pywsl.guest.requests import receive_request
from pywsl.guest.rootfs import write_file_atomic
from pywsl.guest.users import UserDatabase
from pywsl.guest.wsl_conf import WslConf, read_wsl_conf, shown_value
from pywsl.lean_context import suppress
from pywsl.wire import unix_sockets as socket
from pywsl.wire.channel import MessageChannel, Transaction
from pywsl.wire.constants import LX_INIT_UTILITY_VM_INVALID_PORT
from pywsl.wire.errors import ChannelClosed, ProtocolError
from pywsl.wire.launch_codec import (
    CREATE_INSTANCE_RESULT,
    CREATE_SESSION,
    CREATE_SESSION_RESPONSE,
    INITIALIZE,
    INITIALIZE_RESPONSE,
    TERMINATE_INSTANCE,
)
from pywsl.wire.message_types import CreateInstanceStep, LxMessageType

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from dataclasses import dataclass, field
else:
    from pywsl.records import dataclass, field

try:
    from pywsl.guest import session_leader as _session_leader
except ImportError:  # pragma: no cover - the session leader ships with the guest
    _session_leader = None  # type: ignore[assignment]

log = guest_log.getLogger("pywsl.init")
# The name (comm) of a session leader's spare relay, which is no activity of the distribution.
_SPARE_RELAY_NAME = _session_leader.SPARE_RELAY_TITLE.encode() if _session_leader is not None else b""

STEP_LAUNCH_INIT = CreateInstanceStep.LxInitCreateInstanceStepLaunchInit
RECEIVE_TIMEOUT = 10.0
SEND_TIMEOUT = 5.0
TERMINATE_GRACE = 2.0
SYSTEMD_STOP_TIMEOUT = 30.0  # units stopping at -t / --shutdown; then systemd is killed
STOP_REQUEST = b"T"  # on the control socket, from mini_init: stop the instance (VM shutdown)
# init -> a spare session leader, with the channel it is to serve: b"S" and the session's default
# uid (the first Initialize decides it, possibly after the spare was forked).
SESSION_CHANNEL = b"S"
_SESSION_UID = struct.Struct("<i")
SPARE_DELAY = 0.002  # a new spare leader is forked once init has been quiet this long (seconds)
# ... and no sooner than this after the last CreateSession (seconds): the session's first process
# is then usually started, and over when it was short, so the fork takes no processor from it.
SESSION_QUIET = 0.01
MAX_HOST_RESOLV_CONF = network_files.MAX_RESOLV_CONF_BYTES
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


T = LxMessageType  # the enum's values as plain numbers (`pywsl.wire.enums` would cost the VM's start)


def _drain(fd: int) -> None:
    """Empty the signal wake-up pipe (the handlers already ran)."""
    with suppress(BlockingIOError):
        os.read(fd, 512)


@dataclass(frozen=True)
class InitParameters:
    """What mini_init hands a new instance."""

    name: str
    tree_fd: int  # the distribution's root, a detached mount tree
    host_tree_fd: int  # the host tree for /mnt/host, a detached mount tree (``host_view``)
    channel_fd: int  # the first host channel
    control_fd: int  # from mini_init: further host channels (attach)
    networking_mode: str
    idle_timeout_ms: int
    interop_tree_fd: int = -1  # another copy of the host tree, for the interop runtime (``interop_init``)
    install_path: str = ""  # the root filesystem's host folder (wslpath -w), "" when unknown
    device_settings: devices.DeviceSettings = field(default_factory=devices.DeviceSettings)  # ``devices``
    shared_tree_fd: int = -1  # the VM's shared tmpfs for /mnt/wsl, a detached mount tree; -1: none
    folders_tree_fd: int = -1  # the host PATH folders made for the VM (``vm_path_folders``); -1: none
    guard_fd: int = -1  # the shim's pipe: closed when init exits, b"K" = end the instance now
    cgroup_fd: int = -1  # the VM's cgroup2 root (delegated to the VM's root); -1: none
    cgroup_name: str = ""  # the instance's sub-group there, made for systemd
    host_path: str = ""  # the VM's booting caller's host PATH (``BootArguments.host_path``)


@dataclass
class Settings:
    """What the first Initialize decided; later Initialize requests get the same answers."""

    default_uid: int
    flavor: str | None
    version: str | None


@dataclass
class Instance:
    parameters: InitParameters
    conf: WslConf
    vm_pid: int
    host_resolv_conf: str
    proc_fd: int
    settings: Settings | None = None
    session_leaders: set[int] = field(default_factory=set)
    console: systemd_boot.Console | None = None  # systemd is pid 1 (its console's primary end)


def _read_host_resolv_conf() -> str:
    """The VM's (the host's) ``/etc/resolv.conf``, read before the distribution's root replaces it."""
    try:
        with open("/etc/resolv.conf", "rb") as handle:
            data = handle.read(MAX_HOST_RESOLV_CONF + 1)
    except OSError:
        return ""
    return data[:MAX_HOST_RESOLV_CONF].decode("utf-8", "replace")


def prepare_root(parameters: InitParameters) -> Instance:
    """Mount the distribution's filesystems and pivot_root into it."""
    vm_pid = int(os.readlink("/proc/self"))  # the VM's /proc still: our pid there
    conf = read_wsl_conf(parameters.tree_fd)
    host_resolv_conf = _read_host_resolv_conf()
    mounts.make_private()
    mounts.attach_root(parameters.tree_fd)
    mounts.apply_plan(parameters.tree_fd, mounts.distribution_plan(parameters.networking_mode, None))
    conf.warnings += devices.apply_devices(parameters.tree_fd, parameters.device_settings, conf.gpu_enabled)
    gui.enable(conf.gui_applications)  # inherited by the session leaders and relays
    interop_init.attach_host_view(parameters.tree_fd, parameters.interop_tree_fd, parameters.folders_tree_fd)
    _mount_shared_tmpfs(parameters, conf)
    if conf.automount_enabled:
        _mount_host_tree(parameters, conf)
    mounts.pivot_into(parameters.tree_fd)
    for fd in (parameters.host_tree_fd, parameters.tree_fd):
        os.close(fd)
    if conf.automount_mount_fs_tab:
        conf.warnings += fstab.mount_all()
    if devices.gpu_active(parameters.device_settings, conf.gpu_enabled):
        conf.warnings += devices.configure_loader(conf.gpu_append_lib_path, conf.automount_ldconfig)
    interop_init.install_runtime(
        conf.host_mount_point if conf.automount_enabled else None, parameters.install_path or None
    )
    _check_default_user(conf)
    proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return Instance(parameters, conf, vm_pid, host_resolv_conf, proc_fd)


def _mount_shared_tmpfs(parameters: InitParameters, conf: WslConf) -> None:
    """``/mnt/wsl``: the VM's tmpfs that every distribution shares; a failure is a warning."""
    if parameters.shared_tree_fd < 0:
        return
    try:
        steps = [mounts.AttachTree(mounts.SHARED_MOUNT_POINT, "shared")]
        mounts.apply_plan(parameters.tree_fd, steps, {"shared": parameters.shared_tree_fd})
    except OSError as error:
        log.warning("cannot mount %s: %s", mounts.SHARED_MOUNT_POINT, error)
        conf.warnings.append(f"{mounts.SHARED_MOUNT_POINT} cannot be mounted ({error.strerror or error})")
    finally:
        os.close(parameters.shared_tree_fd)


def _mount_host_tree(parameters: InitParameters, conf: WslConf) -> None:
    """The host's files at ``[automount] root``; a failure is a warning, never a failed start."""
    target = conf.host_mount_point
    try:
        trees = {"host": parameters.host_tree_fd}
        mounts.apply_plan(parameters.tree_fd, mounts.host_tree_plan(target, conf.automount_attributes), trees)
    except OSError as error:
        log.warning("cannot mount the host's files at %s: %s", target, error)
        conf.warnings.append(
            f"The host's files cannot be mounted at {target} ({error.strerror or error}); "
            "[automount] is skipped for this start"
        )


def _check_default_user(conf: WslConf) -> None:
    """``[user] default`` naming no user: a warning, and the registered default user is used."""
    if conf.user_default is None:
        return
    try:
        user = UserDatabase("/").user_by_name(conf.user_default)
    except OSError as error:
        log.warning("cannot read /etc/passwd: %s", error)
        return
    if user is None:
        conf.warnings.append(
            f"[user] default: there is no user '{shown_value(conf.user_default)}' in "
            "/etc/passwd, using the distribution's default user"
        )


def _channel_for_spare(sock_fd: int) -> tuple[int, int] | None:
    """A spare session leader waits here for the channel it is to serve and the session's default
    uid; None when init closed the socket instead (the instance stops, or the spare was not wanted)."""
    size = len(SESSION_CHANNEL) + _SESSION_UID.size
    with socket.socket(fileno=sock_fd) as sock:
        try:
            data, fds, _flags, _address = socket.recv_fds(sock, size, 1)
        except OSError:
            return None
    if data[: len(SESSION_CHANNEL)] == SESSION_CHANNEL and len(data) == size and len(fds) == 1:
        return fds[0], _SESSION_UID.unpack_from(data, len(SESSION_CHANNEL))[0]
    for fd in fds:
        os.close(fd)
    return None


def _redirect_stdio_to_null() -> None:
    null = os.open("/dev/null", os.O_RDWR)
    for target in (0, 1):
        os.dup2(null, target)
    if null > 2:
        os.close(null)


class Init:
    """The serve loop of a distribution's pid 1 (of pywsl's init beside systemd, when systemd is pid 1)."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.name = instance.parameters.name
        self.selector = selectors.DefaultSelector()
        self.control = socket.socket(fileno=instance.parameters.control_fd)
        self.channels: set[MessageChannel] = set()
        self.stop: bool | None = None  # None: running; else: terminate, forced or not
        self.idle_since: float | None = None
        self.idle_timeout_ms = instance.parameters.idle_timeout_ms
        self.warnings_sent = False  # wsl.conf's warnings go to the host that started the instance
        # The next session leader, forked ahead: (pid, init's end of its socket pair).
        self.spare: tuple[int, socket.socket] | None = None
        self.spare_wanted = False  # a session was asked for: keep a spare from now on
        self.quiet_from = 0.0  # (monotonic) no quiet work before then: a session is starting
        # The launches to come most likely have the booting caller's host PATH: its folders are
        # made by the first spare leader's first relay, or, when that fork failed, by a child
        # forked at init's first quiet moment (None once either has it).
        self.path_folders_of: str | None = instance.parameters.host_path

    # -- loop ------------------------------------------------------------------------------------

    def serve(self) -> int:
        wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # Stopping is mini_init's to ask (over the control socket): a signal from a process of
        # the distribution ([boot] command = kill 1) must not stop every launch.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # Each registration's data is what to call when its descriptor is readable.
        self.selector.register(wakeup_read, selectors.EVENT_READ, lambda: _drain(wakeup_read))
        self.selector.register(self.control, selectors.EVENT_READ, self._on_control)
        if self.instance.console is not None:
            self.selector.register(
                self.instance.console.fd, selectors.EVENT_READ, self.instance.console.drain
            )
        interop = interop_init.start_listener(self.instance.conf.interop_enabled)
        if interop is not None:
            self.selector.register(interop, selectors.EVENT_READ, lambda: self._on_interop(interop))
        self._add_channel(socket.socket(fileno=self.instance.parameters.channel_fd))
        # The distribution starts for a launch, whose CreateSession follows at once: its leader,
        # and that leader's first relay, are forked now, while the host reads the instance's
        # result and init answers Initialize, rather than when CreateSession comes.
        self.spare_wanted = True
        self._fork_spare_leader(warm_host_path=True)
        while self.stop is None:
            ready = self.selector.select(self._select_timeout())
            for key, _events in ready:
                key.data()
                if self.stop is not None:
                    break
            self._reap()
            self._check_idle()
            if not ready and self.stop is None:
                self._when_quiet()
        self._drop_spare_leader()
        self._terminate(self.stop)
        return 0

    def _when_quiet(self) -> None:
        """What is forked once no request is waiting, so that the fork delays none: the host
        PATH folders of the booting caller (after the first requests, which the instance's start
        answers first), and the next spare session leader; not while a session starts."""
        if time.monotonic() < self.quiet_from:
            return
        if self.path_folders_of is not None:
            host_path, self.path_folders_of = self.path_folders_of, None
            interop_init.prepare_path_folders(host_path, self.instance.conf)
        if self.spare_wanted and self.spare is None:
            self._fork_spare_leader()

    def _on_interop(self, interop: interop_init.InteropListener) -> None:
        interop.accept(None if self.control.fileno() < 0 else self.control)

    def _request_stop(self, force: bool) -> None:
        if self.stop is None:
            self.stop = force

    def _select_timeout(self) -> float | None:
        quiet_work = (self.spare_wanted and self.spare is None) or self.path_folders_of is not None
        spare = max(SPARE_DELAY, self.quiet_from - time.monotonic()) if quiet_work else None
        if self.idle_timeout_ms < 0:
            return spare
        idle = min(0.5, max(0.02, self.idle_timeout_ms / 4000))
        return idle if spare is None else min(idle, spare)

    # -- host channels ---------------------------------------------------------------------------

    def _add_channel(self, sock: socket.socket) -> None:
        try:
            channel = MessageChannel(sock, name=f"init channel of {self.name}")
        except ValueError as error:  # not a stream socket
            log.error("refusing a host channel: %s", error)
            sock.close()
            return
        warnings = None if self.warnings_sent else "\n".join(self.instance.conf.warnings) or None
        self.warnings_sent = True
        try:
            channel.send(
                CREATE_INSTANCE_RESULT,
                Result=0,
                FailureStep=0,
                Pid=self.instance.vm_pid,
                ConnectPort=0,
                Warnings=warnings,
                timeout=SEND_TIMEOUT,
            )
        except (OSError, TimeoutError) as error:
            log.warning("cannot greet a host channel: %s", error)
            channel.close()
            return
        self.channels.add(channel)
        self.selector.register(channel, selectors.EVENT_READ, lambda: self._on_channel(channel))

    def _drop(self, channel: MessageChannel) -> None:
        with suppress(KeyError, ValueError):
            self.selector.unregister(channel)
        self.channels.discard(channel)
        channel.close()

    def _on_control(self) -> None:
        try:
            data, fds, _flags, _address = socket.recv_fds(self.control, 16, 1)
        except OSError:
            data, fds = b"", []
        if not data:
            # mini_init is gone: the VM is stopping.
            self.selector.unregister(self.control)
            self.control.close()
            return
        if data == STOP_REQUEST:
            self._request_stop(False)
        for fd in fds:
            if data == b"A" and stat.S_ISSOCK(os.fstat(fd).st_mode):
                self._add_channel(socket.socket(fileno=fd))
            else:
                os.close(fd)

    def _on_channel(self, channel: MessageChannel) -> None:
        try:
            transaction, data, fds = receive_request(channel, RECEIVE_TIMEOUT)
        except ChannelClosed:
            self._drop(channel)
            return
        except (ProtocolError, TimeoutError, OSError) as error:
            log.error("closing an init channel: %s", error)
            self._drop(channel)
            return
        self.idle_since = None  # a host request is activity: the idle period starts again
        try:
            self._dispatch(transaction, data, fds)
        except Exception as error:
            if isinstance(error, ProtocolError | OSError | TimeoutError):
                log.error("closing an init channel: %s", error)
            else:
                log.exception("closing an init channel after an unexpected error")
            for fd in fds:
                with suppress(OSError):
                    os.close(fd)
            self._drop(channel)

    def _dispatch(self, transaction: Transaction, data: bytes, fds: list[int]) -> None:
        message_type = struct.unpack_from("<I", data)[0]
        expected_fds = 1 if message_type == T.LxInitMessageCreateSession else 0
        if len(fds) != expected_fds:
            raise ProtocolError(
                f"{len(fds)} file descriptor(s) arrived with message type {message_type}, "
                f"expected {expected_fds}"
            )
        if message_type == T.LxInitMessageInitialize:
            settings = self._initialize(INITIALIZE.parse(data))
            namespace = 0
            with suppress(OSError):
                namespace = os.stat("/proc/self/ns/pid").st_ino
            transaction.send(
                INITIALIZE_RESPONSE,
                Plan9Port=LX_INIT_UTILITY_VM_INVALID_PORT,
                DefaultUid=settings.default_uid,
                InteropPort=LX_INIT_UTILITY_VM_INVALID_PORT,
                SystemdEnabled=self.instance.console is not None,
                PidNamespace=namespace,
                Flavor=settings.flavor,
                Version=settings.version,
            )
        elif message_type == T.LxInitMessageCreateSession:
            CREATE_SESSION.parse(data)
            port = self._create_session(fds.pop())  # takes the descriptor over
            transaction.send(CREATE_SESSION_RESPONSE, Port=port)
        elif message_type == T.LxInitMessageTerminateInstance:
            self._request_stop(bool(TERMINATE_INSTANCE.parse(data).Force))
        else:
            raise ProtocolError(
                f"unexpected message type {message_type} on the init channel",
                struct="MESSAGE_HEADER",
                field="MessageType",
            )

    # -- Initialize ------------------------------------------------------------------------------

    def _initialize(self, message: object) -> Settings:
        if self.instance.settings is not None:
            return self.instance.settings
        conf = self.instance.conf
        hostname = self._apply_hostname(conf, getattr(message, "Hostname", None) or socket.gethostname())
        domain = getattr(message, "Domainname", None) or network_files.DEFAULT_DOMAIN
        windows_hosts = getattr(message, "WindowsHosts", None) or ""
        try:
            syscalls.setdomainname(domain)
        except OSError as error:
            log.warning("cannot set the domain name %r: %s", domain, error)
        self._write_etc("/etc/hostname", hostname + "\n")
        if conf.network_generate_hosts:
            self._write_etc("/etc/hosts", network_files.hosts_file(hostname, domain, windows_hosts))
        if conf.network_generate_resolv_conf:
            resolv_conf = network_files.resolv_conf_file(self.instance.host_resolv_conf)
            self._write_etc("/etc/resolv.conf", resolv_conf)
        default_uid = int(getattr(message, "DrvFsDefaultOwner", 0))
        if conf.user_default is not None:
            try:
                user = UserDatabase("/").user_by_name(conf.user_default)
            except OSError as error:
                log.warning("cannot read /etc/passwd: %s", error)
                user = None
            if user is None:
                log.warning("[user] default: no user %r in /etc/passwd", conf.user_default)
            else:
                default_uid = user.uid
        zone = getattr(message, "Timezone", None) or ""
        if conf.time_use_windows_timezone and zone:
            timezone.apply_timezone(zone)
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            flavor, version = flavor_and_version(root)
        finally:
            os.close(root)
        self.instance.settings = Settings(default_uid, flavor, version)
        if conf.boot_command:
            self._run_boot_command(conf.boot_command, hostname)
        return self.instance.settings

    @staticmethod
    def _apply_hostname(conf: WslConf, requested: str) -> str:
        """Set the host name: wsl.conf's (even empty) over the host's, cleaned; ``localhost`` if refused."""
        hostname = network_files.clean_hostname(
            conf.network_hostname if conf.network_hostname is not None else requested
        )
        try:
            syscalls.sethostname(hostname)
        except OSError as error:
            log.warning("cannot set the host name %r: %s", hostname, error)
            hostname = network_files.DEFAULT_HOSTNAME
            try:
                syscalls.sethostname(hostname)
            except OSError as second:
                log.warning("cannot set the host name %r: %s", hostname, second)
        return hostname

    @staticmethod
    def _write_etc(path: str, text: str) -> None:
        try:
            write_file_atomic(path, text.encode())
        except OSError as error:
            log.warning("cannot write %s: %s", path, error)

    def _run_boot_command(self, command: str, hostname: str) -> None:
        """``[boot] command`` as WSL's init runs it: ``sh -c``, as root, with init's umask 0."""
        pid = os.fork()
        if pid == 0:
            try:
                forking.become_child([0, 1, 2])
                _redirect_stdio_to_null()
                os.setsid()
                os.umask(0)
                environment = {
                    "PATH": DEFAULT_PATH,
                    "HOME": "/root",
                    "USER": "root",
                    "LOGNAME": "root",
                    "SHELL": "/bin/sh",
                    "NAME": hostname,
                    "WSL_DISTRO_NAME": self.name,
                }
                os.chdir("/")
                os.execve("/bin/sh", ["sh", "-c", command], environment)
            except OSError as error:
                log.error("[boot] command: cannot run /bin/sh: %s", error)
            forking.exit_now(127)

    # -- sessions --------------------------------------------------------------------------------

    def _create_session(self, fd: int) -> int:
        """A session leader serving ``fd`` (always closed here): the spare one, or one forked now;
        its pid, or UINT_MAX."""
        if _session_leader is None or not stat.S_ISSOCK(os.fstat(fd).st_mode):
            os.close(fd)
            return LX_INIT_UTILITY_VM_INVALID_PORT
        settings = self.instance.settings or Settings(0, None, None)
        self.spare_wanted = True
        self.quiet_from = time.monotonic() + SESSION_QUIET
        try:
            leader = self._hand_to_spare_leader(fd, settings)
            if leader is None:
                leader = self._fork_leader(fd, settings)
        except OSError as error:
            log.error("cannot fork a session leader: %s", error)
            return LX_INIT_UTILITY_VM_INVALID_PORT
        finally:
            os.close(fd)
        return leader

    def _hand_to_spare_leader(self, fd: int, settings: Settings) -> int | None:
        """The spare leader's pid once it has ``fd``; None when there is no usable spare."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        pid, sock = spare
        try:
            socket.send_fds(sock, [SESSION_CHANNEL + _SESSION_UID.pack(settings.default_uid)], [fd])
        except OSError as error:
            log.warning("the spare session leader is gone: %s", error)
            return None
        finally:
            sock.close()  # the spare sees the end of its socket when it was not given the channel
        return pid

    def _fork_spare_leader(self, *, warm_host_path: bool = False) -> None:
        """A spare session leader, waiting for the next CreateSession's channel. With
        `warm_host_path`, its first relay makes the booting caller's host PATH folders while it
        waits (init then does not make them at its first quiet moment)."""
        settings = self.instance.settings or Settings(0, None, None)
        host_path = ""
        if warm_host_path and self.path_folders_of is not None:
            host_path, self.path_folders_of = self.path_folders_of, None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = self._fork_leader(theirs.fileno(), settings, spare=True, host_path=host_path)
        except OSError as error:
            log.error("cannot fork a spare session leader: %s", error)
            ours.close()
            self.spare_wanted = False  # forks fail: the next session forks its leader itself
            if host_path:
                self.path_folders_of = host_path  # made at init's first quiet moment, as before
            return
        finally:
            theirs.close()
        self.spare = (pid, ours)

    def _drop_spare_leader(self) -> None:
        if self.spare is not None:
            self.spare[1].close()  # it exits when its socket ends
            self.spare = None

    def _fork_leader(self, fd: int, settings: Settings, *, spare: bool = False, host_path: str = "") -> int:
        """Fork a session leader serving the channel ``fd`` or, for a spare, the channel that
        arrives on the socket ``fd``; its pid."""
        leader = os.fork()
        if leader == 0:
            code = 1
            try:
                forking.become_child([0, 1, 2, fd])
                _redirect_stdio_to_null()
                os.setsid()
                os.umask(self.instance.conf.umask & 0o777)  # [filesystem] umask, for every launch
                syscalls.set_process_title("SessionLeader")
                session = _session_leader.SessionLeader(
                    distribution_name=self.name,
                    default_uid=settings.default_uid,
                    default_user=self.instance.conf.user_default,
                    host_mount_point=self.instance.conf.host_mount_point
                    if self.instance.conf.automount_enabled
                    else None,
                    interop=interop_init.relay_settings(self.instance.conf),
                )
                if spare:
                    session.warm_host_path = host_path
                    session.prepare()  # its first relay is forked while it waits for a channel
                    handed = _channel_for_spare(fd)
                    if handed is None:
                        channel = -1
                    else:
                        channel, default_uid = handed
                        session.use_default_uid(default_uid)
                else:
                    channel = fd
                if channel >= 0:
                    session.serve(socket.socket(fileno=channel))
                code = 0
            except BaseException:
                log.exception("session leader failed")
            forking.exit_now(code)
        self.instance.session_leaders.add(leader)
        return leader

    # -- processes -------------------------------------------------------------------------------

    def _reap(self) -> None:
        for pid, _status in forking.reap_children()[0]:
            self.instance.session_leaders.discard(pid)
            if self.spare is not None and self.spare[0] == pid:
                self._drop_spare_leader()

    def _busy(self) -> bool:
        """Whether a process of the distribution runs besides init, its session leaders and their
        spare relays (`session_leader.SpareRelay`: a child of a leader still named so).

        With systemd as pid 1, only what pywsl started counts (init's descendants: launches, their
        background processes, ``[boot] command``), never systemd's units."""
        pids = {int(name) for name in os.listdir(self.instance.proc_fd) if name.isdigit()}
        pids.discard(1)
        if self.instance.console is not None:
            pids = self._descendants(pids)
        leaders = self.instance.session_leaders
        return any(not self._spare_relay(pid, leaders) for pid in pids - leaders)

    def _spare_relay(self, pid: int, leaders: set[int]) -> bool:
        named = self._name_and_parent(pid)
        if named is None:
            return True  # gone already: no activity
        name, parent = named
        return parent in leaders and name == _SPARE_RELAY_NAME

    def _name_and_parent(self, pid: int) -> tuple[bytes, int] | None:
        """A process's name and parent pid from its ``stat``; None when it cannot be read."""
        with suppress(OSError, ValueError, IndexError):
            fd = os.open(f"{pid}/stat", os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.instance.proc_fd)
            try:
                text = os.read(fd, 4096)
            finally:
                os.close(fd)
            name, _, rest = text.partition(b" (")[2].rpartition(b")")
            return name, int(rest.split()[1])
        return None

    def _descendants(self, pids: set[int]) -> set[int]:
        parents: dict[int, int] = {}
        for pid in pids:
            named = self._name_and_parent(pid)
            if named is not None:
                parents[pid] = named[1]
        found = {os.getpid()}
        changed = True
        while changed:
            changed = False
            for pid, parent in parents.items():
                if parent in found and pid not in found:
                    found.add(pid)
                    changed = True
        found.discard(os.getpid())
        return found

    def _check_idle(self) -> None:
        if self.idle_timeout_ms < 0:
            return
        if self._busy():
            self.idle_since = None
            return
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since >= self.idle_timeout_ms / 1000:
            log.info("distribution %s idle for %d ms, stopping", self.name, self.idle_timeout_ms)
            self._request_stop(False)

    def _terminate(self, force: bool) -> None:
        """End every process of the pid namespace; returning from serve then ends init itself."""
        if self.instance.console is not None:
            self._stop_systemd(force)
            return
        if force:
            return
        with suppress(OSError):
            os.kill(-1, signal.SIGTERM)
        deadline = time.monotonic() + TERMINATE_GRACE
        while time.monotonic() < deadline:
            self._reap()
            if not ({int(name) for name in os.listdir(self.instance.proc_fd) if name.isdigit()} - {1}):
                return
            time.sleep(0.02)

    def _stop_systemd(self, force: bool) -> None:
        """SIGRTMIN+3 to systemd (units stop, then pid 1 exits and the namespace ends with it);
        init returns once systemd's final stage signals it, or after the bound (the shim then
        kills pid 1). Forced: the shim kills pid 1 at once."""
        guard = self.instance.parameters.guard_fd
        if force:
            if guard >= 0:
                with suppress(OSError):
                    os.write(guard, b"K")
            return
        stopping: list[bool] = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        with suppress(OSError):
            os.kill(1, systemd_boot.STOP_SIGNAL)
        console = self.instance.console
        deadline = time.monotonic() + SYSTEMD_STOP_TIMEOUT
        while not stopping and time.monotonic() < deadline:
            if console is not None:
                console.drain()
            self._reap()
            time.sleep(0.02)
        if not stopping:
            log.warning("systemd of %s did not stop within %g s: ending it", self.name, SYSTEMD_STOP_TIMEOUT)
            if guard >= 0:
                with suppress(OSError):
                    os.write(guard, b"K")


def send_failure(channel_fd: int, error: int, step: int = STEP_LAUNCH_INIT) -> None:
    """Report a failed start with ``CreateInstanceResult`` on a fresh channel, then close it."""
    channel = MessageChannel(socket.socket(fileno=channel_fd), name="init channel")
    with suppress(OSError, TimeoutError):
        channel.send(
            CREATE_INSTANCE_RESULT,
            Result=error,
            FailureStep=step,
            Pid=0,
            ConnectPort=0,
            Warnings=None,
            timeout=SEND_TIMEOUT,
        )
    channel.close()


def _start_systemd(instance: Instance) -> None:
    """Prepare what systemd needs, fork, exec systemd as pid 1; returns in the child (pywsl's init).

    Anything that cannot be prepared is a warning and the instance runs without systemd."""
    parameters, conf = instance.parameters, instance.conf
    try:
        if parameters.cgroup_fd < 0:
            raise OSError(errno.ENOTSUP, "the VM has no delegated cgroup2 hierarchy")
        systemd_boot.enter_cgroup(parameters.cgroup_fd, parameters.cgroup_name)
        systemd_boot.mount_run_lock()
        console, secondary = systemd_boot.make_console()
    except OSError as error:
        log.warning("distribution %s: cannot start systemd: %s", parameters.name, error)
        conf.warnings.append(
            f"[boot] systemd: systemd cannot start here ({error.strerror or error}); "
            "pywsl's init runs the distribution"
        )
        return
    finally:
        if parameters.cgroup_fd >= 0:
            os.close(parameters.cgroup_fd)
    machine_id_warning = systemd_boot.ensure_machine_id()
    if machine_id_warning:
        conf.warnings.append(machine_id_warning)
    try:
        log.info("distribution %s: units masked for systemd: %s", parameters.name, systemd_units.prepare())
    except OSError as error:
        log.warning("distribution %s: cannot mask units for systemd: %s", parameters.name, error)
    child = os.fork()
    if child != 0:
        systemd_boot.exec_systemd(secondary)
    console.keeper = secondary  # held open: the primary end never hangs up
    syscalls.set_process_title("/init")
    instance.console = console
    systemd_user.enable(conf.boot_init_timeout_ms)  # inherited by the session leaders and relays
    timeout_warning = systemd_boot.wait_until_running(conf.boot_init_timeout_ms, console)
    if timeout_warning:
        log.warning("distribution %s: %s", parameters.name, timeout_warning)
        conf.warnings.append(timeout_warning)


def run(parameters: InitParameters) -> None:
    """init's entry point in the forked child (pid 1 of the new pid namespace). Never returns."""
    syscalls.set_process_title("/init")
    try:
        instance = prepare_root(parameters)
    except Exception as error:
        log.error("distribution %s: cannot start: %s", parameters.name, error)
        code = error.errno if isinstance(error, OSError) and error.errno else errno.EINVAL
        send_failure(parameters.channel_fd, code)
        forking.exit_now(1)
        return
    if instance.conf.boot_systemd and systemd_boot.can_boot():
        _start_systemd(instance)  # returns in the child: pywsl's init beside systemd
    elif parameters.cgroup_fd >= 0:
        os.close(parameters.cgroup_fd)
    code = 1
    try:
        code = Init(instance).serve()
    except BaseException:
        log.exception("init of %s failed", parameters.name)
    forking.exit_now(code)
