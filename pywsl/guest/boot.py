"""The utility VM's boot arguments: pywsl's "kernel command line" for ``mini_init``.

WSL passes the utility VM its settings on the kernel command line and in ``EarlyConfig`` /
``InitialConfig``. The ``namespaces`` backend starts mini_init (its ``run``) with
these arguments (the host side writes them in ``pywsl.vm.backends.namespaces``):

``--runtime-dir``                the VM's runtime folder (``mini_init.sock``, ``mini_init.pid``)
``--listen-fd``                  the listening socket the host bound, inherited
``--uid-map`` / ``--gid-map``    ``inside:outside:count`` lines of the VM's user namespace
``--networking-mode``            ``mirrored`` (the host's network) or ``none`` (only ``lo``)
``--hostname``                   the VM's host name
``--instance-idle-timeout``      ms; negative = never
``--vm-idle-timeout``            ms; negative = never
``--owner-uid``                  the host user the VM belongs to
``--cgroup``                     a cgroup directory the VM runs in (repeatable)
``--boot-timeout``               ms the VM has to serve (``kernelBootTimeout``), else the boot fails
``--processors``                 how many CPUs the VM's processes may run on (CPU affinity)
``--no-nested-virtualization``   no ``/dev/kvm`` in distributions
``--no-gpu-support``             no GPU nodes or libraries in distributions
``--gpu-library``                ``name=/path``: a GPU library for ``/usr/lib/wsl/lib`` (repeatable)
``--lxcfs``                      where root's lxcfs is mounted (its ``/proc`` files go to distributions)
``--host-path``                  the host ``PATH`` of whoever booted the VM (its absolute folders): a
                                 distribution's init makes their interop PATH folders as it starts
"""

from __future__ import annotations

from pywsl.guest.devices import DeviceSettings, parse_gpu_library

TYPE_CHECKING = False  # the type checker sees dataclasses; `records` gives the same classes cheaply
if TYPE_CHECKING:
    from collections.abc import Callable
    from dataclasses import dataclass, field
    from typing import Any
else:
    from pywsl.records import dataclass, field

IdMap = list[tuple[int, int, int]]
NETWORKING_MODES = ("mirrored", "none")


@dataclass(frozen=True)
class BootArguments:
    runtime_dir: str
    listen_fd: int
    uid_map: IdMap
    gid_map: IdMap
    networking_mode: str
    hostname: str
    instance_idle_timeout_ms: int
    vm_idle_timeout_ms: int
    owner_uid: int
    cgroups: tuple[str, ...]
    boot_timeout_ms: int = 30000
    processors: int | None = None
    devices: DeviceSettings = field(default_factory=DeviceSettings)
    host_path: str = ""  # the booting caller's host PATH, a hint for the interop PATH folders


