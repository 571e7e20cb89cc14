"""The root filesystems the benchmark imports: a busybox tree, or a cached Debian minbase.

The Debian archive is what ``wsl --import`` is usually fed: ``debootstrap --variant=minbase``
packed with GNU tar (numeric owners, ``dev/`` left empty). Building it takes about half a minute
and needs the network, so it is cached and reused. The systemd variant adds ``systemd``,
``systemd-sysv`` and ``dbus`` (what a distribution with ``[boot] systemd=true`` needs), cached
beside it. debootstrap runs in a private mount namespace:
whatever it mounts in the target vanishes with it, so removing the tree afterwards cannot
reach into a mounted host folder.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from bench_proc import BenchError

__all__ = [
    "DEFAULT_MIRROR",
    "SYSTEMD_PACKAGES",
    "build_busybox_archive",
    "debian_archive",
    "mirror_from_sources",
    "mounts_below",
]

BUSYBOX = Path("/bin/busybox")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SOURCES_LIST = Path("/etc/apt/sources.list")
SOURCES_DIR = Path("/etc/apt/sources.list.d")
PASSWD = "root:x:0:0:root:/root:/bin/sh\n"
GROUP = "root:x:0:\ntty:x:5:\n"
OS_RELEASE = 'NAME="BusyBox"\nID=busybox\nVERSION_ID="1"\nPRETTY_NAME="BusyBox benchmark root"\n'
# Left out of the Debian archive, as in Debian's own container and WSL images: device nodes
# (the VM provides /dev), apt's package lists and downloaded packages.
EXCLUDED = ("dev/*", "var/lib/apt/lists/*", "var/cache/apt/archives/*.deb")
SYSTEMD_PACKAGES = ("systemd", "systemd-sysv", "dbus")
FOLDERS = (
    "bin",
    "sbin",
    "usr",
    "usr/bin",
    "usr/sbin",
    "etc",
    "root",
    "tmp",
    "var",
    "var/tmp",
    "proc",
    "sys",
    "dev",
    "run",
)


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    listing = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True).stdout
    return sorted(name for name in listing.split() if name and "/" not in name and name != "busybox")


def _member(name: str, kind: bytes, mode: int, now: int) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.mode = mode
    member.uid = member.gid = 0
    member.mtime = now
    return member


def build_busybox_archive(path: Path, busybox: Path = BUSYBOX) -> Path:
    """A gzipped tar of a minimal distribution: busybox, a symlink per applet, root, os-release."""
    if not busybox.is_file():
        raise BenchError(f"{busybox} is missing (install busybox-static)")
    now = int(time.time())
    with tarfile.open(path, "w:gz", compresslevel=6) as archive:
        for folder in FOLDERS:
            mode = 0o1777 if folder.endswith("tmp") else 0o755
            archive.addfile(_member(folder, tarfile.DIRTYPE, mode, now))
        data = busybox.read_bytes()
        member = _member("bin/busybox", tarfile.REGTYPE, 0o755, now)
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
        for applet in busybox_applets(busybox):
            link = _member(f"bin/{applet}", tarfile.SYMTYPE, 0o777, now)
            link.linkname = "busybox"
            archive.addfile(link)
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP), ("etc/os-release", OS_RELEASE)):
            encoded = text.encode()
            member = _member(name, tarfile.REGTYPE, 0o644, now)
            member.size = len(encoded)
            archive.addfile(member, io.BytesIO(encoded))
    return path


def _deb822_stanzas(text: str) -> Iterable[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
            continue
        if raw[0] in " \t" and key:
            stanza[key] += " " + raw.strip()
            continue
        key, _, value = raw.partition(":")
        key = key.strip().lower()
        stanza[key] = value.strip()


def mirror_from_sources(suite: str, deb822: Iterable[str] = (), one_line: Iterable[str] = ()) -> str | None:
    """The first ``deb`` URI serving ``suite`` in apt's sources (deb822 files, then one-line files)."""
    for text in deb822:
        for stanza in _deb822_stanzas(text):
            if stanza.get("enabled", "yes").lower() == "no":
                continue
            if "deb" in stanza.get("types", "").split() and suite in stanza.get("suites", "").split():
                uris = stanza.get("uris", "").split()
                if uris:
                    return uris[0]
    for text in one_line:
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):
                while words and not words[0].endswith("]"):
                    words = words[1:]
                words = words[1:]
            if len(words) >= 2 and words[1] == suite:
                return words[0]
    return None


def host_mirror(suite: str) -> str:
    def read(paths: Iterable[Path]) -> list[str]:
        texts = []
        for path in paths:
            with contextlib.suppress(OSError):
                texts.append(path.read_text())
        return texts

    deb822 = read(sorted(SOURCES_DIR.glob("*.sources")))
    one_line = read([SOURCES_LIST, *sorted(SOURCES_DIR.glob("*.list"))])
    return mirror_from_sources(suite, deb822, one_line) or DEFAULT_MIRROR


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this mount namespace."""
    prefix = os.path.realpath(path)
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """Delete a scratch tree, refusing when something is mounted in it."""
    if not path.exists():
        return
    mounted = mounts_below(path)
    if mounted:
        raise BenchError(f"not removing {path}: {', '.join(mounted)} mounted in it")
    shutil.rmtree(path)


def debian_archive(
    cache_dir: Path,
    suite: str,
    log: Callable[[str], None],
    mirror: str | None = None,
    *,
    systemd: bool = False,
) -> Path:
    """The cached ``debian-<suite>-minbase.tar.gz``, built with debootstrap when missing.

    With ``systemd``, ``debian-<suite>-minbase-systemd.tar.gz``: the same with ``SYSTEMD_PACKAGES``.
    """
    flavor = "minbase-systemd" if systemd else "minbase"
    archive = cache_dir / f"debian-{suite}-{flavor}.tar.gz"
    if archive.is_file() and archive.stat().st_size > 0:
        return archive
    for tool in ("debootstrap", "unshare", "tar"):
        if shutil.which(tool) is None:
            raise BenchError(f"building the Debian archive needs `{tool}` (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise BenchError("debootstrap needs root")
    cache_dir.mkdir(parents=True, exist_ok=True)
    mirror = mirror or host_mirror(suite)
    target = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=cache_dir))
    partial = archive.with_name(archive.name + ".partial")
    log(f"building {archive.name} with debootstrap from {mirror} (cached for later runs)")
    try:
        result = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "debootstrap",
                "--variant=minbase",
                *([f"--include={','.join(SYSTEMD_PACKAGES)}"] if systemd else []),
                suite,
                str(target),
                mirror,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise BenchError(f"debootstrap failed ({result.returncode}):\n{tail}")
        os.chmod(target, 0o755)  # mkdtemp made it private; it becomes the distribution's /
        with open(partial, "wb") as output:
            tar = subprocess.Popen(
                [
                    "tar",
                    "--numeric-owner",
                    "--xattrs",
                    "--xattrs-include=*",
                    *(f"--exclude=./{pattern}" for pattern in EXCLUDED),
                    "-C",
                    str(target),
                    "-czf",
                    "-",
                    ".",
                ],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.PIPE,
            )
            _, tar_errors = tar.communicate()
        if tar.returncode != 0:
            raise BenchError(f"packing the Debian tree failed: {tar_errors.decode(errors='replace')[-2000:]}")
        with gzip.open(partial, "rb") as check:
            check.read(512)
        os.replace(partial, archive)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        remove_tree(target)
    return archive
