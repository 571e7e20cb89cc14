"""Test distributions made of the host's static busybox: an unpacked root filesystem or a tar image.

In WSL terms: the archive is what ``wsl --import`` and ``wsl --install --from-file`` take (a tar,
plain or compressed; with ``/etc/wsl-distribution.conf`` it is a ``.wsl`` image), the folder is
the root filesystem a distribution's disk holds once imported (what the utility VM boots).
Both come from one layout, so every test distribution has the same shape: busybox in ``/bin``
with its applets as links, ``/etc/passwd``, ``group``, ``shadow``, ``os-release`` and the
optional WSL configuration files.
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypedDict, Unpack, overload

BUSYBOX = Path("/bin/busybox")
# A fixed modification time: the same arguments give the same tar (before compression).
MTIME = 1_700_000_000
FOLDERS = (
    "bin",
    "sbin",
    "usr",
    "usr/bin",
    "usr/sbin",
    "etc",
    "root",
    "home",
    "tmp",
    "var",
    "var/tmp",
    "dev",
    "proc",
    "sys",
    "run",
)
STICKY_FOLDERS = ("tmp", "var/tmp")

Compression = Literal["", "gz", "xz"]


@dataclass(frozen=True)
class Account:
    """One line of ``/etc/passwd`` (and of ``group``, ``shadow``); a home under /home is created."""

    name: str
    uid: int
    home: str
    gecos: str = ""
    shell: str = "/bin/sh"
    group: str = ""  # the primary group's name (gid = uid); the account's own name when empty

    @property
    def passwd_line(self) -> str:
        return f"{self.name}:x:{self.uid}:{self.uid}:{self.gecos}:{self.home}:{self.shell}\n"

    @property
    def group_line(self) -> str:
        return f"{self.group or self.name}:x:{self.uid}:\n"


ROOT = Account("root", 0, "/root", "root")
ALICE = Account("alice", 1000, "/home/alice", "Alice")
NOBODY = Account("nobody", 65534, "/nonexistent", "nobody", "/bin/false", "nogroup")
DEFAULT_USERS = (ROOT, ALICE)


def os_release_text(flavor: str = "busybox", version: str = "1.36", name: str = "BusyBox") -> str:
    """``/etc/os-release`` of a distribution whose flavor is ``flavor`` (it starts with ``ID=``)."""
    return f'ID={flavor}\nVERSION_ID="{version}"\nNAME="{name}"\nPRETTY_NAME="{name} {version}"\n'


# What a folder or archive gets unless told otherwise (NAME first, as many distributions write it).
DEFAULT_OS_RELEASE = 'NAME="BusyBox"\nID=busybox\nVERSION_ID="1.36"\nPRETTY_NAME="BusyBox test root"\n'


@functools.cache
def _applets(busybox: Path) -> tuple[str, ...]:
    output = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True).stdout
    names = (name for name in output.split() if name and "/" not in name and name != "busybox")
    return tuple(dict.fromkeys(names))


def busybox_applets() -> list[str]:
    """Every applet of the host's busybox (``busybox --list``)."""
    return list(_applets(BUSYBOX))


@dataclass(frozen=True)
class _Entry:
    name: str  # relative, without "./"
    kind: Literal["dir", "file", "link"]
    mode: int
    uid: int = 0
    data: bytes = b""
    target: str = ""


@dataclass(frozen=True)
class _Layout:
    """Everything that makes one test distribution (hashable: archives are cached by it)."""

    applets: tuple[str, ...] | None
    usr_bin_links: bool
    users: tuple[Account, ...]
    os_release: str | None
    wsl_conf: str | None
    wsl_distribution_conf: str | None
    extra_files: tuple[tuple[str, bytes], ...]
    filler_bytes: int

    def entries(self) -> Iterator[_Entry]:
        """Folders first, then busybox and its links, /etc, extra files and the filler last."""
        for folder in FOLDERS:
            yield _Entry(folder, "dir", 0o1777 if folder in STICKY_FOLDERS else 0o755)
        for user in self.users:
            if user.home.startswith("/home/"):
                yield _Entry(user.home.lstrip("/"), "dir", 0o755, user.uid)
        yield _Entry("bin/busybox", "file", 0o755, data=BUSYBOX.read_bytes())
        applets = _applets(BUSYBOX) if self.applets is None else self.applets
        for applet in applets:
            yield _Entry(f"bin/{applet}", "link", 0o777, target="busybox")
        if self.usr_bin_links:
            for applet in applets:
                yield _Entry(f"usr/bin/{applet}", "link", 0o777, target="/bin/busybox")
        groups = {user.uid: user.group_line for user in self.users}
        groups.setdefault(5, "tty:x:5:\n")
        texts = {
            "etc/passwd": "".join(user.passwd_line for user in self.users),
            "etc/group": "".join(line for _, line in sorted(groups.items())),
            "etc/os-release": self.os_release,
            "etc/wsl.conf": self.wsl_conf,
            "etc/wsl-distribution.conf": self.wsl_distribution_conf,
        }
        for name, text in texts.items():
            if text is not None:
                yield _Entry(name, "file", 0o644, data=text.encode())
        shadow = "".join(f"{user.name}:*:19000:0:99999:7:::\n" for user in self.users)
        yield _Entry("etc/shadow", "file", 0o640, data=shadow.encode())
        for name, data in self.extra_files:
            yield _Entry(name, "file", 0o644, data=data)
        if self.filler_bytes:
            yield _Entry("filler", "file", 0o644, data=os.urandom(self.filler_bytes))


