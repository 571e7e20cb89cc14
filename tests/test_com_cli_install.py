"""`pywsl --install` and `--list --online` as on Windows: the manifest named by the machine's `Lxss`
registry values, the image downloaded to the temporary folder (or read in place from a file:// URL),
checked and registered through the fake WslService's `RegisterDistribution`, nothing built locally
(tests/windows_simulation.py). Also: the install and configuration modules import in a process that
looks like Windows."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_com_cli import service_calls, simulate

from pywsl.api.com import layout

IMPORTED = "99999999-8888-7777-6666-555555555555"
IMAGE = b"a distribution image"


def manifest(tmp_path: Path, url: str, sha256: str | None = None) -> dict[str, str]:
    """A manifest with one family, Tiny (version Tiny-1 at `url`), named by the registry value."""
    entry = {"Name": "Tiny-1", "FriendlyName": "Tiny Linux 1", "Default": True}
    entry["Amd64Url"] = {"Url": url, "Sha256": sha256 or hashlib.sha256(IMAGE).hexdigest()}
    (tmp_path / "list.json").write_text(
        json.dumps({"Default": "Tiny", "ModernDistributions": {"Tiny": [entry]}})
    )
    lxss = {"DistributionListUrl": (tmp_path / "list.json").as_uri()}
    return {"PYWSL_SIMULATION_LXSS": json.dumps(lxss), "TMPDIR": str(tmp_path / "temp")}


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[str]:
    """The image over HTTP on the loopback interface: its URL."""
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "tiny.wsl").write_bytes(IMAGE)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path / "served"), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tiny.wsl"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_install_downloads_to_the_temporary_folder_and_registers(tmp_path: Path, image_server: str) -> None:
    (tmp_path / "temp").mkdir()
    env = manifest(tmp_path, image_server)
    result, launches = simulate(tmp_path, "cli", "--install", "--no-launch", env_extra=env)
    assert (result.returncode, result.stdout) == (0, "")
    assert "Downloading: Tiny Linux 1" in result.stderr and "Installing: Tiny Linux 1" in result.stderr
    (call,) = service_calls(tmp_path, "RegisterDistribution")
    assert (call["DistributionName"], call["Version"], call["Content"]) == ("Tiny-1", 0, IMAGE.decode())
    assert (call["Flags"], call["VhdSize"], call["TargetDirectory"]) == (0, 0, None)  # OOBE stays on
    assert list((tmp_path / "temp").iterdir()) == []  # the download is gone
    assert launches == []


def test_install_passes_the_disk_options_and_launches_the_default_shell(tmp_path: Path) -> None:
    (tmp_path / "tiny.wsl").write_bytes(IMAGE)
    env = manifest(tmp_path, (tmp_path / "tiny.wsl").as_uri())
    result, launches = simulate(
        tmp_path,
        "cli",
        "--install",
        "Tiny",
        "--name",
        "Mine",
        "--vhd-size",
        "8GB",
        "--fixed-vhd",
        "--version",
        "2",
        env_extra=env,
    )
    (call,) = service_calls(tmp_path, "RegisterDistribution")
    assert (call["DistributionName"], call["Version"], call["Content"]) == ("Mine", 2, IMAGE.decode())
    assert (call["Flags"], call["VhdSize"]) == (layout.LXSS_IMPORT_DISTRO_FLAGS_FIXED_VHD, 8 << 30)
    assert "Launching Mine..." in result.stderr
    # The default shell of the new distribution; its first-run setup is the service's business.
    assert launches == [
        {"distro": IMPORTED, "command": [], "filename": None, "cwd": str(tmp_path), "user": None}
    ]
    assert result.returncode == 127  # the fake's relay knows no empty command line


def test_a_wrong_hash_registers_nothing(tmp_path: Path) -> None:
    (tmp_path / "tiny.wsl").write_bytes(IMAGE)
    env = manifest(tmp_path, (tmp_path / "tiny.wsl").as_uri(), sha256="00" * 32)
    result, _ = simulate(tmp_path, "cli", "--install", "--no-launch", env_extra=env)
    assert result.returncode == 255
    assert result.stderr.endswith("Error code: Wsl/TRUST_E_BAD_DIGEST\n")
    assert service_calls(tmp_path, "RegisterDistribution") == []


def test_list_online_reads_the_machine_s_manifest(tmp_path: Path) -> None:
    env = manifest(tmp_path, "https://example.invalid/tiny.wsl")
    result, _ = simulate(tmp_path, "cli", "--list", "--online", "--format", "json", env_extra=env)
    assert (result.returncode, result.stderr) == (0, "")
    entries = json.loads(result.stdout)
    assert [(entry["name"], entry["source"]) for entry in entries] == [
        ("Tiny-1", "manifest")
    ]  # nothing built here


def test_install_and_configuration_modules_import_as_on_windows(tmp_path: Path) -> None:
    script = tmp_path / "imports.py"
    package = Path(__file__).resolve().parent.parent / "pywsl"
    modules = ["pywsl.api.session.wslconfig", "pywsl.api.connect"] + [
        ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        for folder in ("api/install", "api/com", "cli")
        for path in sorted((package / folder).glob("*.py"))
    ]
    script.write_text(
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "assert 'fcntl' not in sys.modules and 'pwd' not in sys.modules\n"
        "print(sys.platform, 'ok')\n"
    )
    result, _ = simulate(tmp_path, "example", str(script))
    assert (result.returncode, result.stdout, result.stderr) == (0, "win32 ok\n", "")


def test_a_name_in_use_is_refused_before_the_download(tmp_path: Path) -> None:
    env = manifest(tmp_path, "http://127.0.0.1:9/never-fetched.wsl")
    result, _ = simulate(
        tmp_path, "cli", "--install", "Tiny", "--name", "Debian", "--no-launch", env_extra=env
    )
    assert result.returncode == 255
    assert "A distribution with the supplied name already exists." in result.stderr
    assert result.stderr.endswith("Error code: Wsl/ERROR_ALREADY_EXISTS\n")
    assert service_calls(tmp_path, "RegisterDistribution") == []
