""".wslconfig: WSL's keys and value rules, warnings instead of failures, what takes effect."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pywsl.api.credentials import UserIdentity
from pywsl.api.session.paths import user_paths
from pywsl.api.session.wslconfig import (
    DEFAULT_INSTANCE_IDLE_TIMEOUT_MS,
    DEFAULT_VM_IDLE_TIMEOUT_MS,
    MIN_MEMORY_BYTES,
    WslConfig,
    load_wslconfig,
    parse_wslconfig,
)

GIB = 1 << 30


def parse(text: str) -> WslConfig:
    return parse_wslconfig(text, "cfg", home=Path("/home/u"), host_memory=16 * GIB, host_cpus=8)


def test_defaults() -> None:
    config = parse("")
    assert config.warnings == ()
    assert config.memory_bytes is None
    assert config.effective_memory_bytes(16 * GIB) == 8 * GIB
    assert config.processors is None
    assert config.vm_idle_timeout_ms == DEFAULT_VM_IDLE_TIMEOUT_MS
    assert config.instance_idle_timeout_ms == DEFAULT_INSTANCE_IDLE_TIMEOUT_MS
    assert config.networking_mode == "mirrored"
    assert config.distribution_install_path is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4GB", 4 * GIB), ("4G", 4 * GIB), ("512MB", 512 << 20), ("1073741824", GIB), ("2T", 16 * GIB)],
)
def test_memory_strings(text: str, expected: int) -> None:
    config = parse(f"[wsl2]\nmemory={text}\n")
    assert config.memory_bytes == expected


def test_memory_bounds_and_bad_values() -> None:
    low = parse("[wsl2]\nmemory=1MB\n")
    assert low.memory_bytes == MIN_MEMORY_BYTES and any("minimum" in w for w in low.warnings)
    bad = parse("[wsl2]\nmemory=4gb\n")  # suffixes are upper case only
    assert bad.memory_bytes is None and any("Invalid memory string '4gb'" in w for w in bad.warnings)


def test_base_zero_integers_and_timeouts() -> None:
    config = parse("[wsl2]\nvmIdleTimeout=0x10\nprocessors=010\n[general]\ninstanceIdleTimeout=-1\n")
    assert config.vm_idle_timeout_ms == 16
    assert config.processors == 8  # octal 010
    assert config.instance_idle_timeout_ms == -1
    bad = parse("[wsl2]\nvmIdleTimeout=09\nkernelBootTimeout=0\n")
    assert bad.vm_idle_timeout_ms == DEFAULT_VM_IDLE_TIMEOUT_MS
    assert len(bad.warnings) == 2


def test_processors_clamped_to_host() -> None:
    config = parse("[wsl2]\nprocessors=64\n")
    assert config.processors == 8
    assert any("logical processors" in w for w in config.warnings)


def test_duplicate_key_first_wins() -> None:
    config = parse("[wsl2]\nmemory=2GB\nMEMORY=6GB\n")
    assert config.memory_bytes == 2 * GIB
    assert any("Duplicated config key 'wsl2.MEMORY'" in w for w in config.warnings)


def test_unknown_keys_and_sections_warn() -> None:
    config = parse("[wsl2]\nnoSuchKey=1\n[nosection]\nx=1\n[general]\nbogus=2\n")
    assert len(config.warnings) == 3
    assert all(w.startswith("Unknown key '") for w in config.warnings)


def test_every_documented_key_is_accepted_silently() -> None:
    text = """
