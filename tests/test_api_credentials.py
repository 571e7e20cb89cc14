"""Acting as a user: filesystem credentials per thread (root's changes to a user's tree: tests/security)."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pywsl.api.credentials import (
    UserIdentity,
    acting_as,
    makedirs_as,
    open_as,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")

NOBODY = UserIdentity(65534, 65534, (65534,), "nobody", Path("/nonexistent"))


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A temporary folder every user can traverse (pytest's own is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="pywsl-credentials-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.fixture
def user_tree(tmp_path: Path) -> Path:
    """A folder that belongs to the unprivileged user."""
    tree = tmp_path / "home"
    tree.mkdir()
    os.chown(tree, NOBODY.uid, NOBODY.gid)
    return tree


def test_files_created_as_the_user_belong_to_it(user_tree: Path) -> None:
    fd = open_as(NOBODY, user_tree / "file", os.O_WRONLY | os.O_CREAT, 0o644)
    os.close(fd)
    assert (user_tree / "file").stat().st_uid == NOBODY.uid
    assert makedirs_as(NOBODY, user_tree / "a" / "b")
    assert (user_tree / "a" / "b").stat().st_uid == NOBODY.uid
    assert not makedirs_as(NOBODY, user_tree / "a" / "b")


def test_the_user_cannot_reach_roots_files(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(PermissionError):
        open_as(NOBODY, private / "x", os.O_WRONLY | os.O_CREAT)
    with acting_as(NOBODY), pytest.raises(PermissionError):
        os.listdir(private)
    os.listdir(private)  # root again afterwards


def test_credentials_are_per_thread(user_tree: Path, tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    results: list[bool] = []
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        inside.wait(5)
        results.append(os.access(private, os.W_OK))
        (private / "by-root").write_text("x")
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    with acting_as(NOBODY):
        inside.set()
        assert release.wait(5)
        with pytest.raises(PermissionError):
            (private / "by-nobody").write_text("x")
    thread.join()
    assert (private / "by-root").stat().st_uid == 0


def test_nested_and_conflicting_identities(user_tree: Path) -> None:
    with acting_as(NOBODY), acting_as(NOBODY):
        pass
    other = UserIdentity(65533, 65533, (65533,), "other", Path("/"))
    with acting_as(NOBODY), pytest.raises(RuntimeError), acting_as(other):
        pass
    with acting_as(UserIdentity.current()):  # the process user: nothing to switch
        pass


def test_makedirs_never_creates_through_a_dangling_link(user_tree: Path, tmp_path: Path) -> None:
    protected = tmp_path / "protected"
    protected.mkdir(mode=0o755)
    link = user_tree / "place"
    link.symlink_to(protected / "inside")
    with pytest.raises(NotADirectoryError):
        makedirs_as(NOBODY, link)
    with pytest.raises(FileNotFoundError):
        makedirs_as(NOBODY, link / "deeper")
    link.unlink()
    link.symlink_to(protected)
    with pytest.raises(PermissionError):
        makedirs_as(NOBODY, link / "deeper")
    assert os.listdir(protected) == []
