"""Make a tree built by debootstrap look like WSL's image of the same distribution.

After `debootstrap --variant=minbase --include=<image_packages(vendor)>` (`locales`, `sudo`; for
Ubuntu also `systemd`, `systemd-sysv` and `dbus`), the tree gets:

* `/etc/wsl-distribution.conf` and the first-run setup it names (`first_run_setup`): the first
  interactive launch asks for a UNIX user name and password and makes that user the default;
* the apt sources of the vendor's official image, on the host's mirrors (`apt_sources`), in
  `/etc/apt/sources.list.d/<vendor>.sources`; `/etc/apt/sources.list` only points there;
* the `en_US.UTF-8` locale, which every registration's `LANG` names (WSL's default environment),
  compiled with the tree's own `localedef`, enabled for later `locale-gen` runs and set in
  `/etc/default/locale`; the build fails when `locale -a` does not list it afterwards;
* the vendor's `/etc/wsl.conf` (`image_wsl_conf`): Ubuntu's WSL image ships `[boot] systemd=true`,
  so Ubuntu here boots with systemd as pid 1; Debian's WSL image ships no `/etc/wsl.conf` and
  runs without systemd, and so does Debian here (`[boot] systemd=true` in `/etc/wsl.conf`, after
  `apt install systemd-sysv dbus`, turns it on).

Files are written from a descriptor of the tree opened once (owner root, a directory), component
by component without following links; the locale is compiled by `chroot` into that same
descriptor (`/proc/self/fd/N`), so a path changed under the build cannot redirect any of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pywsl.api.errors import WslError, from_os_error
from pywsl.api.install.apt_sources import image_sources
from pywsl.api.install.first_run_setup import SETUP_SCRIPT, SETUP_SCRIPT_PATH, distribution_conf

__all__ = [
    "EXTRA_PACKAGES",
    "LOCALE",
    "SYSTEMD_PACKAGES",
    "image_packages",
    "image_wsl_conf",
    "make_wsl_image",
]

EXTRA_PACKAGES = ("locales", "sudo")
SYSTEMD_PACKAGES = ("systemd", "systemd-sysv", "dbus")  # systemd as /sbin/init, and its bus
# The vendors whose official WSL image boots with systemd (Ubuntu's /etc/wsl.conf: [boot] systemd=true).
_SYSTEMD_VENDORS = frozenset({"ubuntu"})
LOCALE = "en_US.UTF-8"
_LOCALE_GEN_LINE = "en_US.UTF-8 UTF-8"
_COMMAND_TIMEOUT = 600.0
_ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root"}
_KEYRINGS = {
    "debian": ("debian-archive-keyring.pgp", "debian-archive-keyring.gpg"),
    "ubuntu": ("ubuntu-archive-keyring.pgp", "ubuntu-archive-keyring.gpg"),
}
# Linux's flags; read with getattr so that the module imports on Windows, where nothing is built.
_DIRECTORY_FLAGS = os.O_RDONLY | sum(
    getattr(os, flag, 0) for flag in ("O_DIRECTORY", "O_NOFOLLOW", "O_CLOEXEC")
)


def image_packages(vendor: str) -> tuple[str, ...]:
    """What debootstrap adds to minbase for `vendor`'s image (`--include`)."""
    return EXTRA_PACKAGES + (SYSTEMD_PACKAGES if vendor in _SYSTEMD_VENDORS else ())


def image_wsl_conf(vendor: str) -> str | None:
    """The `/etc/wsl.conf` of `vendor`'s image, or None when its official image ships none."""
    if vendor not in _SYSTEMD_VENDORS:
        return None
    return "[boot]\nsystemd=true\n"


def _failure(text: str) -> WslError:
    return WslError("WSL_E_INSTALL_PROCESS_FAILED", text)


def _open_directory(root_fd: int, path: str, *, create: bool) -> int:
    """A descriptor of `path` (relative to the tree) reached without following any link."""
    current = os.dup(root_fd)
    try:
        for part in filter(None, path.strip("/").split("/")):
            try:
                following = os.open(part, _DIRECTORY_FLAGS, dir_fd=current)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o755, dir_fd=current)
                following = os.open(part, _DIRECTORY_FLAGS, dir_fd=current)
            os.close(current)
            current = following
        return current
    except BaseException:
        os.close(current)
        raise


def _write(root_fd: int, path: str, text: str, mode: int) -> None:
    """Replace the file at `path` in the tree (root-owned, `mode`)."""
    folder, _, name = path.strip("/").rpartition("/")
    parent = _open_directory(root_fd, folder, create=True)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=parent
        )
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            os.fchown(stream.fileno(), 0, 0)
            os.fchmod(stream.fileno(), mode)
            stream.write(text)
    finally:
        os.close(parent)


def _read(root_fd: int, path: str) -> str | None:
    """The text of a regular file in the tree, or None when it is missing (links are not followed)."""
    folder, _, name = path.strip("/").rpartition("/")
    try:
        parent = _open_directory(root_fd, folder, create=False)
    except FileNotFoundError:
        return None
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=parent)
    except FileNotFoundError:
        return None
    finally:
        os.close(parent)
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            return None
        return stream.read().decode("utf-8", errors="replace")


