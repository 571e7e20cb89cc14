"""wsl.exe's grammar: launch options, -e, --, ~, verbs and their errors (session mocked)."""

from __future__ import annotations

import os

import pytest
from pytest_mock import MockerFixture
from test_cli_support import ALPINE_ID, DEBIAN_ID, Cli

from pywsl.api.errors import WslError


@pytest.fixture
def cli(mocker: MockerFixture) -> Cli:
    return Cli(mocker)


def test_shell_mode_passes_the_rest_as_one_raw_command_line(cli: Cli) -> None:
    cli.process.wait.return_value = 3
    outcome = cli("-d", "debian", "--", "echo", "a  b", "$HOME")
    assert outcome.exit_code == 3
    assert outcome.stdout == outcome.stderr == ""
    args, kwargs = cli.launched()
    assert args == (DEBIAN_ID, ['echo "a  b" $HOME'])
    assert kwargs["filename"] is None
    assert kwargs["login"] is False
    assert kwargs["cwd"] == f"host:{os.getcwd()}" and kwargs["username"] == ""
    cli.session.get_distribution_id.assert_called_once_with("debian")


def test_first_non_option_starts_the_command_and_later_options_belong_to_it(cli: Cli) -> None:
    cli("echo", "--help", "-d", "x")
    args, kwargs = cli.launched()
    assert args == (None, ["echo --help -d x"])
    assert kwargs["filename"] is None


def test_double_dash_keeps_option_like_words_for_the_command(cli: Cli) -> None:
    cli("--", "--list", "-e")
    args, _ = cli.launched()
    assert args == (None, ["--list -e"])


@pytest.mark.parametrize("spelling", ["-e", "--exec"])
def test_exec_mode_passes_argv_as_is(cli: Cli, spelling: str) -> None:
    cli("-d", "Alpine", spelling, "ls", "-l", "a b", "--", "-e")
    args, kwargs = cli.launched()
    assert args == (ALPINE_ID, ["ls", "-l", "a b", "--", "-e"])
    assert kwargs["filename"] == "ls"
    assert kwargs["login"] is False


@pytest.mark.parametrize("spelling", ["-e", "--exec"])
def test_exec_without_a_program_is_an_error(cli: Cli, spelling: str) -> None:
    outcome = cli("-d", "Debian", spelling)
    assert outcome.exit_code == 255
    assert outcome.stderr == "The parameter is incorrect.\nError code: Wsl/E_INVALIDARG\n"
    cli.session.create_lx_process.assert_not_called()
    # wsl.exe looks -d up where it stands, before it sees that nothing follows -e
    outcome = cli("-d", "Nowhere", spelling)
    assert "WSL_E_DISTRO_NOT_FOUND" in outcome.stderr


def test_no_command_line_starts_a_login_shell(cli: Cli) -> None:
    cli()
    args, kwargs = cli.launched()
    assert args == (None, [])
    assert kwargs["login"] is True and kwargs["filename"] is None


def test_tilde_first_means_cd_home(cli: Cli) -> None:
    cli("~", "pwd")
    args, kwargs = cli.launched()
    assert args == (None, ["pwd"])
    assert kwargs["cwd"] == "~"


def test_legacy_guid_prefix_then_tilde(cli: Cli) -> None:
    cli("{" + str(ALPINE_ID) + "}", "~", "-u", "root", "id")
    args, kwargs = cli.launched()
    assert args == (ALPINE_ID, ["id"])
    assert kwargs["cwd"] == "~" and kwargs["username"] == "root"


def test_tilde_later_is_part_of_the_command(cli: Cli) -> None:
    cli("ls", "~")
    args, kwargs = cli.launched()
    assert args == (None, ["ls ~"]) and kwargs["cwd"] == f"host:{os.getcwd()}"


@pytest.mark.parametrize("value", ["/tmp", "~", "~/src"])
def test_cd_takes_linux_paths(cli: Cli, value: str) -> None:
    cli("--cd", value, "--", "pwd")
    assert cli.launched()[1]["cwd"] == value


def test_cd_rejects_a_relative_path(cli: Cli) -> None:
    outcome = cli("--cd", "relative/dir", "pwd")
    assert outcome.exit_code == 255
    assert "relative/dir" in outcome.stderr
    assert outcome.stderr.endswith("Error code: Wsl/E_INVALIDARG\n")
    cli.open_session.assert_not_called()


@pytest.mark.parametrize("args", [["-u", "root"], ["--user", "root"], ["--user=root"], ["-uroot"]])
def test_user_spellings(cli: Cli, args: list[str]) -> None:
    cli(*args, "id")
    assert cli.launched()[1]["username"] == "root"


