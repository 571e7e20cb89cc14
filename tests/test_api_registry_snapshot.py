"""The launch's lock-free registry read and path rules agree with the full registry and `paths`.

`registry_snapshot.read_registration` may return a registration only when the full path (recovery,
then `lookup` in a registry transaction, as `UserSession._resolve` does) would launch the same one:
same GUID, name, folder, default user, default environment, flavor and version, State Installed and
no operation running. Everything it cannot vouch for is None. `path_rules` gives the folders of
`paths.user_paths` as plain strings.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pywsl.api.credentials import UserIdentity
from pywsl.api.errors import WslError
from pywsl.api.session import path_rules, registry_snapshot
from pywsl.api.session.paths import user_paths
from pywsl.api.session.registrations import lookup
from pywsl.api.session.registry import (
    LX_UID_INVALID,
    DistributionState,
    Registration,
    Registry,
    RegistryData,
)
from pywsl.api.session.registry_snapshot import (
    MAX_REGISTRY_BYTES,
    REGISTRY_FILE_NAME,
    LaunchRegistration,
    read_registration,
)

ME = UserIdentity.current()
GUID = uuid.UUID("6f1f0a47-3c1e-4d8e-9b7a-2f6c4d1e8a90")
OTHER_GUID = uuid.UUID("0b7e2d51-9a4c-4f3b-8e6d-1c2a3b4c5d6e")
KEY = "{" + str(GUID) + "}"
OTHER_KEY = "{" + str(OTHER_GUID) + "}"
NOWHERE = Path("/nonexistent/pywsl-test")  # base paths: never created


# -- helpers -------------------------------------------------------------------------------------


def write_document(folder: Path, document: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REGISTRY_FILE_NAME
    path.write_text(json.dumps(document))
    return path


def launch_values(snapshot: LaunchRegistration) -> tuple[object, ...]:
    return (
        snapshot.guid,
        snapshot.name,
        Path(snapshot.base_path),
        snapshot.default_uid,
        snapshot.default_environment,
        snapshot.flavor,
        snapshot.os_version,
    )


def full_values(registration: Registration) -> tuple[object, ...]:
    return (
        str(registration.id),
        registration.name,
        registration.base_path,
        registration.default_uid,
        registration.default_environment,
        registration.flavor,
        registration.os_version,
    )


def full_path(folder: Path, name: str | None) -> Registration:
    """What `UserSession._resolve` finds, checked as a launch checks it (`_ensure_installed`,
    `_ensure_not_locked`); a WslError when the full path would not launch."""
    registry = Registry(folder, ME)
    registry.recover()
    with registry.transaction(create=False) as data:
        found = lookup(data, name)
    if found.state is not DistributionState.INSTALLED:
        raise WslError("E_ILLEGAL_STATE_CHANGE", f"{found.name} is {found.state.name}")
    if registry.active_operation(found.id) is not None:
        raise WslError("E_ILLEGAL_STATE_CHANGE", f"{found.name} is locked")
    return found


def assert_full_path_agrees(folder: Path, name: str | None, snapshot: LaunchRegistration) -> None:
    """The full path launches exactly what the snapshot returned."""
    assert launch_values(snapshot) == full_values(full_path(folder, name))


def register(
    registry: Registry,
    name: str,
    *,
    state: DistributionState = DistributionState.INSTALLED,
    default_uid: int = 0,
    environment: list[str] | None = None,
    flavor: str = "",
    os_version: str = "",
) -> Registration:
    distro_id = uuid.uuid4()
    entry = Registration(
        id=distro_id,
        name=name,
        base_path=NOWHERE / str(distro_id),
        state=state,
        default_uid=default_uid,
        default_environment=environment,
        flavor=flavor,
        os_version=os_version,
    )
    with registry.transaction() as data:
        data.distributions[distro_id] = entry
        if data.default_distribution is None and state is DistributionState.INSTALLED:
            data.default_distribution = distro_id
    return entry


def valid_document(**changes: object) -> dict[str, Any]:
    """A registry with one installed distribution "Debian" (the default) at KEY; `changes` replace
    (or, for the MISSING marker, remove) its values."""
    registration = Registration(
        id=GUID,
        name="Debian",
        base_path=NOWHERE / "debian",
        state=DistributionState.INSTALLED,
        default_uid=1000,
        default_environment=["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
        flavor="debian",
        os_version="12",
    )
    document = RegistryData(default_distribution=GUID, distributions={GUID: registration}).to_json()
    entry = document["Distributions"][KEY]
    for key, value in changes.items():
        if value is MISSING:
            entry.pop(key, None)
        else:
            entry[key] = value
    return document


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


# -- 1. registries the real `Registry` wrote -----------------------------------------------------


def test_lookup_by_name_in_any_case_and_the_default(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "pywsl", ME)
    debian = register(
        registry,
        "Debian",
        default_uid=1000,
        environment=["PATH=/bin", "LANG=C.UTF-8"],
        flavor="debian",
        os_version="12",
    )
    alpine = register(registry, "Alpine-3.20", flavor="alpine", os_version="3.20.1")
    folder = str(registry.folder)
    for name, expected in [
        ("Debian", debian),
        ("debian", debian),
        ("DEBIAN", debian),
        ("Alpine-3.20", alpine),
        ("aLPINE-3.20", alpine),
        (None, debian),
    ]:
        snapshot = read_registration(folder, name)
        assert snapshot is not None, name
        assert launch_values(snapshot) == full_values(expected)
        assert snapshot.guid == str(expected.id) and snapshot.name == expected.name
        assert_full_path_agrees(registry.folder, name, snapshot)


def test_the_default_follows_the_registry(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "pywsl", ME)
    register(registry, "Debian")
    alpine = register(registry, "Alpine")
    with registry.transaction() as data:
        data.default_distribution = alpine.id
    snapshot = read_registration(str(registry.folder), None)
    assert snapshot is not None and snapshot.guid == str(alpine.id)
    assert_full_path_agrees(registry.folder, None, snapshot)


def test_a_missing_name_is_none(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "pywsl", ME)
    register(registry, "Debian")
    assert read_registration(str(registry.folder), "Ubuntu") is None
    assert read_registration(str(registry.folder), "Debian2") is None
    assert read_registration(str(registry.folder), "") is None
    with pytest.raises(WslError) as caught:
        full_path(registry.folder, "Ubuntu")
    assert caught.value.code == "WSL_E_DISTRO_NOT_FOUND"


def test_an_entry_not_installed_is_none_even_when_the_registry_wrote_it(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "pywsl", ME)
    register(registry, "Debian")
    register(registry, "Half", state=DistributionState.INSTALLING)
    assert read_registration(str(registry.folder), "Debian") is not None
    assert read_registration(str(registry.folder), "Half") is None


def test_registry_data_written_with_json_dumps(tmp_path: Path) -> None:
    write_document(tmp_path, valid_document())
    for name in ("Debian", "debian", None):
        snapshot = read_registration(str(tmp_path), name)
        assert snapshot is not None
        assert launch_values(snapshot) == (
            str(GUID),
            "Debian",
            NOWHERE / "debian",
            1000,
            ["PATH=/usr/bin:/bin", "LANG=C.UTF-8"],
            "debian",
            "12",
        )
        assert_full_path_agrees(tmp_path, name, snapshot)


def test_uid_limits_the_registry_accepts(tmp_path: Path) -> None:
    for uid in (0, 1, 1000, LX_UID_INVALID - 1):
        write_document(tmp_path, valid_document(DefaultUid=uid))
        snapshot = read_registration(str(tmp_path), "Debian")
        assert snapshot is not None and snapshot.default_uid == uid
        assert_full_path_agrees(tmp_path, "Debian", snapshot)


def test_optional_values_take_the_registry_s_defaults(tmp_path: Path) -> None:
    write_document(
        tmp_path,
        valid_document(
            DefaultUid=MISSING, Flavor=MISSING, OsVersion=MISSING, Version=MISSING, MoveTarget=MISSING
        ),
    )
    snapshot = read_registration(str(tmp_path), "Debian")
    assert snapshot is not None
    assert (snapshot.default_uid, snapshot.flavor, snapshot.os_version) == (0, "", "")
    assert_full_path_agrees(tmp_path, "Debian", snapshot)


def test_reading_changes_nothing(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "pywsl", ME)
    register(registry, "Debian")
    before = {p.name: p.stat().st_mtime_ns for p in registry.folder.iterdir()}
    content = registry.path.read_bytes()
    assert read_registration(str(registry.folder), "Debian") is not None
    assert read_registration(str(registry.folder), "missing") is None
    assert {p.name: p.stat().st_mtime_ns for p in registry.folder.iterdir()} == before
    assert registry.path.read_bytes() == content
    missing = tmp_path / "nobody"
    assert read_registration(str(missing), None) is None
    assert not missing.exists()


# -- 2. None whenever the entry is not plainly usable --------------------------------------------


def test_the_valid_document_is_read(tmp_path: Path) -> None:
    """The baseline every case below changes one thing of."""
    write_document(tmp_path, valid_document())
    assert read_registration(str(tmp_path), "Debian") is not None
    assert read_registration(str(tmp_path), None) is not None


def _valid_text() -> str:
    return json.dumps(valid_document(), indent=2)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b" \n\t\r ",
        b"{",
        b'{"Format": 1,',
        (_valid_text() + "x").encode(),
        (_valid_text() + "{}").encode(),
        (_valid_text() + "\n]").encode(),
        json.dumps([valid_document()]).encode(),
        b"null",
        b'"registry"',
        b"1",
        ("\ufeff" + _valid_text()).encode(),  # a byte order mark is not JSON
        ("\x0b" + _valid_text()).encode(),  # neither is any other white space
        _valid_text().encode().replace(b'"debian"', b'"deb\xffian"'),  # not UTF-8
        _valid_text().encode().replace(b'"debian"', b'"deb\xed\xa0\x80ian"'),  # an encoded surrogate
        _valid_text().encode().replace(b'"debian"', b'"deb\x01ian"'),  # a control character
    ],
    ids=lambda content: repr(content[:24]),
)
def test_unreadable_files_are_none(tmp_path: Path, content: bytes) -> None:
    (tmp_path / REGISTRY_FILE_NAME).write_bytes(content)
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


def test_no_file_is_none(tmp_path: Path) -> None:
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_none(tmp_path: Path, constant: str) -> None:
    text = json.dumps(valid_document())
    assert '"DefaultVersion": 2' in text
    (tmp_path / REGISTRY_FILE_NAME).write_text(
        text.replace('"DefaultVersion": 2', f'"DefaultVersion": {constant}')
    )
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None
    assert full_path(tmp_path, "Debian").id == GUID  # `json.loads` takes them: the full path decides


@pytest.mark.parametrize("format_value", [MISSING, 0, 2, "1", None, [1]])
def test_another_format_is_none(tmp_path: Path, format_value: object) -> None:
    document = valid_document()
    if format_value is MISSING:
        del document["Format"]
    else:
        document["Format"] = format_value
    write_document(tmp_path, document)
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


@pytest.mark.parametrize("distributions", [MISSING, [], "x", None])
def test_distributions_not_an_object_is_none(tmp_path: Path, distributions: object) -> None:
    document = valid_document()
    if distributions is MISSING:
        del document["Distributions"]
    else:
        document["Distributions"] = distributions
    write_document(tmp_path, document)
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


def test_a_symbolic_link_is_none(tmp_path: Path) -> None:
    real = tmp_path / "real"
    write_document(real, valid_document())
    assert read_registration(str(real), "Debian") is not None
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / REGISTRY_FILE_NAME).symlink_to(real / REGISTRY_FILE_NAME)
    assert read_registration(str(linked), "Debian") is None
    assert read_registration(str(linked), None) is None


def test_a_fifo_is_none_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / REGISTRY_FILE_NAME
    os.mkfifo(fifo)
    results: list[LaunchRegistration | None] = []
    reader = threading.Thread(target=lambda: results.append(read_registration(str(tmp_path), None)))
    reader.daemon = True
    reader.start()
    reader.join(10)
    if reader.is_alive():  # let a reader blocked in open() or read() go before failing
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(writer)
        reader.join(10)
        pytest.fail("reading a FIFO blocked")
    assert results == [None]


def test_a_directory_is_none(tmp_path: Path) -> None:
    (tmp_path / REGISTRY_FILE_NAME).mkdir()
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


def test_a_huge_sparse_file_is_none(tmp_path: Path) -> None:
    path = write_document(tmp_path, valid_document())
    os.truncate(path, MAX_REGISTRY_BYTES + 1)
    assert read_registration(str(tmp_path), "Debian") is None
    os.truncate(path, 4 << 30)
    assert read_registration(str(tmp_path), None) is None


def test_the_size_limit_is_the_registry_s(tmp_path: Path) -> None:
    """A valid registry padded to exactly the limit is read; one byte more is None (the full path
    refuses it too)."""
    text = json.dumps(valid_document())
    path = tmp_path / REGISTRY_FILE_NAME
    path.write_bytes(text.encode() + b" " * (MAX_REGISTRY_BYTES - len(text)))
    assert path.stat().st_size == MAX_REGISTRY_BYTES
    snapshot = read_registration(str(tmp_path), "Debian")
    assert snapshot is not None
    assert_full_path_agrees(tmp_path, "Debian", snapshot)
    with path.open("ab") as stream:
        stream.write(b" ")
    assert read_registration(str(tmp_path), "Debian") is None
    with pytest.raises(WslError):
        full_path(tmp_path, "Debian")


@pytest.mark.parametrize("state", [0, 2, 3, 4, 5, 6, -1, 7, "1", None, MISSING])
def test_a_state_other_than_installed_is_none(tmp_path: Path, state: object) -> None:
    write_document(tmp_path, valid_document(State=state))
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


@pytest.mark.parametrize(
    "changes",
    [
        {"MoveTarget": "/nonexistent/pywsl-test/moved"},
        {"MoveTarget": "relative"},
        {"MoveTarget": None},
        {"VhdFileName": "ext4.vhdx"},
        {"VhdFileName": None},
        {"Version": 1},
        {"Version": 0},
        {"Version": 3},
        {"Version": "2"},
        {"Version": True},
        {"Version": None},
    ],
    ids=repr,
)
def test_a_move_a_disk_or_another_version_is_none(tmp_path: Path, changes: dict[str, object]) -> None:
    write_document(tmp_path, valid_document(**changes))
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


@pytest.mark.parametrize(
    "key",
    [
        KEY.upper(),
        "{" + str(GUID).upper() + "}",
        str(GUID),
        GUID.hex,
        "{" + GUID.hex + "}",
        "urn:uuid:" + str(GUID),
        KEY[:-2] + "}",
        KEY[:-1] + "0}",
        "{" + str(GUID)[:-1] + "g}",
        "{" + str(GUID)[1:9] + "-" + str(GUID)[10:] + "}",  # groups of the wrong lengths
        "{{" + str(GUID) + "}}",
        "",
        "Debian",
    ],
)
def test_a_key_that_is_not_a_canonical_guid_is_none(tmp_path: Path, key: str) -> None:
    document = valid_document()
    document["Distributions"] = {key: document["Distributions"][KEY]}
    document["DefaultDistribution"] = key
    write_document(tmp_path, document)
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


def test_two_entries_with_the_same_name_in_another_case_are_none(tmp_path: Path) -> None:
    document = valid_document()
    twin = dict(document["Distributions"][KEY], DistributionName="DEBIAN", BasePath="/nonexistent/twin")
    document["Distributions"][OTHER_KEY] = twin
    write_document(tmp_path, document)
    for name in ("Debian", "debian", "DEBIAN"):
        assert read_registration(str(tmp_path), name) is None


def test_a_default_key_that_names_no_entry_is_none(tmp_path: Path) -> None:
    for default in ("", OTHER_KEY, KEY.upper(), str(GUID), 5, None, MISSING):
        document = valid_document()
        if default is MISSING:
            del document["DefaultDistribution"]
        else:
            document["DefaultDistribution"] = default
        write_document(tmp_path, document)
        assert read_registration(str(tmp_path), None) is None, default
        assert read_registration(str(tmp_path), "Debian") is not None


@pytest.mark.parametrize(
    "name", ["Legacy", "legacy", "LEGACY", "a b", "x" * 257, "", "Débian", "a/b", "a\0b", 5, None, MISSING]
)
def test_an_invalid_name_is_none(tmp_path: Path, name: object) -> None:
    write_document(tmp_path, valid_document(DistributionName=name))
    assert read_registration(str(tmp_path), None) is None
    if isinstance(name, str):
        assert read_registration(str(tmp_path), name) is None


def test_a_name_of_the_longest_length_is_read(tmp_path: Path) -> None:
    name = "x" * 256
    write_document(tmp_path, valid_document(DistributionName=name))
    snapshot = read_registration(str(tmp_path), name.upper())
    assert snapshot is not None and snapshot.name == name
    assert_full_path_agrees(tmp_path, name.upper(), snapshot)


@pytest.mark.parametrize(
    "base_path", ["relative/debian", "", "./debian", "/nonexistent/a\0b", 5, None, MISSING]
)
def test_a_base_path_that_is_not_absolute_is_none(tmp_path: Path, base_path: object) -> None:
    write_document(tmp_path, valid_document(BasePath=base_path))
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


@pytest.mark.parametrize("uid", [True, False, -1, LX_UID_INVALID, 1 << 32, 1 << 80, 1.0, "0", None])
def test_a_bad_default_uid_is_none(tmp_path: Path, uid: object) -> None:
    write_document(tmp_path, valid_document(DefaultUid=uid))
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


@pytest.mark.parametrize(
    "environment",
    [
        MISSING,
        None,
        "PATH=/bin",
        {"PATH": "/bin"},
        ["PATH=/bin", "NOEQUALS"],
        ["PATH=/bin", 5],
        ["PATH=/bin", None],
        ["A=\0"],
        [f"V{index}=1" for index in range(1025)],
    ],
    ids=lambda value: repr(value)[:30],
)
def test_a_bad_default_environment_is_none(tmp_path: Path, environment: object) -> None:
    write_document(tmp_path, valid_document(DefaultEnvironment=environment))
    assert read_registration(str(tmp_path), "Debian") is None
    assert read_registration(str(tmp_path), None) is None


@pytest.mark.parametrize(
    "changes", [{"Flavor": 5}, {"Flavor": "a\0"}, {"OsVersion": None}, {"OsVersion": 12}]
)
def test_a_bad_flavor_or_version_text_is_none(tmp_path: Path, changes: dict[str, object]) -> None:
    write_document(tmp_path, valid_document(**changes))
    assert read_registration(str(tmp_path), "Debian") is None


def test_an_entry_that_is_not_an_object_is_none(tmp_path: Path) -> None:
    entries: list[object] = [[], "Debian", None, 1]
    for entry in entries:
        document = valid_document()
        document["Distributions"][KEY] = entry
        write_document(tmp_path, document)
        assert read_registration(str(tmp_path), None) is None
        assert read_registration(str(tmp_path), "Debian") is None


@pytest.mark.parametrize(
    "state",
    [
        DistributionState.EXPORTING,
        DistributionState.INSTALLING,
        DistributionState.UNINSTALLING,
        DistributionState.CONVERTING,
    ],
)
def test_an_operation_lock_is_none_while_held(tmp_path: Path, state: DistributionState) -> None:
    registry = Registry(tmp_path / "pywsl", ME)
    entry = register(registry, "Debian")
    lock = registry.acquire_operation(entry.id, state)
    try:
        assert read_registration(str(registry.folder), "Debian") is None
        assert read_registration(str(registry.folder), None) is None
    finally:
        lock.release()
    snapshot = read_registration(str(registry.folder), "Debian")
    assert snapshot is not None and snapshot.guid == str(entry.id)
    assert_full_path_agrees(registry.folder, "Debian", snapshot)


def test_an_operation_lock_of_another_distribution_does_not_count(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "pywsl", ME)
    debian = register(registry, "Debian")
    other = register(registry, "Other")
    with registry.acquire_operation(other.id, DistributionState.EXPORTING):
        snapshot = read_registration(str(registry.folder), "Debian")
        assert snapshot is not None and snapshot.guid == str(debian.id)
        assert read_registration(str(registry.folder), "Other") is None


def test_a_lock_file_left_by_a_crash_or_a_link_is_none(tmp_path: Path) -> None:
    """The full path launches past a lock nobody holds; the snapshot leaves that to it."""
    write_document(tmp_path, valid_document())
    locks = tmp_path / "locks"
    locks.mkdir()
    left = locks / f"{GUID}.lock"
    left.write_text('{"pid": 1, "state": "EXPORTING"}')
    assert read_registration(str(tmp_path), "Debian") is None
    assert Registry(tmp_path, ME).active_operation(GUID) is None
    left.unlink()
    left.symlink_to(tmp_path / "dangling")
    assert read_registration(str(tmp_path), "Debian") is None
    left.unlink()
    assert read_registration(str(tmp_path), "Debian") is not None


def test_duplicate_keys_in_the_text_take_the_last_like_the_registry(tmp_path: Path) -> None:
    first = json.dumps(dict(valid_document()["Distributions"][KEY], BasePath="/nonexistent/first"))
    last = json.dumps(valid_document()["Distributions"][KEY])
    entries = f'"{KEY}": {first}, "{KEY}": {last}'
    text = f'{{"Format": 1, "DefaultDistribution": "{KEY}", "Distributions": {{{entries}}}}}'
    assert text.count(KEY) == 3 and json.loads(text)["Distributions"][KEY]["BasePath"] == str(
        NOWHERE / "debian"
    )
    (tmp_path / REGISTRY_FILE_NAME).write_text(text)
    for name in ("Debian", None):
        snapshot = read_registration(str(tmp_path), name)
        assert snapshot is not None and snapshot.base_path == str(NOWHERE / "debian")
        assert_full_path_agrees(tmp_path, name, snapshot)


# Entries the snapshot returns although the full path would not launch them (or would launch another
# distribution): `_usable` does not check what `Registration.from_json` rejects.
_GAPS: list[tuple[str, Callable[[], dict[str, Any]], str | None]] = [
    ("State true", lambda: valid_document(State=True), "Debian"),
    ("State 1.0", lambda: valid_document(State=1.0), "Debian"),
    ("Version 2.0", lambda: valid_document(Version=2.0), "Debian"),
    ("Flags 99", lambda: valid_document(Flags=99), "Debian"),
    ("Flags text", lambda: valid_document(Flags="15"), "Debian"),
    ("RunOOBE 2", lambda: valid_document(RunOOBE=2), "Debian"),
    ("Modern text", lambda: valid_document(Modern="1"), "Debian"),
    ("PackageFamilyName number", lambda: valid_document(PackageFamilyName=5), "Debian"),
    ("CreatedBasePath true", lambda: valid_document(CreatedBasePath=True), "Debian"),
    ("Sparse -1", lambda: valid_document(Sparse=-1), "Debian"),
    ("BasePath over 4096", lambda: valid_document(BasePath="/" + "x" * 4096), "Debian"),
    ("Flavor over 4096", lambda: valid_document(Flavor="x" * 4097), "Debian"),
    ("OsVersion over 4096", lambda: valid_document(OsVersion="x" * 4097), "Debian"),
    ("default with bad Flags", lambda: _with_other(valid_document(Flags=99)), None),
    ("same GUID earlier, by name", lambda: _same_guid_earlier(), "Debian"),
    ("same GUID earlier, default", lambda: _same_guid_earlier(), None),
]


def _with_other(document: dict[str, Any]) -> dict[str, Any]:
    """Another installed distribution after the default one."""
    document["Distributions"][OTHER_KEY] = valid_document(
        DistributionName="Other", BasePath="/nonexistent/o"
    )["Distributions"][KEY]
    return document


def _same_guid_earlier() -> dict[str, Any]:
    """The same GUID written another way before KEY: the full path keeps the first entry."""
    document = valid_document()
    other = valid_document(DistributionName="Other", BasePath="/nonexistent/o")["Distributions"][KEY]
    document["Distributions"] = {str(GUID).upper(): other, KEY: document["Distributions"][KEY]}
    return document


@pytest.mark.parametrize(
    ("make", "name"), [(make, name) for _, make, name in _GAPS], ids=[g[0] for g in _GAPS]
)
def test_never_an_entry_the_full_path_would_not_launch(
    tmp_path: Path, make: Callable[[], dict[str, Any]], name: str | None
) -> None:
    write_document(tmp_path, make())
    snapshot = read_registration(str(tmp_path), name)
    if snapshot is not None:
        assert_full_path_agrees(tmp_path, name, snapshot)


# -- 3. properties -------------------------------------------------------------------------------

_NAMES = ["Debian", "debian", "DEBIAN", "Alpine", "alpine", "Ubuntu-24.04", "x.y_z"]
_LOOKUPS: list[str | None] = [
    None,
    "Debian",
    "dEBIAN",
    "ALPINE",
    "Ubuntu-24.04",
    "x.Y_z",
    "missing",
    "Legacy",
]
_POOL = [uuid.uuid5(uuid.NAMESPACE_URL, f"pool-{index}") for index in range(4)]
_OTHER_POOL = [uuid.uuid5(uuid.NAMESPACE_URL, f"other-{index}") for index in range(3)]

# Values each field may be changed to: those the snapshot must refuse or take as the full path does.
_VALUES: dict[str, list[Any]] = {
    "DistributionName": [*_NAMES, "Legacy", "a b", "", "x" * 257, 5, None],
    "BasePath": ["/nonexistent/a", "/nonexistent//b/", "relative", "", 7, "/nonexistent/\0"],
    "State": [0, 1, 2, 3, 4, 5, 6, 7, -1, "1", None],
    "Version": [0, 1, 2, 3, "2", True, None],
    "Flags": [0, 7, 15],
    "DefaultUid": [0, 1000, LX_UID_INVALID - 1, LX_UID_INVALID, -1, True, False, 1.0, "0", None],
    "DefaultEnvironment": [["A=1"], [], ["PATH=/bin", "TERM=x"], ["A"], [1], "A=1", None, ["A=\0"]],
    "RunOOBE": [0, 1],
    "Flavor": ["", "debian", 3, "\0"],
    "OsVersion": ["", "12", None],
    "Modern": [0, 1],
    "PackageFamilyName": ["", "pkg"],
    "CreatedBasePath": [0, 1],
    "MoveTarget": ["", "/nonexistent/t", "rel", None, 0],
    "VhdFileName": ["", "ext4.vhdx", "a/b", 0],
    "Sparse": [0, 1],
}
# The values of `_GAPS`: left out of the property until the snapshot refuses them.
_GAP_VALUES: dict[str, list[Any]] = {
    "State": [True, 1.0],
    "Version": [2.0],
    "Flags": [99, -1, "15", True],
    "RunOOBE": [2, "1"],
    "Modern": [-1],
    "PackageFamilyName": [5, "x" * 4097],
    "CreatedBasePath": [True, 2],
    "Sparse": [True],
    "BasePath": ["/" + "x" * 4096],
    "Flavor": ["x" * 4097],
    "OsVersion": ["x" * 4097],
}
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)


@st.composite
def _entries(draw: st.DrawFn, gaps: bool) -> Any:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2)))
    entry: dict[str, Any] = {
        "DistributionName": draw(st.sampled_from(_NAMES)),
        "BasePath": draw(st.sampled_from(["/nonexistent/a", "/nonexistent//b/", "/"])),
        "State": 1,
        "DefaultUid": draw(st.sampled_from([0, 1000, LX_UID_INVALID - 1])),
        "DefaultEnvironment": draw(st.sampled_from([["A=1"], [], ["PATH=/bin", "TERM=x=y"]])),
    }
    for key in ("Version", "Flags", "RunOOBE", "Flavor", "OsVersion", "Modern", "MoveTarget", "VhdFileName"):
        if draw(st.booleans()):
            entry[key] = _VALUES[key][0] if key != "Version" else 2
    changed = draw(st.lists(st.sampled_from(sorted(_VALUES)), max_size=3)) if draw(st.booleans()) else []
    for key in changed:
        pool = _VALUES[key] + (_GAP_VALUES.get(key, []) if gaps else [])
        if draw(st.integers(0, 5)) == 0:
            entry.pop(key, None)
        else:
            entry[key] = draw(st.sampled_from(pool))
    extra = st.sampled_from(["", "state", "FLAGS", "basepath"]) | st.text(max_size=5).map("x-{}".format)
    entry.update(draw(st.dictionaries(extra, _SCALARS, max_size=2)))
    return entry


def _key(draw: st.DrawFn, gaps: bool) -> str:
    variant = draw(st.sampled_from(["canonical"] * 10 + ["upper", "bare", "urn", "short", "text"]))
    if variant == "canonical":
        return "{" + str(draw(st.sampled_from(_POOL))) + "}"
    # Other spellings of a GUID the full path reads too; with `gaps`, of the same GUIDs.
    guid = str(draw(st.sampled_from(_POOL if gaps else _OTHER_POOL)))
    spelled = {
        "upper": "{" + guid.upper() + "}",
        "bare": guid,
        "urn": "urn:uuid:" + guid,
        "short": "{" + guid[:-1] + "}",
        "text": draw(st.text(max_size=8)),
    }
    return spelled[variant]


@st.composite
def _documents(draw: st.DrawFn, gaps: bool) -> dict[str, Any]:
    distributions: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 4))):
        distributions[_key(draw, gaps)] = draw(_entries(gaps))
    keys = list(distributions)
    default = draw(
        st.one_of(
            st.sampled_from(keys) if keys else st.just(""),
            st.sampled_from(["", "{" + str(_POOL[0]) + "}", "{" + str(_POOL[0]).upper() + "}", 5, None]),
        )
    )
    document: dict[str, Any] = {
        "Format": draw(st.sampled_from([1] * 8 + [2, "1", MISSING])),
        "DefaultDistribution": default,
        "DefaultVersion": draw(st.sampled_from([2, 1, "x"])),
        "Distributions": distributions if draw(st.integers(0, 19)) else draw(st.sampled_from([[], None])),
    }
    document.update(draw(st.dictionaries(st.text(max_size=5), _SCALARS, max_size=2)))
    return {key: value for key, value in document.items() if value is not MISSING}


_SINGLE_CHANGES = [(key, value) for key in sorted(_VALUES) for value in [*_VALUES[key], MISSING]]


@pytest.mark.parametrize(
    ("key", "value"), _SINGLE_CHANGES, ids=[f"{k}={v!r:.20}" for k, v in _SINGLE_CHANGES]
)
def test_every_single_change_of_an_entry(tmp_path: Path, key: str, value: object) -> None:
    """One value of the valid entry changed: read as the full path reads it, or None."""
    write_document(tmp_path, valid_document(**{key: value}))
    for name in ("Debian", None, value if isinstance(value, str) and key == "DistributionName" else "x"):
        snapshot = read_registration(str(tmp_path), name)
        if snapshot is not None:
            assert_full_path_agrees(tmp_path, name, snapshot)


def _check_documents(tmp_path: Path, gaps: bool, examples: int) -> int:
    """Run the property on `examples` documents; returns how many lookups the snapshot answered."""
    counter = itertools.count()
    answered = [0]

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        phases=[Phase.generate] if gaps else [Phase.generate, Phase.shrink],
    )
    @given(document=_documents(gaps))
    def run(document: dict[str, Any]) -> None:
        folder = tmp_path / f"example-{next(counter)}"
        try:
            write_document(folder, document)
            answers = {name: read_registration(str(folder), name) for name in _LOOKUPS}
            for name, snapshot in answers.items():
                if snapshot is not None:
                    answered[0] += 1
                    assert_full_path_agrees(folder, name, snapshot)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    run()
    return answered[0]


def test_property_a_returned_registration_is_what_the_full_path_launches(tmp_path: Path) -> None:
    answered = _check_documents(tmp_path, gaps=False, examples=400)
    # Usable often enough for the property to mean something (a document with any entry the
    # registry would set aside is left to the full path as a whole).
    assert answered >= 60


def test_property_with_the_values_the_snapshot_does_not_check(tmp_path: Path) -> None:
    _check_documents(tmp_path, gaps=True, examples=400)


def _reject_constant(name: str) -> float:
    raise ValueError(name)


def _reference(raw: bytes) -> object:
    """What `json.loads` makes of the file (None where it raises); NaN and Infinity are not JSON."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None


