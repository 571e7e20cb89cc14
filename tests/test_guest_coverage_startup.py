"""The coverage start-up of pywsl's ``-S`` processes (the guest's, the qemu monitor's): measured
when asked, forks and ``os._exit`` included, data saved before each fork (the VM ends with SIGKILL)
and through the host's tree after a change of root; a qemu VM asked on its kernel command line."""

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

from pywsl.vm.backends.qemu_command import QemuPlan, _command_line

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
    prologue = "import os, signal, sys\nfrom pywsl import coverage_startup\ncoverage_startup.start()\n"
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
        "import os\nreal = os._exit\nfrom pywsl import coverage_startup\ncoverage_startup.start()\n"
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


def _config_with_data_file(tmp_path: Path) -> Path:
    config = tmp_path / "coverage.toml"
    config.write_text(f'[tool.coverage.run]\ndata_file = "{tmp_path}/data/.coverage"\nparallel = true\n')
    return config


def _plan(*, host_files: bool) -> QemuPlan:
    return QemuPlan(
        qemu="qemu-system-x86_64",
        kernel=Path("kernel"),
        initramfs=Path("initramfs"),
        python="/usr/bin/python3",
        shares=(REPOSITORY,),
        console_to_log=True,
        memory_bytes=None,
        processors=None,
        kvm=True,
        vm_idle_timeout_ms=1000,
        host_files=host_files,
    )


def _vm_words(*, host_files: bool) -> set[str]:
    return {word for word in _command_line(_plan(host_files=host_files)).split() if "_COVERAGE" in word}


def test_a_qemu_vm_is_asked_on_its_kernel_command_line_as_this_process_is_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config_with_data_file(tmp_path)
    expected = {
        f"PYWSL_COVERAGE={config}",
        f"PYWSL_COVERAGE_FILE={tmp_path}/data/.coverage",
        f"PYWSL_COVERAGE_SOURCE={REPOSITORY}/pywsl",
    }
    monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)
    monkeypatch.setenv("COVERAGE_PROCESS_START", str(config))
    assert _vm_words(host_files=True) == expected
    # Without the host's files the guest cannot reach the data folder: it is not asked.
    assert not any(
        word.startswith("PYWSL_COVERAGE") for word in _command_line(_plan(host_files=False)).split()
    )
    # coverage.py's own request (its serialized settings) names the same files.
    monkeypatch.setenv(
        "COVERAGE_PROCESS_CONFIG", coverage.Coverage(config_file=str(config)).config.serialize()
    )
    monkeypatch.delenv("COVERAGE_PROCESS_START")
    assert _vm_words(host_files=True) == expected
    monkeypatch.delenv("COVERAGE_PROCESS_CONFIG")
    assert not any(
        word.startswith("PYWSL_COVERAGE") for word in _command_line(_plan(host_files=True)).split()
    )


# The root of a qemu VM: the host's /usr, pywsl's folder and construct's (here coverage.py's too)
# shared at /run/pywsl/share<n>, the host's tree at /run/pywsl/host.
VM_ROOT = """\
set -e
root="$1"
mount -t tmpfs tmpfs "$root"
mkdir -p "$root/usr" "$root/tmp" "$root/run/pywsl/host" "$root/run/pywsl/share0" "$root/run/pywsl/share1"
for link in bin sbin lib lib64; do ln -s "usr/$link" "$root/$link"; done
mount --rbind /usr "$root/usr"
mount --rbind / "$root/run/pywsl/host"
mount --bind "$2" "$root/run/pywsl/share0"
mount --bind "$3" "$root/run/pywsl/share1"
shift 3
exec chroot "$root" "$@"
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) from util-linux")
def test_a_qemu_vms_pid1_measures_pywsls_shared_files_under_the_hosts_names(tmp_path: Path) -> None:
    config = _config_with_data_file(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "vm-root").mkdir()
    script = (
        "import os, sys\nimport pywsl.guest\nimport construct\nimport pywsl.wire.errors\n"
        "print(pywsl.wire.errors.__file__, flush=True)\nos._exit(0)\n"
    )
    result = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            VM_ROOT,
            "sh",
            str(tmp_path / "vm-root"),
            str(REPOSITORY),
            str(SITE_PACKAGES),
            os.path.realpath(sys.executable),
            "-S",
            "-c",
            script,
        ],
        env={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": "/run/pywsl/share0:/run/pywsl/share1",
            # The kernel command line's words; no COVERAGE_PROCESS_* in a qemu VM.
            "PYWSL_COVERAGE": str(config),
            "PYWSL_COVERAGE_FILE": f"{tmp_path}/data/.coverage",
            "PYWSL_COVERAGE_SOURCE": f"{REPOSITORY}/pywsl",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "/run/pywsl/share0/pywsl/wire/errors.py\n"  # the guest's own name
    combined, unreadable = combine_folder(tmp_path / "data", False)
    measured = set(combined.get_data().measured_files())
    assert unreadable == 0 and f"{REPOSITORY}/pywsl/wire/errors.py" in measured
    # pywsl's files only (not construct's, which the configuration's patterns would also match),
    # and every one under its host name.
    assert all(name.startswith(f"{REPOSITORY}/pywsl/") for name in measured), measured
    assert combined.get_data().lines(f"{REPOSITORY}/pywsl/wire/errors.py")


def test_a_vm_whose_configuration_cannot_be_reached_is_not_measured(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            "import os\nreal = os._exit\nimport pywsl.guest\nprint(os._exit is real)\n",
        ],
        env={
            "PYTHONPATH": os.pathsep.join([str(REPOSITORY), str(SITE_PACKAGES)]),
            "PYWSL_COVERAGE": str(tmp_path / "missing.toml"),
            "PYWSL_COVERAGE_FILE": f"{tmp_path}/data/.coverage",
            "PYWSL_COVERAGE_SOURCE": f"{REPOSITORY}/pywsl",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert (result.stdout, result.stderr) == ("True\n", "")
    assert list((tmp_path / "data").iterdir()) == []
