"""The small modules of the launch path, rewritten so that a warm launch loads no heavy library.

`message_types`, `timezone_id`, `vm.timezone`, `process_request`, `cli.invocation` and
`cli.fast_launch` replaced enums, regular expressions, `pathlib` and named tuples by plain code:
each is checked here against what it replaced (the enums, the old regular expression, the
message codec), and each launch module is imported in a fresh interpreter to check that none of
those libraries comes back with it.
"""

from __future__ import annotations

import copy
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pywsl
from pywsl.cli.fast_launch import LaunchLine
from pywsl.cli.invocation import Invocation
from pywsl.vm import process_request as process_request_module
from pywsl.vm.process_request import ProcessRequest, create_process_values, process_flags
from pywsl.vm.timezone import host_timezone
from pywsl.wire import launch_codec, schema
from pywsl.wire.enums import (
    CREATE_PROCESS_SHELL_OPTIONS,
    LX_INIT_CREATE_PROCESS_FLAGS,
    LX_MESSAGE_TYPE,
    LX_MINI_INIT_MESSAGE_FLAGS,
    LX_MINI_INIT_NETWORKING_MODE,
    PYWSL_MESSAGE_TYPE,
)
from pywsl.wire.launch_codec import CREATE_PROCESS_UTILITY_VM, FAST_SCHEMAS, FastSchema
from pywsl.wire.message_types import LxMessageType, MiniInitMessageFlags, NetworkingMode, PywslMessageType
from pywsl.wire.timezone_id import MAX_TIMEZONE_LENGTH, valid_timezone

REPO = Path(pywsl.__file__).resolve().parent.parent

# ---- message types --------------------------------------------------------------------------------


def _constants(kind: type) -> dict[str, object]:
    return {name: value for name, value in vars(kind).items() if not name.startswith("_")}


@pytest.mark.parametrize(
    ("plain", "declared"),
    [
        (LxMessageType, LX_MESSAGE_TYPE),
        (PywslMessageType, PYWSL_MESSAGE_TYPE),
        (MiniInitMessageFlags, LX_MINI_INIT_MESSAGE_FLAGS),
        (NetworkingMode, LX_MINI_INIT_NETWORKING_MODE),
    ],
)
def test_message_types_are_the_declared_ones(plain: type, declared: Any) -> None:
    constants = _constants(plain)
    assert constants
    for name, value in constants.items():
        assert type(value) is int, name  # a plain number, not the enum member
        assert name in declared.__members__, name
        assert value == declared[name], name


@pytest.mark.parametrize("name", sorted(FAST_SCHEMAS))
def test_fast_schemas_have_the_declared_message_types(name: str) -> None:
    fast = FAST_SCHEMAS[name]
    declared = schema(name)
    assert fast.name == name
    assert type(fast.message_type) is int
    assert fast.message_type == declared.message_type
    assert fast.accepted_types == declared.accepted_types


def test_every_fast_schema_of_the_module_is_listed() -> None:
    declared = [value for value in vars(launch_codec).values() if isinstance(value, FastSchema)]
    assert len(declared) == len(FAST_SCHEMAS)
    assert all(FAST_SCHEMAS[fast.name] is fast for fast in declared)


# ---- timezone ids ---------------------------------------------------------------------------------

_OLD_COMPONENT = r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*"


def old_valid_timezone(name: str) -> bool:
    """The definition `valid_timezone` replaced (with `re`)."""
    if not 0 < len(name) <= 255:
        return False
    return all(re.fullmatch(_OLD_COMPONENT, part) and part not in (".", "..") for part in name.split("/"))


TIMEZONE_EXAMPLES = {
    "Europe/Paris": True,
    "Etc/GMT+5": True,
    "Etc/GMT-14": True,
    "America/Argentina/Buenos_Aires": True,
    "UTC": True,
    "../x": False,
    "a//b": False,
    "/abs": False,
    "abs/": False,
    ".hidden": False,
    "Europe/.hidden": False,
    "x/..": False,
    "x/.": False,
    "": False,
    "a" * MAX_TIMEZONE_LENGTH: True,
    "a" * (MAX_TIMEZONE_LENGTH + 1): False,
    "Europe/Zürich": False,
    "Asia/\u0663": False,  # an Arabic-Indic digit: a digit, not one of the tz database's
    "a b": False,
    "Europe/Paris\n": False,
    "Europe\\Paris": False,
    "a\0b": False,
}


def _example_id(name: object) -> str:
    text = repr(name)
    return text if len(text) <= 24 else f"{text[:12]}...({len(str(name))} characters)"


