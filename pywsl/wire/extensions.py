"""pywsl's own messages on the mini_init and relay channels (types 200 and up; not in WSL).

WSL's service keeps state about running instances and learns about exits from its own VM
handle; pywsl's host side keeps no state, so it asks the guest. These messages are declared
exactly like WSL's (``MESSAGE_HEADER`` first, little-endian, explicit padding, MessageWriter
layout for the variable part) and are reached through ``pywsl.wire.schema(name)`` as well.

=====  =======================  ======  ==========================================================
Type   Struct                   sizeof  Meaning
=====  =======================  ======  ==========================================================
200    PYWSL_QUERY_INSTANCES    16      host -> mini_init, transaction: which instances run?
                                        Header only. Reply: PYWSL_INSTANCE_LIST.
201    PYWSL_INSTANCE_LIST      24      mini_init -> host: ``u32 Count`` at 16,
                                        ``u32 EntriesOffset`` at 20 -> ``Count`` consecutive
                                        NUL-terminated ``"<pid>:<name>"`` strings (Buffer at 24);
                                        pid = the instance's init in the VM's pid namespace.
202    PYWSL_ATTACH_NOTIFY      16      host -> mini_init: header only; the connection becomes
                                        the notify channel (LX_MINI_INIT_CHILD_EXIT_MESSAGE for
                                        every instance init that exits).
203    PYWSL_SHUTDOWN_VM        20      host -> mini_init: ``bool Force`` at 16, 3 padding bytes.
                                        No reply: the channel closing is the success.
204    PYWSL_SIGNAL_PROCESS     20      client -> relay control channel: ``int32 Signal`` at 16
                                        (a Linux signal number, forwarded in pipe mode).
205    PYWSL_IMPORT_WARNINGS    20      import worker -> host, just before ImportResult and only
                                        when there are any: ``u32 WarningsOffset`` at 16 ->
                                        '\n'-separated warnings for the user (Buffer at 20), as
                                        ``CreateInstanceResult.Warnings``.
=====  =======================  ======  ==========================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import construct as cs

from pywsl.wire.codec import MESSAGE_HEADER, CString, MessageSchema, StringList, boolean, i32, u32
from pywsl.wire.enums import PYWSL_MESSAGE_TYPE
from pywsl.wire.errors import ProtocolError
from pywsl.wire.launch_codec import instance_entries as instance_entries  # declared with the launch's

T = PYWSL_MESSAGE_TYPE

PYWSL_QUERY_INSTANCES = MessageSchema(
    "PYWSL_QUERY_INSTANCES",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
    ),
    message_type=T.PywslQueryInstances,
    response="PYWSL_INSTANCE_LIST",
)

PYWSL_INSTANCE_LIST = MessageSchema(
    "PYWSL_INSTANCE_LIST",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Count" / u32,  # 16
        "EntriesOffset" / u32,  # 20
    ),
    message_type=T.PywslInstanceList,
    buffer_offset=24,
    payload=(StringList("EntriesOffset", "Count"),),
)

PYWSL_ATTACH_NOTIFY = MessageSchema(
    "PYWSL_ATTACH_NOTIFY",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
    ),
    message_type=T.PywslAttachNotify,
)

PYWSL_SHUTDOWN_VM = MessageSchema(
    "PYWSL_SHUTDOWN_VM",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Force" / boolean,  # 16
        cs.Padding(3),
    ),
    message_type=T.PywslShutdownVm,
)

PYWSL_SIGNAL_PROCESS = MessageSchema(
    "PYWSL_SIGNAL_PROCESS",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Signal" / i32,  # 16
    ),
    message_type=T.PywslSignalProcess,
)


PYWSL_IMPORT_WARNINGS = MessageSchema(
    "PYWSL_IMPORT_WARNINGS",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "WarningsOffset" / u32,  # 16
    ),
    message_type=T.PywslImportWarnings,
    buffer_offset=20,
    payload=(CString("WarningsOffset", optional=True),),
)


def parse_instance_entries(entries: Sequence[str]) -> dict[str, int]:
    """The ``Entries`` of a parsed PYWSL_INSTANCE_LIST as ``{name: init pid}``."""
    instances: dict[str, int] = {}
    for index, entry in enumerate(entries):
        pid, separator, name = entry.partition(":")
        if not separator or not name or not pid.isdigit() or not pid.isascii():
            raise ProtocolError(
                f"entry {entry!r} is not '<pid>:<name>'",
                struct="PYWSL_INSTANCE_LIST",
                field=f"EntriesOffset[{index}]",
            )
        instances[name] = int(pid)
    return instances
