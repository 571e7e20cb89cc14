"""Declarations of WSL's distribution-init messages (lxinitshared.h), one per struct.

These travel on the channel between the service and a distribution's init, the session-leader
channel, the relay sockets to wsl.exe and the interop server (wsl-reference §3.5.3-3.5.6), plus
the generic ``RESULT_MESSAGE<T>`` replies and ``LX_PROCESS_CRASH``. Offsets in comments are the
x86_64 / Windows x64 layout (identical); the variable part of each message is listed in the order
WSL's writer appends it.
"""

from __future__ import annotations

import construct as cs

from pywsl.wire.codec import (
    MESSAGE_HEADER,
    Block,
    BufferString,
    CString,
    EnvBlock,
    MessageSchema,
    StringList,
    boolean,
    enum32,
    i32,
    i64,
    u8,
    u16,
    u32,
    u64,
)
from pywsl.wire.constants import LX_INIT_STD_FD_COUNT
from pywsl.wire.enums import (
    CREATE_PROCESS_SHELL_OPTIONS,
    LX_INIT_CREATE_PROCESS_FLAGS,
    LX_INIT_DRVFS_MOUNT,
    LX_INIT_FEATURE_FLAGS,
    LX_MESSAGE_TYPE,
)

T = LX_MESSAGE_TYPE

# ---- generic replies (RESULT_MESSAGE<T>, sizeof 20, Result at 16) ---------------------------------

RESULT_MESSAGE_bool = MessageSchema(
    "RESULT_MESSAGE<bool>",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Result" / boolean,
        cs.Padding(3),
    ),
    message_type=T.LxMessageResultBool,
)

RESULT_MESSAGE_int32_t = MessageSchema(
    "RESULT_MESSAGE<int32_t>",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Result" / i32,
    ),
    message_type=T.LxMessageResultInt32,
)

RESULT_MESSAGE_uint32_t = MessageSchema(
    "RESULT_MESSAGE<uint32_t>",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Result" / u32,
    ),
    message_type=T.LxMessageResultUint32,
)

RESULT_MESSAGE_uint8_t = MessageSchema(
    "RESULT_MESSAGE<uint8_t>",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Result" / u8,
        cs.Padding(3),
    ),
    message_type=T.LxMessageResultUint8,
)

# ---- distribution init channel --------------------------------------------------------------------

LX_INIT_CONFIGURATION_INFORMATION = MessageSchema(
    "LX_INIT_CONFIGURATION_INFORMATION",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "HostnameOffset" / u32,  # 16
        "DomainnameOffset" / u32,  # 20
        "WindowsHostsOffset" / u32,  # 24
        "DistributionNameOffset" / u32,  # 28
        "Plan9SocketOffset" / u32,  # 32
        "TimezoneOffset" / u32,  # 36
        "DrvFsVolumesBitmap" / u32,  # 40: bit i = drive 'A' + i
        "DrvFsDefaultOwner" / u32,  # 44
        "FeatureFlags" / enum32(LX_INIT_FEATURE_FLAGS),  # 48
        "DrvfsMount" / enum32(LX_INIT_DRVFS_MOUNT),  # 52
    ),
    message_type=T.LxInitMessageInitialize,
    buffer_offset=56,
    payload=(  # GenerateConfigurationMessage (helpers.cpp)
        CString("HostnameOffset"),
        CString("DomainnameOffset"),
        CString("WindowsHostsOffset"),
        CString("DistributionNameOffset"),
        CString("Plan9SocketOffset"),
        CString("TimezoneOffset"),
    ),
    response="LX_INIT_CONFIGURATION_INFORMATION_RESPONSE",
)

LX_INIT_CONFIGURATION_INFORMATION_RESPONSE = MessageSchema(
    "LX_INIT_CONFIGURATION_INFORMATION_RESPONSE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Plan9Port" / u32,  # 16: LX_INIT_UTILITY_VM_INVALID_PORT = none
        "DefaultUid" / u32,  # 20
        "InteropPort" / u32,  # 24: LX_INIT_UTILITY_VM_INVALID_PORT = none
        "SystemdEnabled" / boolean,  # 28
        cs.Padding(3),
        "PidNamespace" / u64,  # 32: inode of /proc/self/ns/pid
        "FlavorIndex" / u32,  # 40
        "VersionIndex" / u32,  # 44
    ),
    message_type=T.LxInitMessageInitializeResponse,
    buffer_offset=48,
    payload=(  # config.cpp: written only when os-release has them
        CString("FlavorIndex", optional=True),
        CString("VersionIndex", optional=True),
    ),
)

