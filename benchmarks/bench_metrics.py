"""The metrics: pywsl's performance goals, each measured next to its baseline.

Every timed comparison alternates pywsl and its baseline and keeps medians; ``DESCRIPTIONS``
says what each metric compares and what its goal is. Throughputs are streaming rates (first to
last output byte), so a launch's fixed cost shows in the launch metrics, not twice.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench_env import BenchEnvironment
from bench_peers import NspawnRoot, PodmanContainer
from bench_proc import (
    BenchError,
    StreamRun,
    pipe_stream,
    pipeline_bytes,
    pipeline_seconds,
    process_name,
    pss_bytes,
    pty_stream,
    run_checked,
    timed_run,
)
from bench_rootfs import remove_tree
from bench_service import ServiceUser
from bench_stats import Samples, interleave, percentile, ratio
from bench_table import Goal, Result

__all__ = ["DESCRIPTIONS", "METRICS", "Context", "Settings"]

MiB = 1 << 20
GiB = 1 << 30
WARM_GOAL = 2.5  # warm launch / `python -c pass`
COLD_GOAL = 6  # cold launch / `python -c pass`
PODMAN_GOAL = 0.3  # warm launch / `podman exec` into a running container
SERVICE_GOAL = 1.3  # warm launch through the service (a user) / as root in-process
SPREAD_GOAL = 3  # p99 / p50 of the concurrent launches
PTY_FILE = "pywsl-bench-pty.txt"


@dataclass(frozen=True)
class Settings:
    """Repetitions and sizes; ``full`` and ``quick`` are the two presets."""

    warm_repetitions: int
    cold_repetitions: int
    pipe_repetitions: int
    pty_repetitions: int
    archive_repetitions: int
    warmups: int
    pipe_bytes: int
    pty_bytes: int
    clients: int
    launches_per_client: int
    long_pipe_bytes: int

    @classmethod
    def full(cls) -> Settings:
        return cls(
            warm_repetitions=21,
            cold_repetitions=15,
            pipe_repetitions=9,
            pty_repetitions=5,
            archive_repetitions=5,
            warmups=2,
            pipe_bytes=1 << 30,
            pty_bytes=256 * MiB,
            clients=64,
            launches_per_client=20,
            long_pipe_bytes=4 << 30,
        )

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            warm_repetitions=7,
            cold_repetitions=3,
            pipe_repetitions=5,
            pty_repetitions=3,
            archive_repetitions=3,
            warmups=1,
            pipe_bytes=256 * MiB,
            pty_bytes=64 * MiB,
            clients=16,
            launches_per_client=5,
            long_pipe_bytes=1 << 30,
        )


@dataclass
class Context:
    """What every metric needs: the private pywsl, the test distribution and the baselines' tools."""

    env: BenchEnvironment
    settings: Settings
    distribution: str
    archive: Path
    host_cat: list[str]  # the baseline `cat`: the same program the distribution has
    log: Callable[[str], None]
    counter: list[int] = field(default_factory=lambda: [0])
    systemd_archive: Callable[[], Path] | None = None  # built (or taken from the cache) when first needed
    systemd_rootfs: list[Path] = field(default_factory=list)  # the systemd distribution, once imported

    def next_number(self) -> int:
        self.counter[0] += 1
        return self.counter[0]

    @property
    def rootfs(self) -> Path:
        return self.env.distribution_folder(self.distribution) / "rootfs"

    def launch_argv(self, *command: str) -> list[str]:
        return self.env.argv("-d", self.distribution, "--", *command)

    def bare_python(self) -> float:
        return timed_run([self.env.launcher.interpreter, "-c", "pass"], self.env.env)[0]


def _summaries(first: object, second: object) -> dict[str, object]:
    return {"pywsl": first, "baseline": second}


def _warm_against_python(ctx: Context, argv: list[str], metric: str, label: str) -> Result:
    """A warm launch of `argv`, alternating with the same interpreter's `python -c pass`."""
    settings = ctx.settings
    first, second = interleave(
        lambda: timed_run(argv, ctx.env.env)[0],
        ctx.bare_python,
        repetitions=settings.warm_repetitions,
        warmups=settings.warmups,
    )
    return Result(
        metric,
        label,
        "s",
        first.median,
        second.median,
        "python -c pass",
        ratio(first.median, second.median),
        Goal("max", "ratio", WARM_GOAL),
        details=_summaries(first.summary(), second.summary()),
    )


