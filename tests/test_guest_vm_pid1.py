"""pid 1 of a qemu VM outside a VM: the host names of its shared folders, and a start without the
channel port (no virtio-serial port here) that fails with a clear log line, not a hang."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from coverage_report import passed_on

from pywsl.guest import vm_pid1

REPOSITORY = Path(__file__).resolve().parents[1]
# As the VM is told where pywsl and its packages are (-S: no site-packages of its own).
PACKAGES = Path(pytest.__file__).resolve().parents[1]


def test_the_shared_folders_have_the_hosts_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYWSL_SHARE0", "/home/user/src")
    monkeypatch.setenv("PYWSL_SHARE1", "/opt/site-packages")
    monkeypatch.setenv("PYWSL_SHAREX", "/not/a/share")
    assert vm_pid1._host_path("/run/pywsl/share0/pywsl") == "/home/user/src/pywsl"
    assert vm_pid1._host_path("/run/pywsl/share1") == "/opt/site-packages"
    assert vm_pid1._host_path("/run/pywsl/share01/x") == "/run/pywsl/share01/x"  # another folder
    assert vm_pid1._host_path("/usr/lib/python3") == "/usr/lib/python3"  # the same on both sides


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace of its own needs root")
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) from util-linux")
def test_without_the_channel_port_pid1_fails_with_a_log_line(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pywsl.guest import vm_pid1\n"
        "vm_pid1.PORT_WAIT = 0.1\nvm_pid1.find_port = lambda: None\nsys.exit(vm_pid1.main())\n"
    )
    result = subprocess.run(
        # its own network namespace: the abstract socket name is then its own
        ["unshare", "--net", sys.executable, "-S", "-c", code],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": f"{REPOSITORY}:{PACKAGES}",
            **passed_on(),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "pid 1 failed" in result.stderr
    assert "RuntimeError: the channel port did not appear" in result.stderr
