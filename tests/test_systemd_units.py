"""The units masked for systemd before it starts (WSL's generator masks, kernel file systems refused here)."""

from __future__ import annotations

import os
import select
from pathlib import Path

import pytest

from pywsl.guest import forking, syscalls, systemd_units, systemd_user
from pywsl.guest.systemd_units import KernelMount, mask, refused_kernel_mounts


def test_only_refused_kernel_mounts_whose_path_exists() -> None:
    mounts = (
        KernelMount("a.mount", "refused", "/present"),
        KernelMount("b.mount", "fine", "/present"),
        KernelMount("c.mount", "refused", "/absent"),
    )
    refused = refused_kernel_mounts(mounts, lambda fstype: fstype == "fine", lambda path: path == "/present")
    assert refused == ["a.mount"]


def test_mask_links_to_dev_null_and_keeps_what_is_there(tmp_path: Path) -> None:
    folder = tmp_path / "run/systemd/system"
    folder.mkdir(parents=True)
    (folder / "console-getty.service").write_text("[Service]\nExecStart=/bin/true\n")
    masked = mask(systemd_units.WSL_MASKED, str(folder))
    assert masked == ["systemd-networkd-wait-online.service", "NetworkManager-wait-online.service"]
    assert os.readlink(folder / "NetworkManager-wait-online.service") == "/dev/null"
    assert (folder / "console-getty.service").read_text().startswith("[Service]")
    assert mask(["systemd-networkd-wait-online.service"], str(folder)) == []  # already masked
    with pytest.raises(ValueError):
        mask(["../escape.service"], str(folder))


def test_user_manager_dropin_gives_the_runtime_folder(tmp_path: Path) -> None:
    systemd_units.write_user_manager_dropin(str(tmp_path))
    text = (tmp_path / "user@.service.d" / "pywsl-runtime-dir.conf").read_text()
    assert text.splitlines() == [
        "[Service]",
        "Environment=XDG_RUNTIME_DIR=/run/user/%i DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/%i/bus",
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="a user namespace with mounts needs root here")
def test_debugfs_is_refused_in_a_user_namespace_and_tmpfs_is_not(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            syscalls.unshare(syscalls.CLONE_NEWUSER | syscalls.CLONE_NEWNS)
            answers = []
            for fstype in ("debugfs", "tracefs", "tmpfs"):  # scratch stays: its parent is not ours here
                answers.append("y" if systemd_units.can_mount(fstype, str(scratch)) else "n")
            os.write(write_end, "".join(answers).encode())
        finally:
            forking.exit_now(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 20)
        answer = os.read(read_end, 16).decode() if ready else ""
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert answer == "nny"


def test_user_session_is_off_without_systemd() -> None:
    assert not systemd_user.enabled()
    assert systemd_user.prepare(1000, 1000, "someone", {"WAYLAND_DISPLAY": "wayland-0"}) == ({}, [])
