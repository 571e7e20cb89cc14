"""Attacks on the root service's own resources: descriptors, connections, threads, big answers.

Each test runs the real service as root (``python -m pywsl.api.service.server``) and attacks it from
real unprivileged users, or from ids of a user's VM range: descriptors attached to malformed
requests (the service's descriptor count before and after), a connection flood from ids of a
distribution's range (another user still served), ``accept()`` under a low ``RLIMIT_NOFILE``
(the service serves again once the connections close), a registry of 5,000 entries listed
through the service.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from multiuser_support import ServiceProcess, User, Workspace, as_user, user_env, user_folder

from pywsl.api.service import rpc
from pywsl.api.service.limits import MAX_CONNECTIONS_PER_USER
from pywsl.api.session.registry import DistributionState, Registration, RegistryData
from pywsl.vm import idmap

WAIT = 30.0


def _until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _service_fds(service: ServiceProcess) -> int:
    assert service.process is not None
    return len(os.listdir(f"/proc/{service.process.pid}/fd"))


def _get_info(path: Path) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(WAIT)
        sock.connect(str(path))
        sock.sendall(b'{"method":"org.varlink.service.GetInfo"}\0')
        data = b""
        while not data.endswith(b"\0"):
            chunk = sock.recv(65536)
            assert chunk, "the service closed the connection"
            data += chunk
    return rpc.decode_message(data[:-1])


def _run_script(
    workspace: Workspace, uid: int, gid: int, env: dict[str, str], script: str, timeout: float = 300
) -> dict[str, Any]:
    result = subprocess.run(
        [str(workspace.python), "-c", textwrap.dedent(script)],
        user=uid,
        group=gid,
        extra_groups=[],
        env=env,
        cwd="/",
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    answer: dict[str, Any] = json.loads(result.stdout.decode().splitlines()[-1])
    return answer


# The attacker's client: malformed envelopes, each carrying descriptors, answered one by one.
MALFORMED = r"""
import json, os, socket
path = os.environ["PYWSL_SERVICE_SOCKET"]
rounds = int(os.environ["ROUNDS"])
bad = [
    b"{not json\0", b"[1,2]\0", b'{"no":"method"}\0', b'"text"\0', b"\xff\xfe\0",
    b'{"method":"io.pywsl.UserSession.Nope"}\0',
    b'{"method":"io.pywsl.UserSession.GetDistributionId","parameters":{"name":5}}\0',
    b'{"method":"io.pywsl.UserSession.GetDistributionId","parameters":{"name":"x","uid":0}}\0',
    b'{"method":"io.pywsl.UserSession.ExportDistribution","parameters":{"target":7}}\0',
    b'{"method":"io.pywsl.UserSession.RegisterDistribution","parameters":{"source":"x"}}\0',
    b'{"method":"io.pywsl.UserSession.GetDefaultDistribution"}\0',
    b'{"method":"io.pywsl.UserSession.Shutdown","more":1}\0',
    b'{"method":"io.pywsl.UserSession.Shutdown","upgrade":true}\0',
    b'{"method":"io.pywsl.UserSession.Shutdown","parameters":[]}\0',
    b'{"a":1,"a":2}\0',
]
r, w = os.pipe()
carried = [r, w, 0, 1, 2]


def reply(sock):
    data = b""
    while not data.endswith(b"\0"):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    return json.loads(data[:-1])


errors = 0
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.connect(path)
for index in range(rounds):
    payload = bad[index % len(bad)]
    socket.send_fds(sock, [payload], carried[: 1 + index % len(carried)])
    answer = reply(sock)
    assert answer is not None, payload
    errors += "error" in answer
    if index % 500 == 499:
        # Truncated control data (more descriptors than a request may carry): the connection ends.
        flood = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        flood.connect(path)
        socket.send_fds(flood, [b'{"method":'], [w] * 40)
        reply(flood)
        flood.close()
        # A peer that leaves in the middle of a message, descriptors attached.
        leaving = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        leaving.connect(path)
        socket.send_fds(leaving, [b'{"method":"io.pywsl.UserSession.Shutdown"'], [r, w, r])
        leaving.close()
        # Descriptors with a request, then the client goes before the reply.
        gone = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        gone.connect(path)
        socket.send_fds(gone, [b'{"method":"io.pywsl.UserSession.GetDefaultDistribution"}\0'], [r, w])
        gone.close()
