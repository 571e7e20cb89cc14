"""What the VM's start loads: `import pywsl.guest.mini_init` without the heavy modules it no longer needs.

The VM's interpreter imports every guest role before it changes namespaces, so each module the
guest imports is paid by every cold launch. The guest's records are made by `pywsl.records`
instead of `dataclasses`, the message numbers come from `pywsl.wire.message_types` instead of the
enums, `typing` is for the type checker only, the boot arguments are read without `argparse`,
`platform`, `uuid` and `shutil` were replaced by the few lines the guest used, and `socket`,
`signal`, `shlex` and `re` (which load `enum`) by `pywsl.wire.unix_sockets`,
`pywsl.guest.lean_signal`, `os_release.shell_words` and plain string checks. Each
replacement is checked here against what it replaced, and a fresh interpreter checks that none of
those modules comes back.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import typing
import uuid
from pathlib import Path
from unittest import mock

import construct
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pywsl
from pywsl import records
from pywsl.guest import boot, disks, syscalls, systemd_boot
from pywsl.wire import channel, config_format, enums, framing, message_types

REPO = Path(pywsl.__file__).resolve().parent.parent
CONSTRUCT_PARENT = Path(construct.__file__).resolve().parent.parent

# Loaded by nothing on the VM's start any more (the guest's modules, the wire modules they use).
FORBIDDEN = {
    "argparse",
    "ast",
    "bz2",
    "construct",
    "contextlib",
    "dataclasses",
    "dis",
    "enum",
    "functools",
    "gettext",
    "hashlib",
    "inspect",
    "linecache",
    "logging",
    "lzma",
    "platform",
    "pywsl.guest.interop_server",
    "pywsl.guest.interop_workers",
    "pywsl.wire.codec",
    "pywsl.wire.enums",
    "re",
    "shlex",
    "shutil",
    "signal",
    "socket",
    "tarfile",
    "tempfile",
    "threading",
    "tokenize",
    "traceback",
    "typing",
    "uuid",
}


def _loaded_by(statement: str) -> set[str]:
    """The modules a fresh `python -S` (the VM's interpreter) has loaded after `statement`."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join((str(REPO), str(CONSTRUCT_PARENT))),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    result = subprocess.run(
        [sys.executable, "-S", "-c", f"{statement}; import sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        env=environment,
        cwd="/",
        check=True,
        timeout=60,
    )
    return set(result.stdout.split())


def test_the_vm_start_loads_none_of_the_heavy_modules() -> None:
    loaded = _loaded_by("import pywsl.guest.mini_init")
    assert "pywsl.guest.init" in loaded and "pywsl.guest.relay_child" in loaded  # the roles are there
    assert sorted(loaded & FORBIDDEN) == []


def test_the_vm_start_s_preparation_loads_none_of_them_either() -> None:
    """What `mini_init.prepare` loads besides the modules: the codecs it warms up and the check
    of the interop client's byte code."""
    loaded = _loaded_by(
        "from pywsl.guest import mini_init, interop_init; "
        "mini_init._warm_up(); interop_init._compile_client()"
    )
    assert sorted(loaded & (FORBIDDEN | {"importlib.util", "encodings.idna", "unicodedata"})) == []


def test_the_message_channel_loads_neither_typing_nor_the_enums() -> None:
    loaded = _loaded_by("import pywsl.wire.channel, pywsl.wire.config_format")
    assert sorted(loaded & {"typing", "pywsl.wire.enums", "dataclasses", "enum", "socket", "re"}) == []


# ---- shell words, numbers and sizes without shlex and re ----------------------------------------

_SHELL_TEXT = st.text(alphabet=" \t\r\nab'\"\\$`#x=", max_size=16)


@settings(max_examples=3000, deadline=None)
@given(text=_SHELL_TEXT)
def test_shell_words_split_as_shlex_does(text: str) -> None:
    import shlex

    from pywsl.guest.os_release import shell_words

    try:
        expected: list[str] | None = shlex.split(text, posix=True)
    except ValueError:
        expected = None
    try:
        got: list[str] | None = shell_words(text)
    except ValueError:
        got = None
    assert got == expected


def _int_by_pattern(text: str) -> int | None:
    """`parse_int` as it was written with `re` (the oracle)."""
    import re

    match = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text.lstrip(" \t\n\v\f\r"))
    if match is None:
        return None
    sign, digits = match.groups()
    if digits[:2].lower() == "0x":
        number = int(digits[2:], 16)
    elif digits.startswith("0") and len(digits) > 1:
        number = int(digits[1:], 8)
    else:
        number = int(digits, 10)
    number = -number if sign == "-" else number
    return number if config_format.INT_MIN <= number <= config_format.INT_MAX else None


