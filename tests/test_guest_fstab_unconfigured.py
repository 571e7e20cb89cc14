"""``fstab.mount_all``: ``mount -a`` runs unless ``/etc/fstab`` is sure to hold no entry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pywsl.guest import fstab

UNCONFIGURED = "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"


class FakeMount:
    def __init__(self, folder: Path, status: int = 0, output: str = "") -> None:
        self.marker = folder / "ran"
        self.program = folder / "mount"
        self.program.write_text(
            f'#!/bin/sh\necho "$0 $*" > {self.marker}\nprintf "{output}"\nexit {status}\n'
        )
        self.program.chmod(0o755)

    @property
    def ran(self) -> bool:
        return self.marker.exists()


@pytest.fixture
def table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "fstab"
    monkeypatch.setattr(fstab, "FSTAB_PATH", str(path))
    return path


@pytest.fixture
def mount(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeMount:
    fake = FakeMount(tmp_path)
    monkeypatch.setattr(fstab, "MOUNT_PROGRAMS", (str(tmp_path / "none"), str(fake.program)))
    return fake


@pytest.mark.parametrize(
    "text",
    [
        UNCONFIGURED,
        "",
        "\n\n",
        "# one\n\n  # indented\n\t# tabbed\n \t \n#no newline at the end",
        "#tmpfs /data tmpfs defaults 0 0\n",
    ],
)
def test_no_entry_no_mount(table: Path, mount: FakeMount, text: str) -> None:
    table.write_text(text)
    assert fstab.mount_all() == []
    assert not mount.ran


@pytest.mark.parametrize(
    "text",
    [
        UNCONFIGURED + "tmpfs /data tmpfs size=1m 0 0\n",
        "tmpfs /data tmpfs size=1m 0 0",
        "# comment\n  x\n",
        "\r\n",  # not a blank to every mount: left to mount to judge
        "\f\n",
        "\0\n",
    ],
)
def test_anything_else_runs_mount(table: Path, mount: FakeMount, text: str) -> None:
    table.write_text(text)
    assert fstab.mount_all() == []
    assert mount.ran and mount.marker.read_text() == f"{mount.program} -a\n"


def test_a_failing_mount_still_warns(table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeMount(tmp_path, status=32, output="mount: /missing: no such device")
    monkeypatch.setattr(fstab, "MOUNT_PROGRAMS", (str(fake.program),))
    table.write_text("/dev/nothing-here /missing ext4 defaults 0 0\n")
    assert fstab.mount_all() == [
        f"Processing {table} with mount -a failed (exit status 32): mount: /missing: no such device"
    ]


def test_a_link_is_left_to_mount(table: Path, mount: FakeMount, tmp_path: Path) -> None:
    (tmp_path / "real").write_text(UNCONFIGURED)
    table.symlink_to(tmp_path / "real")
    assert fstab.mount_all() == [] and mount.ran


def test_a_dangling_link_is_left_to_mount(table: Path, mount: FakeMount, tmp_path: Path) -> None:
    table.symlink_to(tmp_path / "missing")
    assert fstab.mount_all() == [] and mount.ran


def test_not_a_regular_file_is_left_to_mount(table: Path, mount: FakeMount) -> None:
    os.mkfifo(table)  # opened without waiting for a writer
    assert fstab.mount_all() == [] and mount.ran
    mount.marker.unlink()
    table.unlink()
    table.mkdir()
    assert fstab.mount_all() == [] and mount.ran


def test_a_large_file_is_left_to_mount(
    table: Path, mount: FakeMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.write_text(UNCONFIGURED)
    monkeypatch.setattr(fstab, "MAX_UNCONFIGURED_SIZE", len(UNCONFIGURED))
    assert fstab.mount_all() == [] and not mount.ran
    monkeypatch.setattr(fstab, "MAX_UNCONFIGURED_SIZE", len(UNCONFIGURED) - 1)
    assert fstab.mount_all() == [] and mount.ran


def test_an_unreadable_file_is_left_to_mount(
    table: Path, mount: FakeMount, monkeypatch: pytest.MonkeyPatch
) -> None:
    table.write_text(UNCONFIGURED)
    real_open = os.open

    def refusing_open(path: str, flags: int, mode: int = 0o777) -> int:
        if path == str(table):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", refusing_open)
    assert fstab.mount_all() == [] and mount.ran


def test_no_file_no_mount_and_no_program_still_warns(
    table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fstab, "MOUNT_PROGRAMS", (str(tmp_path / "none"),))
    assert fstab.mount_all() == []  # no /etc/fstab at all
    table.write_text(UNCONFIGURED)
    assert fstab.mount_all() == [f"{table} is not mounted: the distribution has no mount program"]
