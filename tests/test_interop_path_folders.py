"""The host PATH folders inside a distribution (``path_folders.host_path_folders``): one link to
the launcher per executable of a host folder, seen through the host view, in a generation folder
shared by the names of the same host folder."""

from __future__ import annotations

import fcntl
import os
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywsl.guest import interop_init, path_folders, vm_path_folders
from pywsl.guest.interop_paths import escape_folder

LAUNCHER = "/run/test-launcher"


class Layout:
    def __init__(self, root: Path) -> None:
        self.view = root / "view"  # the host as the distribution sees it
        self.path_folder = root / "run" / "path"
        self.generations = self.path_folder / ".generations"
        self.vm_generations = root / "run" / "vm-path"  # made by mini_init (`vm_path_folders`)
        self.view.mkdir()
        self.generations.mkdir(parents=True)

    def host(self, host_path: str) -> Path:
        return self.view / host_path.lstrip("/")

    def file(self, host_path: str, mode: int = 0o755) -> Path:
        path = self.host(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(mode)
        return path

    def link(self, host_path: str, target: str) -> None:
        path = self.host(host_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)

    def generation(self, host_folder: str) -> Path:
        """The generation folder of `host_folder` as it is now (named after its inode and time)."""
        info = os.stat(self.host(host_folder))
        name = f"{escape_folder(host_folder)}@{info.st_dev:x}-{info.st_ino:x}-{info.st_mtime_ns:x}"
        return self.generations / name

    def inside(self, host_folder: str) -> Path:
        return self.path_folder / escape_folder(host_folder)

    def names(self, host_folder: str) -> set[str]:
        folder = self.inside(host_folder)
        names = set(os.listdir(folder))
        for name in names:
            assert os.readlink(folder / name) == LAUNCHER
        return names


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    made = Layout(tmp_path)
    monkeypatch.setattr(path_folders, "HOST_VIEW", str(made.view))
    monkeypatch.setattr(path_folders, "PATH_FOLDER", str(made.path_folder))
    monkeypatch.setattr(path_folders, "GENERATIONS", str(made.generations))
    monkeypatch.setattr(path_folders, "VM_GENERATIONS", str(made.vm_generations))
    monkeypatch.setattr(path_folders, "LAUNCHER", LAUNCHER)
    return made


def test_one_link_per_executable_file(layout: Layout) -> None:
    layout.file("/usr/bin/tool")
    layout.file("/usr/bin/own", 0o700)
    layout.file("/usr/bin/others", 0o601)
    layout.file("/usr/bin/.hidden")
    layout.file("/usr/bin/with space\nand line")
    layout.file("/usr/bin/data", 0o644)
    layout.host("/usr/bin/folder").mkdir(mode=0o755)
    os.mkfifo(layout.host("/usr/bin/fifo"), 0o755)
    assert path_folders.host_path_folders("/usr/bin") == [str(layout.inside("/usr/bin"))]
    assert layout.names("/usr/bin") == {"tool", "own", "others", ".hidden", "with space\nand line"}
    assert not [name for name in os.listdir(layout.generations) if name.endswith(".new")]


def test_links_are_followed_as_the_host_would(layout: Layout) -> None:
    layout.file("/usr/bin/tool")
    layout.file("/usr/bin/data", 0o644)
    layout.file("/usr/lib/helper")
    layout.file("/opt/pywsl-view-only/app")
    layout.link("/usr/bin/same-folder", "tool")
    layout.link("/usr/bin/to-data", "data")
    layout.link("/usr/bin/up-and-over", "../lib/helper")
    layout.link("/usr/bin/dotted", "./tool")
    layout.link("/usr/bin/absolute-here", "/usr/bin/tool")
    layout.link("/usr/bin/absolute-elsewhere", "/opt/pywsl-view-only/app")
    layout.link("/usr/bin/through-alternatives", "/etc/alternatives/app")
    layout.link("/etc/alternatives/app", "/opt/pywsl-view-only/app")
    layout.link("/usr/bin/to-folder", "../lib")
    layout.link("/usr/bin/dangling", "missing")
    layout.link("/usr/bin/loop-a", "loop-b")
    layout.link("/usr/bin/loop-b", "loop-a")
    layout.link("/usr/bin/self", "self")
    # An absolute target is a host path: the distribution's own /bin/sh does not count.
    assert os.path.exists("/bin/sh") and not layout.host("/bin/sh").exists()
    layout.link("/usr/bin/real-root", "/bin/sh")
    path_folders.host_path_folders("/usr/bin")
    assert layout.names("/usr/bin") == {
        "tool",
        "same-folder",
        "up-and-over",
        "dotted",
        "absolute-here",
        "absolute-elsewhere",
        "through-alternatives",
    }


def test_a_link_is_followed_at_most_sixteen_steps(layout: Layout) -> None:
    # chain-0 -> chain-1 -> ... -> chain-15 -> tool: chain-N is 16 - N links away from the file,
    # and a walk takes 16 steps at most, so all but chain-0 are executables.
    layout.file("/usr/bin/tool")
    for number in range(16):
        following = f"chain-{number + 1}" if number < 15 else "tool"
        layout.link(f"/usr/bin/chain-{number}", following)
    # The same through another folder (every step's path is outside the listed folder).
    for number in range(16):
        following = f"/srv/chain-{number + 1}" if number < 15 else "/usr/lib/tool"
        layout.link(f"/srv/chain-{number}", following)
    layout.file("/usr/lib/tool")
    layout.link("/usr/bin/far", "/srv/chain-1")  # 16 links
    layout.link("/usr/bin/near", "/srv/chain-2")  # 15 links
    path_folders.host_path_folders("/usr/bin")
    assert layout.names("/usr/bin") == {"tool", "near", *(f"chain-{number}" for number in range(1, 16))}


def test_max_folder_entries_counts_links_made(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(path_folders, "MAX_FOLDER_ENTRIES", 3)
    for number in range(6):
        layout.file(f"/usr/bin/data-{number}", 0o644)
        layout.file(f"/usr/bin/tool-{number}")
    path_folders.host_path_folders("/usr/bin")
    names = layout.names("/usr/bin")
    assert len(names) == 3 and all(name.startswith("tool-") for name in names)


def test_generation_name_and_sharing_between_names_of_a_folder(layout: Layout) -> None:
    layout.file("/usr/bin/tool")
    layout.link("/bin", "usr/bin")
    folders = path_folders.host_path_folders("/bin:/usr/bin:/usr/bin/:relative:/missing:/usr/bin/tool")
    assert folders == [str(layout.inside("/bin")), str(layout.inside("/usr/bin"))]
    info = os.stat(layout.host("/usr/bin"))
    generation = f"{escape_folder('/bin')}@{info.st_dev:x}-{info.st_ino:x}-{info.st_mtime_ns:x}"
    assert os.listdir(layout.generations) == [generation]
    for folder in folders:
        assert os.readlink(folder) == str(layout.generations / generation)
    assert layout.names("/usr/bin") == {"tool"}


@pytest.mark.parametrize("order", ["/bin:/usr/bin", "/usr/bin:/bin"])
def test_a_folder_reached_through_a_link_follows_relative_links_from_where_it_is(
    layout: Layout, order: str
) -> None:
    # A merged /usr: `/bin` is a link to `usr/bin`, and `../lib/x` from /usr/bin is /usr/lib/x
    # whichever name of the folder is listed first (the host resolves `..` from the real folder).
    layout.file("/usr/lib/helper")
    layout.file("/lib/other")  # what a textual `..` from /bin would reach instead
    layout.link("/usr/bin/helper", "../lib/helper")
    layout.link("/usr/bin/other", "../../lib/other")
    layout.link("/bin", "usr/bin")
    layout.link("/opt/tools", "/usr/bin")  # an absolute link to the folder
    folders = path_folders.host_path_folders(f"{order}:/opt/tools")
    assert len(folders) == 3
    for host_folder in ("/bin", "/usr/bin", "/opt/tools"):
        assert layout.names(host_folder) == {"helper", "other"}


def test_a_folder_behind_a_link_loop_is_skipped(layout: Layout) -> None:
    layout.link("/a", "b")
    layout.link("/b", "a")
    layout.file("/usr/bin/tool")
    assert path_folders.host_path_folders("/a/bin:/usr/bin") == [str(layout.inside("/usr/bin"))]


def test_an_unchanged_folder_is_not_listed_again_and_a_changed_one_is(layout: Layout) -> None:
    layout.file("/usr/bin/tool")
    path_folders.host_path_folders("/usr/bin")
    first = os.readlink(layout.inside("/usr/bin"))
    os.unlink(Path(first) / "tool")  # a folder listed again would have it back
    path_folders.host_path_folders("/usr/bin")
    assert os.readlink(layout.inside("/usr/bin")) == first and layout.names("/usr/bin") == set()
    layout.file("/usr/bin/new")
    os.utime(layout.host("/usr/bin"), ns=(1, 1))
    path_folders.host_path_folders("/usr/bin")
    assert os.readlink(layout.inside("/usr/bin")) != first
    assert layout.names("/usr/bin") == {"tool", "new"}


def test_the_root_folder(layout: Layout) -> None:
    layout.file("/top")
    layout.file("/usr/bin/tool")
    layout.link("/up", "usr/bin/tool")
    layout.link("/absolute", "/top")
    assert path_folders.host_path_folders("/") == [str(layout.inside("/"))]
    assert layout.names("/") == {"top", "up", "absolute"}


def test_at_most_max_path_folders(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(path_folders, "MAX_PATH_FOLDERS", 2)
    for name in ("a", "b", "c"):
        layout.file(f"/{name}/tool")
    assert path_folders.host_path_folders("/a:/b:/c") == [
        str(layout.inside("/a")),
        str(layout.inside("/b")),
    ]


# -- the links against the rule they follow, on made-up host trees ------------------------------

_FOLDERS = ("/usr/bin", "/usr/lib", "/etc/alt")
_NAMES = ("n0", "n1", "n2", "n3", "n4")
_TARGETS = (
    "n0",
    "n1",
    "./n2",
    "../lib/n3",
    "../../etc/alt/n4",
    "../../../../n0",
    "/usr/bin/n1",
    "/usr/lib/n2",
    "/etc/alt/n0",
    "/usr/bin",
    "n1/n2",
    "lib-link/n0",
    "missing",
    "/missing/n0",
    "..",
    ".",
)
_NODE = st.one_of(
    st.none(),
    st.sampled_from([0o644, 0o755, 0o100, 0o010, 0o001, 0o600]).map(lambda mode: ("file", mode)),
    st.just(("folder", 0o755)),
    st.sampled_from(_TARGETS).map(lambda target: ("link", target)),
)


def _rule(view: str, host_folder: str) -> set[str]:
    """The names that get a link: each followed as the host would, 16 steps at most, a target's
    path made lexically normal (``..`` takes the name before it away) and looked up in the view."""

    def executable(host_path: str) -> bool:
        for _ in range(16):
            try:
                info = os.lstat(view + host_path)
            except OSError:
                return False
            if not stat.S_ISLNK(info.st_mode):
                return stat.S_ISREG(info.st_mode) and bool(info.st_mode & 0o111)
            try:
                target = os.readlink(view + host_path)
            except OSError:
                return False
            host_path = os.path.normpath(os.path.join(os.path.dirname(host_path), target))
        return False

    return {name for name in os.listdir(view + host_folder) if executable(os.path.join(host_folder, name))}


@settings(max_examples=150, deadline=None)
@given(tree=st.fixed_dictionaries({f"{folder}/{name}": _NODE for folder in _FOLDERS for name in _NAMES}))
def test_links_follow_the_rule_on_any_tree(tree: dict[str, tuple[str, object] | None]) -> None:
    with tempfile.TemporaryDirectory() as temporary, pytest.MonkeyPatch.context() as monkeypatch:
        made = Layout(Path(temporary))
        monkeypatch.setattr(path_folders, "HOST_VIEW", str(made.view))
        monkeypatch.setattr(path_folders, "PATH_FOLDER", str(made.path_folder))
        monkeypatch.setattr(path_folders, "GENERATIONS", str(made.generations))
        monkeypatch.setattr(path_folders, "LAUNCHER", LAUNCHER)
        for folder in _FOLDERS:
            made.host(folder).mkdir(parents=True)
        made.link("/usr/bin/lib-link", "../lib")
        for host_path, node in tree.items():
            if node is None:
                continue
            kind, value = node
            if kind == "file":
                assert isinstance(value, int)
                made.file(host_path, value)
            elif kind == "folder":
                made.host(host_path).mkdir()
            else:
                made.link(host_path, str(value))
        for host_folder in _FOLDERS:
            path_folders.host_path_folders(host_folder)
            assert made.names(host_folder) == _rule(str(made.view), host_folder), host_folder


# -- made ahead by init ---------------------------------------------------------------------------


class _Conf:
    def __init__(self, enabled: bool, append: bool) -> None:
        self.interop_enabled = enabled
        self.interop_append_windows_path = append


@pytest.mark.parametrize(("enabled", "append"), [(True, True), (True, False), (False, True)])
def test_init_makes_the_booting_callers_folders_in_a_child(
    layout: Layout, monkeypatch: pytest.MonkeyPatch, enabled: bool, append: bool
) -> None:
    monkeypatch.setattr(interop_init, "_runtime", object())  # a client runtime was found
    layout.file("/usr/bin/tool")
    pid = interop_init.prepare_path_folders("/usr/bin", _Conf(enabled, append))  # type: ignore[arg-type]
    if not (enabled and append):
        assert pid is None and not layout.inside("/usr/bin").exists()
        return
    assert pid is not None and pid != os.getpid()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert layout.names("/usr/bin") == {"tool"}
    assert interop_init.prepare_path_folders("", _Conf(True, True)) is None  # type: ignore[arg-type]


def test_a_launch_waits_for_a_live_builder_of_the_same_folder(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout.file("/usr/bin/tool")
    target = layout.generation("/usr/bin")
    builder = subprocess.Popen(["sleep", "30"])
    try:
        building = Path(f"{target}.{builder.pid}.new")
        building.mkdir()
        (building / "made-by-the-builder").symlink_to(LAUNCHER)

        def finish() -> None:
            time.sleep(0.2)
            building.rename(target)

        finisher = threading.Thread(target=finish)
        finisher.start()
        path_folders.host_path_folders("/usr/bin")
        finisher.join()
        # The builder's generation is used, not one made again (which would have "tool").
        assert layout.names("/usr/bin") == {"made-by-the-builder"}
    finally:
        builder.kill()
        builder.wait()


def test_a_dead_builders_leftover_is_not_waited_for(layout: Layout, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(path_folders, "BUILDER_WAIT", 30.0)
    layout.file("/usr/bin/tool")
    target = layout.generation("/usr/bin")
    gone = subprocess.Popen(["true"])
    gone.wait()
    Path(f"{target}.{gone.pid}.new").mkdir()
    started = time.monotonic()
    path_folders.host_path_folders("/usr/bin")
    assert time.monotonic() - started < 5
    assert layout.names("/usr/bin") == {"tool"}


def test_a_builder_that_takes_too_long_is_waited_for_a_bounded_time(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(path_folders, "BUILDER_WAIT", 0.2)
    layout.file("/usr/bin/tool")
    target = layout.generation("/usr/bin")
    builder = subprocess.Popen(["sleep", "30"])
    try:
        Path(f"{target}.{builder.pid}.new").mkdir()
        started = time.monotonic()
        path_folders.host_path_folders("/usr/bin")
        assert 0.2 <= time.monotonic() - started < 5
        assert layout.names("/usr/bin") == {"tool"}
    finally:
        builder.kill()
        builder.wait()


# -- made once for the VM (`vm_path_folders`) ---------------------------------------------------------


def _vm_folders(layout: Layout, host_path: str, *, locked: bool = False) -> int:
    """The VM's generations of `host_path` made as mini_init's builder makes them; the fd of
    their folder (its `BUILDING` file there, locked when `locked`: the fd locking it)."""
    layout.vm_generations.mkdir(exist_ok=True)
    folder_fd = os.open(layout.vm_generations, os.O_RDONLY | os.O_DIRECTORY)
    vm_path_folders.build(path_folders.candidate_folders(host_path), folder_fd, str(layout.view))
    os.close(folder_fd)
    lock = os.open(layout.vm_generations / path_folders.BUILDING, os.O_RDWR | os.O_CREAT, 0o644)
    if locked:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock
    os.close(lock)
    return -1


def test_the_vms_generations_are_linked_rather_than_made(layout: Layout) -> None:
    layout.file("/usr/bin/tool")
    layout.link("/bin", "usr/bin")
    _vm_folders(layout, "/usr/bin:/bin:/usr/bin/:relative")
    made = set(os.listdir(layout.vm_generations))
    # One per real folder (and what the links are made for).
    assert made == {path_folders.BUILDING, vm_path_folders.FORMAT_FILE, layout.generation("/usr/bin").name}
    assert path_folders.host_path_folders("/usr/bin:/bin") == [
        str(layout.inside("/usr/bin")),
        str(layout.inside("/bin")),
    ]
    vm_generation = str(layout.vm_generations / layout.generation("/usr/bin").name)
    assert os.readlink(layout.inside("/usr/bin")) == vm_generation
    assert os.readlink(layout.inside("/bin")) == vm_generation  # the same folder by another name
    assert layout.names("/usr/bin") == layout.names("/bin") == {"tool"}
    assert os.listdir(layout.generations) == []  # nothing made in the distribution


def test_kept_generations_are_used_again_and_the_others_removed(layout: Layout) -> None:
    """A VM started again with its folders kept on the host (`path_folder_store`) makes only the
    generations of folders that changed, and keeps only those of its caller's PATH."""
    layout.file("/usr/bin/tool")
    layout.file("/opt/bin/other")
    layout.file("/srv/bin/gone")
    _vm_folders(layout, "/usr/bin:/opt/bin:/srv/bin")
    kept = layout.vm_generations / layout.generation("/usr/bin").name
    (kept / "seen").symlink_to(LAUNCHER)  # gone if it were made again
    time.sleep(0.01)
    layout.file("/opt/bin/newer")  # a new modification time: a new generation
    (layout.vm_generations / "%2Fsrv%2Fbin@1-2-3.77.new").mkdir()  # what an ended builder left
    layout.link("/bin", "usr/bin")
    _vm_folders(layout, "/bin:/opt/bin")
    assert (kept / "seen").is_symlink()  # the same folder by another name: not made again
    assert set(os.listdir(layout.vm_generations)) == {
        path_folders.BUILDING,
        vm_path_folders.FORMAT_FILE,
        kept.name,
        layout.generation("/opt/bin").name,
    }
    newer = layout.vm_generations / layout.generation("/opt/bin").name
    assert sorted(os.listdir(newer)) == ["newer", "other"]
    assert path_folders.host_path_folders("/bin") == [str(layout.inside("/bin"))]
    assert os.readlink(layout.inside("/bin")) == str(kept)


def test_generations_made_for_other_links_are_made_again(layout: Layout) -> None:
    layout.file("/usr/bin/tool")
    _vm_folders(layout, "/usr/bin")
    generation = layout.vm_generations / layout.generation("/usr/bin").name
    (generation / "tool").unlink()
    (generation / "tool").symlink_to("/somewhere/else")  # made by another version
    (layout.vm_generations / vm_path_folders.FORMAT_FILE).write_text("links to /somewhere/else\n")
    (layout.vm_generations / "stray").write_text("")
    _vm_folders(layout, "/usr/bin")
    assert os.readlink(generation / "tool") == LAUNCHER
    assert (layout.vm_generations / vm_path_folders.FORMAT_FILE).read_text() == vm_path_folders.FORMAT
    assert not (layout.vm_generations / "stray").exists()


def test_a_folder_changed_since_the_vm_started_is_made_by_the_distribution(layout: Layout) -> None:
    layout.file("/usr/bin/tool")
    _vm_folders(layout, "/usr/bin")
    time.sleep(0.01)
    layout.file("/usr/bin/newer")
    path_folders.host_path_folders("/usr/bin")
    assert os.readlink(layout.inside("/usr/bin")) == str(layout.generation("/usr/bin"))
    assert layout.names("/usr/bin") == {"tool", "newer"}


def test_a_launch_waits_for_the_vms_builder(layout: Layout) -> None:
    layout.file("/usr/bin/tool")
    lock = _vm_folders(layout, "/usr/bin", locked=True)
    made = layout.vm_generations / layout.generation("/usr/bin").name
    aside = layout.vm_generations / "aside"
    made.rename(aside)  # not there yet: the builder is still at work

    def finish() -> None:
        time.sleep(0.2)
        aside.rename(made)
        os.close(lock)

    finisher = threading.Thread(target=finish)
    started = time.monotonic()
    finisher.start()
    path_folders.host_path_folders("/usr/bin")
    finisher.join()
    assert time.monotonic() - started >= 0.2
    assert os.readlink(layout.inside("/usr/bin")) == str(made)
    assert os.listdir(layout.generations) == []


def test_a_vm_builder_that_does_not_finish_is_waited_for_a_bounded_time(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(path_folders, "BUILDER_WAIT", 0.2)
    layout.file("/usr/bin/tool")
    layout.vm_generations.mkdir()
    lock = os.open(layout.vm_generations / path_folders.BUILDING, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        started = time.monotonic()
        path_folders.host_path_folders("/usr/bin")
        assert 0.2 <= time.monotonic() - started < 5
    finally:
        os.close(lock)
    assert os.readlink(layout.inside("/usr/bin")) == str(layout.generation("/usr/bin"))
    assert layout.names("/usr/bin") == {"tool"}


def test_the_vms_builder_sees_the_host_tree_as_its_root(layout: Layout) -> None:
    """mini_init's builder is a child whose root is the VM's host tree (here: the layout's view),
    holding the lock until it is done."""
    layout.file("/usr/bin/tool")
    layout.link("/usr/bin/absolute", "/usr/bin/tool")  # resolved in the host tree, not here
    layout.vm_generations.mkdir()
    tree = os.open(layout.view, os.O_PATH | os.O_DIRECTORY)
    folder = os.open(layout.vm_generations, os.O_PATH | os.O_DIRECTORY)
    try:
        assert vm_path_folders.hold("", tree, folder) is None  # nothing to make
        assert vm_path_folders.hold("/usr/bin", -1, folder) is None
        held = vm_path_folders.hold("/usr/bin:/usr/bin", tree, folder)
        assert held is not None
        pid = held.start()
        assert pid is not None
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(tree)
        os.close(folder)
    generation = layout.vm_generations / layout.generation("/usr/bin").name
    assert sorted(os.listdir(generation)) == ["absolute", "tool"]
    lock = os.open(layout.vm_generations / path_folders.BUILDING, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released with the builder
    finally:
        os.close(lock)


def test_the_vms_builder_lock_is_held_from_before_the_fork(layout: Layout) -> None:
    """mini_init takes the builder's lock before the VM serves and forks the builder later: no
    launch sees the generations in between; abandoning the lock lets the launches make their own."""
    layout.file("/usr/bin/tool")
    layout.vm_generations.mkdir()
    tree = os.open(layout.view, os.O_PATH | os.O_DIRECTORY)
    folder = os.open(layout.vm_generations, os.O_PATH | os.O_DIRECTORY)
    probe = -1
    try:
        assert vm_path_folders.hold("", tree, folder) is None  # nothing to make
        held = vm_path_folders.hold("/usr/bin", tree, folder)
        assert held is not None
        probe = os.open(layout.vm_generations / path_folders.BUILDING, os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a launch would wait
        assert vm_path_folders.hold("/usr/bin", tree, folder) is None  # one builder at a time
        pid = held.start()
        assert pid is not None and held.lock == -1
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released with the builder
        fcntl.flock(probe, fcntl.LOCK_UN)
        assert (layout.vm_generations / layout.generation("/usr/bin").name / "tool").is_symlink()
        again = vm_path_folders.hold("/usr/bin", tree, folder)
        assert again is not None
        again.abandon()
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        for fd in (probe, tree, folder):
            if fd >= 0:
                os.close(fd)


def test_no_vm_builder_where_its_lock_cannot_be_made(tmp_path: Path) -> None:
    tree = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        (tmp_path / "vm").mkdir()
        (tmp_path / "vm" / path_folders.BUILDING).mkdir()  # a folder in its place
        folder = os.open(tmp_path / "vm", os.O_PATH | os.O_DIRECTORY)
        try:
            assert vm_path_folders.hold("/usr/bin", tree, folder) is None
        finally:
            os.close(folder)
    finally:
        os.close(tree)


def test_a_stop_ends_the_work_between_folders(layout: Layout) -> None:
    """A spare relay makes its launch's folders ahead until the request comes (`stop`): what is
    made stays, the launch makes the rest."""
    layout.file("/usr/bin/tool")
    layout.file("/bin/other")
    asked: list[int] = []

    def stop_after_one() -> bool:
        asked.append(1)
        return len(asked) > 1

    assert path_folders.host_path_folders("/usr/bin:/bin", stop=lambda: True) == []
    assert path_folders.host_path_folders("/usr/bin:/bin", stop=stop_after_one) == [
        str(layout.inside("/usr/bin"))
    ]
    assert path_folders.host_path_folders("/usr/bin:/bin") == [
        str(layout.inside("/usr/bin")),
        str(layout.inside("/bin")),
    ]
