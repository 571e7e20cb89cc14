#!/usr/bin/env python3
"""Run a command in a distribution and capture what it prints, like `subprocess.run`.

    python3 examples/run_and_capture.py DISTRO COMMAND [ARG...]

The command runs in exec mode (argv as given, no shell); its output and exit status come back.
"""

from __future__ import annotations

import subprocess
import sys

import pywsl


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    distro, command = argv[0], argv[1:]
    session = pywsl.connect()
    process = session.create_lx_process(
        distro,
        command,
        filename=command[0],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = process.communicate()
    print(f"exit status: {process.returncode}")
    print(f"stdout ({len(out or b'')} bytes): {(out or b'').decode(errors='replace')!r}")
    print(f"stderr ({len(err or b'')} bytes): {(err or b'').decode(errors='replace')!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