def _memory_by_pattern(text: str) -> int | None:
    import re

    match = re.fullmatch(r"^(\d+)(B|K|KB|M|MB|G|GB|T|TB)?$", text.strip())
    if match is None:
        return None
    units = {None: 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "M": 1 << 20, "MB": 1 << 20}
    units |= {"G": 1 << 30, "GB": 1 << 30, "T": 1 << 40, "TB": 1 << 40}
    return int(match.group(1)) * units[match.group(2)]


_NUMBER_TEXT = st.text(alphabet=" \t\n+-0123456789xXabcdefABKMGTgk\u0661\u00b2", max_size=12)


@settings(max_examples=3000, deadline=None)
@given(text=_NUMBER_TEXT)
def test_numbers_and_sizes_parse_as_the_patterns_did(text: str) -> None:
    assert config_format.parse_int(text) == _int_by_pattern(text)
    assert config_format.parse_memory_string(text) == _memory_by_pattern(text)


@pytest.mark.parametrize(
    ("text", "number"),
    [("0x1F", 31), ("-010", -8), ("+7", 7), (" 0", 0), ("00", 0), ("0x", None), ("08", None), ("1 ", None)],
)
def test_c_integers(text: str, number: int | None) -> None:
    assert config_format.parse_int(text) == number


# ---- records (pywsl.records) against dataclasses ----------------------------------------------


# As the guest's modules use them (the type checker is shown `dataclasses` there).
record: typing.Any = records.dataclass
record_field: typing.Any = records.field


def _both(frozen: bool, define: typing.Callable[[typing.Any], type]) -> tuple[typing.Any, typing.Any]:
    """The class `define(maker)` gives, made a dataclass by `dataclasses` and by `records`."""
    real, cheap = (maker.dataclass(frozen=frozen)(define(maker)) for maker in (dataclasses, records))
    return real, cheap


def _pair(frozen: bool) -> tuple[typing.Any, typing.Any]:
    """The same class made by `dataclasses` and by `records`."""

    def define(maker: typing.Any) -> type:
        class Sample:
            """A sample."""

            name: str
            number: int = 3
            items: list[int] = maker.field(default_factory=list)

            def double(self) -> int:
                return self.number * 2

        return Sample

    return _both(frozen, define)


@pytest.mark.parametrize("frozen", [False, True])
@settings(max_examples=40, deadline=None)
@given(
    name=st.text(max_size=5),
    number=st.integers(),
    items=st.lists(st.integers(), max_size=3),
    other=st.integers(),
)
def test_a_record_behaves_as_the_dataclass(
    frozen: bool, name: str, number: int, items: list[int], other: int
) -> None:
    real, cheap = _pair(frozen)
    for arguments, keywords in (
        ((name,), {}),
        ((name, number), {}),
        ((name,), {"items": items, "number": number}),
    ):
        expected, got = real(*arguments, **keywords), cheap(*arguments, **keywords)
        assert repr(got) == repr(expected)
        assert got == cheap(*arguments, **keywords)
        assert (got == cheap(name, other, list(items))) == (expected == real(name, other, list(items)))
        assert got != expected  # another class: as two dataclasses, never equal
        assert got.double() == expected.double()
        assert dataclasses.asdict(got) == dataclasses.asdict(expected)
        assert dataclasses.astuple(got) == dataclasses.astuple(expected)
        assert repr(dataclasses.replace(got, number=other)) == repr(
            dataclasses.replace(expected, number=other)
        )
        assert repr(records.replace(got, name="x")) == repr(dataclasses.replace(expected, name="x"))
    assert cheap(name).items is not cheap(name).items  # a new list each time
    assert cheap.number == real.number == 3 and "items" not in vars(cheap) and "items" not in vars(real)
    assert cheap.__match_args__ == real.__match_args__


@pytest.mark.parametrize("frozen", [False, True])
def test_a_record_runs_post_init_as_the_dataclass(frozen: bool) -> None:
    def define(maker: typing.Any) -> type:
        class Checked:
            number: int
            twice: int = 0

            def __post_init__(self) -> None:
                if self.number < 0:
                    raise ValueError(f"negative: {self.number}")
                object.__setattr__(self, "twice", self.number * 2)

        return Checked

    real, cheap = _both(frozen, define)
    assert repr(cheap(4)) == repr(real(4)) and cheap(4).twice == 8
    assert repr(dataclasses.replace(cheap(4), number=5)) == repr(dataclasses.replace(real(4), number=5))
    replaced: typing.Any = records.replace(cheap(4), number=6)
    assert replaced.twice == 12
    for cls in (real, cheap):
        with pytest.raises(ValueError, match="negative: -1"):
            cls(-1)


