"""The commands, which depend on the system the package is installed on (the rest is pyproject.toml).

On Linux `pywsl` is the plain script `scripts/pywsl` (pip points its `#!` at the environment's
interpreter): the console-script launcher pip would write imports `re` first, which costs every
launch about a third of the interpreter's start. Windows needs the launcher (`pywsl.exe`).
"""

import sys

from setuptools import setup

CONSOLE_SCRIPTS = ["pywsl-service = pywsl.api.service.server:main"]

if sys.platform == "win32":
    setup(entry_points={"console_scripts": ["pywsl = pywsl.cli.main:main", *CONSOLE_SCRIPTS]})
else:
    setup(entry_points={"console_scripts": CONSOLE_SCRIPTS}, scripts=["scripts/pywsl"])