@pytest.mark.parametrize(("name", "expected"), TIMEZONE_EXAMPLES.items(), ids=_example_id)
def test_valid_timezone_examples(name: str, expected: bool) -> None:
    assert MAX_TIMEZONE_LENGTH == 255
    assert bool(old_valid_timezone(name)) is expected
    assert valid_timezone(name) is expected


TIMEZONE_ALPHABET = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    "_.+-/ "
    "\n\t\0\\:*é\u0131\u212a\u0663\uff21"  # odd: controls, separators, non-ASCII letters and digits
)


@settings(max_examples=400, deadline=None)
@given(
    st.text(TIMEZONE_ALPHABET, max_size=24)
    | st.lists(st.sampled_from(["Etc", "GMT+5", ".", "..", "", ".x", "x.", "a_b", "é"]), max_size=5).map(
        "/".join
    )
    | st.text(TIMEZONE_ALPHABET, min_size=MAX_TIMEZONE_LENGTH - 2, max_size=MAX_TIMEZONE_LENGTH + 2)
    | st.integers(MAX_TIMEZONE_LENGTH - 2, MAX_TIMEZONE_LENGTH + 2).map(lambda size: "Ab/c" * size)
)
def test_valid_timezone_is_the_old_definition(name: str) -> None:
    assert valid_timezone(name) is bool(old_valid_timezone(name))


# ---- the host's time zone -------------------------------------------------------------------------

AS_ARGUMENT: list[Callable[[Path], str | os.PathLike[str]]] = [str, Path]


@pytest.fixture(params=AS_ARGUMENT, ids=["str", "Path"])
def as_argument(request: pytest.FixtureRequest) -> Callable[[Path], str | os.PathLike[str]]:
    converter: Callable[[Path], str | os.PathLike[str]] = request.param
    return converter


@pytest.fixture
def etc(tmp_path: Path) -> Path:
    folder = tmp_path / "etc"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("Europe/Berlin\n", "Europe/Berlin"),
        ("  Asia/Tokyo  \n", "Asia/Tokyo"),
        ("Etc/GMT+5\nEurope/Paris\n", "Etc/GMT+5"),
        ("America/New_York", "America/New_York"),
        ("../../etc/passwd\n", None),
        ("Europe/Paris/\n", None),
        ("Not a zone\n", None),
        ("\n", None),
        ("", None),
        ("A" * (MAX_TIMEZONE_LENGTH + 40) + "\n", None),
    ],
)
def test_host_timezone_from_the_timezone_file(
    etc: Path, as_argument: Callable[[Path], str | os.PathLike[str]], content: str, expected: str | None
) -> None:
    (etc / "timezone").write_text(content, encoding="utf-8")
    assert host_timezone(as_argument(etc)) == expected


@pytest.mark.parametrize("content", ["../x\n", "", "\n", "bad zone\n"])
def test_an_unusable_timezone_file_falls_back_to_localtime(
    etc: Path, as_argument: Callable[[Path], str | os.PathLike[str]], content: str
) -> None:
    (etc / "timezone").write_text(content, encoding="utf-8")
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
    assert host_timezone(as_argument(etc)) == "Europe/Paris"


def test_the_timezone_file_wins_over_localtime(
    etc: Path, as_argument: Callable[[Path], str | os.PathLike[str]]
) -> None:
    (etc / "timezone").write_text("America/New_York\n", encoding="utf-8")
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
    assert host_timezone(as_argument(etc)) == "America/New_York"


def test_a_timezone_file_that_is_not_utf8(
    etc: Path, as_argument: Callable[[Path], str | os.PathLike[str]]
) -> None:
    (etc / "timezone").write_bytes(b"Europe/Z\xfcrich\n")
    assert host_timezone(as_argument(etc)) is None
    (etc / "localtime").symlink_to("../usr/share/zoneinfo/Europe/Zurich")
    assert host_timezone(as_argument(etc)) == "Europe/Zurich"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/usr/share/zoneinfo/Europe/Paris", "Europe/Paris"),
        ("../usr/share/zoneinfo/Europe/Paris", "Europe/Paris"),
        ("/usr/share/zoneinfo/posix/Asia/Tokyo", "Asia/Tokyo"),
        ("/usr/share/zoneinfo/right/Asia/Tokyo", "Asia/Tokyo"),
        ("/usr/share/zoneinfo/Etc/GMT+5", "Etc/GMT+5"),
        ("/usr/share/zoneinfo/UTC", "UTC"),
        ("/opt/zones/Europe/Paris", None),
        ("/usr/share/zoneinfo/", None),
        ("/usr/share/zoneinfo/Europe/", None),
        ("/usr/share/zoneinfo/../../../etc/passwd", None),
        ("/usr/share/zoneinfo/Europe/../../x", None),
        ("localtime.orig", None),
    ],
)
def test_host_timezone_from_the_localtime_link(
    etc: Path, as_argument: Callable[[Path], str | os.PathLike[str]], target: str, expected: str | None
) -> None:
    (etc / "localtime").symlink_to(target)
    assert host_timezone(as_argument(etc)) == expected