def _id_map(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise ValueError(f"{text!r} is not inside:outside:count")
    inside, outside, count = (int(part) for part in parts)
    if count == 0 or inside + count > 1 << 32 or outside + count > 1 << 32:
        raise ValueError(f"{text!r} is not a valid id range")
    return inside, outside, count


def _positive_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if value <= 0:
        raise ValueError(f"{text!r} is not a positive number")
    return value


def _networking_mode(text: str) -> str:
    if text not in NETWORKING_MODES:
        raise ValueError(f"{text!r} is not a networking mode")
    return text


# The options with a value: option -> (attribute, conversion, repeatable). The conversions are
# the parser's own types (and its choices check), so a value either converts as the parser would
# convert it, or the parser takes over and reports it.
_VALUE_OPTIONS: dict[str, tuple[str, Callable[[str], object], bool]] = {
    "--runtime-dir": ("runtime_dir", str, False),
    "--listen-fd": ("listen_fd", int, False),
    "--uid-map": ("uid_map", _id_map, True),
    "--gid-map": ("gid_map", _id_map, True),
    "--networking-mode": ("networking_mode", _networking_mode, False),
    "--hostname": ("hostname", str, False),
    "--instance-idle-timeout": ("instance_idle_timeout", int, False),
    "--vm-idle-timeout": ("vm_idle_timeout", int, False),
    "--owner-uid": ("owner_uid", int, False),
    "--cgroup": ("cgroup", str, True),
    "--boot-timeout": ("boot_timeout", _positive_number, False),
    "--processors": ("processors", _positive_number, False),
    "--lxcfs": ("lxcfs", str, False),
    "--host-path": ("host_path", str, False),
    "--gpu-library": ("gpu_library", parse_gpu_library, True),
}
_FLAGS = {
    "--no-nested-virtualization": "no_nested_virtualization",
    "--no-gpu-support": "no_gpu_support",
}
_REQUIRED = ("runtime_dir", "listen_fd", "uid_map", "gid_map", "owner_uid")
_DEFAULTS: dict[str, object] = {
    "networking_mode": "mirrored",
    "hostname": "localhost",
    "instance_idle_timeout": 15000,
    "vm_idle_timeout": 60000,
    "boot_timeout": 30000,
    "processors": None,
    "lxcfs": None,
    "host_path": "",
    "no_nested_virtualization": False,
    "no_gpu_support": False,
}


def _plain_value(text: str) -> bool:
    """A word the parser takes as an option's value: no leading "-", or a negative number."""
    return not text.startswith("-") or (len(text) > 1 and all(char in "0123456789" for char in text[1:]))


def _quick_options(argv: list[str]) -> dict[str, Any] | None:
    """The options of a well-formed command line (what the host writes: each option spelled out,
    its value in the next word), as the parser would read them; None for anything else (help, an
    abbreviation, ``--option=value``, a missing or invalid value...), which the parser handles.

    ``argparse`` (with ``gettext``) would cost every VM's start more than a millisecond."""
    options: dict[str, Any] = {"cgroup": [], "gpu_library": []}
    index = 0
    while index < len(argv):
        word = argv[index]
        if word in _FLAGS:
            options[_FLAGS[word]] = True
            index += 1
            continue
        spec = _VALUE_OPTIONS.get(word)
        if spec is None or index + 1 >= len(argv) or not _plain_value(argv[index + 1]):
            return None
        name, convert, repeatable = spec
        try:
            value = convert(argv[index + 1])
        except ValueError:
            return None
        if repeatable:
            options.setdefault(name, []).append(value)
        else:
            options[name] = value
        index += 2
    if any(name not in options for name in _REQUIRED):
        return None
    return {**_DEFAULTS, **options}


def _parsed_options(argv: list[str]) -> dict[str, Any]:
    """The options as ``argparse`` reads them (it exits with its usage message on an error)."""
    import argparse

    def argument_type(convert: Callable[[str], object]) -> Callable[[str], object]:
        def checked(text: str) -> object:
            try:
                return convert(text)
            except ValueError as error:
                raise argparse.ArgumentTypeError(str(error)) from None

        return checked

    id_map_line, positive, gpu_library = (
        argument_type(item) for item in (_id_map, _positive_number, parse_gpu_library)
    )
    parser = argparse.ArgumentParser(
        prog="python -m pywsl.guest.mini_init", description="pywsl utility VM (namespaces backend)"
    )
    parser.add_argument("--runtime-dir", required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--uid-map", type=id_map_line, action="append", required=True)
    parser.add_argument("--gid-map", type=id_map_line, action="append", required=True)
    parser.add_argument("--networking-mode", choices=NETWORKING_MODES, default="mirrored")
    parser.add_argument("--hostname", default="localhost")
    parser.add_argument("--instance-idle-timeout", type=int, default=15000)
    parser.add_argument("--vm-idle-timeout", type=int, default=60000)
    parser.add_argument("--owner-uid", type=int, required=True)
    parser.add_argument("--cgroup", action="append", default=[])
    parser.add_argument("--boot-timeout", type=positive, default=30000)
    parser.add_argument("--processors", type=positive, default=None)
    parser.add_argument("--no-nested-virtualization", action="store_true")
    parser.add_argument("--no-gpu-support", action="store_true")
    parser.add_argument("--lxcfs", default=None)
    parser.add_argument("--host-path", default="")
    parser.add_argument("--gpu-library", type=gpu_library, action="append", default=[])
    return vars(parser.parse_args(argv))


def parse_boot_arguments(argv: list[str]) -> BootArguments:
    options = _quick_options(argv)
    if options is None:
        options = _parsed_options(argv)
    return BootArguments(
        runtime_dir=options["runtime_dir"],
        listen_fd=options["listen_fd"],
        uid_map=options["uid_map"],
        gid_map=options["gid_map"],
        networking_mode=options["networking_mode"],
        hostname=options["hostname"],
        instance_idle_timeout_ms=options["instance_idle_timeout"],
        vm_idle_timeout_ms=options["vm_idle_timeout"],
        owner_uid=options["owner_uid"],
        cgroups=tuple(options["cgroup"]),
        boot_timeout_ms=options["boot_timeout"],
        processors=options["processors"],
        devices=DeviceSettings(
            nested_virtualization=not options["no_nested_virtualization"],
            gpu_support=not options["no_gpu_support"],
            gpu_libraries=tuple(options["gpu_library"]),
            lxcfs=options["lxcfs"],
        ),
        host_path=options["host_path"],
    )
