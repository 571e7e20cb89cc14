"""The coverage start-up of pywsl's ``-S`` processes (the guest's, the qemu monitor's): measured
when asked, forks and ``os._exit`` included, data saved before each fork (the VM ends with SIGKILL)
and through the host's tree after a change of root; a qemu VM asked on its kernel command line."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import coverage
import pytest
from coverage_report import combine_folder

from pywsl import coverage_startup

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


@pytest.mark.parametrize(
    "execute",
    [
        'os.execve("/bin/sh", ["sh", "-c", "exit 5"], {})',
        'os.execv("/bin/sh", ["sh", "-c", "exit 5"])',  # the qemu monitor's file servers
    ],
)
def test_a_child_that_executes_a_program_keeps_what_it_did_before(tmp_path: Path, execute: str) -> None:
    result = _measured_run(
        tmp_path,
        f"""\
        import probe
        child = os.fork()
        if child == 0:
            probe.in_child()
            {execute}
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
    # Saved before the change of root into the folder, after it only through the files kept open.
    assert sorted(path.name.split(".")[1] for path in (tmp_path / "data").iterdir()) == [
        "coverage",
        "coverage-dump",
        "coverage-dump",
    ]
    assert _covered_functions(tmp_path) == {"at_normal_exit"}


def _config_with_data_file(tmp_path: Path) -> Path:
    config = tmp_path / "coverage.toml"
    config.write_text(f'[tool.coverage.run]\ndata_file = "{tmp_path}/data/.coverage"\nparallel = true\n')
    return config


WORDS_SCRIPT = """\
from pathlib import Path

from pywsl.vm.backends.qemu_command import QemuPlan, _command_line

for host_files in (True, False):
    plan = QemuPlan(
        qemu="qemu-system-x86_64", kernel=Path("kernel"), initramfs=Path("initramfs"),
        python="/usr/bin/python3", shares=(), console_to_log=True, memory_bytes=None,
        processors=None, kvm=True, vm_idle_timeout_ms=1000, host_files=host_files,
    )
    print(" ".join(word for word in _command_line(plan).split() if "_COVERAGE" in word))
"""


