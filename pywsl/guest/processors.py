"""``[wsl2] processors`` as the CPU affinity of the whole VM, so that ``nproc`` inside shows it.

WSL's VM has that many virtual processors. The host gives the VM a cpuset where it can
(``pywsl.vm.cgroups``); the VM's first process also restricts its own affinity, before anything of
the VM is forked, to the first ``processors`` CPUs it may use, which every process of the VM
inherits (hosts without a cpuset controller included). The CFS quota bounds the time they get.
"""

from __future__ import annotations

import os

from pywsl.guest import guest_log

log = guest_log.getLogger("pywsl.processors")


def restrict_processors(count: int | None) -> None:
    """Keep the calling process (and all it forks) on the first ``count`` of its CPUs."""
    if count is None:
        return
    available = sorted(os.sched_getaffinity(0))
    chosen = set(available[:count])
    if chosen and chosen != set(available):
        try:
            os.sched_setaffinity(0, chosen)
        except OSError as error:
            log.warning("cannot restrict the VM to %d processors: %s", count, error)
