"""`benchmarks/run --backend qemu`: the qemu backend beside the namespaces backend, same run.

Each backend gets a private workspace (configuration, registry, VM runtime folder) and a busybox
distribution imported through the command line; then, for each: cold start (``--shutdown``, then
the first ``-e true``, boot included), warm launch (``-e true`` with the VM and the distribution
running), pipe throughput (zeros through ``cat``, beside the host's own ``cat``) and the PSS of
the VM's processes with the idle distribution. Under TCG guest code runs 50 to 100 times slower
than with KVM: the figures are reported, not judged. The goals on a KVM host: cold start
<= 1.5 s, warm launch <= 2x the namespaces backend, pipe >= 0.8x ``cat``, idle PSS <= 300 MiB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench_proc import BenchError, descendants, pipe_stream, pss_bytes, run_checked, timed_run
from bench_rootfs import build_busybox_archive

MIB = 1 << 20
KERNEL_CACHE = Path(tempfile.gettempdir()) / "pywsl-qemu-kernel"


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/run --backend qemu", description=__doc__)
    parser.add_argument("--backend", choices=("qemu",), required=True)
    parser.add_argument("--kernel", type=Path, help="the guest kernel ([wsl2] kernel)")
    parser.add_argument("--modules", type=Path, help="its modules tree ([wsl2] kernelModules)")
    parser.add_argument("--repeat", type=int, default=5, metavar="N", help="warm launches and pipe runs")
    parser.add_argument("--cold", type=int, default=2, metavar="N", help="cold starts per backend")
    parser.add_argument("--stream-mib", type=int, default=16, metavar="MIB", help="bytes through cat")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp"))
    return parser.parse_args(list(argv))


def _default_kernel() -> tuple[Path, Path]:
    """The kernel CI unpacks (tests/qemu_guest_setup.py), else the host's own."""
    for image in sorted(KERNEL_CACHE.glob("linux-image-*/boot/vmlinuz-*")):
        release = image.name.removeprefix("vmlinuz-")
        return image, image.parents[1] / "lib" / "modules" / release
    release = os.uname().release
    return Path(f"/boot/vmlinuz-{release}"), Path(f"/lib/modules/{release}")


class Workspace:
    """A private configuration, registry and runtime folder for one backend."""

    def __init__(self, root: Path, backend: str, kernel: tuple[Path, Path]) -> None:
        self.root = root
        config = root / "config" / "pywsl"
        for folder in (config, root / "home", root / "run"):
            folder.mkdir(parents=True)
        settings = "[general]\ninstanceIdleTimeout=600000\n[wsl2]\nvmIdleTimeout=600000\n"
        if backend == "qemu":
            settings += f"kernel={kernel[0]}\nkernelModules={kernel[1]}\nkernelBootTimeout=300000\n"
            settings += "memory=1GB\n[pywsl]\nbackend=qemu\n"
        (config / "wslconfig").write_text(settings)
        package_root = Path(__file__).resolve().parents[1]
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root / "home"),
            "XDG_DATA_HOME": str(root / "data"),
            "XDG_CONFIG_HOME": str(root / "config"),
            "PYWSL_RUNTIME_ROOT": str(root / "run"),
            "PYWSL_CACHE_ROOT": str(root / "cache"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(package_root),
        }
        self.runtime_dir = root / "run" / str(os.geteuid())

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pywsl.cli.main", *args]

    def vm_pss(self) -> int:
        try:
            roots = [int(word) for word in (self.runtime_dir / "mini_init.pid").read_text().split()]
        except (OSError, ValueError):
            return 0
        return sum(pss_bytes(pid) or 0 for pid in descendants(roots))


def _measure(space: Workspace, arguments: argparse.Namespace, archive: Path) -> dict[str, float]:
    run_checked(space.argv("--import", "Bench", str(space.root / "bench"), str(archive)), space.env)
    true = space.argv("-d", "Bench", "-e", "true")
    cold = []
    for _ in range(arguments.cold):
        run_checked(space.argv("--shutdown"), space.env)
        cold.append(timed_run(true, space.env)[0])
    warm = [timed_run(true, space.env)[0] for _ in range(arguments.repeat)]
    total = arguments.stream_mib * MIB
    cat = space.argv("-d", "Bench", "-e", "cat")
    pipe = [pipe_stream(cat, space.env, total).steady_rate(total) for _ in range(arguments.repeat)]
    return {
        "cold start (s)": statistics.median(cold),
        "warm launch (s)": statistics.median(warm),
        "pipe (MiB/s)": statistics.median(pipe) / MIB,
        "idle VM PSS (MiB)": space.vm_pss() / MIB,
    }


def main(argv: Sequence[str]) -> int:
    arguments = parse_arguments(argv)
    if os.geteuid() != 0:
        print("benchmarks/run: the benchmark runs pywsl's VM in-process and needs root", file=sys.stderr)
        return 2
    kernel = (arguments.kernel, arguments.modules) if arguments.kernel else _default_kernel()
    scratch = Path(tempfile.mkdtemp(prefix="pywsl-bench-qemu-", dir=arguments.workdir))
    spaces: list[Workspace] = []
    try:
        archive = build_busybox_archive(scratch / "busybox.tar.gz")
        total = arguments.stream_mib * MIB
        host_cat = statistics.median(
            pipe_stream(["cat"], os.environ, total).steady_rate(total) for _ in range(arguments.repeat)
        )
        figures = {}
        for backend in ("namespaces", "qemu"):
            space = Workspace(scratch / backend, backend, kernel)
            spaces.append(space)
            figures[backend] = _measure(space, arguments, archive)
    except BenchError as error:
        print(f"benchmarks/run: {error}", file=sys.stderr)
        return 2
    finally:
        for space in spaces:
            run_checked(space.argv("--shutdown", "--force"), space.env)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"pywsl qemu backend beside the namespaces backend (host cat: {host_cat / MIB:.0f} MiB/s)")
    print(f"{'metric':20} {'namespaces':>12} {'qemu':>12}")
    for metric, value in figures["namespaces"].items():
        print(f"{metric:20} {value:12.2f} {figures['qemu'][metric]:12.2f}")
    return 0
