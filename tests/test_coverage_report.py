"""The suite's coverage report: rows per package, and combining what every process saved."""

from __future__ import annotations

from pathlib import Path

import coverage
from coverage_report import PACKAGE, combine_folder, format_report, package_of


def test_rows_are_the_api_sub_packages_and_the_top_packages() -> None:
    assert package_of(PACKAGE / "__init__.py") == "pywsl"
    assert package_of(PACKAGE / "api" / "errors.py") == "pywsl/api"
    assert package_of(PACKAGE / "api" / "session" / "registry.py") == "pywsl/api/session"
    assert package_of(PACKAGE / "vm" / "backends" / "namespaces.py") == "pywsl/vm"
    assert package_of(PACKAGE / "guest" / "relay.py") == "pywsl/guest"


def test_the_report_marks_packages_below_the_target() -> None:
    lines = format_report({"pywsl/cli": (200, 20), "pywsl/guest": (100, 40)})
    assert lines[1].split() == ["pywsl/cli", "200", "20", "90.0%"]
    assert lines[2].split() == ["pywsl/guest", "100", "40", "60.0%", "below", "85%"]
    assert lines[3].split() == ["total", "300", "60", "80.0%"]


def _saved(folder: Path, name: str, lines: dict[str, set[int]]) -> coverage.CoverageData:
    data = coverage.CoverageData(basename=str(folder / name))
    data.add_lines({path: sorted(numbers) for path, numbers in lines.items()})
    data.write()
    return data


def test_combining_reads_data_files_and_dumps_and_counts_what_cannot_be_read(tmp_path: Path) -> None:
    source = str(PACKAGE / "guest" / "forking.py")
    _saved(tmp_path, ".coverage.host.pid1.Xax", {source: {1, 2}})
    _saved(tmp_path, ".coverage.host.pid2.Xbx", {source: {3}})
    (tmp_path / ".coverage.host.pid3.Xcx").write_bytes(b"killed while it wrote")
    dumped = coverage.CoverageData(no_disk=True)
    dumped.add_lines({source: [4]})
    (tmp_path / ".coverage-dump.7.abc").write_bytes(dumped.dumps())
    (tmp_path / ".coverage-dump.8.def").write_bytes(b"")  # opened, never needed
    (tmp_path / ".coverage-dump.9.123").write_bytes(b"\x00broken")
    combined, unreadable = combine_folder(tmp_path, False)
    assert unreadable == 2
    assert sorted(combined.get_data().lines(source) or []) == [1, 2, 3, 4]
