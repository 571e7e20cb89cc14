"""The VM's host PATH folders kept in its runtime folder (`path_folder_store`): which folder may serve.

The VM's first process opens the store as the host's root, so it only uses a folder that it made
itself for the VM's root or that has exactly that shape: in a runtime folder nobody else can
enter, owned by the VM's root, writable by it alone. The VM-level behaviour (kept across starts,
read-only and locked in the distributions) is in `test_interop_e2e`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pywsl.guest import path_folder_store

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="making a folder for another owner needs root")

OWNER = (1_073_741_824, 1_073_741_825)


@pytest.fixture
def runtime(tmp_path: Path) -> Path:
    folder = tmp_path / "run" / "0"
    folder.mkdir(parents=True, mode=0o700)
    return folder


def _store(runtime: Path, owner: tuple[int, int] | None = OWNER) -> int:
    return path_folder_store.open_store(str(runtime), owner)


def test_a_missing_store_is_made_for_the_vms_root(runtime: Path) -> None:
    fd = _store(runtime)
    assert fd >= 0
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    store = runtime / path_folder_store.STORE_NAME
    assert (store.stat().st_ino, info.st_uid, info.st_gid) == (info.st_ino, *OWNER)
    assert stat.S_IMODE(info.st_mode) == 0o755
    again = _store(runtime)  # the same folder serves the next start
    assert again >= 0
    os.close(again)


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda store: os.chown(store, 0, 0), id="another owner"),
        pytest.param(lambda store: os.chmod(store, 0o775), id="group-writable"),
        pytest.param(lambda store: os.chmod(store, 0o757), id="writable by others"),
    ],
)
def test_a_store_of_another_shape_is_not_used(runtime: Path, spoil: object) -> None:
    os.close(_store(runtime))
    store = runtime / path_folder_store.STORE_NAME
    assert callable(spoil)
    spoil(store)
    assert _store(runtime) == -1


def test_a_link_or_file_in_the_stores_place_is_not_followed(runtime: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    os.chown(elsewhere, *OWNER)
    (runtime / path_folder_store.STORE_NAME).symlink_to(elsewhere)
    assert _store(runtime) == -1
    (runtime / path_folder_store.STORE_NAME).unlink()
    (runtime / path_folder_store.STORE_NAME).write_text("")
    assert _store(runtime) == -1


@pytest.mark.parametrize("mode", [0o750, 0o701, 0o755])
def test_no_store_in_a_runtime_folder_others_can_enter(runtime: Path, mode: int) -> None:
    runtime.chmod(mode)
    assert _store(runtime) == -1
    assert not (runtime / path_folder_store.STORE_NAME).exists()


def test_no_store_without_a_root_for_the_vm(runtime: Path) -> None:
    assert _store(runtime, None) == -1
    assert path_folder_store.owner_of([(1, 100, 10)], [(0, 200, 10)]) is None
    assert path_folder_store.owner_of([(0, 100, 10)], [(0, 200, 10)]) == (100, 200)
