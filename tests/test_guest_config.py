"""Guest-side parsing: wsl.conf, os-release, the generated network files, boot arguments, archives."""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from pywsl.guest.boot import parse_boot_arguments
from pywsl.guest.environment import build_environment
from pywsl.guest.locale_conf import language_from_text, read_language, read_language_at
from pywsl.guest.network_files import clean_hostname, hosts_file, resolv_conf_file
from pywsl.guest.os_release import default_name, flavor_and_version, parse_os_release
from pywsl.guest.rootfs import exists_in_root, read_in_root, write_file_atomic
from pywsl.guest.tar_worker import compression_option
from pywsl.guest.users import PasswdEntry
from pywsl.guest.wsl_conf import WslConf, parse_wsl_conf, read_wsl_conf
from pywsl.wire.config_format import MAX_CONFIG_BYTES
from pywsl.wire.constants import LX_INIT_AUTO_GENERATED_FILE_HEADER, LX_INIT_RESOLVCONF_PREFIX


def test_wsl_conf_defaults() -> None:
    conf = parse_wsl_conf("")
    assert conf == WslConf()
    assert conf.host_mount_point == "/mnt/host"
    assert conf.automount_enabled and conf.network_generate_hosts and conf.network_generate_resolv_conf


def test_wsl_conf_values() -> None:
    conf = parse_wsl_conf(
        "[automount]\nEnabled = false\nroot = /win//\n"
        "[network]\nhostname = box\ngenerateHosts = 0\ngenerateResolvConf = FALSE\n"
        '[user]\ndefault = "alice"\n[boot]\ncommand = service ssh start # comment\nsystemd = true\n'
        "[filesystem]\numask = 027\n[interop]\nappendWindowsPath = false\n"
        "[time]\nuseWindowsTimezone = false\n"
    )
    assert conf.warnings == []
    assert (conf.automount_enabled, conf.automount_root, conf.host_mount_point) == (
        False,
        "/win/",
        "/win/host",
    )
    assert (conf.network_hostname, conf.network_generate_hosts, conf.network_generate_resolv_conf) == (
        "box",
        False,
        False,
    )
    assert conf.user_default == "alice"
    assert conf.boot_command == "service ssh start" and conf.boot_systemd
    assert conf.umask == 0o27
    assert not conf.interop_append_windows_path
    assert not conf.time_use_windows_timezone and WslConf().time_use_windows_timezone


def test_wsl_conf_problems_are_warnings() -> None:
    conf = parse_wsl_conf(
        "[network]\ngenerateHosts = maybe\ngenerateHosts = false\nfoo = 1\n"
        "[automount]\nroot = relative/path\ncgroups = V1\n[filesystem]\numask = 0999\n"
        "[nope]\nx = y\n[boot]\ncommand =\n[fileServer]\nlogLevel = 4x\n"
        "[automount]\ncgroups = v3\n"
    )
    assert conf.network_generate_hosts  # the first (bad) value wins and falls back to the default
    assert conf.automount_root == "/mnt/" and conf.umask == 0o022
    assert conf.boot_command == ""  # a string key takes any value, the empty one too
    w = "/etc/wsl.conf"
    assert conf.warnings == [  # WSL's wording, in the order of the file
        f"Invalid boolean value 'maybe' for key 'network.generateHosts' in {w}:2",
        f"Duplicated config key 'network.generateHosts' in {w}:3 (Conflicting key: 'network.generateHosts' "
        f"in {w}:2)",
        f"Unknown key 'network.foo' in {w}:4",
        f"Invalid value 'relative/path' for key 'automount.root' in {w}:6",
        f"Invalid integer value '0999' for key 'filesystem.umask' in {w}:9",
        f"Unknown key 'nope.x' in {w}:11",
        f"Invalid integer value '4x' for key 'fileServer.logLevel' in {w}:15",
        f"Duplicated config key 'automount.cgroups' in {w}:17 "
        f"(Conflicting key: 'automount.cgroups' in {w}:7)",
    ]
    bad_enum = parse_wsl_conf("[automount]\ncgroups = v3\n")
    assert bad_enum.warnings == [
        f"Invalid value 'v3' for config key 'automount.cgroups' in {w}:2 (Valid values: v1, v2)"
    ]


