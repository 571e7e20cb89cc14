"""benchmarks/run: its statistics, goals, table, helpers, and a short real run.

The helpers are plain modules next to the script; the last test runs the script itself on its
cheapest metrics (a busybox distribution in a private registry and VM) and checks that the table
and the JSON come out and that the scratch folder is gone afterwards.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from run_folders import run_folder

from pywsl.guest.relay import PASSED_PIPE_ROOM

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_env  # noqa: E402
import bench_main  # noqa: E402
import bench_metrics  # noqa: E402
import bench_proc  # noqa: E402
import bench_rootfs  # noqa: E402
import bench_stats  # noqa: E402
import bench_table  # noqa: E402


def test_median_and_percentile_match_the_statistics_module() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 9.5, 7.25]
    assert bench_stats.median(values) == statistics.median(values)
    assert bench_stats.median(values[:6]) == statistics.median(values[:6])
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for q in (1, 25, 50, 90, 99):
        assert bench_stats.percentile(values, q) == pytest.approx(cuts[q - 1])
    assert bench_stats.percentile(values, 0) == 1.0
    assert bench_stats.percentile(values, 100) == 9.5
    assert bench_stats.percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        bench_stats.median([])
    with pytest.raises(ValueError):
        bench_stats.percentile(values, 101)


def test_ratio_of_a_zero_baseline_is_infinite() -> None:
    assert bench_stats.ratio(3, 2) == 1.5
    assert math.isinf(bench_stats.ratio(1, 0))


def test_interleave_alternates_and_drops_the_warmups() -> None:
    calls: list[str] = []
    counter = iter(range(100))

    def first() -> float:
        calls.append("a")
        return float(next(counter))

    def second() -> float:
        calls.append("b")
        return float(next(counter))

    kept_a, kept_b = bench_stats.interleave(first, second, repetitions=3, warmups=1)
    assert "".join(calls) == "abbaabba"
    assert kept_a.values == [3.0, 4.0, 7.0]
    assert kept_b.values == [2.0, 5.0, 6.0]
    assert kept_a.summary() == {"n": 3, "median": 4.0, "min": 3.0, "max": 7.0}
    with pytest.raises(ValueError):
        bench_stats.interleave(first, second, repetitions=0, warmups=0)


def test_goals_bound_the_ratio_or_the_value() -> None:
    at_most = bench_table.Goal("max", "ratio", 4)
    assert at_most.describe() == "<= 4x"
    assert at_most.met_by(100.0, 4.0) is True
    assert at_most.met_by(1.0, 4.01) is False
    at_least = bench_table.Goal("min", "value", 500, "MiB/s")
    assert at_least.describe() == ">= 500 MiB/s"
    assert at_least.met_by(499.9, 10.0) is False
    assert at_least.met_by(None, 1.0) is None


def test_verdicts_and_the_rendered_table() -> None:
    Result, Goal = bench_table.Result, bench_table.Goal
    results = [
        Result(
            "warm-launch", "warm launch", "s", 0.060, 0.015, "python -c pass", 4.0, Goal("max", "ratio", 4)
        ),
        Result("pipe", "pipe", "MiB/s", 900.0, 1000.0, "cat", 0.9, Goal("min", "ratio", 0.95), note="noted"),
        Result("concurrency", "clients", "s", 1.0, 0.5, "p50", 2.0, Goal("max", "ratio", 5), passed=False),
        Result("memory", "memory", "MB", 12.5),
        Result("import", "import", "", error="it broke"),
    ]
    assert [result.verdict() for result in results] == ["PASS", "MISS", "MISS", "info", "ERROR"]
    table = bench_table.render_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "pywsl", "baseline", "ratio", "goal", "result"]
    assert "60.0 ms" in lines[2] and "15.0 ms (python -c pass)" in lines[2] and "4.00x" in lines[2]
    assert lines[3].rstrip().endswith("MISS") and "900.0 MiB/s" in lines[3]
    assert "12.5 MB" in lines[5]
    assert "  import: it broke" in lines and "  pipe: noted" in lines
    document = json.loads(bench_table.render_json(results, {"mode": "quick"}))
    assert document["context"] == {"mode": "quick"}
    assert [row["result"] for row in document["results"]] == ["PASS", "MISS", "MISS", "info", "ERROR"]
    assert document["results"][0]["ratio"] == 4.0


def test_a_long_error_is_shortened_in_the_table_only() -> None:
    error = (
        "`pywsl` exited with 1: Traceback (most recent call last):\n"
        + "".join(f"  frame {number}\n" for number in range(20))
        + "AttributeError: boom"
    )
    result = bench_table.Result("export", "export", "s", error=error)
    table = bench_table.render_table([result])
    assert "frame 5" not in table
    assert "exited with 1" in table and "AttributeError: boom" in table
    assert json.loads(bench_table.render_json([result], {}))["results"][0]["error"] == error


def test_format_value_units() -> None:
    assert bench_table.format_value(0.0123, "s") == "12.3 ms"
    assert bench_table.format_value(2.5, "s") == "2.50 s"
    assert bench_table.format_value(math.inf, "x") == "inf"
    assert bench_table.format_value(None, "s") == "-"


def test_only_selects_known_metrics_in_run_order() -> None:
    assert bench_main.select_metrics(None) == list(bench_metrics.METRICS)
    assert bench_main.select_metrics("cold-launch, warm-launch") == ["warm-launch", "cold-launch"]
    with pytest.raises(ValueError, match="unknown metric nope"):
        bench_main.select_metrics("warm-launch,nope")


def test_repeat_overrides_the_preset() -> None:
    settings = bench_main.settings_for(bench_main.parse_arguments(["--quick", "--repeat", "2"]))
    assert (
        settings.warm_repetitions,
        settings.cold_repetitions,
        settings.pipe_repetitions,
        settings.pty_repetitions,
        settings.archive_repetitions,
    ) == (2, 2, 2, 2, 2)
    assert settings.pipe_bytes == bench_metrics.Settings.quick().pipe_bytes
    with pytest.raises(ValueError):
        bench_main.settings_for(bench_main.parse_arguments(["--repeat", "0"]))


def test_the_interpreter_comes_from_the_console_script_shebang(tmp_path: Path) -> None:
    interpreter = os.path.realpath(sys.executable)
    script = tmp_path / "pywsl"
    script.write_text(f"#!{interpreter}\nimport sys\n")
    script.chmod(0o755)
    launcher = bench_env.resolve_launcher(str(script))
    assert launcher.command == (str(script),)
    assert launcher.interpreter == interpreter
    shim = tmp_path / "shim"
    shim.write_text('#!/usr/bin/env bash\nexec python3 "$@"\n')
    shim.chmod(0o755)
    assert bench_env.shebang_interpreter(shim) is None
    with pytest.raises(bench_proc.BenchError):
        bench_env.resolve_launcher(str(shim))


def test_mirror_from_apt_sources() -> None:
    deb822 = (
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\n"
    )
    assert bench_rootfs.mirror_from_sources("bookworm", [deb822]) == "http://mirror.example/debian"
    assert bench_rootfs.mirror_from_sources("bookworm-security", [deb822]) == (
        "http://security.example/debian-security"
    )
    one_line = (
        "# deb http://old.example/debian bookworm main\ndeb [arch=amd64] http://one.example/d bookworm main\n"
    )
    assert bench_rootfs.mirror_from_sources("bookworm", [], [one_line]) == "http://one.example/d"
    assert bench_rootfs.mirror_from_sources("trixie", [deb822], [one_line]) is None


@pytest.mark.skipif(not bench_rootfs.BUSYBOX.is_file(), reason="needs a static /bin/busybox")
def test_busybox_archive_is_a_minimal_distribution(tmp_path: Path) -> None:
    archive = bench_rootfs.build_busybox_archive(tmp_path / "rootfs.tar.gz")
    with tarfile.open(archive) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert members["bin/busybox"].isfile() and members["bin/busybox"].mode == 0o755
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["bin/cat"].issym() and members["bin/true"].issym()
    assert {"etc/passwd", "etc/group", "etc/os-release"} <= set(members)
    assert members["tmp"].mode == 0o1777
    assert all(member.uid == 0 and member.gid == 0 for member in members.values())


def test_stream_drivers_pass_every_byte() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    run = bench_proc.pipe_stream(["cat"], env, 3 << 20, chunk_size=1 << 16)
    assert run.bytes_out == 3 << 20 and run.total_seconds >= run.stream_seconds > 0
    with pytest.raises(bench_proc.BenchError, match="exited with 3"):
        bench_proc.pipe_stream(["sh", "-c", "cat >/dev/null; exit 3"], env, 1 << 16)
    terminal = bench_proc.pty_stream(["sh", "-c", "test -t 1 && printf 'x%.0s' $(seq 1000)"], env, 1000)
    assert terminal.bytes_out == 1000
    with pytest.raises(bench_proc.BenchError, match="exited with 5: broken"):
        bench_proc.pty_stream(["sh", "-c", "echo broken; exit 5"], env, 0)
    # The line's end read apart from its text (a terminal writes them apart): the message still
    # shows the text, not just the last read.
    with pytest.raises(bench_proc.BenchError, match="exited with 6: broken"):
        bench_proc.pty_stream(["sh", "-c", "printf broken; sleep 0.2; echo; exit 6"], env, 0)
    # The host's cat in the long pipe's context row gets the room pywsl gives a launch's pipes.
    assert bench_metrics.PASSED_PIPE_ROOM == PASSED_PIPE_ROOM
    # The long pipe, as bash runs it: every byte counted, a failing middle stage fails the run.
    assert bench_proc.pipeline_bytes(["cat"], env, 3 << 20) == 3 << 20
    assert bench_proc.pipeline_seconds(["cat"], env, 3 << 20) > 0
    with pytest.raises(bench_proc.BenchError, match="exited with 3"):
        bench_proc.pipeline_seconds(["sh", "-c", "cat >/dev/null; exit 3"], env, 1 << 16)
    seconds, code, message = bench_proc.timed_run(["sh", "-c", "echo oops >&2; exit 4"], env, check=False)
    assert (code, message) == (4, "oops") and seconds > 0
    assert bench_proc.timed_run(["sleep", "5"], env, check=False, timeout=0.2)[1] == -1


def test_descendants_and_pss_of_this_process() -> None:
    child = subprocess.Popen(["sleep", "5"])
    try:
        assert child.pid in bench_proc.descendants([os.getpid()])
        size = bench_proc.pss_bytes(os.getpid())
        assert size is not None and size > 1 << 20
    finally:
        child.kill()
        child.wait()
    assert bench_proc.pss_bytes(child.pid) is None


def test_unknown_metric_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run"), "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown metric nope" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the benchmark runs pywsl's VM in-process, as root")
@pytest.mark.skipif(not bench_rootfs.BUSYBOX.is_file(), reason="needs a static /bin/busybox")
def test_quick_run_prints_the_table_and_cleans_up() -> None:
    workdir = run_folder("b-")  # short: the VM's socket path is limited
    try:
        result = subprocess.run(
            [
                sys.executable,
                str(BENCHMARKS / "run"),
                "--quick",
                "--only",
                "warm-launch,memory",
                "--repeat",
                "3",
                "--workdir",
                str(workdir),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        left = list(workdir.iterdir())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert result.returncode in (0, 1), result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[:6] == ["metric", "pywsl", "baseline", "ratio", "goal", "result"]
    document = json.loads(lines[-1])
    rows = {row["metric"]: row for row in document["results"]}
    assert set(rows) == {"warm-launch", "memory"}
    assert rows["warm-launch"]["result"] in ("PASS", "MISS")
    assert rows["warm-launch"]["pywsl"] > rows["warm-launch"]["baseline"] > 0
    assert rows["memory"]["pywsl"] > 0 and rows["memory"]["details"]["processes"]
    assert document["context"]["mode"] == "quick"
    assert left == []


@pytest.mark.skipif(os.geteuid() != 0, reason="the benchmark runs pywsl's VM in-process, as root")
@pytest.mark.skipif(not bench_rootfs.BUSYBOX.is_file(), reason="needs a static /bin/busybox")
@pytest.mark.skipif(shutil.which("systemd-nspawn") is None, reason="needs systemd-nspawn (systemd-container)")
def test_the_service_and_nspawn_rows_clean_up_their_user_and_trees() -> None:
    workdir = run_folder("b-")
    workdir.chmod(0o711)  # the benchmark's user reaches the service's socket below it
    users_before = {entry.pw_name for entry in pwd.getpwall()}
    try:
        options = ["--quick", "--only", "nspawn,service", "--repeat", "2", "--workdir", str(workdir)]
        result = subprocess.run(
            [sys.executable, str(BENCHMARKS / "run"), *options, "--json"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        left = list(workdir.iterdir())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    assert result.returncode in (0, 1), result.stderr
    rows = {row["metric"]: row for row in json.loads(result.stdout.splitlines()[-1])["results"]}
    assert rows["nspawn"]["result"] == "info" and rows["nspawn"]["baseline"] > 0
    assert rows["service"]["result"] in ("PASS", "MISS")
    assert rows["service"]["pywsl"] > 0 and rows["service"]["baseline"] > 0
    assert left == []
    assert {entry.pw_name for entry in pwd.getpwall()} == users_before
