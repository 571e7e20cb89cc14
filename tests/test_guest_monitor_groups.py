"""The VM monitor and the VM's cgroups: the groups it leaves, and when."""

from __future__ import annotations

import os
import signal
import time
import traceback
from pathlib import Path

from pywsl import cgroup_tables
from pywsl.guest import boot as guest_boot
from pywsl.guest import vm_monitor


def test_the_monitor_leaves_the_vm_groups_before_its_first_interop_worker(tmp_path: Path) -> None:
    """The VM monitor stays in the VM's groups for a moment after the boot (its leaving would
    stall the host's forks during the VM's first start), but an interop worker is never born
    there: the first interop connection makes the monitor leave first."""
    name = f"pywsl-monitor-{os.getpid()}"
    go_read, go_write = os.pipe()
    child = os.fork()
    if child == 0:  # the monitor's process
        code = 1
        try:
            os.close(go_write)
            os.read(go_read, 1)
            moved = tuple(cgroup_tables.groups_named(name))
            arguments = ["--runtime-dir", str(tmp_path), "--listen-fd", "3", "--owner-uid", "0"]
            arguments += ["--uid-map", "0:0:1", "--gid-map", "0:0:1"]
            arguments += [item for group in moved for item in ("--cgroup", group)]
            monitor = vm_monitor.Monitor(guest_boot.parse_boot_arguments(arguments))
            monitor.leave_groups_at = time.monotonic() + 60
            seen: list[bool] = []

            class Workers:
                def serve(self, fd: int) -> None:
                    seen.extend(cgroup_tables.has_process(group, os.getpid()) for group in moved)

            monitor.interop_workers = Workers()  # type: ignore[assignment]
            monitor._start_interop(0)
            code = 0 if moved and seen == [False] * len(moved) and monitor.leave_groups_at is None else 3
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(go_read)
    groups: tuple[str, ...] = ()
    try:
        groups = cgroup_tables.make_early(name)
        for group in groups:
            cgroup_tables.join(group, child)
        assert groups and all(cgroup_tables.has_process(group, child) for group in groups)
        os.write(go_write, b"g")
        _pid, status = os.waitpid(child, 0)
        child = 0
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        os.close(go_write)
        if child:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
        for group in groups:
            assert cgroup_tables.remove_empty(group, 5.0)
