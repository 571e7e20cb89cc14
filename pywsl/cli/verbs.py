"""The management verbs of wsl.exe, declared as click commands named by their option spelling.

Each verb takes the rest of the command line (wsl.exe hands it to the verb's own ArgumentParser);
click parses it from these declarations. The work is done by the modules named in each callback,
which import the library only when they run. On Windows the disk-image verbs and options take
wsl.exe's full grammar and reach the installed WslService (`pywsl.cli.windows`); on Linux they
reach pywsl's session, which does them on the qemu backend (distributions on disk images).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import click

from pywsl.cli.completion import complete_distribution
from pywsl.cli.grammar import Verb, VerbArgument

__all__ = ["build_verbs"]

EXPORT_FORMATS = ("tar", "tar.gz", "tar.xz", "vhd")


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """A callback that imports its module when the verb runs (keeps the launch path light)."""

    def callback(**options: Any) -> Any:
        return getattr(importlib.import_module(f"pywsl.cli.{module}"), name)(**options)

    callback.__name__ = name
    return callback


_FORMAT_HELP = "text (default) or json: one JSON document on stdout, described below."


def _distro_argument(name: str = "distro", *, required: bool = True) -> click.Argument:
    return click.Argument([name], metavar="DISTRO", required=required, shell_complete=complete_distribution)


def _version_argument() -> click.Argument:
    """A version wsl.exe reads itself (`ParseVersionString`): missing, it is not a valid version."""
    return VerbArgument(["version"], metavar="VERSION")


def _output_format() -> click.Option:
    return click.Option(
        ["--format", "output_format"],
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=False,
        help=_FORMAT_HELP,
    )


def _host_help(windows: str, linux: str) -> str:
    """The help of an option that differs by host: what it does on Windows, or on Linux."""
    return windows if sys.platform == "win32" else linux


def _install() -> Verb:
    return Verb(
        "--install",
        summary="Install a distribution.",
        help="Install a distribution (see --list --online), then start its shell.",
        callback=_lazy("install_verb", "install_command"),
        params=[
            _distro_argument(required=False),
            click.Option(
                ["-d", "--distribution"],
                metavar="DISTRO",
                shell_complete=complete_distribution,
                help="The distribution to install (same as the DISTRO argument).",
            ),
            click.Option(["--name"], metavar="NAME", help="Register it under this name."),
            click.Option(["-l", "--location"], metavar="DIR", help="Install its files in DIR."),
            click.Option(
                ["--version"],
                metavar="VERSION",
                help=_host_help("The WSL version: 1 or 2 (default: the user's).", "The WSL version: 2."),
            ),
            click.Option(
                ["-f", "--from-file"],
                metavar="FILE",
                help="Install from a local .wsl or tar file (- for stdin).",
            ),
            click.Option(["-n", "--no-launch"], is_flag=True, help="Do not start it after installing."),
            click.Option(["--web-download"], is_flag=True, help="Download it from the internet."),
            click.Option(
                ["--no-distribution"],
                is_flag=True,
                help="Install no distribution (there are no components to add).",
            ),
            click.Option(
                ["--legacy"], is_flag=True, help="Use the legacy manifest (Store packages): not supported."
            ),
            click.Option(["--enable-wsl1"], is_flag=True, help="WSL 1: not supported."),
            click.Option(
                ["--vhd-size"],
                metavar="SIZE",
                help=_host_help("The size of its disk image (e.g. 64GB).", "Disk image size: not supported."),
            ),
            click.Option(
                ["--fixed-vhd"],
                is_flag=True,
                help=_host_help(
                    "Allocate the whole disk image now (needs --vhd-size).",
                    "Fixed-size disk image: not supported.",
                ),
            ),
            click.Option(["--pre-release"], is_flag=True, hidden=True),
            click.Option(["--prompt-before-exit"], is_flag=True, hidden=True),
        ],
    )


def _list() -> Verb:
    return Verb(
        "--list",
        aliases=["-l"],
        summary="List distributions.",
        help="List the registered distributions.",
        callback=_lazy("listing", "list_command"),
        params=[
            click.Option(
                ["--all", "all_"],
                is_flag=True,
                help="Include those being installed, removed, converted or exported.",
            ),
            click.Option(["--running"], is_flag=True, help="Only the running ones."),
            click.Option(["-q", "--quiet"], is_flag=True, help="Names only."),
            click.Option(
                ["-v", "--verbose"], is_flag=True, help="NAME, STATE and VERSION; * marks the default."
            ),
            click.Option(["-o", "--online"], is_flag=True, help="What --install can install."),
            _output_format(),
        ],
    )


def _import() -> Verb:
    return Verb(
        "--import",
        summary="Import a distribution from a tar file.",
        help="Register a tar (or tar.gz, tar.xz, ...) root filesystem as a new distribution installed in "
        "DIR. FILE can be - for stdin.",
        callback=_lazy("archives", "import_command"),
        missing_argument="invalid_argument",
        params=[
            click.Argument(["distro"], metavar="DISTRO"),
            click.Argument(["location"], metavar="DIR"),
            click.Argument(["file_name"], metavar="FILE"),
            click.Option(
                ["--version"],
                metavar="VERSION",
                help=_host_help("The WSL version: 1 or 2 (default: the user's).", "The WSL version: 2."),
            ),
            click.Option(
                ["--vhd"],
                is_flag=True,
                help=_host_help(
                    "FILE is a disk image.", "FILE is a disk image holding ext4 (the qemu backend)."
                ),
            ),
        ],
    )


def _export() -> Verb:
    return Verb(
        "--export",
        summary="Export a distribution to a tar file.",
        help="Write the distribution's root filesystem to FILE as a tar archive. FILE can be - for stdout.",
        callback=_lazy("archives", "export_command"),
        missing_argument="usage",
        params=[
            _distro_argument(),
            click.Argument(["file_name"], metavar="FILE"),
            click.Option(
                ["--format", "output_format"],
                type=click.Choice(EXPORT_FORMATS),
                help=_host_help(
                    "tar, tar.gz, tar.xz or vhd (default: from FILE's name, else tar).",
                    "tar, tar.gz or tar.xz (default: from FILE's name, else tar); vhd (qemu backend).",
                ),
            ),
            click.Option(
                ["--vhd"],
                is_flag=True,
                help=_host_help(
                    "Export its disk image.", "Export its disk image as a VHDX (the qemu backend)."
                ),
            ),
        ],
    )


def _manage() -> Verb:
    return Verb(
        "--manage",
        summary="Change a setting of a distribution.",
        help="Change one setting of DISTRO.",
        callback=_lazy("manage", "manage_command"),
        missing_argument="usage",
        params=[
            _distro_argument(),
            click.Option(["-m", "--move"], metavar="DIR", help="Move its files to DIR."),
            click.Option(["--set-default-user"], metavar="USER", help="Make USER its default user."),
            click.Option(
                ["-s", "--set-sparse"],
                metavar="BOOL",
                help=_host_help(
                    "Make its disk image sparse, or not (true needs --allow-unsafe).",
                    "Give freed blocks back to the host (the qemu backend; true needs --allow-unsafe).",
                ),
            ),
            click.Option(
                ["-r", "--resize"],
                metavar="SIZE",
                help=_host_help(
                    "Resize its disk image (e.g. 64GB).",
                    "Resize its disk image and file system (the qemu backend).",
                ),
            ),
            click.Option(["--allow-unsafe"], is_flag=True, hidden=True),
        ],
    )


def _mount() -> Verb:
    return Verb(
        "--mount",
        summary="Attach and mount a disk in the utility VM.",
        help="Attach DISK (a physical disk, \\\\.\\PhysicalDriveN, or with --vhd a disk image) to the "
        "utility VM and mount it under /mnt/wsl.",
        callback=_lazy("windows", "mount_command"),
        missing_argument="usage",
        params=[
            click.Argument(["disk"], metavar="DISK"),
            click.Option(["--vhd"], is_flag=True, help="DISK is a disk image (.vhd or .vhdx)."),
            click.Option(["--bare"], is_flag=True, help="Attach it only; mount nothing."),
            click.Option(["-n", "--name"], metavar="NAME", help="Mount it as /mnt/wsl/NAME."),
            click.Option(
                ["-t", "--type", "fs_type"], metavar="TYPE", help="Its filesystem (default: detected)."
            ),
            click.Option(["-o", "--options"], metavar="OPTIONS", help="Mount options."),
            click.Option(
                ["-p", "--partition"],
                metavar="INDEX",
                help="The partition to mount (default: the whole disk).",
            ),
        ],
    )


def _disk_verbs() -> list[Verb]:
    """`--import-in-place`, `--mount`, `--unmount`: the service's on Windows; on Linux the qemu
    backend's (the session refuses them with the namespaces backend)."""
    return [
        Verb(
            "--import-in-place",
            summary="Register an existing disk image as a distribution.",
            help="Register the ext4 disk image VHD as the distribution DISTRO, where it lies.",
            callback=_lazy("windows", "import_in_place_command"),
            missing_argument="usage",
            params=[
                click.Argument(["distro"], metavar="DISTRO"),
                click.Argument(["vhd_path"], metavar="VHD"),
            ],
        ),
        _mount(),
        Verb(
            "--unmount",
            summary="Unmount and detach a disk.",
            help="Unmount and detach DISK, or every disk attached with --mount.",
            callback=_lazy("windows", "unmount_command"),
            params=[click.Argument(["disk"], metavar="DISK", required=False)],
        ),
    ]


