"""Declarations of WSL's mini_init messages (lxinitshared.h), one per struct.

These travel between the service and mini_init, the VM's root-namespace init (wsl-reference
§3.5.1-3.5.2): VM configuration, launching / importing / exporting a distribution, disks and
folders, and what the guest reports back. Offsets in comments are the x86_64 / Windows x64 layout
(identical); the variable part of each message is listed in the order WSL's writer appends it.
"""

from __future__ import annotations

import construct as cs

from pywsl.wire.codec import (
    MESSAGE_HEADER,
    Blob,
    BufferString,
    CString,
    MessageSchema,
    MultiSz,
    boolean,
    declare_struct,
    enum32,
    i32,
    u16,
    u32,
    u64,
)
from pywsl.wire.enums import (
    LX_MESSAGE_TYPE,
    LX_MINI_CREATE_INSTANCE_STEP,
    LX_MINI_INIT_MEMORY_RECLAIM_MODE,
    LX_MINI_INIT_MESSAGE_FLAGS,
    LX_MINI_INIT_MOUNT_DEVICE_TYPE,
    LX_MINI_INIT_NETWORKING_MODE,
    LX_MINI_INIT_PORT_TRACKER_TYPE,
    LX_MINI_MOUNT_STEP,
)

T = LX_MESSAGE_TYPE

# ---- service -> mini_init: VM configuration ------------------------------------------------------

LX_MINI_INIT_EARLY_CONFIG_MESSAGE = MessageSchema(
    "LX_MINI_INIT_EARLY_CONFIG_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "SwapLun" / u32,  # 16: UINT_MAX = no swap
        "SystemDistroDeviceType" / enum32(LX_MINI_INIT_MOUNT_DEVICE_TYPE),  # 20
        "SystemDistroDeviceId" / u32,  # 24
        "MemoryReclaimMode" / enum32(LX_MINI_INIT_MEMORY_RECLAIM_MODE),  # 28
        "DnsTunnelingIpAddress" / u32,  # 32: IPv4 in network byte order
        "EnableDebugShell" / boolean,  # 36
        "EnableDnsTunneling" / boolean,  # 37
        "EnableSafeMode" / boolean,  # 38
        "DefaultKernel" / boolean,  # 39
        "IsolateDistroCgroup" / boolean,  # 40
        cs.Padding(3),
        "KernelModulesDeviceId" / u32,  # 44
        "HostnameOffset" / u32,  # 48
        "KernelModulesListOffset" / u32,  # 52: comma-separated module names
    ),
    message_type=T.LxMiniInitMessageEarlyConfig,
    buffer_offset=56,
    payload=(  # WslCoreVm::Initialize
        CString("HostnameOffset"),
        CString("KernelModulesListOffset"),
    ),
)

LX_MINI_INIT_NETWORKING_CONFIGURATION = declare_struct(
    "LX_MINI_INIT_NETWORKING_CONFIGURATION",
    cs.Struct(
        "NetworkingMode" / enum32(LX_MINI_INIT_NETWORKING_MODE),  # +0
        "PortTrackerType" / enum32(LX_MINI_INIT_PORT_TRACKER_TYPE),  # +4
        "EphemeralPortRangeStart" / u16,  # +8
        "EphemeralPortRangeEnd" / u16,  # +10: inclusive
        "EnableDhcpClient" / boolean,  # +12
        "DisableIpv6" / boolean,  # +13
        cs.Padding(2),
        "DhcpTimeout" / i32,  # +16
    ),
)

LX_MINI_INIT_CONFIG_MESSAGE = MessageSchema(
    "LX_MINI_INIT_CONFIG_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "EntropySize" / i32,  # 16
        "EntropyOffset" / u32,  # 20
        "EnableGuiApps" / boolean,  # 24
        "MountGpuShares" / boolean,  # 25
        "EnableInboxGpuLibs" / boolean,  # 26
        cs.Padding(1),
        "NetworkingConfiguration" / LX_MINI_INIT_NETWORKING_CONFIGURATION,  # 28
    ),
    message_type=T.LxMiniInitMessageInitialConfig,
    buffer_offset=48,
    payload=(Blob("EntropyOffset", "EntropySize"),),  # BOOT_ENTROPY_SIZE random bytes
)

# ---- service -> mini_init: distributions ---------------------------------------------------------

