"""benchmarks/run's systemd metrics: their selection and the cached Debian + systemd archive."""

from __future__ import annotations

import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_main  # noqa: E402
import bench_metrics  # noqa: E402
import bench_rootfs  # noqa: E402


def test_quick_runs_leave_the_systemd_metrics_out_unless_named() -> None:
    quick = bench_main.select_metrics(None, quick=True)
    assert "systemd-cold" not in quick and "systemd-warm" not in quick
    assert set(quick) | set(bench_main.SYSTEMD_METRICS) == set(bench_metrics.METRICS)
    assert bench_main.select_metrics("systemd-cold", quick=True) == ["systemd-cold"]
    assert bench_main.select_metrics(None)[-2:] == ["systemd-warm", "systemd-cold"]
    assert set(bench_main.SYSTEMD_METRICS) <= set(bench_metrics.DESCRIPTIONS)


def test_the_systemd_archive_is_cached_beside_the_plain_one(tmp_path: Path) -> None:
    logged: list[str] = []
    plain = tmp_path / "debian-bookworm-minbase.tar.gz"
    systemd = tmp_path / "debian-bookworm-minbase-systemd.tar.gz"
    plain.write_bytes(b"plain")
    systemd.write_bytes(b"systemd")
    assert bench_rootfs.debian_archive(tmp_path, "bookworm", logged.append) == plain
    assert bench_rootfs.debian_archive(tmp_path, "bookworm", logged.append, systemd=True) == systemd
    assert logged == []  # both came from the cache, nothing was built
    assert bench_rootfs.SYSTEMD_PACKAGES == ("systemd", "systemd-sysv", "dbus")