_JSON_VALUES = st.recursive(
    _SCALARS | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=16,
)
_TOKENS = [
    "NaN",
    "-Infinity",
    "Infinity",
    "01",
    "1.",
    ".5",
    "-",
    "1e",
    "+1",
    "1E+2",
    "-0",
    "-0.0e-0",
    "1" * 5000,
    '"\\ud800"',
    '"\\udc00\\ud83d\\ude00"',
    '"\\x"',
    '"\t"',
    "tru",
    "nul",
    "]",
    "}",
    ",",
    ":",
    "\ufeff",
    "\x0b",
    "\u00a0",
    "\u2028",
]


@st.composite
def _json_files(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=32))
    indent = draw(st.sampled_from([None, None, 0, 2, "\t"]))
    separators = draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])) if indent is None else None
    text = json.dumps(
        draw(_JSON_VALUES), ensure_ascii=draw(st.booleans()), indent=indent, separators=separators
    )
    space = st.text(alphabet=" \t\n\r", max_size=3)
    text = draw(space) + text + draw(space)
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "cut", "truncate", "append"]))
        token = draw(st.sampled_from(_TOKENS) | st.characters())
        if action == "insert":
            text = text[:at] + token + text[at:]
        elif action == "cut":
            text = text[:at] + text[at + 1 :]
        elif action == "truncate":
            text = text[:at]
        else:
            text += token
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 14)) == 0:
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=3)) + raw[at:]
    return raw


