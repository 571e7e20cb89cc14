"""The utility VM's boot arguments: pywsl's "kernel command line" for ``mini_init``.

WSL passes the utility VM its settings on the kernel command line and in ``EarlyConfig`` /
``InitialConfig``. The ``namespaces`` backend starts ``python -m pywsl.guest.mini_init`` with
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
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from pywsl.guest.devices import DeviceSettings, parse_gpu_library

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


def _id_map_line(text: str) -> tuple[int, int, int]:
    parts = text.split(":")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not inside:outside:count")
    inside, outside, count = (int(part) for part in parts)
    if count == 0 or inside + count > 1 << 32 or outside + count > 1 << 32:
        raise argparse.ArgumentTypeError(f"{text!r} is not a valid id range")
    return inside, outside, count


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _gpu_library(text: str) -> tuple[str, str]:
    try:
        return parse_gpu_library(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_boot_arguments(argv: list[str]) -> BootArguments:
    parser = argparse.ArgumentParser(
        prog="python -m pywsl.guest.mini_init", description="pywsl utility VM (namespaces backend)"
    )
    parser.add_argument("--runtime-dir", required=True)
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--uid-map", type=_id_map_line, action="append", required=True)
    parser.add_argument("--gid-map", type=_id_map_line, action="append", required=True)
    parser.add_argument("--networking-mode", choices=NETWORKING_MODES, default="mirrored")
    parser.add_argument("--hostname", default="localhost")
    parser.add_argument("--instance-idle-timeout", type=int, default=15000)
    parser.add_argument("--vm-idle-timeout", type=int, default=60000)
    parser.add_argument("--owner-uid", type=int, required=True)
    parser.add_argument("--cgroup", action="append", default=[])
    parser.add_argument("--boot-timeout", type=_positive, default=30000)
    parser.add_argument("--processors", type=_positive, default=None)
    parser.add_argument("--no-nested-virtualization", action="store_true")
    parser.add_argument("--no-gpu-support", action="store_true")
    parser.add_argument("--lxcfs", default=None)
    parser.add_argument("--gpu-library", type=_gpu_library, action="append", default=[])
    options = parser.parse_args(argv)
    return BootArguments(
        runtime_dir=options.runtime_dir,
        listen_fd=options.listen_fd,
        uid_map=options.uid_map,
        gid_map=options.gid_map,
        networking_mode=options.networking_mode,
        hostname=options.hostname,
        instance_idle_timeout_ms=options.instance_idle_timeout,
        vm_idle_timeout_ms=options.vm_idle_timeout,
        owner_uid=options.owner_uid,
        cgroups=tuple(options.cgroup),
        boot_timeout_ms=options.boot_timeout,
        processors=options.processors,
        devices=DeviceSettings(
            nested_virtualization=not options.no_nested_virtualization,
            gpu_support=not options.no_gpu_support,
            gpu_libraries=tuple(options.gpu_library),
            lxcfs=options.lxcfs,
        ),
    )