class Contents(TypedDict, total=False):
    """What goes into a test distribution; every key is optional (the defaults are ``_layout``'s)."""

    applets: Sequence[str] | None  # the links to busybox in /bin (default None: every applet)
    usr_bin_links: bool  # also absolute links in /usr/bin (default no)
    users: Sequence[Account]  # /etc/passwd, group, shadow and homes (default root and alice)
    os_release: str | None  # the text of /etc/os-release (default DEFAULT_OS_RELEASE; None: no file)
    wsl_conf: str | None  # the text of /etc/wsl.conf (default None: no file)
    wsl_distribution_conf: str | None  # the text of /etc/wsl-distribution.conf (default None: no file)
    extra_files: Mapping[str, str | bytes] | None  # more files, by path inside
    filler_bytes: int  # a file of that many random bytes, last (to make an archive big)


def _layout(
    *,
    applets: Sequence[str] | None = None,
    usr_bin_links: bool = False,
    users: Sequence[Account] = DEFAULT_USERS,
    os_release: str | None = DEFAULT_OS_RELEASE,
    wsl_conf: str | None = None,
    wsl_distribution_conf: str | None = None,
    extra_files: Mapping[str, str | bytes] | None = None,
    filler_bytes: int = 0,
) -> _Layout:
    extras = tuple(
        sorted(
            (name.removeprefix("./").lstrip("/"), data.encode() if isinstance(data, str) else data)
            for name, data in (extra_files or {}).items()
        )
    )
    return _Layout(
        None if applets is None else tuple(applets),
        usr_bin_links,
        tuple(users),
        os_release,
        wsl_conf,
        wsl_distribution_conf,
        extras,
        filler_bytes,
    )


def own_tree(
    path: Path, host_ids: Callable[[int], tuple[int, int]], users: Sequence[Account] = DEFAULT_USERS
) -> None:
    """Give the tree at ``path`` to the VM's root and each home below /home to its user.

    ``host_ids(inside)`` = the host (uid, gid) that id ``inside`` of the VM maps to.
    """
    uid, gid = host_ids(0)
    os.lchown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)
    for user in users:
        home = path / user.home.lstrip("/")
        if user.home.startswith("/home/") and home.is_dir():
            os.lchown(home, *host_ids(user.uid))


def build_busybox_rootfs(
    path: Path, *, owner: tuple[int, int] | None = None, **contents: Unpack[Contents]
) -> Path:
    """A minimal distribution unpacked at ``path``: busybox and its applets, root and ``alice`` (1000).

    ``owner`` = host (uid, gid) of the VM's root, which then owns every file, as after an import
    (each home belongs to its user: ``owner`` + the user's id). ``contents``: see ``Contents``.
    """
    layout = _layout(**contents)
    path.mkdir(parents=True, exist_ok=True)
    for entry in layout.entries():
        target = path / entry.name
        if entry.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(entry.mode)
        elif entry.kind == "link":
            if not target.is_symlink():
                target.symlink_to(entry.target)
        else:
            target.write_bytes(entry.data)
            target.chmod(entry.mode)
    if owner is not None:
        own_tree(path, lambda inside: (owner[0] + inside, owner[1] + inside), layout.users)
    return path


@functools.lru_cache(maxsize=32)
def _archive_bytes(layout: _Layout, compression: Compression, prefix: str, tar_format: int) -> bytes:
    buffer = io.BytesIO()
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(fileobj=buffer, mode=mode, format=tar_format) as archive:  # type: ignore[call-overload]
        for entry in layout.entries():
            member = tarfile.TarInfo(prefix + entry.name)
            member.mode, member.mtime = entry.mode, MTIME
            member.uid = member.gid = entry.uid
            if entry.kind == "dir":
                member.type = tarfile.DIRTYPE
                archive.addfile(member)
            elif entry.kind == "link":
                member.type, member.linkname = tarfile.SYMTYPE, entry.target
                archive.addfile(member)
            else:
                member.size = len(entry.data)
                archive.addfile(member, io.BytesIO(entry.data))
    return buffer.getvalue()


@overload
def busybox_archive(
    path: None = None,
    *,
    compression: Compression = "",
    prefix: str = "",
    tar_format: int = tarfile.PAX_FORMAT,
    **contents: Unpack[Contents],
) -> bytes: ...


@overload
def busybox_archive(
    path: Path,
    *,
    compression: Compression = "",
    prefix: str = "",
    tar_format: int = tarfile.PAX_FORMAT,
    **contents: Unpack[Contents],
) -> Path: ...


def busybox_archive(
    path: Path | None = None,
    *,
    compression: Compression = "",
    prefix: str = "",
    tar_format: int = tarfile.PAX_FORMAT,
    **contents: Unpack[Contents],
) -> bytes | Path:
    """A distribution as a tar (``compression`` "", "gz" or "xz"): its bytes, or written to ``path``.

    ``prefix``: put before every member name ("./" as GNU tar writes them, or ""). ``contents``:
    see ``Contents``. A file at ``path`` is readable by everyone (other users import it). The same
    arguments give the same bytes (the result is cached).
    """
    if compression not in ("", "gz", "xz"):
        raise ValueError(f"unknown compression {compression!r}")
    data = _archive_bytes(_layout(**contents), compression, prefix, tar_format)
    if path is None:
        return data
    path.write_bytes(data)
    path.chmod(0o644)
    return path
