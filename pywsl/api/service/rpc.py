"""The service's wire format: WSL's COM interface ``ILxssUserSession`` as varlink-style messages.

On Windows ``wsl.exe`` reaches ``wslservice.exe`` through COM. Here an unprivileged client reaches
the root service (``pywsl.api.service.server``) through a Unix socket, by default
``/run/pywsl/service.sock`` (``$PYWSL_SERVICE_SOCKET``, or ``service.sock`` in
``$PYWSL_RUNTIME_ROOT``, elsewhere). This docstring is the one place the format is written down.
This module holds the requests, the parameter checks and the method table, and gives every name
of the format: the messages travel through ``rpc_framing``, values are converted by ``rpc_values``.

Transport
    ``AF_UNIX``, ``SOCK_STREAM``. Every message is one JSON object (UTF-8, no NaN/Infinity,
    unique keys) followed by one NUL byte, as in varlink. A request is at most
    ``MAX_MESSAGE_SIZE`` (1 MiB) including the NUL; a longer one is refused and the connection
    closed. That limit protects the service from its clients; a reply may be larger, up to
    ``MAX_REPLY_SIZE`` (64 MiB: thousands of distributions fit), and clients accept that much. A
    reply that would exceed even that is replaced by an ``io.pywsl.InternalError`` reply.

Requests (client to service)
    ``{"method": "io.pywsl.UserSession.<Method>", "parameters": {...}}``, optionally
    ``"more": true`` (asks for progress replies where a method has them) or ``"oneway": true``
    (no reply). Parameter keys are the Python argument names of ``UserSession``. Unknown
    parameters are refused.

File descriptors
    A request passes file descriptors (stdio, an archive to import, an export target, the
    control and exit sockets of a process) as ``SCM_RIGHTS`` ancillary data of the ``sendmsg``
    that carries the first bytes of that request; a parameter of type *fd* holds the index into
    that list (``"stdin": 0``). At most ``MAX_FDS`` (16) per request; a request with more is
    refused and the connection closed. The service closes every descriptor it received once the
    call returns: whatever needs one beyond that (a relay) got its own copy. A client keeps at
    most one request that carries descriptors in flight on a connection: descriptors are given
    to the request whose terminating NUL is read next.

Replies (service to client)
    Success: ``{"parameters": {...}}``. A progress reply, only when the request asked for
    ``"more"``: ``{"parameters": {"progress": <value>}, "continues": true}`` (an integer; an
    object for ``InstallBuiltinDistribution``); the final reply follows. Failure:
    ``{"error": "<name>", "parameters": {...}}`` with these names:
    (A final reply, success or failure, may also carry ``"warnings": ["<text>", ...]``: the
    warnings for the user the call produced, such as configuration warnings when it started the
    VM or a distribution; the client shows them as wsl.exe does.)

    * ``io.pywsl.WslError`` ``{code, hresult, message, context}``: what ``UserSession`` raised
      (``pywsl.api.errors.WslError.to_dict``); the client raises the same ``WslError``.
    * ``org.varlink.service.MethodNotFound`` ``{method}``: no such method.
    * ``org.varlink.service.InvalidParameter`` ``{parameter, message}``: a missing, unknown or
      badly typed parameter, or an fd index the request did not carry.
    * ``io.pywsl.InvalidMessage`` ``{message}``: not a JSON object, not a request, too large,
      too many descriptors.
    * ``io.pywsl.InternalError`` ``{message}``: the service failed unexpectedly (any exception
      inside a request, a reply too large to send); the client reports ``E_UNEXPECTED``.
    * ``io.pywsl.TooManyConnections`` ``{message}``: sent unasked right after ``accept`` when the
      service holds too many connections (1024, or 256 of the same owner), then it closes.
      Connections from the ids of a user's VM (the uid range of its distributions) count
      against that user's share.

    The connection stays usable after every error except a too large message or too many
    descriptors.

Values
    A distribution argument (``distro``) is ``null`` (the default distribution),
    ``{"name": "<name>"}`` or ``{"id": "<uuid>"}``. GUIDs are strings in the canonical
    ``8-4-4-4-12`` form. Results that are ``UserSession`` dataclasses (``DistributionInfo``,
    ``DistributionConfiguration``) are objects keyed by field name (enums by value, paths as
    strings); a GUID result is ``{"id": "<uuid>"}``.

Methods (``io.pywsl.UserSession.`` + the name; WSL's ``ILxssUserSession`` names)
    ``?`` marks a parameter that may be ``null`` or left out; others with a default may be left
    out (the defaults of ``UserSession``). ``-> {key}`` is the result.

    * ``CreateInstance(distro?)``
    * ``RegisterDistribution(name?, source: fd, location?, version, run_oobe, vhd, vhd_size?, fixed_vhd)``
      ``-> {distribution: DistributionInfo}``; progress: archive bytes read so far
    * ``GetDistributionId(name, list_all) -> {id}``
    * ``TerminateDistribution(distro?)``
    * ``UnregisterDistribution(distro)``
    * ``ConfigureDistribution(distro, default_uid?, flags?)``
    * ``GetDistributionConfiguration(distro?) -> {configuration: DistributionConfiguration}``
    * ``GetDefaultDistribution() -> {id}``
    * ``SetDefaultDistribution(distro)``
    * ``EnumerateDistributions() -> {distributions: [DistributionInfo, ...]}``
    * ``CreateLxProcess(distro?, command_line, filename?, cwd, username, login, environment?,
      wslenv_source?, stdin: fd, stdout: fd, stderr: fd, control: fd, exit: fd,
      console: [bool, bool, bool], rows, columns) -> {pid}`` (the relay's pid)
    * ``ExportDistribution(distro?, target: fd, format)``; progress: archive bytes written
    * ``MoveDistribution(distro, location)``
    * ``Shutdown(force)``
    * ``SetVersion(distro, version)``
    * ``SetSparse(distro, sparse, allow_unsafe)``
    * ``ResizeDistribution(distro, new_size, output: fd?)``
    * ``ImportDistributionInplace(name, vhd_path) -> {id}``
    * ``AttachDisk(disk, vhd)``, ``DetachDisk(disk?)``
    * ``MountDisk(disk, vhd, partition, name?, fs_type?, options?) -> {name}``
    * ``CompleteOobe(distro, default_uid?)`` (pywsl: what WSL does on a successful ``OobeResult``)
    * ``InstallBuiltinDistribution(distribution, name?, location?, version)
      -> {distribution: DistributionInfo}`` (pywsl: ``--install`` of a distribution pywsl builds
      itself, for users who cannot run debootstrap). ``distribution`` is the name of a built-in
      entry (``builtin_catalog``), nothing else: the service takes the suite, mirror and keyring
      from its own catalog, builds as root in a folder of its own (one build at a time, a bounded
      queue; ``ERROR_BUSY`` beyond it) and registers the result as ``RegisterDistribution`` would,
      with OOBE enabled. Its progress values are objects: ``{"status": "<step message>"}`` when a
      step starts, ``{"done": <int>, "total": <int>}`` within one (permille of the build, then
      archive bytes imported).

    Paths (``location``, ``vhd_path``) are absolute: the client resolves relative ones against its
    own working folder. Files the caller names are opened by the client, with its own rights, and
    travel as descriptors; the service never opens a client's path as root.

    ``org.varlink.service.GetInfo`` answers ``{vendor, product, version, url, interfaces}``.

    Only host users get a session: a peer whose uid lies in a user's VM id range (any id of a
    distribution but the one mapped to the owner) gets ``io.pywsl.WslError`` ``E_ACCESSDENIED``
    for every method but ``GetInfo``.

Cancellation
    A request runs with a ``pywsl.api.cancellation`` token that the service cancels when the
    client closes or shuts down its end of the connection before the reply (not for ``oneway``
    requests): long operations stop and roll back. A client half-closing its socket while
    waiting for a reply therefore cancels the call.

    CreateLxProcess: the client keeps its ends of the control and exit socket pairs and passes
    the others (plus its stdio, or for a terminal one end of a socket pair it relays) to the
    service, which hands them to the relay and closes its copies. From then on the client talks
    to the relay directly; the service is out of the data path.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from pywsl.api.service.rpc_framing import (
    ERROR_BUSY,
    ERROR_INTERNAL,
    ERROR_INVALID_MESSAGE,
    ERROR_INVALID_PARAMETER,
    ERROR_METHOD_NOT_FOUND,
    ERROR_WSL,
    MAX_FDS,
    MAX_MESSAGE_SIZE,
    MAX_REPLY_SIZE,
    Connection,
    InvalidMessage,
    InvalidParameter,
    MethodNotFound,
    RpcError,
    close_fds,
    decode_message,
    encode_message,
    error_reply,
    reply,
)
from pywsl.api.service.rpc_values import (
    decode_dataclass,
    decode_uuid,
    decode_value,
    encode_distro,
    encode_value,
)
from pywsl.api.session import path_rules

__all__ = [
    "DEFAULT_SOCKET",
    "ERROR_BUSY",
    "ERROR_INTERNAL",
    "ERROR_INVALID_MESSAGE",
    "ERROR_INVALID_PARAMETER",
    "ERROR_METHOD_NOT_FOUND",
    "ERROR_WSL",
    "GET_INFO",
    "INTERFACE",
    "MAX_FDS",
    "MAX_MESSAGE_SIZE",
    "MAX_REPLY_SIZE",
    "METHODS",
    "SOCKET_ENVIRONMENT_VARIABLE",
    "SOCKET_NAME",
    "Connection",
    "InvalidMessage",
    "InvalidParameter",
    "Method",
    "MethodNotFound",
    "Param",
    "ParamType",
    "Request",
    "RpcError",
    "close_fds",
    "decode_dataclass",
    "decode_message",
    "decode_uuid",
    "decode_value",
    "encode_distro",
    "encode_message",
    "encode_value",
    "error_reply",
    "method",
    "parse_request",
    "reply",
    "socket_path",
]

INTERFACE = "io.pywsl.UserSession"
DEFAULT_SOCKET = path_rules.DEFAULT_SERVICE_SOCKET
SOCKET_ENVIRONMENT_VARIABLE = path_rules.SERVICE_SOCKET_ENV
GET_INFO = "org.varlink.service.GetInfo"

MAX_LIST_ITEMS = 4096
MAX_STRING_LENGTH = 64 * 1024


SOCKET_NAME = path_rules.SERVICE_SOCKET_NAME


def socket_path(environ: Mapping[str, str] | None = None) -> str:
    """The service socket: ``$PYWSL_SERVICE_SOCKET``, else ``service.sock`` in ``$PYWSL_RUNTIME_ROOT``
    (when set to an absolute path), else ``/run/pywsl/service.sock``."""
    return path_rules.service_socket(environ)


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


class Request(NamedTuple):  # named tuples, not dataclasses: a client's launch loads this module
    """A parsed request: full method name, raw parameters, the fds that came with it."""

    method: str
    parameters: dict[str, Any]
    fds: list[int]
    more: bool = False
    oneway: bool = False


def parse_request(message: Mapping[str, Any], fds: list[int]) -> Request:
    """Check the envelope of a request (not its parameters)."""
    method = message.get("method")
    if not isinstance(method, str) or not method:
        raise InvalidMessage("request has no method name")
    parameters = message.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise InvalidMessage("request parameters are not an object")
    flags = {}
    for key in ("more", "oneway", "upgrade"):
        value = message.get(key, False)
        if not isinstance(value, bool):
            raise InvalidMessage(f"request field {key!r} is not a boolean")
        flags[key] = value
    if flags["upgrade"]:
        raise InvalidMessage("protocol upgrades are not supported")
    return Request(method, parameters, fds, more=flags["more"], oneway=flags["oneway"])


# --------------------------------------------------------------------------------------------
# Parameter types: each decodes a JSON value (checked) into the Python argument
# --------------------------------------------------------------------------------------------


class ParamType:
    """A parameter type: ``decode`` turns a JSON value into the argument, or raises ValueError."""

    description = "value"

    def decode(self, value: Any, fds: Sequence[int]) -> Any:
        raise NotImplementedError


class _String(ParamType):
    description = "a string"

    def decode(self, value: Any, fds: Sequence[int]) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected {self.description}")
        if len(value) > MAX_STRING_LENGTH:
            raise ValueError(f"string longer than {MAX_STRING_LENGTH} characters")
        if "\0" in value:
            raise ValueError("string contains a NUL character")
        return value


class _AbsolutePath(_String):
    description = "an absolute path"

    def decode(self, value: Any, fds: Sequence[int]) -> str:
        text = super().decode(value, fds)
        if not text.startswith("/"):
            raise ValueError(f"expected {self.description}, got {text!r}")
        return text


class _Int(ParamType):
    description = "an integer"

    def __init__(self, low: int, high: int) -> None:
        self.low, self.high = low, high

    def decode(self, value: Any, fds: Sequence[int]) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected {self.description}")
        if not self.low <= value <= self.high:
            raise ValueError(f"{value} is outside {self.low}..{self.high}")
        return value


class _Bool(ParamType):
    description = "a boolean"

    def decode(self, value: Any, fds: Sequence[int]) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"expected {self.description}")
        return value


class _Fd(ParamType):
    description = "a file descriptor index"

    def decode(self, value: Any, fds: Sequence[int]) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected {self.description}")
        if not 0 <= value < len(fds):
            raise ValueError(f"file descriptor index {value} but the request carried {len(fds)}")
        return fds[value]


class _Distro(ParamType):
    description = 'null, {"name": string} or {"id": uuid}'

    def decode(self, value: Any, fds: Sequence[int]) -> str | uuid.UUID | None:
        if value is None:
            return None
        if isinstance(value, dict) and len(value) == 1:
            if isinstance(value.get("name"), str):
                return STRING.decode(value["name"], fds)
            if isinstance(value.get("id"), str):
                return decode_uuid(value["id"])
        raise ValueError(f"expected {self.description}")


class _Strings(ParamType):
    description = "a list of strings"

    def decode(self, value: Any, fds: Sequence[int]) -> list[str]:
        if not isinstance(value, list):
            raise ValueError(f"expected {self.description}")
        if len(value) > MAX_LIST_ITEMS:
            raise ValueError(f"more than {MAX_LIST_ITEMS} items")
        return [STRING.decode(item, fds) for item in value]


class _StringMap(ParamType):
    description = "an object of strings"

    def decode(self, value: Any, fds: Sequence[int]) -> dict[str, str]:
        if not isinstance(value, dict):
            raise ValueError(f"expected {self.description}")
        if len(value) > MAX_LIST_ITEMS:
            raise ValueError(f"more than {MAX_LIST_ITEMS} items")
        return {STRING.decode(key, fds): STRING.decode(item, fds) for key, item in value.items()}


class _Console(ParamType):
    description = "a list of three booleans"

    def decode(self, value: Any, fds: Sequence[int]) -> tuple[bool, bool, bool]:
        if not isinstance(value, list) or len(value) != 3 or not all(isinstance(v, bool) for v in value):
            raise ValueError(f"expected {self.description}")
        return (value[0], value[1], value[2])


class Nullable(ParamType):
    """``null`` or the inner type."""

    def __init__(self, inner: ParamType) -> None:
        self.inner = inner
        self.description = f"null or {inner.description}"

    def decode(self, value: Any, fds: Sequence[int]) -> Any:
        return None if value is None else self.inner.decode(value, fds)


STRING = _String()
ABSOLUTE_PATH = _AbsolutePath()
BOOL = _Bool()
INT = _Int(-(2**31), 2**31 - 1)
UINT32 = _Int(0, 2**32 - 1)
UINT16 = _Int(0, 2**16 - 1)
UINT64 = _Int(0, 2**64 - 1)
FD = _Fd()
DISTRO = _Distro()
STRINGS = _Strings()
STRING_MAP = _StringMap()
CONSOLE = _Console()


class Param(NamedTuple):
    type: ParamType
    default: Any = None
    required: bool = False


class Method(NamedTuple):
    """One method of ``io.pywsl.UserSession``: its parameters and the key its result goes under."""

    name: str
    params: Mapping[str, Param]
    result: str | None = None

    @property
    def full_name(self) -> str:
        return f"{INTERFACE}.{self.name}"

    def decode_parameters(self, parameters: Mapping[str, Any], fds: Sequence[int]) -> dict[str, Any]:
        """The keyword arguments of a call, checked; InvalidParameter on any mismatch."""
        unknown = sorted(set(parameters) - set(self.params))
        if unknown:
            raise InvalidParameter(unknown[0], f"{self.name} has no parameter {unknown[0]!r}")
        arguments: dict[str, Any] = {}
        for name, param in self.params.items():
            if name not in parameters:
                if param.required:
                    raise InvalidParameter(name, "missing")
                arguments[name] = param.default
                continue
            try:
                arguments[name] = param.type.decode(parameters[name], fds)
            except ValueError as error:
                raise InvalidParameter(name, str(error)) from None
        return arguments


def _method(method_name: str, result: str | None = None, /, **params: Param) -> Method:
    return Method(method_name, params, result)


def _required(kind: ParamType) -> Param:
    return Param(kind, required=True)


def _optional(kind: ParamType, default: Any = None) -> Param:
    return Param(kind if default is not None else Nullable(kind), default)


METHODS: dict[str, Method] = {
    method.full_name: method
    for method in (
        _method("CreateInstance", distro=Param(DISTRO)),
        _method(
            "RegisterDistribution",
            "distribution",
            name=_optional(STRING),
            source=_required(FD),
            location=_optional(ABSOLUTE_PATH),
            version=_optional(INT, 2),
            run_oobe=_optional(BOOL, False),
            vhd=_optional(BOOL, False),
            vhd_size=_optional(UINT64),
            fixed_vhd=_optional(BOOL, False),
        ),
        _method("GetDistributionId", "id", name=_required(STRING), list_all=_optional(BOOL, False)),
        _method("TerminateDistribution", distro=Param(DISTRO)),
        _method("UnregisterDistribution", distro=_required(DISTRO)),
        _method(
            "ConfigureDistribution",
            distro=_required(DISTRO),
            default_uid=_optional(UINT32),
            flags=_optional(UINT32),
        ),
        _method("GetDistributionConfiguration", "configuration", distro=Param(DISTRO)),
        _method("GetDefaultDistribution", "id"),
        _method("SetDefaultDistribution", distro=_required(DISTRO)),
        _method("EnumerateDistributions", "distributions"),
        _method(
            "CreateLxProcess",
            "pid",
            distro=Param(DISTRO),
            command_line=_optional(STRINGS, []),
            filename=_optional(STRING),
            cwd=_optional(STRING, ""),
            username=_optional(STRING, ""),
            login=_optional(BOOL, False),
            environment=_optional(STRING_MAP),
            wslenv_source=_optional(STRING_MAP),
            stdin=_required(FD),
            stdout=_required(FD),
            stderr=_required(FD),
            control=_required(FD),
            exit=_required(FD),
            console=_optional(CONSOLE, (False, False, False)),
            rows=_optional(UINT16, 0),
            columns=_optional(UINT16, 0),
        ),
        _method(
            "ExportDistribution",
            distro=Param(DISTRO),
            target=_required(FD),
            format=_optional(STRING, "tar"),
        ),
        _method("MoveDistribution", distro=_required(DISTRO), location=_required(ABSOLUTE_PATH)),
        _method("Shutdown", force=_optional(BOOL, False)),
        _method("SetVersion", distro=_required(DISTRO), version=_required(INT)),
        _method(
            "SetSparse",
            distro=_required(DISTRO),
            sparse=_required(BOOL),
            allow_unsafe=_optional(BOOL, False),
        ),
        _method(
            "ResizeDistribution", distro=_required(DISTRO), new_size=_required(UINT64), output=_optional(FD)
        ),
        _method("ImportDistributionInplace", "id", name=_required(STRING), vhd_path=_required(ABSOLUTE_PATH)),
        _method("AttachDisk", disk=_required(STRING), vhd=_optional(BOOL, False)),
        _method("DetachDisk", disk=_optional(STRING)),
        _method(
            "MountDisk",
            "name",
            disk=_required(STRING),
            vhd=_optional(BOOL, False),
            partition=_optional(UINT32, 0),
            name=_optional(STRING),
            fs_type=_optional(STRING),
            options=_optional(STRING),
        ),
        _method("CompleteOobe", distro=_required(DISTRO), default_uid=_optional(UINT32)),
        _method(
            "InstallBuiltinDistribution",
            "distribution",
            distribution=_required(STRING),
            name=_optional(STRING),
            location=_optional(ABSOLUTE_PATH),
            version=_optional(INT, 2),
            vhd_size=_optional(UINT64),
            fixed_vhd=_optional(BOOL, False),
        ),
    )
}


def method(full_name: str) -> Method:
    """The method a request names; MethodNotFound otherwise."""
    try:
        return METHODS[full_name]
    except KeyError:
        raise MethodNotFound(full_name) from None
