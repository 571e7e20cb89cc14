"""`wsl --install`: install a distribution from WSL's manifest, a local file, or a local build.

The steps are WSL's (`WslInstall::InstallModernDistribution` and the `--from-file` branch of
`WslClient`): find the entry (append manifest first), fail early if the name is taken, download the
image to a temporary file beside its destination (a `file://` URL is used in place), check its
SHA-256, register it with OOBE enabled (`--import` never enables it), then launch the default
shell unless `--no-launch`. Legacy (Store) entries cannot be installed here
(`WSL_E_DISTRO_ONLY_AVAILABLE_FROM_STORE`).

pywsl adds the built-in source (`builtin_catalog`, `builtin_source`): Debian and Ubuntu built with
debootstrap when the name is not in the manifest or the manifest cannot be fetched; without a name
it is the host's own family. One this host cannot build (no debootstrap, or no archive keyring for
its vendor) fails with the reason and the package to install, and is listed as unavailable. Root
builds it here; a client of the service (an unprivileged user) asks the service to build it as root
and import it for the caller (`InstallBuiltinDistribution`, `builtin_service`), with the same steps
and progress.

On Windows (the session is the installed WslService, `pywsl.api.com`) the install is WSL's own:
the manifest's image is downloaded to the temporary folder and registered through the service's
`RegisterDistribution` with `--vhd-size`/`--fixed-vhd` when given; nothing is built locally
(debootstrap needs a Linux host), and the configuration (the manifest URLs) is the session's.

A failed or interrupted install leaves nothing registered (the session rolls its registration back)
and no file behind: temporaries are removed on every way out, and one left by a killed install is
removed by the next install that uses the same folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pywsl.api.errors import WslError, from_os_error
from pywsl.api.install import builtin_catalog, builtin_source
from pywsl.api.install.download import (
    TemporaryFile,
    clean_stale_temporaries,
    download_to,
    local_path,
    open_local_file,
    verify_sha256,
)
from pywsl.api.install.manifest import (
    AvailableDistributions,
    LegacyDistribution,
    ModernVersion,
    load_available,
    lookup,
    online_names,
    resolve_sources,
)
from pywsl.api.install.oobe import run_oobe_if_pending
from pywsl.api.session.paths import user_paths
from pywsl.api.session.registry import validate_name
from pywsl.api.session.wslconfig import WslConfig, load_wslconfig

__all__ = [
    "PROGRAM",
    "InstallInterrupted",
    "OnlineDistribution",
    "install",
    "launch_default_shell",
    "list_online",
]

PROGRAM = "pywsl"

Progress = Callable[[int, int | None], Any]
Message = Callable[[str], Any]
Source = str | os.PathLike[str] | IO[bytes] | int
# Open flags that only some systems have (O_BINARY: Windows' C runtime, text mode otherwise).
_READ_FLAGS = (
    os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
)


def _on_windows() -> bool:
    return sys.platform == "win32"


@dataclass(frozen=True)
class OnlineDistribution:
    """One line of `--list --online`."""

    name: str
    friendly_name: str
    is_default: bool
    source: str  # "manifest" or "built-in"
    url: str | None = None  # the image for this machine (manifest entries)
    sha256: str | None = None
    unavailable: str | None = None  # why this host cannot install it, and what to install first


def _config(config: WslConfig | None, session: Any = None) -> WslConfig:
    """The configuration given, the session's (in-process, or Windows'), or this process's user's
    (on Windows without a session: the defaults; the service reads `.wslconfig` itself)."""
    if config is not None:
        return config
    if session is not None and callable(getattr(session, "config", None)):
        found = session.config()
        if isinstance(found, WslConfig):
            return found
    if _on_windows():
        return WslConfig()
    paths = user_paths(os.geteuid(), Path.home(), os.environ)
    return load_wslconfig(paths.config_file, home=paths.home)


def _load(config: WslConfig) -> AvailableDistributions:
    sources = resolve_sources(config.distribution_list_url, config.distribution_list_url_append)
    return load_available(sources)


def list_online(
    config: WslConfig | None = None, *, on_warning: Message | None = None
) -> list[OnlineDistribution]:
    """`--list --online`: the manifests' entries (at most four versions per family, the append
    manifest first), then the distributions pywsl builds itself that the manifests do not name,
    each with the reason when this host cannot build it (`unavailable`).

    When the manifest cannot be fetched, the built-in entries are listed alone (the error goes to
    `on_warning`), the host's default one marked as the default; with no built-in entry either, the
    error is raised.
    """
    effective = _config(config)
    builtins = _builtin_catalog()
    result: list[OnlineDistribution] = []
    try:
        available = _load(effective)
    except WslError as error:
        if not builtins:
            raise
        if on_warning is not None:
            on_warning(error.message)
        available = None
    if available is not None:
        default_entry: ModernVersion | LegacyDistribution | None = None
        if available.default is not None:
            with contextlib.suppress(WslError):
                default_entry = lookup(available, available.default)
        for name, friendly, entry in online_names(available):
            url = entry.archive.url if isinstance(entry, ModernVersion) else entry.package_url
            sha = entry.archive.sha256 if isinstance(entry, ModernVersion) else None
            result.append(OnlineDistribution(name, friendly, entry is default_entry, "manifest", url, sha))
    listed = {entry.name.casefold() for entry in result}
    host_default = builtin_catalog.default_builtin(builtins) if available is None and builtins else None
    for built in builtins:
        if built.name.casefold() not in listed:
            result.append(
                OnlineDistribution(
                    built.name,
                    built.friendly_name,
                    built is host_default,
                    "built-in",
                    unavailable=built.unavailable,
                )
            )
    return result


# -- install -----------------------------------------------------------------------------------


def _work_folder(session: Any, location: str | os.PathLike[str] | None, config: WslConfig) -> Path:
    """Where temporaries go: beside the distribution's folder (the given location, or the default
    install folder, `<distributionInstallPath>/<guid>`); on Windows the temporary folder, as WSL's
    `DownloadFile`."""
    if _on_windows():
        return Path(tempfile.gettempdir())
    if location is not None:
        parent = Path(os.path.abspath(os.fspath(location))).parent
        if parent.is_dir():
            return parent
    paths = getattr(session, "paths", None)
    data_dir = getattr(paths, "data_dir", None)
    if not isinstance(data_dir, Path):
        data_dir = user_paths(os.geteuid(), Path.home(), os.environ).data_dir
    folder = config.distribution_install_path or data_dir
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise from_os_error(error) from None
    return folder


def _ensure_name_free(session: Any, name: str) -> None:
    """WSL's early check (`GetDistributionId(..., LIST_ALL)` must fail with DISTRO_NOT_FOUND)."""
    validate_name(name)
    try:
        session.get_distribution_id(name, list_all=True)
    except WslError as error:
        if error.code == "WSL_E_DISTRO_NOT_FOUND":
            return
        raise
    raise WslError("ERROR_ALREADY_EXISTS", "A distribution with the supplied name already exists.")


