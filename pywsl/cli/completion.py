"""Shell completion of distribution names (click's completion protocol).

Enable it with `eval "$(_PYWSL_COMPLETE=bash_source pywsl)"` (or `zsh_source`, `fish_source`).
Option names, verbs and their options come from the click command itself; distribution names come
from `EnumerateDistributions`. Completion never fails loudly: without a session it offers nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem

__all__ = ["complete_distribution", "distribution_names"]


def distribution_names() -> list[str]:
    """The names of the registered distributions, default first; empty if there is no session."""
    from pywsl.cli.context import open_session

    try:
        session = open_session()
    except Exception:
        return []
    try:
        distributions = session.enumerate_distributions()
        return [info.name for info in sorted(distributions, key=lambda info: not info.is_default)]
    except Exception:
        return []
    finally:
        close = getattr(session, "close", None)
        if callable(close):
            close()


def complete_distribution(
    _ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Distribution names starting with `incomplete` (case-insensitive, as names are compared)."""
    from click.shell_completion import CompletionItem

    prefix = incomplete.casefold()
    return [CompletionItem(name) for name in distribution_names() if name.casefold().startswith(prefix)]