def test_property_the_scanner_reads_what_json_loads_reads(tmp_path: Path) -> None:
    path = tmp_path / REGISTRY_FILE_NAME
    parsed = [0]

    @settings(
        max_examples=800,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(raw=_json_files())
    def run(raw: bytes) -> None:
        path.write_bytes(raw)
        expected = _reference(raw)
        loaded = registry_snapshot._load(str(path))
        assert repr(loaded) == repr(expected)
        if expected is not None:
            parsed[0] += 1

    run()
    assert parsed[0] >= 150


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        "1" * 5000,
        '{"a": NaN}',
        "[Infinity]",
        "-Infinity",
        '{"Format": 1} \x0c',
        ' \r\n\t{"a": [1, 2.5e-3, "\\u00e9", true, false, null]}\r\n ',
    ],
    ids=lambda text: repr(text[:16]),
)
def test_the_scanner_on_hostile_and_edge_texts(tmp_path: Path, text: str) -> None:
    path = tmp_path / REGISTRY_FILE_NAME
    path.write_text(text)
    assert repr(registry_snapshot._load(str(path))) == repr(_reference(text.encode()))


# -- 4. path rules and `paths` -------------------------------------------------------------------

_ENV_HOMES = [None, "/home/alice", "relative/home", ""]
_XDG_DATA = [None, "/xdg/data", "relative/data", ""]
_RUNTIME_ROOTS = [None, "/srv/pywsl-runtime", "relative/runtime", ""]


