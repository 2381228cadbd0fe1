"""JobSpec <-> LSF batch script (`bsub < script`, IBM Spectrum LSF).

A JobSpec's tasks are LSF's slots (`-n`); `-R "span[ptile=P]"` spreads them P to a node,
`affinity[core(C)]` gives each C cores, `-gpu "num=G/task"` G GPUs, and `-M` limits each task's
memory (LSF's memory limit is per process). The time limit (`-W`) counts whole minutes.

bsub reads `#BSUB` lines until the script's first command; each line is split like a shell and
holds bsub's options, which are whole words (`-n 4`, `-oo out.log`) matched exactly.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ensemble_core.spec import JobSpec
from ensemble_core.translate import ARRAY, BANK, DEPENDENCIES, QUEUE, Translation
from ensemble_core.translate import script as batch
from ensemble_core.translate.options import Found, Table
from ensemble_core.translate.units import count, lsf_megabytes

SENTINEL = re.compile(r"^\s*#BSUB(?=\s|$)(?P<rest>.*)$")
#: bsub's options (IBM Spectrum LSF 10.1 command reference): those that take a value...
_VALUED = (
    "a alloc_flags app b C c clusters cn_cu cn_mem core_isolation csm cwd D data datagrp E Ep e "
    "eo eptl env F f freq G g gpu hostfile i is J Jd jsdl jsdl_strict jsm json k L Lp ln_mem "
    "ln_slots M m mig n network nnodes notify o oo outdir P p pack ptl Q q R rnc S s sla smt sp "
    "stage step_cgroup T t U u v W We w wa wt yaml"
)
#: ... and the flags.
_FLAGS = "ar B datachk H hl I Ip IS ISp ISs Is IX K N r rn ti tty ul x XF Zs"
BSUB = Table(
    ";".join([f"{name} - required" for name in _VALUED.split()])
    + ";"
    + ";".join([f"{name} - none" for name in _FLAGS.split()]),
    prefix="-",
)
_NAME = re.compile(r"^(?P<name>[^\[]*)(?:\[(?P<index>[^\]]+)\](?:%(?P<limit>\d+))?)?$")
_SECTION = re.compile(r"(\w+)\[([^\]]*)\]")
_DEPENDENCY = re.compile(r"^(done|ended|exit|started)\(\s*\"?([^\"()]+?)\"?\s*\)$")
_CONDITIONS = {"done": "afterok", "exit": "afternotok", "ended": "afterany"}
_CONDITIONS["started"] = "afterstart"
_KNOWN = {QUEUE, BANK, DEPENDENCIES, ARRAY}


def to_lsf(spec: JobSpec) -> Translation:
    """The bsub script for a JobSpec, with what LSF cannot take listed as lost."""
    lost: list[str] = []
    lines: list[str] = []
    name = batch.lose_name_and_attempt(spec, "LSF", lost)
    if ARRAY in spec.attributes:
        index, _, limit = str(spec.attributes[ARRAY]).partition("%")
        name = f"{name or 'array'}[{index}]" + (f"%{limit}" if limit else "")
    if name is not None:
        lines.append(f"#BSUB -J {batch.quoted(name)}")
    lines.append(f"#BSUB -n {spec.tasks}")
    requirement = _requirement(spec, lost)
    if requirement:
        lines.append(f'#BSUB -R "{requirement}"')
    if spec.gpus_per_task:
        lines.append(f'#BSUB -gpu "num={spec.gpus_per_task}/task"')
    if spec.exclusive:
        lines.append("#BSUB -x")
    if spec.memory_mb is not None:
        memory, exact = batch.per(spec.memory_mb, spec.tasks)
        lines.append(f"#BSUB -M {memory}MB")
        if not exact:
            lost.append(
                f"memory_mb={spec.memory_mb} exactly (rounded up to {memory} MB per task, "
                f"{memory * spec.tasks} MB in all)"
            )
    if spec.disk_mb is not None:
        lost.append(f"disk_mb={spec.disk_mb} (LSF limits no job's disk)")
    if spec.walltime is not None:
        minutes = math.ceil(spec.walltime / 60)
        lines.append(f"#BSUB -W {minutes // 60}:{minutes % 60:02d}")
        if spec.walltime % 60:
            lost.append(f"walltime={spec.walltime:g}s exactly (LSF counts whole minutes)")
    if QUEUE in spec.attributes:
        lines.append(f"#BSUB -q {batch.quoted(spec.attributes[QUEUE])}")
    if BANK in spec.attributes:
        lines.append(f"#BSUB -P {batch.quoted(spec.attributes[BANK])}")
    if spec.attributes.get(DEPENDENCIES):
        names = {scheme: name for name, scheme in _CONDITIONS.items()}
        condition = batch.dependency_text(
            spec.attributes[DEPENDENCIES], lost, "LSF", names, "{name}({value})", " && "
        )
        if condition:
            lines.append(f"#BSUB -w {batch.quoted(condition)}")
    if spec.cwd:
        lines.append(f"#BSUB -cwd {batch.quoted(spec.cwd)}")
    for stream, option in (("stdout", "oo"), ("stderr", "eo")):
        path = getattr(spec, stream)
        if path:
            lines.append(f"#BSUB -{option} {batch.quoted(_filename(path, stream, lost))}")
    batch.lose_attributes(spec, _KNOWN, "LSF", lost)
    shebang, body = batch.body_lines(spec, lost, launcher=_mpirun, dialect="LSF")
    return Translation(document="\n".join([shebang, *lines, "", *body]) + "\n", lost=lost)


def _requirement(spec: JobSpec, lost: list[str]) -> str:
    sections = []
    if spec.nodes == 1:
        sections.append("span[hosts=1]")
    elif spec.nodes is not None and spec.tasks % spec.nodes == 0:
        sections.append(f"span[ptile={spec.tasks // spec.nodes}]")
    elif spec.nodes is not None:
        lost.append(
            f"nodes={spec.nodes} ({spec.tasks} tasks do not share {spec.nodes} nodes evenly: "
            "LSF places them)"
        )
    if spec.cores_per_task > 1:
        sections.append(f"affinity[core({spec.cores_per_task})]")
    return " ".join(sections)


def _filename(path: str, stream: str, lost: list[str]) -> str:
    for template in set(re.findall(r"\{\{[^}]*\}\}", path)) - {"{{id}}"}:
        lost.append(f"{stream} template {template} (LSF has no such pattern: written as text)")
    return path.replace("{{id}}", "%J")


def _mpirun(spec: JobSpec) -> list[str]:
    return ["mpirun", "-n", str(spec.tasks)]


def from_lsf(text: str, source: str = "<lsf script>") -> Translation:
    """The JobSpec of a bsub script, with what it cannot hold listed as lost."""
    script = batch.split(text, source, SENTINEL)
    reading = batch.Reading(source, "LSF")
    state: dict[str, Any] = {}
    reading.directives(script, batch.words_of, BSUB.words, lambda r, f: _apply(r, f, state))
    reading.settle(_finish, state)
    reading.body(script, [batch.mpi_launcher])
    return reading.translation()


def _apply(reading: batch.Reading, found: Found, state: dict[str, Any]) -> None:
    name, value = found.option.name, found.value or ""
    fields = reading.fields
    if name == "J":
        _job_name(reading, value)
    elif name == "n":
        low, comma, _ = value.partition(",")
        if comma:
            reading.lose(f"-n {value}", f"a range of slots: the JobSpec asks for {low}")
        fields["tasks"] = count(low, "-n")
    elif name == "R":
        _requirements(reading, state, value)
    elif name == "gpu":
        _gpu(reading, state, value)
    elif name == "x":
        fields["exclusive"] = True
    elif name == "M":
        state["memory"] = (lsf_megabytes(value.rstrip("!"), "-M"), reading.line)
    elif name == "W":
        fields["walltime"] = _minutes(value) * 60.0 or None
    elif name == "q":
        reading.attributes[QUEUE] = value
    elif name == "P":
        reading.attributes[BANK] = value
    elif name == "w":
        _dependencies(reading, value)
    elif name == "cwd":
        fields["cwd"] = value
    elif name in ("o", "oo", "e", "eo"):
        if name in ("o", "e"):
            reading.lose(f"-{name} {value}", "LSF appends to the file; a JobSpec writes it anew")
        field = "stdout" if name.startswith("o") else "stderr"
        fields[field] = _path(reading, value, f"-{name}")
    elif name == "env":
        _environment(reading, value)
    else:
        reading.lose(found.text, "no JobSpec field holds it")


def _job_name(reading: batch.Reading, value: str) -> None:
    match = _NAME.match(value)
    if not match:
        raise ValueError(f"-J {value}: a job name is NAME or NAME[INDEXES] (an array)")
    if match["name"]:
        reading.fields["name"] = match["name"]
    if match["index"]:
        limit = f"%{match['limit']}" if match["limit"] else ""
        reading.attributes[ARRAY] = match["index"] + limit


def _requirements(reading: batch.Reading, state: dict[str, Any], value: str) -> None:
    sections = _SECTION.findall(value)
    if not sections:
        reading.lose(f'-R "{value}"', "no JobSpec field holds it")
    for section, body in sections:
        if section == "span" and body == "hosts=1":
            state["nodes"] = ("hosts", 1, reading.line)
        elif section == "span" and body.startswith("ptile=") and body[6:].isdigit():
            state["nodes"] = ("ptile", int(body[6:]), reading.line)
        elif section == "affinity" and (cores := re.match(r"^core\((\d+)\)", body)):
            reading.fields["cores_per_task"] = count(cores[1], "affinity core")
            if body != cores[0]:
                reading.lose(f"affinity[{body}]", "only the count of cores is carried")
        else:
            reading.lose(f"{section}[{body}]", "no JobSpec field holds it")


def _gpu(reading: batch.Reading, state: dict[str, Any], value: str) -> None:
    if value == "-":
        return
    settings = dict(part.partition("=")[::2] for part in value.split(":"))
    number, _, per = settings.pop("num", "1").partition("/")
    state["gpus"] = (count(number, "-gpu num", least=0), per or "host", reading.line)
    for key, setting in settings.items():
        reading.lose(f"-gpu {key}={setting}", "a JobSpec counts GPUs only")


def _minutes(value: str) -> int:
    time = value.split("/")[0]
    hours, colon, minutes = time.rpartition(":")
    if not minutes.isdigit() or (colon and not hours.isdigit()):
        raise ValueError(f"-W must be [hours:]minutes, not '{value}'")
    return int(hours or 0) * 60 + int(minutes)


def _dependencies(reading: batch.Reading, value: str) -> None:
    parts = [part.strip() for part in value.split("&&")]
    matches = [_DEPENDENCY.match(part) for part in parts]
    if "||" in value or "!" in value or not all(matches):
        reading.lose(f'-w "{value}"', "only done(), ended(), exit() and started() joined by &&")
        return
    entries = reading.attributes.setdefault(DEPENDENCIES, [])
    entries += [{"scheme": _CONDITIONS[m[1]], "value": m[2]} for m in matches if m]


def _environment(reading: batch.Reading, value: str) -> None:
    for item in (part.strip() for part in value.split(",")):
        name, equals, setting = item.partition("=")
        if equals:
            reading.environment[name.strip()] = setting.strip()
        elif item.lower() == "none":
            reading.lose("-env none", "the job starts without the submitting environment")
        elif item.lower() != "all":
            reading.lose(f"-env {item}", "a variable passed from the submitting environment")


def _path(reading: batch.Reading, path: str, spelling: str) -> str:
    if "%I" in path:
        reading.lose(f"{spelling} %I", "the array index: kept as text")
    return path.replace("%J", "{{id}}")


def _finish(reading: batch.Reading, state: dict[str, Any]) -> None:
    fields = reading.fields
    tasks = fields.setdefault("tasks", 1)
    if "nodes" in state:
        kind, number, reading.line = state["nodes"]
        fields["nodes"] = 1 if kind == "hosts" else math.ceil(tasks / number)
    if "gpus" in state:
        number, per, reading.line = state["gpus"]
        if per == "task":
            fields["gpus_per_task"] = number
        else:
            hosts = fields.get("nodes") or 1
            fields["gpus_per_task"], exact = batch.per(number * hosts, tasks)
            if not exact or "nodes" not in fields:
                reading.lose(f"-gpu num={number}", f"per host: {fields['gpus_per_task']} a task")
    if "memory" in state:
        memory, reading.line = state["memory"]
        fields["memory_mb"] = memory * tasks