LX_MINI_INIT_MESSAGE = MessageSchema(
    "LX_MINI_INIT_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "MountDeviceType" / enum32(LX_MINI_INIT_MOUNT_DEVICE_TYPE),  # 16
        "DeviceId" / u32,  # 20
        "FsTypeOffset" / u32,  # 24
        "MountOptionsOffset" / u32,  # 28
        "VmIdOffset" / u32,  # 32
        "DistributionNameOffset" / u32,  # 36
        "SharedMemoryRootOffset" / u32,  # 40
        "InstallPathOffset" / u32,  # 44
        "UserProfileOffset" / u32,  # 48
        "Flags" / enum32(LX_MINI_INIT_MESSAGE_FLAGS),  # 52
        "ConnectPort" / u32,  # 56: unused
    ),
    message_type=T.LxMiniInitMessageLaunchInit,
    other_types=(
        T.LxMiniInitMessageImport,
        T.LxMiniInitMessageImportInplace,
        T.LxMiniInitMessageExport,
    ),
    buffer_offset=60,
    payload=(  # WslCoreVm::CreateInstance: every string is written
        CString("FsTypeOffset"),
        CString("MountOptionsOffset"),
        CString("VmIdOffset"),
        CString("DistributionNameOffset"),
        CString("SharedMemoryRootOffset"),
        CString("InstallPathOffset"),
        CString("UserProfileOffset"),
    ),
)

CREATE_PROCESS_MESSAGE = MessageSchema(  # LxssCreateProcess::CreateLinuxProcess
    "CREATE_PROCESS_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "PathIndex" / u32,  # 16
        "CommandLineIndex" / u32,  # 20
    ),
    message_type=T.LxInitCreateProcess,
    buffer_offset=24,
    payload=(
        CString("PathIndex"),
        MultiSz("CommandLineIndex"),
    ),
)

# ---- service -> mini_init: disks and folders -----------------------------------------------------

LX_MINI_INIT_MOUNT_MESSAGE = MessageSchema(
    "LX_MINI_INIT_MOUNT_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "PartitionIndex" / u32,  # 16: a partition number (0 = whole disk), not an offset
        "ScsiLun" / u32,  # 20
        "TypeOffset" / u32,  # 24: "" = detect
        "TargetNameOffset" / u32,  # 28: mounted at /mnt/wsl/<name>
        "OptionsOffset" / u32,  # 32
    ),
    message_type=T.LxMiniInitMessageMount,
    buffer_offset=36,
    payload=(  # WslCoreVm::MountDisk
        CString("TypeOffset"),
        CString("TargetNameOffset"),
        CString("OptionsOffset"),
    ),
)

LX_MINI_INIT_UNMOUNT_MESSAGE = MessageSchema(
    "LX_MINI_INIT_UNMOUNT_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
    ),
    message_type=T.LxMiniInitMessageUnmount,
    buffer_offset=16,
    payload=(BufferString(),),  # mount name
)

LX_MINI_INIT_DETACH_MESSAGE = MessageSchema(
    "LX_MINI_INIT_DETACH_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "ScsiLun" / u32,  # 16
    ),
    message_type=T.LxMiniInitMessageDetach,
)

LX_MINI_INIT_MOUNT_RESULT_MESSAGE = MessageSchema(
    "LX_MINI_INIT_MOUNT_RESULT_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Result" / i32,  # 16: 0 or a negative errno
        "FailureStep" / enum32(LX_MINI_MOUNT_STEP),  # 20
    ),
    message_type=T.LxMiniInitMessageMountStatus,
)

EJECT_VHD_MESSAGE = MessageSchema(
    "EJECT_VHD_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Lun" / u32,  # 16
    ),
    message_type=T.LxMiniInitMessageEjectVhd,
    response="RESULT_MESSAGE<int32_t>",
)

LX_MINI_INIT_WAIT_FOR_PMEM_DEVICE_MESSAGE = MessageSchema(
    "LX_MINI_INIT_WAIT_FOR_PMEM_DEVICE_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "PmemId" / u32,  # 16
    ),
    message_type=T.LxMiniInitMessageWaitForPmemDevice,
    response="RESULT_MESSAGE<int32_t>",
)

