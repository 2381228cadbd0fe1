"""JobSpec <-> Slurm batch script (`sbatch`), for sites whose queue is Slurm.

Slurm's --mem and --tmp count per node while a JobSpec's memory and disk count for the whole job,
so they are divided over the nodes (rounded up); with no node count and several tasks the memory
becomes --mem-per-cpu instead, which Slurm holds to whatever nodes it picks. The environment is set
with `export` lines, because `--export=NAME=value` cannot carry a value that holds a comma.

Reading takes `#SBATCH` lines as sbatch does: from the top of the script until its first command,
each line split like a shell (a `#` starts a comment), with sbatch's own options (long, short,
`=` or space, unique prefixes of long names). The body's `srun` line gives the command.
"""

from __future__ import annotations

import math
import os
import re
from typing import Any

from ensemble_core.spec import JobSpec
from ensemble_core.translate import ARRAY, BANK, DEPENDENCIES, QUEUE, Translation
from ensemble_core.translate import script as batch
from ensemble_core.translate.options import Found
from ensemble_core.translate.slurm_options import SBATCH, SRUN
from ensemble_core.translate.units import count, slurm_megabytes, slurm_seconds

SENTINEL = re.compile(r"^#SBATCH(?=\s|$)(?P<rest>.*)$")
_PATTERN = re.compile(r"%(\d*)(.)")
#: Dependency types Slurm has and a JobSpec does not.
_OTHER_DEPENDENCIES = ("singleton", "aftercorr", "afterburstbuffer", "expand")
_KNOWN = {QUEUE, BANK, DEPENDENCIES, ARRAY}


def slurm_time(seconds: float) -> str:
    """Seconds as Slurm's `[days-]hours:minutes:seconds`, rounded up to the second."""
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def _directive(option: str, value: object | None = None) -> str:
    if value is None:
        return f"#SBATCH --{option}"
    return f"#SBATCH --{option}={batch.quoted(value)}"


def _filename(path: str, lost: list[str], stream: str) -> str:
    """A JobSpec path in Slurm's filename pattern: `{{id}}` is %j, a literal '%' is '%%'."""
    for template in set(re.findall(r"\{\{[^}]*\}\}", path)) - {"{{id}}"}:
        lost.append(f"{stream} template {template} (Slurm has no such pattern: written as text)")
    return path.replace("%", "%%").replace("{{id}}", "%j")


def to_slurm(spec: JobSpec) -> Translation:
    """The sbatch script for a JobSpec, with what Slurm cannot take listed as lost."""
    lost: list[str] = []
    per_node = spec.nodes or 1
    lines = ["#!/bin/bash"]
    name = batch.lose_name_and_attempt(spec, "Slurm", lost)
    if name is not None:
        lines.append(_directive("job-name", name))
    if spec.nodes is not None:
        lines.append(_directive("nodes", spec.nodes))
    lines.append(_directive("ntasks", spec.tasks))
    lines.append(_directive("cpus-per-task", spec.cores_per_task))
    if spec.gpus_per_task:
        lines.append(_directive("gpus-per-task", spec.gpus_per_task))
    if spec.exclusive:
        lines.append(_directive("exclusive"))
    if spec.memory_mb is not None:
        if spec.nodes is None and spec.tasks > 1:
            mem, exact = batch.per(spec.memory_mb, spec.total_cores)
            lines.append(_directive("mem-per-cpu", f"{mem}M"))
            where = f"{mem} MB per cpu, {mem * spec.total_cores} MB in all"
        else:
            mem, exact = batch.per(spec.memory_mb, per_node)
            lines.append(_directive("mem", f"{mem}M"))
            where = f"{mem} MB per node, {mem * per_node} MB in all"
        if not exact:
            lost.append(f"memory_mb={spec.memory_mb} exactly (rounded up to {where})")
    if spec.disk_mb is not None:
        disk, exact = batch.per(spec.disk_mb, per_node)
        lines.append(_directive("tmp", f"{disk}M"))
        if not exact:
            lost.append(f"disk_mb={spec.disk_mb} exactly (rounded up to {disk} MB per node)")
    if spec.walltime is not None:
        lines.append(_directive("time", slurm_time(spec.walltime)))
        if spec.walltime % 60:
            minutes = math.ceil(spec.walltime / 60)
            lost.append(
                f"walltime={spec.walltime:g}s to the second (Slurm enforces whole minutes: "
                f"{minutes} min)"
            )
    lines += _attribute_directives(spec, lost)
    if spec.cwd:
        lines.append(_directive("chdir", spec.cwd))
    if spec.stdout:
        lines.append(_directive("output", _filename(spec.stdout, lost, "stdout")))
    if spec.stderr:
        lines.append(_directive("error", _filename(spec.stderr, lost, "stderr")))
    batch.lose_attributes(spec, _KNOWN, "Slurm", lost)

    interpreter, body = batch.body_lines(
        spec, lost, launcher=_srun, dialect="Slurm", launch_one_task=True
    )
    lines[0] = interpreter
    return Translation(document="\n".join([*lines, "", *body]) + "\n", lost=lost)


