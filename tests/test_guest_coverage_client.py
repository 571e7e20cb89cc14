"""The interop client measured as the distribution's init is: its launcher starts the host's
interpreter with ``-I -S`` and the distribution's environment, so init writes the measurement's
settings into the launcher itself (``coverage_startup.client_code``), and the client saves its data
into the suite's folder through the distribution's view of the host, under the host's names."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import coverage
import pytest
from coverage_report import combine_folder

from pywsl.guest import interop_client

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a distribution's root needs mounts"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) from util-linux"),
]

REPOSITORY = Path(__file__).resolve().parents[1]
SITE_PACKAGES = Path(coverage.__file__).resolve().parents[1]

# As init after its change of root: a new root whose host tree is at /hostfs/host (``[automount]
# root``) and read-only at the interop view; the host's /usr for the launcher's /bin/sh.
DISTRIBUTION = """\
import os, subprocess, sys
from pywsl import coverage_startup
coverage_startup.start()
from pywsl.guest import interop_init, interop_paths
runtime = interop_init.detect_runtime()
root = sys.argv[1]
view = root + interop_paths.HOST_VIEW
setup = f'''
mount -t tmpfs tmpfs {root}
mkdir -p {root}/usr {root}/tmp {root}/hostfs/host {view}
for link in bin sbin lib lib64; do ln -s usr/$link {root}/$link; done
mount --rbind /usr {root}/usr && mount -o remount,bind,ro {root}/usr
mount --rbind / {root}/hostfs/host
mount --rbind / {view} && mount -o remount,bind,ro {view}
'''
subprocess.run(["sh", "-ec", setup], check=True)
os.chroot(root)
os.chdir("/")
print(repr(coverage_startup.client_code(interop_paths.HOST_VIEW, None)))
script = interop_init.python_launcher_script(runtime, "/hostfs/host", None)
print("follow" in script)
with open("/tmp/launch-python", "w") as handle:
    handle.write(script)
client = subprocess.run(
    ["/bin/sh", "/tmp/launch-python", "/usr/bin/wslpath", "-w", "/hostfs/host/srv/x"],
    env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60,
)
print(client.returncode, repr(client.stdout), repr(client.stderr))
sys.stdout.flush()
os._exit(0)
"""


def _run_distribution(tmp_path: Path, measured: bool) -> list[str]:
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "coverage.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [tool.coverage.run]
            data_file = "{data}/.coverage"
            parallel = true
            include = ["{REPOSITORY}/pywsl/*"]
            """
        )
    )
    (tmp_path / "root").mkdir()
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(SITE_PACKAGES)]),
        "PYWSL_INTEROP_NATIVE": "0",
    }
    if measured:
        environment["COVERAGE_PROCESS_START"] = str(config)
    result = subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private"),
            *(sys.executable, "-S", "-c", DISTRIBUTION, str(tmp_path / "root")),
        ],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _main_body_lines() -> set[int]:
    """The lines of ``interop_client.main``'s body: only the client runs them, never init."""
    lines, first = inspect.getsourcelines(interop_client.main)
    return set(range(first + 1, first + len(lines)))


def test_the_client_saves_what_it_ran_under_the_hosts_names(tmp_path: Path) -> None:
    lines = _run_distribution(tmp_path, measured=True)
    # Without the mount point and with a read-only view, the data folder is out of reach.
    assert lines == ["''", "True", "0 '/srv/x\\n' ''"]
    combined, unreadable = combine_folder(tmp_path / "data", False)
    data = combined.get_data()
    measured = set(data.measured_files())
    assert unreadable == 0
    assert all(name.startswith(f"{REPOSITORY}/pywsl/") for name in measured), measured
    client = str(REPOSITORY / "pywsl/guest/interop_client.py")
    assert set(data.lines(client) or ()) & _main_body_lines()
    assert data.lines(str(REPOSITORY / "pywsl/guest/interop_paths.py"))


def test_an_unmeasured_init_writes_a_launcher_without_measurement(tmp_path: Path) -> None:
    assert _run_distribution(tmp_path, measured=False) == ["''", "False", "0 '/srv/x\\n' ''"]
    assert list((tmp_path / "data").iterdir()) == []