def test_records_answer_the_dataclass_questions() -> None:
    real, cheap = _pair(True)
    assert all(dataclasses.is_dataclass(item) for item in (cheap, cheap("a")))
    assert [(item.name, item.type) for item in dataclasses.fields(cheap)] == [
        (item.name, item.type) for item in dataclasses.fields(real)
    ]
    assert dataclasses.fields(cheap)[2].default_factory is list
    assert cheap.__dataclass_params__.frozen
    with pytest.raises(TypeError, match="dataclass instances"):
        records.replace(object())


@pytest.mark.parametrize("frozen", [False, True])
def test_a_record_hashes_and_freezes_as_the_dataclass(frozen: bool) -> None:
    real, cheap = _pair(frozen)
    if frozen:
        assert hash(cheap("a", 1, ())) == hash(real("a", 1, ())) == hash(("a", 1, ()))
        for record in (real("a"), cheap("a")):
            with pytest.raises(AttributeError, match="cannot assign to field 'number'"):
                record.number = 4
            with pytest.raises(AttributeError, match="cannot assign to field 'other'"):
                record.other = 4
            with pytest.raises(AttributeError, match="cannot delete field 'name'"):
                del record.name
        with pytest.raises(records.FrozenInstanceError):
            cheap("a").name = "b"
    else:
        assert cheap.__hash__ is None and real.__hash__ is None
        record = cheap("a")
        record.number = 4
        assert record == cheap("a", 4)


@pytest.mark.parametrize(
    ("arguments", "keywords"),
    [
        ((), {}),
        ((), {"number": 1}),
        (("a", 1, [], 4), {}),
        (("a",), {"name": "b"}),
        (("a",), {"unknown": 1}),
    ],
)
@pytest.mark.parametrize("frozen", [False, True])
def test_a_record_refuses_a_wrong_call_as_the_dataclass(
    frozen: bool, arguments: tuple[object, ...], keywords: dict[str, object]
) -> None:
    real, cheap = _pair(frozen)
    with pytest.raises(TypeError) as expected:
        real(*arguments, **keywords)
    with pytest.raises(TypeError) as got:
        cheap(*arguments, **keywords)
    assert str(got.value) == str(expected.value)


def test_a_record_keeps_what_its_class_defines_and_checks_its_defaults() -> None:
    @record(frozen=True)
    class Own:
        a: int
        b: int = 2

        def __repr__(self) -> str:
            return "own"

    @record
    class Two:
        a: int
        b: list[int] = record_field(default=[1])

    own: typing.Any = Own
    two: typing.Any = Two
    assert repr(own(1)) == "own" and own(1) == own(1, 2) and own(1) != own(1, 3)
    assert two(1).b == [1] and two.b == [1]
    with pytest.raises(TypeError, match="non-default argument 'c' follows default argument"):

        @record
        class Wrong:
            a: int = 1
            c: int

    with pytest.raises(ValueError, match="both default and default_factory"):
        records.field(default=1, default_factory=list)


def test_the_three_argument_errors_list_the_names_as_python_does() -> None:
    @dataclasses.dataclass
    class Real:
        a: int
        b: int
        c: int

    @record
    class Cheap:
        a: int
        b: int
        c: int

    for arguments in ((), (1,), (1, 2)):
        with pytest.raises(TypeError) as expected:
            Real(*arguments)
        with pytest.raises(TypeError) as got:
            Cheap(*arguments)
        assert str(got.value).replace("Cheap", "Real") == str(expected.value)


# ---- the plain numbers against the enums ---------------------------------------------------------------

PLAIN_ENUMS = [
    (message_types.TransactionStep, enums.TRANSACTION_STEP),
    (message_types.CreateInstanceStep, enums.LX_MINI_CREATE_INSTANCE_STEP),
    (message_types.MountStep, enums.LX_MINI_MOUNT_STEP),
    (message_types.CreateProcessFlags, enums.LX_INIT_CREATE_PROCESS_FLAGS),
    (message_types.ShellOptions, enums.CREATE_PROCESS_SHELL_OPTIONS),
    (message_types.MiniInitMessageFlags, enums.LX_MINI_INIT_MESSAGE_FLAGS),
]