LX_INIT_TIMEZONE_INFORMATION = MessageSchema(
    "LX_INIT_TIMEZONE_INFORMATION",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "TimezoneOffset" / u32,  # 16
    ),
    message_type=T.LxInitMessageTimezoneInformation,
    buffer_offset=20,
    payload=(CString("TimezoneOffset"),),
)

LX_INIT_NETWORK_INFORMATION = MessageSchema(  # WSL1 only (LxssInstance::_UpdateNetworkInformation)
    "LX_INIT_NETWORK_INFORMATION",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "FileHeaderIndex" / u32,  # 16
        "FileContentsIndex" / u32,  # 20
    ),
    message_type=T.LxInitMessageNetworkInformation,
    buffer_offset=24,
    payload=(
        CString("FileHeaderIndex"),
        CString("FileContentsIndex"),
    ),
)

LX_INIT_CREATE_SESSION = MessageSchema(
    "LX_INIT_CREATE_SESSION",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "ConsoleId" / i64,  # 16: LX_INIT_NO_CONSOLE (0) on WSL2
    ),
    message_type=T.LxInitMessageCreateSession,
    response="LX_INIT_CREATE_SESSION_RESPONSE",
)

LX_INIT_CREATE_SESSION_RESPONSE = MessageSchema(
    "LX_INIT_CREATE_SESSION_RESPONSE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Port" / u32,  # 16
    ),
    message_type=T.LxInitMessageCreateSessionResponse,
)

LX_INIT_TERMINATE_INSTANCE = MessageSchema(
    "LX_INIT_TERMINATE_INSTANCE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Force" / boolean,  # 16
        cs.Padding(3),
    ),
    message_type=T.LxInitMessageTerminateInstance,
    response="RESULT_MESSAGE<bool>",
)

LX_INIT_STOP_PLAN9_SERVER = MessageSchema(
    "LX_INIT_STOP_PLAN9_SERVER",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Force" / boolean,  # 16
        cs.Padding(3),
    ),
    message_type=T.LxInitMessageStopPlan9Server,
    response="RESULT_MESSAGE<bool>",
)

LX_INIT_MOUNT_DRVFS = MessageSchema(
    "LX_INIT_MOUNT_DRVFS",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Admin" / boolean,  # 16
        cs.Padding(3),
        "VolumesToMount" / u32,  # 20
        "UnreadableVolumes" / u32,  # 24
        "DefaultOwnerUid" / i32,  # 28
    ),
    message_type=T.LxInitMessageRemountDrvfs,
    response="RESULT_MESSAGE<int32_t>",
)

LX_INIT_START_SOCKET_RELAY = MessageSchema(  # type kept by WSL, no sender today
    "LX_INIT_START_SOCKET_RELAY",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Family" / u16,  # 16
        "Port" / u16,  # 18
        cs.Padding(4),
        "BufferSize" / u64,  # 24
    ),
    message_type=T.LxInitMessageStartSocketRelay,
)

LX_INIT_ADD_VIRTIOFS_SHARE_MESSAGE = MessageSchema(
    "LX_INIT_ADD_VIRTIOFS_SHARE_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Admin" / boolean,  # 16
        cs.Padding(3),
        "PathOffset" / u32,  # 20
        "OptionsOffset" / u32,  # 24
    ),
    message_type=T.LxInitMessageAddVirtioFsDevice,
    buffer_offset=28,
    payload=(  # drvfs.cpp
        CString("PathOffset"),
        CString("OptionsOffset"),
    ),
    response="LX_INIT_ADD_VIRTIOFS_SHARE_RESPONSE_MESSAGE",
)

LX_INIT_REMOUNT_VIRTIOFS_SHARE_MESSAGE = MessageSchema(
    "LX_INIT_REMOUNT_VIRTIOFS_SHARE_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Admin" / boolean,  # 16
        cs.Padding(3),
        "TagOffset" / u32,  # 20
    ),
    message_type=T.LxInitMessageRemountVirtioFsDevice,
    buffer_offset=24,
    payload=(CString("TagOffset"),),
    response="LX_INIT_ADD_VIRTIOFS_SHARE_RESPONSE_MESSAGE",
)

