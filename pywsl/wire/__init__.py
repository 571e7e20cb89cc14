"""WSL's wire protocol: the messages between the service, mini_init and init, byte for byte.

``schema(name)`` gives the ``MessageSchema`` of a WSL struct (``"LX_INIT_CREATE_SESSION"``,
``"RESULT_MESSAGE<uint32_t>"``, pywsl's own ``"PYWSL_QUERY_INSTANCES"``...), whose ``build`` /
``parse`` turn Python values into messages and back. Malformed messages raise ``ProtocolError``.
The socket side (framing, ``MessageChannel``) lives in ``pywsl.wire.channel``, imported from there.
"""

from __future__ import annotations

from pywsl.wire import extensions as _extensions
from pywsl.wire import messages as _messages
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

del _extensions, _messages  # imported for their declarations only

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
