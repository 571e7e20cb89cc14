"""The README's first command, as written, on a stock Debian 12 (a fresh debootstrapped root).

The root holds nothing but what a newcomer's machine has (python3, pip, venv, git). It is entered
with new mount and pid namespaces and ``pivot_root`` (a plain ``chroot`` refuses the user
namespaces pywsl's VM needs), with its own /proc, /run, /tmp and a /dev of a few bind-mounted
nodes; the host's resolver and certificate bundle stand for the machine's network set-up. The
README's set-up command runs there as root in a copy of this checkout; then an unprivileged user
of that root runs ``pywsl --version``. Everything lives in the namespaces:
when the entered shell ends, its processes and mounts go with it. Not the cgroups: the host's
cgroup file systems are the root's too, and the end of the pid namespace kills the VM with
SIGKILL, which leaves its groups behind; so every command entered ends with ``pywsl --shutdown``
as a user's machine would, and the test checks that the root's VM left no group.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from debian_root import debootstrap

from pywsl.cgroup_tables import group_name
from pywsl.vm.cgroups import find_groups

REPOSITORY = Path(__file__).resolve().parents[1]
README = REPOSITORY / "README.md"
STOCK_PACKAGES = ("python3", "python3-pip", "python3-venv", "git", "ca-certificates")
# root's VM in the entered root: its groups are named like those of root's VM on the host.
ROOT_VM_GROUP = group_name(0, "/run/pywsl/0")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap and pivot_root need root"),
    pytest.mark.skipif(shutil.which("debootstrap") is None, reason="needs debootstrap"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

# Runs on the host inside `unshare --mount --pid --fork`: prepares the root, pivots into it and
# runs "$2" there as root with a clean environment.
ENTER = r"""
set -eu
root=$1
mount --make-rprivate /
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys"
mount -t tmpfs -o mode=0755 tmpfs "$root/dev"
for node in null zero full random urandom tty; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
mkdir "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
ln -s pts/ptmx "$root/dev/ptmx"
mount -t tmpfs -o mode=1777 tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
# The machine's network settings: its resolver and the certificates its network is trusted with.
cp /etc/resolv.conf "$root/etc/resolv.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
cd "$root"
mkdir -p .host
pivot_root . .host
umount -l /.host
rmdir /.host
cd /root/pywsl
exec env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin /bin/bash -c "$2"
"""


def readme_commands() -> list[str]:
    """The README's ``sh`` blocks in order: [set-up and run, run the tests, ...]."""
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", README.read_text(), re.DOTALL)]


def _groups_called(name: str) -> set[Path]:
    """Every cgroup called `name` in the host's cgroup hierarchies that pywsl uses."""
    return set(find_groups(lambda found: found == name))


def test_the_readme_starts_with_the_two_commands() -> None:
    setup, tests = readme_commands()[:2]
    assert "\n" not in setup and "\n" not in tests
    assert "pywsl --install" in setup and "pip install" in setup
    assert tests.endswith("-m pytest -q")
    ci = (REPOSITORY / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == tests, "CI must run exactly the README's test command"


@pytest.fixture(scope="module")
def fresh_debian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fresh-debian") / "root"
    built = debootstrap(root, include=STOCK_PACKAGES)
    assert built.returncode == 0, f"debootstrap failed:\n{built.stdout[-2000:]}\n{built.stderr[-2000:]}"
    ignore = shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".benchmarks"
    )
    shutil.copytree(REPOSITORY, root / "root" / "pywsl", ignore=ignore)
    return root


# Runs after each command entered: its VM stops the way a user stops it, not by the SIGKILL that
# ends the pid namespace, which would leave the VM's cgroups on the host.
SHUT_DOWN = """
status=$?
if command -v pywsl >/dev/null && ! pywsl --shutdown; then echo "pywsl --shutdown failed" >&2; exit 97; fi
exit $status
"""


def _enter(root: Path, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    entered = command + "\n" + SHUT_DOWN
    command_line = ["unshare", "--mount", "--pid", "--fork", "sh", "-c", ENTER, "enter", str(root), entered]
    return subprocess.run(
        command_line, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )


def test_readme_first_command_on_a_stock_debian_12(fresh_debian: Path) -> None:
    groups_before = _groups_called(ROOT_VM_GROUP)  # root's VM on the host, if one runs
    # A stock Debian 12 refuses system-wide pip installs (PEP 668): the README must not rely on one.
    refused = _enter(fresh_debian, "python3 -m pip install --dry-run click", 120)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stdout + refused.stderr

    setup = readme_commands()[0]
    result = _enter(fresh_debian, setup, 1500)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "ID=debian" in result.stdout and 'VERSION_ID="12"' in result.stdout

    check = _enter(
        fresh_debian,
        "useradd --create-home newcomer && "
        "runuser -u newcomer -- pywsl --version && "
        "runuser -u newcomer -- pywsl-service --help >/dev/null && "
        "pywsl -l -v",
        300,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "pywsl" in check.stdout.lower()
    assert "Debian" in check.stdout
    assert _groups_called(ROOT_VM_GROUP) <= groups_before, "the entered root's VM left its cgroups"
