"""JobSpec <-> Flux batch script (`flux batch`, with `# flux:` directives as RFC 36 defines them).

`flux batch` runs the script once, as the first program of a Flux instance holding the job's
resources (`-n` slots of `-c` cores and `-g` GPUs, over `-N` nodes); the script's `flux run`
starts the tasks. Everything the Flux jobspec carries a batch script carries too, with the same
attributes (`-S user.group=...`, `-S user.ensemble=...`), so `flux batch --dry-run` of a written
script gives the jobspec `to_flux` gives.

Directives are read as flux-core's DirectiveParser reads them: a line whose sentinel is
`flux:` after any non-word prefix (`# flux:`), the same sentinel on every line, split like a
shell (with punctuation apart, as Python's shlex does), each line options of `flux batch`
(long names are never abbreviated). A directive after the first command is an error, as in Flux.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from typing import Any

from ensemble_core.errors import ConfigError
from ensemble_core.spec import JobSpec
from ensemble_core.translate import BATCH, Translation
from ensemble_core.translate import script as batch
from ensemble_core.translate.flux import attribute_fields, to_flux
from ensemble_core.translate.options import Found, OptionError, Table
from ensemble_core.translate.units import count, fsd, fsd_seconds

SENTINEL = re.compile(r"^(?P<prefix>[^\w]*)(?P<tag>(?:flux|FLUX):)(?P<rest>.*)$")
_COMMON = (
    "help - optional; bank B required; queue q required; time-limit t required; urgency - "
    "required; job-name - required; setopt o required; setattr S required; add-file - required; "
    "dependency - required; requires - required; require - required; begin-time - required; "
    "env - required; env-remove - required; env-file - required; rlimit - required; input - "
    "required; output - required; error - required; unbuffered u none; label-io l none; cwd - "
    "required; flags - required; signal - required; dry-run - none; dry - none; quiet - none; "
    "list-plugins - none; debug-emulate - none; nodes N required; exclusive x none; "
    "resources-shape - required; resources-json - required"
)
#: `flux batch`'s options (flux-core 0.88, plugins included).
FLUX_BATCH = Table(
    _COMMON + "; add-brokers - required; conf - required; broker-opts - required; "
    "broker-opt - required; dump - optional; nslots n required; cores-per-slot c required; "
    "gpus-per-slot g required; wrap - none"
)
#: `flux run`'s options, for the script's launcher line.
FLUX_RUN = Table(
    _COMMON + "; taskmap - required; ntasks n required; cores-per-task c required; "
    "gpus-per-task g required; cores - required; tasks-per-node - required; tasks-per-core - "
    "required; gpus-per-node - required; verbose v none; wait-event - required"
)
_ENV = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


def to_flux_batch(spec: JobSpec) -> Translation:
    """The `flux batch` script for a JobSpec, with what Flux will not enforce listed as lost.

    Raises ValueError for a job Flux cannot shape (more nodes than tasks), as `to_flux` does.
    """
    translation = to_flux(spec)
    lost = [item for item in translation.lost if not item.startswith("batch ")]
    system = dict(translation.document["attributes"]["system"])
    user = dict(translation.document["attributes"]["user"])
    options = [f"--job-name={spec.name}"] if spec.name else []
    options += _shape_options(spec)
    if spec.exclusive and spec.nodes is not None:
        options.append("-x")
    if spec.walltime:
        options.append(f"-t{fsd(spec.walltime)}")
    options += _system_options(system, lost)
    if user.get("group") == "default":
        del user["group"]
    user.pop(BATCH, None)  # the script's shape says it: no launcher line
    if any("." in key for key in user):  # --setattr takes dots for nesting: set all at once
        options.append(f"--setattr=.user={json.dumps(user)}")
    else:
        options += [f"--setattr=user.{key}={json.dumps(value)}" for key, value in user.items()]
    lines = [f"# flux: {shlex.quote(option)}" for option in options]
    shebang, body = batch.body_lines(spec, lost, launcher=_flux_run, dialect="Flux")
    return Translation(document="\n".join([shebang, *lines, "", *body]) + "\n", lost=lost)


def _system_options(system: dict[str, Any], lost: list[str]) -> list[str]:
    options = []
    for key, option in (("queue", "--queue"), ("bank", "--bank"), ("cwd", "--cwd")):
        if key in system:
            options.append(f"{option}={system.pop(key)}")
    output = system.pop("shell", {}).get("options", {}).get("output", {})
    for stream, option in (("stdout", "--output"), ("stderr", "--error")):
        if stream in output:
            options.append(f"{option}={output[stream]['path']}")
    entries = system.get("dependencies", [])
    if all(set(entry) == {"scheme", "value"} for entry in entries):
        options += [f"--dependency={entry['scheme']}:{entry['value']}" for entry in entries]
        system.pop("dependencies", None)
    for key in ("duration", "environment", "job"):
        system.pop(key, None)
    for key, value in system.items():
        if "." in key:
            lost.append(f"attribute system.{key} (Flux's --setattr takes its dots as nesting)")
        else:
            options.append(f"--setattr=system.{key}={json.dumps(value)}")
    return options


def _shape_options(spec: JobSpec) -> list[str]:
    """-N, -n, -c and -g: what `flux batch` and `flux run` both take for the job's shape."""
    options = [f"-N{spec.nodes}"] if spec.nodes is not None else []
    options.append(f"-n{spec.tasks}")
    if spec.cores_per_task > 1:
        options.append(f"-c{spec.cores_per_task}")
    if spec.gpus_per_task:
        options.append(f"-g{spec.gpus_per_task}")
    return options