sock.close()
os.close(w)
print(json.dumps({"errors": errors}))
"""


def test_descriptors_sent_with_malformed_requests_are_all_closed(
    workspace: Workspace, service: ServiceProcess, users: tuple[User, User]
) -> None:
    attacker, _ = users
    env = user_env(workspace, attacker)
    # Warm up: the attacker's session exists before counting.
    assert "result" in as_user(workspace, attacker, {"op": "list"})
    _run_script(workspace, attacker.uid, attacker.gid, {**env, "ROUNDS": "20"}, MALFORMED)
    before = _service_fds(service)
    rounds = 3000
    answer = _run_script(workspace, attacker.uid, attacker.gid, {**env, "ROUNDS": str(rounds)}, MALFORMED)
    assert answer["errors"] >= rounds * 0.9
    _until(
        lambda: _service_fds(service) <= before + 3,
        f"the service holds {_service_fds(service)} descriptors, {before} before the attack",
    )
    assert "result" in as_user(workspace, attacker, {"op": "list"})
    assert _get_info(workspace.socket)["parameters"]["product"] == "pywsl-service"


# Connections from one id of a VM range, held until stdin closes; reports what each got.
HOLDER = r"""
import json, os, socket, sys
path = os.environ["PYWSL_SERVICE_SOCKET"]
count = int(os.environ["CONNECTIONS"])
held, served, refused, other = [], 0, 0, []


def reply(sock):
    data = b""
    while not data.endswith(b"\0"):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None
        data += chunk
    return json.loads(data[:-1])


for _ in range(count):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(30)
    sock.connect(path)
    try:
        sock.sendall(b'{"method":"org.varlink.service.GetInfo"}\0')
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused at once: the refusal is still there to read
    answer = reply(sock)
    if answer is not None and "parameters" in answer and "product" in answer["parameters"]:
        served += 1
        held.append(sock)
    elif answer is not None and answer.get("error") == "io.pywsl.TooManyConnections":
        refused += 1
        sock.close()
    else:
        other.append(answer)
        sock.close()
# A session method from an id of the range: refused, whatever the connection count.
denied = None
if held:
    held[0].sendall(b'{"method":"io.pywsl.UserSession.EnumerateDistributions"}\0')
    denied = reply(held[0])