def test_a_qemu_vm_is_asked_on_its_kernel_command_line_as_this_process_is_measured(tmp_path: Path) -> None:
    """The process that builds the command line (the CLI, the service) measured as coverage.py
    starts it in a new interpreter, its data saved as usual."""
    config = tmp_path / "coverage.toml"
    config.write_text(
        f'[tool.coverage.run]\ndata_file = "{tmp_path}/data/.coverage"\nparallel = true\n'
        f'include = ["{REPOSITORY}/pywsl/vm/backends/qemu_command.py"]\n'
    )
    (tmp_path / "data").mkdir()
    environment = {"PYTHONPATH": str(REPOSITORY), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    run = functools.partial(
        subprocess.run,
        [sys.executable, "-c", WORDS_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    measured = run(env={**environment, "COVERAGE_PROCESS_START": str(config)})
    with_host_files, without = measured.stdout.split("\n")[:2]
    assert set(with_host_files.split()) == {
        f"PYWSL_COVERAGE={config}",
        f"PYWSL_COVERAGE_FILE={tmp_path}/data/.coverage",
        f"PYWSL_COVERAGE_SOURCE={REPOSITORY}/pywsl",
    }
    assert without == ""  # without the host's files the guest cannot reach the data folder
    combined, unreadable = combine_folder(tmp_path / "data", False)
    assert unreadable == 0 and combined.get_data().lines(f"{REPOSITORY}/pywsl/vm/backends/qemu_command.py")
    assert run(env=environment).stdout == "\n\n"  # not measured: not asked


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


# -- the measurement's own bookkeeping, in this process (never started: nothing is traced) --------


@pytest.fixture
def measurement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[coverage_startup.Measurement]:
    monkeypatch.delenv("COVERAGE_FILE", raising=False)  # the suite's own data file, when it measures
    config = tmp_path / "coverage.toml"
    config.write_text(f'[tool.coverage.run]\ndata_file = "{tmp_path}/data/.coverage"\nparallel = true\n')
    (tmp_path / "data").mkdir()
    made = coverage_startup.Measurement(coverage, str(config))
    made.running = True
    yield made
    made._close_dump()


def _recorded(measurement: coverage_startup.Measurement, path: str, lines: set[int]) -> None:
    """Lines as if traced (the measurement is not started in this process)."""
    measurement.measured.get_data().add_lines({path: lines})


def test_each_save_replaces_the_processs_file_and_leaves_no_partial_one(
    measurement: coverage_startup.Measurement, tmp_path: Path
) -> None:
    _recorded(measurement, "/src/a.py", {1})
    measurement.save()
    (first,) = (tmp_path / "data").iterdir()
    assert first.name.startswith(".coverage.") and ".H" not in first.name  # no hash: replaced in place
    _recorded(measurement, "/src/a.py", {2})
    measurement.save()
    assert list((tmp_path / "data").iterdir()) == [first]
    combined, unreadable = combine_folder(tmp_path / "data", False)
    assert (unreadable, combined.get_data().lines("/src/a.py")) == (0, [1, 2])


def test_a_vms_files_are_saved_under_the_hosts_names(tmp_path: Path) -> None:
    config = tmp_path / "coverage.toml"
    config.write_text("[tool.coverage.run]\nparallel = true\n")
    (tmp_path / "data").mkdir()
    path_map = coverage_startup.PathMap("/run/pywsl/share0/pywsl", "/home/user/src/pywsl")
    made = coverage_startup.Measurement(coverage, str(config), f"{tmp_path}/data/.coverage", path_map)
    assert made.measured.config.run_include == ["/run/pywsl/share0/pywsl/*"]
    _recorded(made, "/run/pywsl/share0/pywsl/wire/codec.py", {3})
    _recorded(made, "/run/pywsl/share0/pywsl-other/x.py", {4})  # not in the folder: kept as it is
    made.save()
    data = combine_folder(tmp_path / "data", False)[0].get_data()
    assert sorted(data.measured_files()) == [
        "/home/user/src/pywsl/wire/codec.py",
        "/run/pywsl/share0/pywsl-other/x.py",
    ]
    assert "/home/user/src/pywsl/wire/codec.py" in made.measured_data().measured_files()


def test_without_the_folder_the_data_goes_into_the_file_opened_before_the_change_of_root(
    measurement: coverage_startup.Measurement, tmp_path: Path
) -> None:
    measurement.before_root_change()
    dump, other = sorted((tmp_path / "data").glob(".coverage-dump.*"))  # written in turn
    measurement.data_file = str(tmp_path / "gone" / ".coverage")  # the folder is out of reach now
    _recorded(measurement, "/src/b.py", {5, 6})
    measurement.save()
    loaded = coverage.CoverageData(no_disk=True)
    loaded.loads(dump.read_bytes())
    assert loaded.lines("/src/b.py") == [5, 6]
    # A forked child does not write into its parent's file.
    measurement.dump_owner = -1
    _recorded(measurement, "/src/b.py", {7})
    measurement.save()
    again = coverage.CoverageData(no_disk=True)
    again.loads(dump.read_bytes())
    assert again.lines("/src/b.py") == [5, 6] and other.read_bytes() == b""


def test_a_waiting_selector_saves_at_most_every_interval(
    measurement: coverage_startup.Measurement, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves: list[float] = []
    monkeypatch.setattr(measurement, "save", lambda: saves.append(measurement.last_saved))
    waits: list[float | None] = []

    def select(timeout: float | None) -> list[Any]:
        waits.append(timeout)
        return []

    assert measurement.waiting(select, 0) == [] and (saves, waits) == ([], [0])  # a poll: no save
    measurement.waiting(select, None)
    assert (len(saves), waits[-1]) == (1, None)  # never saved: saves, then waits as asked
    measurement.last_saved = time.monotonic()  # just saved
    measurement.waiting(select, 10.0)
    # It waits until a save is due, saves, then waits for the rest of the time.
    first, rest = waits[-2:]
    assert len(saves) == 2 and first is not None and 0 < first <= coverage_startup.SAVE_INTERVAL
    assert rest == pytest.approx(10.0 - first)
    measurement.last_saved = time.monotonic()
    measurement.waiting(select, 0.01)  # shorter than the interval: no save
    assert (len(saves), waits[-1]) == (2, 0.01)
    ready = [("key", 1)]
    measurement.last_saved = time.monotonic()
    assert measurement.waiting(lambda timeout: ready, None) == ready and len(saves) == 2


def test_forks_execs_and_the_exit_save_when_due(
    measurement: coverage_startup.Measurement, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves: list[str] = []
    monkeypatch.setattr(measurement, "save", lambda: saves.append("save"))
    measurement.before_fork()
    measurement.last_saved = time.monotonic()
    measurement.before_fork()  # saved a moment ago
    measurement.before_exec()
    assert len(saves) == 1
    measurement.suffix = ".host.pid1.Xabcx"
    measurement.after_fork_in_child()  # the child's data is its own, saved under its own name
    assert (measurement.last_saved, measurement.suffix) == (0.0, "")
    measurement.before_exec()
    measurement.at_exit()
    measurement.at_exit()  # once only
    measurement.before_fork()  # stopped: nothing more
    assert len(saves) == 3 and not measurement.running


def test_run_before_calls_the_hook_first_and_passes_everything_on() -> None:
    calls: list[object] = []

    def pivot_root(new: str, old: str, *, flag: int = 0) -> int:
        calls.append((new, old, flag))
        return 7

    owner = types.SimpleNamespace(pivot_root=pivot_root)
    coverage_startup.run_before(owner, "pivot_root", lambda: calls.append("hook"))
    assert owner.pivot_root("/new", "/new/old", flag=1) == 7
    assert calls == ["hook", ("/new", "/new/old", 1)]


def test_a_host_path_is_reached_as_it_is_or_not_at_all(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("")
    assert coverage_startup.reachable_folder(str(tmp_path)) == str(tmp_path)
    assert coverage_startup.reachable_file(str(tmp_path / "config.toml")) == str(tmp_path / "config.toml")
    assert coverage_startup.reachable_folder(str(tmp_path / "missing")) is None
    assert coverage_startup.reachable_file(str(tmp_path / "missing.toml")) is None
    assert coverage_startup.reachable_file(str(tmp_path)) is None  # a folder is no file


def test_the_settings_come_from_the_variables_or_from_a_vms_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "coverage.toml"
    config.write_text("")
    for name in (*coverage_startup.REQUEST_VARIABLES, *coverage_startup.VM_WORDS):
        monkeypatch.delenv(name, raising=False)
    assert not coverage_startup.requested()
    monkeypatch.setenv("COVERAGE_PROCESS_START", str(config))
    assert coverage_startup._settings() == (str(config), None, None)
    monkeypatch.delenv("COVERAGE_PROCESS_START")
    monkeypatch.setenv("PYWSL_COVERAGE", str(config))
    monkeypatch.setenv("PYWSL_COVERAGE_FILE", f"{tmp_path}/data/.coverage")
    monkeypatch.setenv("PYWSL_COVERAGE_SOURCE", "/home/user/src/pywsl")
    assert coverage_startup.requested()
    settings = coverage_startup._settings()
    assert settings is not None and settings[:2] == (str(config), f"{tmp_path}/data/.coverage")
    path_map = settings[2]
    assert path_map is not None and path_map(f"{coverage_startup.PACKAGE_FOLDER}/guest/init.py") == (
        "/home/user/src/pywsl/guest/init.py"
    )
    # A word missing or unusable: not measured.
    monkeypatch.setenv("PYWSL_COVERAGE_FILE", "relative/.coverage")
    assert coverage_startup._settings() is None
    monkeypatch.setenv("PYWSL_COVERAGE_FILE", f"{tmp_path}/data/.coverage")
    monkeypatch.setenv("PYWSL_COVERAGE", str(tmp_path / "missing.toml"))
    assert coverage_startup._settings() is None