def _attribute_directives(spec: JobSpec, lost: list[str]) -> list[str]:
    lines = []
    if QUEUE in spec.attributes:
        lines.append(_directive("partition", spec.attributes[QUEUE]))
    if BANK in spec.attributes:
        lines.append(_directive("account", spec.attributes[BANK]))
    if spec.attributes.get(DEPENDENCIES):
        text = batch.dependency_text(spec.attributes[DEPENDENCIES], lost, "Slurm")
        if text:
            lines.append(_directive("dependency", text))
    if ARRAY in spec.attributes:
        lines.append(_directive("array", spec.attributes[ARRAY]))
    return lines


def _srun(spec: JobSpec) -> list[str]:
    # Since Slurm 22.05 srun does not take --cpus-per-task from sbatch: repeat it.
    return ["srun", f"--cpus-per-task={spec.cores_per_task}"]


def from_slurm(text: str, source: str = "<slurm script>") -> Translation:
    """The JobSpec of an sbatch script, with what it cannot hold listed as lost."""
    script = batch.split(text, source, SENTINEL)
    if script.interpreter is None:
        raise batch.Reading(source, "Slurm").error(
            "not a Slurm batch script: sbatch needs '#!' and an interpreter on the first line"
        )
    reading = batch.Reading(source, "Slurm")
    state: dict[str, Any] = {}
    reading.directives(
        script, batch.words_of, SBATCH.getopt, lambda r, found: _apply(r, found, state)
    )
    state["script"] = os.path.basename(source)
    reading.settle(_finish, state)
    reading.body(script, [_read_srun, batch.mpi_launcher])
    return reading.translation()


def _apply(reading: batch.Reading, found: Found, state: dict[str, Any]) -> None:
    """One sbatch option: into a JobSpec field, into `state` for `_finish`, or lost."""
    name, value, spelling = found.option.name, found.value or "", found.option.spelling
    fields = reading.fields
    if name == "job-name":
        fields["name"] = value
    elif name == "nodes":
        fields["nodes"] = _nodes(reading, value)
    elif name == "ntasks":
        fields["tasks"] = count(value, spelling)
    elif name == "cpus-per-task":
        fields["cores_per_task"] = count(value, spelling)
    elif name in ("ntasks-per-node", "tasks-per-node"):
        state["tasks_per_node"] = (count(value, spelling), reading.line)
    elif name in ("mem", "mem-per-cpu", "mem-per-gpu"):
        _memory(reading, state, name, value, spelling)
    elif name == "tmp":
        state["tmp"] = slurm_megabytes(value, spelling)
    elif name in ("gpus", "gpus-per-task", "gpus-per-node", "gres"):
        _gpus(reading, state, name, value, spelling)
    elif name == "time":
        fields["walltime"] = slurm_seconds(value, spelling)
    elif name == "partition":
        reading.attributes[QUEUE] = value
    elif name == "account":
        reading.attributes[BANK] = value
    elif name in ("output", "error"):
        state[name] = (value, reading.line)
    elif name == "chdir":
        fields["cwd"] = value
    elif name == "exclusive":
        fields["exclusive"] = True
        if found.value:
            reading.lose(found.text, "a JobSpec's exclusive reserves whole nodes for the job")
    elif name == "export":
        _export(reading, value)
    elif name == "dependency":
        _dependency(reading, value, spelling)
    elif name == "array":
        reading.attributes[ARRAY] = value
    else:
        reading.lose(found.text, "no JobSpec field holds it")