def _flux_run(spec: JobSpec) -> list[str]:
    return ["flux", "run", *_shape_options(spec)]


def split(text: str, source: str) -> batch.Script:
    """The script split as flux-core's DirectiveParser splits it (RFC 36)."""
    script = batch.split(text, source, SENTINEL)
    lines = text.split("\n")
    sentinel = None
    for line, _ in script.directives:
        match = SENTINEL.match(lines[line - 1])
        found = (match["prefix"], match["tag"]) if match else None
        if sentinel is None:
            sentinel = found
        elif found != sentinel:
            raise ConfigError(
                f"{source}:{line}: the sentinel changed from '{''.join(sentinel or ())}' to "
                f"'{''.join(found or ())}': every directive uses the same one"
            )
    if script.late and script.directives:
        raise ConfigError(
            f"{source}:{script.late[0]}: a 'flux:' directive after the first command (line "
            f"{script.body_line}): Flux reads directives only before it"
        )
    return script


def words_of(text: str) -> list[str]:
    """A directive's words as Flux splits them (shlex, POSIX, punctuation apart)."""
    if re.search(r"(\"\"\"|''')", text):
        raise ValueError("triple-quoted directives are not read: write the value on one line")
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.escapedquotes = "\"'"
    return list(lexer)


def _options(words: list[str]) -> Iterator[Found]:
    """A directive's options; a directive that is not options is unknown to Flux."""
    if words and not words[0].startswith("-"):
        raise OptionError(
            f"unknown directive '{' '.join(words)}': a directive is flux batch options"
        )
    return FLUX_BATCH.getopt(words, abbreviations=False)


def from_flux_batch(text: str, source: str = "<flux batch script>") -> Translation:
    """The JobSpec of a `flux batch` script, with what it cannot hold listed as lost."""
    script = split(text, source)
    if script.interpreter is None:
        raise ConfigError(f"{source}:1: not a Flux batch script: it must start with '#!'")
    reading = batch.Reading(source, "Flux")
    state: dict[str, Any] = {"system": {}, "user": {}}
    reading.directives(
        script,
        words_of,
        _options,
        lambda r, found: _apply(r, found, state),
    )
    reading.settle(_shape, state)
    fields = attribute_fields({"system": state["system"], "user": state["user"]})
    reading.environment.update(fields.pop("environment"))
    reading.attributes.update(fields.pop("attributes"))
    reading.fields.update(fields)
    reading.body(script, [_read_flux_run, batch.mpi_launcher])
    return reading.translation()