def test_wsl_conf_reading_stops_at_a_syntax_error() -> None:
    conf = parse_wsl_conf(
        "[network]\nhostname = before\n[boot]\ncommand = echo \\\n  continued # comment\n"
        "garbage line\n[user]\ndefault = alice\nnoSuchKey = 1\n"
    )
    assert conf.network_hostname == "before" and conf.boot_command == "echo   continued"
    assert conf.user_default is None  # after the error: never read
    assert conf.warnings == ["Expected '=' in /etc/wsl.conf:6"]
    semicolon = parse_wsl_conf("; a comment elsewhere\n[network]\nhostname = x\n")
    assert semicolon.network_hostname is None
    assert semicolon.warnings == ["Invalid key name in /etc/wsl.conf:1"]


def test_wsl_conf_string_values_are_taken_as_written() -> None:
    conf = parse_wsl_conf(
        '[network]\nhostname =\n[user]\ndefault = " al ice "\n'
        "[filesystem]\numask = 0x1ff\n[automount]\noptions = metadata;uid=1\n"
    )
    assert conf.warnings == []
    assert conf.network_hostname == "" and conf.user_default == " al ice "
    assert conf.umask == 0o777 and conf.automount_options == "metadata;uid=1"


@pytest.mark.parametrize(
    "value",
    [
        "/proc",
        "/proc/",
        "/sys",
        "/sys/fs",
        "/dev",
        "/dev/shm/",
        "/",
        "//",
        "/etc",
        "/usr/",
        "/var",
        "relative/path",
        "mnt",
        "/mnt/../proc",
        "/mnt/./x",
        "..",
        "",
        '""',
        "/" + "x" * 300,
        "/mnt\0",
        "/mnt\x01x",
        "/proc/self/root",
        "/sys/kernel/../fs",
    ],
)
def test_unusable_automount_roots_are_refused(value: str) -> None:
    conf = parse_wsl_conf(f"[automount]\nroot = {value}\n")
    assert conf.automount_root == "/mnt/" and conf.host_mount_point == "/mnt/host"
    assert len(conf.warnings) == 1, conf.warnings
    warning = conf.warnings[0]
    assert "automount.root" in warning and "\0" not in warning and "\x01" not in warning
    assert len(warning) < 200
    shown = value.strip('"').replace("\0", "\\x00").replace("\x01", "\\x01")
    assert shown[:40] in warning


@pytest.mark.parametrize(
    ("value", "expected"),
    [("/windows", "/windows/"), ("/mnt//x/", "/mnt/x/"), ("/run/", "/run/"), ("/srv/files", "/srv/files/")],
)
def test_usable_automount_roots(value: str, expected: str) -> None:
    conf = parse_wsl_conf(f"[automount]\nroot = {value}\n")
    assert (conf.automount_root, conf.warnings) == (expected, [])


