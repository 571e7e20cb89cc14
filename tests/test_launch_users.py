"""The relay child's decisions as pure functions: users, groups, environment, program, cwd."""

from __future__ import annotations

from pathlib import Path

import pytest

from pywsl.guest import users
from pywsl.guest.environment import (
    DEFAULT_PATH,
    ROOT_FALLBACK,
    UserNotFound,
    build_environment,
    resolve_program,
    resolve_user,
    resolve_working_directory,
)
from pywsl.guest.users import PasswdEntry, UserDatabase, parse_group_line, parse_passwd_line


def write_etc(root: Path, passwd: str, group: str = "") -> UserDatabase:
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "passwd").write_text(passwd)
    (root / "etc" / "group").write_text(group)
    return UserDatabase(str(root))


PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "# a comment\n"
    "+nisuser::::::\n"
    "broken line without colons\n"
    "bad:x:notanumber:1::/home/bad:/bin/sh\n"
    "huge:x:4294967295:1::/:/bin/sh\n"
    "alice:x:1000:1000:Alice,,,:/home/alice:/bin/zsh\n"
    "alice:x:1001:1001:second alice:/home/alice2:/bin/sh\n"
    "bob:x:1002:1002::/home/bob:\r\n"
    "nohome:x:1003:1003:::/bin/sh\n"
)
GROUP = (
    "root:x:0:\n"
    "alice:x:1000:\n"
    "sudo:x:27:alice,bob\n"
    "dup:x:1000:alice\n"
    "audio:x:29:bob,alice\n"
    "bad:x:x:alice\n"
    "tty:x:5:\n"
)


def test_passwd_lookup_like_files_backend(tmp_path: Path) -> None:
    db = write_etc(tmp_path, PASSWD, GROUP)
    alice = db.user_by_name("alice")
    assert alice == PasswdEntry("alice", 1000, 1000, "Alice,,,", "/home/alice", "/bin/zsh")  # first wins
    assert (alice2 := db.user_by_uid(1001)) is not None and alice2.home == "/home/alice2"
    assert db.user_by_name("bob") == PasswdEntry("bob", 1002, 1002, "", "/home/bob", "")  # CRLF tolerated
    assert db.user_by_name("bad") is None
    assert db.user_by_name("huge") is None  # (uid_t)-1 is not an id
    assert db.user_by_name("+nisuser") is None
    assert db.user_by_name("nobody") is None
    assert [user.name for user in db.users()] == ["root", "alice", "alice", "bob", "nohome"]


def test_group_list_is_getgrouplist(tmp_path: Path) -> None:
    db = write_etc(tmp_path, PASSWD, GROUP)
    alice = db.user_by_name("alice")
    assert alice is not None
    assert db.group_list(alice) == [1000, 27, 29]  # primary first, no duplicates, bad lines skipped
    bob = db.user_by_name("bob")
    assert bob is not None
    assert db.group_list(bob) == [1002, 27, 29]
    tty = db.group_by_name("tty")
    assert tty is not None and tty.gid == 5 and tty.members == ()


def test_missing_files_are_empty_databases(tmp_path: Path) -> None:
    db = UserDatabase(str(tmp_path))
    assert db.users() == [] and db.groups() == []
    assert db.user_by_name("root") is None


def test_line_parsers_reject_malformed_lines() -> None:
    assert parse_passwd_line("a:x:1:2:g:/h:/s") == PasswdEntry("a", 1, 2, "g", "/h", "/s")
    for line in (
        "a:x:1:2:g:/h",
        "a:x:1:2:g:/h:/s:extra",
        ":x:1:2:g:/h:/s",
        "a:x:-1:2:g:/h:/s",
        "a:x:1:٣:g:/h:/s",
    ):
        assert parse_passwd_line(line) is None, line
    group = parse_group_line("g:x:7:a,,b")
    assert group is not None and group.members == ("a", "b")
    assert parse_group_line("g:x:7") is None


def test_user_chain(tmp_path: Path) -> None:
    db = write_etc(tmp_path, PASSWD, GROUP)
    assert resolve_user(db, "bob", default_user="alice", default_uid=1000).name == "bob"
    with pytest.raises(UserNotFound):
        resolve_user(db, "nobody", default_user="alice", default_uid=1000)
    assert resolve_user(db, "", default_user="alice", default_uid=1002).uid == 1000
    # an unknown wsl.conf default falls through to DefaultUid, then the fallback uid, then root
    assert resolve_user(db, "", default_user="ghost", default_uid=1002).name == "bob"
    assert resolve_user(db, None, default_user=None, default_uid=4242, fallback_uid=1003).name == "nohome"
    assert resolve_user(db, "", default_user=None, default_uid=4242).name == "root"
    empty = UserDatabase(str(tmp_path / "nothing"))
    assert resolve_user(empty, "", default_user=None, default_uid=0) == ROOT_FALLBACK


