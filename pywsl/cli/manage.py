"""`--manage <Distro>`: change one setting of a distribution (wsl.exe's `Manage`).

The distribution is looked up first, as in wsl.exe (an unknown name wins over a usage error; a
missing name is the usage). Exactly one action: `--move DIR` (`MoveDistribution`),
`--set-default-user USER` (runs `id -u -- USER` as root inside the distribution, parses the uid,
then `ConfigureDistribution` with it, as wsl.exe does), or the disk-image actions `--set-sparse` and
`--resize`, which need a disk-image backend: on Windows the installed WslService has one, and
they reach it (`SetSparse`, `ResizeDistribution`), their values read before the name is looked up,
as wsl.exe's parser reads them.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from typing import TYPE_CHECKING

from pywsl.cli import messages
from pywsl.cli.context import current_session
from pywsl.cli.report import fail, invalid_usage, print_success

if TYPE_CHECKING:
    from pywsl.api.session.user_session import UserSession

__all__ = ["manage_command", "parse_uid", "query_uid"]

UID_MAX = 0xFFFFFFFE  # (uid_t)-1 is LX_UID_INVALID


def parse_uid(output: bytes) -> int:
    """The uid `id -u` printed: digits, then line ends only (wsl.exe's wcstoul check)."""
    text = output.decode("ascii", "replace").rstrip("\r\n")
    if not text.isdigit() or not text.isascii() or int(text) > UID_MAX:
        raise fail("ERROR_INVALID_DATA", messages.UNEXPECTED_UID.format(output=text))
    return int(text)


def _read_all(fd: int, into: list[bytes]) -> None:
    while chunk := os.read(fd, 4096):
        into.append(chunk)


def query_uid(session: UserSession, distro: uuid.UUID, user: str) -> tuple[int, bytes]:
    """Run `id -u -- USER` as root in the distribution: (exit status, its stdout)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC) if hasattr(os, "pipe2") else os.pipe()  # Windows: no pipe2
    try:
        process = session.create_lx_process(
            distro, ["id", "-u", "--", user], filename="id", username="root", stdout=write_end
        )
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    # Read while waiting: the relay closes its end of stdout only after the exit-status echo.
    chunks: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(read_end, chunks), daemon=True)
    reader.start()
    status = process.wait()
    reader.join()
    os.close(read_end)
    return status, b"".join(chunks)


def manage_command(
    distro: str,
    move: str | None,
    set_default_user: str | None,
    set_sparse: str | None,
    resize: str | None,
    allow_unsafe: bool,
) -> int:
    from pywsl.cli.windows import on_windows, parse_bool, parse_size

    sparse: bool | None = None
    size: int | None = None
    if on_windows():  # wsl.exe's parser reads the values (and may fail) before the lookup
        sparse = None if set_sparse is None else parse_bool(set_sparse)
        size = None if resize is None else parse_size(resize)
    session = current_session()
    distro_id = session.get_distribution_id(distro)  # wsl.exe: an unknown name wins over the usage
    actions = [value for value in (move, set_default_user, set_sparse, resize) if value is not None]
    if len(actions) != 1:
        raise invalid_usage(messages.MANAGE_ONE_ACTION)
    if move is not None:
        session.move_distribution(distro_id, os.path.abspath(move))
    elif set_default_user is not None:
        status, output = query_uid(session, distro_id, set_default_user)
        if status != 0:
            return status
        session.configure_distribution(distro_id, default_uid=parse_uid(output))
    elif set_sparse is not None:
        value = sparse if sparse is not None else parse_bool(set_sparse)
        session.set_sparse(distro_id, value, allow_unsafe=allow_unsafe)
    elif resize is not None:
        new_size = size if size is not None else parse_size(resize)
        if on_windows():
            session.resize_distribution(distro_id, new_size)
        else:  # the tools' output goes to stderr, as wsl.exe's
            session.resize_distribution(distro_id, new_size, output=sys.stderr)
    print_success()
    return 0