def test_option_values_are_taken_even_when_they_look_like_options(cli: Cli) -> None:
    outcome = cli("-u", "--list")
    args, kwargs = cli.launched()
    assert kwargs["username"] == "--list" and args == (None, [])
    assert outcome.stdout == ""


@pytest.mark.parametrize("args", [["-dDebian"], ["--distribution=Debian"], ["--distribution", "DEBIAN"]])
def test_distribution_spellings_resolve_case_insensitively(cli: Cli, args: list[str]) -> None:
    cli(*args, "true")
    assert cli.launched()[0] == (DEBIAN_ID, ["true"])


def test_distribution_id_with_and_without_braces(cli: Cli) -> None:
    cli("--distribution-id", "{" + str(ALPINE_ID).upper() + "}", "true")
    assert cli.launched()[0] == (ALPINE_ID, ["true"])
    cli.session.get_distribution_id.assert_not_called()


def test_invalid_distribution_id(cli: Cli) -> None:
    outcome = cli("--distribution-id", "not-a-guid", "true")
    assert outcome.exit_code == 255
    assert outcome.stderr == "Invalid GUID format: 'not-a-guid'\nError code: Wsl/E_INVALIDARG\n"


@pytest.mark.parametrize(
    "args",
    [
        ["-d", "Debian", "-d", "Alpine"],
        ["--distribution-id", str(ALPINE_ID), "-d", "Debian"],
        [f"{{{ALPINE_ID}}}", "-d", "Debian"],
    ],
)
def test_distribution_given_twice(cli: Cli, args: list[str]) -> None:
    outcome = cli(*args, "true")
    assert outcome.exit_code == 255
    assert outcome.stderr == "The distribution name has already been set.\n"
    cli.session.create_lx_process.assert_not_called()


def test_launch_options_fail_in_the_order_given(cli: Cli) -> None:
    """wsl.exe acts on each option where it stands: the first wrong one is reported."""
    outcome = cli("-d", "Nope", "-d", "Debian", "true")
    assert "WSL_E_DISTRO_NOT_FOUND" in outcome.stderr
    outcome = cli("-d", "Nope", "--cd", "relative", "true")
    assert "WSL_E_DISTRO_NOT_FOUND" in outcome.stderr
    outcome = cli("--cd", "relative", "-d", "Nope", "true")
    assert "Invalid directory for --cd" in outcome.stderr
    # a later --distribution-id replaces -d, as in wsl.exe
    outcome = cli("-d", "Debian", "--distribution-id", str(ALPINE_ID), "true")
    assert outcome.exit_code == 0
    assert cli.launched()[0][0] == ALPINE_ID


@pytest.mark.parametrize(
    ("args", "long_name"),
    [
        (["-d"], "--distribution"),
        (["--distribution"], "--distribution"),
        (["-u"], "--user"),
        (["--cd"], "--cd"),
        (["--shell-type"], "--shell-type"),
        (["--distribution-id"], "--distribution-id"),
    ],
)
def test_missing_values_name_the_long_option(cli: Cli, args: list[str], long_name: str) -> None:
    outcome = cli(*args)
    assert outcome.exit_code == 255
    assert outcome.stderr == f"Argument {long_name} is missing a required parameter.\n"
    cli.open_session.assert_not_called()


@pytest.mark.parametrize("option", ["--bogus", "-x", "--system-distro"])
def test_unknown_option_is_rejected_before_anything_runs(cli: Cli, option: str) -> None:
    outcome = cli("-d", "Debian", option, "true")
    assert outcome.exit_code == 255
    assert outcome.stdout == ""
    assert outcome.stderr == (
        f"Invalid command line argument: {option}\n"
        "Please use 'pywsl --help' to get a list of supported arguments.\n"
    )
    cli.open_session.assert_not_called()


@pytest.mark.parametrize(
    ("shell_type", "command", "expected"),
    [
        ("standard", ["ls", "-l"], ((None, ["ls -l"]), {"filename": None, "login": False})),
        ("login", ["ls", "-l"], ((None, ["ls -l"]), {"filename": None, "login": True})),
        ("none", ["ls", "-l"], ((None, ["ls", "-l"]), {"filename": "ls", "login": False})),
        ("standard", [], ((None, []), {"filename": None, "login": False})),
        ("login", [], ((None, []), {"filename": None, "login": True})),
    ],
)
def test_shell_types(
    cli: Cli, shell_type: str, command: list[str], expected: tuple[tuple[object, ...], dict[str, object]]
) -> None:
    cli("--shell-type", shell_type, "--", *command)
    args, kwargs = cli.launched()
    assert args == expected[0]
    assert {key: kwargs[key] for key in expected[1]} == expected[1]