def _nodes(reading: batch.Reading, value: str) -> int:
    low, dash, high = value.partition("-")
    if dash and low.isdigit() and high.isdigit():
        reading.lose(f"--nodes={value}", f"a node range: the JobSpec asks for {low}")
        value = low
    return count(value, "--nodes")


def _memory(
    reading: batch.Reading, state: dict[str, Any], name: str, value: str, spelling: str
) -> None:
    if state.get("memory", (name,))[0] != name:
        raise ValueError(f"{spelling} and --{state['memory'][0]} cannot be used together")
    megabytes = slurm_megabytes(value, spelling)
    if megabytes == 0:
        reading.lose(f"{spelling}=0", "all of each node's memory: the JobSpec sets no memory")
        state.pop("memory", None)
        return
    state["memory"] = (name, megabytes, reading.line)


def _gpus(
    reading: batch.Reading, state: dict[str, Any], name: str, value: str, spelling: str
) -> None:
    written = f"{spelling}={value}"
    if name == "gres":
        others = [item for item in value.split(",") if not re.match(r"^(gres/)?gpu(:|$)", item)]
        for item in others:
            reading.lose(f"--gres={item}", "a JobSpec holds no generic resources but GPUs")
        gpus = [item.removeprefix("gres/") for item in value.split(",") if item not in others]
        if not gpus:
            return
        value = gpus[0].removeprefix("gpu").lstrip(":") or "1"
    kind, _, number = value.rpartition(":")
    if kind:
        reading.lose(written, f"the GPU type {kind}: a JobSpec counts GPUs only")
    number = number.split("(")[0]  # gpu:2(S:0-1) binds to sockets
    state.setdefault("gpus", {})[name] = (count(number, spelling, least=0), reading.line)


def _export(reading: batch.Reading, value: str) -> None:
    items = value.split(",")
    keep_all = items[0].upper() == "ALL"
    if items[0].upper() in ("NONE", "NIL"):
        reading.lose(f"--export={value}", "the job starts without the submitting environment")
        items = items[1:]
    elif keep_all:
        items = items[1:]
    elif items:
        reading.lose(
            f"--export={value}", "without ALL, only these variables reach the job (and SLURM_*)"
        )
    for item in items:
        name, equals, setting = item.partition("=")
        if equals:
            reading.environment[name] = setting
        else:
            reading.lose(f"--export={item}", "a variable passed from the submitting environment")


def _dependency(reading: batch.Reading, value: str, spelling: str) -> None:
    if "?" in value:
        reading.lose(f"{spelling}={value}", "'?' (any of): a JobSpec's dependencies all hold")
        return
    kept = []
    for part in value.split(","):
        kind = part.partition(":")[0]
        if kind in _OTHER_DEPENDENCIES or "+" in part:
            reading.lose(f"{spelling}={part}", "no RFC 26 dependency is the same")
        else:
            kept.append(part)
    if kept:
        entries = reading.attributes.setdefault(DEPENDENCIES, [])
        entries += batch.dependencies(",".join(kept), spelling)


