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

# A request is at most MAX_MESSAGE_SIZE: that bound protects the service from its clients. A reply
# may be larger (a list of thousands of distributions), up to MAX_REPLY_SIZE: the client reads it.
MAX_MESSAGE_SIZE = 1024 * 1024
MAX_REPLY_SIZE = 64 * 1024 * 1024
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


def encode_message(message: Mapping[str, Any], *, limit: int = MAX_MESSAGE_SIZE) -> bytes:
    """One message as it goes on the wire (JSON + NUL); InvalidMessage beyond ``limit`` bytes."""
    try:
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InvalidMessage(f"cannot encode message: {error}") from None
    data = text.encode("utf-8") + b"\0"
    if len(data) > limit:
        raise InvalidMessage(f"message of {len(data)} bytes exceeds the limit of {limit}")
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
    """One end of a service connection: sends and receives whole messages with their fds.

    ``receive_limit`` bounds a message read here and ``send_limit`` one sent from here: the
    service reads requests of at most ``MAX_MESSAGE_SIZE`` and may answer with up to
    ``MAX_REPLY_SIZE``; a client reads replies of up to ``MAX_REPLY_SIZE``.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        receive_limit: int = MAX_MESSAGE_SIZE,
        send_limit: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self.sock = sock
        self.receive_limit = receive_limit
        self.send_limit = send_limit
        self._buffer = bytearray()
        self._fds: list[int] = []
        self._broken = False
        self._eof = False

    @property
    def broken(self) -> bool:
        """True once the stream cannot be trusted any more (closed, refused, or at end of file)."""
        return self._broken

    def send(self, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
        self.send_encoded(encode_message(message, limit=self.send_limit), fds)

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
        while True:
            taken = self.take_message()
            if taken is not None:
                data, fds = taken
                try:
                    return decode_message(data), fds
                except InvalidMessage:
                    close_fds(fds)
                    raise
            if not self._read(0):
                return None

    def take_message(self) -> tuple[bytes, list[int]] | None:
        """The bytes of the next whole message already read (without its NUL) and its fds, or None.

        Raises InvalidMessage (fatal) when what was read can no longer become a message within
        the limit. The caller owns the returned fds.
        """
        if self._broken and not self._eof:
            raise InvalidMessage("connection is no longer usable", fatal=True)
        end = self._buffer.find(b"\0")
        if end >= 0:
            data = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            fds, self._fds = self._fds, []
            return data, fds
        if len(self._buffer) >= self.receive_limit:
            self._fail()
            raise InvalidMessage(f"message exceeds the limit of {self.receive_limit} bytes", fatal=True)
        return None

    def read_available(self) -> bool:
        """Read what the socket holds now, without waiting; False at end of file.

        Stops once a whole message is buffered. Raises InvalidMessage (fatal) for too many or
        truncated descriptors, ConnectionError when the peer closed in the middle of a message;
        in every such case the descriptors that arrived are closed.
        """
        while self._buffer.find(b"\0") < 0:
            if len(self._buffer) >= self.receive_limit:
                return True  # take_message reports it
            try:
                if not self._read(socket.MSG_DONTWAIT):
                    return False
            except BlockingIOError:
                return True
        return True

    def _read(self, flags: int) -> bool:
        """One ``recvmsg``; False at end of file between messages."""
        if self._broken:
            raise InvalidMessage("connection is no longer usable", fatal=True)
        try:
            data, ancillary, received_flags, _ = self.sock.recvmsg(
                _RECEIVE_CHUNK, socket.CMSG_SPACE(MAX_FDS * _INT_SIZE), socket.MSG_CMSG_CLOEXEC | flags
            )
        except ConnectionResetError:
            data, ancillary, received_flags = b"", [], 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % _INT_SIZE])
                self._fds.extend(received)
        if received_flags & socket.MSG_CTRUNC or len(self._fds) > MAX_FDS:
            self._fail()
            raise InvalidMessage(
                f"more than {MAX_FDS} file descriptors in one message (or truncated control data)",
                fatal=True,
            )
        if not data:
            pending = bool(self._buffer) or bool(self._fds)
            self._fail()
            self._eof = True
            if pending:
                raise ConnectionError("connection closed in the middle of a message")
            return False
        self._buffer.extend(data)
        return True

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
