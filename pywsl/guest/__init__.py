"""The guest side: the utility VM's processes (mini_init and the roles it forks)."""

import os as _os
import sys as _sys

# The VM's interpreter runs without `site` (-S), so coverage.py's start-up file does not run in
# it: when the test suite measures coverage (the variables, or a qemu VM's kernel command line),
# the guest starts it here, before its modules load.
if _sys.flags.no_site and any(
    name in _os.environ for name in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START", "PYWSL_COVERAGE")
):
    from pywsl import coverage_startup as _coverage_startup

    _measurement = _coverage_startup.start()
    if _measurement is not None:
        from pywsl.guest import syscalls as _syscalls

        # Its roles pivot_root into trees that may not show the host's files.
        _coverage_startup.run_before(_syscalls, "pivot_root", _measurement.before_root_change)
