"""`pywsl` end to end: real subprocesses (argument lists, no host shell) against the real library.

A throw-away home, registry, configuration and VM runtime folder per module; small distributions
built from the host's static busybox; the VM is shut down at the end.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from busybox_images import BUSYBOX, busybox_archive, os_release_text

import pywsl as pywsl_package
from pywsl.api.errors import WslError

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the in-process session runs the VM as root"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="needs a static /bin/busybox (busybox-static)"),
]


@dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode()

    @property
    def err(self) -> str:
        return self.stderr.decode()


class Pywsl:
    """The command as a subprocess with this module's private environment."""

    def __init__(self, env: Mapping[str, str], cwd: Path) -> None:
        self.env = dict(env)
        self.cwd = cwd

    def __call__(
        self,
        *args: str,
        input: bytes | None = None,
        extra: list[str] | None = None,
        timeout: float = 120,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Run:
        command = [sys.executable, *(extra or []), "-m", "pywsl.cli.main", *args]
        result = subprocess.run(
            command,
            env={**self.env, **(env or {})},
            cwd=cwd or self.cwd,
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        return Run(result.returncode, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pywsl-cli")


@pytest.fixture(scope="module")
def pywsl(workspace: Path) -> Iterator[Pywsl]:
    home = workspace / "home"
    config = workspace / "config"
    runtime = workspace / "run"
    for folder in (home, config / "pywsl", runtime):
        folder.mkdir(parents=True)
    os.chmod(runtime, 0o700)
    manifest = (workspace / "manifest.json").as_uri()
    (config / "pywsl" / "wslconfig").write_text(
        f"[general]\ninstanceIdleTimeout=120000\ndistributionListUrl={manifest}\n"
        "[wsl2]\nvmIdleTimeout=120000\n"
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_DATA_HOME": str(workspace / "data"),
        "XDG_CONFIG_HOME": str(config),
        "PYWSL_RUNTIME_ROOT": str(runtime),
        "LANG": "C.UTF-8",
        # The command runs the pywsl under test (the one this test imported), whatever its folder.
        "PYTHONPATH": str(Path(pywsl_package.__file__).resolve().parent.parent),
    }
    # The distribution starts in the caller's folder: "/" is reachable inside (/mnt/host), while the
    # workspace under pytest's private folder is not (root of the VM is not the host's root).
    command = Pywsl(env, Path("/"))
    try:
        yield command
    finally:
        command("--shutdown", "--force")
        shutil.rmtree(workspace / "data", ignore_errors=True)


@pytest.fixture(scope="module")
def box(pywsl: Pywsl, workspace: Path) -> str:
    """A distribution named Box, imported once for the module."""
    archive = busybox_archive(workspace / "box.tar", usr_bin_links=True)
    result = pywsl("--import", "Box", str(workspace / "box"), str(archive))
    assert result.returncode == 0, result.err
    assert result.stdout == b""
    assert result.err.endswith("The operation completed successfully.\n")
    return "Box"


def test_run_shell_and_exec_modes(pywsl: Pywsl, box: str) -> None:
    result = pywsl("-d", "box", "--", "echo", "a  b", "c")
    assert (result.returncode, result.out, result.err) == (0, "a  b c\n", "")  # `echo "a  b" c`
    result = pywsl("-d", box, "-e", "/bin/echo", "a  b", "c")
    assert (result.returncode, result.out) == (0, "a  b c\n")
    result = pywsl("-d", box, "printf", "%s,", "x", "--help")
    assert result.out == "x,--help,"


def test_no_command_line_starts_the_login_shell(pywsl: Pywsl, box: str) -> None:
    result = pywsl("-d", box, input=b"echo from-the-shell; exit 4\n")
    assert (result.returncode, result.out) == (4, "from-the-shell\n")
    result = pywsl("-d", box, "--shell-type", "standard", input=b"echo standard\n")
    assert (result.returncode, result.out) == (0, "standard\n")


def test_exit_status_and_stdout_stderr_split(pywsl: Pywsl, box: str) -> None:
    result = pywsl("-d", box, "--", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.out, result.err) == (3, "out\n", "err\n")
    assert pywsl("-d", box, "-e", "false").returncode == 1


def test_stdin_reaches_the_process(pywsl: Pywsl, box: str) -> None:
    result = pywsl("-d", box, "-e", "cat", input=b"through a pipe\n")
    assert (result.returncode, result.out) == (0, "through a pipe\n")


def test_user_cwd_and_unknown_user(pywsl: Pywsl, box: str) -> None:
    assert pywsl("-d", box, "-u", "alice", "--", "id -u").out == "1000\n"
    assert pywsl("-d", box, "--cd", "/tmp", "pwd").out == "/tmp\n"
    assert pywsl("~", "-d", box, "-u", "alice", "pwd").out == "/home/alice\n"
    assert pywsl("-d", box, "--", "~").returncode == 126  # not first: part of the command line
    result = pywsl("-d", box, "-u", "ghost", "--", "true")
    assert result.returncode == 255 and result.stdout == b""
    assert "User not found." in result.err and "WSL_E_USER_NOT_FOUND" in result.err


def test_list_and_json(pywsl: Pywsl, box: str) -> None:
    pywsl("-d", box, "true")
    result = pywsl("-l", "-v")
    assert result.returncode == 0
    lines = result.out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "VERSION"]
    assert lines[1].split() == ["*", "Box", "Running", "2"]
    records = json.loads(pywsl("--list", "--format", "json").out)
    assert records[0]["name"] == "Box" and records[0]["default"] is True
    assert records[0]["state"] == "Running" and records[0]["version"] == 2
    assert records[0]["flavor"] == "busybox" and records[0]["os_version"] == "1.36"
    assert set(records[0]) == {"name", "state", "version", "default", "flavor", "os_version", "id"}
    assert pywsl("-l", "-q").out.splitlines() == ["Box"]
    status = json.loads(pywsl("--status", "--format", "json").out)
    assert status == {"default_distribution": "Box", "default_version": 2}


def test_terminate(pywsl: Pywsl, box: str) -> None:
    pywsl("-d", box, "true")
    assert "Box" in pywsl("-l", "--running", "-q").out
    result = pywsl("-t", box)
    assert (result.returncode, result.out) == (0, "")
    assert result.err == "The operation completed successfully.\n"
    assert json.loads(pywsl("-l", "--running", "--format", "json").out) == []
    assert pywsl("-l", "--running").returncode == 255


def test_export_to_a_file_and_to_stdout(pywsl: Pywsl, box: str, workspace: Path) -> None:
    target = workspace / "box-export.tar.gz"
    result = pywsl("--export", box, str(target))
    assert result.returncode == 0, result.err
    assert result.stdout == b""
    with gzip.open(target) as compressed, tarfile.open(fileobj=compressed) as archive:
        assert any(name.endswith("bin/busybox") for name in archive.getnames())
    result = pywsl("--export", box, "-")
    assert result.returncode == 0, result.err
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as archive:
        assert any(name.endswith("etc/passwd") for name in archive.getnames())
    assert "The operation completed successfully." not in result.err


def test_set_default_manage_and_unregister(pywsl: Pywsl, box: str, workspace: Path) -> None:
    archive = busybox_archive(os_release=os_release_text("other"), usr_bin_links=True)
    result = pywsl("--import", "Other", str(workspace / "other"), "-", input=archive)
    assert result.returncode == 0, result.err
    try:
        assert pywsl("-s", "other").returncode == 0
        assert json.loads(pywsl("--status", "--format", "json").out)["default_distribution"] == "Other"
        assert pywsl("--", "cat /etc/os-release").out.startswith("ID=other")

        result = pywsl("--manage", "Other", "--set-default-user", "alice")
        assert result.returncode == 0, result.err
        assert pywsl("-d", "Other", "--", "id -u").out == "1000\n"
        assert pywsl("--manage", "Other", "--set-default-user", "ghost").returncode != 0

        assert pywsl("-t", "Other").returncode == 0
        moved = workspace / "moved"
        result = pywsl("--manage", "Other", "--move", str(moved))
        assert result.returncode == 0, result.err
        assert moved.is_dir()
        assert pywsl("-d", "Other", "--", "echo moved").out == "moved\n"

        assert pywsl("--set-default", box).returncode == 0
        result = pywsl("--unregister", "Other")
        assert result.returncode == 0, result.err
    finally:
        pywsl("--set-default", box)
        if "Other" in _names(pywsl):
            pywsl("--unregister", "Other")
    assert pywsl("-l", "-q").out.splitlines() == ["Box"]
    assert pywsl("-d", "Other", "true").returncode == 255


def test_list_online_and_install_from_the_manifest(pywsl: Pywsl, box: str, workspace: Path) -> None:
    image = busybox_archive(
        workspace / "image.tar", os_release=os_release_text("installed"), usr_bin_links=True
    )
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    manifest = {
        "Default": "Tiny",
        "ModernDistributions": {
            "Tiny": [
                {
                    "Name": "Tiny-1",
                    "FriendlyName": "Tiny Box 1",
                    "Default": True,
                    "Amd64Url": {"Url": image.as_uri(), "Sha256": digest},
                }
            ]
        },
    }
    (workspace / "manifest.json").write_text(json.dumps(manifest))
    listed = json.loads(pywsl("--list", "--online", "--format", "json").out)
    online = {entry["name"]: entry for entry in listed}
    assert {"name", "friendly_name", "default", "source"} <= set(online["Tiny-1"])
    assert (online["Tiny-1"]["friendly_name"], online["Tiny-1"]["source"]) == ("Tiny Box 1", "manifest")
    text = pywsl("-l", "-o")
    assert text.returncode == 0 and "Tiny-1" in text.out and "Tiny Box 1" in text.out

    try:
        result = pywsl("--install", "Tiny", "--no-launch")
        assert result.returncode == 0, result.err
        assert result.stdout == b""
        assert "Distribution successfully installed. It can be launched via 'pywsl -d Tiny-1'" in result.err
        assert pywsl("-d", "tiny-1", "--", "cat /etc/os-release").out.startswith("ID=installed")

        result = pywsl("--install", "--from-file", str(image), "--name", "FromFile", "-n")
        assert result.returncode == 0, result.err
        assert "FromFile" in pywsl("-l", "-q").out.splitlines()
        for name in ("Tiny-1", "FromFile"):
            assert pywsl("--unregister", name).returncode == 0
    finally:
        for name in {"Tiny-1", "FromFile"} & set(_names(pywsl)):
            pywsl("--unregister", name)


def test_errors_and_exit_codes(pywsl: Pywsl, box: str) -> None:
    result = pywsl("-d", "Nope", "--", "true")
    assert result.returncode == 255 and result.stdout == b""
    assert "There is no distribution with the supplied name." in result.err
    assert "Error code: Wsl/" in result.err and "WSL_E_DISTRO_NOT_FOUND" in result.err
    result = pywsl("--bogus")
    assert result.returncode == 255 and result.err.startswith("Invalid command line argument: --bogus")
    result = pywsl("--help")
    assert result.returncode == 255 and result.out.startswith("Usage: pywsl") and result.stderr == b""


def test_launch_path_imports(pywsl: Pywsl, box: str) -> None:
    pywsl("-d", box, "true")  # the instance is running: only the launch itself is measured
    result = pywsl("-d", box, "--", "true", extra=["-X", "importtime"])
    assert result.returncode == 0
    modules = [
        line.rsplit("|", 1)[-1].strip() for line in result.err.splitlines() if line.startswith("import time:")
    ]
    assert "pywsl.cli.launch_run" in modules  # the fast path of the common launch lines
    loaded = {name.split(".")[0] for name in modules} | set(modules)
    # (json is the registry's file format: the library loads it, the command line does not.)
    for heavy in (
        "rich",
        "http",
        "urllib.request",
        "pywsl.api.install.installer",
        "pywsl.api.install.manifest",
        "pywsl.api.install.download",
        "pywsl.cli.render",
        "pywsl.cli.listing",
        "pywsl.cli.archives",
        "click",
        "pywsl.cli.command",
        "pywsl.cli.grammar",
        "pywsl.cli.launch",
    ):
        assert heavy not in loaded, heavy


def test_shutdown(pywsl: Pywsl, box: str) -> None:
    pywsl("-d", box, "true")
    result = pywsl("--shutdown")
    assert (result.returncode, result.out, result.err) == (0, "", "")
    assert json.loads(pywsl("-l", "--running", "--format", "json").out) == []


# -- the caller's folder, exec failures, configuration warnings, messages ---------------------------


@pytest.fixture
def host_folder() -> Iterator[Path]:
    """A folder of the host that every user can reach (the VM's root is not the host's root)."""
    folder = Path(tempfile.mkdtemp(prefix="pywsl-cwd-"))
    try:
        folder.chmod(0o755)
        (folder / "Makefile").write_text("all:\n\t@pwd\n")
        yield folder
    finally:
        shutil.rmtree(folder)


def test_default_working_directory_is_the_callers_folder(pywsl: Pywsl, box: str, host_folder: Path) -> None:
    result = pywsl("-d", box, "pwd", cwd=host_folder)
    assert (result.returncode, result.out, result.err) == (0, f"/mnt/host{host_folder}\n", "")
    result = pywsl("-d", box, "-e", "cat", "Makefile", cwd=host_folder)
    assert (result.returncode, result.out) == (0, "all:\n\t@pwd\n")
    result = pywsl("-d", box, "pwd", cwd=Path("/"))
    assert result.out == "/mnt/host\n"
    # --cd and ~ win over the caller's folder, as before.
    assert pywsl("-d", box, "--cd", "/tmp", "pwd", cwd=host_folder).out == "/tmp\n"
    assert pywsl("~", "-d", box, "pwd", cwd=host_folder).out == "/root\n"


def test_a_folder_the_distribution_cannot_reach_starts_in_home(
    pywsl: Pywsl, box: str, host_folder: Path, workspace: Path
) -> None:
    private = host_folder / "private"
    private.mkdir(mode=0o700)  # the host's root only: the distribution's root is another uid
    result = pywsl("-d", box, "pwd", cwd=private)
    assert (result.returncode, result.out) == (0, "/root\n")
    assert result.err == f"wsl: Failed to translate '{private}'\n"
    archive = busybox_archive(workspace / "nomount.tar", wsl_conf="[automount]\nenabled=false\n")
    assert pywsl("--import", "NoMount", str(workspace / "nomount"), str(archive)).returncode == 0
    try:
        result = pywsl("-d", "NoMount", "-u", "alice", "pwd", cwd=host_folder)
        assert (result.returncode, result.out, result.err) == (0, "/home/alice\n", "")
    finally:
        assert pywsl("--unregister", "NoMount").returncode == 0


def test_exec_mode_with_a_missing_program(pywsl: Pywsl, box: str) -> None:
    result = pywsl("-d", box, "-e", "no-such-program", "x")
    assert (result.returncode, result.out) == (1, "")
    assert "execvpe(no-such-program) failed: No such file or directory\n" in result.err
    assert pywsl("-d", box, "--exec", "/no/such/file").returncode == 1
    result = pywsl("-d", box, "--", "no-such-program")
    assert result.returncode == 127 and "no-such-program" in result.err  # the shell's own status
    for spelling in ("-e", "--exec"):
        result = pywsl("-d", box, spelling)
        assert (result.returncode, result.out) == (255, "")
        assert result.err == "The parameter is incorrect.\nError code: Wsl/E_INVALIDARG\n"
        # wsl.exe looks -d up where it stands, before it finds nothing after -e
        assert "WSL_E_DISTRO_NOT_FOUND" in pywsl("-d", "NotThere", spelling).err


def test_wsl_conf_warnings_when_the_distribution_starts(pywsl: Pywsl, workspace: Path) -> None:
    archive = busybox_archive(
        workspace / "warned.tar", wsl_conf="[network]\ngenerateHosts = maybe\n[bogus]\nkey = 1\n"
    )
    assert pywsl("--import", "Warned", str(workspace / "warned"), str(archive)).returncode == 0
    try:
        result = pywsl("-d", "Warned", "echo", "started")
        assert (result.returncode, result.out) == (0, "started\n")
        assert result.err == (
            "wsl: Invalid boolean value 'maybe' for key 'network.generateHosts' in "
            "/etc/wsl.conf:2\nwsl: Unknown key 'bogus.key' in /etc/wsl.conf:4\n"
        )
        assert pywsl("-d", "Warned", "true").err == ""  # already running: nothing new to say
        assert pywsl("-t", "Warned").returncode == 0
        result = pywsl("-d", "Warned", "true", env={"WSL_DISABLE_WARNINGS": "1"})
        assert (result.returncode, result.err) == (0, "")
    finally:
        assert pywsl("--unregister", "Warned").returncode == 0


def test_wslconfig_warnings_when_the_vm_starts_and_a_missing_kernel(
    pywsl: Pywsl, box: str, workspace: Path
) -> None:
    config = workspace / "config" / "pywsl" / "wslconfig"
    original = config.read_text()
    try:
        config.write_text(original + "bogusKey = 1\nswapFile = /nowhere\nlocalhostForwarding = perhaps\n")
        lines = original.count("\n")
        assert pywsl("--shutdown").returncode == 0
        result = pywsl("-d", box, "echo", "booted")
        assert (result.returncode, result.out) == (0, "booted\n")
        assert result.err.splitlines() == [
            f"wsl: Unknown key 'wsl2.bogusKey' in {config}:{lines + 1}",
            "wsl: Invalid boolean value 'perhaps' for key 'wsl2.localhostForwarding' in "
            f"{config}:{lines + 3}",
            f"wsl: Ignored key 'wsl2.swapFile' in {config}:{lines + 2}: this host cannot honour it",
        ]
        assert pywsl("-d", box, "true").err == ""  # the VM runs already
        assert pywsl("--shutdown").returncode == 0
        assert pywsl("-d", box, "true", env={"WSL_DISABLE_WARNINGS": "1"}).err == ""

        config.write_text(original + f"kernel = {workspace}/no-such-kernel\n")
        assert pywsl("--shutdown").returncode == 0
        result = pywsl("-d", box, "true", env={"WSL_DISABLE_WARNINGS": "1"})
        assert (result.returncode, result.out) == (255, "")
        assert result.err.startswith(
            f"The custom kernel specified in {config} was not found: "
            f"'{workspace}/no-such-kernel'.\nError code: Wsl/"
        )
        assert "WSL_E_CUSTOM_KERNEL_NOT_FOUND" in result.err
        assert json.loads(pywsl("-l", "--running", "--format", "json").out) == []  # no VM started
    finally:
        config.write_text(original)
        pywsl("--shutdown")


def test_no_installed_distributions_message(pywsl: Pywsl, workspace: Path) -> None:
    empty = workspace / "empty-data"
    result = pywsl("--", "true", env={"XDG_DATA_HOME": str(empty)})
    assert (result.returncode, result.out) == (255, "")
    assert result.err == (
        "pywsl has no installed distributions.\n"
        "You can resolve this by installing a distribution with the instructions below:\n\n"
        "Use 'pywsl --list --online' to list available distributions\n"
        "and 'pywsl --install <Distro>' to install.\n"
    )
    shutil.rmtree(empty, ignore_errors=True)


def test_library_errors_do_not_advise_options(pywsl: Pywsl, box: str, workspace: Path) -> None:
    for code in (
        "WSL_E_DEFAULT_DISTRO_NOT_FOUND",
        "WSL_E_DISTRIBUTION_NAME_NEEDED",
        "WSL_E_DISTRO_NOT_STOPPED",
        "ERROR_ALREADY_EXISTS",
    ):
        assert "--" not in WslError(code).message
    result = pywsl("--import", box, str(workspace / "again"), str(workspace / "box.tar"))
    assert result.returncode == 255
    assert (
        "\nA distribution with the supplied name already exists. Use --name to choose a different name.\n"
        "Error code: Wsl/Service/RegisterDistro/ERROR_ALREADY_EXISTS\n"
    ) in result.err


# -- the install location: made by --import, removed on failure and by --unregister -----------------


PATH_NOT_FOUND = "The system cannot find the path specified.\nError code: Wsl/ERROR_PATH_NOT_FOUND\n"


def _names(pywsl: Pywsl) -> list[str]:
    return [record["name"] for record in json.loads(pywsl("-l", "--format", "json").out)]


def test_import_makes_the_missing_location_and_unregister_removes_it(
    pywsl: Pywsl, box: str, workspace: Path
) -> None:
    archive = str(workspace / "box.tar")
    made = workspace / "made"
    try:
        result = pywsl("--import", "Made", str(made), archive)
        assert result.returncode == 0, result.err
        assert made.stat().st_mode & 0o7777 == 0o700 and (made / "rootfs" / "bin" / "busybox").is_file()
        assert pywsl("-d", "Made", "--", "echo in").out == "in\n"
        result = pywsl("--unregister", "Made")
        assert result.returncode == 0, result.err
        assert not made.exists()
        # A folder that holds other files stays, with them, and nothing else.
        kept = workspace / "kept"
        kept.mkdir()
        (kept / "notes.txt").write_text("mine")
        assert pywsl("--import", "Kept", str(kept), archive).returncode == 0
        assert pywsl("--unregister", "Kept").returncode == 0
        assert os.listdir(kept) == ["notes.txt"] and (kept / "notes.txt").read_text() == "mine"
    finally:
        for name in {"Made", "Kept"} & set(_names(pywsl)):
            pywsl("--unregister", name)
    assert "Made" not in _names(pywsl) and "Kept" not in _names(pywsl)


def test_import_failures_remove_the_location_they_made(pywsl: Pywsl, box: str, workspace: Path) -> None:
    corrupt = workspace / "corrupt.tar.gz"
    corrupt.write_bytes(gzip.compress(b"this is not a tar archive\n" * 64)[:200])
    before = _names(pywsl)
    broken = workspace / "broken"
    result = pywsl("--import", "Broken", str(broken), str(corrupt))
    assert result.returncode == 255 and result.stdout == b""
    assert "Error code: Wsl/" in result.err
    assert not broken.exists()
    # A missing archive is found after the folder is made (wsl.exe's order): it goes again.
    result = pywsl("--import", "Broken", str(broken), str(workspace / "no-such.tar"))
    assert result.returncode == 255 and "ERROR_FILE_NOT_FOUND" in result.err
    assert not broken.exists()
    # A folder the user made stays, as it was, when the import fails.
    given = workspace / "given"
    given.mkdir(mode=0o755)
    assert pywsl("--import", "Broken", str(given), str(corrupt)).returncode == 255
    assert given.is_dir() and os.listdir(given) == []
    given.rmdir()
    # One level only: a missing parent is wsl.exe's ERROR_PATH_NOT_FOUND, and wins over a missing file.
    for archive in (str(workspace / "box.tar"), str(workspace / "no-such.tar")):
        result = pywsl("--import", "Broken", str(workspace / "no-parent" / "broken"), archive)
        assert (result.returncode, result.out, result.err) == (255, "", PATH_NOT_FOUND)
    assert not (workspace / "no-parent").exists()
    assert _names(pywsl) == before


def test_install_location_and_move_make_every_missing_folder(pywsl: Pywsl, box: str, workspace: Path) -> None:
    image = busybox_archive(workspace / "deep.tar", os_release=os_release_text("deep"), usr_bin_links=True)
    location = workspace / "deep" / "a" / "b"
    try:
        result = pywsl(
            "--install",
            "--from-file",
            str(image),
            "--name",
            "Deep",
            "--location",
            str(location),
            "--no-launch",
        )
        assert result.returncode == 0, result.err
        assert location.stat().st_mode & 0o7777 == 0o700 and (location / "rootfs").is_dir()
        target = workspace / "moved-deep" / "x" / "y"
        result = pywsl("--manage", "Deep", "--move", str(target))
        assert result.returncode == 0, result.err
        assert (target / "rootfs").is_dir() and not location.exists() and (workspace / "deep" / "a").is_dir()
        assert pywsl("-d", "Deep", "--", "cat /etc/os-release").out.startswith("ID=deep")
        assert pywsl("--unregister", "Deep").returncode == 0
        assert not target.exists() and (workspace / "moved-deep" / "x").is_dir()
    finally:
        if "Deep" in _names(pywsl):
            pywsl("--unregister", "Deep")
    shutil.rmtree(workspace / "deep")
    shutil.rmtree(workspace / "moved-deep")


# -- archives with device nodes: skipped with one warning, the rest imported and exported -----------


DEVICE_NODES = {
    "dev/null": (tarfile.CHRTYPE, 1, 3),
    "dev/tty": (tarfile.CHRTYPE, 5, 0),
    "dev/sda": (tarfile.BLKTYPE, 8, 0),
}
DEVICES_WARNING = (
    "wsl: Skipped 3 device nodes (character or block devices) in the archive: a distribution "
    "cannot hold them, its /dev is a fresh tmpfs each time it runs."
)


def device_node_archive(path: Path) -> Path:
    """The busybox distribution with a ./dev as debootstrap makes it (character and block devices, a
    FIFO), then one more file, gzip-compressed at ``path`` (readable by everyone)."""
    buffer = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(busybox_archive(usr_bin_links=True))) as source,
        tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive,
    ):
        for info in source.getmembers():
            archive.addfile(info, source.extractfile(info) if info.isreg() else None)
        for name, (kind, major, minor) in DEVICE_NODES.items():
            node = tarfile.TarInfo(name)
            node.type, node.mode, node.devmajor, node.devminor = kind, 0o660, major, minor
            archive.addfile(node)
        fifo = tarfile.TarInfo("dev/initctl")
        fifo.type, fifo.mode = tarfile.FIFOTYPE, 0o600
        archive.addfile(fifo)
        after = tarfile.TarInfo("etc/after-the-devices")
        after.size = 3
        archive.addfile(after, io.BytesIO(b"ok\n"))
    path.write_bytes(gzip.compress(buffer.getvalue()))
    path.chmod(0o644)
    return path


