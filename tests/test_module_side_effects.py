"""Importing a pywsl module changes nothing of the importing process.

Entry points (`mini_init`, `vm_prestart`, the CLI's `main`) turn the collector off, freeze
objects or change folder for their own process; a module that did it when merely imported would
do it to whatever program imports it (a test run, a library user): later collections skipped,
objects never freed, relative paths resolved elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pywsl

REPO = Path(pywsl.__file__).resolve().parent.parent

PROBE = """
import gc, importlib, json, os, pkgutil, sys
import pywsl
names = sorted(info.name for info in pkgutil.walk_packages(pywsl.__path__, "pywsl."))
start = os.getcwd()
found = []
for name in names:
    try:
        importlib.import_module(name)
    except Exception:
        continue  # another platform's module, or one that needs what this host lacks
    if not gc.isenabled() or gc.get_freeze_count() or os.getcwd() != start:
        found.append([name, gc.isenabled(), gc.get_freeze_count(), os.getcwd()])
        gc.enable()
        gc.unfreeze()
        os.chdir(start)
print(json.dumps({"imported": len(names), "changed": found}))
"""


def test_no_module_changes_the_importing_process(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=300,
        check=True,
    )
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert result["imported"] > 150
    assert result["changed"] == []
