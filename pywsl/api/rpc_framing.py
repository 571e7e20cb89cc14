"""The transport of the service's format: NUL-terminated JSON messages with their descriptors.

One message is one JSON object and a NUL byte, the descriptors of a request travel as `SCM_RIGHTS`
with its first bytes (varlink over a Unix socket, as `rpc.py` documents it: that docstring is the
one place the format is written down). `Connection` sends and receives whole messages with their
descriptors and enforces the size and descriptor limits; `reply` and `error_reply` build the reply
envelopes, `RpcError` and its subclasses are the error replies of the format itself.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAX_MESSAGE_SIZE = 1024 * 1024
MAX_FDS = 16

ERROR_WSL = "io.pywsl.WslError"
ERROR_METHOD_NOT_FOUND = "org.varlink.service.MethodNotFound"
ERROR_INVALID_PARAMETER = "org.varlink.service.InvalidParameter"
ERROR_INVALID_MESSAGE = "io.pywsl.InvalidMessage"
ERROR_INTERNAL = "io.pywsl.InternalError"
ERROR_BUSY = "io.pywsl.TooManyConnections"

_RECEIVE_CHUNK = 64 * 1024
_INT_SIZE = array.array("i").itemsize


# --------------------------------------------------------------------------------------------
# Errors of the format itself
# --------------------------------------------------------------------------------------------


class RpcError(Exception):
    """An error reply: ``name`` is the varlink error name, ``parameters`` its payload."""

    def __init__(self, name: str, parameters: Mapping[str, Any], text: str) -> None:
        super().__init__(text)
        self.name = name
        self.parameters = dict(parameters)

    def reply(self) -> dict[str, Any]:
        return {"error": self.name, "parameters": self.parameters}


class InvalidMessage(RpcError):
    """Bytes that are not a valid message. ``fatal``: the stream cannot be trusted any more."""

    def __init__(self, text: str, *, fatal: bool = False) -> None:
        super().__init__(ERROR_INVALID_MESSAGE, {"message": text}, text)
        self.fatal = fatal


class InvalidParameter(RpcError):
    def __init__(self, parameter: str, text: str) -> None:
        super().__init__(
            ERROR_INVALID_PARAMETER, {"parameter": parameter, "message": text}, f"{parameter}: {text}"
        )


class MethodNotFound(RpcError):
    def __init__(self, method: str) -> None:
        super().__init__(ERROR_METHOD_NOT_FOUND, {"method": method}, f"unknown method {method!r}")


# --------------------------------------------------------------------------------------------
# Framing: NUL-terminated JSON with SCM_RIGHTS
# --------------------------------------------------------------------------------------------


def encode_message(message: Mapping[str, Any]) -> bytes:
    """One message as it goes on the wire (JSON + NUL)."""
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidMessage(f"cannot encode message: {error}") from None
    data = text.encode("utf-8") + b"\0"
    if len(data) > MAX_MESSAGE_SIZE:
        raise InvalidMessage(f"message of {len(data)} bytes exceeds the limit of {MAX_MESSAGE_SIZE}")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def decode_message(data: bytes) -> dict[str, Any]:
    """Parse the JSON of one message (without its NUL); InvalidMessage if it is not an object."""
    try:
        value = json.loads(
            data.decode("utf-8"), object_pairs_hook=_unique_object, parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        raise InvalidMessage("message is not valid UTF-8") from None
    except RecursionError:
        raise InvalidMessage("message nests too deeply") from None
    except ValueError as error:
        raise InvalidMessage(f"message is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidMessage(f"message is a JSON {type(value).__name__}, not an object")
    return value


def close_fds(fds: Iterable[int]) -> None:
    """Close every fd, ignoring ones already closed."""
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class Connection:
    """One end of a service connection: sends and receives whole messages with their fds."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()
        self._fds: list[int] = []
        self._broken = False

    def send(self, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
        self.send_encoded(encode_message(message), fds)

    def send_encoded(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send a message ``encode_message`` made, with its descriptors."""
        if len(fds) > MAX_FDS:
            raise InvalidMessage(f"{len(fds)} file descriptors exceed the limit of {MAX_FDS}")
        sent = socket.send_fds(self.sock, [data], list(fds)) if fds else self.sock.send(data)
        if sent < len(data):
            self.sock.sendall(data[sent:])

    def receive(self) -> tuple[dict[str, Any], list[int]] | None:
        """The next message and the fds that came with it; None at EOF between messages.

        The caller owns the returned fds. Raises InvalidMessage (with ``fatal`` when the
        connection must be closed), ConnectionError when the peer vanished mid-message.
        """
        if self._broken:
            raise InvalidMessage("connection is no longer usable", fatal=True)
        while True:
            end = self._buffer.find(b"\0")
            if end >= 0:
                data = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                fds, self._fds = self._fds, []
                try:
                    return decode_message(data), fds
                except InvalidMessage:
                    close_fds(fds)
                    raise
            if len(self._buffer) >= MAX_MESSAGE_SIZE:
                self._fail()
                raise InvalidMessage(
                    f"message exceeds the limit of {MAX_MESSAGE_SIZE} bytes", fatal=True
                )
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(
                    _RECEIVE_CHUNK, socket.CMSG_SPACE(MAX_FDS * _INT_SIZE), socket.MSG_CMSG_CLOEXEC
                )
            except ConnectionResetError:
                data, ancillary, flags = b"", [], 0
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    received = array.array("i")
                    received.frombytes(payload[: len(payload) - len(payload) % _INT_SIZE])
                    self._fds.extend(received)
            if flags & socket.MSG_CTRUNC or len(self._fds) > MAX_FDS:
                self._fail()
                raise InvalidMessage(
                    f"more than {MAX_FDS} file descriptors in one message", fatal=True
                )
            if not data:
                pending = bool(self._buffer) or bool(self._fds)
                self._fail()
                if pending:
                    raise ConnectionError("connection closed in the middle of a message")
                return None
            self._buffer.extend(data)

    def _fail(self) -> None:
        self._broken = True
        self._buffer.clear()
        close_fds(self._fds)
        self._fds = []

    def close(self) -> None:
        self._fail()
        self.sock.close()


# --------------------------------------------------------------------------------------------
# Reply envelopes
# --------------------------------------------------------------------------------------------


def reply(parameters: Mapping[str, Any] | None = None, *, continues: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {"parameters": dict(parameters or {})}
    if continues:
        message["continues"] = True
    return message


def error_reply(name: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    return {"error": name, "parameters": dict(parameters)}
