"""What every batch script shares: a `#!` line, directive lines, then a body.

Reading: the directives (until the first command, as the schedulers read them) fill a JobSpec's
resources; the body becomes its command. A body of one plain command becomes the argv, and one
started by a launcher (`srun`, `flux run`, `mpiexec`) the argv the launcher runs once per task;
any other body runs as `<interpreter> -c <body>`, once for the whole job. Leading
`export NAME=value` lines become the environment. Writing does the reverse, so that a JobSpec
written and read back is the same JobSpec wherever the format can carry it.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ensemble_core.errors import ConfigError
from ensemble_core.spec import JobSpec
from ensemble_core.translate import BATCH, Translation, documents
from ensemble_core.translate.options import Found, OptionError, Table
from ensemble_core.translate.shell import (
    DEFAULT_SHELL,
    Command,
    command_line,
    export_line,
    is_shell,
    next_command,
    nothing_after,
    takes_script,
    valid_name,
)

#: RFC 26 dependency schemes and the names Slurm and PBS give them.
SCHEMES = {
    "after": "afterstart",
    "afterok": "afterok",
    "afternotok": "afternotok",
    "afterany": "afterany",
}
SCHEME_NAMES = {scheme: name for name, scheme in SCHEMES.items()}

#: Lines of a body that start another scheduler's tasks.
_LAUNCHERS = re.compile(
    r"^\s*(?:exec\s+)?(srun|flux\s+run|flux\s+submit|jsrun|aprun)\b", re.MULTILINE
)

#: Variables a scheduler sets for its batch scripts, by their prefix.
_VARIABLES = re.compile(r"\$\{?((?:SLURM|PBS|LSB|FLUX)_[A-Z0-9_]+)")
_FAMILIES = {"SLURM": "Slurm", "PBS": "PBS", "LSB": "LSF", "FLUX": "Flux"}

#: A launcher: given the words of a body's one command and the job read so far, where the
#: program it runs on every task starts and what of its options the job does not carry; None
#: when the words are not that launcher's (or use options it does not know).
Launcher = Callable[[list[str], "Reading"], "tuple[int, list[str]] | None"]


@dataclass
class Script:
    """A script split as its scheduler splits it."""

    source: str
    interpreter: list[str] | None
    #: (line number, text after the sentinel) of each directive the scheduler reads.
    directives: list[tuple[int, str]]
    #: Directives after the first command: the scheduler ignores them.
    late: list[int]
    body: str
    body_line: int


def split(text: str, source: str, sentinel: re.Pattern[str], *, continued: bool = False) -> Script:
    """Split `text` at its directives (`sentinel` captures what follows the sentinel as `rest`).

    `continued`: a directive ending in a backslash continues on the next line (PBS).
    """
    text = text.replace("\r\n", "\n")  # as Python reads a file: DOS line breaks are read
    lines = text.split("\n")
    interpreter = _interpreter(lines[0]) or None if lines[0].startswith("#!") else None
    directives: list[tuple[int, str]] = []
    late: list[int] = []
    body_start: int | None = None
    offset = 0
    number = 0
    while number < len(lines):
        line = lines[number]
        match = sentinel.match(line) if number or interpreter is None else None
        first = number + 1
        if match and body_start is None:
            rest = match["rest"]
            while continued and rest.endswith("\\") and number + 1 < len(lines):
                offset += len(lines[number]) + 1
                number += 1
                rest = rest[:-1] + lines[number]
            directives.append((first, rest))
        elif match:
            late.append(first)
        elif body_start is None and line.strip() and not line.lstrip().startswith("#"):
            body_start = offset
        offset += len(lines[number]) + 1
        number += 1
    body = text[body_start:] if body_start is not None else ""
    body_line = text.count("\n", 0, body_start) + 1 if body_start is not None else len(lines)
    return Script(source, interpreter, directives, late, body.removesuffix("\n"), body_line)


def _interpreter(line: str) -> list[str]:
    """The interpreter of a `#!` line; `#!/usr/bin/env bash` is `bash`, found on PATH."""
    words = line[2:].split()
    if len(words) > 1 and os.path.basename(words[0]) == "env":
        words = words[2:] if words[1] == "-S" else words[1:]
    return words


@dataclass
class Reading:
    """A JobSpec being read from a script: its fields so far, what was lost, where we are."""

    source: str
    dialect: str
    fields: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, str] = field(default_factory=dict)
    lost: list[str] = field(default_factory=list)
    line: int = 1

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}:{self.line}: {message}")

    def lose(self, what: str, why: str) -> None:
        self.lost.append(f"line {self.line}: {what} ({why})")

    def directives(
        self,
        script: Script,
        split_words: Callable[[str], list[str]],
        parse: Callable[[list[str]], Iterator[Found]],
        apply: Callable[[Reading, Found], None],
    ) -> None:
        """Apply every directive of `script`; the first bad one is a ConfigError at its line."""
        for line, text in script.directives:
            self.line = line
            try:
                words = split_words(text)
            except ValueError as error:
                raise self.error(f"cannot split the directive into words: {error}") from None
            try:
                for found in parse(words):
                    apply(self, found)
            except (OptionError, ValueError) as error:
                raise self.error(str(error)) from None
        for line in script.late:
            self.line = line
            self.lose(
                "a directive after the first command",
                f"{self.dialect} reads directives only before the script's first command",
            )

    def settle(
        self, finish: Callable[[Reading, dict[str, Any]], None], state: dict[str, Any]
    ) -> None:
        """Run a dialect's `finish` (what needs every directive first); its ValueError is a
        ConfigError at the line it was reading."""
        try:
            finish(self, state)
        except ValueError as error:
            raise self.error(str(error)) from None

    def body(
        self,
        script: Script,
        launchers: list[Launcher],
        workdir_variable: str | None = None,
    ) -> None:
        """The command (and any leading exports) from the script's body."""
        self.line = script.body_line
        interpreter = script.interpreter or list(DEFAULT_SHELL)
        if not takes_script(interpreter):
            self.line = 1
            raise self.error(
                f"a script for {shlex.join(interpreter)} cannot be carried: only a shell or "
                "python runs a body given as `-c TEXT`"
            )
        body = parse_body(script.body, interpreter, workdir_variable)
        if body.command is None and not body.rest.strip():
            raise self.error("the script runs no command: nothing follows its directives")
        self.environment.update(body.environment)
        if body.cwd is not None:
            self.fields["cwd"] = body.cwd
        launched = self._launched(body, launchers, interpreter)
        if launched is not None:
            self.fields["command"] = launched
            return
        self.fields["command"] = body.command or [*interpreter, "-c", body.rest]
        if self.fields.get("tasks", 1) > 1:
            self.attributes[BATCH] = True

    def _launched(
        self, body: Body, launchers: list[Launcher], interpreter: list[str]
    ) -> list[str] | None:
        """The command a one-line body's launcher runs on every task: its program's argv, or
        the shell running the rest of the line where that has a variable to expand."""
        single = body.single
        if single is None or single.operators or single.assigns:
            return None
        for launcher in launchers:
            found = launcher(single.words, self)
            if found is None or any(single.expands[: found[0]]):
                continue
            index, notes = found
            for note in notes:
                self.lose(*note.split("\0"))
            if not any(single.expands[index:]):
                return single.words[index:]
            return [*interpreter, "-c", body.text[single.starts[index] : single.end].rstrip()]
        return None

    def translation(self) -> Translation:
        """The JobSpec read, or a ConfigError if its fields do not make a valid one."""
        try:
            spec = JobSpec(**self.fields, environment=self.environment, attributes=self.attributes)
        except ValidationError as error:
            what = documents.problem(error)[1]
            raise ConfigError(
                f"{self.source}:1: the job it describes is not valid: {what}"
            ) from None
        return Translation(document=spec, lost=self.lost)


