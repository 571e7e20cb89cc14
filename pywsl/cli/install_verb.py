"""`--install [Distro]`: install a distribution from the manifest, a local build or a file.

The options and their checks are wsl.exe's (`Install` in `WslClient.cpp`): a distribution name (or
the legacy `--distribution`), `--name`, `--location`, `--version`, `--from-file` (not together with
a name), `--no-launch`, `--web-download`, `--no-distribution` (not together with a name; there are
no optional components to install here, so it only succeeds). The installer
(`pywsl.api.install.installer.install`) registers the distribution; then, unless `--no-launch`, its shell is
started as for a bare `pywsl -d <name>`. WSL 1 and `--legacy` (Store packages) have no
counterpart here and fail clearly; `--vhd-size`/`--fixed-vhd` size the new distribution's disk
on the qemu backend (the namespaces backend's session refuses them).

On Windows the session is the installed WslService, as for wsl.exe: the image is downloaded to the
temporary folder and registered through `RegisterDistribution`, with `--version` 1 or 2 (the user's
default when absent) and `--vhd-size`/`--fixed-vhd` passed on; nothing is built locally.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from pywsl.cli import messages
from pywsl.cli.archives import STDIO_NAME, stdio_source
from pywsl.cli.context import current_session
from pywsl.cli.grammar import Invocation
from pywsl.cli.launch import launch_process
from pywsl.cli.operations import parse_version
from pywsl.cli.progress import TransferProgress
from pywsl.cli.report import fail, print_error, print_success, print_warning

__all__ = ["install_command"]


def _check(
    target: str | None,
    from_file: str | None,
    no_distribution: bool,
    vhd_size: str | None,
    fixed_vhd: bool,
    enable_wsl1: bool,
    version: str | None,
) -> tuple[int, int | None]:
    """wsl.exe's checks of the options; returns the WSL version to ask for (here 2; on Windows 1, 2,
    or 0 for the user's default) and the `--vhd-size` in bytes."""
    from pywsl.cli.windows import on_windows, parse_size

    size = parse_size(vhd_size) if vhd_size is not None else None
    if no_distribution and target is not None:
        raise fail(
            "E_INVALIDARG",
            messages.ARGUMENTS_NOT_VALID_TOGETHER.format(first="--no-distribution", second="--distribution"),
        )
    if fixed_vhd and vhd_size is None:
        raise fail(
            "E_INVALIDARG",
            messages.ARGUMENT_NOT_VALID_WITHOUT.format(argument="--fixed-vhd", required="--vhd-size"),
        )
    if from_file is not None and target is not None:
        raise fail(
            "E_INVALIDARG",
            messages.ARGUMENTS_NOT_VALID_TOGETHER.format(first="--from-file", second="--distribution"),
        )
    if enable_wsl1:
        raise fail("WSL_E_WSL1_NOT_SUPPORTED", messages.WSL1_NOT_SUPPORTED)
    number = 0 if version is None else parse_version(version, allow_wsl1=on_windows())
    return (number if on_windows() else 2), size


def install_command(
    distro: str | None,
    distribution: str | None,
    name: str | None,
    location: str | None,
    version: str | None,
    from_file: str | None,
    no_launch: bool,
    web_download: bool,
    no_distribution: bool,
    legacy: bool,
    enable_wsl1: bool,
    vhd_size: str | None,
    fixed_vhd: bool,
    pre_release: bool,
    prompt_before_exit: bool,
) -> int:
    # --pre-release is accepted and unused, as in wsl.exe (it concerns WSL's own package).
    try:
        return _install(
            distro,
            distribution,
            name,
            location,
            version,
            from_file,
            no_launch,
            web_download,
            no_distribution,
            legacy,
            enable_wsl1,
            vhd_size,
            fixed_vhd,
        )
    finally:
        if prompt_before_exit:
            from pywsl.cli.key_prompt import prompt_for_key_press

            prompt_for_key_press()


def _install(
    distro: str | None,
    distribution: str | None,
    name: str | None,
    location: str | None,
    version: str | None,
    from_file: str | None,
    no_launch: bool,
    web_download: bool,
    no_distribution: bool,
    legacy: bool,
    enable_wsl1: bool,
    vhd_size: str | None,
    fixed_vhd: bool,
) -> int:
    target = distribution if distribution is not None else distro
    number, size = _check(target, from_file, no_distribution, vhd_size, fixed_vhd, enable_wsl1, version)
    if no_distribution:
        print_success()
        return 0
    from pywsl.api.install.installer import install

    session = current_session()
    source: str | int | BinaryIO | None = stdio_source(True) if from_file == STDIO_NAME else from_file
    with TransferProgress(None, in_bytes=False) as display:
        info = install(
            session,
            target,
            name=name,
            location=None if location is None else os.path.abspath(location),
            no_launch=True,
            from_file=source,
            version=number,
            web_download=web_download,
            legacy=legacy,
            progress=display,
            on_status=display.status,
            on_warning=print_warning,
            vhd_size=size,
            fixed_vhd=fixed_vhd and size is not None,
        )
    if no_launch:
        return 0
    # Launched here rather than by the installer, once the progress display is gone.
    print_error(messages.LAUNCHING_DISTRO.format(name=info.name))
    return launch_process(session, info.id, Invocation("shell"))