def test_read_wsl_conf_inside_a_tree(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        assert read_wsl_conf(root) == WslConf()
        (tmp_path / "etc/wsl.conf").write_bytes(b"[network]\nhostname = b\xffx\n")
        conf = read_wsl_conf(root)
        assert conf.network_hostname == "b\ufffdx" and "UTF-8" in conf.warnings[0]
        (tmp_path / "etc/wsl.conf").unlink()
        (tmp_path / "etc/wsl.conf").symlink_to("/etc/passwd")  # resolves inside the tree: nothing there
        _assert_defaults_with_warning(read_wsl_conf(root), "symbolic link to nothing")
        (tmp_path / "etc/passwd").write_text("[network]\nhostname = linked\n")
        assert read_wsl_conf(root).network_hostname == "linked"
        (tmp_path / "etc/wsl.conf").unlink()
        (tmp_path / "etc/wsl.conf").mkdir()
        _assert_defaults_with_warning(read_wsl_conf(root), "not a regular file")
    finally:
        os.close(root)


def _assert_defaults_with_warning(conf: WslConf, fragment: str) -> None:
    assert len(conf.warnings) == 1 and fragment in conf.warnings[0], conf.warnings
    assert "/etc/wsl.conf" in conf.warnings[0]
    assert replace(conf, warnings=[]) == WslConf()


def test_unreadable_wsl_conf_never_blocks_and_warns(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "dev").mkdir()
    conf_path = tmp_path / "etc/wsl.conf"
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        os.mkfifo(conf_path)  # nobody ever writes: a read would wait forever
        _assert_defaults_with_warning(read_wsl_conf(root), "not a regular file")
        conf_path.unlink()
        os.mknod(tmp_path / "dev/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # endless data
        conf_path.symlink_to("/dev/zero")  # resolved inside the tree: its own /dev/zero
        _assert_defaults_with_warning(read_wsl_conf(root), "not a regular file")
        (tmp_path / "dev/zero").unlink()
        _assert_defaults_with_warning(read_wsl_conf(root), "symbolic link to nothing")
        conf_path.unlink()
        with open(conf_path, "wb") as handle:
            handle.truncate(MAX_CONFIG_BYTES + 1)  # sparse: big without using the disk
        _assert_defaults_with_warning(read_wsl_conf(root), "larger than")
        conf_path.unlink()
        conf_path.write_text('[automount]\nroot = /proc\n[user]\ndefault = "a\x7fb"\n')
        conf = read_wsl_conf(root)
        assert conf.automount_root == "/mnt/" and conf.user_default == "a\x7fb"
        assert [("automount.root" in item, "/proc" in item) for item in conf.warnings] == [(True, True)]
    finally:
        os.close(root)


def test_os_release(tmp_path: Path) -> None:
    assert parse_os_release(
        'ID=debian\nVERSION_ID="12"\nNAME=\'Debian GNU\'\nBAD LINE\nX="unterminated\n'
    ) == {"ID": "debian", "VERSION_ID": "12", "NAME": "Debian GNU"}
    (tmp_path / "usr/lib").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "usr/lib/os-release").write_text("ID=ubuntu\nVERSION_ID=24.04\n")
    (tmp_path / "etc/os-release").symlink_to("../usr/lib/os-release")
    (tmp_path / "etc/wsl-distribution.conf").write_text("[oobe]\ndefaultName = Ubuntu-24.04\n")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        assert flavor_and_version(root) == ("ubuntu", "24.04")
        assert default_name(root) == "Ubuntu-24.04"
        (tmp_path / "usr/lib/os-release").write_text("ID=x\n" + "#" * (70 * 1024))
        assert flavor_and_version(root) == (None, None)  # too large: not read at all
        (tmp_path / "etc/os-release").unlink()
        (tmp_path / "etc/os-release").symlink_to("/proc/self/environ")
        (tmp_path / "usr/lib/os-release").unlink()
        assert flavor_and_version(root) == (None, None)
    finally:
        os.close(root)


def test_reads_stay_inside_the_tree(tmp_path: Path) -> None:
    (tmp_path / "escape").symlink_to("../../../../../../etc/passwd")
    (tmp_path / "abs").symlink_to("/etc/hostname")
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        assert read_in_root(root, "/escape", 1 << 20) is None
        assert read_in_root(root, "abs", 1 << 20) is None
        assert not exists_in_root(root, "/etc")
        (tmp_path / "etc").mkdir()
        assert exists_in_root(root, "etc") and exists_in_root(root, "../../../etc")
        (tmp_path / "big").write_bytes(b"x" * 100)
        with pytest.raises(ValueError):
            read_in_root(root, "big", 99)
        assert read_in_root(root, "big", 100) == b"x" * 100
    finally:
        os.close(root)


def test_write_file_atomic_replaces_symlinks(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    (tmp_path / "hosts").symlink_to(victim)
    write_file_atomic(str(tmp_path / "hosts"), b"new\n")
    assert victim.read_text() == "keep\n"
    assert not (tmp_path / "hosts").is_symlink() and (tmp_path / "hosts").read_text() == "new\n"


def test_write_file_atomic_leaves_an_identical_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    write_file_atomic(str(path), b"same\n")
    first = path.stat()
    assert stat.S_IMODE(first.st_mode) == 0o644 and path.read_bytes() == b"same\n"
    write_file_atomic(str(path), b"same\n")
    assert path.stat().st_ino == first.st_ino  # exactly that file already: not replaced
    # Anything that differs is replaced: the content, its length, the mode, a second name.
    for second_name, data, mode in (
        (False, b"other\n", 0o644),
        (False, b"othe\n", 0o644),
        (False, b"othe\n", 0o600),
        (True, b"othe\n", 0o600),
    ):
        if second_name:
            os.link(path, tmp_path / "second")
        before = path.stat().st_ino
        write_file_atomic(str(path), data, mode)
        after = path.stat()
        assert after.st_ino != before and path.read_bytes() == data and stat.S_IMODE(after.st_mode) == mode
    assert (tmp_path / "second").read_bytes() == b"othe\n"
    # A link to a file with that very content is still replaced by a file; a FIFO is never opened.
    target = tmp_path / "target"
    target.write_bytes(b"x\n")
    target.chmod(0o644)
    path.unlink()
    path.symlink_to(target)
    write_file_atomic(str(path), b"x\n")
    assert not path.is_symlink() and path.read_bytes() == b"x\n" and target.read_bytes() == b"x\n"
    path.unlink()
    os.mkfifo(path)
    write_file_atomic(str(path), b"x\n")  # returns: a FIFO's open would wait for a writer
    assert path.is_file() and path.read_bytes() == b"x\n"


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("My_Host!.example.com-", "MyHost.examplecom"),  # one dot only, the rest dropped
        ("host.Name_1", "host.Name1"),
        ("-.-a--b-.c..d.-", "a-b-c.d"),  # no leading -/., no -- or .- or -.
        ("a.-b", "a.b"),
        ("a-.b", "a-b"),
        ("héllo wörld", "hllowrld"),
        ("___", "localhost"),
        ("", "localhost"),
        ("...---", "localhost"),
        ("a" * 63 + "-b", "a" * 63),  # cut at 64, then trailing dashes go
        ("b" * 100, "b" * 64),
    ],
)
def test_clean_hostname(name: str, cleaned: str) -> None:
    assert clean_hostname(name) == cleaned