@pytest.mark.parametrize(("plain", "declared"), PLAIN_ENUMS, ids=lambda kind: kind.__name__)
def test_the_plain_numbers_are_the_declared_ones(plain: type, declared: typing.Any) -> None:
    constants = {name: value for name, value in vars(plain).items() if not name.startswith("_")}
    assert constants
    for name, value in constants.items():
        assert type(value) is int, name
        assert value == declared[name], name
    if declared in (enums.TRANSACTION_STEP, enums.LX_MINI_CREATE_INSTANCE_STEP, enums.LX_MINI_MOUNT_STEP):
        assert set(constants) == set(declared.__members__)  # every step


def test_the_mini_init_message_types_it_dispatches_are_declared() -> None:
    for name in ("PywslQueryInstances", "PywslAttachNotify"):
        assert getattr(message_types.PywslMessageType, name) == enums.PYWSL_MESSAGE_TYPE[name]


# ---- named tuples and the channel's protocol, without typing --------------------------------------------


def test_the_named_tuples_are_as_typing_made_them() -> None:
    header = framing.parse_header(bytes(range(16)))
    assert isinstance(header, tuple) and header == framing.MessageHeader(*header)
    assert framing.MessageHeader._fields == (
        "message_type",
        "message_size",
        "transaction_id",
        "transaction_step",
    )
    assert header._replace(message_size=1).message_size == 1
    assert framing.MessageHeader.__doc__ == "A decoded ``MESSAGE_HEADER``."
    assert framing.MessageHeader.__module__ == "pywsl.wire.framing"
    assert type(framing.MESSAGE_TYPE_ANY) is int
    assert enums.LX_MESSAGE_TYPE(framing.MESSAGE_TYPE_ANY) is enums.LX_MESSAGE_TYPE.LxMiniInitMessageAny

    value = config_format.ConfigValue("section", "key", "v", 3)
    assert value.name == "section.key" and config_format.ConfigValue("", "key", "v", 1).name == "key"
    assert value == ("section", "key", "v", 3) and value._asdict()["line"] == 3
    assert config_format.ConfigValue._fields == ("section", "key", "value", "line")
    assert config_format.ConfigProblem("m", 2) == ("m", 2)
    assert config_format.ConfigProblem._fields == ("message", "line")
    assert (
        config_format.ConfigValue.__module__
        == config_format.ConfigProblem.__module__
        == config_format.__name__
    )
    assert isinstance(value, config_format.ConfigItem)


def test_the_channel_still_names_its_schema_protocol() -> None:
    protocol = channel.MessageSchemaLike
    assert protocol is channel.MessageSchemaLike and protocol.__name__ == "MessageSchemaLike"
    assert typing.Protocol in protocol.__mro__
    assert {"name", "message_type", "sizeof", "build", "parse"} <= set(vars(protocol))
    with pytest.raises(AttributeError):
        channel.NoSuchName  # type: ignore[attr-defined]  # noqa: B018


# ---- boot arguments without argparse ------------------------------------------------------------------

REQUIRED = ["--runtime-dir", "/run/x", "--listen-fd", "3", "--uid-map", "0:1000:10", "--gid-map", "0:1000:10"]
REQUIRED += ["--owner-uid", "0"]
WORDS = [
    "--runtime-dir",
    "--listen-fd",
    "--uid-map",
    "--gid-map",
    "--owner-uid",
    "--networking-mode",
    "--hostname",
    "--instance-idle-timeout",
    "--vm-idle-timeout",
    "--cgroup",
    "--boot-timeout",
    "--processors",
    "--lxcfs",
    "--gpu-library",
    "--host-path",
    "/usr/bin:/bin",
    "--no-nested-virtualization",
    "--no-gpu-support",
    "--no-gpu",
    "--host",
    "--hostname=h",
    "--",
    "-h",
    "none",
    "mirrored",
    "other",
    "0:5:1",
    "1:2",
    "0:0:0",
    "5",
    "-5",
    "0",
    "1e3",
    " 7",
    "-",
    "-x",
    "-1.5",
    "lib.so=/l",
    "lib=rel",
    "/a",
    "",
]


def _argparse_result(argv: list[str]) -> dict[str, object] | None:
    try:
        return boot._parsed_options(argv)
    except SystemExit:
        return None


