"""``benchmarks/run``: measure pywsl against its performance goals and print one table.

The run imports a test distribution (Debian minbase, or busybox with ``--quick``) into a private
registry with a private VM, measures the selected metrics next to their baselines, cleans
everything up and prints the table. Exit status: 0 when every measured goal is met, 1 when one is
missed, 2 when a metric could not be measured or the run could not start.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

from bench_env import BenchEnvironment, Launcher, resolve_launcher
from bench_metrics import DESCRIPTIONS, METRICS, Context, Settings
from bench_proc import BenchError
from bench_rootfs import BUSYBOX, build_busybox_archive, debian_archive
from bench_table import Result, render_json, render_table

__all__ = ["main", "parse_arguments", "select_metrics"]

DISTRIBUTION = "pywsl-bench"
SUITE = "bookworm"
SYSTEMD_METRICS = ("systemd-warm", "systemd-cold")  # a second (Debian + systemd) archive: not in --quick


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def select_metrics(text: str | None, quick: bool = False) -> list[str]:
    """The metric keys ``--only`` names, in run order; ValueError for an unknown one.

    Without ``--only``, every metric; a quick run leaves out the systemd ones (they build and import
    a Debian archive with systemd), which ``--only`` can still name.
    """
    if not text:
        return [key for key in METRICS if not (quick and key in SYSTEMD_METRICS)]
    wanted = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in wanted if item not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {', '.join(unknown)} (choose from {', '.join(METRICS)})")
    if not wanted:
        raise ValueError("--only names no metric")
    return [key for key in METRICS if key in wanted]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".cache"
    return root / "pywsl-bench"


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run",
        description="Measure pywsl against its performance goals, each next to a baseline from the same "
        "run, and print one table.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a busybox distribution, smaller streams and fewer repetitions (a smoke run)",
    )
    parser.add_argument("--only", metavar="A,B", help=f"metrics to run: {', '.join(METRICS)}")
    parser.add_argument("--list", action="store_true", help="list the metrics and exit")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="FILE",
        help="also write the results as JSON: to FILE, or as the last line of the output",
    )
    parser.add_argument(
        "--archive",
        type=Path,
        help="the root filesystem archive to import instead of Debian minbase / busybox",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the Debian archives are kept (default $XDG_CACHE_HOME/pywsl-bench)",
    )
    parser.add_argument(
        "--pywsl",
        metavar="SCRIPT",
        help="the pywsl console script to measure (default: the one installed next to "
        "this interpreter, else the first on PATH)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/tmp"),
        help="where the scratch folder (registry, VM runtime, copies) is made (default /tmp)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="N",
        help="repetitions of the timed comparisons (default 21 warm launches, 7 cold, "
        "9 pipe and 5 PTY streams, 5 archives; fewer with --quick)",
    )
    return parser.parse_args(argv)


def settings_for(arguments: argparse.Namespace) -> Settings:
    settings = Settings.quick() if arguments.quick else Settings.full()
    if arguments.repeat is not None:
        if arguments.repeat < 1:
            raise ValueError("--repeat needs a positive number")
        count = arguments.repeat
        settings = replace(
            settings,
            warm_repetitions=count,
            cold_repetitions=count,
            pipe_repetitions=count,
            pty_repetitions=count,
            archive_repetitions=count,
        )
    return settings


def _archive(arguments: argparse.Namespace, scratch: Path) -> tuple[Path, list[str]]:
    """The archive to import and the host `cat` that matches the distribution's."""
    plain_cat = [shutil.which("cat") or "/bin/cat"]
    if arguments.archive is not None:
        if not arguments.archive.is_file():
            raise BenchError(f"{arguments.archive} is not a file")
        return arguments.archive.absolute(), plain_cat
    if arguments.quick:
        return build_busybox_archive(scratch / "busybox-rootfs.tar.gz"), [str(BUSYBOX), "cat"]
    cache = arguments.cache_dir or default_cache_dir()
    return debian_archive(cache, SUITE, _log), plain_cat


def _context(arguments: argparse.Namespace, launcher: Launcher, results: list[Result]) -> dict[str, Any]:
    return {
        "mode": "quick" if arguments.quick else "full",
        "pywsl": launcher.describe(),
        "interpreter": launcher.interpreter,
        "cpus": os.cpu_count(),
        "kernel": os.uname().release,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "passed": all(result.verdict() in ("PASS", "info") for result in results),
    }


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the cleanup, like Ctrl-C


def run(
    arguments: argparse.Namespace, keys: list[str], settings: Settings, launcher: Launcher
) -> tuple[list[Result], str]:
    results: list[Result] = []
    with BenchEnvironment(launcher, base=arguments.workdir, log=_log) as env:
        archive, host_cat = _archive(arguments, env.scratch)
        _log(f"importing {archive.name} as {DISTRIBUTION}")
        env.import_distribution(DISTRIBUTION, archive)
        cache = arguments.cache_dir or default_cache_dir()
        ctx = Context(
            env,
            settings,
            DISTRIBUTION,
            archive,
            host_cat,
            _log,
            systemd_archive=lambda: debian_archive(cache, SUITE, _log, systemd=True),
        )
        for key in keys:
            _log(f"measuring {key}")
            try:
                results.append(METRICS[key](ctx))
            except (BenchError, OSError) as error:
                results.append(Result(key, key, "", error=str(error)))
        _log("cleaning up")
    return results, archive.name


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.list:
        for key in METRICS:
            print(f"{key:12}  {DESCRIPTIONS[key]}")
        return 0
    try:
        keys = select_metrics(arguments.only, arguments.quick)
        settings = settings_for(arguments)
        launcher = resolve_launcher(arguments.pywsl)
    except (ValueError, BenchError) as error:
        print(f"benchmarks/run: {error}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("benchmarks/run: the benchmark runs pywsl's VM in-process and needs root", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    try:
        results, archive_name = run(arguments, keys, settings, launcher)
    except BenchError as error:
        print(f"benchmarks/run: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("benchmarks/run: interrupted (cleaned up)", file=sys.stderr)
        return 130
    context = _context(arguments, launcher, results)
    print(
        f"pywsl benchmark ({context['mode']}): {DISTRIBUTION} from {archive_name}; "
        f"{launcher.describe()} on {launcher.interpreter}; {context['cpus']} CPUs; medians, ratios = "
        "pywsl / baseline of the same run"
    )
    print(render_table(results))
    if arguments.json is not None:
        document = render_json(results, context)
        if arguments.json == "-":
            print(document)
        else:
            Path(arguments.json).write_text(document + "\n")
    verdicts = {result.verdict() for result in results}
    if "ERROR" in verdicts:
        return 2
    return 1 if "MISS" in verdicts else 0