@dataclass
class Body:
    """A body as the reader sees it: leading exports (and `cd`), then one argv or a script."""

    environment: dict[str, str]
    cwd: str | None
    #: The argv of a body of one plain command; None for any other body.
    command: list[str] | None
    #: The body from its first command on (after the exports), verbatim.
    rest: str
    #: The body's command when it is one command (plain or not), and the text it lies in.
    single: Command | None = None
    text: str = ""


def parse_body(text: str, interpreter: list[str], workdir_variable: str | None) -> Body:
    """Read `text` as the reader does. `workdir_variable` (PBS: `PBS_O_WORKDIR`): a first line
    `cd DIR` gives the working directory, and `cd $PBS_O_WORKDIR` means the submission's own."""
    if not is_shell(interpreter):
        return Body({}, None, None, text)
    environment: dict[str, str] = {}
    cwd = None
    command = next_command(text)
    if command is not None and workdir_variable and command.words[0] == "cd":
        moved = _workdir(command, text, workdir_variable)
        if moved is not None:
            cwd = moved or None
            command = next_command(text, command.end)
    while command is not None and (exported := command.exports()) is not None:
        environment.update(exported)
        command = next_command(text, command.end)
    if command is None:
        return Body(environment, cwd, None, "")
    single = command if nothing_after(text, command.end) else None
    argv = single.argv if single else None
    return Body(environment, cwd, argv, text[command.start :], single, text)