@settings(max_examples=300, deadline=None)
@given(
    extra=st.lists(st.sampled_from(WORDS), max_size=8),
    position=st.integers(min_value=0, max_value=len(REQUIRED) // 2),
)
def test_the_quick_reading_is_argparse_or_leaves_it_to_argparse(extra: list[str], position: int) -> None:
    argv = REQUIRED[: position * 2] + extra + REQUIRED[position * 2 :]
    quick = boot._quick_options(argv)
    if quick is not None:
        assert quick == _argparse_result(argv)


def test_the_host_s_command_line_takes_the_quick_reading() -> None:
    from pywsl.vm import VmConfig
    from pywsl.vm.backends.namespaces import boot_arguments

    config = VmConfig(
        owner_uid=0,
        owner_gid=0,
        runtime_dir=Path("/run/x"),
        uid_map=[(0, 1 << 30, 65536)],
        gid_map=[(0, 1 << 30, 65536)],
        networking_mode="none",
        hostname="h",
        memory_bytes=None,
        processors=2,
        vm_idle_timeout_ms=-1,
        instance_idle_timeout_ms=-1,
        nested_virtualization=False,
        gpu_support=True,
        gpu_libraries=(("libcuda.so.1", "/l/libcuda.so.1"),),
        lxcfs="/var/lib/lxcfs",
        host_path="/usr/local/bin:relative::/usr/bin:-odd:/bin",
    )
    argv = boot_arguments(config, 3, (Path("/sys/fs/cgroup/a"), Path("/sys/fs/cgroup/b")))
    quick = boot._quick_options(argv)
    assert quick is not None and quick == boot._parsed_options(argv)
    arguments = boot.parse_boot_arguments(argv)
    assert arguments.vm_idle_timeout_ms == -1 and arguments.cgroups == (
        "/sys/fs/cgroup/a",
        "/sys/fs/cgroup/b",
    )
    assert arguments.devices.gpu_libraries == (("libcuda.so.1", "/l/libcuda.so.1"),)
    assert arguments.host_path == "/usr/local/bin:/usr/bin:/bin"  # its absolute folders only


def test_a_wrong_command_line_still_gets_argparse_s_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        boot.parse_boot_arguments([*REQUIRED, "--processors", "0"])
    assert "argument --processors: '0' is not a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        boot.parse_boot_arguments([*REQUIRED, "--uid-map", "1:2"])
    assert "argument --uid-map: '1:2' is not inside:outside:count" in capsys.readouterr().err


# ---- platform, uuid and shutil replacements ------------------------------------------------------------


def test_the_machine_is_platform_s() -> None:
    import platform

    assert syscalls._machine() == platform.machine()


def test_the_machine_id_is_uuid4_s() -> None:
    for _ in range(200):
        random = os.urandom(16)
        with mock.patch("os.urandom", return_value=random):
            ours, theirs = systemd_boot.random_uuid_hex(), uuid.uuid4().hex
        assert ours == theirs
        assert uuid.UUID(hex=ours).version == 4


def test_which_is_shutil_s(tmp_path: Path) -> None:
    first, second, folder = tmp_path / "first", tmp_path / "second", tmp_path / "second" / "tool"
    first.mkdir()
    second.mkdir()
    folder.mkdir()
    (first / "plain").write_text("")
    (first / "tool").write_text("")
    for name, mode in (("run", 0o755), ("tool2", 0o755), ("plain", 0o644)):
        (second / name).write_text("")
        (second / name).chmod(mode)
    paths = [
        f"{first}:{second}",
        f"{second}:{first}:{second}",
        "",
        f"{tmp_path / 'missing'}:{second}",
        f"::{second}",
    ]
    names = ["run", "tool", "tool2", "plain", "none", str(second / "run"), str(second / "plain"), "x/run"]
    for path in paths:
        for name in names:
            assert disks.which(name, path) == shutil.which(name, path=path), (name, path)


@pytest.mark.parametrize("host_path", ["", "relative:bin", ":"])
def test_no_absolute_host_folder_gives_no_host_path_argument(host_path: str) -> None:
    from pywsl.vm import VmConfig
    from pywsl.vm.backends.namespaces import boot_arguments

    config = VmConfig(
        owner_uid=0,
        owner_gid=0,
        runtime_dir=Path("/run/x"),
        uid_map=[(0, 0, 65536)],
        gid_map=[(0, 0, 65536)],
        networking_mode="mirrored",
        hostname="h",
        memory_bytes=None,
        processors=None,
        vm_idle_timeout_ms=-1,
        instance_idle_timeout_ms=-1,
        host_path=host_path,
    )
    argv = boot_arguments(config, 3, ())
    assert "--host-path" not in argv
    assert boot.parse_boot_arguments(argv).host_path == ""
