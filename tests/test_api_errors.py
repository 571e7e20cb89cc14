"""WslError: WSL's HRESULTs, messages, execution contexts and the dict form the service sends."""

from __future__ import annotations

import errno
import pickle

import pytest

from pywsl.api.errors import (
    HRESULTS,
    WslError,
    code_for_hresult,
    error_context,
    from_os_error,
    not_supported_by_backend,
)


@pytest.mark.parametrize(
    ("code", "hresult"),
    [
        ("WSL_E_DEFAULT_DISTRO_NOT_FOUND", 0x80040301),
        ("WSL_E_DISTRO_NOT_FOUND", 0x80040302),
        ("WSL_E_DISTRO_NOT_STOPPED", 0x8004030C),
        ("WSL_E_DISK_ALREADY_ATTACHED", 0x80040318),
        ("WSL_E_NOT_A_LINUX_DISTRO", 0x80040326),
        ("WSL_E_DISTRIBUTION_NAME_NEEDED", 0x80040330),
        ("WSL_E_VM_CRASHED", 0x80040332),
        ("E_INVALIDARG", 0x80070057),
        ("ERROR_ALREADY_EXISTS", 0x800700B7),
        ("ERROR_FILE_EXISTS", 0x80070050),
        ("E_ILLEGAL_STATE_CHANGE", 0x8000000D),
        ("TRUST_E_BAD_DIGEST", 0x80096010),
        ("E_NOTIMPL", 0x80004001),
        ("E_NOT_SET", 0x80070490),
        ("E_ACCESSDENIED", 0x80070005),
        ("ERROR_PATH_NOT_FOUND", 0x80070003),
    ],
)
def test_hresult_values(code: str, hresult: int) -> None:
    assert HRESULTS[code].hresult == hresult
    assert WslError(code).hresult == hresult
    known = code_for_hresult(hresult)
    assert known is not None and known.name == code


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (
            "WSL_E_DISTRO_NOT_STOPPED",
            "The operation could not be completed because the distribution's root filesystem is currently "
            "in use.",
        ),
        (
            "WSL_E_LOWER_INTEGRITY",
            "Cannot launch because another instance is running elevated.  Elevated and "
            "un-elevated instances are not permitted to run simultaneously.",
        ),
        (
            "WSL_E_USER_VHD_ALREADY_ATTACHED",
            "A disk is already mounted, please unmount the disk before launching.",
        ),
        ("WSL_E_ELEVATION_NEEDED_TO_MOUNT_DISK", "Administrator access is needed to mount a disk."),
        (
            "WSL_E_VM_MODE_INVALID_MOUNT_NAME",
            "The mount name cannot be empty, '.', '..', or contain '/'. "
            "Please retry with a valid mount name.",
        ),
        ("WSL_E_DISK_MOUNT_DISABLED", "Mounting disks is disabled by the computer policy."),
        ("WSL_E_VM_CRASHED", "The WSL2 Virtual Machine crashed."),
    ],
)
def test_default_messages_are_wsls(code: str, message: str) -> None:
    assert WslError(code).message == message


def test_every_wsl_e_code_of_the_reference_is_known() -> None:
    low_bytes = [*range(0x01, 0x16), *range(0x18, 0x22), *range(0x24, 0x33)]
    values = {entry.hresult for entry in HRESULTS.values() if entry.name.startswith("WSL_E_")}
    assert {0x80040300 + low for low in low_bytes} <= values


def test_default_message_and_error_code() -> None:
    error = WslError("WSL_E_DISTRO_NOT_FOUND", context="Wsl/Service")
    assert str(error) == "There is no distribution with the supplied name."
    assert error.error_code == "Wsl/Service/WSL_E_DISTRO_NOT_FOUND"
    assert WslError("E_INVALIDARG").error_code == "E_INVALIDARG"


def test_unknown_code_needs_an_hresult() -> None:
    with pytest.raises(ValueError):
        WslError("NO_SUCH_CODE")
    custom = WslError("HCS_E_SOMETHING", "text", hresult=0x80370199)
    assert custom.hresult == 0x80370199


def test_dict_round_trip_and_pickle() -> None:
    error = WslError(
        "WSL_E_IMPORT_FAILED",
        "Importing the distribution failed.\ntar: boom",
        context="Wsl/Service/RegisterDistro",
    )
    data = error.to_dict()
    assert data == {
        "code": "WSL_E_IMPORT_FAILED",
        "hresult": 0x8004030B,
        "message": "Importing the distribution failed.\ntar: boom",
        "context": "Wsl/Service/RegisterDistro",
    }
    again = WslError.from_dict(data)
    assert again.to_dict() == data
    copied = pickle.loads(pickle.dumps(error))
    assert isinstance(copied, WslError) and copied.to_dict() == data


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"code": "", "hresult": 1, "message": "x"},
        {"code": "X", "hresult": -1, "message": "x"},
        {"code": "X", "hresult": True, "message": "x"},
        {"code": "X", "hresult": 1 << 32, "message": "x"},
        {"code": "X", "hresult": 1, "message": 3},
        {"code": "X", "hresult": 1, "message": "x", "context": None},
    ],
)
def test_from_dict_rejects_malformed(data: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        WslError.from_dict(data)


def test_error_context_sets_the_innermost_path() -> None:
    outer, inner = error_context("CreateInstance"), error_context("ReadDistroConfig")
    with pytest.raises(WslError) as caught, outer, inner:
        raise WslError("WSL_E_DISTRO_NOT_FOUND")
    assert caught.value.error_code == "Wsl/Service/CreateInstance/ReadDistroConfig/WSL_E_DISTRO_NOT_FOUND"


def test_error_context_keeps_an_existing_context() -> None:
    with pytest.raises(WslError) as caught, error_context("RegisterDistro"):
        raise WslError("E_INVALIDARG", context="Wsl")
    assert caught.value.context == "Wsl"


def test_error_context_converts_os_errors() -> None:
    with pytest.raises(WslError) as caught, error_context("ExportDistro"):
        raise PermissionError(errno.EACCES, "Permission denied", "/x/y")
    assert caught.value.code == "E_ACCESSDENIED"
    assert caught.value.context == "Wsl/Service/ExportDistro"
    assert "/x/y" in caught.value.message


@pytest.mark.parametrize(
    ("number", "code"),
    [
        (errno.ENOENT, "ERROR_FILE_NOT_FOUND"),
        (errno.ENOTDIR, "ERROR_PATH_NOT_FOUND"),
        (errno.EEXIST, "ERROR_FILE_EXISTS"),
        (errno.ENOSPC, "ERROR_DISK_FULL"),
        (errno.EIO, "E_FAIL"),
    ],
)
def test_from_os_error(number: int, code: str) -> None:
    assert from_os_error(OSError(number, "why")).code == code


def test_not_supported_by_backend_names_an_alternative() -> None:
    with pytest.raises(WslError) as caught:
        not_supported_by_backend("Resizing a distribution's disk")
    assert caught.value.code == "ERROR_NOT_SUPPORTED"
    assert "not supported by the namespaces backend" in caught.value.message
    assert "The qemu backend ([pywsl] backend = qemu) supports it." in caught.value.message