def test_environment_order_and_overrides() -> None:
    user = PasswdEntry("alice", 1000, 1000, "", "/home/alice", "")
    env = build_environment(
        [
            "TERM=xterm",
            "HOME=/wrong",
            "LANG=C.UTF-8",
            "noequals",
            "=novalue",
            "A=1=2",
            "A=3",
            "HOSTTYPE=x86_64",
        ],
        user,
        distribution_name="Debian",
        hostname="myhost",
    )
    assert env == {
        "TERM": "xterm",
        "HOME": "/home/alice",
        "LANG": "C.UTF-8",
        "A": "3",
        "HOSTTYPE": "x86_64",
        "PATH": DEFAULT_PATH,
        "USER": "alice",
        "LOGNAME": "alice",
        "SHELL": "/bin/sh",
        "WSL_DISTRO_NAME": "Debian",
        "NAME": "myhost",
    }
    assert build_environment(["PATH=/x"], user, distribution_name="d", hostname="h")["PATH"] == "/x"


def test_program_shell_and_exec_modes() -> None:
    user = PasswdEntry("alice", 1000, 1000, "", "/home/alice", "/usr/bin/zsh")
    shell = resolve_program("", ["-c", "echo hi"], user, login=False)
    assert (shell.file, shell.argv) == ("/usr/bin/zsh", ["/usr/bin/zsh", "-c", "echo hi"])
    login = resolve_program("", [], user, login=True)
    assert (login.file, login.argv) == ("/usr/bin/zsh", ["-zsh"])
    no_shell = PasswdEntry("x", 1, 1, "", "/", "")
    assert resolve_program("", [], no_shell, login=True).argv == ["-sh"]
    exec_mode = resolve_program("ls", ["ls", "-l", ""], user, login=False)
    assert (exec_mode.file, exec_mode.argv) == ("ls", ["ls", "-l", ""])
    assert resolve_program("/bin/true", [], user, login=False).argv == ["/bin/true"]


@pytest.mark.parametrize(
    ("cwd", "expected"),
    [
        ("", "/home/a"),
        ("~", "/home/a"),
        ("~/", "/home/a/"),
        ("~/x/y", "/home/a/x/y"),
        ("/tmp", "/tmp"),
        ("/", "/"),
    ],
)
def test_working_directory_rules(cwd: str, expected: str) -> None:
    assert resolve_working_directory(cwd, "/home/a") == expected


@pytest.mark.parametrize("cwd", ["relative", "C:\\Users", "~other", "~other/x"])
def test_working_directory_rejects_non_linux_paths(cwd: str) -> None:
    with pytest.raises(ValueError, match="not a Linux path"):
        resolve_working_directory(cwd, "/home/a")


def test_home_fallback_for_empty_home() -> None:
    assert resolve_working_directory("", "") == "/"
    assert resolve_working_directory("~/d", "") == "/d"


def test_an_unchanged_database_is_not_parsed_again_and_a_changed_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = write_etc(tmp_path, "alice:x:1000:1000::/home/alice:/bin/sh\n", "staff:x:50:alice\n")
    parsed: list[str] = []
    real_parse = users.parse_passwd_line

    def counted_parse(line: str) -> PasswdEntry | None:
        parsed.append(line)
        return real_parse(line)

    monkeypatch.setattr(users, "parse_passwd_line", counted_parse)
    passwd = tmp_path / "etc" / "passwd"
    first = database.users()
    assert [user.name for user in first] == ["alice"] and len(parsed) == 1
    first.clear()  # what a caller does with its list is its own
    assert [user.name for user in database.users()] == ["alice"] and len(parsed) == 1
    assert [user.name for user in UserDatabase(str(tmp_path)).users()] == ["alice"] and len(parsed) == 1
    # The same size, written again: the change time tells.
    passwd.write_text("bobby:x:1001:1001::/home/bobby:/bin/sh\n")
    assert [user.name for user in database.users()] == ["bobby"] and len(parsed) == 2
    # Replaced by another file (a new inode), as useradd does.
    replacement = tmp_path / "etc" / "passwd.new"
    replacement.write_text("bobby:x:1001:1001::/home/bobby:/bin/sh\ncarol:x:1002:1002::/:/bin/sh\n")
    replacement.rename(passwd)
    assert [user.name for user in database.users()] == ["bobby", "carol"]
    passwd.unlink()
    assert database.users() == []
    assert database.group_by_name("staff") is not None and database.group_list(
        PasswdEntry("alice", 1000, 1000, "", "/home/alice", "/bin/sh")
    ) == [1000, 50]