LX_INIT_ADD_VIRTIOFS_SHARE_RESPONSE_MESSAGE = MessageSchema(
    "LX_INIT_ADD_VIRTIOFS_SHARE_RESPONSE_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Result" / i32,  # 16
        "TagOffset" / u32,  # 20
        "ChildNameOffset" / u32,  # 24
        "SourceOffset" / u32,  # 28
    ),
    message_type=T.LxInitMessageAddVirtioFsDeviceResponse,
    buffer_offset=32,
    payload=(  # WslCoreVm::ProcessVirtioFsRequest
        CString("TagOffset"),
        CString("ChildNameOffset"),
        CString("SourceOffset"),
    ),
)

# ---- create process: Windows -> Linux (LxssCreateProcess::CreateMessage) ---------------------------

LX_INIT_CREATE_PROCESS_COMMON = Block(
    "LX_INIT_CREATE_PROCESS_COMMON",
    cs.Struct(
        "FilenameOffset" / u32,  # +0
        "CurrentWorkingDirectoryOffset" / u32,  # +4
        "CommandLineOffset" / u32,  # +8
        "CommandLineCount" / u16,  # +12
        cs.Padding(2),
        "EnvironmentOffset" / u32,  # +16
        "EnvironmentCount" / u16,  # +20
        cs.Padding(2),
        "NtEnvironmentOffset" / u32,  # +24
        "NtEnvironmentCount" / u16,  # +28
        cs.Padding(2),
        "NtPathOffset" / u32,  # +32
        "ShellOptions" / enum32(CREATE_PROCESS_SHELL_OPTIONS),  # +36
        "UsernameOffset" / u32,  # +40
        "DefaultUid" / u32,  # +44
        "Flags" / enum32(LX_INIT_CREATE_PROCESS_FLAGS, signed=True),  # +48: a signed int
    ),
    buffer_offset=52,
    payload=(  # offsets relative to Common; no padding to sizeof
        CString("FilenameOffset"),
        CString("CurrentWorkingDirectoryOffset"),
        StringList("CommandLineOffset", "CommandLineCount", placeholder=True),
        StringList("EnvironmentOffset", "EnvironmentCount"),
        StringList("NtEnvironmentOffset", "NtEnvironmentCount", placeholder=True),
        CString("NtPathOffset"),
        CString("UsernameOffset"),
    ),
)

LX_INIT_CREATE_PROCESS_UTILITY_VM = MessageSchema(
    "LX_INIT_CREATE_PROCESS_UTILITY_VM",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Rows" / u16,  # 16
        "Columns" / u16,  # 18
        "Common" / LX_INIT_CREATE_PROCESS_COMMON.struct,  # 20, Common.Buffer at 72
    ),
    message_type=T.LxInitMessageCreateProcessUtilityVm,
    common=LX_INIT_CREATE_PROCESS_COMMON,
    response="RESULT_MESSAGE<uint32_t>",
)

LX_INIT_CREATE_PROCESS = MessageSchema(  # WSL1 (lxbus)
    "LX_INIT_CREATE_PROCESS",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "IpcServerId" / i64,  # 16
        "StdFdIds" / cs.Array(LX_INIT_STD_FD_COUNT, i64),  # 24
        "ForkTokenId" / i64,  # 48
        "Common" / LX_INIT_CREATE_PROCESS_COMMON.struct,  # 56, Common.Buffer at 108
        cs.Padding(4),
    ),
    message_type=T.LxInitMessageCreateProcess,
    common=LX_INIT_CREATE_PROCESS_COMMON,
    response="LX_INIT_CREATE_PROCESS_RESPONSE",
)

LX_INIT_CREATE_PROCESS_RESPONSE = MessageSchema(
    "LX_INIT_CREATE_PROCESS_RESPONSE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Result" / i32,  # 16: errno
        cs.Padding(4),
        "SignalPipeId" / i64,  # 24
        "Flags" / u32,  # 32: LX_INIT_CREATE_PROCESS_RESULT_FLAG_GUI_APPLICATION
        cs.Padding(4),
    ),
    message_type=T.LxInitMessageCreateProcessResponse,
)

# ---- create process: Linux -> Windows (binfmt.cpp CreateNtProcessMessage) --------------------------

