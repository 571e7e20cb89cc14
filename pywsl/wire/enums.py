"""WSL's message enums and flag sets (lxinitshared.h, SocketChannel.h) as IntEnum / IntFlag.

Names and values are WSL's own, so a reader can search WSL's sources for them. Unscoped C enums
are 4-byte integers on the wire. ``PYWSL_MESSAGE_TYPE`` is not WSL's: it numbers pywsl's own
messages (types 200 and up, see ``extensions.py``).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class LX_MESSAGE_TYPE(IntEnum):
    """Header.MessageType: every message type of lxinitshared.h, numbered from 0 in declaration order."""

    LxMiniInitMessageAny = 0
    LxInitMessageCreateProcess = 1
    LxInitMessageCreateSession = 2
    LxInitMessageCreateSessionResponse = 3
    LxInitMessageNetworkInformation = 4
    LxInitMessageInitialize = 5
    LxInitMessageInitializeResponse = 6
    LxInitMessageTimezoneInformation = 7
    LxInitMessageCreateProcessUtilityVm = 8
    LxInitMessageExitStatus = 9
    LxInitMessageWindowSizeChanged = 10
    LxInitMessageCreateProcessResponse = 11
    LxInitMessageQueryDrvfsElevated = 12
    LxInitMessageRemountDrvfs = 13
    LxInitMessageTerminateInstance = 14
    LxInitMessageStartSocketRelay = 15
    LxInitMessageQueryEnvironmentVariable = 16
    LxInitMessageQueryFeatureFlags = 17
    LxInitMessageKernelVersion = 18
    LxInitMessageAddVirtioFsDevice = 19
    LxInitMessageAddVirtioFsDeviceResponse = 20
    LxInitMessageRemountVirtioFsDevice = 21
    LxInitMessageStartDistroInit = 22
    LxInitMessageCreateLoginSession = 23
    LxInitMessageStopPlan9Server = 24
    LxInitMessageQueryNetworkingMode = 25
    LxInitMessageQueryVmId = 26
    LxInitCreateProcess = 27
    LxInitOobeResult = 28
    LxMiniInitMessageLaunchInit = 29
    LxMiniInitMessageImport = 30
    LxMiniInitMessageImportInplace = 31
    LxMiniInitMessageExport = 32
    LxMiniInitMessageCreateInstanceResult = 33
    LxMiniInitMessageImportResult = 34
    LxMiniInitMessageEjectVhd = 35
    LxMiniInitMessageEarlyConfig = 36
    LxMiniInitMessageInitialConfig = 37
    LxMiniInitMessageMount = 38
    LxMiniInitMessageUnmount = 39
    LxMiniInitMessageDetach = 40
    LxMiniInitMessageMountStatus = 41
    LxMiniInitMessageNetworkInfo = 42
    LxMiniInitMessageGuestCapabilities = 43
    LxMiniInitMessageWaitForPmemDevice = 44
    LxMiniInitMessageChildExit = 45
    LxMiniInitMountFolder = 46
    LxMiniInitCreateInstancePid = 47
    LxMiniInitTelemetryMessage = 48
    LxMinitWaitForPmemDeviceResult = 49
    LxMiniInitMessageResizeDistribution = 50
    LxMiniInitMessageResizeDistributionResponse = 51
    LxProcessCrash = 52
    LxGnsMessageInterfaceConfiguration = 53
    LxGnsMessageResult = 54
    LxGnsMessageNotification = 55
    LxGnsMessagePortMappingRequest = 56
    LxGnsMessagePortMappingResponse = 57
    LxGnsMessageSetPortListener = 58
    LxGnsMessagePortListenerRelayStart = 59
    LxGnsMessagePortListenerRelayStop = 60
    LxGnsMessageVmNicCreatedNotification = 61
    LxGnsMessageCreateDeviceRequest = 62
    LxGnsMessageModifyGuestDeviceSettingRequest = 63
    LxGnsMessageLoopbackRoutesRequest = 64
    LxGnsMessageDeviceSettingRequest = 65
    LxGnsMessageIfStateChangeRequest = 66
    LxGnsMessageIfStateChangeResponse = 67
    LxGnsMessageInitialIpConfigurationNotification = 68
    LxGnsMessageSetupIpv6 = 69
    LxGnsMessageDnsTunneling = 70
    LxGnsMessageNoOp = 71
    LxGnsMessageGlobalNetFilter = 72
    LxGnsMessageInterfaceNetFilter = 73
    LxGnsMessageConnectTestRequest = 74
    LxGnsMessageListenerRelay = 75
    LxMessageResultBool = 76
    LxMessageResultInt32 = 77
    LxMessageResultUint32 = 78
    LxMessageResultUint8 = 79
    LxMessageWSLCMount = 80
    LxMessageWSLCMountResult = 81
    LxMessageWSLCError = 82
    LxMessageWSLCGetDisk = 83
    LxMessageWSLCGetDiskResult = 84
    LxMessageWSLCExec = 85
    LxMessageWSLCFork = 86
    LxMessageWSLCForkResult = 87
    LxMessageWSLCConnect = 88
    LxMessageWSLCAccept = 89
    LxMessageWSLCWaitPid = 90
    LxMessageWSLCWaitPidResponse = 91
    LxMessageWSLCSignal = 92
    LxMessageWSLCRelayTty = 93
    LxMessageWSLCMapPort = 94
    LxMessageWSLCConnectRelay = 95
    LxMessageWSLCPortRelay = 96
    LxMessageWSLCUnmount = 97
    LxMessageWSLCDetach = 98
    LxMessageWSLCTerminalChanged = 99
    LxMessageWSLCWatchProcesses = 100
    LxMessageWSLCProcessExited = 101
    LxMessageWSLCUnixConnect = 102
    LxMessageWSLCGetGuestCapabilities = 103
    LxMessageWSLCGetGuestCapabilitiesResult = 104
    LxMessageWSLCListDir = 105
    LxMessageWSLCListDirResult = 106
    LxMessageWSLCMountVirtioFs = 107
    LxMessageWSLCWriteFile = 108


class LX_INIT_DRVFS_MOUNT(IntEnum):
    """LX_INIT_CONFIGURATION_INFORMATION.DrvfsMount: how init mounts the Windows drives."""

    LxInitDrvfsMountNone = 0
    LxInitDrvfsMountNonElevated = 1
    LxInitDrvfsMountElevated = 2


class TRANSACTION_STEP(IntEnum):
    """Header.TransactionStep (SocketChannel.h): 0 = no transaction, 1 = request, 2 = first reply, 3..."""

    NONE = 0
    REQUEST = 1
    FIRST_REPLY = 2


class CREATE_PROCESS_SHELL_OPTIONS(IntFlag):
    """LX_INIT_CREATE_PROCESS_COMMON.ShellOptions."""

    ShellOptionsLogin = 0x1


class LX_INIT_FEATURE_FLAGS(IntFlag):
    """LX_INIT_CONFIGURATION_INFORMATION.FeatureFlags."""

    LxInitFeatureNone = 0
    LxInitFeatureVirtIo9p = 0x1
    LxInitFeatureVirtIoFs = 0x2
    LxInitFeatureDisable9pServer = 0x4
    LxInitFeatureRootfsCompressed = 0x8
    LxInitFeatureSystemDistro = 0x10
    LxInitFeatureDnsTunneling = 0x20


class LX_INIT_CREATE_PROCESS_FLAGS(IntFlag):
    """LX_INIT_CREATE_PROCESS_COMMON.Flags (a signed int on the wire)."""

    LxInitCreateProcessFlagsNone = 0
    LxInitCreateProcessFlagsStdInConsole = 0x1
    LxInitCreateProcessFlagsStdOutConsole = 0x2
    LxInitCreateProcessFlagsStdErrConsole = 0x4
    LxInitCreateProcessFlagsElevated = 0x8
    LxInitCreateProcessFlagsInteropEnabled = 0x10
    LxInitCreateProcessFlagAllowOOBE = 0x20


class LX_MINI_INIT_MESSAGE_FLAGS(IntFlag):
    """LX_MINI_INIT_MESSAGE.Flags (LaunchInit / Import / ImportInplace / Export)."""

    LxMiniInitMessageFlagNone = 0
    LxMiniInitMessageFlagMountReadOnly = 0x1
    LxMiniInitMessageFlagCreateOverlayFs = 0x2
    LxMiniInitMessageFlagLaunchSystemDistro = 0x4
    LxMiniInitMessageFlagExportCompressGzip = 0x8
    LxMiniInitMessageFlagExportCompressXzip = 0x10
    LxMiniInitMessageFlagVerbose = 0x20


class LX_MINI_INIT_MOUNT_DEVICE_TYPE(IntEnum):
    """How a disk reaches the VM (LX_MINI_INIT_MESSAGE.MountDeviceType, SystemDistroDeviceType)."""

    LxMiniInitMountDeviceTypeInvalid = 0
    LxMiniInitMountDeviceTypeLun = 1
    LxMiniInitMountDeviceTypePmem = 2


class LX_MINI_INIT_MEMORY_RECLAIM_MODE(IntEnum):
    """LX_MINI_INIT_EARLY_CONFIG_MESSAGE.MemoryReclaimMode (.wslconfig autoMemoryReclaim)."""

    LxMiniInitMemoryReclaimModeDisabled = 0
    LxMiniInitMemoryReclaimModeGradual = 1
    LxMiniInitMemoryReclaimModeDropCache = 2


class LX_MINI_INIT_PORT_TRACKER_TYPE(IntEnum):
    """LX_MINI_INIT_NETWORKING_CONFIGURATION.PortTrackerType."""

    LxMiniInitPortTrackerTypeNone = 0
    LxMiniInitPortTrackerTypeMirrored = 1
    LxMiniInitPortTrackerTypeRelay = 2


class LX_MINI_INIT_NETWORKING_MODE(IntEnum):
    """LX_MINI_INIT_NETWORKING_CONFIGURATION.NetworkingMode (.wslconfig networkingMode)."""

    LxMiniInitNetworkingModeNone = 0
    LxMiniInitNetworkingModeNat = 1
    LxMiniInitNetworkingModeBridged = 2
    LxMiniInitNetworkingModeMirrored = 3
    LxMiniInitNetworkingModeConsomme = 4


class LX_MINI_MOUNT_STEP(IntEnum):
    """LX_MINI_INIT_MOUNT_RESULT_MESSAGE.FailureStep: where a disk mount failed."""

    LxMiniInitMountStepNone = 0
    LxMiniInitMountStepFindDevice = 1
    LxMiniInitMountStepFindPartition = 2
    LxMiniInitMountStepMount = 3
    LxMiniInitMountStepUnmount = 4
    LxMiniInitMountStepRmDir = 5
    LxMiniInitMountStepDetectFilesystem = 6


class LX_MINI_CREATE_INSTANCE_STEP(IntEnum):
    """LX_MINI_INIT_CREATE_INSTANCE_RESULT.FailureStep: where starting an instance failed.

    ``LxInitCreateInstanceStepLaunchInit`` has the same value as ``...LaunchSystemDistro`` in WSL, so
    it is an alias of that member here.
    """

    LxInitCreateInstanceStepNone = 0
    LxInitCreateInstanceStepFormatDisk = 1
    LxInitCreateInstanceStepMountDisk = 2
    LxInitCreateInstanceStepLaunchSystemDistro = 3
    LxInitCreateInstanceStepLaunchInit = 3
    LxInitCreateInstanceStepRunTar = 4


class PYWSL_MESSAGE_TYPE(IntEnum):
    """pywsl's own message types (not in WSL); declared in ``extensions.py``."""

    PywslQueryInstances = 200
    PywslInstanceList = 201
    PywslAttachNotify = 202
    PywslShutdownVm = 203
    PywslSignalProcess = 204
    PywslImportWarnings = 205