def _set_runtime_root(monkeypatch: pytest.MonkeyPatch, runtime_root: str | None) -> None:
    if runtime_root is None:
        monkeypatch.delenv(path_rules.RUNTIME_ROOT_ENV, raising=False)
    else:
        monkeypatch.setenv(path_rules.RUNTIME_ROOT_ENV, runtime_root)


@pytest.mark.parametrize("runtime_root", _RUNTIME_ROOTS)
@pytest.mark.parametrize("xdg_data", _XDG_DATA)
@pytest.mark.parametrize("env_home", _ENV_HOMES)
def test_path_rules_give_the_folders_of_user_paths(
    monkeypatch: pytest.MonkeyPatch, env_home: str | None, xdg_data: str | None, runtime_root: str | None
) -> None:
    _set_runtime_root(monkeypatch, runtime_root)
    environ = {"LANG": "C.UTF-8"}
    if env_home is not None:
        environ["HOME"] = env_home
    if xdg_data is not None:
        environ["XDG_DATA_HOME"] = xdg_data
    for uid, home in [(0, "/root"), (1000, "/home/bob")]:
        paths = user_paths(uid, Path(home), environ)
        data = path_rules.data_folder(home, environ)
        runtime = path_rules.runtime_folder(uid)
        assert data == str(paths.data_dir)
        assert runtime == str(paths.runtime_dir)
        # and the rules themselves: absolute values count, others fall back
        base_home = env_home if env_home and env_home.startswith("/") else home
        data_home = xdg_data if xdg_data and xdg_data.startswith("/") else f"{base_home}/.local/share"
        assert data == f"{data_home}/pywsl"
        root = runtime_root if runtime_root and runtime_root.startswith("/") else "/run/pywsl"
        assert runtime == f"{root}/{uid}"


