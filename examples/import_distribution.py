#!/usr/bin/env python3
"""Import a root filesystem archive as a new distribution, like `pywsl --import NAME DIR FILE`.

python3 examples/import_distribution.py NAME ARCHIVE [LOCATION]
"""

from __future__ import annotations

import sys

import pywsl


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    name, archive = argv[0], argv[1]
    location = argv[2] if len(argv) == 3 else None
    session = pywsl.connect()
    try:
        info = session.register_distribution(name, archive, location=location)
    except pywsl.WslError as error:
        print(f"{error.message} ({error.code})", file=sys.stderr)
        return 1
    print(f"{info.name} {info.id} {info.flavor or '-'} {info.os_version or '-'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
