"""The per-user registry: name rules, atomic locked transactions, operation locks, crash recovery."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from pywsl.api.credentials import UserIdentity
from pywsl.api.errors import WslError
from pywsl.api.files.rootfs_folder import RootfsFolders
from pywsl.api.session.registry import (
    FLAGS_ALL,
    DistributionState,
    Registration,
    Registry,
    RegistryData,
    default_environment,
    validate_name,
)

ME = UserIdentity.current()


def make_registry(folder: Path, removed: list[str] | None = None) -> Registry:
    def remove(registration: Registration) -> None:
        if removed is not None:
            removed.append(registration.name)
        RootfsFolders(ME, lambda: []).remove_rootfs(registration.base_path)

    return Registry(folder / "pywsl", ME, remove_files=remove)


def add(
    registry: Registry,
    name: str,
    state: DistributionState = DistributionState.INSTALLED,
    base: Path | None = None,
) -> Registration:
    distro_id = uuid.uuid4()
    entry = Registration(
        id=distro_id, name=name, base_path=base or registry.folder / str(distro_id), state=state
    )
    with registry.transaction() as data:
        data.distributions[distro_id] = entry
        if data.default_distribution is None and state is DistributionState.INSTALLED:
            data.default_distribution = distro_id
    return entry


@pytest.mark.parametrize("name", ["Debian", "a", "my.distro_2-x", "x" * 256, "legacy1"])
def test_valid_names(name: str) -> None:
    validate_name(name)


@pytest.mark.parametrize("name", ["", "x" * 257, "has space", "slash/x", "Legacy", "LEGACY", "ünï", "a\0b"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(WslError) as caught:
        validate_name(name)
    assert caught.value.code == "E_INVALIDARG"
    assert caught.value.message.startswith("Invalid distribution name")


def test_default_environment_is_wsls() -> None:
    env = default_environment()
    assert env[0].startswith("HOSTTYPE=") and env[0] != "HOSTTYPE="
    assert "LANG=en_US.UTF-8" in env
    assert "TERM=xterm-256color" in env
    assert any(item.startswith("PATH=/usr/local/sbin:") for item in env)


def test_round_trip_and_file_format(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    entry = add(registry, "Debian")
    raw = json.loads(registry.path.read_text())
    stored = raw["Distributions"]["{" + str(entry.id) + "}"]
    assert stored["DistributionName"] == "Debian"
    assert stored["State"] == 1 and stored["Version"] == 2 and stored["Flags"] == FLAGS_ALL
    assert raw["DefaultDistribution"] == "{" + str(entry.id) + "}"
    assert registry.path.stat().st_mode & 0o777 == 0o600
    assert registry.folder.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in registry.folder.iterdir()) == ["registry.json", "registry.lock"]
    again = registry.snapshot()
    assert again.distributions[entry.id] == entry


def test_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    add(registry, "Debian")
    before = registry.path.read_bytes()
    with pytest.raises(RuntimeError), registry.transaction() as data:
        data.distributions.clear()
        raise RuntimeError("abort")
    assert registry.path.read_bytes() == before


def test_find_is_case_insensitive_and_respects_state(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    add(registry, "Debian")
    add(registry, "Half", DistributionState.INSTALLING)
    data = registry.snapshot()
    assert data.find("debian") is not None
    assert data.find("half") is None
    assert data.find("HALF", list_all=True) is not None


def test_fix_default_moves_to_first_installed(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    first = add(registry, "One")
    second = add(registry, "Two")
    with registry.transaction() as data:
        data.distributions.pop(first.id)
        data.fix_default()
    assert registry.snapshot().default_distribution == second.id
    with registry.transaction() as data:
        data.distributions.pop(second.id)
        data.fix_default()
    assert registry.snapshot().default_distribution is None


def test_corrupted_file_is_a_clear_error(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    add(registry, "Debian")
    registry.path.write_text("{not json")
    with pytest.raises(WslError) as caught:
        registry.snapshot()
    assert "corrupted" in caught.value.message


def test_bad_entries_are_kept_but_skipped(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    good = add(registry, "Debian")
    raw = json.loads(registry.path.read_text())
    bad = {"DistributionName": "x y", "State": 1, "BasePath": "/"}
    raw["Distributions"]["{" + str(uuid.uuid4()) + "}"] = bad
    raw["Distributions"]["not-a-guid"] = {}
    registry.path.write_text(json.dumps(raw))
    data = registry.snapshot()
    assert list(data.distributions) == [good.id]
    assert len(data.unreadable) == 2
    add(registry, "Other")
    assert len(json.loads(registry.path.read_text())["Distributions"]) == 4


def _add_many(folder: str, worker: int, count: int) -> None:
    registry = Registry(Path(folder), ME)
    for index in range(count):
        with registry.transaction() as data:
            distro_id = uuid.uuid4()
            data.distributions[distro_id] = Registration(
                id=distro_id,
                name=f"w{worker}-{index}",
                base_path=Path("/nonexistent") / str(distro_id),
                state=DistributionState.INSTALLED,
            )


def test_concurrent_processes_lose_no_update(tmp_path: Path) -> None:
    folder = tmp_path / "pywsl"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_many, args=(str(folder), n, 25)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    data = Registry(folder, ME).snapshot()
    assert len(data.distributions) == 100
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def _hold_operation(folder: str, distro_id: str, ready: multiprocessing.synchronize.Event) -> None:
    registry = Registry(Path(folder), ME)
    registry.acquire_operation(uuid.UUID(distro_id), DistributionState.EXPORTING)
    ready.set()
    time.sleep(60)


def test_operation_lock_alive_then_crashed(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    entry = add(registry, "Debian")
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold_operation, args=(str(registry.folder), str(entry.id), ready))
    holder.start()
    try:
        assert ready.wait(10)
        assert registry.active_operation(entry.id) is DistributionState.EXPORTING
        with pytest.raises(WslError) as caught:
            registry.acquire_operation(entry.id, DistributionState.UNINSTALLING)
        assert caught.value.code == "E_ILLEGAL_STATE_CHANGE"
    finally:
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
    assert registry.active_operation(entry.id) is None
    with registry.acquire_operation(entry.id, DistributionState.UNINSTALLING) as lock:
        assert registry.active_operation(entry.id) is DistributionState.UNINSTALLING
        assert lock.path.exists()
    assert not lock.path.exists()
    assert registry.active_operation(entry.id) is None


def _crash_during_install(folder: str, base: str, ready: multiprocessing.synchronize.Event) -> None:
    registry = Registry(Path(folder), ME)
    distro_id = uuid.uuid4()
    registry.acquire_operation(distro_id, DistributionState.INSTALLING)
    with registry.transaction() as data:
        data.distributions[distro_id] = Registration(
            id=distro_id, name="Crashed", base_path=Path(base), state=DistributionState.INSTALLING
        )
    rootfs = Path(base) / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "os-release").write_text("ID=test\n")
    (rootfs / "bin").symlink_to("/usr/bin")
    ready.set()
    time.sleep(60)


def test_recovery_rolls_back_an_install_whose_installer_died(tmp_path: Path) -> None:
    removed: list[str] = []
    registry = make_registry(tmp_path, removed)
    keep = add(registry, "Keep")
    base = tmp_path / "crashed"
    base.mkdir()
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    installer = context.Process(target=_crash_during_install, args=(str(registry.folder), str(base), ready))
    installer.start()
    try:
        assert ready.wait(10)
        assert registry.recover() == []  # the installer is alive: nothing to do
        assert registry.snapshot().find("Crashed", list_all=True) is not None
    finally:
        assert installer.pid is not None
        os.kill(installer.pid, signal.SIGKILL)
        installer.join(10)
    assert registry.recover() == ["Crashed"]
    data = registry.snapshot()
    assert data.find("Crashed", list_all=True) is None
    assert list(data.distributions) == [keep.id]
    assert not (base / "rootfs").exists()
    assert Path("/usr/bin").is_dir()  # the symlink inside was removed, not followed
    assert removed == ["Crashed"]


def test_recovery_completes_an_uninstall(tmp_path: Path) -> None:
    registry = make_registry(tmp_path)
    first = add(registry, "First")
    second = add(registry, "Second")
    (first.base_path / "rootfs").mkdir(parents=True)
    with registry.transaction() as data:
        data.distributions[first.id].state = DistributionState.UNINSTALLING
    assert registry.recover() == ["First"]
    data = registry.snapshot()
    assert list(data.distributions) == [second.id]
    assert data.default_distribution == second.id
    assert not (first.base_path / "rootfs").exists()


def test_recovery_keeps_an_entry_whose_files_cannot_go(tmp_path: Path) -> None:
    def fail(_: Registration) -> None:
        raise PermissionError(13, "denied")

    registry = Registry(tmp_path / "pywsl", ME, remove_files=fail)
    entry = add(registry, "Stuck", DistributionState.INSTALLING)
    assert registry.recover() == []
    data = registry.snapshot()
    assert data.distributions[entry.id].state is DistributionState.UNINSTALLING
    assert data.find("Stuck") is None


def test_registry_data_from_json_ignores_bad_default() -> None:
    data = RegistryData.from_json({"DefaultDistribution": "garbage", "Distributions": {}})
    assert data.default_distribution is None
    with pytest.raises(ValueError):
        RegistryData.from_json([])


@pytest.mark.parametrize(("at_source", "at_target"), [(False, True), (True, True), (True, False)])
def test_recovery_of_an_interrupted_move(tmp_path: Path, at_source: bool, at_target: bool) -> None:
    registry = make_registry(tmp_path)
    entry = add(registry, "Mover")
    target = tmp_path / "target"
    for present, folder in ((at_source, entry.base_path), (at_target, target)):
        if present:
            (folder / "rootfs" / "etc").mkdir(parents=True)
    with registry.transaction() as data:
        data.distributions[entry.id].move_target = target
    assert registry.recover() == ["Mover"]
    moved = registry.snapshot().distributions[entry.id]
    assert moved.move_target is None and moved.state is DistributionState.INSTALLED
    expected = target if at_target and not at_source else entry.base_path
    assert moved.base_path == expected
    assert (expected / "rootfs" / "etc").is_dir()
    assert (target / "rootfs").exists() == (expected == target)
    assert registry.recover() == []
