#!/usr/bin/env python3
"""Stream a large output from a distribution chunk by chunk, counting bytes and hashing them.

    python3 examples/stream_output.py DISTRO MEBIBYTES

The Linux process writes straight into our pipe (pywsl hands the pipe itself to the process:
no relay copies the bytes), and we read it as it comes.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pywsl


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    distro, mebibytes = argv[0], int(argv[1])
    session = pywsl.connect()
    process = session.create_lx_process(
        distro, [f"head -c {mebibytes << 20} /dev/zero"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    digest = hashlib.sha256()
    total = 0
    while chunk := process.stdout.read(1 << 20):
        digest.update(chunk)
        total += len(chunk)
    status = process.wait()
    print(f"{total} bytes sha256={digest.hexdigest()} exit status {status}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