def warm_launch(ctx: Context) -> Result:
    return _warm_against_python(ctx, ctx.launch_argv("true"), "warm-launch", "warm launch `-- true`")


HOST_TRUE = "pywsl-bench-host-true"  # a name no distribution has: found in the appended host PATH


INTEROP_CALLS = 100  # calls per launch: a launch's own cost (and its noise) is spread over them


def _calls(program: str, calls: int) -> str:
    return f"i=0; while [ $i -lt {calls} ]; do {program}; i=$((i+1)); done"


def interop(ctx: Context) -> Result:
    """The host's `true` run by name from inside (interop) vs run directly on the host, per call.

    One launch runs a shell loop of ``INTEROP_CALLS`` calls of `pywsl-bench-host-true` (a link to
    the host's `true` in a folder on the caller's PATH: found in the appended host PATH, run on the
    host) through the client the launcher picks (the native one when the host could build it);
    another the same loop through the Python client (``PYWSL_INTEROP_CLIENT=python``); another
    the same loop of the distribution's own `/bin/true`. The difference per call between an
    interop loop and the own loop is what interop adds to starting a program inside (the
    distribution's own launch cost is on both sides). The baseline is the same loop of the host's
    `true` in the host's `/bin/sh`, per call. All alternate in the same run; medians. The details
    add the Python client's figure and the floor of a client that is a Python interpreter: the
    host interpreter's bare start (`-I -S -X frozen_modules=on`).
    """
    settings = ctx.settings
    calls = INTEROP_CALLS
    folder = Path(tempfile.mkdtemp(prefix="pywsl-bench-interop-"))
    try:
        folder.chmod(0o755)  # the distribution's root lists it as an unprivileged host id
        true_path = shutil.which("true") or "/bin/true"
        (folder / HOST_TRUE).symlink_to(true_path)
        env = dict(ctx.env.env, PATH=f"{ctx.env.env.get('PATH', '/usr/bin:/bin')}:{folder}")

        def inside(loop: str) -> float:
            argv = ctx.env.argv("-d", ctx.distribution, "--exec", "/bin/sh", "-c", loop)
            return timed_run(argv, env)[0] / calls

        loops = (
            _calls(HOST_TRUE, calls),
            "export PYWSL_INTEROP_CLIENT=python; " + _calls(HOST_TRUE, calls),
            _calls("/bin/true", calls),
        )
        through_interop, through_python, own_program = Samples(), Samples(), Samples()
        for round_number in range(settings.warmups + settings.warm_repetitions):
            order = [*zip(loops, (through_interop, through_python, own_program), strict=True)]
            shift = round_number % len(order)  # each loop takes each place in turn
            for loop, kept in order[shift:] + order[:shift]:
                value = inside(loop)
                if round_number >= settings.warmups:
                    kept.add(value)
        interpreter = os.path.realpath(ctx.env.launcher.interpreter)
        direct, floor = interleave(
            lambda: timed_run(["/bin/sh", "-c", _calls(true_path, calls)], env)[0] / calls,
            lambda: timed_run([interpreter, "-I", "-S", "-X", "frozen_modules=on", "-c", "pass"], env)[0],
            repetitions=settings.warm_repetitions,
            warmups=settings.warmups,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    added = max(0.0, through_interop.median - own_program.median)
    added_python = max(0.0, through_python.median - own_program.median)
    return Result(
        "interop",
        "host `true` by name from inside, beyond `/bin/true` inside, per call",
        "s",
        added,
        direct.median,
        "host true",
        ratio(added, direct.median),
        Goal("max", "ratio", 3),
        details={
            "calls_per_launch": calls,
            "interop_call": through_interop.summary(),
            "python_client_call": through_python.summary(),
            "python_client_added_s": added_python,
            "python_client_ratio": ratio(added_python, direct.median),
            "own_call": own_program.summary(),
            "host_true": direct.summary(),
            "python_floor": floor.summary(),
        },
    )


def cold_launch(ctx: Context) -> Result:
    settings = ctx.settings
    argv = ctx.launch_argv("true")

    def cold() -> float:
        ctx.env.shutdown()
        return timed_run(argv, ctx.env.env)[0]

    first, second = interleave(cold, ctx.bare_python, repetitions=settings.cold_repetitions, warmups=1)
    return Result(
        "cold-launch",
        "cold launch `-- true` (no VM)",
        "s",
        first.median,
        second.median,
        "python -c pass",
        ratio(first.median, second.median),
        Goal("max", "ratio", COLD_GOAL),
        details=_summaries(first.summary(), second.summary()),
    )


def _stream_details(runs: list[StreamRun], payload: int) -> dict[str, float]:
    totals = sorted(run.total_seconds for run in runs)
    median_total = totals[len(totals) // 2]
    return {"median_total_seconds": median_total, "end_to_end_MiB_per_s": payload / median_total / MiB}


# The host's `cat` with the room pywsl gives the pipes a launch is passed (`relay.give_room`), for
# context: what the room alone is worth, beside the scheduling group the VM's process runs in.
PASSED_PIPE_ROOM = 256 * 1024  # as `pywsl.guest.relay.PASSED_PIPE_ROOM` (a test holds them equal)
_WITH_ROOM = (
    "import fcntl, os, sys\n"
    "for fd in (0, 1):\n"
    "    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, int(sys.argv[1]))\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _with_room(ctx: Context) -> list[str]:
    """The host's `cat` started with `PASSED_PIPE_ROOM` in its stdin and stdout pipes."""
    return [ctx.env.launcher.interpreter, "-c", _WITH_ROOM, str(PASSED_PIPE_ROOM), *ctx.host_cat]


def pipe(ctx: Context) -> Result:
    settings = ctx.settings
    total = settings.pipe_bytes
    argv = ctx.launch_argv("cat")
    pywsl_runs: list[StreamRun] = []
    plain_runs: list[StreamRun] = []

    def through(command: list[str], runs: list[StreamRun]) -> Callable[[], float]:
        def measure() -> float:
            run = pipe_stream(command, ctx.env.env, total)
            runs.append(run)
            return run.steady_rate(total) / MiB

        return measure

    roomy_runs: list[StreamRun] = []
    host = through(ctx.host_cat, plain_runs)
    with_room = through(_with_room(ctx), roomy_runs)

    def host_and_with_room() -> float:
        with_room()
        return host()

    warmups = 1
    first, second = interleave(
        through(argv, pywsl_runs),
        host_and_with_room,
        repetitions=settings.pipe_repetitions,
        warmups=warmups,
    )
    roomy = Samples()
    for run in roomy_runs[warmups:]:
        roomy.add(run.steady_rate(total) / MiB)
    details = _summaries(first.summary(), second.summary())
    details["host_cat_with_room"] = roomy.summary()
    pywsl_end_to_end = _stream_details(pywsl_runs, total)
    plain_end_to_end = _stream_details(plain_runs, total)
    details["pywsl_end_to_end"] = pywsl_end_to_end
    details["baseline_end_to_end"] = plain_end_to_end
    end_to_end = pywsl_end_to_end["end_to_end_MiB_per_s"] / plain_end_to_end["end_to_end_MiB_per_s"]
    return Result(
        "pipe",
        f"pipe throughput `-- cat` ({total // MiB} MiB)",
        "MiB/s",
        first.median,
        second.median,
        "cat",
        ratio(first.median, second.median),
        Goal("min", "ratio", 0.95),
        note=(
            f"streaming rate (first to last byte); end to end with the launch: {end_to_end:.2f}x; "
            f"the host's cat with the same pipe room: {roomy.median:.0f} MiB/s "
            f"({ratio(first.median, roomy.median):.2f}x)"
        ),
        details=details,
    )


def _write_text_file(path: Path, size: int) -> None:
    line = b"pywsl terminal throughput: the quick brown fox jumps over the lazy dog 0123456\n"
    block = (line * (MiB // len(line) + 1))[:MiB]
    with open(path, "wb") as file:
        written = 0
        while written < size:
            piece = block[: min(len(block), size - written)]
            file.write(piece)
            written += len(piece)
    os.chmod(path, 0o644)


def pty(ctx: Context) -> Result:
    settings = ctx.settings
    size = settings.pty_bytes
    host_file = ctx.rootfs / PTY_FILE
    _write_text_file(host_file, size)
    try:
        argv = ctx.launch_argv("cat", f"/{PTY_FILE}")
        plain = [*ctx.host_cat, str(host_file)]
        first, second = interleave(
            lambda: size / pty_stream(argv, ctx.env.env, size).stream_seconds / MiB,
            lambda: size / pty_stream(plain, ctx.env.env, size).stream_seconds / MiB,
            repetitions=settings.pty_repetitions,
            warmups=1,
        )
    finally:
        host_file.unlink()
    return Result(
        "pty",
        f"PTY throughput `-- cat` ({size // MiB} MiB)",
        "MiB/s",
        first.median,
        second.median,
        "plain PTY",
        ratio(first.median, second.median),
        Goal("min", "value", 500, "MiB/s"),
        details=_summaries(first.summary(), second.summary()),
    )


def podman(ctx: Context) -> Result:
    """The warm launch next to `podman exec` into a running container of the same archive."""
    settings = ctx.settings
    argv = ctx.launch_argv("true")
    with PodmanContainer(ctx.env.scratch / "podman", ctx.archive, ctx.env.env, ctx.log) as container:
        peer = container.exec_argv("true")
        first, second = interleave(
            lambda: timed_run(argv, ctx.env.env)[0],
            lambda: timed_run(peer, ctx.env.env)[0],
            repetitions=settings.warm_repetitions,
            warmups=settings.warmups,
        )
    return Result(
        "podman",
        "warm launch `-- true` vs podman exec",
        "s",
        first.median,
        second.median,
        "podman exec",
        ratio(first.median, second.median),
        Goal("max", "ratio", PODMAN_GOAL),
        details=_summaries(first.summary(), second.summary()),
    )


def nspawn(ctx: Context) -> Result:
    """The warm launch next to a one-shot `systemd-nspawn` container of the same archive (figures)."""
    settings = ctx.settings
    argv = ctx.launch_argv("true")
    with NspawnRoot(ctx.env.scratch / "nspawn", ctx.archive, ctx.env.env, ctx.log) as root:
        peer = root.run_argv("/bin/true")
        first, second = interleave(
            lambda: timed_run(argv, ctx.env.env)[0],
            lambda: timed_run(peer, ctx.env.env)[0],
            repetitions=settings.warm_repetitions,
            warmups=settings.warmups,
        )
    return Result(
        "nspawn",
        "warm launch `-- true` vs systemd-nspawn",
        "s",
        first.median,
        second.median,
        "systemd-nspawn",
        ratio(first.median, second.median),
        note="a peer for context: one container per command",
        details=_summaries(first.summary(), second.summary()),
    )


def service(ctx: Context) -> Result:
    """A warm launch by an unprivileged user through the root service, next to the same launch by
    root in-process (both warm, both started through setpriv)."""
    settings = ctx.settings
    with ServiceUser(ctx.env, ctx.archive, ctx.log) as user:
        through = user.user_argv("-d", "pywsl-bench-user", "--", "true")
        in_process = user.root_argv("-d", ctx.distribution, "--", "true")
        timed_run(through, user.user_env)  # the user's VM and distribution are up
        timed_run(in_process, ctx.env.env)
        first, second = interleave(
            lambda: timed_run(through, user.user_env)[0],
            lambda: timed_run(in_process, ctx.env.env)[0],
            repetitions=settings.warm_repetitions,
            warmups=settings.warmups,
        )
    return Result(
        "service",
        "warm launch through the service (a user)",
        "s",
        first.median,
        second.median,
        "root in-process",
        ratio(first.median, second.median),
        Goal("max", "ratio", SERVICE_GOAL),
        details=_summaries(first.summary(), second.summary()),
    )


def long_pipe(ctx: Context) -> Result:
    """`head -c 4G /dev/zero | pywsl -d D -- cat | cat >/dev/null`, end to end, launch included,
    run by bash as typed, against the same pipeline with the host's `cat` in the middle."""
    settings = ctx.settings
    total = settings.long_pipe_bytes
    argv = ctx.launch_argv("cat")
    with_room = _with_room(ctx)
    for middle in (argv, ctx.host_cat, with_room):
        passed = pipeline_bytes(middle, ctx.env.env, total)
        if passed != total:
            raise BenchError(f"`{' '.join(middle)}` passed {passed} of {total} bytes")
    roomy = Samples()

    def host() -> float:
        roomy.add(total / pipeline_seconds(with_room, ctx.env.env, total) / MiB)
        return total / pipeline_seconds(ctx.host_cat, ctx.env.env, total) / MiB

    first, second = interleave(
        lambda: total / pipeline_seconds(argv, ctx.env.env, total) / MiB,
        host,
        repetitions=settings.pipe_repetitions,
        warmups=0,
    )
    details = _summaries(first.summary(), second.summary())
    details["host_cat_with_room"] = roomy.summary()
    return Result(
        "long-pipe",
        f"`-- cat` end to end ({total // GiB} GiB)",
        "MiB/s",
        first.median,
        second.median,
        "cat",
        ratio(first.median, second.median),
        Goal("min", "ratio", 0.95),
        note=(
            "whole pipeline, the launch included; the host's cat with the same pipe room: "
            f"{roomy.median:.0f} MiB/s ({ratio(first.median, roomy.median):.2f}x)"
        ),
        details=details,
    )


def _sync() -> None:
    os.sync()


def import_(ctx: Context) -> Result:
    settings = ctx.settings
    env = ctx.env

    def through_pywsl() -> float:
        name = f"pywsl-bench-import-{ctx.next_number()}"
        seconds = timed_run(
            env.argv("--import", name, str(env.distribution_folder(name)), str(ctx.archive)), env.env
        )[0]
        env.registered.append(name)
        env.unregister(name)
        _sync()
        return seconds

    def through_tar() -> float:
        target = env.scratch / f"tar-x-{ctx.next_number()}"
        target.mkdir()
        seconds = timed_run(["tar", "-xzf", str(ctx.archive), "-C", str(target)], env.env)[0]
        remove_tree(target)
        _sync()
        return seconds

    _sync()
    first, second = interleave(
        through_pywsl, through_tar, repetitions=settings.archive_repetitions, warmups=0
    )
    return Result(
        "import",
        f"--import {ctx.archive.name}",
        "s",
        first.median,
        second.median,
        "tar -xzf",
        ratio(first.median, second.median),
        Goal("max", "ratio", 1.2),
        details=_summaries(first.summary(), second.summary()),
    )


def export(ctx: Context) -> Result:
    settings = ctx.settings
    env = ctx.env
    sizes: dict[str, int] = {}

    def through(label: str, command: Callable[[Path], list[str]]) -> Callable[[], float]:
        def measure() -> float:
            output = env.scratch / f"export-{ctx.next_number()}.tar.gz"
            seconds = timed_run(command(output), env.env)[0]
            sizes[label] = output.stat().st_size
            output.unlink()
            _sync()
            return seconds

        return measure

    _sync()
    first, second = interleave(
        through("pywsl", lambda out: env.argv("--export", ctx.distribution, str(out), "--format", "tar.gz")),
        through("tar", lambda out: ["tar", "-czf", str(out), "-C", str(ctx.rootfs), "."]),
        repetitions=settings.archive_repetitions,
        warmups=0,
    )
    details = _summaries(first.summary(), second.summary())
    details["archive_bytes"] = sizes
    return Result(
        "export",
        "--export --format tar.gz",
        "s",
        first.median,
        second.median,
        "tar -czf",
        ratio(first.median, second.median),
        Goal("max", "ratio", 1.2),
        details=details,
    )


def _settled_processes(env: BenchEnvironment, quiet: float = 1.0, limit: float = 15.0) -> set[int]:
    """The VM's processes once the set has not changed for ``quiet`` seconds (relays gone)."""
    deadline = time.monotonic() + limit
    current = env.vm_processes()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = env.vm_processes()
        if now != current:
            current, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            break
    return current


def memory(ctx: Context) -> Result:
    timed_run(ctx.launch_argv("true"), ctx.env.env)  # the VM and the distribution are up
    processes = _settled_processes(ctx.env)
    if not processes:
        raise BenchError("no VM process found through the runtime folder's pid file")
    listing: list[dict[str, int | str]] = []
    total = 0
    for pid in sorted(processes):
        size = pss_bytes(pid)
        if size is None:
            continue
        total += size
        listing.append({"pid": pid, "name": process_name(pid), "pss_kib": size // 1024})
    names = ", ".join(f"{item['name']} {int(item['pss_kib']) / 1024:.1f}" for item in listing)
    return Result(
        "memory",
        "memory: PSS, VM + 1 idle distribution",
        "MB",
        total / 1e6,
        goal=Goal("max", "value", 40, "MB"),
        note=f"{len(listing)} processes (MiB): {names}",
        details={"processes": listing},
    )


def concurrency(ctx: Context) -> Result:
    settings = ctx.settings
    clients, per_client = settings.clients, settings.launches_per_client
    argv = ctx.launch_argv("true")
    timed_run(argv, ctx.env.env)  # the VM and the distribution are up
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client() -> None:
        barrier.wait()
        for _ in range(per_client):
            seconds, code, message = timed_run(argv, ctx.env.env, check=False, timeout=120)
            with lock:
                if code == 0:
                    latencies.append(seconds)
                else:
                    failures.append(f"exit {code}: {message[-300:]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if not latencies:
        raise BenchError(f"every launch failed, e.g. {failures[0] if failures else '?'}")
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    spread = ratio(p99, p50)
    goal = Goal("max", "ratio", SPREAD_GOAL, text=f"0 failed, p99 <= {SPREAD_GOAL}x p50")
    note = (
        f"{clients * per_client} launches in {wall:.1f} s ({clients * per_client / wall:.1f}/s), "
        f"{len(failures)} failed"
    )
    if failures:
        note += f"; first failure: {failures[0]}"
    return Result(
        "concurrency",
        f"{clients} clients x {per_client} launches: p99",
        "s",
        p99,
        p50,
        "p50",
        spread,
        goal,
        passed=not failures and spread <= SPREAD_GOAL,
        note=note,
        details={
            "p50": p50,
            "p90": percentile(latencies, 90),
            "p99": p99,
            "max": max(latencies),
            "failures": len(failures),
            "wall_seconds": wall,
        },
    )


SYSTEMD_DISTRIBUTION = "pywsl-bench-systemd"


def _systemd_rootfs(ctx: Context) -> Path:
    """The Debian + systemd distribution, imported once per run; its root filesystem on the host."""
    if not ctx.systemd_rootfs:
        if ctx.systemd_archive is None:
            raise BenchError("the systemd metrics need the Debian systemd archive (not with --archive)")
        archive = ctx.systemd_archive()
        ctx.log(f"importing {archive.name} as {SYSTEMD_DISTRIBUTION}")
        ctx.systemd_rootfs.append(ctx.env.import_distribution(SYSTEMD_DISTRIBUTION, archive) / "rootfs")
    return ctx.systemd_rootfs[0]


def _set_systemd(rootfs: Path, enabled: bool) -> None:
    """``/etc/wsl.conf`` with ``[boot] systemd`` on or off, owned as the rest of ``/etc``."""
    conf = rootfs / "etc/wsl.conf"
    conf.write_text(f"[boot]\nsystemd = {'true' if enabled else 'false'}\n")
    folder = os.stat(rootfs / "etc")
    os.chown(conf, folder.st_uid, folder.st_gid)
    os.chmod(conf, 0o644)


def _require_systemd(ctx: Context) -> None:
    """BenchError unless the systemd distribution (started now if stopped) runs systemd as pid 1."""
    comm = run_checked(ctx.env.argv("-d", SYSTEMD_DISTRIBUTION, "--", "cat", "/proc/1/comm"), ctx.env.env)
    if comm.strip() != "systemd":
        raise BenchError(f"{SYSTEMD_DISTRIBUTION} started without systemd as pid 1 (it is {comm.strip()!r})")


def systemd_cold(ctx: Context) -> Result:
    """Cold start to the first command with systemd as pid 1, next to the same distribution without.

    The difference of the medians is the part spent starting systemd and waiting until
    ``systemctl is-system-running`` says running/degraded (init waits for it before it answers).
    """
    settings = ctx.settings
    rootfs = _systemd_rootfs(ctx)
    argv = ctx.env.argv("-d", SYSTEMD_DISTRIBUTION, "--", "true")
    _set_systemd(rootfs, True)
    ctx.env.shutdown()
    _require_systemd(ctx)

    def cold(enabled: bool) -> Callable[[], float]:
        def measure() -> float:
            _set_systemd(rootfs, enabled)
            ctx.env.shutdown()
            return timed_run(argv, ctx.env.env)[0]

        return measure

    with_systemd, without = interleave(
        cold(True), cold(False), repetitions=settings.cold_repetitions, warmups=1
    )
    waiting = with_systemd.median - without.median
    share = waiting / with_systemd.median if with_systemd.median > 0 else 0.0
    return Result(
        "systemd-cold",
        "cold launch `-- true`, [boot] systemd=true",
        "s",
        with_systemd.median,
        without.median,
        "systemd=false",
        ratio(with_systemd.median, without.median),
        note=f"waiting for systemd: {waiting * 1000:.0f} ms ({share:.0%} of the cold start)",
        details={**_summaries(with_systemd.summary(), without.summary()), "systemd_wait_seconds": waiting},
    )


def systemd_warm(ctx: Context) -> Result:
    """The warm launch into a distribution whose pid 1 is systemd: the warm-launch goal."""
    rootfs = _systemd_rootfs(ctx)
    _set_systemd(rootfs, True)
    ctx.env.run("--terminate", SYSTEMD_DISTRIBUTION)  # the next start reads the new wsl.conf
    _require_systemd(ctx)
    argv = ctx.env.argv("-d", SYSTEMD_DISTRIBUTION, "--", "true")
    return _warm_against_python(ctx, argv, "systemd-warm", "warm launch `-- true`, systemd as pid 1")


# Run order: the memory figure right after the warm launches (the VM and one idle distribution),
# the archive metrics after the streaming ones, the cold launches (which stop the VM) last, the
# systemd distribution (a second archive, imported when first needed) after them.
METRICS: dict[str, Callable[[Context], Result]] = {
    "warm-launch": warm_launch,
    "memory": memory,
    "podman": podman,
    "nspawn": nspawn,
    "service": service,
    "interop": interop,
    "pipe": pipe,
    "long-pipe": long_pipe,
    "pty": pty,
    "concurrency": concurrency,
    "import": import_,
    "export": export,
    "cold-launch": cold_launch,
    "systemd-warm": systemd_warm,
    "systemd-cold": systemd_cold,
}

DESCRIPTIONS: dict[str, str] = {
    "warm-launch": "`pywsl -d D -- true` with the VM running vs `<interpreter> -c pass` (goal <= 2.5x)",
    "podman": "`pywsl -d D -- true` vs `podman exec` into a running container of the archive (goal <= 0.3x)",
    "nspawn": "`pywsl -d D -- true` vs a one-shot `systemd-nspawn` container of the archive (figures only)",
    "service": "`pywsl -d D -- true` by a user through the service vs by root in-process (goal <= 1.3x)",
    "memory": "PSS of the VM's processes with one idle distribution (goal <= 40 MB)",
    "interop": "per call inside: host `true` by name minus `/bin/true`, vs the host's `true` (goal <= 3x)",
    "pipe": "`pywsl -d D -- cat` on a 1 GiB stream vs the host's cat (goal >= 0.95x)",
    "long-pipe": "4 GiB through `pywsl -d D -- cat`, end to end, vs the host's cat (goal >= 0.95x)",
    "pty": "`cat` of a 256 MiB file in a terminal session, plain PTY for context (goal >= 500 MiB/s)",
    "concurrency": "64 clients x 20 launches at once (goal: 0 failed, p99 <= 3x p50)",
    "import": "`pywsl --import` of the archive vs `tar -xzf` (goal <= 1.2x)",
    "export": "`pywsl --export --format tar.gz` vs `tar -czf` of the same tree (goal <= 1.2x)",
    "cold-launch": "`pywsl -d D -- true` with no VM running vs `<interpreter> -c pass` (goal <= 6x)",
    "systemd-warm": "`pywsl -d D -- true` into Debian with systemd as pid 1 vs `<interpreter> -c pass` "
    "(goal <= 2.5x)",
    "systemd-cold": "`pywsl -d D -- true` with no VM, Debian with [boot] systemd=true vs false (the "
    "difference: waiting for systemd; figures only)",
}
