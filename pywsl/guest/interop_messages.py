"""The interop messages, encoded and decoded with ``struct`` alone.

Both ends of an interop connection use this module: the client, which starts inside a
distribution for every host program call and must start fast (the wire schemas would cost a
tenth of a second to import), and the server worker, which decodes one request per connection.
The layouts are WSL's (``pywsl.wire`` holds the schemas; tests compare the bytes both ways):

* ``LX_INIT_CREATE_NT_PROCESS_UTILITY_VM`` (client -> server): ``Common`` at 24 with the
  offsets of ``Filename``, ``CurrentWorkingDirectory``, ``CommandLine`` (count at +36) and
  ``Environment`` (NUL-terminated strings, then an empty one), ``Rows``, ``Columns`` and
  ``CreatePseudoconsole``; strings from 73 on.
* ``LX_INIT_CREATE_PROCESS_RESPONSE`` (server -> client): ``Result`` (an errno) at 16.
* ``LX_INIT_WINDOW_SIZE_CHANGED`` (client -> server): ``Rows``, ``Columns`` at 16, 18.
* ``LX_INIT_PROCESS_EXIT_STATUS`` (server -> client): ``ExitCode`` at 16.
* ``PYWSL_SIGNAL_PROCESS`` (client -> server): ``Signal`` at 16.

Every frame starts with WSL's ``MESSAGE_HEADER``: type, size (header included), sequence and
one more 32-bit word.
"""

from __future__ import annotations

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CREATE_PROCESS_RESPONSE",
    "CREATE_PROCESS_UTILITY_VM",
    "EXIT_STATUS",
    "HEADER",
    "MAX_ARGUMENTS",
    "MAX_ENVIRONMENT",
    "MAX_REQUEST_BYTES",
    "MAX_STRINGS_BYTES",
    "SIGNAL_PROCESS",
    "WINDOW_SIZE_CHANGED",
    "CreateProcessRequest",
    "MalformedMessage",
    "TooLarge",
    "decode_create_process",
    "encode_create_process",
    "encode_exit_status",
    "encode_response",
    "encode_signal",
    "encode_window_size",
    "frame_size",
    "int32_at_16",
    "window_size_of",
]

HEADER = struct.Struct("<IIII")
CREATE_PROCESS_UTILITY_VM = 8  # LxInitMessageCreateProcessUtilityVm
EXIT_STATUS = 9  # LxInitMessageExitStatus
WINDOW_SIZE_CHANGED = 10  # LxInitMessageWindowSizeChanged
CREATE_PROCESS_RESPONSE = 11  # LxInitMessageCreateProcessResponse
SIGNAL_PROCESS = 204  # PYWSL_SIGNAL_PROCESS

# Bounds of a request (the server refuses more with E2BIG; the client does not send it).
MAX_ARGUMENTS = 65536
MAX_ENVIRONMENT = 4096
MAX_STRINGS_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = MAX_STRINGS_BYTES + 4096  # the fixed part and the terminating NULs

_COMMON = 24
_BUFFER = _COMMON + 49
_SIZEOF_CREATE = 80
_COMMON_FIELDS = struct.Struct("<IIIHxxIHH?")  # at Common + 24
_RESPONSE = struct.Struct("<iiqI4x")  # Result, padding, SignalPipeId, Flags (at 16)
_INT32 = struct.Struct("<i")
_WINDOW = struct.Struct("<HH")


class MalformedMessage(ValueError):
    """A frame that does not decode as the message it claims to be."""


class TooLarge(MalformedMessage):
    """More arguments or environment entries than the bounds allow."""


class CreateProcessRequest:
    """A decoded ``LX_INIT_CREATE_NT_PROCESS_UTILITY_VM``."""

    __slots__ = ("arguments", "columns", "cwd", "environment", "filename", "pseudoconsole", "rows")

    def __init__(
        self,
        filename: str,
        cwd: str,
        arguments: list[str],
        environment: list[str],
        rows: int,
        columns: int,
        pseudoconsole: bool,
    ) -> None:
        self.filename = filename
        self.cwd = cwd
        self.arguments = arguments
        self.environment = environment
        self.rows = rows
        self.columns = columns
        self.pseudoconsole = pseudoconsole


