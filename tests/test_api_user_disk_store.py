"""The list of disks a user attached, kept in the runtime folder while the VM may stop."""

from __future__ import annotations

from pathlib import Path

from pywsl.api.session.user_disk_store import STORE_NAME, UserDiskStore


def entry(disk: str, name: str = "", partition: int = 0) -> dict[str, object]:
    return {"disk": disk, "vhd": True, "name": name, "partition": partition, "type": "", "options": ""}


def test_entries_are_added_replaced_and_removed_by_disk(tmp_path: Path) -> None:
    store = UserDiskStore(tmp_path)
    assert store.entries() == []
    store.add(entry("/a.vhdx", "a"))
    store.add(entry("/a.vhdx", "a2", 1))
    store.add(entry("/b.vhdx"))
    store.add(entry("/a.vhdx", "a"))  # the same mount again: kept once
    assert [(item["disk"], item["name"]) for item in store.entries()] == [
        ("/a.vhdx", "a2"),
        ("/b.vhdx", ""),
        ("/a.vhdx", "a"),
    ]
    assert (tmp_path / STORE_NAME).stat().st_mode & 0o777 == 0o600
    store.remove("/a.vhdx")
    assert [item["disk"] for item in store.entries()] == ["/b.vhdx"]
    store.remove(None)
    assert store.entries() == [] and not (tmp_path / STORE_NAME).exists()


def test_a_damaged_or_foreign_file_counts_as_empty(tmp_path: Path) -> None:
    store = UserDiskStore(tmp_path)
    for text in ("{not json", '{"disk": "/a"}', '[{"disk": 1}]', "[1, 2]"):
        (tmp_path / STORE_NAME).write_text(text)
        assert store.entries() == []
    (tmp_path / STORE_NAME).unlink()
    (tmp_path / "elsewhere.json").write_text(
        '[{"disk": "/x", "vhd": true, "name": "", "partition": 0, "type": "", "options": ""}]'
    )
    (tmp_path / STORE_NAME).symlink_to(tmp_path / "elsewhere.json")
    assert store.entries() == []  # never through a link


def test_nothing_is_kept_without_a_runtime_folder(tmp_path: Path) -> None:
    store = UserDiskStore(tmp_path / "missing")
    store.add(entry("/a.vhdx"))
    assert store.entries() == [] and not (tmp_path / "missing").exists()