def _simple(
    name: str,
    module: str,
    callback: str,
    summary: str,
    help: str,
    *,
    aliases: tuple[str, ...] = (),
    params: tuple[click.Parameter, ...] = (),
) -> Verb:
    return Verb(
        name, aliases=aliases, summary=summary, help=help, callback=_lazy(module, callback), params=params
    )


def build_verbs() -> list[Verb]:
    """Every verb, in the order the help lists them."""
    return [
        _install(),
        _list(),
        _simple(
            "--set-default",
            "operations",
            "set_default_command",
            "Set the default distribution.",
            "Make DISTRO the default distribution.",
            aliases=("-s", "--setdefault"),
            params=(_distro_argument(),),
        ),
        _simple(
            "--terminate",
            "operations",
            "terminate_command",
            "Terminate a distribution.",
            "Stop DISTRO and every process in it.",
            aliases=("-t",),
            params=(_distro_argument(),),
        ),
        _simple(
            "--shutdown",
            "operations",
            "shutdown_command",
            "Stop every distribution and the utility VM.",
            "Stop every running distribution and the utility VM.",
            params=(
                click.Option(
                    ["--force"], is_flag=True, help="Kill the VM even if an operation is in progress."
                ),
            ),
        ),
        _import(),
        _export(),
        _simple(
            "--unregister",
            "operations",
            "unregister_command",
            "Unregister a distribution and delete its files.",
            "Unregister DISTRO and delete its root filesystem.",
            params=(_distro_argument(),),
        ),
        _manage(),
        _simple(
            "--status",
            "listing",
            "status_command",
            "Show the default distribution and version.",
            "Show the default distribution and the default version.",
            params=(_output_format(),),
        ),
        _simple(
            "--version",
            "listing",
            "version_command",
            "Show version information.",
            "Show the versions of pywsl, the kernel and Python.",
            aliases=("-v",),
        ),
        _simple(
            "--set-default-version",
            "operations",
            "set_default_version_command",
            "Set the version of new distributions.",
            "Set the WSL version of new distributions: only 2 exists here.",
            params=(_version_argument(),),
        ),
        _simple(
            "--set-version",
            "operations",
            "set_version_command",
            "Convert a distribution to another WSL version.",
            _host_help(
                "Convert DISTRO to WSL VERSION (1 or 2).",
                "Convert DISTRO to VERSION: every distribution is version 2 here.",
            ),
            params=(_distro_argument(), _version_argument()),
        ),
        *_disk_verbs(),
    ]
