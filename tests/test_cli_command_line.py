"""The raw command line a shell-mode launch hands the distribution's shell (`shell_command_line`)."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pywsl.cli.launch_run import shell_command_line

# Python prints the arguments it got: a stand-in for any program, run by the host's /bin/sh.
ECHO_ARGV = [sys.executable, "-S", "-c", "import sys; print(repr(sys.argv[1:]))"]


def _argv_after_the_shell(line: str) -> list[str]:
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, timeout=30, check=True)
    return list(ast.literal_eval(done.stdout))


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["echo a; exit 3"], "echo a; exit 3"),  # one argument: the line itself, as typed
        (["sh", "-c", "ls -l"], 'sh -c "ls -l"'),
        (["echo", "a  b", "$HOME"], 'echo "a  b" $HOME'),  # $ stays the shell's, as in WSL
        (["printf", "%s", ""], 'printf %s ""'),
        (["echo", 'say "hi"', "tab\there"], 'echo "say \\"hi\\"" "tab\there"'),
        (["echo", 'a"b'], 'echo "a\\"b"'),
        (["echo", "back\\slash x", "end\\"], 'echo "back\\\\slash x" end\\'),
        (["ls", "*.txt"], "ls *.txt"),  # no whitespace: raw, so the distribution's shell expands it
    ],
)
def test_the_line_is_the_raw_line_wsl_exe_would_pass(arguments: list[str], line: str) -> None:
    assert shell_command_line(arguments) == line


def test_several_arguments_keep_their_words_through_the_shell() -> None:
    arguments = [
        "ls -l",
        "",
        "a  b",
        'x"y',
        "tab\tand\nnewline",
        "semi; colon | pipe & *",
        "back\\slash too",
        "plain",
    ]
    assert _argv_after_the_shell(shell_command_line([*ECHO_ARGV, *arguments])) == arguments


PLAIN = st.text(st.sampled_from("abcXYZ019_.,/-=+:@%"), min_size=1, max_size=8)
QUOTED = st.text(st.sampled_from("ab \t\n\"'\\;|&*?()<>#~!{}[]"), max_size=12).filter(
    lambda text: not text or any(character in text for character in ' \t\n"')
)


@settings(max_examples=60, deadline=None)
@given(st.lists(PLAIN | QUOTED, min_size=1, max_size=5))
def test_plain_and_quoted_arguments_arrive_whole(arguments: list[str]) -> None:
    """Arguments without whitespace or quotes are passed raw; the others arrive as they were
    (without `$` or backquotes, which the shell expands inside double quotes, as in WSL)."""
    assert _argv_after_the_shell(shell_command_line([*ECHO_ARGV, *arguments])) == arguments
