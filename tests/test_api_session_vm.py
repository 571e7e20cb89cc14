"""UserSession end to end with a real utility VM: register, run, export, terminate, unregister, shutdown.

The distribution is a busybox root filesystem built here from the host's static /bin/busybox.
Every test shares one VM (in a private runtime folder) and one registry (in a temporary
XDG_DATA_HOME); the VM is shut down at the end. Between tests the registry holds the module's "Busy"
(the default) and nothing else: a test unregisters what it registers, so any order works.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive, os_release_text

from pywsl.api.errors import WslError
from pywsl.api.session.registry import DistributionState
from pywsl.api.session.user_session import UserSession

FROM_IMAGE = "[oobe]\ndefaultName=FromImage\n"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the utility VM needs root"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="no /bin/busybox to build a distribution from"),
]


@pytest.fixture(scope="module")
def session() -> Iterator[UserSession]:
    folder = Path(tempfile.mkdtemp(prefix="pywsl-vm-"))
    saved = {
        name: os.environ.get(name)
        for name in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "PYWSL_RUNTIME_ROOT", "PYWSL_CONFIG")
    }
    os.environ["XDG_DATA_HOME"] = str(folder / "data")
    os.environ["XDG_CONFIG_HOME"] = str(folder / "config")
    os.environ["PYWSL_RUNTIME_ROOT"] = str(folder / "run")
    os.environ.pop("PYWSL_CONFIG", None)
    (folder / "config" / "pywsl").mkdir(parents=True)
    (folder / "config" / "pywsl" / "wslconfig").write_text(
        "[wsl2]\nvmIdleTimeout=-1\n[general]\ninstanceIdleTimeout=-1\n"
    )
    opened = UserSession()
    try:
        yield opened
    finally:
        try:
            opened.shutdown(force=True)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def distro(session: UserSession) -> str:
    path = Path(session.paths.data_dir).parent / "busybox.tar.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    busybox_archive(path, compression="gz", os_release=os_release_text())
    seen: list[int] = []
    info = session.register_distribution("Busy", path, progress=seen.append)
    assert info.name == "Busy" and info.state is DistributionState.INSTALLED
    assert info.flavor == "busybox" and info.os_version == "1.36"
    assert info.is_default
    assert seen and seen[-1] == path.stat().st_size
    return "Busy"


def run(session: UserSession, distro: str, *command: str, **kwargs: object) -> tuple[int, bytes]:
    process = session.create_lx_process(
        distro,
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        **kwargs,  # type: ignore[arg-type]
    )
    output, _ = process.communicate(timeout=60)
    return process.wait(), output or b""


def test_register_and_list(session: UserSession, distro: str) -> None:
    infos = session.enumerate_distributions()
    assert [info.name for info in infos] == ["Busy"]
    rootfs = infos[0].base_path / "rootfs"
    assert (rootfs / "bin" / "busybox").is_file()
    assert (rootfs / "etc" / "passwd").read_text().startswith("root:")
    assert session.get_default_distribution() == infos[0].id


def test_run_in_shell_and_exec_mode(session: UserSession, distro: str) -> None:
    assert run(session, distro, "echo hello") == (0, b"hello\n")
    assert run(session, distro, "exit 7")[0] == 7
    status, output = run(session, distro, "echo", "a  b", filename="/bin/echo")
    assert (status, output) == (0, b"a  b\n")
    states = {info.name: info.state for info in session.enumerate_distributions()}
    assert states["Busy"] is DistributionState.RUNNING


def test_environment_reaches_the_process(session: UserSession, distro: str) -> None:
    status, output = run(
        session,
        distro,
        "echo $LANG:$GREETING:$SECRET:$EXTRA",
        wslenv_source={"WSLENV": "GREETING", "GREETING": "hi", "SECRET": "no"},
        environment={"EXTRA": "x"},
    )
    assert (status, output) == (0, b"en_US.UTF-8:hi::x\n")


def test_export_round_trip(session: UserSession, distro: str, tmp_path: Path) -> None:
    target = tmp_path / "export.tar.xz"
    session.export_distribution(distro, target, format="tar.xz")
    with tarfile.open(target) as archive:
        names = {name.lstrip("./") for name in archive.getnames()}
    assert {"bin/busybox", "etc/passwd", "etc/os-release"} <= names
    buffer = io.BytesIO()
    session.export_distribution(distro, buffer)
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue())) as archive:
        assert archive.getmember("./bin/busybox").size > 0
    with open(target, "rb") as source:
        copy = session.register_distribution("Copy", source, location=tmp_path / "copy")
    try:
        assert copy.base_path == tmp_path / "copy" and not copy.is_default
        assert run(session, "copy", "cat /etc/passwd")[1].startswith(b"root:")
    finally:
        session.unregister_distribution("Copy")
    assert not (tmp_path / "copy" / "rootfs").exists()
    failed = tmp_path / "nowhere" / "x.tar"
    with pytest.raises(WslError):
        session.export_distribution(distro, failed)
    assert not failed.exists()


def _names(session: UserSession) -> list[str]:
    return [info.name for info in session.enumerate_distributions()]


def _data_entries(session: UserSession) -> set[str]:
    return {entry.name for entry in session.paths.data_dir.iterdir()}


def test_register_name_from_the_image_and_bad_archives(
    session: UserSession, distro: str, tmp_path: Path
) -> None:
    names_before, entries_before = _names(session), _data_entries(session)
    named = session.register_distribution(None, io.BytesIO(busybox_archive(wsl_distribution_conf=FROM_IMAGE)))
    try:
        assert named.name == "FromImage"
        assert _names(session) == [*names_before, "FromImage"]
        with pytest.raises(WslError) as taken:
            session.register_distribution(None, io.BytesIO(busybox_archive(wsl_distribution_conf=FROM_IMAGE)))
        assert taken.value.code == "ERROR_ALREADY_EXISTS"
    finally:
        session.unregister_distribution("fromimage")
    with pytest.raises(WslError) as unnamed:
        session.register_distribution(None, io.BytesIO(busybox_archive()))
    assert unnamed.value.code == "WSL_E_DISTRIBUTION_NAME_NEEDED"
    junk = io.BytesIO()
    with tarfile.open(fileobj=junk, mode="w") as archive:
        info = tarfile.TarInfo("hello.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    with pytest.raises(WslError) as invalid:
        session.register_distribution("Junk", io.BytesIO(junk.getvalue()))
    assert invalid.value.code == "WSL_E_NOT_A_LINUX_DISTRO"
    with pytest.raises(WslError) as broken:
        session.register_distribution("Broken", io.BytesIO(b"this is not an archive at all" * 100))
    assert broken.value.code == "WSL_E_IMPORT_FAILED"
    assert _names(session) == names_before
    assert _data_entries(session) == entries_before, "a refused or removed import left a folder behind"


def _state(session: UserSession, name: str) -> DistributionState:
    [state] = [info.state for info in session.enumerate_distributions() if info.name == name]
    return state


def test_terminate_and_create_instance(session: UserSession, distro: str) -> None:
    run(session, distro, "true")
    session.terminate_distribution(distro)
    assert _state(session, distro) is DistributionState.INSTALLED
    session.terminate_distribution(distro)  # not running: still a success
    session.create_instance(distro)
    assert _state(session, distro) is DistributionState.RUNNING


@pytest.fixture
def mover(session: UserSession, distro: str, tmp_path: Path) -> Iterator[str]:
    """A distribution of the test's own ("Mover", in its tmp_path) to move around; unregistered after."""
    session.register_distribution(
        "Mover", io.BytesIO(busybox_archive(os_release=os_release_text())), location=tmp_path / "mover"
    )
    try:
        yield "Mover"
    finally:
        session.unregister_distribution("Mover")