def _z(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape") + b"\0"


def encode_create_process(
    filename: str,
    cwd: str,
    arguments: Sequence[str],
    environment: Sequence[str],
    rows: int = 0,
    columns: int = 0,
    pseudoconsole: bool = False,
) -> bytes:
    """``LX_INIT_CREATE_NT_PROCESS_UTILITY_VM`` as WSL's binfmt client writes it."""
    buffer = bytearray()
    filename_offset = 49 + len(buffer)
    buffer += _z(filename)
    cwd_offset = 49 + len(buffer)
    buffer += _z(cwd)
    environment_offset = 49 + len(buffer)
    for entry in environment:
        buffer += _z(entry)
    buffer += b"\0\0"
    command_line_offset = 49 + len(buffer)
    for argument in arguments:
        buffer += _z(argument)
    size = max(_BUFFER + len(buffer), _SIZEOF_CREATE)
    message = bytearray(size)
    HEADER.pack_into(message, 0, CREATE_PROCESS_UTILITY_VM, size, 0, 0)
    _COMMON_FIELDS.pack_into(
        message,
        _COMMON + 24,
        filename_offset,
        cwd_offset,
        command_line_offset,
        len(arguments),
        environment_offset,
        rows,
        columns,
        pseudoconsole,
    )
    message[_BUFFER : _BUFFER + len(buffer)] = buffer
    return bytes(message)


def _string_at(data: bytes, position: int, what: str) -> tuple[str, int]:
    """The NUL-terminated string at ``position`` of the variable part, and the position after it."""
    if position < _BUFFER or position >= len(data):
        raise MalformedMessage(f"{what} at byte {position} lies outside the message's strings")
    end = data.find(b"\0", position)
    if end < 0:
        raise MalformedMessage(f"{what} at byte {position} has no NUL before the end of the message")
    return data[position:end].decode("utf-8", "surrogateescape"), end + 1


def decode_create_process(data: bytes, max_arguments: int, max_environment: int) -> CreateProcessRequest:
    """Decode a request; ``MalformedMessage`` for a wrong type, size, offset or count."""
    if len(data) < _SIZEOF_CREATE:
        raise MalformedMessage(f"a create-process request of {len(data)} bytes is too short")
    message_type, size, _sequence, _reserved = HEADER.unpack_from(data)
    if message_type != CREATE_PROCESS_UTILITY_VM or size != len(data):
        raise MalformedMessage("not an LX_INIT_CREATE_NT_PROCESS_UTILITY_VM message")
    fields = _COMMON_FIELDS.unpack_from(data, _COMMON + 24)
    filename_offset, cwd_offset, command_line_offset, count, environment_offset, rows, columns, pty = fields
    if count > max_arguments:
        raise TooLarge(f"{count} arguments, more than {max_arguments}")
    filename, _ = _string_at(data, _COMMON + filename_offset, "Filename")
    cwd, _ = _string_at(data, _COMMON + cwd_offset, "CurrentWorkingDirectory")
    environment: list[str] = []
    position = _COMMON + environment_offset
    while True:
        entry, position = _string_at(data, position, "Environment")
        if not entry:
            break
        if len(environment) >= max_environment:
            raise TooLarge(f"more than {max_environment} environment entries")
        environment.append(entry)
    arguments: list[str] = []
    position = _COMMON + command_line_offset
    if count == 0 and not _BUFFER <= position <= len(data):
        raise MalformedMessage("CommandLine lies outside the message's strings")
    for _ in range(count):
        argument, position = _string_at(data, position, "CommandLine")
        arguments.append(argument)
    return CreateProcessRequest(filename, cwd, arguments, environment, rows, columns, bool(pty))


def _int32_message(message_type: int, value: int) -> bytes:
    return HEADER.pack(message_type, HEADER.size + 4, 0, 0) + _INT32.pack(value)


def encode_signal(number: int) -> bytes:
    return _int32_message(SIGNAL_PROCESS, number)


def encode_exit_status(code: int) -> bytes:
    return _int32_message(EXIT_STATUS, code)


def encode_response(result: int) -> bytes:
    return HEADER.pack(CREATE_PROCESS_RESPONSE, HEADER.size + _RESPONSE.size, 0, 0) + _RESPONSE.pack(
        result, 0, 0, 0
    )


def encode_window_size(rows: int, columns: int) -> bytes:
    return HEADER.pack(WINDOW_SIZE_CHANGED, HEADER.size + _WINDOW.size, 0, 0) + _WINDOW.pack(
        rows & 0xFFFF, columns & 0xFFFF
    )


def int32_at_16(message: bytes) -> int:
    """The 32-bit field after the header (``Result``, ``ExitCode``, ``Signal``)."""
    value: int = _INT32.unpack_from(message, HEADER.size)[0]
    return value


def window_size_of(message: bytes) -> tuple[int, int]:
    rows, columns = _WINDOW.unpack_from(message, HEADER.size)
    return int(rows), int(columns)


def frame_size(header: bytes, limit: int) -> tuple[int, int]:
    """(type, size) of a frame's header; ``MalformedMessage`` when the size is out of bounds."""
    message_type, size, _sequence, _reserved = HEADER.unpack(header)
    if not HEADER.size <= size <= limit:
        raise MalformedMessage(f"a frame of {size} bytes (at most {limit})")
    return int(message_type), int(size)
