"""The disk-image verbs, `--set-version`, `--import --vhd` and `--export --vhd` of the `pywsl` command
line as on Windows: each reaches the fake WslService's declared method with wsl.exe's arguments,
and prints wsl.exe's texts with its exit statuses (tests/windows_simulation.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_com_cli import DEBIAN, service_calls, simulate

from pywsl.api.com import layout

SUCCESS = "The operation completed successfully.\n"
PASS_THROUGH, VHD = layout.LXSS_ATTACH_MOUNT_FLAGS_PASS_THROUGH, layout.LXSS_ATTACH_MOUNT_FLAGS_VHD


def test_mount_attaches_then_mounts_a_physical_disk(tmp_path: Path) -> None:
    result, _ = simulate(tmp_path, "cli", "--mount", "\\\\.\\PhysicalDrive2", "-p", "1")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        "The disk was successfully mounted as '/mnt/wsl/PhysicalDrive2p1'.\n"
        "Note: The location will be different if you have modified the automount.root setting in "
        "/etc/wsl.conf.\n"
        "To unmount and detach the disk, run 'pywsl --unmount \\\\.\\PhysicalDrive2'.\n"
    )
    attach, mount = service_calls(tmp_path, "AttachDisk", "MountDisk")
    assert (attach["Disk"], attach["Flags"]) == ("\\\\.\\PhysicalDrive2", PASS_THROUGH)
    assert (mount["Disk"], mount["Flags"], mount["PartitionIndex"]) == (
        "\\\\.\\PhysicalDrive2",
        PASS_THROUGH,
        1,
    )
    assert (mount["Name"], mount["Type"], mount["Options"]) == (None, None, None)


def test_mount_of_a_disk_image_passes_its_absolute_path_and_options(tmp_path: Path) -> None:
    result, _ = simulate(
        tmp_path, "cli", "--mount", "disk.vhdx", "--vhd", "-n", "data", "-t", "ext4", "-o", "ro"
    )
    assert result.returncode == 0
    assert result.stdout.startswith("The disk was successfully mounted as '/mnt/wsl/data'.\n")
    attach, mount = service_calls(tmp_path, "AttachDisk", "MountDisk")
    disk = str(tmp_path / "disk.vhdx")
    assert (attach["Disk"], attach["Flags"]) == (disk, VHD)
    assert (mount["Disk"], mount["Flags"], mount["Name"], mount["Type"], mount["Options"]) == (
        disk,
        VHD,
        "data",
        "ext4",
        "ro",
    )


def test_a_failed_mount_after_the_attach_is_exit_status_1(tmp_path: Path) -> None:
    result, _ = simulate(tmp_path, "cli", "--mount", "bad.vhdx", "--vhd")
    assert (result.returncode, result.stderr) == (1, "")
    assert result.stdout == (
        "The disk was attached but failed to mount: Invalid argument.\n"
        "For more details, run 'dmesg' inside WSL2.\n"
        f"To detach the disk, run 'pywsl --unmount {tmp_path / 'bad.vhdx'}'.\n"
    )


def test_an_attached_disk_is_mounted_again_unless_bare(tmp_path: Path) -> None:
    again, _ = simulate(tmp_path, "cli", "--mount", "attached.vhdx", "--vhd", "-p", "2")
    assert again.returncode == 0 and len(service_calls(tmp_path, "MountDisk")) == 1
    bare, _ = simulate(tmp_path, "cli", "--mount", "attached.vhdx", "--vhd", "--bare")
    assert (bare.returncode, bare.stdout) == (255, "")
    assert bare.stderr.endswith("Error code: Wsl/WSL_E_DISK_ALREADY_ATTACHED\n")
    assert service_calls(tmp_path, "MountDisk") == []
    attached_only, _ = simulate(tmp_path, "cli", "--mount", "new.vhdx", "--vhd", "--bare")
    assert (attached_only.returncode, attached_only.stderr) == (0, SUCCESS)
    assert [call["method"] for call in service_calls(tmp_path, "AttachDisk", "MountDisk")] == ["AttachDisk"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--mount", "d.vhdx", "-p", "two"), "two is not a valid integer.\nError code: Wsl/E_INVALIDARG\n"),
        (("--manage", "Nope", "-r", "10XB"), "Invalid size: 10XB\nError code: Wsl/E_INVALIDARG\n"),
        (
            ("--manage", "Debian", "-s", "maybe"),
            "maybe is not a valid boolean, <true|false>\nError code: Wsl/E_INVALIDARG\n",
        ),
    ],
)
def test_values_are_read_before_the_service_is_asked(
    tmp_path: Path, argv: tuple[str, ...], message: str
) -> None:
    result, _ = simulate(tmp_path, "cli", *argv)
    assert (result.returncode, result.stdout, result.stderr) == (255, "", message)
    assert service_calls(tmp_path, "GetDistributionId", "AttachDisk", "MountDisk") == []


def test_unmount_detaches_all_one_or_reports_the_failure(tmp_path: Path) -> None:
    everything, _ = simulate(tmp_path, "cli", "--unmount")
    assert (everything.returncode, everything.stderr) == (0, SUCCESS)
    assert [call["Disk"] for call in service_calls(tmp_path, "DetachDisk")] == [None]
    relative, _ = simulate(tmp_path, "cli", "--unmount", "disk.vhdx")
    assert (relative.returncode, relative.stderr) == (0, SUCCESS)
    # not found as given: tried again with the absolute path, as wsl.exe does
    assert [call["Disk"] for call in service_calls(tmp_path, "DetachDisk")] == [
        "disk.vhdx",
        str(tmp_path / "disk.vhdx"),
    ]
    busy, _ = simulate(tmp_path, "cli", "--unmount", str(tmp_path / "busy.vhdx"))
    assert (busy.returncode, busy.stderr) == (255, "")
    assert busy.stdout == (
        "The disk failed to detach: Device or resource busy. "
        "For more details, please run 'dmesg' inside WSL2.\n"
        "To force WSL2 to stop and detach the disk, run 'pywsl --shutdown'.\n"
    )


def test_import_in_place_registers_the_absolute_path(tmp_path: Path) -> None:
    result, _ = simulate(tmp_path, "cli", "--import-in-place", "New", "ext4.vhdx")
    assert (result.returncode, result.stderr) == (0, SUCCESS)
    (call,) = service_calls(tmp_path, "ImportDistributionInplace")
    assert (call["DistributionName"], call["VhdPath"]) == ("New", str(tmp_path / "ext4.vhdx"))
    for argv in (("New",), ("New", "a.vhdx", "b")):
        usage, _ = simulate(tmp_path, "cli", "--import-in-place", *argv)
        assert usage.returncode == 255 and service_calls(tmp_path, "ImportDistributionInplace") == []


def test_manage_resize_and_set_sparse_reach_the_service(tmp_path: Path) -> None:
    resized, _ = simulate(tmp_path, "cli", "--manage", "Debian", "--resize", "10GB")
    assert resized.returncode == 0
    assert (
        resized.stderr == "resize2fs: resized to 10737418240 bytes\n" + SUCCESS
    )  # the tools' output: stderr
    (resize,) = service_calls(tmp_path, "ResizeDistribution")
    assert (resize["DistroGuid"], resize["OutputHandle"], resize["NewSize"]) == (DEBIAN, 2, 10 << 30)
    sparse, _ = simulate(tmp_path, "cli", "--manage", "Debian", "-s", "TRUE", "--allow-unsafe")
    assert (sparse.returncode, sparse.stderr) == (0, SUCCESS)
    (call,) = service_calls(tmp_path, "SetSparse")
    assert (call["DistroGuid"], call["Sparse"], call["AllowUnsafe"]) == (DEBIAN, 1, 1)
    dense, _ = simulate(tmp_path, "cli", "--manage", "Debian", "--set-sparse", "0")
    assert dense.returncode == 0 and service_calls(tmp_path, "SetSparse")[0]["Sparse"] == 0
    moved, _ = simulate(tmp_path, "cli", "--manage", "Debian", "--move", "elsewhere")
    assert (moved.returncode, moved.stderr) == (0, SUCCESS)
    assert service_calls(tmp_path, "MoveDistribution")[0]["DistributionName"] == str(tmp_path / "elsewhere")


def test_set_version_converts_in_the_service(tmp_path: Path) -> None:
    to_one, _ = simulate(tmp_path, "cli", "--set-version", "Debian", "1")
    assert (to_one.returncode, to_one.stdout, to_one.stderr) == (0, "", SUCCESS)
    (call,) = service_calls(tmp_path, "SetVersion")
    assert (call["DistroGuid"], call["Version"], call["StderrHandle"]) == (DEBIAN, 1, 2)
    to_two, _ = simulate(tmp_path, "cli", "--set-version", "Debian", "2")
    assert to_two.returncode == 0
    assert to_two.stdout == "For information on key differences with WSL 2 please visit https://aka.ms/wsl2\n"
    bad, _ = simulate(tmp_path, "cli", "--set-version", "Debian", "3")
    assert bad.returncode == 255 and bad.stderr.endswith("Error code: Wsl/ERROR_VERSION_PARSE_ERROR\n")
    assert service_calls(tmp_path, "SetVersion") == []


def test_import_vhd_registers_a_disk_image(tmp_path: Path) -> None:
    image = tmp_path / "disk.vhdx"
    image.write_bytes(b"vhdx image")
    result, _ = simulate(tmp_path, "cli", "--import", "New", "where", "disk.vhdx", "--vhd", "--version", "1")
    assert (result.returncode, result.stderr) == (
        0,
        "Import in progress, this may take a few minutes.\n" + SUCCESS,
    )
    (call,) = service_calls(tmp_path, "RegisterDistribution")
    assert (call["DistributionName"], call["Version"], call["TargetDirectory"], call["Content"]) == (
        "New",
        1,
        str(tmp_path / "where"),
        "vhdx image",
    )
    assert call["Flags"] == layout.LXSS_IMPORT_DISTRO_FLAGS_VHD | layout.LXSS_IMPORT_DISTRO_FLAGS_NO_OOBE
    assert (tmp_path / "where").is_dir()
    refused, _ = simulate(tmp_path, "cli", "--import", "Other", "other", "disk.vhdx")
    assert (refused.returncode, refused.stderr) == (
        255,
        "This looks like a VHD file. Use --vhd to import a VHD instead of a tar.\n",
    )
    assert not (tmp_path / "other").exists()  # created for the import, removed when it failed
    tar, _ = simulate(tmp_path, "cli", "--import", "Tar", "tar", "disk.vhdx", "--vhd")
    assert tar.returncode == 0 and service_calls(tmp_path, "RegisterDistribution")[0]["Version"] == 0


@pytest.mark.parametrize("argv", [("--vhd",), ("--format", "vhd")])
def test_export_vhd_copies_the_disk_image(tmp_path: Path, argv: tuple[str, ...]) -> None:
    result, _ = simulate(tmp_path, "cli", "--export", "Debian", "out.vhdx", *argv)
    assert (result.returncode, result.stderr) == (
        0,
        "Export in progress, this may take a few minutes.\n" + SUCCESS,
    )
    assert (tmp_path / "out.vhdx").read_bytes() == f"disk image of {DEBIAN}".encode()
    (call,) = service_calls(tmp_path, "ExportDistribution")
    assert call["Flags"] == layout.LXSS_EXPORT_DISTRO_FLAGS_VHD


def test_export_vhd_and_gzip_together_are_a_usage_error(tmp_path: Path) -> None:
    result, _ = simulate(tmp_path, "cli", "--export", "Debian", "out.tgz", "--vhd", "--format", "tar.gz")
    assert result.returncode == 255 and result.stderr.startswith("Usage: pywsl")
    assert not (tmp_path / "out.tgz").exists() and service_calls(tmp_path, "ExportDistribution") == []


def test_the_default_version_is_the_user_s_registry_value(tmp_path: Path) -> None:
    two, _ = simulate(tmp_path, "cli", "--set-default-version", "2")
    assert (two.returncode, two.stderr) == (0, SUCCESS)
    assert two.stdout == "For information on key differences with WSL 2 please visit https://aka.ms/wsl2\n"
    assert service_calls(tmp_path, "HKCU DefaultVersion") == [{"method": "HKCU DefaultVersion", "Version": 2}]
    refused, _ = simulate(tmp_path, "cli", "--set-default-version", "1")
    assert refused.returncode == 255 and refused.stderr.endswith("Error code: Wsl/WSL_E_WSL1_NOT_SUPPORTED\n")
    assert service_calls(tmp_path, "HKCU DefaultVersion") == []
    with_wsl1 = {"PYWSL_SIMULATION_LXSS": json.dumps({"lxss service": True, "DefaultVersion": 1})}
    one, _ = simulate(tmp_path, "cli", "--set-default-version", "1", env_extra=with_wsl1)
    assert (one.returncode, one.stdout, one.stderr) == (0, "", SUCCESS)
    assert service_calls(tmp_path, "HKCU DefaultVersion")[0]["Version"] == 1
    status, _ = simulate(tmp_path, "cli", "--status", env_extra=with_wsl1)
    assert status.stdout == "Default Distribution: Debian\nDefault Version: 1\n"


def test_the_help_offers_nothing_linux_only(tmp_path: Path) -> None:
    result, _ = simulate(tmp_path, "cli", "--help")
    assert result.returncode == 255  # wsl.exe's -1 after its usage
    for word in ("namespaces", "qemu", "backend", "directories here", "pywsl-service"):
        assert word not in result.stdout, word
    for line in ("--mount DISK [OPTIONS]", "--unmount [DISK]", "--import-in-place DISTRO VHD", "--bare"):
        assert line in result.stdout, line