def _workdir(command: Command, text: str, variable: str) -> str | None:
    """The directory of a leading `cd`: '' for the submission directory, None if not plain."""
    line = text[command.start : command.end].strip()
    if line in {f"cd {form}" for form in _forms(variable)}:
        return ""
    if command.plain and len(command.words) == 2:
        return command.words[1]
    return None


def _forms(variable: str) -> list[str]:
    return [f"${variable}", f'"${variable}"', f"${{{variable}}}", f'"${{{variable}}}"']


def body_lines(
    spec: JobSpec,
    lost: list[str],
    *,
    launcher: Callable[[JobSpec], list[str]],
    dialect: str,
    launch_one_task: bool = False,
    workdir_variable: str | None = None,
) -> tuple[str, list[str]]:
    """The `#!` line and the body that run `spec` (what `Reading.body` reads back).

    The launcher runs a command once per task; a batch body (or a job of one task, unless
    `launch_one_task`) runs without it, and is checked for other schedulers' launchers.
    """
    interpreter, script = script_form(spec.command, workdir_variable)
    once = bool(spec.attributes.get(BATCH)) or (spec.tasks == 1 and not launch_one_task)
    verbatim = script is not None and (once or spec.tasks == 1)
    if verbatim and not is_shell(interpreter):
        for name in spec.environment:
            lost.append(f"environment variable {name!r} (a {interpreter[0]} body exports none)")
        if workdir_variable:
            lost.append(
                f"cwd={spec.cwd or '(the submission directory)'} (a {interpreter[0]} body starts "
                f"in $HOME under {dialect})"
            )
        return shebang(interpreter), [script or ""]
    lines: list[str] = []
    if workdir_variable:
        lines.append(f"cd {shlex.quote(spec.cwd)}" if spec.cwd else f'cd "${workdir_variable}"')
    for name, value in spec.environment.items():
        if valid_name(name):
            lines.append(export_line(name, value))
        else:
            lost.append(f"environment variable {name!r} (not a valid shell variable name)")
    if script is not None and verbatim:
        lines.append(script)
        _foreign(script, launcher(spec)[0], dialect, lost)
        return shebang(interpreter), lines
    words = launcher(spec) if not once else []
    lines.append(" ".join([*words, command_line(spec.command)]))
    return shebang(list(DEFAULT_SHELL)), lines


def _foreign(body: str, native: str, dialect: str, lost: list[str]) -> None:
    """List what a body kept as it is takes from another scheduler: its launcher, its
    variables."""
    for word in sorted({" ".join(match[1].split()) for match in _LAUNCHERS.finditer(body)}):
        if not word.startswith(native):
            lost.append(f"the body's `{word}` lines ({dialect} has no {word}: run as written)")
    for name in sorted(set(_VARIABLES.findall(body))):
        if _FAMILIES[name.split("_")[0]] != dialect:
            lost.append(f"the body's ${name} ({dialect} does not set it)")


def script_form(command: list[str], workdir_variable: str | None) -> tuple[list[str], str | None]:
    """`[interpreter, flags..., "-c", body]` as (interpreter with flags, body) when the body
    would read back as a script; else (the default shell, None)."""
    if len(command) < 3 or command[-2] != "-c" or not takes_script(command[:1]):
        return list(DEFAULT_SHELL), None
    interpreter, body = command[:-2], command[-1]
    if not all(flag.startswith("-") for flag in interpreter[1:]):
        return list(DEFAULT_SHELL), None
    parsed = parse_body(body, interpreter, workdir_variable)
    as_script = parsed.command is None and not parsed.environment and parsed.cwd is None
    if as_script and parsed.rest == body and next_command(body) is not None:
        return interpreter, body
    return list(DEFAULT_SHELL), None


def shebang(interpreter: list[str]) -> str:
    if os.path.isabs(interpreter[0]):
        return "#!" + " ".join(interpreter)
    return "#!/usr/bin/env " + " ".join(interpreter)


