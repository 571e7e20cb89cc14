"""wsl.exe's command line grammar, as a click command.

wsl.exe reads its arguments left to right (`WslClient.cpp`, `WslMain`): launch options (`-d`, `-u`,
`--cd`, `--shell-type`, `--distribution-id`) accumulate; a management verb (`--list`, `--import`,
...) takes the rest of the line as its own arguments; `--` ends the options and the rest is one
shell command line; `-e`/`--exec` ends them too and the rest is an argv; the first token that does
not start with `-` starts the command line, so `pywsl echo --help` runs `echo --help`. A `~` as the
very first argument means `--cd ~`, and a `{GUID}` there (before the `~`) means `--distribution-id`,
as in wsl.exe's legacy prefixes.

`WslCommand` is a `click.Group` whose subcommands are the verbs, named by their option spelling.
Its `parse_args` only finds where the launch options end, from the declared click options (which
of them take a value); click itself parses the launch options and, through the group machinery,
each verb's own arguments. Shell completion and help go through click as usual.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import click

from pywsl.cli.invocation import EXEC_TOKENS, HOME_TOKEN, STOP_TOKEN, Invocation

__all__ = [
    "EXEC_TOKENS",
    "INVOCATION",
    "STOP_TOKEN",
    "HelpOption",
    "Invocation",
    "MissingArgument",
    "Verb",
    "VerbArgument",
    "WslCommand",
    "invocation_of",
]


# How a verb reports a missing argument (see `Verb`).
MissingArgument = Literal["required_parameter", "usage", "invalid_argument"]

# Key of the parsed `Invocation` in the root context's `meta`.
INVOCATION = "pywsl.invocation"

# wsl.exe returns -1 after printing its usage; a process exit status of 255.
HELP_EXIT_STATUS = 255


def invocation_of(ctx: click.Context) -> Invocation:
    """The invocation the grammar found for this command line (stored on the root context)."""
    found = ctx.find_root().meta.get(INVOCATION)
    return found if isinstance(found, Invocation) else Invocation("shell")


def _show_help(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(ctx.get_help(), color=ctx.color)
    ctx.exit(HELP_EXIT_STATUS)


class HelpOption(click.Option):
    """`--help`: prints the usage to stdout and, like wsl.exe, exits with -1 (255)."""

    def __init__(self) -> None:
        super().__init__(
            ["--help"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_show_help,
            help="Show this message and exit.",
        )


_LEGACY_GUID = re.compile(r"\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}")


def _legacy_prefixes(args: list[str]) -> list[str]:
    """wsl.exe's `ParseLegacyArguments`: a leading `{GUID}` picks the distribution, then a `~`
    means the home folder; both become the options they stand for."""
    prefix: list[str] = []
    rest = list(args)
    if rest and _LEGACY_GUID.fullmatch(rest[0]):
        prefix += ["--distribution-id", rest.pop(0)]
    if rest[:1] == [HOME_TOKEN]:
        prefix += ["--cd", rest.pop(0)]
    return prefix + rest


@contextlib.contextmanager
def _error_context(ctx: click.Context) -> Iterator[None]:
    """Attach the context to a parsing error (click's parser raises them without one), so that the
    report can tell the top level from a verb and name the option's long spelling."""
    try:
        yield
    except click.UsageError as error:
        if error.ctx is None:
            error.ctx = ctx
        raise


class VerbArgument(click.Argument):
    """An argument wsl.exe requires but checks itself, after what comes before it: the verb gets None
    when it is missing and reports that as wsl.exe does. The help shows it as required."""

    def __init__(self, param_decls: Sequence[str], **attributes: Any) -> None:
        super().__init__(param_decls, required=False, **attributes)


def _argument_metavar(argument: click.Argument) -> str:
    text = argument.metavar or (argument.name or "").upper()
    if argument.nargs != 1:
        text = f"{text}..."
    return text if argument.required or isinstance(argument, VerbArgument) else f"[{text}]"


class Verb(click.Command):
    """A management verb (`--list`, `--import`, ...): a click command named by its option spelling.

    `aliases` are its other spellings (`-l` for `--list`). Arguments left over after the verb's own
    options are rejected as wsl.exe's ArgumentParser rejects them. `missing_argument` says what a
    missing argument is, as each of wsl.exe's verbs reports it: "required_parameter" ("Argument
    --terminate is missing a required parameter."), "usage" (WSL_E_INVALID_USAGE: the usage text) or
    "invalid_argument" (E_INVALIDARG).
    """

    def __init__(
        self,
        name: str,
        *,
        aliases: Sequence[str] = (),
        summary: str = "",
        callback: Callable[..., Any] | None = None,
        params: Sequence[click.Parameter] = (),
        help: str | None = None,
        hidden: bool = False,
        context_settings: Mapping[str, Any] | None = None,
        missing_argument: MissingArgument = "required_parameter",
    ) -> None:
        settings = {"allow_extra_args": True, **(context_settings or {})}
        super().__init__(
            name,
            callback=callback,
            params=[*params, HelpOption()],
            help=help,
            short_help=summary or None,
            hidden=hidden,
            add_help_option=False,
            context_settings=settings,
        )
        self.aliases = tuple(aliases)
        self.missing_argument = missing_argument

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with _error_context(ctx):
            rest = super().parse_args(ctx, args)
        if rest and not ctx.resilient_parsing and not ctx.ignore_unknown_options:
            raise click.NoSuchOption(rest[0], ctx=ctx)
        return rest

    def usage_pieces(self, ctx: click.Context) -> str:
        """`DISTRO DIR FILE [OPTIONS]`: the arguments in order, then the options if there are any."""
        params = self.get_params(ctx)
        pieces = [_argument_metavar(param) for param in params if isinstance(param, click.Argument)]
        if any(
            isinstance(param, click.Option) and not isinstance(param, HelpOption) and not param.hidden
            for param in params
        ):
            pieces.append("[OPTIONS]")
        return " ".join(pieces)

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [self.usage_pieces(ctx)]

    def spellings(self) -> str:
        """`--list, -l`: how the help names this verb."""
        return ", ".join([self.name or "", *self.aliases])


class WslCommand(click.Group):
    """The `pywsl` command: launch options, then a command line, `-e` argv or a verb."""

    def __init__(
        self,
        name: str,
        *,
        verbs: Sequence[Verb],
        params: Sequence[click.Parameter],
        callback: Callable[..., Any],
        help: str | None = None,
        epilog: str | None = None,
    ) -> None:
        super().__init__(
            name,
            commands={verb.name or "": verb for verb in verbs},
            params=[*params, HelpOption()],
            callback=callback,
            help=help,
            epilog=epilog,
            invoke_without_command=True,
            no_args_is_help=False,
            add_help_option=False,
            context_settings={"allow_interspersed_args": False},
        )
        self._aliases = {alias: verb.name or "" for verb in verbs for alias in verb.aliases}

    # -- verbs ------------------------------------------------------------------------------

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(self._aliases.get(cmd_name, cmd_name))

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    # -- the left-to-right reading ------------------------------------------------------------

    def _takes_value(self, ctx: click.Context) -> dict[str, bool]:
        """Every spelling of the launch options, and whether it takes a value."""
        table: dict[str, bool] = {}
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                for spelling in (*param.opts, *param.secondary_opts):
                    table[spelling] = not (param.is_flag or param.count)
        return table

    @staticmethod
    def _tokens_taken(token: str, table: Mapping[str, bool]) -> int:
        """How many tokens a launch option starting at `token` takes (itself included)."""
        if token.startswith("--") and "=" in token:
            return 1
        if token in table:
            return 2 if table[token] else 1
        return 1  # an attached short value (-dName) or an unknown option, which click rejects

    def split(self, ctx: click.Context, args: Sequence[str]) -> tuple[list[str], Invocation]:
        """Split the arguments into the launch options and what follows them."""
        table = self._takes_value(ctx)
        index = 0
        while index < len(args):
            token = args[index]
            if token == STOP_TOKEN:
                return list(args[:index]), Invocation("shell", tuple(args[index + 1 :]))
            if token in EXEC_TOKENS:
                return list(args[:index]), Invocation("exec", tuple(args[index + 1 :]))
            verb = self.get_command(ctx, token)
            if verb is not None:
                return list(args[:index]), Invocation("verb", tuple(args[index + 1 :]), verb.name)
            if not token.startswith("-") or token == "-":
                return list(args[:index]), Invocation("shell", tuple(args[index:]))
            index += self._tokens_taken(token, table)
        return list(args), Invocation("shell")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        args = _legacy_prefixes(args)
        options, invocation = self.split(ctx, args)
        ctx.meta[INVOCATION] = invocation
        with _error_context(ctx):
            if invocation.mode == "verb" and invocation.verb is not None:
                # click stops at "--"; the group then takes the verb and its arguments as a subcommand.
                return super().parse_args(ctx, [*options, STOP_TOKEN, invocation.verb, *invocation.arguments])
            return super().parse_args(ctx, options)

    # -- help -------------------------------------------------------------------------------

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The epilog's sections: a title line, then lines kept as written (indented)."""
        if not self.epilog:
            return
        for block in self.epilog.strip().split("\n\n"):
            title, _, body = block.partition("\n")
            with formatter.section(title.rstrip(":")):
                for line in body.splitlines():
                    formatter.write(f"{'':>{formatter.current_indent}}{line}\n")

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return ["[launch options]", "[--]", "[command line...]"]

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        name = ctx.command_path
        formatter.write_usage(name, "[launch options] [--] [command line...]")
        formatter.write_usage(name, "[launch options] -e|--exec PROGRAM [ARGUMENT...]", prefix="       ")
        formatter.write_usage(name, "MANAGEMENT-OPTION [OPTIONS...]", prefix="       ")

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        launch = [
            record for param in self.get_params(ctx) if (record := param.get_help_record(ctx)) is not None
        ]
        launch.insert(
            -1,
            (
                ", ".join(EXEC_TOKENS) + " PROGRAM [ARGUMENT...]",
                "Run PROGRAM with these arguments as is, without the user's shell.",
            ),
        )
        launch.insert(-1, (STOP_TOKEN, "End the options: the rest is the command line for the shell."))
        with formatter.section("Launch options"):
            formatter.write_dl(launch)
        with formatter.section("Management options"):
            verbs = [
                verb
                for name in self.list_commands(ctx)
                if isinstance(verb := self.commands[name], Verb) and not verb.hidden
            ]
            for index, verb in enumerate(verbs):
                if index:
                    formatter.write_paragraph()
                self._format_verb(ctx, verb, formatter)

    @staticmethod
    def _format_verb(ctx: click.Context, verb: Verb, formatter: click.HelpFormatter) -> None:
        verb_ctx = click.Context(verb, info_name=verb.name, parent=ctx)
        formatter.write_text(f"{verb.spellings()} {verb.usage_pieces(verb_ctx)}".rstrip())
        with formatter.indentation():
            if verb.help:
                formatter.write_text(verb.help)
            records = [
                record
                for param in verb.get_params(verb_ctx)
                if not isinstance(param, HelpOption)
                and (record := param.get_help_record(verb_ctx)) is not None
            ]
            if records:
                formatter.write_dl(records)