def test_shell_type_none_needs_a_command(cli: Cli) -> None:
    outcome = cli("--shell-type", "none")
    assert outcome.exit_code == 255
    assert outcome.stderr == "The parameter is incorrect.\nError code: Wsl/E_INVALIDARG\n"


def test_invalid_shell_type(cli: Cli) -> None:
    outcome = cli("--shell-type", "fancy", "true")
    assert outcome.exit_code == 255
    assert outcome.stderr.startswith("Invalid value for --shell-type: ")
    assert "fancy" in outcome.stderr and outcome.stderr.endswith("Error code: Wsl/E_INVALIDARG\n")


@pytest.mark.parametrize(
    ("status", "message", "code"),
    [
        (67, "User not found.", "WSL_E_USER_NOT_FOUND"),
        (87, "The maximum number of terminals has been reached.", "WSL_E_TTY_LIMIT"),
    ],
)
def test_init_exit_codes_become_errors(cli: Cli, status: int, message: str, code: str) -> None:
    cli.process.wait.return_value = status
    outcome = cli("-u", "nobody-here", "true")
    assert outcome.exit_code == 255
    assert outcome.stderr == f"{message}\nError code: Wsl/{code}\n"


@pytest.mark.parametrize("status", [0, 1, 2, 66, 88, 130, 137, 255])
def test_exit_status_passes_through(cli: Cli, status: int) -> None:
    cli.process.wait.return_value = status
    assert cli("true").exit_code == status


def test_unknown_distribution_is_reported_with_its_code(cli: Cli) -> None:
    outcome = cli("-d", "Nope", "true")
    assert outcome.exit_code == 255
    assert outcome.stderr == (
        "There is no distribution with the supplied name.\nError code: Wsl/Service/WSL_E_DISTRO_NOT_FOUND\n"
    )
    cli.session.create_lx_process.assert_not_called()


def test_distribution_is_resolved_before_a_verb_runs(cli: Cli) -> None:
    outcome = cli("-d", "Nope", "--list")
    assert outcome.exit_code == 255
    assert "WSL_E_DISTRO_NOT_FOUND" in outcome.stderr
    cli.session.enumerate_distributions.assert_not_called()


def test_default_distro_errors_have_no_code_line(cli: Cli) -> None:
    cli.session.create_lx_process.side_effect = WslError(
        "WSL_E_DEFAULT_DISTRO_NOT_FOUND", context="Wsl/Service/CreateInstance"
    )
    outcome = cli("true")
    assert outcome.exit_code == 255
    assert "no installed distributions" in outcome.stderr
    assert "Error code" not in outcome.stderr


def test_launch_failure_from_the_library_is_reported(cli: Cli) -> None:
    cli.session.create_lx_process.side_effect = WslError(
        "E_ACCESSDENIED", "No way.", context="Wsl/Service/CreateLxProcess"
    )
    outcome = cli("-d", "Debian", "true")
    assert (outcome.exit_code, outcome.stdout) == (255, "")
    assert outcome.stderr == "No way.\nError code: Wsl/Service/CreateLxProcess/E_ACCESSDENIED\n"


def test_help_prints_usage_to_stdout_and_exits_like_wsl(cli: Cli) -> None:
    outcome = cli("--help")
    assert outcome.exit_code == 255
    assert outcome.stderr == ""
    assert outcome.stdout.startswith("Usage: pywsl [launch options] [--] [command line...]")
    for word in (
        "--distribution",
        "--distribution-id",
        "--user",
        "--cd",
        "--shell-type",
        "--exec",
        "--install",
        "--list, -l",
        "--set-default, -s, --setdefault",
        "--terminate, -t",
        "--shutdown",
        "--import",
        "--export",
        "--unregister",
        "--manage",
        "--set-default-user",
        "--status",
        "--version, -v",
        "--set-default-version",
        "--set-version",
        "--mount",
        "JSON output",
        '"os_version"',
        "_PYWSL_COMPLETE",
    ):
        assert word in outcome.stdout, word
    cli.open_session.assert_not_called()


def test_verb_help(cli: Cli) -> None:
    outcome = cli("--list", "--help")
    assert outcome.exit_code == 255
    assert "--verbose" in outcome.stdout and "--online" in outcome.stdout
    cli.open_session.assert_not_called()


def test_help_option_after_a_command_belongs_to_the_command(cli: Cli) -> None:
    outcome = cli("ls", "--help")
    assert outcome.exit_code == 0 and outcome.stdout == ""
    assert cli.launched()[0] == (None, ["ls --help"])
