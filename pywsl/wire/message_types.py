"""The message types a launch sends and reads, as plain integers.

`pywsl.wire.enums` declares every `LX_MESSAGE_TYPE` and pywsl's own `PYWSL_MESSAGE_TYPE` as enums;
loading the `enum` module costs a warm `pywsl -d D -- cmd` more than its round trips to the VM. The
struct codec (`launch_codec`) and the launch client take the numbers from here instead; a test
checks each against the enums, which stay the declaration.
"""

from __future__ import annotations

__all__ = ["LxMessageType", "PywslMessageType"]


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
    """`PYWSL_MESSAGE_TYPE` values the launch codec uses (pywsl's own messages)."""

    PywslInstanceList = 201
    PywslShutdownVm = 203
    PywslSignalProcess = 204
    PywslImportWarnings = 205
