"""The guest's coverage start-up: a ``-S`` interpreter measured when asked, its forks and its
``os._exit`` included, its data saved before each fork (the VM ends with SIGKILL) and through
the host's tree after a change of root."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import coverage
import pytest
from coverage_report import combine_folder

REPOSITORY = Path(__file__).resolve().parents[1]
SITE_PACKAGES = Path(coverage.__file__).resolve().parents[1]

PROBE = """\
def before_fork():
    return "parent"


def in_child():
    return "child"


def after_fork_in_parent():
    return "lost"


def at_normal_exit():
    return "normal"
"""


def _measured_command(tmp_path: Path, script: str) -> tuple[list[str], dict[str, str]]:
    """``script`` run as the VM runs mini_init (``-S``, told where pywsl and coverage are)."""
    (tmp_path / "probe.py").write_text(PROBE)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
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
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(SITE_PACKAGES), str(tmp_path)]),
        "COVERAGE_PROCESS_START": str(config),
    }
    prologue = "import os, signal, sys\nfrom pywsl.guest import coverage_startup\ncoverage_startup.start()\n"
    return [sys.executable, "-S", "-c", prologue + textwrap.dedent(script)], environment


def _measured_run(
    tmp_path: Path, script: str, *, wrapper: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    command, environment = _measured_command(tmp_path, script)
    return subprocess.run(
        [*wrapper, *command], env=environment, capture_output=True, text=True, timeout=60, check=False
    )


@contextlib.contextmanager
def _measured_process(tmp_path: Path, script: str) -> Iterator[subprocess.Popen[str]]:
    command, environment = _measured_command(tmp_path, script)
    with subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, text=True) as process:
        try:
            yield process
        finally:
            process.kill()


def _covered_functions(tmp_path: Path) -> set[str]:
    combined, unreadable = combine_folder(tmp_path / "data", False)
    assert unreadable == 0
    lines = combined.get_data().lines(str(tmp_path / "probe.py")) or []
    source = PROBE.splitlines()
    # The body line of each function names it: line n+1 returns, line n is "def name():".
    return {
        source[number - 2].split()[1].split("(")[0]
        for number in lines
        if source[number - 1].startswith("    ")
    }


def test_a_process_killed_after_forking_keeps_what_it_did_before_and_its_child_what_it_did(
    tmp_path: Path,
) -> None:
    result = _measured_run(
        tmp_path,
        """\
        import probe
        probe.before_fork()
        child = os.fork()
        if child == 0:
            probe.in_child()
            os._exit(3)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 3
        probe.after_fork_in_parent()
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert result.stderr == ""  # nothing of coverage.py reaches the measured process's stderr
    assert _covered_functions(tmp_path) == {"before_fork", "in_child"}


def test_a_child_that_executes_a_program_keeps_what_it_did_before(tmp_path: Path) -> None:
    result = _measured_run(
        tmp_path,
        """\
        import probe
        child = os.fork()
        if child == 0:
            probe.in_child()
            os.execve("/bin/sh", ["sh", "-c", "exit 5"], {})
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 5
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert _covered_functions(tmp_path) == {"in_child"}


def test_a_process_killed_while_it_waits_in_its_selector_keeps_what_it_did(tmp_path: Path) -> None:
    """mini_init, init and the session leaders wait in a selector until the VM is killed."""
    (tmp_path / "data").mkdir()
    script = """\
        import selectors
        import probe
        probe.before_fork()
        read_end, write_end = os.pipe()
        selector = selectors.DefaultSelector()
        selector.register(read_end, selectors.EVENT_READ)
        print("waiting", flush=True)
        selector.select()
        probe.after_fork_in_parent()
        """
    with _measured_process(tmp_path, script) as process:
        assert process.stdout is not None and process.stdout.readline() == "waiting\n"
        deadline = time.monotonic() + 30
        while not list((tmp_path / "data").glob(".coverage.*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        process.kill()
    assert _covered_functions(tmp_path) == {"before_fork"}


def test_a_normal_exit_saves_everything(tmp_path: Path) -> None:
    result = _measured_run(tmp_path, "import probe\nprobe.at_normal_exit()\nsys.exit(0)\n")
    assert result.returncode == 0, result.stderr
    assert _covered_functions(tmp_path) == {"at_normal_exit"}


def test_nothing_happens_unless_asked(tmp_path: Path) -> None:
    probe = (
        "import os\nreal = os._exit\nfrom pywsl.guest import coverage_startup\ncoverage_startup.start()\n"
        "print(os._exit is real, 'coverage' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import sys\n" + probe],
        env={"PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(SITE_PACKAGES)])},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == ["True", "False"]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) from util-linux")
def test_after_a_change_of_root_the_data_reaches_the_folder_through_the_host_view(tmp_path: Path) -> None:
    """As in a distribution: the root is a new tree whose /mnt/host shows the host's /."""
    new_root = tmp_path / "root"
    (new_root / "mnt/host").mkdir(parents=True)
    result = _measured_run(
        tmp_path,
        f"""\
        import subprocess
        import probe
        subprocess.run(["mount", "--rbind", "/", "{new_root}/mnt/host"], check=True)
        os.chroot("{new_root}")
        os.chdir("/")
        assert not os.path.exists("{tmp_path}")
        probe.at_normal_exit()
        os._exit(0)
        """,
        wrapper=("unshare", "--mount", "--propagation", "private"),
    )
    assert result.returncode == 0, result.stderr
    assert _covered_functions(tmp_path) == {"at_normal_exit"}


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) from util-linux")
def test_after_pivot_root_into_a_tree_without_the_host_the_data_still_comes_back(tmp_path: Path) -> None:
    """As the tar worker: pivot_root into the target tree, where no view of the host exists."""
    new_root = tmp_path / "target"
    new_root.mkdir()
    result = _measured_run(
        tmp_path,
        f"""\
        import subprocess
        import probe
        from pywsl.guest import mounts
        subprocess.run(["mount", "--bind", "{new_root}", "{new_root}"], check=True)
        mounts.pivot_into(os.open("{new_root}", os.O_RDONLY | os.O_DIRECTORY))
        assert os.listdir("/") == []
        probe.at_normal_exit()
        os._exit(0)
        """,
        wrapper=("unshare", "--mount", "--propagation", "private"),
    )
    assert result.returncode == 0, result.stderr
    # Saved before the change of root into the folder, after it only through the file kept open.
    assert sorted(path.name.split(".")[1] for path in (tmp_path / "data").iterdir()) == [
        "coverage",
        "coverage-dump",
    ]
    assert _covered_functions(tmp_path) == {"at_normal_exit"}