LX_MINI_INIT_MOUNT_FOLDER_MESSAGE = MessageSchema(
    "LX_MINI_INIT_MOUNT_FOLDER_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "ReadOnly" / boolean,  # 16
        cs.Padding(3),
        "PathIndex" / u32,  # 20: guest path
        "NameIndex" / u32,  # 24: share name
    ),
    message_type=T.LxMiniInitMountFolder,
    buffer_offset=28,
    payload=(  # WslCoreVm::MountRootNamespaceFolder
        CString("PathIndex"),
        CString("NameIndex"),
    ),
    response="RESULT_MESSAGE<int32_t>",
)

LX_MINI_INIT_RESIZE_DISTRIBUTION_MESSAGE = MessageSchema(
    "LX_MINI_INIT_RESIZE_DISTRIBUTION_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "ScsiLun" / u32,  # 16
        cs.Padding(4),
        "NewSize" / u64,  # 24: 0 = fill the device
    ),
    message_type=T.LxMiniInitMessageResizeDistribution,
)

LX_MINI_INIT_RESIZE_DISTRIBUTION_RESPONSE = MessageSchema(
    "LX_MINI_INIT_RESIZE_DISTRIBUTION_RESPONSE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "ResponseCode" / u32,  # 16
    ),
    message_type=T.LxMiniInitMessageResizeDistributionResponse,
)

# ---- mini_init -> service ------------------------------------------------------------------------

LX_INIT_GUEST_CAPABILITIES = MessageSchema(
    "LX_INIT_GUEST_CAPABILITIES",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "SeccompAvailable" / boolean,  # 16
        cs.Padding(7),
        "HvPciSwiotlbBase" / u64,  # 24
        "HvPciSwiotlbSize" / u64,  # 32
    ),
    message_type=T.LxMiniInitMessageGuestCapabilities,
    buffer_offset=40,
    payload=(BufferString(),),  # kernel release (uname -r)
)

LX_MINI_INIT_CHILD_EXIT_MESSAGE = MessageSchema(
    "LX_MINI_INIT_CHILD_EXIT_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "ChildPid" / u32,  # 16
    ),
    message_type=T.LxMiniInitMessageChildExit,
)

LX_MINI_INIT_CREATE_INSTANCE_RESULT = MessageSchema(
    "LX_MINI_INIT_CREATE_INSTANCE_RESULT",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Result" / i32,  # 16: 0 or an errno
        "FailureStep" / enum32(LX_MINI_CREATE_INSTANCE_STEP),  # 20
        "Pid" / u64,  # 24: the instance's init (ClientId)
        "ConnectPort" / u32,  # 32
        "WarningsOffset" / u32,  # 36
    ),
    message_type=T.LxMiniInitMessageCreateInstanceResult,
    buffer_offset=40,
    payload=(CString("WarningsOffset", optional=True),),  # '\n'-separated, only when any
)

LX_MINI_INIT_IMPORT_RESULT = MessageSchema(
    "LX_MINI_INIT_IMPORT_RESULT",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "Result" / i32,  # 16
        "ValidDistribution" / boolean,  # 20
        cs.Padding(3),
        "FlavorIndex" / u32,  # 24
        "VersionIndex" / u32,  # 28
        "ShortcutIconIndex" / u32,  # 32
        "ShortcutIconSize" / u32,  # 36
        "DefaultNameIndex" / u32,  # 40
        "TerminalProfileIndex" / u32,  # 44
        "TerminalProfileSize" / u32,  # 48
        "GenerateTerminalProfile" / boolean,  # 52
        "GenerateShortcut" / boolean,  # 53, Buffer at 54
        cs.Padding(2),
    ),
    message_type=T.LxMiniInitMessageImportResult,
    buffer_offset=54,
    payload=(  # PostProcessImportedDistribution: the default name comes before the icon
        CString("FlavorIndex", optional=True),
        CString("VersionIndex", optional=True),
        CString("DefaultNameIndex", optional=True),
        Blob("ShortcutIconIndex", "ShortcutIconSize", optional=True),
        Blob("TerminalProfileIndex", "TerminalProfileSize", optional=True),
    ),
)

LX_MINI_INIT_TELEMETRY_MESSAGE = MessageSchema(
    "LX_MINI_INIT_TELEMETRY_MESSAGE",
    cs.Struct(
        "Header" / MESSAGE_HEADER,
        "ShowDrvFsNotification" / boolean,  # 16, Buffer at 17
        cs.Padding(3),
    ),
    message_type=T.LxMiniInitTelemetryMessage,
    buffer_offset=17,
    payload=(BufferString(),),  # "name/count/name/count/..."
)
