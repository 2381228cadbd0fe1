"""Reading a batch script's body as a POSIX shell would, far enough to know what it runs.

A body that is one plain command (words the shell neither expands nor redirects) can become a
JobSpec's argv; anything else must run through its interpreter as a script. The test is
conservative: a `$`, a glob, a redirection or an operator outside single quotes makes the body a
script, so reading a body never changes what it does.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

#: Interpreters that run `-c TEXT`; the shells among them also have their bodies read.
SHELLS = frozenset({"sh", "bash", "zsh", "ksh", "mksh", "dash", "ash", "yash", "csh", "tcsh"})
_PYTHON = re.compile(r"^python[0-9.]*$")
#: The interpreter of a body whose script names none (PBS and LSF run such a script in the
#: user's login shell, which on the clusters that run them is bash).
DEFAULT_SHELL = ("/bin/bash",)

#: First words a shell runs itself (keywords, builtins, the usual module functions): a line
#: starting with one is shell code, never an argv a member could exec.
_SHELL_WORDS = (
    "if then else elif fi case esac for select while until do done function time coproc "
    "[[ ]] { } ! cd export source . exit exec set unset alias unalias eval ulimit umask shift "
    "return trap wait declare typeset local readonly let builtin command hash type shopt enable "
    "jobs fg bg disown suspend pushd popd dirs history logout read mapfile readarray getopts "
    "caller compgen complete bind fc times module ml conda"
)
SHELL_WORDS = frozenset(_SHELL_WORDS.split())
#: Unquoted, these make a line more than one simple command (redirections, pipes, lists...).
_OPERATORS = frozenset("<>|;&(){}")
#: Unquoted, these make the shell change a word (variables, substitutions, globs, `~`).
_EXPANSIONS = frozenset("$`*?[]~!")
_EXPANDED_IN_DOUBLE_QUOTES = frozenset("$`")
_ESCAPED_IN_DOUBLE_QUOTES = frozenset('"\\$`\n')
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Command:
    """One command of a body: its words, where they lie, and how the shell would take them."""

    words: list[str]
    #: Where each word starts in the text.
    starts: list[int]
    #: Whether the shell would change each word (a variable, a substitution, a glob).
    expands: list[bool]
    #: Whether the line is more than one simple command (a redirection, a pipe, a list).
    operators: bool
    #: The first word assigns a variable (`NAME=value program ...`).
    assigns: bool
    start: int
    end: int

    @property
    def plain(self) -> bool:
        """Every word is exactly what the shell passes on."""
        return not self.operators and not any(self.expands)

    @property
    def argv(self) -> list[str] | None:
        """The words as a program's argv, if the shell would run them as such."""
        runnable = self.plain and not self.assigns and self.words[0] not in SHELL_WORDS
        return self.words if runnable else None

    def exports(self) -> dict[str, str] | None:
        """`export NAME=value ...` with literal values as a mapping; None for other commands."""
        if not self.plain or self.words[0] != "export" or len(self.words) < 2:
            return None
        found: dict[str, str] = {}
        for item in self.words[1:]:
            name, equals, value = item.partition("=")
            if not equals or not valid_name(name):
                return None
            found[name] = value
        return found


def next_command(text: str, start: int = 0) -> Command | None:
    """The command at or after `start`, skipping blank and comment lines; None at the end."""
    position = start
    while position < len(text):
        line_end = _line_end(text, position)
        stripped = text[position:line_end].strip()
        if stripped and not stripped.startswith("#"):
            return _Lexer(text, position).command()
        position = line_end + 1
    return None


class _Lexer:
    """Splits one command into words as the shell does, noting whatever it would change."""

    def __init__(self, text: str, start: int) -> None:
        self.text = text
        self.start = start
        self.index = start
        self.words: list[str] = []
        self.starts: list[int] = []
        self.expands: list[bool] = []
        self.word: list[str] | None = None
        self.expanding = False
        self.operators = False

    def command(self) -> Command:
        text = self.text
        while self.index < len(text):
            char = text[self.index]
            if char == "\n":
                self.index += 1
                break
            if char in " \t":
                self._end_word()
                self.index += 1
            elif char == "#" and self.word is None:
                self.index = _line_end(text, self.index)
            elif char == "\\":
                self._escaped()
            elif char in "'\"":
                if not self._quoted(char):
                    self.operators = True  # an unclosed quote: the shell would fail
                    self.index = len(text)
                    break
            else:
                self.operators = self.operators or char in _OPERATORS
                self._add(char, expands=char in _EXPANSIONS)
                self.index += 1
        self._end_word()
        assigns = bool(_ASSIGNMENT.match(text[self.start :].lstrip(" \t")))
        words = self.words or [""]
        return Command(
            words,
            self.starts or [self.start],
            self.expands or [True],
            self.operators,
            assigns,
            self.start,
            self.index,
        )

    def _add(self, text: str, *, expands: bool = False) -> None:
        if self.word is None:
            self.word = []
            self.starts.append(self.index)
        self.word.append(text)
        self.expanding = self.expanding or expands

    def _end_word(self) -> None:
        if self.word is not None:
            self.words.append("".join(self.word))
            self.expands.append(self.expanding)
            self.word = None
            self.expanding = False

    def _escaped(self) -> None:
        following = self.text[self.index + 1 : self.index + 2]
        if following != "\n":  # a backslash before a newline continues the line
            self._add(following)
        self.index += 2

    def _quoted(self, quote: str) -> bool:
        """Add a quoted part to the word; False if the quote never closes."""
        text, index = self.text, self.index + 1
        self._add("")
        while index < len(text):
            char = text[index]
            if char == quote:
                self.index = index + 1
                return True
            escaped = text[index + 1 : index + 2]
            if quote == '"' and char == "\\" and escaped and escaped in _ESCAPED_IN_DOUBLE_QUOTES:
                self._add(escaped.replace("\n", ""))
                index += 2
                continue
            self._add(char, expands=quote == '"' and char in _EXPANDED_IN_DOUBLE_QUOTES)
            index += 1
        return False


def _line_end(text: str, index: int) -> int:
    end = text.find("\n", index)
    return len(text) if end < 0 else end


def nothing_after(text: str, start: int) -> bool:
    """Whether nothing but blank lines and comments follows `start`."""
    return next_command(text, start) is None


def is_shell(interpreter: list[str]) -> bool:
    return os.path.basename(interpreter[0]) in SHELLS


def takes_script(interpreter: list[str]) -> bool:
    """Whether `interpreter -c TEXT` runs TEXT (shells and python)."""
    name = os.path.basename(interpreter[0])
    return name in SHELLS or bool(_PYTHON.match(name))


def command_line(argv: list[str]) -> str:
    """`argv` as one shell line that runs exactly it (a first word holding '=' is quoted, so
    that the shell does not take it for a variable assignment)."""
    first = argv[0]
    quoted_first = shlex.quote(first)
    if "=" in first and quoted_first == first:
        quoted_first = f"'{first}'"
    return " ".join([quoted_first, *(shlex.quote(word) for word in argv[1:])])


def export_line(name: str, value: str) -> str:
    return f"export {name}={shlex.quote(value)}"


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))
