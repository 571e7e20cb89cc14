"""The message types (and the few flags and steps) a launch sends and reads, as plain integers.

`pywsl.wire.enums` declares every `LX_MESSAGE_TYPE` and pywsl's own `PYWSL_MESSAGE_TYPE` as enums;
loading the `enum` module costs a warm `pywsl -d D -- cmd` more than its round trips to the VM. The
struct codec (`launch_codec`), the launch client, the message channel and the guest's roles take
the numbers from here instead; a test checks each against the enums, which stay the declaration.
"""

from __future__ import annotations

__all__ = [
    "CreateInstanceStep",
    "CreateProcessFlags",
    "LxMessageType",
    "MiniInitMessageFlags",
    "MountStep",
    "NetworkingMode",
    "PywslMessageType",
    "ShellOptions",
    "TransactionStep",
]


class LxMessageType:
    """`LX_MESSAGE_TYPE` values the launch codec uses (lxinitshared.h)."""

    LxMiniInitMessageAny = 0
    LxInitMessageCreateSession = 2
    LxInitMessageCreateSessionResponse = 3
    LxInitMessageInitialize = 5
    LxInitMessageInitializeResponse = 6
    LxInitMessageCreateProcessUtilityVm = 8
    LxInitMessageExitStatus = 9
    LxInitMessageWindowSizeChanged = 10
    LxInitMessageCreateProcessResponse = 11
    LxInitMessageTerminateInstance = 14
    LxMiniInitMessageLaunchInit = 29
    LxMiniInitMessageImport = 30
    LxMiniInitMessageImportInplace = 31
    LxMiniInitMessageExport = 32
    LxMiniInitMessageCreateInstanceResult = 33
    LxMiniInitMessageImportResult = 34
    LxMiniInitMessageEarlyConfig = 36
    LxMiniInitMessageInitialConfig = 37
    LxMiniInitMessageMount = 38
    LxMiniInitMessageUnmount = 39
    LxMiniInitMessageDetach = 40
    LxMiniInitMessageMountStatus = 41
    LxMiniInitMessageGuestCapabilities = 43
    LxMiniInitMessageChildExit = 45
    LxMiniInitMessageResizeDistribution = 50
    LxMiniInitMessageResizeDistributionResponse = 51
    LxMessageResultUint32 = 78


class PywslMessageType:
    """`PYWSL_MESSAGE_TYPE` values the launch codec and mini_init use (pywsl's own messages)."""

    PywslQueryInstances = 200
    PywslInstanceList = 201
    PywslAttachNotify = 202
    PywslShutdownVm = 203
    PywslSignalProcess = 204
    PywslImportWarnings = 205


class TransactionStep:
    """`TRANSACTION_STEP` values (SocketChannel.h)."""

    NONE = 0
    REQUEST = 1
    FIRST_REPLY = 2


class CreateInstanceStep:
    """`LX_MINI_CREATE_INSTANCE_STEP` values (where starting an instance failed)."""

    LxInitCreateInstanceStepNone = 0
    LxInitCreateInstanceStepFormatDisk = 1
    LxInitCreateInstanceStepMountDisk = 2
    LxInitCreateInstanceStepLaunchSystemDistro = 3
    LxInitCreateInstanceStepLaunchInit = 3
    LxInitCreateInstanceStepRunTar = 4


class MountStep:
    """`LX_MINI_MOUNT_STEP` values (where a disk mount failed)."""

    LxMiniInitMountStepNone = 0
    LxMiniInitMountStepFindDevice = 1
    LxMiniInitMountStepFindPartition = 2
    LxMiniInitMountStepMount = 3
    LxMiniInitMountStepUnmount = 4
    LxMiniInitMountStepRmDir = 5
    LxMiniInitMountStepDetectFilesystem = 6


class CreateProcessFlags:
    """`LX_INIT_CREATE_PROCESS_FLAGS` values the guest reads."""

    LxInitCreateProcessFlagsStdInConsole = 0x1
    LxInitCreateProcessFlagsStdOutConsole = 0x2
    LxInitCreateProcessFlagsStdErrConsole = 0x4


class ShellOptions:
    """`CREATE_PROCESS_SHELL_OPTIONS` values."""

    ShellOptionsLogin = 0x1


class MiniInitMessageFlags:
    """`LX_MINI_INIT_MESSAGE_FLAGS` values the guest's import/export worker reads."""

    LxMiniInitMessageFlagExportCompressGzip = 0x8
    LxMiniInitMessageFlagExportCompressXzip = 0x10
    LxMiniInitMessageFlagVerbose = 0x20


class NetworkingMode:
    """`LX_MINI_INIT_NETWORKING_MODE` values the VM's configuration sends."""

    LxMiniInitNetworkingModeNone = 0
    LxMiniInitNetworkingModeMirrored = 3
