#!/usr/bin/env python3
"""Export a distribution's root filesystem, like `pywsl --export DISTRO FILE --format FORMAT`.

python3 examples/export_distribution.py DISTRO FILE [tar|tar.gz|tar.xz]
"""

from __future__ import annotations

import os
import sys

import pywsl


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    distro, target = argv[0], argv[1]
    archive_format = argv[2] if len(argv) == 3 else "tar"
    session = pywsl.connect()
    try:
        session.export_distribution(distro, target, format=archive_format)
    except pywsl.WslError as error:
        print(f"{error.message} ({error.code})", file=sys.stderr)
        return 1
    print(f"{target}: {os.path.getsize(target)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
