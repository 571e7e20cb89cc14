"""The interop modules' replacements for what would cost the VM's start: each against the module
function it replaces (``shlex.quote``, ``shutil.which``, ``hashlib.sha256``)."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pywsl.guest import interop_init, interop_native, interop_paths


@given(st.text())
def test_quote_is_shlex_quote(word: str) -> None:
    assert interop_init._quote(word) == shlex.quote(word)


@pytest.mark.parametrize(
    "word", ["", "plain/path-1.2_x@%+=:,", "a b", "it's", "$HOME", "ä", "-", "\n", "''", "a'b'c"]
)
def test_quote_is_shlex_quote_on_examples(word: str) -> None:
    assert interop_init._quote(word) == shlex.quote(word)


def test_the_launcher_script_quotes_as_before() -> None:
    runtime = interop_init.HostRuntime(
        "/lib/ld linux.so",
        ("/usr/lib", "/opt/it's"),
        "/usr/bin/python3",
        "/srv/py wsl",
        "/cache/native",
        False,
    )
    script = interop_init.launcher_script(runtime, "/mnt/host", None)
    words = [interop_paths.HOST_VIEW + "/lib/ld linux.so", "--library-path"]
    words += [f"{interop_paths.HOST_VIEW}/usr/lib:{interop_paths.HOST_VIEW}/opt/it's"]
    words += [interop_paths.HOST_VIEW + "/cache/native", "--context", "/mnt/host", ""]
    assert script == "#!/bin/sh\nexec " + " ".join(shlex.quote(word) for word in words) + ' "$0" "$@"\n'


def _tool(folder: Path, name: str, mode: int = 0o755) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    "entries",
    [
        ["first", "second"],
        ["not-executable", "second"],
        ["folder", "second"],
        ["missing", "first"],
        ["first", "first"],
        ["", "first"],
        [],
    ],
)
def test_which_is_shutil_which(entries: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _tool(tmp_path / "first", "cc")
    _tool(tmp_path / "second", "cc")
    _tool(tmp_path / "not-executable", "cc", 0o644)
    (tmp_path / "folder" / "cc").mkdir(parents=True)
    _tool(tmp_path, "cc")  # found through an empty entry: the working folder
    monkeypatch.chdir(tmp_path)
    path = os.pathsep.join(str(tmp_path / entry) if entry else "" for entry in entries)
    monkeypatch.setenv("PATH", path)
    assert interop_native._which("cc") == shutil.which("cc")
    assert interop_native._which("no-such-tool") is None


def test_which_without_path_uses_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATH", raising=False)
    assert interop_native._which("sh") == shutil.which("sh")


def test_the_build_key_is_hashlib_sha256(tmp_path: Path) -> None:
    info = os.stat(tmp_path)
    key = interop_native._key(b"int main(void) {}\n", "/usr/bin/cc", info, ("-static",))
    digest = hashlib.sha256(b"int main(void) {}\n")
    flags = " ".join((*interop_native.FLAGS, "-static"))
    digest.update(f"\0/usr/bin/cc\0{info.st_size}\0{info.st_mtime_ns}\0{flags}".encode())
    assert key == digest.hexdigest()[:24]
