"""WSL's wire protocol: the messages between the service, mini_init and init, byte for byte.

``schema(name)`` gives the ``MessageSchema`` of a WSL struct (``"LX_INIT_CREATE_SESSION"``,
``"RESULT_MESSAGE<uint32_t>"``, pywsl's own ``"PYWSL_QUERY_INSTANCES"``...), whose ``build`` /
``parse`` turn Python values into messages and back. Malformed messages raise ``ProtocolError``.
The socket side (framing, ``MessageChannel``) lives in ``pywsl.wire.channel``, imported from there.
The names here load on first use: the launch path uses ``pywsl.wire.launch_codec`` (the same
messages with ``struct`` alone) and never loads construct.
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` and `importlib` would cost every launch: loaded only when used
if TYPE_CHECKING:
    from typing import Any

    from pywsl.wire.codec import Message, MessageSchema, schema, schemas
    from pywsl.wire.enums import (
        CREATE_PROCESS_SHELL_OPTIONS,
        LX_INIT_CREATE_PROCESS_FLAGS,
        LX_INIT_DRVFS_MOUNT,
        LX_INIT_FEATURE_FLAGS,
        LX_MESSAGE_TYPE,
        LX_MINI_CREATE_INSTANCE_STEP,
        LX_MINI_INIT_MEMORY_RECLAIM_MODE,
        LX_MINI_INIT_MESSAGE_FLAGS,
        LX_MINI_INIT_MOUNT_DEVICE_TYPE,
        LX_MINI_INIT_NETWORKING_MODE,
        LX_MINI_INIT_PORT_TRACKER_TYPE,
        LX_MINI_MOUNT_STEP,
        PYWSL_MESSAGE_TYPE,
        TRANSACTION_STEP,
    )
    from pywsl.wire.errors import ChannelClosed, ProtocolError

__all__ = [
    "CREATE_PROCESS_SHELL_OPTIONS",
    "LX_INIT_CREATE_PROCESS_FLAGS",
    "LX_INIT_DRVFS_MOUNT",
    "LX_INIT_FEATURE_FLAGS",
    "LX_MESSAGE_TYPE",
    "LX_MINI_CREATE_INSTANCE_STEP",
    "LX_MINI_INIT_MEMORY_RECLAIM_MODE",
    "LX_MINI_INIT_MESSAGE_FLAGS",
    "LX_MINI_INIT_MOUNT_DEVICE_TYPE",
    "LX_MINI_INIT_NETWORKING_MODE",
    "LX_MINI_INIT_PORT_TRACKER_TYPE",
    "LX_MINI_MOUNT_STEP",
    "PYWSL_MESSAGE_TYPE",
    "TRANSACTION_STEP",
    "ChannelClosed",
    "Message",
    "MessageSchema",
    "ProtocolError",
    "schema",
    "schemas",
]

_CODEC_NAMES = frozenset({"Message", "MessageSchema", "schema", "schemas"})


def __getattr__(name: str) -> Any:
    """The public names, imported on first use: a launch (`pywsl.wire.launch_codec`) never loads
    construct; the schemas come with every declaration (`messages`, `extensions`) loaded."""
    if name not in __all__:
        raise AttributeError(f"module 'pywsl.wire' has no attribute {name!r}")
    import importlib  # only now: `from package import module` asks here first

    if name in _CODEC_NAMES:
        importlib.import_module("pywsl.wire.messages")
        importlib.import_module("pywsl.wire.extensions")
        module = "pywsl.wire.codec"
    else:
        module = "pywsl.wire.errors" if name in ("ChannelClosed", "ProtocolError") else "pywsl.wire.enums"
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
