"""The management verbs: options, aliases, wsl.exe's checks, output and exit codes (session mocked)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from pytest_mock import MockerFixture
from test_cli_support import ALPINE_ID, BUSY_ID, DEBIAN_ID, Cli, info

from pywsl.api.errors import WslError, not_supported_by_backend
from pywsl.api.install.installer import OnlineDistribution
from pywsl.api.session.registry import DistributionState

SUCCESS = "The operation completed successfully.\n"


@pytest.fixture
def cli(mocker: MockerFixture) -> Cli:
    return Cli(mocker)


# -- --list -------------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["--list", "-l"])
def test_list_default_first_marked_and_transitional_hidden(cli: Cli, spelling: str) -> None:
    outcome = cli(spelling)
    assert outcome.exit_code == 0 and outcome.stderr == ""
    assert outcome.stdout == "Windows Subsystem for Linux Distributions:\nDebian (Default)\nAlpine\n"


def test_list_all_includes_installing(cli: Cli) -> None:
    assert cli("-l", "--all").stdout.splitlines()[1:] == ["Debian (Default)", "Alpine", "Busy"]


@pytest.mark.parametrize("spelling", ["-q", "--quiet"])
def test_list_quiet(cli: Cli, spelling: str) -> None:
    assert cli("--list", spelling).stdout == "Debian\nAlpine\n"


def test_list_running(cli: Cli) -> None:
    assert cli("-l", "--running").stdout == "Windows Subsystem for Linux Distributions:\nAlpine\n"


def test_list_running_with_none_running(cli: Cli) -> None:
    cli.session.enumerate_distributions.return_value = [info(DEBIAN_ID, "Debian", default=True)]
    outcome = cli("-l", "--running")
    assert (outcome.exit_code, outcome.stdout) == (255, "")
    assert outcome.stderr == "There are no running distributions.\n"
    assert cli("-l", "--running", "-q").exit_code == 0


@pytest.mark.parametrize("spelling", ["-v", "--verbose"])
def test_list_verbose_plain_when_piped(cli: Cli, spelling: str) -> None:
    outcome = cli("-l", spelling)
    assert outcome.exit_code == 0
    assert outcome.stdout.splitlines() == [
        "  NAME      STATE           VERSION",
        "* Debian    Stopped         2",
        "  Alpine    Running         2",
        "  Busy      Installing      2",  # -v shows every distribution and its state, as wsl.exe
    ]


def test_list_with_no_distributions(cli: Cli) -> None:
    cli.session.enumerate_distributions.return_value = []
    for args in (["-l"], ["-l", "-v"]):
        outcome = cli(*args)
        assert outcome.exit_code == 255 and outcome.stdout == ""
        assert outcome.stderr.startswith("pywsl has no installed distributions.\nYou can resolve this by")
        assert "Error code" not in outcome.stderr
    assert cli("-l", "-q").exit_code == 0
    assert json.loads(cli("-l", "--format", "json").stdout) == []


@pytest.mark.parametrize(
    ("args", "first", "second"),
    [
        (["-q", "-v"], "--quiet", "--verbose"),
        (["--all", "--running"], "--all", "--running"),
        (["-v", "--online"], "--verbose", "--online"),
        (["--all", "-o"], "--all", "--online"),
    ],
)
def test_list_invalid_combinations(cli: Cli, args: list[str], first: str, second: str) -> None:
    outcome = cli("--list", *args)
    assert outcome.exit_code == 255 and outcome.stdout == ""
    assert outcome.stderr.startswith(f"Arguments {first} and {second} can't be specified at same time.\n")
    assert "Usage: pywsl [launch options]" in outcome.stderr  # wsl.exe's usage text: the whole help
    assert "Error code: " not in outcome.stderr
    cli.open_session.assert_not_called()


@pytest.mark.parametrize("extra", [[], ["-v"], ["-q"], ["--all"]])
def test_list_json(cli: Cli, extra: list[str]) -> None:
    outcome = cli("-l", *extra, "--format", "json")
    assert outcome.exit_code == 0 and outcome.stderr == ""
    document = json.loads(outcome.stdout)
    expected = [
        {
            "name": "Debian",
            "state": "Stopped",
            "version": 2,
            "default": True,
            "flavor": "debian",
            "os_version": "12",
            "id": str(DEBIAN_ID),
        },
        {
            "name": "Alpine",
            "state": "Running",
            "version": 2,
            "default": False,
            "flavor": "alpine",
            "os_version": "3.20",
            "id": str(ALPINE_ID),
        },
    ]
    if "--all" in extra or "-v" in extra:
        expected.append(
            {
                "name": "Busy",
                "state": "Installing",
                "version": 2,
                "default": False,
                "flavor": None,
                "os_version": None,
                "id": str(BUSY_ID),
            }
        )
    assert document == expected


def test_list_json_running(cli: Cli) -> None:
    assert [entry["name"] for entry in json.loads(cli("-l", "--running", "--format", "json").stdout)] == [
        "Alpine"
    ]


def test_list_online(cli: Cli, mocker: MockerFixture) -> None:
    entries = [
        OnlineDistribution("Debian", "Debian GNU/Linux", True, "built-in"),
        OnlineDistribution("Ubuntu-24.04", "Ubuntu 24.04 LTS", False, "manifest"),
    ]
    fetch = mocker.patch("pywsl.api.install.installer.list_online", return_value=entries)
    outcome = cli("--list", "--online")
    assert outcome.exit_code == 0
    lines = outcome.stdout.splitlines()
    assert lines[0].startswith("The following is a list of valid distributions")
    assert "NAME" in lines[3] and "FRIENDLY NAME" in lines[3]
    assert lines[4].split() == ["Debian", "Debian", "GNU/Linux"]
    outcome = cli("-l", "-o", "--format", "json")
    assert json.loads(outcome.stdout) == [
        {
            "name": "Debian",
            "friendly_name": "Debian GNU/Linux",
            "default": True,
            "source": "built-in",
            "available": True,
            "unavailable_reason": None,
        },
        {
            "name": "Ubuntu-24.04",
            "friendly_name": "Ubuntu 24.04 LTS",
            "default": False,
            "source": "manifest",
            "available": True,
            "unavailable_reason": None,
        },
    ]
    assert fetch.call_count == 2
    cli.session.enumerate_distributions.assert_not_called()


def test_list_online_warnings_can_be_disabled(cli: Cli, mocker: MockerFixture) -> None:
    def fetch(*, on_warning: Any) -> list[OnlineDistribution]:
        on_warning("The manifest could not be fetched.")
        return [OnlineDistribution("Debian", "Debian GNU/Linux", True, "built-in")]

    mocker.patch("pywsl.api.install.installer.list_online", side_effect=fetch)
    assert cli("-l", "-o").stderr == "The manifest could not be fetched.\n"
    assert cli("-l", "-o", env={"WSL_DISABLE_WARNINGS": "1"}).stderr == ""


def test_list_rejects_unknown_options_and_extra_arguments(cli: Cli) -> None:
    outcome = cli("--list", "--bogus")
    assert outcome.exit_code == 255
    assert outcome.stderr == (
        "Invalid command line argument: --bogus\n"
        "Please use 'pywsl --help' to get a list of supported arguments.\n"
        "Error code: Wsl/E_INVALIDARG\n"
    )
    outcome = cli("-t", "Debian", "Alpine")
    assert outcome.exit_code == 255
    assert outcome.stderr.startswith("Invalid command line argument: Alpine\n")
    cli.session.terminate_distribution.assert_not_called()


# -- --status, --version -------------------------------------------------------------------------


def test_status(cli: Cli, mocker: MockerFixture) -> None:
    mocker.patch("pywsl.api.session.user_vm.limits_note", return_value=None)  # lxcfs shows the VM's limits
    outcome = cli("--status")
    assert outcome.stdout == "Default Distribution: Debian\nDefault Version: 2\n"
    assert json.loads(cli("--status", "--format", "json").stdout) == {
        "default_distribution": "Debian",
        "default_version": 2,
    }
    cli.session.enumerate_distributions.return_value = []
    assert cli("--status").stdout == "Default Version: 2\n"
    assert json.loads(cli("--status", "--format", "json").stdout)["default_distribution"] is None
    mocker.patch("pywsl.api.session.user_vm.limits_note", return_value="Memory note.")  # no lxcfs
    assert cli("--status").stdout == "Default Version: 2\nMemory note.\n"


@pytest.mark.parametrize("spelling", ["--version", "-v"])
def test_version(cli: Cli, spelling: str) -> None:
    outcome = cli(spelling)
    assert outcome.exit_code == 0
    lines = outcome.stdout.splitlines()
    assert lines[0].startswith("pywsl version: ")
    assert lines[1] == f"Kernel version: {os.uname().release}"
    assert lines[2].startswith("Python version: 3.")
    cli.open_session.assert_not_called()


# -- default, terminate, shutdown, unregister ------------------------------------------------------


@pytest.mark.parametrize("spelling", ["--set-default", "-s", "--setdefault"])
def test_set_default(cli: Cli, spelling: str) -> None:
    outcome = cli(spelling, "alpine")
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (0, "", SUCCESS)
    cli.session.set_default_distribution.assert_called_once_with(ALPINE_ID)


@pytest.mark.parametrize("spelling", ["--terminate", "-t"])
def test_terminate(cli: Cli, spelling: str) -> None:
    outcome = cli(spelling, "Debian")
    assert (outcome.exit_code, outcome.stderr) == (0, SUCCESS)
    cli.session.terminate_distribution.assert_called_once_with(DEBIAN_ID)


def test_terminate_unknown(cli: Cli) -> None:
    outcome = cli("-t", "Nope")
    assert outcome.exit_code == 255
    assert outcome.stderr.endswith("Error code: Wsl/Service/WSL_E_DISTRO_NOT_FOUND\n")


@pytest.mark.parametrize(("args", "force"), [([], False), (["--force"], True)])
def test_shutdown(cli: Cli, args: list[str], force: bool) -> None:
    outcome = cli("--shutdown", *args)
    assert (outcome.exit_code, outcome.stdout, outcome.stderr) == (0, "", "")
    cli.session.shutdown.assert_called_once_with(force=force)


def test_unregister_finds_half_installed_distributions(cli: Cli) -> None:
    outcome = cli("--unregister", "Busy")
    assert (outcome.exit_code, outcome.stderr) == (0, SUCCESS)
    cli.session.get_distribution_id.assert_called_once_with("Busy", list_all=True)
    cli.session.unregister_distribution.assert_called_once_with(BUSY_ID)


@pytest.mark.parametrize(
    ("verb", "long_name"),
    [
        ("-t", "--terminate"),
        ("--unregister", "--unregister"),
        ("-s", "--set-default"),
        ("--set-version", "--set-version"),
    ],
)
def test_verbs_with_a_missing_argument(cli: Cli, verb: str, long_name: str) -> None:
    outcome = cli(verb)
    assert outcome.exit_code == 255
    assert outcome.stderr == f"Argument {long_name} is missing a required parameter.\n"  # no code, as wsl.exe
    cli.open_session.assert_not_called()


@pytest.mark.parametrize("args", [["--export"], ["--export", "Debian"], ["--manage"]])
def test_a_verb_missing_its_arguments_prints_the_usage(cli: Cli, args: list[str]) -> None:
    outcome = cli(*args)
    assert (outcome.exit_code, outcome.stdout) == (255, "")
    assert outcome.stderr.startswith("Usage: pywsl [launch options]")  # WSL_E_INVALID_USAGE
    assert "Management options" in outcome.stderr and "Error code: " not in outcome.stderr
    cli.open_session.assert_not_called()


@pytest.mark.parametrize("args", [["--import"], ["--import", "D"], ["--import", "D", "/srv/d"]])
def test_import_missing_arguments_is_invalid_argument(cli: Cli, args: list[str]) -> None:
    outcome = cli(*args)
    assert outcome.exit_code == 255
    assert outcome.stderr == "The parameter is incorrect.\nError code: Wsl/E_INVALIDARG\n"
    cli.open_session.assert_not_called()


def test_set_version_looks_the_name_up_before_the_version(cli: Cli) -> None:
    outcome = cli("--set-version", "Nope")
    assert "WSL_E_DISTRO_NOT_FOUND" in outcome.stderr
    for args in (
        ["--set-version", "Debian"],
        ["--set-version", "Debian", "three"],
        ["--set-default-version"],
    ):
        outcome = cli(*args)
        assert outcome.exit_code == 255
        assert outcome.stderr.endswith("Error code: Wsl/ERROR_VERSION_PARSE_ERROR\n"), args
    outcome = cli("--set-default-version", " 2.0")  # std::stoi reads the leading integer
    assert (outcome.exit_code, outcome.stderr) == (0, SUCCESS)


# -- versions -------------------------------------------------------------------------------------


def test_set_default_version(cli: Cli) -> None:
    outcome = cli("--set-default-version", "2")
    assert (outcome.exit_code, outcome.stderr) == (0, SUCCESS)
    outcome = cli("--set-default-version", "1")
    assert outcome.exit_code == 255
    assert "WSL1 is not supported with your current machine configuration." in outcome.stderr
    assert outcome.stderr.endswith("Error code: Wsl/WSL_E_WSL1_NOT_SUPPORTED\n")
    outcome = cli("--set-default-version", "3")
    assert outcome.exit_code == 255
    assert outcome.stderr.endswith("Error code: Wsl/ERROR_VERSION_PARSE_ERROR\n")


def test_set_version(cli: Cli) -> None:
    outcome = cli("--set-version", "Debian", "2")
    assert outcome.exit_code == 255
    assert outcome.stderr == (
        "The distribution is already the requested version.\nError code: Wsl/WSL_E_VM_MODE_INVALID_STATE\n"
    )
    assert "WSL_E_WSL1_NOT_SUPPORTED" in cli("--set-version", "Debian", "1").stderr


def test_disk_verbs_reach_the_session(cli: Cli, tmp_path: Path) -> None:
    outcome = cli("--mount", "/dev/sdb", "--bare")
    assert (outcome.exit_code, outcome.stderr) == (0, SUCCESS)
    cli.session.attach_disk.assert_called_once_with("/dev/sdb", vhd=False)
    cli.session.mount_disk.assert_not_called()
    image = tmp_path / "data.vhdx"
    cli.session.mount_disk.return_value = "data"
    outcome = cli("--mount", str(image), "--vhd", "--name", "data", "-o", "ro")
    assert outcome.exit_code == 0
    assert "The disk was successfully mounted as '/mnt/wsl/data'." in outcome.stdout
    cli.session.mount_disk.assert_called_once_with(
        str(image), vhd=True, partition=0, name="data", fs_type=None, options="ro"
    )
    assert cli("--unmount").exit_code == 0
    cli.session.detach_disk.assert_called_once_with(None)
    assert cli("--import-in-place", "X", str(image)).exit_code == 0
    cli.session.import_distribution_inplace.assert_called_once_with("X", str(image))


def test_a_mount_that_fails_after_the_attach_is_exit_status_1(cli: Cli) -> None:
    cli.session.mount_disk.side_effect = WslError("WSL_E_DISK_MOUNT_FAILED", "Mounting /d.img failed: bad")
    outcome = cli("--mount", "/d.img", "--vhd")
    assert outcome.exit_code == 1
    assert "The disk was attached but failed to mount: Mounting /d.img failed: bad." in outcome.stdout


def test_disk_verbs_name_the_qemu_backend_on_the_namespaces_backend(cli: Cli) -> None:
    cli.session.detach_disk.side_effect = lambda disk: not_supported_by_backend("Detaching a disk")
    outcome = cli("--unmount")
    assert outcome.exit_code == 255
    assert "The qemu backend ([pywsl] backend = qemu) supports it." in outcome.stderr
    assert outcome.stderr.endswith("Error code: Wsl/ERROR_NOT_SUPPORTED\n")


# -- --import -------------------------------------------------------------------------------------


def test_import_creates_the_location_and_passes_a_descriptor(cli: Cli, tmp_path: Path) -> None:
    archive = tmp_path / "rootfs.tar"
    archive.write_bytes(b"\0" * 1024)
    seen: dict[str, Any] = {}

    def register(name: str | None, source: Any, **kwargs: Any) -> Any:
        seen.update(name=name, source=source, **kwargs)
        seen["source_is_archive"] = os.path.samestat(os.fstat(source), os.stat(archive))
        return info(DEBIAN_ID, "Mine")

    cli.session.register_distribution.side_effect = register
    target = tmp_path / "mine"
    outcome = cli("--import", "Mine", str(target), str(archive), "--version", "2")
    assert (outcome.exit_code, outcome.stdout) == (0, "")
    assert outcome.stderr == "Import in progress, this may take a few minutes.\n" + SUCCESS
    assert target.is_dir()
    assert seen["name"] == "Mine" and seen["source_is_archive"]
    assert seen["location"] == str(target) and seen["version"] == 2 and seen["run_oobe"] is False
    with pytest.raises(OSError):
        os.fstat(seen["source"])  # closed again


def test_import_failure_removes_the_location_it_created(cli: Cli, tmp_path: Path) -> None:
    archive = tmp_path / "rootfs.tar"
    archive.write_bytes(b"junk")
    cli.session.register_distribution.side_effect = WslError(
        "WSL_E_NOT_A_LINUX_DISTRO", context="Wsl/Service/RegisterDistro"
    )
    existing = tmp_path / "existing"
    existing.mkdir()
    for location in (tmp_path / "new", existing):
        outcome = cli("--import", "Mine", str(location), str(archive))
        assert outcome.exit_code == 255
        assert outcome.stderr.endswith("Error code: Wsl/Service/RegisterDistro/WSL_E_NOT_A_LINUX_DISTRO\n")
    assert not (tmp_path / "new").exists()
    assert existing.is_dir()


def test_import_from_stdin(cli: Cli, tmp_path: Path) -> None:
    cli.session.register_distribution.return_value = info(DEBIAN_ID, "Mine")
    outcome = cli("--import", "Mine", str(tmp_path / "d"), "-", input=b"tar bytes")
    assert outcome.exit_code == 0
    source = cli.session.register_distribution.call_args.args[1]
    assert not isinstance(source, str)


def test_import_refusals(cli: Cli, tmp_path: Path) -> None:
    outcome = cli("--import", "Mine", str(tmp_path / "d"), "disk.vhdx")
    assert outcome.exit_code == 255
    assert outcome.stderr == "This looks like a VHD file. Use --vhd to import a VHD instead of a tar.\n"
    outcome = cli("--import", "Mine", str(tmp_path / "d"), "x.tar", "--version", "1")
    assert outcome.stderr.endswith("Error code: Wsl/WSL_E_WSL1_NOT_SUPPORTED\n")
    outcome = cli("--import", "Mine", str(tmp_path / "d"), str(tmp_path / "missing.tar"))
    assert outcome.exit_code == 255
    assert "missing.tar" in outcome.stderr and "ERROR_FILE_NOT_FOUND" in outcome.stderr
    assert not (tmp_path / "d").exists()
    cli.session.register_distribution.assert_not_called()


# -- --export -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_name", "args", "expected"),
    [
        ("out.tar", [], "tar"),
        ("out.tar.gz", [], "tar.gz"),
        ("out.tgz", [], "tar.gz"),
        ("out.tar.xz", [], "tar.xz"),
        ("out.txz", [], "tar.xz"),
        ("out.bin", [], "tar"),
        ("out.tar", ["--format", "tar.xz"], "tar.xz"),
        ("out.tar.gz", ["--format", "tar"], "tar"),
    ],
)
def test_export_format(cli: Cli, tmp_path: Path, file_name: str, args: list[str], expected: str) -> None:
    def export(distro: Any, target: Any, *, format: str = "tar", progress: Any = None) -> None:
        os.write(target, b"archive")

    cli.session.export_distribution.side_effect = export
    outcome = cli("--export", "Debian", str(tmp_path / file_name), *args)
    assert (outcome.exit_code, outcome.stdout) == (0, "")
    assert outcome.stderr == "Export in progress, this may take a few minutes.\n" + SUCCESS
    assert cli.session.export_distribution.call_args.kwargs["format"] == expected
    assert cli.session.export_distribution.call_args.args[0] == DEBIAN_ID
    assert (tmp_path / file_name).read_bytes() == b"archive"


def test_export_failure_deletes_the_file(cli: Cli, tmp_path: Path) -> None:
    cli.session.export_distribution.side_effect = WslError("WSL_E_EXPORT_FAILED", context="Wsl/Service")
    outcome = cli("--export", "Debian", str(tmp_path / "out.tar"))
    assert outcome.exit_code == 255
    assert not (tmp_path / "out.tar").exists()


def test_export_to_stdout_prints_no_success_line(cli: Cli) -> None:
    def export(distro: Any, target: Any, *, format: str = "tar", progress: Any = None) -> None:
        target.write(b"tar-bytes")

    cli.session.export_distribution.side_effect = export
    outcome = cli("--export", "Debian", "-")
    assert (outcome.exit_code, outcome.stdout) == (0, "tar-bytes")
    assert SUCCESS not in outcome.stderr


def test_import_and_export_of_a_vhd_reach_the_session(cli: Cli, tmp_path: Path) -> None:
    image = tmp_path / "disk.vhdx"
    image.write_bytes(b"vhdxfile")
    outcome = cli("--import", "Mine", str(tmp_path / "d"), str(image), "--vhd")
    assert outcome.exit_code == 0, outcome.stderr
    assert cli.session.register_distribution.call_args.kwargs["vhd"] is True
    for args in (["--format", "vhd"], ["--vhd"]):
        cli.session.export_distribution.reset_mock()
        outcome = cli("--export", "Debian", str(tmp_path / "x.vhdx"), *args)
        assert outcome.exit_code == 0, outcome.stderr
        assert cli.session.export_distribution.call_args.kwargs["format"] == "vhd"


def test_export_refusals(cli: Cli, tmp_path: Path) -> None:
    for value in ("zip", "TAR", "Tar.Gz"):  # values are case-sensitive, as in wsl.exe
        outcome = cli("--export", "Debian", str(tmp_path / "x"), "--format", value)
        assert outcome.exit_code == 255 and "Invalid value for --format" in outcome.stderr
        assert outcome.stderr.endswith("Error code: Wsl/E_INVALIDARG\n")
    outcome = cli("--export", "Nope", str(tmp_path / "x"))
    assert "WSL_E_DISTRO_NOT_FOUND" in outcome.stderr
    assert not (tmp_path / "x").exists()
    cli.session.export_distribution.assert_not_called()


# -- --manage -------------------------------------------------------------------------------------


def test_manage_move(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    outcome = cli("--manage", "Debian", "--move", "elsewhere")
    assert (outcome.exit_code, outcome.stderr) == (0, SUCCESS)
    cli.session.move_distribution.assert_called_once_with(DEBIAN_ID, str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("args", [[], ["--move", "/a", "--set-default-user", "u"]])
def test_manage_needs_exactly_one_action(cli: Cli, args: list[str]) -> None:
    outcome = cli("--manage", "Debian", *args)
    assert outcome.exit_code == 255
    assert outcome.stderr.startswith("--manage takes exactly one of")
    assert "Usage: pywsl" in outcome.stderr and "Error code: " not in outcome.stderr
    outcome = cli("--manage", "Nope", *args)  # wsl.exe looks the name up first
    assert "WSL_E_DISTRO_NOT_FOUND" in outcome.stderr
    cli.session.move_distribution.assert_not_called()


def _id_prints(cli: Cli, output: bytes, status: int) -> None:
    def create(distro: Any, command_line: Any, **kwargs: Any) -> Any:
        os.write(kwargs["stdout"], output)
        cli.process.wait.return_value = status
        return cli.process

    cli.session.create_lx_process.side_effect = create


def test_manage_set_default_user(cli: Cli) -> None:
    _id_prints(cli, b"1000\n", 0)
    outcome = cli("--manage", "Debian", "--set-default-user", "alice")
    assert (outcome.exit_code, outcome.stderr) == (0, SUCCESS)
    args, kwargs = cli.launched()
    assert args == (DEBIAN_ID, ["id", "-u", "--", "alice"])
    assert kwargs["filename"] == "id" and kwargs["username"] == "root"
    cli.session.configure_distribution.assert_called_once_with(DEBIAN_ID, default_uid=1000)


def test_manage_set_default_user_failures(cli: Cli) -> None:
    _id_prints(cli, b"", 1)
    outcome = cli("--manage", "Debian", "--set-default-user", "ghost")
    assert outcome.exit_code == 1
    cli.session.create_lx_process.reset_mock()
    _id_prints(cli, b"uid=1000\n", 0)
    outcome = cli("--manage", "Debian", "--set-default-user", "alice")
    assert outcome.exit_code == 255 and "Error code: Wsl/ERROR_INVALID_DATA" in outcome.stderr
    cli.session.configure_distribution.assert_not_called()


@pytest.mark.parametrize(
    ("args", "call", "expected"),
    [
        (["--resize", "10GB"], "resize_distribution", (10 * 1024**3,)),
        (["-r", "512MB"], "resize_distribution", (512 * 1024**2,)),
        (["--set-sparse", "true", "--allow-unsafe"], "set_sparse", (True,)),
        (["-s", "false"], "set_sparse", (False,)),
    ],
)
def test_manage_disk_actions_reach_the_session(
    cli: Cli, args: list[str], call: str, expected: tuple[object, ...]
) -> None:
    outcome = cli("--manage", "Debian", *args)
    assert (outcome.exit_code, outcome.stderr) == (0, SUCCESS)
    method = getattr(cli.session, call)
    assert method.call_args.args == (DEBIAN_ID, *expected)


def test_manage_disk_actions_refused_by_the_namespaces_backend(cli: Cli) -> None:
    cli.session.resize_distribution.side_effect = lambda *a, **k: not_supported_by_backend("Resizing")
    outcome = cli("--manage", "Debian", "--resize", "1GB")
    assert outcome.exit_code == 255 and "ERROR_NOT_SUPPORTED" in outcome.stderr
    assert cli("--manage", "Debian", "--set-sparse", "maybe").exit_code == 255


def test_manage_missing_value_names_the_option(cli: Cli) -> None:
    outcome = cli("--manage", "Debian", "-m")
    assert outcome.stderr == (
        "Command line argument --move requires a value.\n"
        "Please use 'pywsl --help' to get a list of supported arguments.\n"
        "Error code: Wsl/E_INVALIDARG\n"
    )


# -- --install ------------------------------------------------------------------------------------


@pytest.fixture
def installer(mocker: MockerFixture, cli: Cli) -> Any:
    def install(session: Any, distro: str | None, **kwargs: Any) -> Any:
        kwargs["on_status"]("Installing: Debian")
        kwargs["progress"](5, 10)
        return info(DEBIAN_ID, kwargs.get("name") or "Debian", default=True)

    return mocker.patch("pywsl.api.install.installer.install", side_effect=install)


def test_install_then_launch(cli: Cli, installer: Any) -> None:
    cli.process.wait.return_value = 4
    outcome = cli("--install", "Debian", "--name", "Mine")
    assert outcome.exit_code == 4
    assert outcome.stderr == "Installing: Debian\nLaunching Mine...\n"
    args, kwargs = installer.call_args
    assert args == (cli.session, "Debian")
    assert kwargs["name"] == "Mine" and kwargs["no_launch"] is True and kwargs["version"] == 2
    assert cli.launched()[0] == (DEBIAN_ID, [])
    assert cli.launched()[1]["login"] is True


def test_install_no_launch_and_options(cli: Cli, installer: Any, tmp_path: Path) -> None:
    outcome = cli("--install", "-d", "Debian", "-n", "--location", str(tmp_path), "--web-download")
    assert outcome.exit_code == 0
    kwargs = installer.call_args.kwargs
    assert installer.call_args.args[1] == "Debian"
    assert kwargs["location"] == str(tmp_path) and kwargs["web_download"] is True
    cli.session.create_lx_process.assert_not_called()
    outcome = cli("--install", "--from-file", "image.wsl", "--no-launch")
    assert outcome.exit_code == 0
    assert installer.call_args.args[1] is None and installer.call_args.kwargs["from_file"] == "image.wsl"


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (
            ["Debian", "--no-distribution"],
            "Arguments --no-distribution and --distribution can't be specified",
        ),
        (["--fixed-vhd"], "Argument --fixed-vhd requires the --vhd-size argument."),
        (["Debian", "--from-file", "x.wsl"], "Arguments --from-file and --distribution can't be specified"),
        (["--enable-wsl1"], "WSL1 is not supported with your current machine configuration."),
        (["--version", "1"], "WSL1 is not supported with your current machine configuration."),
    ],
)
def test_install_checks(cli: Cli, installer: Any, args: list[str], text: str) -> None:
    outcome = cli("--install", *args)
    assert outcome.exit_code == 255 and text in outcome.stderr
    installer.assert_not_called()


def test_install_passes_the_disk_size_to_the_installer(cli: Cli, installer: Any) -> None:
    outcome = cli("--install", "Debian", "--vhd-size", "10GB", "--fixed-vhd", "--no-launch")
    assert outcome.exit_code == 0, outcome.stderr
    assert installer.call_args.kwargs["vhd_size"] == 10 * 1024**3
    assert installer.call_args.kwargs["fixed_vhd"] is True


def test_install_no_distribution(cli: Cli, installer: Any) -> None:
    outcome = cli("--install", "--no-distribution")
    assert (outcome.exit_code, outcome.stderr) == (0, SUCCESS)
    installer.assert_not_called()


def test_login_shell_runs_pending_oobe_first(cli: Cli, mocker: MockerFixture) -> None:
    oobe = mocker.patch("pywsl.api.install.oobe.run_oobe_if_pending", return_value=1)
    assert cli("-d", "Debian").exit_code == 1
    oobe.assert_called_once_with(cli.session, DEBIAN_ID)
    cli.session.create_lx_process.assert_not_called()
    oobe.reset_mock()
    cli("-d", "Debian", "true")
    oobe.assert_not_called()


def test_state_labels_cover_every_state(cli: Cli) -> None:
    cli.session.enumerate_distributions.return_value = [
        info(DEBIAN_ID, f"D{state.value}", state) for state in DistributionState
    ]
    document = json.loads(cli("-l", "--all", "--format", "json").stdout)
    assert [entry["state"] for entry in document] == [
        "Stopped",
        "Stopped",
        "Running",
        "Installing",
        "Uninstalling",
        "Converting",
        "Exporting",
    ]