def _base_path(session: UserSession, name: str) -> Path:
    [path] = [info.base_path for info in session.enumerate_distributions() if info.name == name]
    return path


def test_move_within_and_across_file_systems(session: UserSession, mover: str, tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    elsewhere = Path(tempfile.mkdtemp(prefix="pywsl-move-", dir=shm))
    try:
        assert run(session, mover, "true") == (0, b"")
        session.terminate_distribution(mover)
        session.move_distribution(mover, elsewhere / "busy")
        assert _base_path(session, mover) == elsewhere / "busy"
        assert (elsewhere / "busy" / "rootfs" / "bin" / "busybox").is_file()
        assert not (tmp_path / "mover" / "rootfs").exists()
        assert run(session, mover, "cat /etc/os-release")[1].startswith(b"ID=busybox")
        session.terminate_distribution(mover)
        back = tmp_path / "back"
        session.move_distribution(mover, back)
        assert _base_path(session, mover) == back
        assert not (elsewhere / "busy" / "rootfs").exists()
        session.move_distribution(mover, tmp_path / "again")  # same file system: a rename
        assert not (back / "rootfs").exists()
        assert run(session, mover, "echo moved") == (0, b"moved\n")
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_move_while_running_is_refused(session: UserSession, mover: str, tmp_path: Path) -> None:
    session.create_instance(mover)
    with pytest.raises(WslError) as caught:
        session.move_distribution(mover, tmp_path / "moved")
    assert caught.value.code == "WSL_E_DISTRO_NOT_STOPPED"
    assert _base_path(session, mover) == tmp_path / "mover"
    assert not (tmp_path / "moved").exists()


def test_a_folder_swapped_for_a_symlink_is_not_followed(
    session: UserSession, distro: str, tmp_path: Path
) -> None:
    place = tmp_path / "place"
    session.register_distribution("Swapped", io.BytesIO(busybox_archive()), location=place / "distro")
    try:
        assert run(session, "Swapped", "echo first") == (0, b"first\n")
        session.terminate_distribution("Swapped")
        # Between registration and launch, a folder on the way becomes a link to a look-alike.
        place.rename(tmp_path / "real")
        place.symlink_to(tmp_path / "real")
        for start in (lambda: session.create_instance("Swapped"), lambda: run(session, "Swapped", "true")):
            with pytest.raises(WslError) as refused:
                start()
            assert refused.value.code == "E_ACCESSDENIED"
            assert "symbolic link" in refused.value.message
        states = {info.name: info.state for info in session.enumerate_distributions()}
        assert states["Swapped"] is DistributionState.INSTALLED
        place.unlink()
        (tmp_path / "real").rename(place)
        assert run(session, "Swapped", "echo again") == (0, b"again\n")
    finally:
        session.unregister_distribution("Swapped")


def test_unregister_and_shutdown(session: UserSession, distro: str) -> None:
    before = _names(session)
    info = session.register_distribution("Doomed", io.BytesIO(busybox_archive()))
    try:
        assert (info.base_path / "rootfs" / "bin" / "busybox").is_file()
        session.create_instance("Doomed")
        assert _state(session, "Doomed") is DistributionState.RUNNING
    finally:
        session.unregister_distribution("Doomed")
    assert _names(session) == before
    assert not (info.base_path / "rootfs").exists()
    session.create_instance(distro)
    session.shutdown()
    assert session._attach() is None
    assert _state(session, distro) is DistributionState.INSTALLED