print(json.dumps({"served": served, "refused": refused, "other": other, "denied": denied}), flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def _holding(workspace: Workspace, uid: int, gid: int, connections: int) -> Iterator[dict[str, Any]]:
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "PYWSL_SERVICE_SOCKET": str(workspace.socket),
        "CONNECTIONS": str(connections),
    }
    holder = subprocess.Popen(
        [str(workspace.python), "-c", HOLDER],
        user=uid,
        group=gid,
        extra_groups=[],
        env=env,
        cwd="/",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line, holder.stderr.read().decode() if holder.stderr else ""
        yield json.loads(line)
    finally:
        with contextlib.suppress(OSError):
            assert holder.stdin is not None
            holder.stdin.close()
        try:
            holder.wait(WAIT)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(WAIT)


def test_a_flood_from_a_vm_range_counts_against_its_owner(
    workspace: Workspace, service: ServiceProcess, users: tuple[User, User]
) -> None:
    owner, other = users
    uid_map, gid_map = idmap.maps_for_owner(owner.uid, owner.gid)
    # Ids a distribution's root can switch to: the start of the range and far into it.
    range_ids = [
        (idmap.host_id(uid_map, inside), idmap.host_id(gid_map, inside)) for inside in (0, 1001, 60000)
    ]
    assert all(uid != owner.uid for uid, _ in range_ids)
    share = MAX_CONNECTIONS_PER_USER
    first, second, third = range_ids
    with contextlib.ExitStack() as stack:
        got = [
            stack.enter_context(_holding(workspace, *first, share // 2)),
            stack.enter_context(_holding(workspace, *second, share // 2 - 1)),
            stack.enter_context(_holding(workspace, *third, 40)),
        ]
        # Every connection of the range counts as the owner's: one owner share in all.
        assert [answer["other"] for answer in got] == [[], [], []]
        assert sum(answer["served"] for answer in got) == share, got
        assert (got[2]["served"], got[2]["refused"]) == (1, 39), got
        denied = got[0]["denied"]
        assert denied["error"] == "io.pywsl.WslError" and denied["parameters"]["code"] == "E_ACCESSDENIED"
        assert str(owner.uid) in denied["parameters"]["message"]
        # The other user is served as usual; the owner's own share is what the range used.
        assert "result" in as_user(workspace, other, {"op": "list"})
        refused = as_user(workspace, owner, {"op": "list"})
        assert refused.get("error") == "E_FAIL" and "too many connections" in refused["message"]
    # Once the range lets go, the owner is served again.
    _until(lambda: "result" in as_user(workspace, owner, {"op": "list"}), "the owner was not served again")


def test_the_service_survives_descriptor_exhaustion(workspace: Workspace, users: tuple[User, User]) -> None:
    limit = 64
    sock_path = workspace.folder / "low-limit.sock"
    low = ServiceProcess(workspace)
    log_start = low.log.stat().st_size if low.log.exists() else 0

    def start_with_low_limit() -> subprocess.Popen[bytes]:
        def lower() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        with open(low.log, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "pywsl.api.service.server", "--socket", str(sock_path), "--verbose"],
                env=low.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd="/",
                preexec_fn=lower,
            )

    process = start_with_low_limit()
    held: list[socket.socket] = []
    try:
        _until(lambda: sock_path.exists() or process.poll() is not None, "the service did not start")
        assert process.poll() is None, low.log.read_text()
        assert _get_info(sock_path)["parameters"]["product"] == "pywsl-service"
        # More connections than the service has descriptors for (the backlog keeps the rest).
        for _ in range(limit + 40):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(WAIT)
            sock.connect(str(sock_path))
            held.append(sock)

        def exhausted() -> bool:
            with open(low.log, "rb") as log:
                log.seek(log_start)
                return b"cannot accept connections" in log.read()

        _until(exhausted, "the service never ran out of descriptors")
        assert process.poll() is None, "the service ended when it ran out of descriptors"
        for sock in held:
            sock.close()
        held.clear()
        # Served again: a raw call, and a real session call as an unprivileged user.
        _until(lambda: _get_info(sock_path)["parameters"]["product"] == "pywsl-service", "not served again")
        user = users[0]
        env = {**user_env(workspace, user), "PYWSL_SERVICE_SOCKET": str(sock_path)}
        answer = _run_script(
            workspace,
            user.uid,
            user.gid,
            env,
            """
            import json
            from pywsl.api.service.client import ServiceClient
            print(json.dumps({"count": len(ServiceClient().enumerate_distributions())}))
        """,
        )
        assert answer["count"] >= 0
        assert process.poll() is None
    finally:
        for sock in held:
            sock.close()
        process.terminate()
        try:
            process.wait(WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(WAIT)
    assert process.returncode == 0, low.log.read_text()


def test_a_registry_of_five_thousand_entries_is_listed_through_the_service(
    workspace: Workspace, service: ServiceProcess, users: tuple[User, User]
) -> None:
    user = users[1]
    folder = user.home / ".local" / "share" / "pywsl"
    registry = folder / "registry.json"
    count = 5000
    data = RegistryData()
    for index in range(count):
        guid = uuid.UUID(int=(1 << 100) + index)
        data.distributions[guid] = Registration(
            id=guid,
            name=f"Many{index}",
            base_path=Path(f"/nonexistent/pywsl-many/{index}"),
            state=DistributionState.INSTALLED,
            flavor="busybox",
            os_version="1",
        )
    data.default_distribution = uuid.UUID(int=1 << 100)
    user_folder(user, folder)
    previous = registry.read_bytes() if registry.exists() else None
    registry.write_text(json.dumps(data.to_json(), indent=2) + "\n")
    os.chown(registry, user.uid, user.gid)
    try:
        answer = as_user(workspace, user, {"op": "list"}, timeout=300)
        assert "result" in answer, answer
        listed = answer["result"]
        assert len(listed) == count
        assert {entry["name"] for entry in listed} == {f"Many{index}" for index in range(count)}
    finally:
        if previous is None:
            registry.unlink(missing_ok=True)
        else:
            registry.write_bytes(previous)
            os.chown(registry, user.uid, user.gid)
