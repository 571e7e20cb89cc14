"""What a cold launch's two interpreters do without: each stand-in against what it stands for.

The launch's side imports `pathlib` without `re`, `fnmatch` and `urllib.parse`
(`pywsl.lean_pathlib`), reads `.wslconfig` without `enum` and matches the VM's cgroups without
`re`; the VM's side loads the guest without `contextlib` and `functools` (`pywsl.lean_context`);
and the `pywsl` script starts the VM's interpreter before the command line's modules load
(`pywsl.cli.launch_line.start_vm_ahead`).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import construct
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywsl import lean_context
from pywsl.api.session import wslconfig
from pywsl.vm.backends.namespaces import cgroup_digest, cgroups_of

REPO = Path(__file__).resolve().parent.parent
CONSTRUCT_PARENT = Path(construct.__file__).resolve().parent.parent


def _run_python(code: str, env: dict[str, str] | None = None) -> str:
    """`code` in a fresh interpreter that has loaded nothing but its own start: `-S`, and no
    coverage measurement (which would load much of what is checked here)."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join((str(REPO), str(CONSTRUCT_PARENT))),
    }
    done = subprocess.run(
        [sys.executable, "-S", "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environment, **(env or {})},
        cwd="/",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# -- pathlib without what only its methods need ------------------------------------------------


def test_pathlib_loads_without_the_modules_of_its_methods_which_still_work(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("")
    (tmp_path / "b.txt").write_text("")
    out = _run_python(
        f"""
        import sys
        for name in ("re", "fnmatch", "urllib.parse", "enum", "ipaddress"):
            assert name not in sys.modules, name
        from pywsl.lean_pathlib import DEFERRED, import_pathlib
        pathlib = import_pathlib()
        assert import_pathlib() is pathlib
        loaded = sorted(name for name in (*DEFERRED, "enum", "ipaddress") if name in sys.modules)
        assert loaded == [], loaded
        folder = pathlib.Path({str(tmp_path)!r})
        print(sorted(path.name for path in folder.glob("*.py")))
        print(folder.joinpath("b.txt").match("*.txt"), pathlib.PurePath("x/y.c").match("y.*"))
        print(pathlib.Path("/etc/passwd").as_uri(), pathlib.Path("/a b").as_uri())
        import re, fnmatch, urllib.parse
        print(type(re).__name__, type(fnmatch).__name__, type(urllib.parse).__name__)
        print(re.fullmatch("a+", "aaa") is not None, urllib.parse.quote("a b"))
        """
    )
    assert out.splitlines() == [
        "['a.py']",
        "True True",
        "file:///etc/passwd file:///a%20b",
        "module module module",
        "True a%20b",
    ]


def test_modules_already_loaded_are_the_ones_pathlib_gets() -> None:
    out = _run_python(
        """
        import re, sys
        from pywsl.lean_pathlib import import_pathlib
        pathlib = import_pathlib()
        print(pathlib.re is re, "fnmatch" in sys.modules, type(sys.modules.get("urllib.parse")).__name__)
        """
    )
    # `re` was loaded: pathlib has the real one; the other two are still left for later.
    assert out.split() == ["True", "False", "NoneType"]


def test_an_already_imported_pathlib_is_returned_as_it_is() -> None:
    out = _run_python(
        """
        import pathlib, sys
        from pywsl.lean_pathlib import import_pathlib
        print(import_pathlib() is pathlib, "re" in sys.modules)
        """
    )
    assert out.split() == ["True", "True"]


# -- contextlib's suppress and a descriptor's closing --------------------------------------------


@pytest.mark.parametrize("raised", [None, OSError, FileNotFoundError, ValueError, KeyboardInterrupt])
@pytest.mark.parametrize("caught", [(OSError,), (OSError, ValueError), ()])
def test_suppress_does_what_contextlib_suppress_does(
    raised: type[BaseException] | None, caught: tuple[type[BaseException], ...]
) -> None:
    def outcome(suppress: type) -> str:
        try:
            with suppress(*caught):
                if raised is not None:
                    raise raised("x")
                return "ran"
            return "suppressed"
        except BaseException as error:  # what the block let through
            return type(error).__name__

    assert outcome(lean_context.suppress) == outcome(contextlib.suppress)


def test_a_descriptor_is_closed_however_the_block_ends() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    with lean_context.closing_fd(read_end) as fd:
        assert fd == read_end
    with pytest.raises(OSError):
        os.fstat(read_end)
    read_end, write_end = os.pipe()
    os.close(write_end)
    with pytest.raises(ValueError), lean_context.closing_fd(read_end):
        raise ValueError("left early")
    with pytest.raises(OSError):
        os.fstat(read_end)


def test_the_guest_loads_without_contextlib_and_functools() -> None:
    out = _run_python(
        """
        import gc, sys
        gc.disable()
        from pywsl.guest import mini_init
        print(sorted(name for name in ("contextlib", "functools") if name in sys.modules))
        """,
    )
    assert out.strip() == "[]"


# -- .wslconfig's kinds and the VM's cgroup names, without enum and re ---------------------------


def test_the_kinds_of_setting_are_distinct_and_describe_themselves() -> None:
    kinds = [getattr(wslconfig.Kind, name) for name in wslconfig.Kind.__annotations__]
    assert len({id(kind) for kind in kinds}) == len({kind.value for kind in kinds}) == 8
    assert wslconfig.Kind.BOOL.value == "a boolean (true/false)"
    assert wslconfig.Kind.MEMORY.name == "MEMORY" and repr(wslconfig.Kind.MEMORY) == "<Kind.MEMORY>"
    assert set(wslconfig._CONVERTERS) <= set(kinds)


NAME_PARTS = st.sampled_from(["pywsl-", "pywsl", "-", "0", "12", "٣", "x", "pywsl-1-", "-pywsl", ""])


@settings(max_examples=300, deadline=None)
@given(st.lists(NAME_PARTS, max_size=5), st.booleans())
def test_a_vms_cgroups_are_matched_as_the_pattern_did(parts: list[str], with_digest: bool) -> None:
    runtime_dir = Path("/run/pywsl/0")
    digest = cgroup_digest(runtime_dir)
    name = "".join(parts) + (f"-{digest}" if with_digest else "")
    expected = re.fullmatch(rf"pywsl-[0-9]+-{digest}", name) is not None
    assert cgroups_of(runtime_dir)(name) is expected
    assert cgroups_of(runtime_dir)(f"pywsl-1000-{digest}")
    assert not cgroups_of(runtime_dir)(f"pywsl-1000-{digest}x")


# -- the script starts the VM's interpreter first ------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="a root launch prestarts the VM's interpreter")
def test_a_cold_launch_line_starts_the_vms_interpreter_before_the_command_line_loads(tmp_path: Path) -> None:
    out = _run_python(
        """
        import os, sys
        from pywsl.cli.launch_line import start_vm_ahead
        from pywsl.vm.backends import namespaces_prestart
        start_vm_ahead(["--list"])
        print(namespaces_prestart._pending is None)
        start_vm_ahead(["-d", "Box", "--", "true"])
        pending = namespaces_prestart._pending
        print(pending is not None and pending.process.poll() is None)
        print("pywsl.cli.main" in sys.modules, "pywsl.cli.fast_launch" in sys.modules)
        print(pending.runtime_dir.startswith(os.environ["PYWSL_RUNTIME_ROOT"]))
        """,
        env={"PYWSL_RUNTIME_ROOT": str(tmp_path / "run")},
    )
    assert out.split() == ["True", "True", "False", "False", "True"]


def test_a_stand_in_asked_while_pathlib_loads_loads_the_real_module() -> None:
    """A `pathlib` that used `re` at its top (another Python's) gets the real module, once."""
    out = _run_python(
        """
        import sys
        from pywsl import lean_pathlib
        stand_in = lean_pathlib._StandIn("re")
        sys.modules["re"] = stand_in
        print(stand_in.compile("a+").fullmatch("aa") is not None, type(sys.modules["re"]).__name__)
        """
    )
    assert out.split() == ["True", "module"]
