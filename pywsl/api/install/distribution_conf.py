"""`/etc/wsl-distribution.conf`: what a .wsl image says about its own first run.

WSL reads this file twice. At import (the guest's import worker) it takes `oobe.defaultName`, which
names the distribution when the user gave no name. At the first interactive launch (the relay child,
as root) it takes `oobe.command`, run through `/bin/sh -c`, and `oobe.defaultUid`, which becomes the
distribution's default uid when the command succeeds. `[shortcut]` and `[windowsterminal]` describe
Windows Start-menu and Terminal artefacts; pywsl has neither, so those sections are ignored without a
word, as are keys WSL does not know (its reader skips unknown values).

Reading from an installed root filesystem happens on the host, possibly as root, in a tree that the
distribution's own root controls. `read_distribution_conf` therefore never follows a symbolic link:
it opens `etc` and then the file relative to directory descriptors with `O_NOFOLLOW`, refuses
anything that is not a regular file, and reads at most `MAX_CONFIG_BYTES`.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pywsl.wire.config_format import MAX_CONFIG_BYTES, parse_config, parse_int

CONFIG_PATH = "/etc/wsl-distribution.conf"


@dataclass(frozen=True)
class DistributionConf:
    """The `[oobe]` settings of a distribution image; None where the file says nothing."""

    oobe_command: str | None = None
    default_uid: int | None = None
    default_name: str | None = None
    warnings: list[str] = field(default_factory=list)


def parse_distribution_conf(text: str, source: str = CONFIG_PATH) -> DistributionConf:
    """Parse the file's text. Bad values become warnings (as WSL's reader prints), never errors."""
    sections, warnings = parse_config(text, source)
    oobe = sections.get("oobe", {})
    command = oobe.get("command")
    name = oobe.get("defaultname")
    uid_value = oobe.get("defaultuid")
    default_uid: int | None = None
    if uid_value is not None:
        parsed = parse_int(uid_value.value)
        if parsed is None or not 0 <= parsed < 2**32 - 1:
            warnings.append(
                f"{source}:{uid_value.line}: invalid value {uid_value.value!r} for oobe.defaultUid, ignored"
            )
        else:
            default_uid = parsed
    return DistributionConf(
        oobe_command=command.value if command is not None and command.value else None,
        default_uid=default_uid,
        default_name=name.value if name is not None and name.value else None,
        warnings=warnings,
    )


def _read_bounded(fd: int, limit: int) -> bytes | None:
    """Up to `limit` bytes from `fd`; None when the file holds more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


def read_distribution_conf(rootfs: str | os.PathLike[str]) -> DistributionConf | None:
    """Read `etc/wsl-distribution.conf` inside `rootfs` without following links.

    Returns None when the distribution has no such file. A link, a non-regular file or an oversized
    file is reported as a warning on an otherwise empty result (the image's settings are not used).
    `rootfs` itself is the distribution's trusted base folder and may be reached through links.
    """
    source = CONFIG_PATH
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    root_fd = os.open(Path(rootfs), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            etc_fd = os.open("etc", flags | os.O_DIRECTORY, dir_fd=root_fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                return DistributionConf(warnings=[f"{source}: /etc is not a directory, ignored"])
            raise
        try:
            try:
                file_fd = os.open("wsl-distribution.conf", flags | os.O_NONBLOCK, dir_fd=etc_fd)
            except FileNotFoundError:
                return None
            except OSError as error:
                if error.errno == errno.ELOOP:
                    return DistributionConf(warnings=[f"{source}: is a symbolic link, ignored"])
                raise
            try:
                if not stat.S_ISREG(os.fstat(file_fd).st_mode):
                    return DistributionConf(warnings=[f"{source}: not a regular file, ignored"])
                data = _read_bounded(file_fd, MAX_CONFIG_BYTES)
            finally:
                os.close(file_fd)
        finally:
            os.close(etc_fd)
    finally:
        os.close(root_fd)
    if data is None:
        return DistributionConf(warnings=[f"{source}: file larger than {MAX_CONFIG_BYTES} bytes, ignored"])
    return parse_distribution_conf(data.decode("utf-8", errors="replace"), source)