LX_INIT_CREATE_NT_PROCESS_COMMON = Block(
    "LX_INIT_CREATE_NT_PROCESS_COMMON",
    cs.Struct(
        "StdFdIds" / cs.Array(LX_INIT_STD_FD_COUNT, i64),  # +0: never written
        "FilenameOffset" / u32,  # +24
        "CurrentWorkingDirectoryOffset" / u32,  # +28
        "CommandLineOffset" / u32,  # +32
        "CommandLineCount" / u16,  # +36
        cs.Padding(2),
        "EnvironmentOffset" / u32,  # +40
        "Rows" / u16,  # +44
        "Columns" / u16,  # +46
        "CreatePseudoconsole" / boolean,  # +48, Buffer at +49
        cs.Padding(7),
    ),
    buffer_offset=49,
    payload=(  # offsets relative to Common; environment before the command line
        CString("FilenameOffset"),
        CString("CurrentWorkingDirectoryOffset"),
        EnvBlock("EnvironmentOffset"),
        StringList("CommandLineOffset", "CommandLineCount"),
    ),
)

LX_INIT_CREATE_NT_PROCESS_UTILITY_VM = MessageSchema(
    "LX_INIT_CREATE_NT_PROCESS_UTILITY_VM",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Port" / u32,  # 16
        cs.Padding(4),
        "Common" / LX_INIT_CREATE_NT_PROCESS_COMMON.struct,  # 24, Common.Buffer at 73
    ),
    message_type=T.LxInitMessageCreateProcessUtilityVm,
    common=LX_INIT_CREATE_NT_PROCESS_COMMON,
)

LX_INIT_CREATE_NT_PROCESS = MessageSchema(  # WSL1 (lxbus)
    "LX_INIT_CREATE_NT_PROCESS",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "StdFdIds" / cs.Array(LX_INIT_STD_FD_COUNT, i64),  # 16
        "Common" / LX_INIT_CREATE_NT_PROCESS_COMMON.struct,  # 40, Common.Buffer at 89
    ),
    message_type=T.LxInitMessageCreateProcess,
    common=LX_INIT_CREATE_NT_PROCESS_COMMON,
)

# ---- relay sockets (to wsl.exe) ------------------------------------------------------------------

LX_INIT_PROCESS_EXIT_STATUS = MessageSchema(
    "LX_INIT_PROCESS_EXIT_STATUS",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "ExitCode" / i32,  # 16
    ),
    message_type=T.LxInitMessageExitStatus,
)

LX_INIT_WINDOW_SIZE_CHANGED = MessageSchema(
    "LX_INIT_WINDOW_SIZE_CHANGED",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Rows" / u16,  # 16
        "Columns" / u16,  # 18
    ),
    message_type=T.LxInitMessageWindowSizeChanged,
)

LX_INIT_OOBE_RESULT = MessageSchema(
    "LX_INIT_OOBE_RESULT",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Result" / u32,  # 16
        cs.Padding(4),
        "DefaultUid" / i64,  # 24: -1 = keep
    ),
    message_type=T.LxInitOobeResult,
)

# ---- interop server queries (/run/WSL/<pid>_interop) ----------------------------------------------

LX_INIT_QUERY_ENVIRONMENT_VARIABLE = MessageSchema(  # request: name; response: value
    "LX_INIT_QUERY_ENVIRONMENT_VARIABLE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
    ),
    message_type=T.LxInitMessageQueryEnvironmentVariable,
    buffer_offset=16,
    payload=(BufferString(),),
)

LX_INIT_QUERY_VM_ID = MessageSchema(  # request: header only; response: the VM id when known
    "LX_INIT_QUERY_VM_ID",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
    ),
    message_type=T.LxInitMessageQueryVmId,
    buffer_offset=16,
    payload=(BufferString(),),
)

LX_INIT_CREATE_LOGIN_SESSION = MessageSchema(
    "LX_INIT_CREATE_LOGIN_SESSION",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Uid" / u32,  # 16
        "Gid" / u32,  # 20
    ),
    message_type=T.LxInitMessageCreateLoginSession,
    buffer_offset=24,
    payload=(BufferString(),),  # user name
    response="RESULT_MESSAGE<bool>",
)

# ---- crash reports (port 50005) ------------------------------------------------------------------

LX_PROCESS_CRASH = MessageSchema(
    "LX_PROCESS_CRASH",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Timestamp" / u64,  # 16
        "Signal" / u32,  # 24
        "Pid" / u32,  # 28
    ),
    message_type=T.LxProcessCrash,
    buffer_offset=32,
    payload=(BufferString(),),  # process name (core_pattern %E)
    response="RESULT_MESSAGE<int32_t>",
)
