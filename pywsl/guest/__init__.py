"""The guest side: the utility VM's processes (mini_init and the roles it forks)."""

import os as _os
import sys as _sys

# The VM's interpreter runs without `site` (-S), so coverage.py's start-up file does not run in
# it: when the test suite measures coverage, the guest starts it here, before its modules load.
if _sys.flags.no_site and (
    "COVERAGE_PROCESS_CONFIG" in _os.environ or "COVERAGE_PROCESS_START" in _os.environ
):
    from pywsl.guest import coverage_startup as _coverage_startup

    _coverage_startup.start()