def archive_entries(data: bytes) -> set[tuple[str, bytes]]:
    """The members of a (possibly gzip-compressed) tar: (normalised name, type), the root left out."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {(os.path.normpath(info.name), info.type) for info in archive.getmembers()} - {(".", b"5")}


def without_device_nodes(path: Path) -> set[tuple[str, bytes]]:
    return {entry for entry in archive_entries(path.read_bytes()) if entry[0] not in DEVICE_NODES}


def test_device_nodes_are_skipped_with_one_warning(pywsl: Pywsl, box: str, workspace: Path) -> None:
    from stat import S_ISFIFO

    archive = device_node_archive(workspace / "devices.tar.gz")
    location = workspace / "devices"
    result = pywsl("--import", "Devices", str(location), str(archive))
    try:
        assert (result.returncode, result.out) == (0, ""), result.err
        assert result.err.splitlines()[-2:] == [DEVICES_WARNING, "The operation completed successfully."]
        assert result.err.count("device nodes") == 1
        rootfs = location / "rootfs"
        assert S_ISFIFO(os.lstat(rootfs / "dev" / "initctl").st_mode)
        assert not any(os.path.lexists(rootfs / name) for name in DEVICE_NODES)
        exported = pywsl("--export", "Devices", "-")  # before the first start writes /etc/hosts...
        assert exported.returncode == 0, exported.err
        assert archive_entries(exported.stdout) == without_device_nodes(archive)
        assert pywsl("-d", "Devices", "--", "cat /etc/after-the-devices").out == "ok\n"
    finally:
        assert pywsl("--unregister", "Devices").returncode == 0
    try:
        result = pywsl("--import", "Devices", str(location), str(archive), env={"WSL_DISABLE_WARNINGS": "1"})
        assert result.returncode == 0 and "device nodes" not in result.err
        assert pywsl("--unregister", "Devices").returncode == 0
    finally:
        if "Devices" in _names(pywsl):
            pywsl("--unregister", "Devices")
    truncated = workspace / "devices-truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:-300])
    result = pywsl("--import", "Devices", str(location), str(truncated))
    assert result.returncode == 255 and "Error code: Wsl/" in result.err
    assert "Devices" not in _names(pywsl) and not location.exists()


def test_wsl_conf_read_as_wsl_init_reads_it_and_lang_from_the_locale_file(
    pywsl: Pywsl, box: str, workspace: Path
) -> None:
    conf = (
        "[network]\r\nhostname = Büro_PC.corp.example\r\n[filesystem]\r\numask = 0027\r\n"
        "umask = 0\r\n[boot]\r\ncommand = true ; no comment\r\n[user] default = alice\r\n"
        "[network]\r\ngenerateHosts = false\r\n"
    )
    archive = busybox_archive(
        workspace / "localized.tar", wsl_conf=conf, extra_files={"etc/default/locale": 'LANG="de_DE.UTF-8"\n'}
    )
    assert pywsl("--import", "Localized", str(workspace / "localized"), str(archive)).returncode == 0
    try:
        result = pywsl("-d", "Localized", "--", "echo $LANG; hostname; umask; grep 127.0.1.1 /etc/hosts")
        assert result.out.splitlines() == [
            "de_DE.UTF-8",
            "BroPC.corpexample",
            "0027",
            "127.0.1.1\tBroPC.corpexample.localdomain\tBroPC.corpexample",
        ]
        # \r\n ends counted twice after a pair or a header, as WSL's reader counts them; the
        # reading stops at the header followed by text, so [network] generateHosts is never read.
        assert result.err == (
            "wsl: Duplicated config key 'filesystem.umask' in /etc/wsl.conf:9 "
            "(Conflicting key: 'filesystem.umask' in /etc/wsl.conf:7)\n"
            "wsl: Expected ' ' or '\\n' in /etc/wsl.conf:15\n"
        )
    finally:
        assert pywsl("--unregister", "Localized").returncode == 0
    # No locale file: the LANG of WSL's default environment.
    assert pywsl("-d", box, "--", "echo $LANG").out == "en_US.UTF-8\n"