[wsl2]
kernel=/boot/vmlinuz
kernelCommandLine = quiet
kernelModules=/x/modules.vhdx
swap=0
swapFile=/tmp/swap
localhostForwarding=true
nestedVirtualization=false
debugConsole=false
debugConsoleLogFile=/tmp/log
earlyBootLogging=0
virtio=1
virtio9p=false
virtiofs=false
kernelDebugPort=0
gpuSupport=true
guiApplications=false
systemDistro=/x/system.vhd
telemetry=false
mountDeviceTimeout=5000
hostFileSystemAccess=true
hardwarePerformanceCounters=true
vmSwitch=External
macAddress=00:11:22:33:44:55
dhcp=true
dhcpTimeout=5000
ipv6=false
dnsProxy=true
dnsTunneling=true
firewall=true
autoProxy=true
safeMode=false
defaultVhdSize=1TB
crashDumpFolder=/tmp/crashes
maxCrashDumpCount=-1
loadDefaultKernelModules=true
loadKernelModules=tun,ip_tables
isolateDistroCgroup=true
[experimental]
autoMemoryReclaim=gradual
sparseVhd=true
bestEffortDnsParsing=false
dnsTunnelingIpAddress=10.255.255.254
initialAutoProxyTimeout=1000
ignoredPorts=22,80
hostAddressLoopback=false
setVersionDebug=false
swiotlb=64MB
virtioFsAggregateShares=true
"""
    config = parse(text)
    assert config.warnings == ()
    assert config.values["experimental.autoMemoryReclaim"] == "Gradual"
    assert config.values["wsl2.defaultVhdSize"] == 1 << 40
    assert config.values["wsl2.kernelCommandLine"] == "quiet"


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("None", "none"),
        ("none", "none"),
        ("NAT", "mirrored"),
        ("Mirrored", "mirrored"),
        ("bridged", "mirrored"),
        ("Consomme", "mirrored"),
        ("VirtioProxy", "mirrored"),
    ],
)
def test_networking_modes(value: str, mode: str) -> None:
    assert parse(f"[wsl2]\nnetworkingMode={value}\n").networking_mode == mode


def test_experimental_networking_alias_and_bad_mode() -> None:
    assert parse("[experimental]\nnetworkingMode=None\n").networking_mode == "none"
    bad = parse("[wsl2]\nnetworkingMode=Wormhole\n")
    assert bad.networking_mode == "mirrored" and len(bad.warnings) == 1


def test_install_path_and_manifest_urls() -> None:
    config = parse(
        "[general]\ndistributionInstallPath=~/distros\ndistributionListUrl=file:///m.json\n"
        'distributionListUrlAppend = "https://example.invalid/extra.json"\n'
    )
    assert config.distribution_install_path == Path("/home/u/distros")
    assert config.distribution_list_url == "file:///m.json"
    assert config.distribution_list_url_append == "https://example.invalid/extra.json"
    relative = parse("[general]\ndistributionInstallPath=relative/dir\n")
    assert relative.distribution_install_path is None and len(relative.warnings) == 1


def test_load_missing_and_present(tmp_path: Path) -> None:
    identity = UserIdentity.current()
    missing = load_wslconfig(tmp_path / "nope", identity)
    assert missing.warnings == () and missing.memory_bytes is None
    path = tmp_path / "wslconfig"
    path.write_text("\ufeff[wsl2]\nmemory=1GB\n", encoding="utf-8")
    assert load_wslconfig(path, identity).memory_bytes == GIB
    folder = tmp_path / "dir"
    folder.mkdir()
    assert load_wslconfig(folder, identity).warnings


def test_config_location_follows_xdg_and_override(tmp_path: Path) -> None:
    home = Path("/home/u")
    assert user_paths(1000, home, None).config_file == home / ".config/pywsl/wslconfig"
    env = {"HOME": "/home/other", "XDG_CONFIG_HOME": str(tmp_path), "XDG_DATA_HOME": "relative"}
    paths = user_paths(1000, home, env)
    assert paths.config_file == tmp_path / "pywsl" / "wslconfig"
    assert paths.data_dir == Path("/home/other/.local/share/pywsl")
    override = user_paths(1000, home, {"PYWSL_CONFIG": str(tmp_path / "my.conf")})
    assert override.config_file == tmp_path / "my.conf"
    assert user_paths(7, home, None).runtime_dir.name == "7"
    assert os.path.isabs(user_paths(7, home, None).runtime_dir)
