"""What `pywsl -d D -- cmd` imports: exactly the modules of the launch path, nothing more.

A warm launch is mostly interpreter start and imports, so every module it loads is part of what
users wait for. The two launch paths run for real (root in-process against a running VM, and an
unprivileged user through the root service), and the modules each loaded are compared with the
lists below: pywsl's own modules exactly, the standard library's within an allowed set, and no
third-party package (construct, click, rich). A new import on the launch path fails here and
has to be added on purpose.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive
from multiuser_support import ServiceProcess, Workspace, as_user, created_users, service, user_env, workspace
from private_registry import private_environment

import pywsl as pywsl_package

__all__ = ["pytestmark", "service", "workspace"]  # module fixtures

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the in-process launch runs the VM as root"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)"),
]

REPO = Path(pywsl_package.__file__).resolve().parent.parent

# The pywsl modules a launch loads, on both paths (the script, the fast command line, the wait).
COMMON = {
    "pywsl",
    "pywsl.api",
    "pywsl.api.lean_json",
    "pywsl.api.process",
    "pywsl.api.process.launch_request",
    "pywsl.api.process.quick_process",
    "pywsl.api.session",
    "pywsl.api.session.gui_share",
    "pywsl.api.session.path_rules",
    "pywsl.cli",
    "pywsl.cli.context",
    "pywsl.cli.fast_launch",
    "pywsl.cli.invocation",
    "pywsl.cli.launch_line",
    "pywsl.cli.launch_run",
    "pywsl.cli.main",
    "pywsl.cli.messages",
    "pywsl.cli.report",
    "pywsl.cli.streams",
    "pywsl.vm",
    "pywsl.vm.process_request",
    "pywsl.wire",
    "pywsl.wire.constants",
    "pywsl.wire.errors",
    "pywsl.wire.launch_codec",
    "pywsl.wire.launch_link",
    "pywsl.wire.message_types",
    "pywsl.wire.parsed",
}
# Root, in-process: one registry entry, the root filesystem's folder and the VM's requests.
IN_PROCESS = COMMON | {
    "pywsl.api.session.cold_start",
    "pywsl.api.session.quick_launch",
    "pywsl.api.session.registry_snapshot",
    "pywsl.api.session.registry_values",
    "pywsl.vm.quick_launch",
    "pywsl.vm.runtime_names",
    "pywsl.vm.timezone",
    "pywsl.wire.timezone_id",
}
# An unprivileged user: one request to the service.
THROUGH_SERVICE = COMMON | {
    "pywsl.api.service",
    "pywsl.api.service.launch_client",
}
# The standard library modules a launch loads beyond the interpreter's own start-up (names
# starting with "_" are C parts and not listed). Never `typing`, `enum`, `re`, `collections`,
# `pathlib`, `json`, `socket`, `contextlib`, `uuid` or `dataclasses`: each costs a warm launch more
# than its round trips to the VM.
_STANDARD_NAMES = """
    __future__ atexit errno gc select struct
"""
STANDARD = set(_STANDARD_NAMES.split())
STANDARD_IN_PROCESS = STANDARD | {"pwd"}
# What records the modules: the interpreter's own start-up is left out.
PROBE = """
import atexit, sys
start = set(sys.modules)
def record():
    with open({out!r}, "w") as file:
        for name in sorted(set(sys.modules) - start):
            file.write(name + "\\t" + str(getattr(sys.modules[name], "__file__", None) or "") + "\\n")
