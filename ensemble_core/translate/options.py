"""Command-line options as each scheduler's own parser reads them.

Slurm (getopt_long) and Flux (argparse) take `--name=value`, `--name value`, unique prefixes of
long names, `-Xvalue`, `-X value` and clustered flags (`-xv`); PBS (POSIX getopt) takes only the
short forms; LSF takes whole words (`-n 4`, `-gpu "num=1"`), each matched exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Takes = Literal["none", "required", "optional"]


@dataclass(frozen=True)
class Option:
    """One option: the name handlers match on, its spelling for messages, what it takes."""

    name: str
    spelling: str
    takes: Takes


@dataclass(frozen=True)
class Found:
    """An option as found in a line: the option, its value, and the words as written."""

    option: Option
    value: str | None
    text: str


class OptionError(ValueError):
    """A word the scheduler's parser would refuse; the message names the word."""


class Table:
    """A scheduler's options, from `name short takes` entries separated by `;` (`-` for no
    short form; an option with only a short form names it twice: `l l required`).

    `prefix` is how long names are written: `--` for Slurm and Flux, `-` for LSF.
    """

    def __init__(self, spec: str, prefix: str = "--") -> None:
        self.prefix = prefix
        self.long: dict[str, Option] = {}
        self.short: dict[str, Option] = {}
        for entry in spec.split(";"):
            if not entry.strip():
                continue
            name, short, takes = entry.split()
            option = Option(name, f"{prefix}{name}" if name != short else f"-{short}", takes)  # type: ignore[arg-type]
            if name != short:
                self.long[name] = option
            if short != "-":
                self.short[short] = option

    def getopt(self, words: list[str], *, abbreviations: bool = True) -> Iterator[Found]:
        """The options in `words` as getopt_long (or argparse) reads them."""
        index = 0
        while index < len(words):
            word = words[index]
            index += 1
            if word.startswith("--") and len(word) > 2 and self.long:
                found, index = self._long(word, words, index, abbreviations)
                yield found
            elif word.startswith("-") and len(word) > 1:
                found_here, index = self._shorts(word, words, index)
                yield from found_here
            else:
                raise OptionError(f"'{word}' is not an option")

    def leading(self, words: list[str]) -> tuple[list[Found], list[str]]:
        """The options before the first word that is not one (a launcher's program), and the
        words from that program on."""
        index = 0
        while index < len(words) and words[index].startswith("-") and words[index] != "-":
            index += 1
            if words[index - 1] == "--":
                return list(self.getopt(words[: index - 1])), words[index:]
            option = self._takes_next(words[index - 1])
            if option and index < len(words):
                index += 1
        return list(self.getopt(words[:index])), words[index:]

    def _takes_next(self, word: str) -> bool:
        """Whether `word` is an option whose value is the next word."""
        if word.startswith("--"):
            name, equals, _ = word[2:].partition("=")
            option = self.long.get(name) or self._by_prefix(name)
            return bool(option and option.takes == "required" and not equals)
        last = word[1:]
        for position, letter in enumerate(last):
            option = self.short.get(letter)
            if option is None or option.takes != "none":
                return bool(option and option.takes == "required" and position == len(last) - 1)
        return False

    def _long(
        self, word: str, words: list[str], index: int, abbreviations: bool
    ) -> tuple[Found, int]:
        name, equals, value = word[2:].partition("=")
        option = self.long.get(name) or (self._by_prefix(name) if abbreviations else None)
        if option is None:
            raise OptionError(f"unknown option --{name}")
        if option.takes == "none" and equals:
            raise OptionError(f"{option.spelling} takes no value (got '{word}')")
        if option.takes == "required" and not equals:
            if index >= len(words):
                raise OptionError(f"{option.spelling} needs a value")
            value, index = words[index], index + 1
            return Found(option, value, f"{word} {value}"), index
        return Found(option, value if equals else None, word), index

    def _by_prefix(self, name: str) -> Option | None:
        matches = {option.name: option for key, option in self.long.items() if key.startswith(name)}
        if len(matches) > 1:
            raise OptionError(f"--{name} is ambiguous ({', '.join(sorted(matches))})")
        return next(iter(matches.values()), None)

    def _shorts(self, word: str, words: list[str], index: int) -> tuple[list[Found], int]:
        """The short options of one word (`-xv`, `-N2`, `-N 2`), and where the next word is."""
        found: list[Found] = []
        for position in range(1, len(word)):
            letter = word[position]
            option = self.short.get(letter)
            if option is None:
                where = f" in '{word}'" if len(word) > 2 else ""
                raise OptionError(f"unknown option -{letter}{where}")
            if option.takes == "none":
                found.append(Found(option, None, f"-{letter}"))
                continue
            rest = word[position + 1 :]
            value = rest.removeprefix("=")
            if value or option.takes == "optional":
                found.append(Found(option, value or None, word))
            elif not rest and index < len(words):
                found.append(Found(option, words[index], f"{word} {words[index]}"))
                index += 1
            else:
                raise OptionError(f"-{letter} needs a value")
            break
        return found, index

    def words(self, words: list[str]) -> Iterator[Found]:
        """The options in `words` as LSF's bsub reads them: each a whole word, matched exactly."""
        index = 0
        while index < len(words):
            word = words[index]
            option = self.long.get(word[1:]) if word.startswith("-") else None
            if option is None and word.startswith("-"):
                raise OptionError(f"unknown option {word}")
            if option is None:
                raise OptionError(f"'{word}' is not an option")
            if option.takes == "required":
                if index + 1 >= len(words):
                    raise OptionError(f"{option.spelling} needs a value")
                yield Found(option, words[index + 1], f"{word} {words[index + 1]}")
                index += 2
            else:
                yield Found(option, None, word)
                index += 1
