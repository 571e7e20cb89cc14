"""The time zone: the host's IANA id in Initialize.Timezone, /etc/localtime in the distribution."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import VmFactory, run_in

from pywsl.guest import timezone as guest_timezone
from pywsl.vm import timezone as host_side
from pywsl.wire.timezone_id import valid_timezone

VALID = ["Etc/UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "UTC", "Etc/GMT+5", "EST5EDT"]
INVALID = [
    "",
    "/etc/passwd",
    "../../etc/shadow",
    "Etc/../../x",
    "Etc//UTC",
    "Etc/UTC/",
    ".hidden",
    "a b",
    "Etc/UTC\n",
    "x" * 300,
    "Europe/.",
    "Zone\0Name",
]


def test_timezone_ids_are_validated() -> None:
    assert all(valid_timezone(name) for name in VALID)
    assert not any(valid_timezone(name) for name in INVALID)


def test_both_ends_use_the_one_check() -> None:
    assert host_side.valid_timezone is valid_timezone
    assert vars(guest_timezone)["valid_timezone"] is valid_timezone  # imported there, not re-exported


def test_host_timezone_sources(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    assert host_side.host_timezone(etc) is None
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/posix/Asia/Tokyo")
    assert host_side.host_timezone(etc) == "Asia/Tokyo"
    (etc / "localtime").unlink()
    (etc / "localtime").symlink_to("../usr/share/zoneinfo/Europe/Paris")
    assert host_side.host_timezone(etc) == "Europe/Paris"
    (etc / "timezone").write_text("America/New_York\nignored\n")
    assert host_side.host_timezone(etc) == "America/New_York"  # /etc/timezone wins
    (etc / "timezone").write_text("../../etc/shadow\n")
    assert host_side.host_timezone(etc) == "Europe/Paris"  # an invalid one is skipped
    (etc / "localtime").unlink()
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/../../../etc/passwd")
    assert host_side.host_timezone(etc) is None
    (etc / "localtime").unlink()
    (etc / "localtime").write_bytes(b"TZif")  # a copied file names no zone
    assert host_side.host_timezone(etc) is None


def _with_zoneinfo(rootfs: Path, *, timezone_file: bool = False) -> Path:
    zone = rootfs / "usr/share/zoneinfo/Etc/UTC"
    zone.parent.mkdir(parents=True)
    zone.write_bytes(b"TZif2 fake zone file\n")
    os.lchown(zone, *(os.lstat(rootfs).st_uid, os.lstat(rootfs).st_gid))
    for folder in (zone.parent, zone.parent.parent, zone.parent.parent.parent):
        os.lchown(folder, os.lstat(rootfs).st_uid, os.lstat(rootfs).st_gid)
    if timezone_file:
        (rootfs / "etc/timezone").write_text("Old/Zone\n")
    return rootfs


LOCALTIME = "readlink /etc/localtime || echo none; cat /etc/timezone 2>/dev/null || echo no-file"


@pytest.mark.skipif(os.geteuid() != 0, reason="the namespaces backend needs root")
def test_localtime_follows_the_zone_sent_in_initialize(vm_factory: VmFactory) -> None:
    booted = vm_factory.boot()
    vm = booted.vm

    def launch(
        name: str,
        zone: str | None,
        *,
        wsl_conf: str | None = None,
        zoneinfo: bool = True,
        timezone_file: bool = False,
    ) -> str:
        rootfs = vm_factory.rootfs(name.lower(), vm=booted, wsl_conf=wsl_conf)
        if zoneinfo:
            _with_zoneinfo(rootfs, timezone_file=timezone_file)
        instance = vm.launch_instance(name, rootfs, default_uid=0, hostname="box", timezone=zone)
        try:
            return run_in(instance, LOCALTIME).stdout
        finally:
            instance.close()

    assert launch("Zoned", "Etc/UTC", timezone_file=True) == "/usr/share/zoneinfo/Etc/UTC\nEtc/UTC\n"
    # The distribution does not have that zone: nothing changes.
    assert launch("Missing", "Europe/Paris") == "none\nno-file\n"
    assert launch("NoZoneinfo", "Etc/UTC", zoneinfo=False) == "none\nno-file\n"
    # [time] useWindowsTimezone = false keeps the distribution's own.
    assert launch("Own", "Etc/UTC", wsl_conf="[time]\nuseWindowsTimezone = false\n") == "none\nno-file\n"
    # None sends the host's own zone.
    host = host_side.host_timezone()
    expected = "/usr/share/zoneinfo/Etc/UTC\n" if host == "Etc/UTC" else "none\n"
    assert launch("Host", None) == expected + "no-file\n"
    with pytest.raises(ValueError, match="invalid time zone"):
        vm.launch_instance(
            "Bad",
            vm_factory.rootfs("bad", vm=booted),
            default_uid=0,
            hostname="box",
            timezone="../../etc/passwd",
        )
    # The guest checks the id itself: a hostile one sent as is changes nothing.
    rootfs = _with_zoneinfo(vm_factory.rootfs("hostile", vm=booted))
    instance = vm._launch_once(
        "Hostile", rootfs, default_uid=0, hostname="box", timezone="Etc/../../../../etc/passwd"
    )
    assert run_in(instance, LOCALTIME).stdout == "none\nno-file\n"
    instance.close()