def test_host_timezone_without_either(
    etc: Path, as_argument: Callable[[Path], str | os.PathLike[str]]
) -> None:
    assert host_timezone(as_argument(etc)) is None
    (etc / "localtime").write_bytes(b"TZif2")  # a copied zone file, not a link: it cannot be named
    assert host_timezone(as_argument(etc)) is None


def test_host_timezone_of_a_missing_folder(
    tmp_path: Path, as_argument: Callable[[Path], str | os.PathLike[str]]
) -> None:
    assert host_timezone(as_argument(tmp_path / "absent")) is None


def test_a_timezone_folder_is_not_read(
    etc: Path, as_argument: Callable[[Path], str | os.PathLike[str]]
) -> None:
    (etc / "timezone").mkdir()
    assert host_timezone(as_argument(etc)) is None
    (etc / "localtime").symlink_to("/usr/share/zoneinfo/Europe/Paris")
    assert host_timezone(as_argument(etc)) == "Europe/Paris"


# ---- ProcessRequest -------------------------------------------------------------------------------

FIELDS = (
    "filename",
    "command_line",
    "cwd",
    "environment",
    "username",
    "default_uid",
    "login_shell",
    "console",
    "rows",
    "columns",
    "nt_path",
    "host_environment",
)


def _request() -> ProcessRequest:
    return ProcessRequest(
        filename="/bin/sh",
        command_line=["sh", "-c", "echo hi"],
        cwd="~/work",
        environment=["TERM=xterm", "LANG=C.UTF-8"],
        username="alice",
        default_uid=1000,
        login_shell=True,
        console=(True, False, True),
        rows=24,
        columns=80,
        nt_path="C:\\Windows;C:\\Tools",
        host_environment=("WAYLAND_DISPLAY=wayland-0",),
    )


OTHER_VALUES: dict[str, object] = {
    "filename": "",
    "command_line": ["sh", "-c", "echo bye"],
    "cwd": "",
    "environment": ["TERM=xterm"],
    "username": "",
    "default_uid": 0,
    "login_shell": False,
    "console": (True, False, False),
    "rows": 25,
    "columns": 81,
    "nt_path": "",
    "host_environment": (),
}


def test_the_fields_are_the_declared_ones() -> None:
    assert ProcessRequest.__slots__ == FIELDS
    assert set(OTHER_VALUES) == set(FIELDS)
    request = ProcessRequest("", [], "", [], "", 0, False, (False, False, False), 0, 0)
    assert request.nt_path == ""
    assert request.host_environment == ()
    assert not hasattr(request, "__dict__")
    with pytest.raises(AttributeError):
        request.extra = 1  # type: ignore[attr-defined]


def test_process_request_equality() -> None:
    request = _request()
    assert request == request
    assert request == _request()
    assert request == copy.copy(request)
    assert request == copy.deepcopy(request)
    assert request == request._replace()
    assert (request != _request()) is False
    assert request != tuple(getattr(request, name) for name in FIELDS)
    assert request != "ProcessRequest"
    assert request.__eq__(object()) is NotImplemented


@pytest.mark.parametrize("field", FIELDS)
def test_process_requests_differ_by_any_field(field: str) -> None:
    request = _request()
    changed = request._replace(**{field: OTHER_VALUES[field]})
    assert getattr(changed, field) == OTHER_VALUES[field]
    assert changed != request
    assert (changed == request) is False
    for other in FIELDS:
        if other != field:
            assert getattr(changed, other) == getattr(request, other)


def test_replace_several_fields() -> None:
    request = _request()
    changed = request._replace(rows=50, columns=132, username="bob")
    assert (changed.rows, changed.columns, changed.username) == (50, 132, "bob")
    assert changed == _request()._replace(username="bob")._replace(rows=50)._replace(columns=132)
    assert (request.rows, request.columns, request.username) == (24, 80, "alice")  # unchanged
    assert changed is not request


def test_replace_an_unknown_field() -> None:
    request = _request()
    with pytest.raises(TypeError, match="no_such_field"):
        request._replace(no_such_field=1)
    with pytest.raises(TypeError, match="bogus"):
        request._replace(rows=1, bogus=2)
    assert request == _request()


