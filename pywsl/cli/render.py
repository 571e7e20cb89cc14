"""Output of the listing verbs: wsl.exe's text, a rich table on a terminal, or JSON.

Text follows wsl.exe: `--list` prints a header and the names (the default marked "(Default)"),
`--list --verbose` a NAME / STATE / VERSION table with `*` on the default, `--list --online` NAME /
FRIENDLY NAME. When stdout is a terminal the verbose and online tables are drawn with rich (colour
unless NO_COLOR is set); when it is not, they are plain aligned text, as wsl.exe prints them.

`--format json` prints one JSON document on stdout, for scripts; its shape is stable:

* `--list` (with any of --verbose, --quiet, --running, --all): an array, default first, of
  `{"name": str, "state": "Stopped"|"Running"|"Installing"|"Uninstalling"|"Converting"|"Exporting",
  "version": 2, "default": bool, "flavor": str|null, "os_version": str|null, "id": "<uuid>"}`;
  an empty array when nothing matches (no error).
* `--list --online`: an array of `{"name": str, "friendly_name": str, "default": bool,
  "source": "manifest"|"built-in", "available": bool, "unavailable_reason": str|null}`
  (`available` false: this host cannot build that built-in distribution; the reason says why).
* `--status`: `{"default_distribution": str|null, "default_version": 2}`.

rich and json are imported only here, and only when something is rendered.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pywsl.cli import messages

__all__ = [
    "STATE_LABELS",
    "distribution_record",
    "online_record",
    "print_json",
    "print_lines",
    "print_online_table",
    "print_verbose_table",
    "state_label",
    "use_rich",
]

# LxssDistributionState values as wsl.exe --list --verbose names them (anything else: Stopped).
STATE_LABELS: Mapping[int, str] = {
    2: "Running",
    3: "Installing",
    4: "Uninstalling",
    5: "Converting",
    6: "Exporting",
}


def state_label(state: Any) -> str:
    return STATE_LABELS.get(int(state), "Stopped")


def distribution_record(info: Any) -> dict[str, Any]:
    """One entry of `--list --format json`."""
    return {
        "name": info.name,
        "state": state_label(info.state),
        "version": int(info.version),
        "default": bool(info.is_default),
        "flavor": info.flavor or None,
        "os_version": info.os_version or None,
        "id": str(info.id),
    }


def online_record(entry: Any) -> dict[str, Any]:
    """One entry of `--list --online --format json`."""
    return {
        "name": entry.name,
        "friendly_name": entry.friendly_name,
        "default": bool(entry.is_default),
        "source": entry.source,
        "available": not entry.unavailable,
        "unavailable_reason": entry.unavailable or None,
    }


def no_color() -> bool:
    """https://no-color.org: NO_COLOR set to anything but the empty string."""
    return bool(os.environ.get("NO_COLOR"))


def use_rich(stream: Any) -> bool:
    """Draw with rich only on a terminal that can show it."""
    try:
        interactive = bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
    return interactive and os.environ.get("TERM") != "dumb"


def print_lines(lines: Iterable[str]) -> None:
    """Plain output on stdout."""
    out = sys.stdout
    for line in lines:
        out.write(line + "\n")
    out.flush()


def print_json(document: Any) -> None:
    import json

    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _plain_verbose(rows: Sequence[tuple[bool, str, str, str]]) -> list[str]:
    """wsl.exe's `"%s %-<n+4>s%-16s%s"` layout."""
    width = max([len(messages.HEADER_NAME), *(len(name) for _, name, _, _ in rows)]) + 4
    lines = [f"  {messages.HEADER_NAME:<{width}}{messages.HEADER_STATE:<16}{messages.HEADER_VERSION}"]
    lines += [
        f"{'*' if default else ' '} {name:<{width}}{state:<16}{version}"
        for default, name, state, version in rows
    ]
    return lines


def print_verbose_table(distributions: Sequence[Any]) -> None:
    """`--list --verbose`."""
    rows = [
        (bool(info.is_default), info.name, state_label(info.state), str(int(info.version)))
        for info in distributions
    ]
    if not use_rich(sys.stdout):
        print_lines(_plain_verbose(rows))
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column(messages.HEADER_NAME, no_wrap=True, style="bold")
    table.add_column(messages.HEADER_STATE, no_wrap=True)
    table.add_column(messages.HEADER_VERSION, no_wrap=True, justify="right")
    for default, name, state, version in rows:
        state_text = Text(state, style="green" if state == "Running" else "")
        table.add_row("*" if default else "", Text(name), state_text, version)
    Console(no_color=no_color(), highlight=False).print(table)


def _plain_online(rows: Sequence[tuple[str, str]]) -> list[str]:
    width = max([len(messages.HEADER_NAME), *(len(name) for name, _ in rows)]) + 4
    lines = [f"{messages.HEADER_NAME:<{width}}{messages.HEADER_FRIENDLY_NAME}"]
    lines += [f"{name:<{width}}{friendly}" for name, friendly in rows]
    return lines


def print_online_table(entries: Sequence[Any]) -> None:
    """`--list --online`: the header text, then NAME / FRIENDLY NAME."""
    rows = [(entry.name, entry.friendly_name) for entry in entries]
    if not use_rich(sys.stdout):
        print_lines([messages.LIST_ONLINE_HEADER, *_plain_online(rows)])
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(no_color=no_color(), highlight=False)
    console.print(messages.LIST_ONLINE_HEADER, markup=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column(messages.HEADER_NAME, no_wrap=True, style="bold")
    table.add_column(messages.HEADER_FRIENDLY_NAME)
    for name, friendly in rows:
        table.add_row(Text(name), Text(friendly))
    console.print(table)
