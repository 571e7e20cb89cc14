"""Smoke test of pywsl's COM client on a Windows host with WSL installed.

Run it as the Windows user whose distributions it should see: ``python tests\\windows\\smoke.py``.
It lists the distributions, reads the default one's configuration, runs ``echo`` in it, runs the
``pywsl`` command line's ``--list --verbose`` and ``--status``, and prints what worked. Nothing is
changed: no distribution is installed, converted, mounted or removed.
"""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    if sys.platform != "win32":
        print("This script needs Windows with WSL installed.")
        return 2
    import pywsl
    from pywsl.api.com import win32

    results: list[tuple[str, bool, str]] = []
    try:
        version = win32.installed_version()
        results.append(("service version", True, version))
        session = pywsl.connect()
    except pywsl.WslError as error:
        results.append(("connect", False, f"{error} ({error.error_code})"))
        return _report(results)
    with session:
        try:
            infos = session.enumerate_distributions()
            names = ", ".join(
                f"{i.name}{' (default)' if i.is_default else ''} [{i.state.name}]" for i in infos
            )
            results.append(("list distributions", True, names or "none registered"))
        except pywsl.WslError as error:
            results.append(("list distributions", False, f"{error} ({error.error_code})"))
        try:
            process = session.create_lx_process(
                None,
                ["echo", "pywsl-smoke"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = process.communicate(timeout=120)
            ok = process.returncode == 0 and out == b"pywsl-smoke\n"
            results.append(
                (
                    "echo in the default distribution",
                    ok,
                    f"exit {process.returncode}, stdout {out!r}, stderr {err!r}",
                )
            )
        except (pywsl.WslError, subprocess.TimeoutExpired) as error:
            results.append(("echo in the default distribution", False, str(error)))
        try:
            config = session.get_distribution_configuration(None)
            results.append(("default configuration", True, f"{config.name}, uid {config.default_uid}"))
        except pywsl.WslError as error:
            results.append(("default configuration", False, f"{error} ({error.error_code})"))
    for argv in (["--list", "--verbose"], ["--status"]):
        command = [sys.executable, "-m", "pywsl.cli.main", *argv]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        detail = (done.stdout + done.stderr).strip().replace("\n", " | ")
        results.append((f"pywsl {' '.join(argv)}", done.returncode == 0, detail))
    return _report(results)


def _report(results: list[tuple[str, bool, str]]) -> int:
    for step, ok, detail in results:
        print(f"[{'ok' if ok else 'FAILED'}] {step}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