def _apply(reading: batch.Reading, found: Found, state: dict[str, Any]) -> None:
    name, value = found.option.name, found.value or ""
    system: dict[str, Any] = state["system"]
    if name in ("nslots", "cores-per-slot", "gpus-per-slot", "nodes", "exclusive"):
        state[name] = (value, reading.line)
    elif name == "time-limit":
        system["duration"] = fsd_seconds(value, "--time-limit", bare="m")
    elif name == "job-name":
        system["job"] = {"name": value}
    elif name in ("queue", "bank", "cwd"):
        system[name] = value
    elif name in ("output", "error"):
        stream = "stdout" if name == "output" else "stderr"
        output = system.setdefault("shell", {}).setdefault("options", {}).setdefault("output", {})
        output[stream] = {"type": "file", "path": value}
    elif name == "dependency":
        system.setdefault("dependencies", []).append(_dependency(value))
    elif name == "setattr":
        _setattr(state, value)
    elif name == "env" and _ENV.match(value) and "$" not in value:
        env_name, env_value = _ENV.match(value).groups()  # type: ignore[union-attr]
        reading.environment[env_name] = env_value
    else:
        reading.lose(found.text, "no JobSpec field holds it")


def _dependency(uri: str) -> dict[str, Any]:
    """An RFC 26 dependency URI (`afterok:123`) as the jobspec entry `flux batch` makes."""
    scheme, colon, value = uri.partition(":")
    if not colon or not scheme or not value:
        raise ValueError(f"--dependency={uri}: a dependency is SCHEME:VALUE (afterok:123)")
    value, _, query = value.partition("?")
    entry: dict[str, Any] = {"scheme": scheme, "value": value}
    for item in filter(None, query.split("&")):
        key, _, setting = item.partition("=")
        entry[key] = setting
    return entry


def _setattr(state: dict[str, Any], text: str) -> None:
    """`--setattr=KEY[=VALUE]` as Flux sets it: VALUE is JSON if it parses, `system.` is implied,
    and a leading `.` names a path from the attributes' root (`.user`)."""
    key, equals, raw = text.partition("=")
    value: Any = 1
    if equals:
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
    if key.startswith("^"):
        raise ValueError(f"--setattr={text}: a value read from a file is not carried")
    if key.startswith("."):
        key = key[1:]
    elif not key.startswith(("attributes.", "user.", "system.")):
        key = f"system.{key}"
    *parents, last = key.removeprefix("attributes.").split(".")
    target = state
    for parent in parents:
        target = target.setdefault(parent, {})
        if not isinstance(target, dict):
            raise ValueError(f"--setattr={text}: {parent} already holds a value, not a table")
    if not parents and last not in ("user", "system"):
        raise ValueError(f"--setattr={text}: only user. and system. attributes are carried")
    target[last] = value


def _shape(reading: batch.Reading, state: dict[str, Any]) -> None:
    """`-n` slots of `-c` cores and `-g` GPUs over `-N` nodes, as `flux batch` shapes them."""
    numbers = {}
    for name, field in (("nslots", "tasks"), ("cores-per-slot", "cores_per_task")):
        if name in state:
            value, reading.line = state[name]
            numbers[field] = count(value, f"--{name}")
    if "gpus-per-slot" in state:
        value, reading.line = state["gpus-per-slot"]
        numbers["gpus_per_task"] = count(value, "--gpus-per-slot", least=0)
    if "nodes" in state:
        value, reading.line = state["nodes"]
        numbers["nodes"] = count(value, "--nodes")
        numbers.setdefault("tasks", numbers["nodes"])
        # `flux batch -N2` alone asks for two whole nodes.
        numbers["exclusive"] = "exclusive" in state or "nslots" not in state
    elif "exclusive" in state:
        reading.line = state["exclusive"][1]
        raise reading.error("--exclusive needs a node count (-N), as flux batch says")
    elif "tasks" not in numbers:
        reading.line = 1
        raise reading.error("flux batch needs a number of slots (-n) or of nodes (-N)")
    reading.fields.update(numbers)


_RUN_SHAPE = {"ntasks": "tasks", "cores-per-task": "cores_per_task", "nodes": "nodes"}
_RUN_SHAPE["gpus-per-task"] = "gpus_per_task"


def _read_flux_run(words: list[str], reading: batch.Reading) -> tuple[int, list[str]] | None:
    """Where the program of a `flux run` line starts, its options checked against the job."""
    return batch.table_launcher(words, reading, ["flux", "run"], FLUX_RUN, _RUN_SHAPE)
