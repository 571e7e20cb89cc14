"""The suite's line coverage, per package, printed at the end of every run.

Coverage.py measures the pytest process and, through ``[tool.coverage.run]`` in pyproject.toml
(``parallel``, ``patch = subprocess, _exit``), every process the tests start: the CLI, the
service, forked children (which carry their parent's measurement on and save it when they leave,
``os._exit`` included), and the utility VM, whose ``-S`` interpreter starts coverage itself
(``pywsl.coverage_startup``; a ``qemu`` VM is asked on its kernel command line), the interop
client inside distributions included (its launcher, written by a measured init, starts it). Each process
writes its own data file into this run's data folder (below the run's base folder), which the VM's
users can write (mode 1777); the files are combined when the run ends and the report is printed.
A test that starts a process with an environment of its own passes :func:`passed_on` in it.

``--no-coverage`` runs without measuring; ``--coverage-data=FILE`` keeps the combined data (for
``coverage report -m`` or ``coverage html``). Nothing is measured when coverage.py is missing or
already measuring this process (``coverage run``, pytest-cov).
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from run_folders import run_folder

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE = REPOSITORY / "pywsl"
CONFIG = REPOSITORY / "pyproject.toml"
TARGET = 85.0  # percent of lines, for every package
_STATE_KEY = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("coverage", "line coverage of pywsl, every process included")
    group.addoption("--no-coverage", action="store_true", help="do not measure line coverage")
    group.addoption(
        "--coverage-data", metavar="FILE", default=None, help="also keep the combined coverage data in FILE"
    )


def passed_on() -> dict[str, str]:
    """The variables that ask a new process to be measured (none when this run measures nothing):
    for the environment of a process a test starts with an environment of its own."""
    from pywsl.coverage_startup import REQUEST_VARIABLES  # not at import: before coverage starts

    return {name: os.environ[name] for name in REQUEST_VARIABLES if os.environ.get(name)}


def package_of(path: Path) -> str:
    """The report's row for a source file: ``pywsl/api/<sub-package>``, else its top package."""
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1:
        return "pywsl"
    if parts[0] == "api" and len(parts) > 2:
        return f"pywsl/api/{parts[1]}"
    return f"pywsl/{parts[0]}"


def pytest_configure(config: pytest.Config) -> None:
    if config.option.no_coverage or hasattr(config, "workerinput"):
        return
    try:
        import coverage
    except ImportError:
        return
    if coverage.Coverage.current() is not None:
        return
    folder = run_folder("coverage-")
    folder.chmod(0o1777)  # the VM's root and users write their data files here too
    data_file = folder / ".coverage"
    os.environ["COVERAGE_FILE"] = str(data_file)
    os.environ["COVERAGE_PROCESS_START"] = str(CONFIG)
    measured = coverage.Coverage(config_file=str(CONFIG), data_file=str(data_file))
    measured.start()
    config.stash[_STATE_KEY] = {"coverage": measured, "folder": folder}


def combine_folder(folder: Path, config_file: str | bool) -> tuple[Any, int]:
    """Combine every process's data in ``folder`` into ``folder/.coverage``: the combined
    ``Coverage`` and how many files could not be read (processes killed while they saved)."""
    import coverage

    # Combining reads the files named like its own data file (``.coverage.<host>.<pid>.<random>``).
    combined = coverage.Coverage(config_file=config_file, data_file=str(folder / ".coverage"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        combined.combine([str(folder)], keep=False)
    unreadable = sum(
        any(words in str(item.message) for words in ("isn't a coverage data file", "Couldn't use data file"))
        for item in caught
    )
    combined.save()
    # Serialized data of guest processes whose root showed no host folder, or whose folder a mount
    # hid (pywsl.coverage_startup): two files each, written in turn.
    for dump in sorted(folder.glob(".coverage-dump.*")):
        payload = dump.read_bytes()
        if not payload:  # the process saved into the folder after all
            continue
        loaded = coverage.CoverageData(no_disk=True)
        try:
            loaded.loads(payload)
        except Exception:
            unreadable += 1
            continue
        combined.get_data().update(loaded)
    return combined, unreadable


def _combined(state: dict[str, Any], keep: str | None) -> Any:
    measured = state["coverage"]
    measured.stop()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no data collected" when no test ran pywsl in this process
        measured.save()
    folder: Path = state["folder"]
    combined, state["unreadable"] = combine_folder(folder, str(CONFIG))
    if keep:
        shutil.copyfile(folder / ".coverage", keep)
    return combined


def package_figures(combined: Any) -> dict[str, tuple[int, int]]:
    """Per package: (statements, missed), over every source file (never-imported ones too)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for source in sorted(PACKAGE.rglob("*.py")):
        _name, statements, _excluded, missing, _text = combined.analysis2(str(source))
        row = totals[package_of(source)]
        row[0] += len(statements)
        row[1] += len(missing)
    return {name: (row[0], row[1]) for name, row in sorted(totals.items())}


def format_report(figures: dict[str, tuple[int, int]]) -> list[str]:
    lines = [f"{'package':<22} {'lines':>6} {'missed':>6} {'cover':>6}"]
    all_statements = all_missed = 0
    for name, (statements, missed) in figures.items():
        percent = 100.0 * (statements - missed) / statements if statements else 100.0
        flag = "" if percent >= TARGET else f"  below {TARGET:.0f}%"
        lines.append(f"{name:<22} {statements:>6} {missed:>6} {percent:>5.1f}%{flag}")
        all_statements += statements
        all_missed += missed
    total = 100.0 * (all_statements - all_missed) / all_statements if all_statements else 100.0
    lines.append(f"{'total':<22} {all_statements:>6} {all_missed:>6} {total:>5.1f}%")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    combined = _combined(state, config.option.coverage_data)
    terminalreporter.section("line coverage per package (every process the tests started)")
    for line in format_report(package_figures(combined)):
        terminalreporter.write_line(line)
    if state["unreadable"]:
        terminalreporter.write_line(
            f"({state['unreadable']} data files of processes killed while they saved were left out)"
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    shutil.rmtree(state["folder"], ignore_errors=True)