#: Every WSL enum of lxinitshared.h by its C name (the container-only WSLC enums are not used here).
WSL_ENUMS: dict[str, type[IntEnum] | type[IntFlag]] = {
    "LX_MESSAGE_TYPE": LX_MESSAGE_TYPE,
    "LX_INIT_DRVFS_MOUNT": LX_INIT_DRVFS_MOUNT,
    "TRANSACTION_STEP": TRANSACTION_STEP,
    "CREATE_PROCESS_SHELL_OPTIONS": CREATE_PROCESS_SHELL_OPTIONS,
    "LX_INIT_FEATURE_FLAGS": LX_INIT_FEATURE_FLAGS,
    "LX_INIT_CREATE_PROCESS_FLAGS": LX_INIT_CREATE_PROCESS_FLAGS,
    "LX_MINI_INIT_MESSAGE_FLAGS": LX_MINI_INIT_MESSAGE_FLAGS,
    "LX_MINI_INIT_MOUNT_DEVICE_TYPE": LX_MINI_INIT_MOUNT_DEVICE_TYPE,
    "LX_MINI_INIT_MEMORY_RECLAIM_MODE": LX_MINI_INIT_MEMORY_RECLAIM_MODE,
    "LX_MINI_INIT_PORT_TRACKER_TYPE": LX_MINI_INIT_PORT_TRACKER_TYPE,
    "LX_MINI_INIT_NETWORKING_MODE": LX_MINI_INIT_NETWORKING_MODE,
    "LX_MINI_MOUNT_STEP": LX_MINI_MOUNT_STEP,
    "LX_MINI_CREATE_INSTANCE_STEP": LX_MINI_CREATE_INSTANCE_STEP,
}