@pytest.mark.parametrize("runtime_root", _RUNTIME_ROOTS)
def test_path_rules_without_an_environment(monkeypatch: pytest.MonkeyPatch, runtime_root: str | None) -> None:
    """No environment (the service acting for a user): the process's own HOME and XDG_DATA_HOME
    do not count."""
    _set_runtime_root(monkeypatch, runtime_root)
    monkeypatch.setenv("HOME", "/home/someone-else")
    monkeypatch.setenv("XDG_DATA_HOME", "/xdg/someone-else")
    for uid, home in [(0, "/root"), (1000, "/home/bob")]:
        paths = user_paths(uid, Path(home), None)
        assert path_rules.data_folder(home, None) == str(paths.data_dir) == f"{home}/.local/share/pywsl"
        assert path_rules.runtime_folder(uid) == str(paths.runtime_dir)


def test_the_runtime_folder_ignores_the_user_s_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(path_rules.RUNTIME_ROOT_ENV, raising=False)
    environ = {path_rules.RUNTIME_ROOT_ENV: "/srv/from-the-user"}
    paths = user_paths(1000, Path("/home/bob"), environ)
    assert path_rules.runtime_folder(1000) == str(paths.runtime_dir) == "/run/pywsl/1000"


@pytest.mark.parametrize(
    "environ",
    [
        {"HOME": "/home/alice/"},
        {"HOME": "//home//alice"},
        {"XDG_DATA_HOME": "/xdg//data/"},
        {"XDG_DATA_HOME": "/xdg/./data"},
        {"HOME": "/home/alice/..", "XDG_DATA_HOME": "relative"},
    ],
    ids=repr,
)
def test_unnormalised_folders_name_the_same_folder(environ: dict[str, str]) -> None:
    """`paths` normalises through `Path`; the rule's string names the same folder."""
    assert Path(path_rules.data_folder("/root", environ)) == user_paths(0, Path("/root"), environ).data_dir


@pytest.mark.parametrize("use_xdg", [False, True])
def test_the_launch_reads_the_registry_the_session_writes(tmp_path: Path, use_xdg: bool) -> None:
    home = tmp_path / "home"
    environ = {"HOME": str(home)}
    if use_xdg:
        environ["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    registry = Registry(user_paths(ME.uid, Path("/nonexistent/passwd-home"), environ).data_dir, ME)
    entry = register(registry, "Debian")
    snapshot = read_registration(path_rules.data_folder("/nonexistent/passwd-home", environ), "debian")
    assert snapshot is not None and snapshot.guid == str(entry.id)
    expected_parent = tmp_path / "xdg" if use_xdg else home / ".local" / "share"
    assert registry.folder == expected_parent / "pywsl"