atexit.register(record)
sys.argv = ["pywsl", *{args!r}]
from pywsl.cli.main import main
main()
"""


def _loaded(
    python: str, out: Path, args: list[str], env: Mapping[str, str], cwd: Path, user: int | None = None
) -> dict[str, str]:
    """The modules one launch loaded, with their files ("" for built-in ones)."""
    script = PROBE.format(out=str(out), args=args)
    result = subprocess.run(
        [python, "-c", script],
        env=env,
        cwd=cwd,
        user=user,
        group=user,
        extra_groups=[] if user is not None else None,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    lines = [line.split("\t") for line in out.read_text().splitlines() if line]
    return {name: origin for name, origin in lines}


def _check(loaded: dict[str, str], expected: set[str], standard: set[str]) -> None:
    own = {name for name in loaded if name == "pywsl" or name.startswith("pywsl.")}
    assert own == expected, f"new: {sorted(own - expected)}, gone: {sorted(expected - own)}"
    others = {name: origin for name, origin in loaded.items() if name not in own}
    third_party = sorted(name for name, origin in others.items() if "-packages" in origin)
    assert not third_party, f"third-party modules on the launch path: {third_party}"
    public = {name for name in others if not name.split(".")[-1].startswith("_")}
    assert not public - standard, f"not on the launch path's list: {sorted(public - standard)}"


@pytest.fixture(scope="module")
def root_launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    """A private registry, configuration and VM with one busybox distribution, Box, running."""
    folder = tmp_path_factory.mktemp("launch-imports")
    env = private_environment(folder, REPO)
    archive = busybox_archive(folder / "box.tar")
    command = [sys.executable, "-m", "pywsl.cli.main"]
    imported = subprocess.run(
        [*command, "--import", "Box", str(folder / "box"), str(archive)],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr.decode()
    try:
        started = subprocess.run(
            [*command, "-d", "Box", "--", "true"], env=env, capture_output=True, timeout=120
        )
        assert started.returncode == 0, started.stderr.decode()
        yield env, folder
    finally:
        subprocess.run([*command, "--shutdown", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(folder / "data", ignore_errors=True)


def test_a_warm_launch_as_root_loads_only_the_launch_path(root_launch: tuple[dict[str, str], Path]) -> None:
    env, folder = root_launch
    loaded = _loaded(sys.executable, folder / "modules.txt", ["-d", "Box", "--", "true"], env, Path("/"))
    _check(loaded, IN_PROCESS, STANDARD_IN_PROCESS)


# What a cold launch (no VM running: root's launch boots it) must still do without: each of these
# costs the boot milliseconds, and the boot is the longer of the two halves a cold launch overlaps
# (this process and the VM's interpreter, `namespaces_prestart`).
COLD_LAUNCH_NEVER = {
    "argparse",
    "contextlib",
    "dataclasses",
    "enum",
    "fnmatch",
    "inspect",
    "ipaddress",
    "json",
    "logging",
    "math",
    "re",
    "selectors",
    "signal",
    "socket",
    "subprocess",
    "threading",
    "typing",
    "urllib.parse",
    "uuid",
}


def test_a_cold_launch_as_root_boots_without_the_heavy_modules(
    root_launch: tuple[dict[str, str], Path],
) -> None:
    env, folder = root_launch
    command = [sys.executable, "-m", "pywsl.cli.main"]
    stopped = subprocess.run([*command, "--shutdown"], env=env, capture_output=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr.decode()
    loaded = _loaded(sys.executable, folder / "modules.txt", ["-d", "Box", "--", "true"], env, Path("/"))
    assert "pywsl.vm.backends.namespaces" in loaded  # it booted the VM
    assert not COLD_LAUNCH_NEVER & set(loaded), sorted(COLD_LAUNCH_NEVER & set(loaded))
    third_party = sorted(
        name for name, origin in loaded.items() if "-packages" in origin and "pywsl" not in name
    )
    assert not third_party, third_party


def test_a_launch_through_the_service_loads_only_the_client(
    workspace: Workspace,
    service: ServiceProcess,
) -> None:
    archive = busybox_archive(workspace.folder / "launch-imports.tar")
    os.chmod(archive, 0o644)
    with created_users(workspace, service, "pywslimp") as (user,):
        answer = as_user(workspace, user, {"op": "import", "name": "Box", "archive": str(archive)})
        assert "result" in answer, answer
        out = user.home / "modules.txt"
        launch = ["-d", "Box", "--", "true"]
        env = user_env(workspace, user)
        _loaded(str(workspace.python), out, launch, env, user.home, user.uid)  # starts the distribution
        loaded = _loaded(str(workspace.python), out, launch, env, user.home, user.uid)
        _check(loaded, THROUGH_SERVICE, STANDARD)


def test_the_standard_list_names_only_standard_modules() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in sorted(STANDARD_IN_PROCESS):
        module = __import__(name, fromlist=["_"])
        origin = getattr(module, "__file__", None)
        assert origin is None or Path(origin).is_relative_to(stdlib) or "lib-dynload" in origin, name