def _finish(reading: batch.Reading, state: dict[str, Any]) -> None:
    """What needs every directive first: tasks, memory, disk and GPUs counted over the job."""
    fields = reading.fields
    nodes = fields.get("nodes")
    if "tasks_per_node" in state:
        per_node, reading.line = state["tasks_per_node"]
        if "tasks" not in fields:
            fields["nodes"] = nodes = nodes or 1
            fields["tasks"] = per_node * nodes
        elif nodes and fields["tasks"] != per_node * nodes:
            reading.lose(
                f"--ntasks-per-node={per_node}", "with --ntasks Slurm takes it as a maximum"
            )
    fields.setdefault("tasks", nodes or 1)
    tasks, cores = fields["tasks"], fields.get("cores_per_task", 1)
    gpus = _gpus_per_task(reading, state.get("gpus", {}), nodes, tasks)
    if gpus:
        fields["gpus_per_task"] = gpus
    if "memory" in state:
        name, megabytes, reading.line = state["memory"]
        if name == "mem":
            fields["memory_mb"] = megabytes * (nodes or 1)
            if nodes is None and tasks > 1:
                reading.lose(
                    f"--mem={megabytes}M per node",
                    "with no --nodes Slurm may use several nodes: the JobSpec asks for "
                    f"{megabytes} MB in all",
                )
        elif name == "mem-per-cpu":
            fields["memory_mb"] = megabytes * tasks * cores
        elif gpus:
            fields["memory_mb"] = megabytes * tasks * gpus
        else:
            reading.lose(f"--mem-per-gpu={megabytes}M", "the job asks for no GPUs")
    if "tmp" in state:
        fields["disk_mb"] = state["tmp"] * (nodes or 1)
    for stream, field in (("output", "stdout"), ("error", "stderr")):
        if stream in state:
            path, reading.line = state[stream]
            name = fields.get("name") or state["script"]
            fields[field] = _path(reading, path, name, f"--{stream}")


def _gpus_per_task(
    reading: batch.Reading, given: dict[str, tuple[int, int]], nodes: int | None, tasks: int
) -> int:
    """GPUs per task from the first of --gpus-per-task, --gpus, --gpus-per-node and --gres."""
    order = ("gpus-per-task", "gpus", "gpus-per-node", "gres")
    found = [name for name in order if name in given]
    for other in found[1:]:
        reading.line = given[other][1]
        reading.lose(f"--{other}", f"--{found[0]} already sets the job's GPUs")
    if not found:
        return 0
    number, reading.line = given[found[0]]
    if found[0] == "gpus-per-task":
        return number
    total = number if found[0] == "gpus" else number * (nodes or 1)
    share, exact = batch.per(total, tasks)
    if not exact:
        reading.lose(f"--{found[0]}={number}", f"{total} GPUs over {tasks} tasks: {share} each")
    return share


def _path(reading: batch.Reading, path: str, name: str, spelling: str) -> str:
    """Slurm's filename pattern as a JobSpec path: %j is {{id}}, %x the job's name, %% a '%'."""

    def replace(match: re.Match[str]) -> str:
        width, letter = match[1], match[2]
        if letter == "%":
            return "%"
        if width:
            reading.lose(f"{spelling} %{width}{letter}", "padding of the pattern")
        if letter in "jJ":
            return "{{id}}"
        if letter == "x":
            return name
        reading.lose(f"{spelling} %{letter}", "no JobSpec template: kept as text")
        return match[0]

    return _PATTERN.sub(replace, path)


_SRUN_SHAPE = {"ntasks": "tasks", "cpus-per-task": "cores_per_task", "nodes": "nodes"}
_SRUN_SHAPE["gpus-per-task"] = "gpus_per_task"


def _read_srun(words: list[str], reading: batch.Reading) -> tuple[int, list[str]] | None:
    """Where the program of an `srun` line starts, with its options checked against the job."""
    return batch.table_launcher(words, reading, ["srun"], SRUN, _SRUN_SHAPE)
