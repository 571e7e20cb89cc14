"""wslpath's command line and translations without a distribution (the e2e tests run it inside),
and the byte-compiled cache the client's modules need in the read-only host view."""

from __future__ import annotations

import importlib.util
import py_compile
import shutil
from pathlib import Path

import pytest

from pywsl.guest import interop_init, interop_paths
from pywsl.guest.interop_paths import USAGE, wslpath

MOUNT = "/mnt/host"
ROOTFS = "/srv/distros/d/rootfs"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/srv/x"], (0, "/mnt/host/srv/x\n", "")),
        (["-u", "/"], (0, "/mnt/host\n", "")),
        (["-w", "/mnt/host/srv/x"], (0, "/srv/x\n", "")),
        (["-m", "/etc/passwd"], (0, f"{ROOTFS}/etc/passwd\n", "")),
        (["-a", "-w", "y"], (0, "/srv/y\n", "")),
        (["-aw", "y"], (0, "/srv/y\n", "")),
        (["-a", "rel"], (0, "/mnt/host/srv/rel\n", "")),
        (["-w", "rel"], (0, "rel\n", "")),
        (["--", "/srv/x"], (0, "/mnt/host/srv/x\n", "")),
        (["-x", "/srv"], (1, "", USAGE)),
        ([], (1, "", USAGE)),
        (["a", "b"], (1, "", USAGE)),
        ([""], (1, "", USAGE)),
    ],
)
def test_wslpath(argv: list[str], expected: tuple[int, str, str]) -> None:
    assert wslpath(argv, cwd="/mnt/host/srv", mount_point=MOUNT, rootfs=ROOTFS) == expected


def test_paths_without_a_counterpart_are_invalid_arguments() -> None:
    assert wslpath(["/srv"], cwd="/", mount_point=None, rootfs=ROOTFS) == (
        1,
        "",
        "wslpath: /srv: Invalid argument\n",
    )
    assert wslpath(["-w", "/etc"], cwd="/", mount_point=MOUNT, rootfs=None)[0] == 1
    with pytest.raises(interop_paths.TranslationError):
        interop_paths.host_to_inside("relative", MOUNT)


def test_the_client_modules_are_byte_compiled_for_the_read_only_view(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    shutil.copy(interop_paths.__file__, source)
    cached = importlib.util.cache_from_source(str(source))
    magic = importlib.util.MAGIC_NUMBER
    assert not interop_init._cache_is_current(str(source), cached, magic)
    py_compile.compile(str(source), cfile=cached, doraise=True)
    assert interop_init._cache_is_current(str(source), cached, magic)
    source.write_text(source.read_text() + "\n# changed\n")
    assert not interop_init._cache_is_current(str(source), cached, magic)
    assert not interop_init._cache_is_current(str(source), cached, b"\0\0\r\n")


def test_the_worker_translates_what_a_client_sent_as_it_is_inside() -> None:
    folder = f"{interop_paths.HOST_PATH_FOLDER}/{interop_paths.escape_folder('/opt/a %b')}"
    inside = {
        "PATH": f"/usr/bin:{folder}:/bin",
        "TERM": "xterm",
        "WSLENV": "P/p:L/l:U/u:W/wp:OWN",
        "P": "/mnt/host/srv/p",
        "L": "/etc:/mnt/host/x",
        "U": "/u",
        "W": "/mnt/host/w",
        "OWN": "/etc",
        "NOT_SHARED": "x",
    }
    sent = interop_paths.forwarded_environment(inside, MOUNT, ROOTFS)
    assert "NOT_SHARED=x" not in sent
    cwd, environment = interop_paths.translate_request("/mnt/host/srv/work", sent)
    assert cwd == "/srv/work"
    assert environment == [
        "PATH=/opt/a %b",
        "TERM=xterm",
        "P=/srv/p",
        f"L={ROOTFS}/etc:/x",
        "W=/w",
        "OWN=/etc",
        "WSLENV=P/p:L/l:U/u:W/wp:OWN",
    ]
    assert interop_paths.translate_request("/home/u", sent)[0] == f"{ROOTFS}/home/u"
    no_rootfs = interop_paths.forwarded_environment({}, MOUNT, None)
    assert interop_paths.translate_request("/home/u", no_rootfs) == ("", [])  # the owner's home


def test_a_request_translated_by_its_client_stays_as_it_is() -> None:
    entries = ["PATH=/usr/bin", "A=/mnt/host/x"]
    assert interop_paths.translate_request("/srv", entries) == ("/srv", entries)