def _size_of(fd: int) -> int | None:
    try:
        return os.fstat(fd).st_size or None
    except OSError:
        return None


def _register(
    session: Any,
    name: str | None,
    fd: int,
    *,
    location: str | os.PathLike[str] | None,
    version: int,
    progress: Progress | None,
    disk: dict[str, Any],
) -> Any:
    os.lseek(fd, 0, os.SEEK_SET)
    total = _size_of(fd)

    def imported(done: int) -> None:
        if progress is not None:
            progress(done, total)

    return session.register_distribution(
        name,
        fd,
        location=None if location is None else os.path.abspath(os.fspath(location)),
        version=version,
        run_oobe=True,
        progress=imported if progress is not None else None,
        **disk,
    )


def _install_modern(
    session: Any,
    entry: ModernVersion,
    *,
    name: str | None,
    location: Any,
    version: int,
    config: WslConfig,
    progress: Progress | None,
    on_status: Message | None,
    disk: dict[str, Any],
) -> Any:
    target = name or entry.name
    _ensure_name_free(session, target)
    path = local_path(entry.archive.url)
    if path is not None:
        try:
            fd = open_local_file(path, entry.archive.url)
        except OSError as error:
            raise from_os_error(error, what=entry.archive.url) from None
        try:
            verify_sha256(fd, entry.archive.sha256)
            _say(on_status, f"Installing: {entry.friendly_name}")
            return _register(
                session, target, fd, location=location, version=version, progress=progress, disk=disk
            )
        finally:
            os.close(fd)
    folder = _work_folder(session, location, config)
    clean_stale_temporaries(folder)
    with TemporaryFile(folder, entry.name, ".wsl") as download:
        _say(on_status, f"Downloading: {entry.friendly_name}")
        download_to(entry.archive.url, download, progress=progress)
        verify_sha256(download.fd, entry.archive.sha256)
        _say(on_status, f"Installing: {entry.friendly_name}")
        return _register(
            session, target, download.fd, location=location, version=version, progress=progress, disk=disk
        )