def test_network_files() -> None:
    ipv6 = (
        "# The following lines are desirable for IPv6 capable hosts\n"
        "::1     ip6-localhost ip6-loopback\nfe00::0 ip6-localnet\nff00::0 ip6-mcastprefix\n"
        "ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n"
    )
    head = LX_INIT_AUTO_GENERATED_FILE_HEADER + "# [network]\n# generateHosts = false\n127.0.0.1\tlocalhost\n"
    assert hosts_file("box", "localdomain") == head + "127.0.1.1\tbox.localdomain\tbox\n\n" + ipv6
    assert hosts_file("box", "lan", "10.0.0.1\tserver\n") == (
        head + "127.0.1.1\tbox.lan\tbox\n10.0.0.1\tserver\n\n" + ipv6
    )
    assert "127.0.1.1\tbox.\tbox\n" in hosts_file("box", "")  # as WSL's init with no domain
    resolv = resolv_conf_file("# comment\nnameserver 1.1.1.1\nsearch  a b\nbogus line\noptions edns0\n")
    assert resolv == (
        LX_INIT_AUTO_GENERATED_FILE_HEADER
        + LX_INIT_RESOLVCONF_PREFIX
        + "nameserver 1.1.1.1\nsearch a b\noptions edns0\n"
    )


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("LANG=en_GB.UTF-8\n", "en_GB.UTF-8"),
        ('LANG="de_DE.UTF-8"\n', "de_DE.UTF-8"),
        ("LANG='C.UTF-8'\n", "C.UTF-8"),
        ("  export LANG=fr_FR.UTF-8  # set by hand\n", "fr_FR.UTF-8"),
        ("LANG=a\nLANGUAGE=en:de\nLANG=b\n", "b"),  # the last LANG= line wins
        ("# LANG=commented\nLC_ALL=C\n", None),
        ("LANG=\n", ""),
        ('LANG="un#closed"\n', '"un'),  # '#' is a comment even inside quotes
        ('LANG="unclosed\n', '"unclosed'),  # a bad quote: the text as it is
        ("LANG=a\\ b\n", "a b"),
        ('LANG="a\\$b\\x"\n', "a$b\\x"),
        ("LANG=a\\\n", "a\\"),
        ("LANG=x\0junk\nLANG=y\0\n", "y"),
        ("", None),
    ],
)
def test_language_from_locale_text(text: str, language: str | None) -> None:
    assert language_from_text(text) == language


