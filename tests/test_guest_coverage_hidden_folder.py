"""A measured ``-S`` process whose data folder a mount hides, as mini_init's tmpfs on ``/tmp`` hides
the suite's folder from pid 1 of a namespaces VM, after its forked parent closed every descriptor
it did not know: what it measured still comes back, through the folder's descriptor opened when it
started, which survives ``os.closerange``; and a process killed while it writes such data keeps
what it wrote the time before."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import coverage
import pytest
from coverage_report import combine_folder

from pywsl import coverage_startup

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) from util-linux"),
]

REPOSITORY = Path(__file__).resolve().parents[1]
SITE_PACKAGES = Path(coverage.__file__).resolve().parents[1]

PROBE = """\
def before_hiding():
    return 1


def after_hiding():
    return 2
"""

SCRIPT = """\
import os, subprocess, sys
from pywsl import coverage_startup
coverage_startup.start()
import probe
probe.before_hiding()
if os.fork() == 0:
    os.closerange(3, 1 << 20)  # what the guest's children do (forking.close_other_fds)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", sys.argv[1]], check=True)
    assert not os.path.exists(sys.argv[2])
    probe.after_hiding()
    os._exit(0)
_pid, status = os.waitpid(-1, 0)
os._exit(os.waitstatus_to_exitcode(status))
"""


def _covered(tmp_path: Path) -> set[int]:
    combined, unreadable = combine_folder(tmp_path / "hidden" / "data", False)
    assert unreadable == 0
    return set(combined.get_data().lines(str(tmp_path / "probe.py")) or ())


def test_a_process_whose_folder_a_mount_hid_keeps_what_it_measured(tmp_path: Path) -> None:
    data = tmp_path / "hidden" / "data"
    data.mkdir(parents=True)
    (tmp_path / "probe.py").write_text(PROBE)
    config = tmp_path / "coverage.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [tool.coverage.run]
            data_file = "{data}/.coverage"
            parallel = true
            include = ["{tmp_path}/probe.py"]
            """
        )
    )
    result = subprocess.run(
        [
            *("unshare", "--mount", "--propagation", "private"),
            *(sys.executable, "-S", "-c", SCRIPT, str(tmp_path / "hidden"), str(data)),
        ],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(SITE_PACKAGES), str(tmp_path)]),
            "COVERAGE_PROCESS_START": str(config),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    dumps = [path.name for path in data.iterdir() if "-dump." in path.name]
    # Two each: the child's and, as the mount hides the folder from its parent too, the parent's.
    assert len(dumps) == 4
    assert _covered(tmp_path) == {1, 2, 5, 6}  # the module and both functions


def test_a_process_killed_while_it_dumps_keeps_its_previous_dump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dumps go into two files in turn: the one being written when the process is killed is
    left out, the other still holds what the process measured up to its save before."""
    monkeypatch.delenv("COVERAGE_FILE", raising=False)  # the suite's own data file, when it measures
    config = tmp_path / "coverage.toml"
    config.write_text(f'[tool.coverage.run]\ndata_file = "{tmp_path}/data/.coverage"\nparallel = true\n')
    (tmp_path / "data").mkdir()
    made = coverage_startup.Measurement(coverage, str(config))
    made.running = True
    try:
        made.before_root_change()
        made.data_file = str(tmp_path / "gone" / ".coverage")  # the folder is out of reach now
        made.measured.get_data().add_lines({"/src/c.py": {1}})
        made.save()
        made.measured.get_data().add_lines({"/src/c.py": {2}})
        made.save()
        made.measured.get_data().add_lines({"/src/c.py": {3}})
        made.save()  # into the first file again: killed while it writes, the file is cut short
        first = sorted((tmp_path / "data").glob(".coverage-dump.*"))[0]
        first.write_bytes(first.read_bytes()[:20])
        combined, unreadable = combine_folder(tmp_path / "data", False)
        assert unreadable == 1
        assert combined.get_data().lines("/src/c.py") == [1, 2]
    finally:
        made._close_dump()