def _install_builtin(
    session: Any,
    entry: builtin_catalog.BuiltinDistribution,
    *,
    name: str | None,
    location: Any,
    version: int,
    config: WslConfig,
    progress: Progress | None,
    on_status: Message | None,
    disk: dict[str, Any],
) -> Any:
    target = name or entry.name
    _ensure_name_free(session, target)
    through_service = getattr(session, "install_builtin_distribution", None)
    if callable(through_service):
        # A client of the service: root builds it there (debootstrap needs root) and imports it
        # for this user; the steps and the progress come back as they would here.
        absolute = None if location is None else os.path.abspath(os.fspath(location))
        return through_service(
            entry.name,
            name=target,
            location=absolute,
            version=version,
            progress=progress,
            on_status=on_status,
            **disk,
        )
    folder = _work_folder(session, location, config)
    clean_stale_temporaries(folder)
    _say(on_status, builtin_source.build_status(entry))

    def built(done: int, total: int, _text: str) -> None:
        if progress is not None:
            progress(done, total)

    archive = builtin_source.build_rootfs_archive(entry, folder, progress=built)
    try:
        _say(on_status, f"Installing: {entry.friendly_name}")
        return _register(
            session, target, archive.fd, location=location, version=version, progress=progress, disk=disk
        )
    finally:
        archive.close()


def _install_from_file(
    session: Any,
    source: Source,
    *,
    name: str | None,
    location: Any,
    version: int,
    progress: Progress | None,
    on_status: Message | None,
    disk: dict[str, Any],
) -> Any:
    if isinstance(source, (str, os.PathLike)) and os.fspath(source) == "-":
        label, opened = "<stdin>", 0
        owned = False
    elif isinstance(source, (str, os.PathLike)):
        label = os.fspath(source)
        try:
            opened = os.open(label, _READ_FLAGS)
        except OSError as error:
            raise from_os_error(error) from None
        owned = True
    elif isinstance(source, int):
        label, opened, owned = "<file>", source, False
    else:
        label = str(getattr(source, "name", None) or "<file>")
        opened, owned = -1, False
        with contextlib.suppress(OSError, ValueError, AttributeError):
            opened = source.fileno()
    if name is not None:
        validate_name(name)
    _say(on_status, f"Installing: {label}")
    try:
        total = _size_of(opened) if opened >= 0 else None

        def imported(done: int) -> None:
            if progress is not None:
                progress(done, total)

        return session.register_distribution(
            name,
            opened if opened >= 0 else source,
            location=None if location is None else os.path.abspath(os.fspath(location)),
            version=version,
            run_oobe=True,
            progress=imported if progress is not None else None,
            **disk,
        )
    finally:
        if owned:
            os.close(opened)


class InstallInterrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived during an install: raised so that every cleanup runs."""


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP (whose default kills without cleanup) into an exception while installing.

    Only in the main thread, and only for signals nobody else handles.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(number: int, frame: FrameType | None) -> None:
        raise InstallInterrupted(f"interrupted by signal {number}")

    previous: dict[signal.Signals, Any] = {}
    hangup = getattr(signal, "SIGHUP", None)  # none on Windows
    for number in (signal.SIGTERM, hangup):
        if number is not None and signal.getsignal(number) == signal.SIG_DFL:
            previous[number] = signal.signal(number, handler)
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


def _say(callback: Message | None, text: str) -> None:
    if callback is not None:
        callback(text)


Entry = ModernVersion | LegacyDistribution | builtin_catalog.BuiltinDistribution


def _builtin_catalog() -> list[builtin_catalog.BuiltinDistribution]:
    """The distributions built locally: none on Windows (debootstrap needs a Linux host)."""
    return [] if _on_windows() else builtin_catalog.builtin_catalog()


def _builtin_for(name: str | None, context: str = "") -> builtin_catalog.BuiltinDistribution | None:
    """The built-in entry named `name` (None: the host's default one), or None (always on
    Windows); one this host cannot build is an error saying why."""
    if _on_windows():
        return None
    entry = builtin_catalog.lookup_builtin(
        name if name is not None else builtin_catalog.default_builtin().name
    )
    return None if entry is None else builtin_catalog.require_buildable(entry, context)


def _resolve_entry(
    distro: str | None, config: WslConfig, *, legacy: bool, on_warning: Message | None
) -> Entry:
    """The manifest entry, or the built-in one when the manifest lacks it or cannot be fetched."""
    try:
        available = _load(config)
    except WslError as error:
        fallback = _builtin_for(distro, error.message)
        if fallback is None:
            raise
        _say(on_warning, f"{error.message}\nUsing the distribution built locally instead.")
        return fallback
    wanted = distro if distro is not None else available.default
    if wanted is None:
        raise WslError(
            "E_UNEXPECTED",
            "No default distribution has been configured. Please provide a distribution to install.",
        )
    try:
        return lookup(available, wanted, legacy=legacy, on_warning=on_warning)
    except WslError as error:
        if error.code != "WSL_E_DISTRO_NOT_FOUND":
            raise
        fallback = _builtin_for(wanted)
        if fallback is None:
            raise
        return fallback


def install(
    session: Any,
    distro: str | None = None,
    *,
    name: str | None = None,
    location: str | os.PathLike[str] | None = None,
    no_launch: bool = False,
    from_file: Source | None = None,
    version: int = 2,
    web_download: bool = False,
    legacy: bool = False,
    progress: Progress | None = None,
    launch: Callable[[Any], Any] | None = None,
    config: WslConfig | None = None,
    on_status: Message | None = None,
    on_warning: Message | None = None,
    vhd_size: int | None = None,
    fixed_vhd: bool = False,
) -> Any:
    """`wsl --install [distro]` / `--install --from-file`: returns the new `DistributionInfo`.

    `progress(done, total)` follows each long step in turn (download bytes, build permille, import
    bytes; `total` None when unknown). `on_status` gets WSL's step messages ("Downloading: X",
    "Installing: X", the success line, "Launching X..."), `on_warning` the warnings. Unless
    `no_launch`, the default shell is launched afterwards: `launch(info)` when given (the caller
    then owns the exit status and runs OOBE on its launch path), else `launch_default_shell`.
    `web_download` is accepted as in WSL (images are always downloaded directly). `vhd_size` and
    `fixed_vhd` go to `register_distribution` only when given (a session with disk images: Windows',
    or pywsl's on the qemu backend).
    """
    del web_download  # Store installs do not exist here: every image is a direct download
    if version not in (0, 1, 2):
        raise WslError("E_INVALIDARG", f"Invalid WSL version {version}.")
    if from_file is not None and distro is not None:
        raise WslError(
            "E_INVALIDARG", "The arguments '--from-file' and '--distribution' are not valid together."
        )
    if fixed_vhd and vhd_size is None:
        raise WslError("E_INVALIDARG", "The argument '--fixed-vhd' is not valid without '--vhd-size'.")
    disk: dict[str, Any] = {} if vhd_size is None else {"vhd_size": vhd_size, "fixed_vhd": fixed_vhd}
    with _signals_interrupt():
        info = _install(
            session,
            distro,
            name=name,
            location=location,
            from_file=from_file,
            version=version,
            legacy=legacy,
            progress=progress,
            config=config,
            on_status=on_status,
            on_warning=on_warning,
            disk=disk,
        )
    _say(on_status, f"Distribution successfully installed. It can be launched via '{PROGRAM} -d {info.name}'")
    if not no_launch:
        _say(on_status, f"Launching {info.name}...")
        if launch is not None:
            launch(info)
        else:
            launch_default_shell(session, info.id)
    return info


def _install(
    session: Any,
    distro: str | None,
    *,
    name: str | None,
    location: Any,
    from_file: Source | None,
    version: int,
    legacy: bool,
    progress: Progress | None,
    config: WslConfig | None,
    on_status: Message | None,
    on_warning: Message | None,
    disk: dict[str, Any],
) -> Any:
    if from_file is not None:
        info = _install_from_file(
            session,
            from_file,
            name=name,
            location=location,
            version=version,
            progress=progress,
            on_status=on_status,
            disk=disk,
        )
    else:
        effective = _config(config, session)
        entry = _resolve_entry(distro, effective, legacy=legacy, on_warning=on_warning)
        if isinstance(entry, LegacyDistribution):
            for given, option in (
                (name, "--name"),
                (location, "--location"),
                (disk.get("vhd_size"), "--vhd-size"),
                (disk.get("fixed_vhd") or None, "--fixed-vhd"),
            ):
                if given is not None:
                    raise WslError(
                        "WSL_E_INVALID_USAGE",
                        f"'{option}' is not supported when installing legacy distributions.",
                    )
            raise WslError(
                "WSL_E_DISTRO_ONLY_AVAILABLE_FROM_STORE",
                f"{entry.friendly_name or entry.name}: this distribution is only available from "
                "the Microsoft Store.",
            )
        if isinstance(entry, ModernVersion):
            info = _install_modern(
                session,
                entry,
                name=name,
                location=location,
                version=version,
                config=effective,
                progress=progress,
                on_status=on_status,
                disk=disk,
            )
        else:
            info = _install_builtin(
                session,
                entry,
                name=name,
                location=location,
                version=version,
                config=effective,
                progress=progress,
                on_status=on_status,
                disk=disk,
            )
    return info


def launch_default_shell(
    session: Any, distro: str | uuid.UUID | None, *, stdin: Any = None, stdout: Any = None, stderr: Any = None
) -> int:
    """What `wsl -d X` with no command does: OOBE when pending, then the user's login shell."""
    status = run_oobe_if_pending(session, distro, stdin=stdin, stdout=stdout, stderr=stderr)
    if status is not None:
        return status
    process = session.create_lx_process(distro, (), login=True, stdin=stdin, stdout=stdout, stderr=stderr)
    return int(process.wait())