def _exists(root_fd: int, path: str) -> bool:
    folder, _, name = path.strip("/").rpartition("/")
    try:
        parent = _open_directory(root_fd, folder, create=False)
    except OSError:
        return False
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
        return True
    except OSError:
        return False
    finally:
        os.close(parent)


def _end(process: subprocess.Popen[bytes]) -> None:
    """Kill the command's whole group (it runs in its own session) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _in_tree(root_fd: int, command: Sequence[str], log: Path) -> str:
    """Run `command` chrooted into the tree; its stdout. Bounded in time; killed with its group when late
    or interrupted."""
    chroot = shutil.which("chroot", path=_ENVIRONMENT["PATH"])
    if chroot is None:
        raise _failure("chroot (coreutils) is not installed on this host")
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            [chroot, f"/proc/self/fd/{root_fd}", *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log_file,
            pass_fds=(root_fd,),
            start_new_session=True,
            env=_ENVIRONMENT,
        )
    try:
        output, _ = process.communicate(timeout=_COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        _end(process)
        raise _failure(
            f"'{' '.join(command)}' in the built tree did not finish in {_COMMAND_TIMEOUT:.0f} s; see {log}"
        ) from None
    except BaseException:
        _end(process)
        raise
    if process.returncode != 0:
        raise _failure(
            f"'{' '.join(command)}' in the built tree failed with exit status {process.returncode}; see {log}"
        )
    return output.decode("utf-8", errors="replace")


def _enable_locale(root_fd: int) -> None:
    """Name the locale where `locale-gen` looks (Debian: /etc/locale.gen, Ubuntu: supported.d)."""
    current = _read(root_fd, "etc/locale.gen")
    if current is not None:
        lines = current.splitlines()
        uncommented = [
            _LOCALE_GEN_LINE if line.lstrip("# ").strip() == _LOCALE_GEN_LINE else line for line in lines
        ]
        if _LOCALE_GEN_LINE not in uncommented:
            uncommented.append(_LOCALE_GEN_LINE)
        _write(root_fd, "etc/locale.gen", "\n".join(uncommented) + "\n", 0o644)
    if _exists(root_fd, "var/lib/locales/supported.d"):
        _write(root_fd, "var/lib/locales/supported.d/en", _LOCALE_GEN_LINE + "\n", 0o644)
    _write(root_fd, "etc/default/locale", f"LANG={LOCALE}\n", 0o644)


def _generate_locale(root_fd: int, log: Path) -> None:
    name, _, charset = LOCALE.partition(".")
    _in_tree(root_fd, ["localedef", "-i", name, "-c", "-f", charset, LOCALE], log)
    available = {
        line.strip().lower().replace("-", "")
        for line in _in_tree(root_fd, ["locale", "-a"], log).splitlines()
    }
    if LOCALE.lower().replace("-", "") not in available:
        raise _failure(f"{LOCALE} is not among the built tree's locales after localedef; see {log}")


def _signed_by(root_fd: int, vendor: str) -> str | None:
    for name in _KEYRINGS[vendor]:
        if _exists(root_fd, f"usr/share/keyrings/{name}"):
            return f"/usr/share/keyrings/{name}"
    return None


def _write_sources(root_fd: int, vendor: str, suite: str, mirror: str, security_mirror: str) -> None:
    sources = image_sources(vendor, suite, mirror, security_mirror, _signed_by(root_fd, vendor))
    _write(root_fd, f"etc/apt/sources.list.d/{vendor}.sources", sources, 0o644)
    _write(
        root_fd,
        "etc/apt/sources.list",
        f"# This image's apt sources are in /etc/apt/sources.list.d/{vendor}.sources\n",
        0o644,
    )


def make_wsl_image(
    tree: Path, *, name: str, vendor: str, suite: str, mirror: str, security_mirror: str, log: Path
) -> None:
    """Turn the debootstrap tree at `tree` into a WSL-like image (see the module's text)."""
    try:
        root_fd = os.open(tree, _DIRECTORY_FLAGS)
    except OSError as error:
        raise from_os_error(error, what=str(tree)) from None
    try:
        info = os.fstat(root_fd)
        if info.st_uid != 0 or not stat.S_ISDIR(info.st_mode):
            raise _failure(f"{tree} is not the root-owned tree debootstrap built")
        _write(root_fd, "etc/wsl-distribution.conf", distribution_conf(name), 0o644)
        _write(root_fd, SETUP_SCRIPT_PATH, SETUP_SCRIPT, 0o755)
        _write_sources(root_fd, vendor, suite, mirror, security_mirror)
        wsl_conf = image_wsl_conf(vendor)
        if wsl_conf is not None:
            _write(root_fd, "etc/wsl.conf", wsl_conf, 0o644)
        _enable_locale(root_fd)
        _generate_locale(root_fd, log)
    except OSError as error:
        raise from_os_error(error) from None
    finally:
        os.close(root_fd)