def test_process_request_repr() -> None:
    request = _request()
    text = repr(request)
    assert text.startswith("ProcessRequest(")
    for name in FIELDS:
        assert f"{name}={getattr(request, name)!r}" in text


def test_process_requests_are_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(_request())
    with pytest.raises(TypeError):
        {_request()}


@pytest.mark.parametrize("console", list(itertools.product((False, True), repeat=3)))
def test_process_flags(console: tuple[bool, bool, bool]) -> None:
    bits = (
        LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdInConsole,
        LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdOutConsole,
        LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdErrConsole,
    )
    expected = LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsNone
    for is_console, bit in zip(console, bits, strict=True):
        if is_console:
            expected |= bit
    flags = process_flags(_request()._replace(console=console))
    assert type(flags) is int
    assert flags == int(expected)


def test_the_constants_are_the_declared_ones() -> None:
    login, console = process_request_module.SHELL_OPTIONS_LOGIN, process_request_module.CONSOLE_FLAGS
    assert login == CREATE_PROCESS_SHELL_OPTIONS.ShellOptionsLogin
    assert console == (
        LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdInConsole,
        LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdOutConsole,
        LX_INIT_CREATE_PROCESS_FLAGS.LxInitCreateProcessFlagsStdErrConsole,
    )


def _check_round_trip(request: ProcessRequest) -> None:
    values = create_process_values(request)
    data = CREATE_PROCESS_UTILITY_VM.build(**values)
    message = CREATE_PROCESS_UTILITY_VM.parse(data)
    assert message.Header.MessageType == LX_MESSAGE_TYPE.LxInitMessageCreateProcessUtilityVm
    assert (message.Rows, message.Columns) == (request.rows, request.columns)
    common = message.Common
    assert common.Filename == request.filename
    assert common.CurrentWorkingDirectory == request.cwd
    assert common.CommandLine == list(request.command_line)
    assert common.Environment == list(request.environment)
    assert common.NtEnvironment == list(request.host_environment)
    assert common.NtPath == request.nt_path
    assert common.Username == request.username
    login = CREATE_PROCESS_SHELL_OPTIONS.ShellOptionsLogin
    assert common.ShellOptions == (login if request.login_shell else 0)
    assert common.DefaultUid == request.default_uid
    assert common.Flags == process_flags(request)
    # The construct declaration reads the same message.
    declared = schema("LX_INIT_CREATE_PROCESS_UTILITY_VM").parse(data)
    assert declared.Common.Username == request.username
    assert declared.Common.CommandLine == list(request.command_line)
    assert declared.Common.Flags == process_flags(request)


def test_create_process_values_round_trip() -> None:
    _check_round_trip(_request())
    _check_round_trip(ProcessRequest("", [], "", [], "", 0, False, (False, False, False), 0, 0))
    _check_round_trip(_request()._replace(command_line=("ls", "-l"), host_environment=()))


def test_create_process_values_copies_the_lists() -> None:
    request = _request()
    values = create_process_values(request)
    values["Common"]["CommandLine"].append("extra")
    values["Common"]["Environment"].clear()
    assert request == _request()


TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=10)


@settings(max_examples=60, deadline=None)
@given(
    st.builds(
        ProcessRequest,
        filename=TEXT,
        command_line=st.lists(TEXT, max_size=4),
        cwd=TEXT,
        environment=st.lists(TEXT, max_size=4),
        username=TEXT,
        default_uid=st.integers(0, 0xFFFFFFFF),
        login_shell=st.booleans(),
        console=st.tuples(st.booleans(), st.booleans(), st.booleans()),
        rows=st.integers(0, 0xFFFF),
        columns=st.integers(0, 0xFFFF),
        nt_path=TEXT,
        host_environment=st.lists(TEXT, max_size=3).map(tuple),
    )
)
def test_create_process_values_round_trip_any_request(request: ProcessRequest) -> None:
    _check_round_trip(request)


# ---- Invocation and LaunchLine --------------------------------------------------------------------


def test_invocation_is_compared_by_value() -> None:
    shell = Invocation("shell", ("echo", "hi"))
    assert shell == Invocation("shell", ("echo", "hi"), None)
    assert hash(shell) == hash(Invocation("shell", ("echo", "hi")))
    assert len({shell, Invocation("shell", ("echo", "hi"))}) == 1
    assert shell != Invocation("exec", ("echo", "hi"))
    assert shell != Invocation("shell", ("echo",))
    assert shell != Invocation("shell", ("echo", "hi"), verb="list")
    assert shell != ("shell", ("echo", "hi"), None)
    assert Invocation("shell") == Invocation("shell", ())
    assert Invocation("verb", ("--all",), "list") == Invocation("verb", ("--all",), "list")
    assert Invocation("verb", ("--all",), "list") != Invocation("verb", ("--all",), "terminate")


