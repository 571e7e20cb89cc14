"""The scripts in examples/ run for real: import, run and capture, stream, export."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_images import busybox_archive

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the in-process session runs the VM as root")


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A private home, registry, configuration and VM runtime folder; the VM is shut down at the end."""
    workspace = tmp_path_factory.mktemp("examples")
    runtime = workspace / "run"
    runtime.mkdir(mode=0o700)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workspace / "home"),
        "XDG_DATA_HOME": str(workspace / "data"),
        "XDG_CONFIG_HOME": str(workspace / "config"),
        "PYWSL_RUNTIME_ROOT": str(runtime),
        "LANG": "C.UTF-8",
    }
    yield env
    subprocess.run(
        [sys.executable, "-m", "pywsl.cli.main", "--shutdown", "--force"],
        env=env,
        capture_output=True,
        check=False,
        timeout=60,
    )
    shutil.rmtree(workspace / "data", ignore_errors=True)


def run_example(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
def distro(environment: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    archive = busybox_archive(
        tmp_path_factory.mktemp("example-rootfs") / "rootfs.tar.gz",
        compression="gz",
        prefix="./",
        tar_format=tarfile.GNU_FORMAT,
    )
    result = run_example("import_distribution.py", "Example", str(archive), env=environment)
    assert result.returncode == 0, result.stderr
    name, guid, flavor, version = result.stdout.split()
    assert (name, flavor, version) == ("Example", "busybox", "1.36")
    assert uuid.UUID(guid).version == 4
    return name


def test_import_refuses_a_taken_name(environment: dict[str, str], distro: str, tmp_path: Path) -> None:
    archive = tmp_path / "empty.tar"
    with tarfile.open(archive, "w"):
        pass
    result = run_example("import_distribution.py", distro.lower(), str(archive), env=environment)
    assert result.returncode == 1
    assert "ERROR_ALREADY_EXISTS" in result.stderr


def test_run_and_capture(environment: dict[str, str], distro: str) -> None:
    result = run_example(
        "run_and_capture.py", distro, "/bin/sh", "-c", "echo out; echo err >&2; exit 5", env=environment
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "exit status: 5",
        "stdout (4 bytes): 'out\\n'",
        "stderr (4 bytes): 'err\\n'",
    ]


def test_stream_a_large_output(environment: dict[str, str], distro: str) -> None:
    result = run_example("stream_output.py", distro, "32", env=environment)
    assert result.returncode == 0, result.stderr
    expected = hashlib.sha256(bytes(32 << 20)).hexdigest()
    assert result.stdout.strip() == f"{32 << 20} bytes sha256={expected} exit status 0"


@pytest.mark.parametrize("archive_format", ["tar", "tar.gz", "tar.xz"])
def test_export(environment: dict[str, str], distro: str, tmp_path: Path, archive_format: str) -> None:
    target = tmp_path / f"out.{archive_format}"
    result = run_example("export_distribution.py", distro, str(target), archive_format, env=environment)
    assert result.returncode == 0, result.stderr
    with tarfile.open(target) as archive:
        names = {member.name.removeprefix("./") for member in archive.getmembers()}
    assert {"bin/busybox", "etc/passwd", "etc/os-release"} <= names


def test_export_of_an_unknown_distribution_fails_cleanly(environment: dict[str, str], tmp_path: Path) -> None:
    target = tmp_path / "nothing.tar"
    result = run_example("export_distribution.py", "NoSuchDistro", str(target), env=environment)
    assert result.returncode == 1
    assert "WSL_E_DISTRO_NOT_FOUND" in result.stderr
    assert not target.exists()
