"""The QEMU command line of the ``qemu`` backend, and whether KVM works here.

The VM is a ``microvm`` (no PCI, no firmware; virtio-mmio devices): the kernel and the initramfs
given directly, the guest console on a log file (or QEMU's standard streams with ``debugConsole``),
the channel port as a virtio-serial port named ``pywsl.mux``, and the host's ``/usr`` and pywsl's
own folders shared read-only over 9p. QEMU opens no file of root's: the kernel, the initramfs, the
log, the channel port's and QMP's socket ends and the file servers' sockets are descriptors the
monitor gives it on the numbers of ``QEMU_FDS`` (``qemu_process``). KVM is used when a probe, run
with the ids QEMU will have, shows it works (a stopped QEMU that resets its vCPU under KVM and
quits cleanly), TCG otherwise. Under TCG the guest's early TSC calibration is skipped (``tsc_early_khz``).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pywsl import coverage_startup
from pywsl.vm.backends.qemu_process import QemuIdentity
from pywsl.vm.errors import VmError

__all__ = ["QEMU_FDS", "QemuPlan", "find_qemu", "kvm_works", "qemu_argv"]

QEMU_NAME = "qemu-system-x86_64"
PORT_NAME = "pywsl.mux"
FS_TAGS = {"distributions": "pywsl.dist", "host": "pywsl.host"}  # virtiofs tags the guest mounts
KVM_PROBE_TIMEOUT = 10.0
MIN_MEMORY_MIB = 256
# Under TCG the guest kernel spends about 4 s per GiB initialising its memory map: the memory is
# limited to this much there (with KVM the configured ``memory`` applies as it is).
TCG_MEMORY_LIMIT_MIB = 2048
# The descriptors QEMU gets from the monitor, on these numbers (``qemu_process.spawn_qemu``).
QEMU_FDS = {
    "kernel": 3,
    "initramfs": 4,
    "console": 5,
    "port": 6,
    "qmp": 7,
    "distributions": 8,
    "host": 9,
    "swap": 10,
    "swap_read": 11,  # the same file read-only: QEMU opens it both ways
}
CONSOLE_FDSET = 1
SWAP_FDSET = 2
_QMP_QUIT = b'{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'


def find_qemu() -> str:
    qemu = shutil.which(QEMU_NAME)
    if qemu is None:
        raise VmError(f"the qemu backend needs {QEMU_NAME} (Debian: apt-get install qemu-system-x86)")
    return qemu


@functools.cache
def kvm_works(qemu: str, identity: QemuIdentity | None = None) -> bool:
    """True when QEMU, run with ``identity`` (None: this process's), can run a vCPU with KVM on
    this host (probed once per process and identity)."""
    if not Path("/dev/kvm").exists():
        return False
    owner = identity if identity is not None and not identity.is_root else None
    try:
        probe = subprocess.run(
            [
                qemu,
                "-M",
                "microvm",
                "-accel",
                "kvm",
                "-cpu",
                "host",
                "-m",
                "64M",
                "-nodefaults",
                "-no-user-config",
                "-display",
                "none",
                "-S",
                "-qmp",
                "stdio",
            ],
            input=_QMP_QUIT,
            capture_output=True,
            timeout=KVM_PROBE_TIMEOUT,
            check=False,
            user=owner.uid if owner else None,
            group=owner.gid if owner else None,
            extra_groups=list(owner.groups) if owner else None,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and probe.stdout.count(b'"return"') >= 2


def host_tsc_khz() -> int | None:
    """The host's clock rate in kHz (``cpu MHz`` of /proc/cpuinfo), for the guest's TSC."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":", 1)[1]) * 1000)
    except (OSError, ValueError):
        return None
    return None


@dataclass(frozen=True)
class QemuPlan:
    """Everything one VM's command line depends on."""

    qemu: str
    kernel: Path  # read by the monitor, given to QEMU as a memory file (``qemu_process``)
    initramfs: Path
    python: str  # the host's interpreter, under /usr (the guest runs it from the shared /usr)
    shares: tuple[Path, ...]  # folders on the guest's PYTHONPATH (pywsl, its dependencies)
    console_to_log: bool  # False: the guest console on QEMU's standard streams (debugConsole)
    memory_bytes: int | None
    processors: int | None
    kvm: bool
    vm_idle_timeout_ms: int
    extra_command_line: str = ""
    instance_idle_timeout_ms: int = 15000
    distributions: bool = False  # virtiofs for the distributions folder
    host_files: bool = False  # virtiofs for the host's files (/mnt/host)
    networking: str = "none"  # "nat": QEMU's user networking; "none": no NIC
    qmp: bool = False  # QEMU's QMP monitor (localhostForwarding)
    swap: bool = False  # a swap disk ([wsl2] swap), the guest's /dev/vda
    disks: bool = False  # a SCSI controller for disks attached while the VM runs (QMP needed)


def _command_line(plan: QemuPlan) -> str:
    words = [
        "console=ttyS0",
        "reboot=t",
        "panic=-1",
        "quiet",
        "loglevel=4",
        f"PYWSL_PYTHON={plan.python}",
        f"PYWSL_SHARES={len(plan.shares)}",
        f"PYWSL_VM_IDLE_TIMEOUT={plan.vm_idle_timeout_ms}",
        f"PYWSL_INSTANCE_IDLE_TIMEOUT={plan.instance_idle_timeout_ms}",
        f"PYWSL_NETWORK={plan.networking}",
        f"PYWSL_DISTRIBUTIONS={int(plan.distributions)}",
        f"PYWSL_HOST_FILES={int(plan.host_files)}",
        f"PYWSL_SWAP={int(plan.swap)}",
        *(f"PYWSL_SHARE{index}={share}" for index, share in enumerate(plan.shares)),
    ]
    if plan.host_files:  # the coverage data folder is reachable only through the host's files
        words += [f"{name}={value}" for name, value in coverage_startup.vm_request().items()]
    khz = None if plan.kvm else host_tsc_khz()
    if khz:
        words.append(f"tsc_early_khz={khz}")
    if plan.extra_command_line.strip():
        words.append(plan.extra_command_line.strip())
    return " ".join(words)


def _console(plan: QemuPlan) -> list[str]:
    log = ["-add-fd", f"fd={QEMU_FDS['console']},set={CONSOLE_FDSET}", "-chardev"]
    if not plan.console_to_log:  # standard output (debugConsole's relay), and the log as well
        return [*log, f"stdio,id=console,signal=off,logfile=/dev/fdset/{CONSOLE_FDSET},logappend=on"]
    return [*log, f"file,id=console,path=/dev/fdset/{CONSOLE_FDSET},append=on"]


def memory_size_mib(plan: QemuPlan) -> int:
    """The guest's memory: ``[wsl2] memory`` (1 GiB when unset), at least ``MIN_MEMORY_MIB``, and
    at most ``TCG_MEMORY_LIMIT_MIB`` under TCG."""
    memory_mib = max(MIN_MEMORY_MIB, (plan.memory_bytes or 0) // (1024 * 1024) or 1024)
    return memory_mib if plan.kvm else min(memory_mib, TCG_MEMORY_LIMIT_MIB)


def _devices(plan: QemuPlan) -> list[str]:
    """The NIC, the QMP monitor, the swap disk and the file servers (virtiofs)."""
    argv: list[str] = []
    if plan.networking == "nat":
        argv += ["-netdev", "user,id=net0", "-device", "virtio-net-device,netdev=net0"]
    else:
        argv += ["-nic", "none"]
    if plan.qmp:
        argv += ["-chardev", f"socket,id=qmp,fd={QEMU_FDS['qmp']}", "-mon", "chardev=qmp,mode=control"]
    if plan.swap:
        argv += [
            "-add-fd",
            f"fd={QEMU_FDS['swap']},set={SWAP_FDSET}",
            "-add-fd",
            f"fd={QEMU_FDS['swap_read']},set={SWAP_FDSET}",
            "-drive",
            f"file=/dev/fdset/{SWAP_FDSET},format=raw,if=none,id=swap,cache=unsafe,discard=unmap",
            "-device",
            "virtio-blk-device,drive=swap",
        ]
    if plan.disks:
        argv += ["-device", "virtio-scsi-device,id=scsi0"]
    for name, wanted in (("distributions", plan.distributions), ("host", plan.host_files)):
        if wanted:
            argv += [
                "-chardev",
                f"socket,id={name},path=/proc/self/fd/{QEMU_FDS[name]}",
                "-device",
                f"vhost-user-fs-device,chardev={name},tag={FS_TAGS[name]}",
            ]
    return argv


def _machine(plan: QemuPlan, memory_mib: int) -> list[str]:
    if not plan.distributions and not plan.host_files:
        return ["-M", "microvm"]
    # vhost-user devices need the guest's memory shared with the device's process
    return [
        "-object",
        f"memory-backend-memfd,id=mem,size={memory_mib}M,share=on",
        "-M",
        "microvm,memory-backend=mem",
    ]


def qemu_argv(plan: QemuPlan) -> list[str]:
    paths = [plan.python, *map(str, plan.shares)]
    for path in paths:
        if "," in path or " " in path:
            raise VmError(f"the qemu backend cannot use {path!r} (a comma or space in the path)")
    memory_mib = memory_size_mib(plan)
    argv = [
        plan.qemu,
        *_machine(plan, memory_mib),
        "-accel",
        "kvm" if plan.kvm else "tcg",
        "-cpu",
        "host" if plan.kvm else "max",
        "-m",
        f"{memory_mib}M",
        "-smp",
        str(plan.processors or 1),
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        *_devices(plan),
        "-kernel",
        f"/proc/self/fd/{QEMU_FDS['kernel']}",
        "-initrd",
        f"/proc/self/fd/{QEMU_FDS['initramfs']}",
        "-append",
        _command_line(plan),
        "-global",
        "virtio-mmio.force-legacy=false",
        *_console(plan),
        "-serial",
        "chardev:console",
        "-device",
        "virtio-serial-device",
        "-chardev",
        f"socket,id=mux,fd={QEMU_FDS['port']}",
        "-device",
        f"virtserialport,chardev=mux,name={PORT_NAME}",
        "-fsdev",
        "local,id=usr,path=/usr,security_model=none,readonly=on",
        "-device",
        "virtio-9p-device,fsdev=usr,mount_tag=usr",
    ]
    for index, share in enumerate(plan.shares):
        argv += [
            "-fsdev",
            f"local,id=share{index},path={share},security_model=none,readonly=on",
            "-device",
            f"virtio-9p-device,fsdev=share{index},mount_tag=pywsl{index}",
        ]
    return argv