def test_read_language_order_and_odd_files(tmp_path: Path) -> None:
    (tmp_path / "etc/default").mkdir(parents=True)
    default, conf = tmp_path / "etc/default/locale", tmp_path / "etc/locale.conf"
    root = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        assert read_language(root) is None
        conf.write_text("LANG=from_locale_conf\n")
        assert read_language(root) == "from_locale_conf"
        default.write_text("# no LANG here\n")
        assert read_language(root) is None  # the first file that opens is the one
        default.write_text("LANG=from_default\n")
        assert read_language(root) == "from_default"
        default.unlink()
        default.symlink_to("/nowhere")  # does not open: the next file
        assert read_language(root) == "from_locale_conf"
        default.unlink()
        os.mkfifo(default)  # never waited on
        assert read_language(root) is None
        default.unlink()
        default.symlink_to("../../../../../../../../etc/locale.conf")  # resolved inside the tree
        assert read_language(root) == "from_locale_conf"
        assert read_language_at(str(tmp_path)) == "from_locale_conf"
        assert read_language_at(str(tmp_path / "missing")) is None
    finally:
        os.close(root)


def test_compression_detection() -> None:
    assert compression_option(b"\x1f\x8b\x08\x00") == "--gzip"
    assert compression_option(b"\xfd7zXZ\x00") == "--xz"
    assert compression_option(b"BZh91") == "--bzip2"
    assert compression_option(b"\x28\xb5\x2f\xfd\x00") == "--zstd"
    assert compression_option(b"./etc\x00") is None
    assert compression_option(b"") is None


def test_boot_arguments() -> None:
    boot = parse_boot_arguments(
        [
            "--runtime-dir",
            "/run/pywsl/0",
            "--listen-fd",
            "4",
            "--uid-map",
            "0:100000:65536",
            "--gid-map",
            "0:100000:1000",
            "--gid-map",
            "1000:1000:1",
            "--networking-mode",
            "none",
            "--owner-uid",
            "1000",
            "--cgroup",
            "/sys/fs/cgroup/x",
            "--vm-idle-timeout",
            "-1",
        ]
    )
    assert boot.uid_map == [(0, 100000, 65536)] and boot.gid_map == [(0, 100000, 1000), (1000, 1000, 1)]
    assert boot.networking_mode == "none" and boot.vm_idle_timeout_ms == -1
    assert boot.instance_idle_timeout_ms == 15000 and boot.cgroups == ("/sys/fs/cgroup/x",)
    assert boot.boot_timeout_ms == 30000
    for bad in (
        ["--uid-map", "0:1"],
        ["--uid-map", "0:1:0"],
        ["--networking-mode", "nat"],
        ["--boot-timeout", "0"],
        ["--boot-timeout", "soon"],
    ):
        with pytest.raises(SystemExit):
            parse_boot_arguments(
                [
                    "--runtime-dir",
                    "/r",
                    "--listen-fd",
                    "3",
                    "--uid-map",
                    "0:1:1",
                    "--gid-map",
                    "0:1:1",
                    "--owner-uid",
                    "0",
                    *bad,
                ]
            )


def test_environment_lang_from_the_locale_file_in_wsl_order() -> None:
    user = PasswdEntry("alice", 1000, 1000, "", "/home/alice", "/bin/sh")
    request = ["TERM=xterm", "LANG=en_US.UTF-8", "PATH=/bin"]
    env = build_environment(request, user, distribution_name="D", hostname="h", language="de_DE.UTF-8")
    # LANG keeps its place in the request and takes the file's value; the rest follow as WSL adds them.
    assert list(env.items()) == [
        ("TERM", "xterm"),
        ("LANG", "de_DE.UTF-8"),
        ("PATH", "/bin"),
        ("NAME", "h"),
        ("WSL_DISTRO_NAME", "D"),
        ("HOME", "/home/alice"),
        ("USER", "alice"),
        ("LOGNAME", "alice"),
        ("SHELL", "/bin/sh"),
    ]
    assert build_environment(request, user, distribution_name="D", hostname="h")["LANG"] == "en_US.UTF-8"
    assert build_environment([], user, distribution_name="D", hostname="h", language="")["LANG"] == ""
    assert "LANG" not in build_environment([], user, distribution_name="D", hostname="h", language=None)