def test_invocation_repr() -> None:
    invocation = Invocation("verb", ("--all", "-v"), "list")
    assert repr(invocation) == "Invocation(mode='verb', arguments=('--all', '-v'), verb='list')"
    assert eval(repr(invocation), {"Invocation": Invocation}) == invocation


def test_launch_line_is_compared_by_value() -> None:
    options = (("distribution", "Debian"), ("user", "root"))
    line = LaunchLine(options, Invocation("shell", ("id",)))
    same = LaunchLine((("distribution", "Debian"), ("user", "root")), Invocation("shell", ("id",)))
    assert line == same
    assert hash(line) == hash(same)
    assert len({line, same}) == 1
    assert line != LaunchLine(options, Invocation("exec", ("id",)))
    assert line != LaunchLine(options[:1], Invocation("shell", ("id",)))
    assert line != LaunchLine(options[::-1], Invocation("shell", ("id",)))  # the order is kept
    assert line != (options, Invocation("shell", ("id",)))


def test_launch_line_repr() -> None:
    line = LaunchLine((("cd", "~"),), Invocation("exec", ("ls", "-l")))
    text = repr(line)
    assert text == (
        "LaunchLine(options=(('cd', '~'),), "
        "invocation=Invocation(mode='exec', arguments=('ls', '-l'), verb=None))"
    )
    assert eval(text, {"LaunchLine": LaunchLine, "Invocation": Invocation}) == line


def test_launch_line_value() -> None:
    line = LaunchLine((("distribution", "Debian"), ("cd", "/tmp")), Invocation("shell", ()))
    assert line.value("distribution") == "Debian"
    assert line.value("cd") == "/tmp"
    assert line.value("user") is None
    assert LaunchLine((), Invocation("shell", ())).value("distribution") is None
    assert LaunchLine((("user", ""),), Invocation("shell", ())).value("user") == ""


# ---- what a launch imports ------------------------------------------------------------------------

FORBIDDEN = ("typing", "enum", "re", "collections", "pathlib", "json", "socket", "contextlib")
LEAN_MODULES = [
    "pywsl.wire.launch_codec",
    "pywsl.wire.launch_link",
    "pywsl.vm.quick_launch",
    "pywsl.api.session.quick_launch",
    "pywsl.api.session.registry_snapshot",
    "pywsl.api.session.path_rules",
    "pywsl.cli.fast_launch",
    "pywsl.cli.main",
    "pywsl.wire.message_types",
    "pywsl.wire.timezone_id",
    "pywsl.vm.timezone",
    "pywsl.vm.process_request",
    "pywsl.cli.invocation",
]
_LOADED_BY = (
    "import sys; before = set(sys.modules); import {module}; "
    "print('\\n'.join(sorted(set(sys.modules) - before)))"
)


def _is_forbidden(name: str) -> bool:
    return any(name == forbidden or name.startswith(forbidden + ".") for forbidden in FORBIDDEN)


def test_the_forbidden_names() -> None:
    assert _is_forbidden("re") and _is_forbidden("re._parser") and _is_forbidden("collections.abc")
    assert not _is_forbidden("_collections_abc") and not _is_forbidden("_socket")
    assert not _is_forbidden("reprlib") and not _is_forbidden("enumx") and not _is_forbidden("pywsl.re")


@pytest.mark.parametrize("module", LEAN_MODULES)
def test_a_launch_module_loads_no_heavy_library(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _LOADED_BY.format(module=module)],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert module in loaded  # imported by this command, not already there at start-up
    assert sorted(name for name in loaded if _is_forbidden(name)) == []


def test_the_mini_init_device_types_are_the_enums() -> None:
    from pywsl.vm.quick_launch import mini_init_values
    from pywsl.wire.enums import LX_MINI_INIT_MOUNT_DEVICE_TYPE

    folder = mini_init_values(29, name="Box")
    disk = mini_init_values(29, name="Box", disk=("ext4", "discard"))
    assert folder["MountDeviceType"] == LX_MINI_INIT_MOUNT_DEVICE_TYPE.LxMiniInitMountDeviceTypeInvalid
    assert disk["MountDeviceType"] == LX_MINI_INIT_MOUNT_DEVICE_TYPE.LxMiniInitMountDeviceTypeLun
    assert (disk["FsType"], disk["MountOptions"], folder["FsType"]) == ("ext4", "discard", "")
