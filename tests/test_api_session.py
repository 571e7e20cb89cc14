"""UserSession flows that need no running VM: lookups, defaults, configuration, argument checks."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import pywsl
from pywsl.api.errors import WslError
from pywsl.api.process.launch_request import parse_wslenv
from pywsl.api.session.distribution_info import DistributionInfo
from pywsl.api.session.registry import FLAG_VM_MODE, FLAGS_UNCHANGED, DistributionState, Registration
from pywsl.api.session.user_session import UserSession


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[UserSession]:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("PYWSL_RUNTIME_ROOT", str(tmp_path / "run"))
    monkeypatch.delenv("PYWSL_CONFIG", raising=False)

    def no_vm(self: UserSession) -> None:
        raise AssertionError("these tests must not start a VM")

    monkeypatch.setattr(UserSession, "_boot", no_vm)
    with UserSession() as opened:
        yield opened


def register(
    session: UserSession, name: str, state: DistributionState = DistributionState.INSTALLED
) -> Registration:
    """A registration as a finished (or interrupted) import leaves it, with a real rootfs folder."""
    distro_id = uuid.uuid4()
    entry = Registration(
        id=distro_id,
        name=name,
        base_path=session.paths.data_dir / str(distro_id),
        state=state,
        created_base_path=True,
    )
    (entry.rootfs / "etc").mkdir(parents=True)
    with session.registry.transaction() as data:
        data.distributions[distro_id] = entry
        if state is DistributionState.INSTALLED and data.default_distribution is None:
            data.default_distribution = distro_id
    return entry


def error_of(call: Callable[..., object], *args: object, **kwargs: object) -> WslError:
    with pytest.raises(WslError) as caught:
        call(*args, **kwargs)
    return caught.value


def test_public_names_are_lazy_and_complete() -> None:
    assert pywsl.UserSession is UserSession
    assert pywsl.WslError is WslError
    assert pywsl.DistributionInfo is DistributionInfo
    assert pywsl.DistributionState is DistributionState
    assert callable(pywsl.connect)
    with pytest.raises(AttributeError):
        pywsl.no_such_name  # noqa: B018


def test_empty_registry(session: UserSession) -> None:
    assert session.enumerate_distributions() == []
    error = error_of(session.get_default_distribution)
    assert error.code == "WSL_E_DEFAULT_DISTRO_NOT_FOUND"
    assert error.context == "Wsl/Service/GetDefaultDistro"
    assert (
        error_of(session.get_distribution_id, "Debian").error_code
        == "Wsl/Service/GetDistroId/WSL_E_DISTRO_NOT_FOUND"
    )
    assert error_of(session.get_distribution_id, "").code == "E_INVALIDARG"
    assert error_of(session.create_instance).code == "WSL_E_DEFAULT_DISTRO_NOT_FOUND"


def test_lookups_and_default(session: UserSession) -> None:
    first = register(session, "First")
    second = register(session, "Second")
    assert session.get_default_distribution() == first.id
    assert session.get_distribution_id("second") == second.id
    session.set_default_distribution("SECOND")
    assert session.get_default_distribution() == second.id
    infos = {info.name: info for info in session.enumerate_distributions()}
    assert infos["Second"].is_default and not infos["First"].is_default
    assert infos["First"].state is DistributionState.INSTALLED
    assert infos["First"].version == 2
    assert infos["First"].base_path == first.base_path
    config = session.get_distribution_configuration(first.id)
    assert config.name == "First" and config.version == 2 and config.flags == 0xF
    assert any(item.startswith("PATH=") for item in config.default_environment)
    assert session.get_distribution_configuration().id == second.id


def test_half_installed_is_only_found_with_list_all(session: UserSession) -> None:
    register(session, "Installed")
    pending = register(session, "Pending", DistributionState.INSTALLING)
    lock = session.registry.acquire_operation(pending.id, DistributionState.INSTALLING)
    try:
        assert error_of(session.get_distribution_id, "pending").code == "WSL_E_DISTRO_NOT_FOUND"
        assert session.get_distribution_id("pending", list_all=True) == pending.id
        states = {info.name: info.state for info in session.enumerate_distributions()}
        assert states["Pending"] is DistributionState.INSTALLING
        assert error_of(session.set_default_distribution, pending.id).code == "WSL_E_DISTRO_NOT_FOUND"
        assert error_of(session.create_instance, pending.id).code == "E_ILLEGAL_STATE_CHANGE"
        assert error_of(session.unregister_distribution, pending.id).code == "E_ILLEGAL_STATE_CHANGE"
    finally:
        lock.release()
    # Its installer is gone now: the next call rolls the install back.
    assert [info.name for info in session.enumerate_distributions()] == ["Installed"]
    assert not pending.base_path.exists()


def test_operations_in_progress_show_in_the_list(session: UserSession) -> None:
    entry = register(session, "Busy")
    with session.registry.acquire_operation(entry.id, DistributionState.EXPORTING):
        assert session.enumerate_distributions()[0].state is DistributionState.EXPORTING
        error = error_of(session.configure_distribution, "Busy", default_uid=5)
        assert error.code == "E_ILLEGAL_STATE_CHANGE"
    assert session.enumerate_distributions()[0].state is DistributionState.INSTALLED


def test_configure_distribution(session: UserSession) -> None:
    register(session, "Debian")
    session.configure_distribution("Debian", default_uid=1000)
    assert session.get_distribution_configuration("Debian").default_uid == 1000
    session.configure_distribution("Debian", flags=0x1)
    config = session.get_distribution_configuration("Debian")
    assert config.flags == 0x1 | FLAG_VM_MODE  # VM_MODE cannot be changed here
    session.configure_distribution("Debian", flags=FLAGS_UNCHANGED, default_uid=0)
    assert session.get_distribution_configuration("Debian").flags == 0x1 | FLAG_VM_MODE
    assert error_of(session.configure_distribution, "Debian", default_uid=0xFFFFFFFF).code == "E_INVALIDARG"
    assert error_of(session.configure_distribution, "Debian", flags=0x10).code == "E_INVALIDARG"
    session.complete_oobe("Debian", 1001)
    assert session.get_distribution_configuration("Debian").default_uid == 1001


def test_unregister_without_a_vm_moves_the_default(session: UserSession) -> None:
    first = register(session, "First")
    second = register(session, "Second")
    (first.rootfs / "etc" / "hostname").write_text("x\n")
    session.unregister_distribution("first")
    assert not first.base_path.exists()
    assert session.get_default_distribution() == second.id
    assert error_of(session.unregister_distribution, "first").code == "WSL_E_DISTRO_NOT_FOUND"
    session.unregister_distribution(second.id)
    assert session.enumerate_distributions() == []
    assert error_of(session.unregister_distribution, None).code == "E_INVALIDARG"


def test_register_argument_checks(session: UserSession) -> None:
    archive = io.BytesIO(b"")
    assert (
        error_of(session.register_distribution, "bad name", archive).error_code
        == "Wsl/Service/RegisterDistro/E_INVALIDARG"
    )
    assert error_of(session.register_distribution, "legacy", archive).code == "E_INVALIDARG"
    wsl1 = error_of(session.register_distribution, "Ok", archive, version=1)
    assert wsl1.code == "WSL_E_WSL1_NOT_SUPPORTED"
    assert error_of(session.register_distribution, "Ok", archive, version=3).code == "E_INVALIDARG"
    assert error_of(session.register_distribution, "Ok", archive, vhd=True).code == "ERROR_NOT_SUPPORTED"


def test_name_and_location_must_be_free(session: UserSession) -> None:
    existing = register(session, "Debian")
    data = session.registry.snapshot()
    taken = error_of(UserSession._check_unique, data, "DEBIAN", Path("/elsewhere"))
    assert taken.code == "ERROR_ALREADY_EXISTS"
    assert error_of(UserSession._check_unique, data, "Other", existing.base_path).code == "ERROR_FILE_EXISTS"
    UserSession._check_unique(data, "Other", Path("/elsewhere"))


def test_export_and_disk_methods_that_cannot_work_here(session: UserSession, tmp_path: Path) -> None:
    register(session, "Debian")
    target = tmp_path / "out.vhdx"
    assert error_of(session.export_distribution, "Debian", target, format="vhd").code == "ERROR_NOT_SUPPORTED"
    assert error_of(session.export_distribution, "Debian", target, format="zip").code == "E_INVALIDARG"
    assert not target.exists()
    calls: list[tuple[Callable[..., object], tuple[object, ...]]] = [
        (session.set_sparse, ("Debian", True)),
        (session.resize_distribution, ("Debian", 1 << 30)),
        (session.import_distribution_inplace, ("X", "/x.vhdx")),
        (session.attach_disk, ("/x",)),
        (session.detach_disk, ()),
        (session.mount_disk, ("/x",)),
    ]
    for call, args in calls:
        error = error_of(call, *args)
        assert error.code == "ERROR_NOT_SUPPORTED" and "qemu backend" in error.message
    assert error_of(session.set_version, "Debian", 2).code == "WSL_E_VM_MODE_INVALID_STATE"
    assert error_of(session.set_version, "Debian", 1).code == "WSL_E_WSL1_NOT_SUPPORTED"


def test_move_needs_an_absolute_path(session: UserSession) -> None:
    register(session, "Debian")
    assert error_of(session.move_distribution, "Debian", "relative/dir").code == "E_INVALIDARG"


def test_move_within_a_file_system(session: UserSession, tmp_path: Path) -> None:
    entry = register(session, "Debian")
    (entry.rootfs / "etc" / "marker").write_text("here\n")
    target = tmp_path / "moved"
    session.move_distribution("Debian", target)
    assert (target / "rootfs" / "etc" / "marker").read_text() == "here\n"
    assert not entry.base_path.exists()
    assert session.enumerate_distributions()[0].base_path == target
    other = register(session, "Other")
    assert error_of(session.move_distribution, "Other", target).code == "ERROR_FILE_EXISTS"
    assert other.rootfs.exists()


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("", []),
        ("FOO", ["FOO"]),
        ("FOO:BAR/p:BAZ/l", ["FOO", "BAR", "BAZ"]),
        ("A/w:B/wu:C/u", ["B", "C"]),
        ("A::A:=x:/p", ["A"]),
    ],
)
def test_parse_wslenv(value: str, names: list[str]) -> None:
    assert parse_wslenv(value) == names


def test_process_request_building(session: UserSession) -> None:
    entry = register(session, "Debian")
    source = {"TERM": "screen", "WSLENV": "GREETING:MISSING", "GREETING": "hi", "SECRET": "no"}
    shell = session._process_request(
        entry,
        ["echo", "$HOME"],
        filename=None,
        cwd="",
        username="",
        login=False,
        environment={"EXTRA": "1"},
        wslenv_source=source,
        console=(True, True, True),
        rows=24,
        columns=80,
    )
    assert shell.filename == "" and shell.command_line == ["-c", "echo $HOME"]
    environment = dict(item.split("=", 1) for item in shell.environment)
    assert environment["TERM"] == "screen" and environment["GREETING"] == "hi" and environment["EXTRA"] == "1"
    assert "SECRET" not in environment and environment["LANG"] == "en_US.UTF-8"
    piped = session._process_request(
        entry,
        [],
        filename=None,
        cwd="~",
        username="",
        login=True,
        environment=None,
        wslenv_source=source,
        console=(False, False, False),
        rows=0,
        columns=0,
    )
    assert piped.command_line == [] and piped.login_shell
    assert dict(item.split("=", 1) for item in piped.environment)["TERM"] == "xterm-256color"
    exec_mode = session._process_request(
        entry,
        ["ls", "-l"],
        filename="/bin/ls",
        cwd="/tmp",
        username="root",
        login=False,
        environment=None,
        wslenv_source={},
        console=(False, False, False),
        rows=0,
        columns=0,
    )
    assert exec_mode.filename == "/bin/ls" and exec_mode.command_line == ["ls", "-l"]
    for kwargs in (
        {"filename": "/bin/ls", "login": True},
        {"filename": None, "cwd": "relative"},
        {"filename": ""},
        {"filename": None, "environment": {"A=B": "x"}},
    ):
        arguments: dict[str, object] = {
            "filename": None,
            "cwd": "",
            "username": "",
            "login": False,
            "environment": None,
            "wslenv_source": {},
            "console": (False, False, False),
            "rows": 0,
            "columns": 0,
        }
        arguments.update(kwargs)
        assert error_of(session._process_request, entry, ["x"], **arguments).code == "E_INVALIDARG"


def test_other_users_session_needs_root(session: UserSession) -> None:
    if os.geteuid() != 0:
        assert error_of(UserSession, 0).code == "E_ACCESSDENIED"
        return
    other = UserSession(65534)
    assert other.identity.uid == 65534
    assert other.paths.runtime_dir.name == "65534"
    assert "XDG" not in str(other.paths.data_dir)
    assert error_of(pywsl.connect, "carrier-pigeon").code == "E_INVALIDARG"


def test_register_never_touches_an_existing_rootfs(session: UserSession, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("importing needs root")
    location = tmp_path / "occupied"
    (location / "rootfs" / "etc").mkdir(parents=True)
    error = error_of(session.register_distribution, "New", io.BytesIO(b"x" * 1024), location=location)
    assert error.code == "ERROR_FILE_EXISTS"
    assert (location / "rootfs" / "etc").is_dir()
    assert session.enumerate_distributions() == []
    assert not session.paths.data_dir.exists()  # a refused import leaves nothing behind


def test_the_vm_only_gets_a_real_rootfs_folder(session: UserSession, tmp_path: Path) -> None:
    entry = register(session, "Debian")
    with session.folders.open_rootfs(entry.base_path) as rootfs:
        assert (os.fstat(rootfs).st_dev, os.fstat(rootfs).st_ino) == (
            entry.rootfs.stat().st_dev,
            entry.rootfs.stat().st_ino,
        )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    entry.rootfs.rename(tmp_path / "moved-away")
    entry.rootfs.symlink_to(elsewhere)
    with pytest.raises(WslError) as linked, session.folders.open_rootfs(entry.base_path):
        pass
    assert linked.value.code == "E_ACCESSDENIED"
    entry.rootfs.unlink()
    with pytest.raises(WslError) as missing, session.folders.open_rootfs(entry.base_path):
        pass
    assert missing.value.code == "ERROR_PATH_NOT_FOUND"


def test_folders_below_the_users_folders_are_never_links(session: UserSession, tmp_path: Path) -> None:
    entry = register(session, "Debian")
    moved = tmp_path / "look-alike"
    entry.base_path.rename(moved)
    entry.base_path.symlink_to(moved)  # data/pywsl/<id> is now a link to a folder with a rootfs
    with pytest.raises(WslError) as linked, session.folders.open_rootfs(entry.base_path):
        pass
    assert linked.value.code == "E_ACCESSDENIED" and "symbolic link" in linked.value.message
    entry.base_path.unlink()
    moved.rename(entry.base_path)
    # The user's data folder itself may be reached through a link (it is the user's own setup).
    data = session.paths.data_dir.parent
    data.rename(tmp_path / "data-elsewhere")
    data.symlink_to(tmp_path / "data-elsewhere")
    with session.folders.open_rootfs(entry.base_path) as rootfs:
        assert os.fstat(rootfs).st_ino == entry.rootfs.stat().st_ino
    # Outside the user's folders, no component at all may be a link.
    outside = tmp_path / "outside"
    (outside / "real" / "distro" / "rootfs").mkdir(parents=True)
    (outside / "link").symlink_to(outside / "real")
    with session.folders.open_rootfs(outside / "real" / "distro") as rootfs:
        assert os.fstat(rootfs).st_ino == (outside / "real" / "distro" / "rootfs").stat().st_ino
    with pytest.raises(WslError) as outside_link, session.folders.open_rootfs(outside / "link" / "distro"):
        pass
    assert outside_link.value.code == "E_ACCESSDENIED"
    with pytest.raises(WslError) as missing, session.folders.open_rootfs(outside / "none" / "distro"):
        pass
    assert missing.value.code == "ERROR_PATH_NOT_FOUND"


def test_the_vm_gets_the_timeouts_of_wslconfig(session: UserSession) -> None:
    session.paths.config_file.parent.mkdir(parents=True, exist_ok=True)
    session.paths.config_file.write_text(
        "[wsl2]\nkernelBootTimeout = 1234\ndistributionStartTimeout = 5678\n"
    )
    config = session.vm_config()
    assert (config.kernel_boot_timeout_ms, config.distribution_start_timeout_ms) == (1234, 5678)
    session.paths.config_file.write_text("[wsl2]\nkernelBootTimeout = -1\n")
    assert session.vm_config().kernel_boot_timeout_ms == 30000  # invalid: a warning and the default