def quoted(value: object) -> str:
    """A directive value as Slurm, PBS and LSF split it: double quotes when it needs any."""
    text = str(value)
    if text and not re.search(r"[\s\"'\\#]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def words_of(text: str, *, comments: bool = True) -> list[str]:
    """A directive's words, split like a POSIX shell (`#` starts a comment where `comments`)."""
    return shlex.split(text, comments=comments)


def lose_attributes(spec: JobSpec, known: set[str], dialect: str, lost: list[str]) -> None:
    """List the free attributes a dialect has no place for."""
    others = sorted(key for key in spec.attributes if key not in known and key != BATCH)
    if others:
        lost.append(f"attributes {others} ({dialect} has no free job attributes)")


def lose_name_and_attempt(spec: JobSpec, dialect: str, lost: list[str]) -> str | None:
    """The job name a script carries (the name, else the group) and what that leaves out."""
    if spec.name and spec.group != "default":
        lost.append(f"group={spec.group} ({dialect} gives a job one name: it holds the name)")
    if spec.attempt != 1:
        lost.append(f"attempt={spec.attempt} ({dialect} does not count attempts)")
    name = spec.name or spec.group
    return None if name == "default" and not spec.name else name


def dependency_text(
    entries: list[dict[str, Any]],
    lost: list[str],
    dialect: str,
    names: dict[str, str] = SCHEME_NAMES,
    form: str = "{name}:{value}",
    joiner: str = ",",
) -> str | None:
    """RFC 26 dependencies as a dialect writes them: Slurm's and PBS's `type:id,type:id` unless
    told otherwise; what the dialect has no name for is lost."""
    parts = []
    for entry in entries:
        name = names.get(entry.get("scheme", ""))
        if name is None or set(entry) != {"scheme", "value"}:
            lost.append(f"dependency {entry} ({dialect} has no such dependency)")
        else:
            parts.append(form.format(name=name, value=entry["value"]))
    return joiner.join(parts) or None


def dependencies(text: str, what: str) -> list[dict[str, str]]:
    """Slurm's and PBS's `type:id[:id...][,type:id...]` as RFC 26 entries."""
    entries = []
    for part in text.split(","):
        name, _, ids = part.partition(":")
        scheme = SCHEMES.get(name)
        if scheme is None or not ids:
            known = ", ".join(SCHEMES)
            raise ValueError(f"{what}: '{part}' is not one of {known} followed by :JOBID")
        entries += [{"scheme": scheme, "value": job} for job in ids.split(":")]
    return entries


def per(total: int, parts: int) -> tuple[int, bool]:
    """`total` shared over `parts`, rounded up, and whether that was exact."""
    share = -(-total // parts)
    return share, share * parts == total


def mpi_launcher(words: list[str], reading: Reading) -> tuple[int, list[str]] | None:
    """`mpiexec -n N program ...` (or mpirun, -np): the program, run on every task."""
    if words[0] not in ("mpiexec", "mpirun"):
        return None
    index, tasks = 1, None
    while index + 1 < len(words) and words[index] in ("-n", "-np", "--np", "--n"):
        tasks, index = words[index + 1], index + 2
    if index >= len(words) or words[index].startswith("-"):
        return None
    notes = []
    if tasks is not None and tasks != str(reading.fields.get("tasks", 1)):
        notes.append(lost_note(f"{words[0]} -n {tasks}", "the launcher's task count differs"))
    return index, notes


def table_launcher(
    words: list[str],
    reading: Reading,
    command: list[str],
    table: Table,
    shape: dict[str, str],
) -> tuple[int, list[str]] | None:
    """A launcher with a scheduler's option table (`srun`, `flux run`): where its program
    starts, and notes on its options (`shape` maps those that restate the job to its fields)."""
    if words[: len(command)] != command:
        return None
    try:
        options, program = table.leading(words[len(command) :])
    except OptionError:
        return None
    if not program:
        return None
    notes = check_launcher_options(" ".join(command), options, reading, shape)
    return len(words) - len(program), notes


def lost_note(what: str, why: str) -> str:
    """A launcher's note for `Reading.lose`, kept until the launcher is known to apply."""
    return f"{what}\0{why}"


def check_launcher_options(
    launcher: str, options: list[Found], reading: Reading, shape: dict[str, str]
) -> list[str]:
    """Notes on a launcher's options: those that set the job's shape to what it already is pass;
    the others are not carried."""
    notes = []
    for found in options:
        field = shape.get(found.option.name)
        value = found.value or ""
        expected = reading.fields.get(field, JobSpec.model_fields[field].default) if field else None
        if field and value.isdigit() and int(value) == expected:
            continue
        why = "the launcher's own option" if field is None else "the job's own shape differs"
        notes.append(lost_note(f"{launcher} {found.text}", why))
    return notes
