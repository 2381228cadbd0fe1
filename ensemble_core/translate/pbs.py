"""JobSpec <-> PBS batch script (`qsub`: OpenPBS and PBS Professional, Torque's forms read too).

A JobSpec's shape becomes one kind of chunk: `select=N:ncpus=C:mpiprocs=P:ngpus=G:mem=M` asks
for N chunks of P tasks each (C cores, G GPUs and M memory per chunk), and `place=scatter` puts
each chunk on a node of its own, which is how a node count is said. Reading also takes Torque's
`nodes=N:ppn=P` and job-wide `ncpus`/`mem`.

qsub reads `#PBS` lines until the script's first command; a line is split into words at spaces
(quotes group), has no comments, and holds only qsub's short options (`-l` may repeat, its
resources separated by commas). A PBS job starts in the user's home directory, so the script
changes to `$PBS_O_WORKDIR` (the submission directory) or to the JobSpec's `cwd` first.
"""

from __future__ import annotations

import re
from typing import Any

from ensemble_core.spec import JobSpec
from ensemble_core.translate import ARRAY, BANK, DEPENDENCIES, QUEUE, Translation
from ensemble_core.translate import script as batch
from ensemble_core.translate.options import Found, Table
from ensemble_core.translate.units import clock, clock_seconds, count, pbs_megabytes

SENTINEL = re.compile(r"^\s*#PBS(?=\s|$)(?P<rest>.*)$")
WORKDIR = "PBS_O_WORKDIR"
#: qsub's options (OpenPBS's getopt string, with Torque's -b -d -D -F -K -L -n -t -T -w -x).
QSUB = Table(
    "a a required; A A required; b b required; c c required; C C required; d d required; "
    "D D required; e e required; f f none; F F required; h h none; I I none; j j required; "
    "J J required; k k required; K K required; l l required; L L required; m m required; "
    "M M required; n n none; N N required; o o required; p p required; P P required; "
    "q q required; r r required; R R required; S S required; t t required; T T required; "
    "u u required; v v required; V V none; w w required; W W required; x x none; X X none; "
    "z z none"
)
_ARRAY = re.compile(r"^\d+-\d+(:\d+)?(%\d+)?$")
_HOST_PATH = re.compile(r"^[\w.-]+:(?=/)")
_KNOWN = {QUEUE, BANK, DEPENDENCIES, ARRAY}


def to_pbs(spec: JobSpec) -> Translation:
    """The qsub script for a JobSpec, with what PBS cannot take listed as lost."""
    lost: list[str] = []
    lines: list[str] = []
    name = batch.lose_name_and_attempt(spec, "PBS", lost)
    if name is not None:
        lines.append(f"#PBS -N {batch.quoted(name)}")
    lines.append(f"#PBS -l {_select(spec, lost)}")
    place = _place(spec)
    if place:
        lines.append(f"#PBS -l place={place}")
    if spec.walltime is not None:
        lines.append(f"#PBS -l walltime={clock(spec.walltime)}")
        if not float(spec.walltime).is_integer():
            lost.append(f"walltime={spec.walltime:g}s exactly (PBS counts whole seconds)")
    if spec.disk_mb is not None:
        lost.append(f"disk_mb={spec.disk_mb} (PBS has no standard resource for a job's disk)")
    if QUEUE in spec.attributes:
        lines.append(f"#PBS -q {batch.quoted(spec.attributes[QUEUE])}")
    if BANK in spec.attributes:
        lines.append(f"#PBS -A {batch.quoted(spec.attributes[BANK])}")
    if spec.attributes.get(DEPENDENCIES):
        text = batch.dependency_text(spec.attributes[DEPENDENCIES], lost, "PBS")
        if text:
            lines.append(f"#PBS -W depend={text}")
    if ARRAY in spec.attributes:
        if _ARRAY.match(str(spec.attributes[ARRAY])):
            lines.append(f"#PBS -J {spec.attributes[ARRAY]}")
        else:
            lost.append(f"array={spec.attributes[ARRAY]} (PBS arrays are a range: 1-10:2%4)")
    lines += _output(spec, lost)
    batch.lose_attributes(spec, _KNOWN, "PBS", lost)
    shebang, body = batch.body_lines(
        spec, lost, launcher=_mpiexec, dialect="PBS", workdir_variable=WORKDIR
    )
    return Translation(document="\n".join([shebang, *lines, "", *body]) + "\n", lost=lost)


def _select(spec: JobSpec, lost: list[str]) -> str:
    """One chunk per node (P tasks each) when the tasks share the nodes evenly, else per task."""
    if spec.nodes is not None and spec.tasks % spec.nodes == 0:
        chunks, per_chunk = spec.nodes, spec.tasks // spec.nodes
    else:
        if spec.nodes is not None:
            lost.append(
                f"nodes={spec.nodes} ({spec.tasks} tasks do not share {spec.nodes} nodes "
                "evenly, and PBS chunks are all alike: one chunk per task, placed freely)"
            )
        chunks, per_chunk = spec.tasks, 1
    parts = [f"select={chunks}", f"ncpus={spec.cores_per_task * per_chunk}"]
    parts.append(f"mpiprocs={per_chunk}")
    if spec.gpus_per_task:
        parts.append(f"ngpus={spec.gpus_per_task * per_chunk}")
    if spec.memory_mb is not None:
        memory, exact = batch.per(spec.memory_mb, chunks)
        parts.append(f"mem={memory}mb")
        if not exact:
            lost.append(
                f"memory_mb={spec.memory_mb} exactly (rounded up to {memory} MB per chunk, "
                f"{memory * chunks} MB in all)"
            )
    return ":".join(parts)


def _place(spec: JobSpec) -> str | None:
    spread = spec.nodes is not None and spec.tasks % spec.nodes == 0
    words = (["scatter"] if spread else []) + (["excl"] if spec.exclusive else [])
    return ":".join(words) or None


def _output(spec: JobSpec, lost: list[str]) -> list[str]:
    """-o and -e, and -j oe where stderr goes with stdout (a JobSpec's stderr left unset)."""
    lines = []
    written = {}
    for stream, option in (("stdout", "o"), ("stderr", "e")):
        path = getattr(spec, stream)
        if path and "{{" in path:
            lost.append(
                f"{stream}={path} (PBS paths take no job id: PBS's own <name>.{option}<id> file)"
            )
        elif path:
            written[stream] = path
            lines.append(f"#PBS -{option} {batch.quoted(path)}")
    if "stdout" in written and "stderr" not in written:
        lines.append("#PBS -j oe")
    return lines


def _mpiexec(spec: JobSpec) -> list[str]:
    return ["mpiexec", "-n", str(spec.tasks)]


def from_pbs(text: str, source: str = "<pbs script>") -> Translation:
    """The JobSpec of a qsub script, with what it cannot hold listed as lost."""
    script = batch.split(text, source, SENTINEL, continued=True)
    reading = batch.Reading(source, "PBS")
    state: dict[str, Any] = {"resources": {}}
    reading.directives(
        script,
        lambda words: batch.words_of(words, comments=False),
        lambda words: QSUB.getopt(words, abbreviations=False),
        lambda r, found: _apply(r, found, state),
    )
    reading.settle(_finish, state)
    if script.interpreter is None and "shell" in state:
        script.interpreter = [state["shell"]]
    reading.body(script, [batch.mpi_launcher], workdir_variable=WORKDIR)
    return reading.translation()


def _apply(reading: batch.Reading, found: Found, state: dict[str, Any]) -> None:
    name, value = found.option.name, found.value or ""
    if name == "N":
        reading.fields["name"] = value
    elif name == "l":
        for item in value.split(","):
            key, equals, setting = item.partition("=")
            if not equals:
                raise ValueError(f"-l {item}: a resource is name=value")
            state["resources"][key.strip().lower()] = (setting, reading.line)
    elif name == "q":
        reading.attributes[QUEUE] = value
    elif name == "A":
        reading.attributes[BANK] = value
    elif name in ("o", "e"):
        host = _HOST_PATH.match(value)
        if host:
            reading.lose(f"-{name} {value}", f"the host {host[0][:-1]}: the path is kept")
        state[name] = value[host.end() :] if host else value
    elif name == "j":
        state["join"] = value
    elif name in ("J", "t"):
        reading.attributes[ARRAY] = value
    elif name == "W":
        _extra(reading, value)
    elif name == "v":
        _variables(reading, value)
    elif name in ("d", "w"):
        reading.fields["cwd"] = value
    elif name == "S":
        state["shell"] = value.split(",")[0].split("@")[0]
    elif name != "V":  # -V passes the submitting environment on, as every member does
        reading.lose(found.text, "no JobSpec field holds it")


def _extra(reading: batch.Reading, value: str) -> None:
    """`-W depend=type:id[:id],type:id` (other -W attributes are lost)."""
    key, _, setting = value.partition("=")
    if key == "depend":
        entries = reading.attributes.setdefault(DEPENDENCIES, [])
        entries += batch.dependencies(setting, "-W depend")
    else:
        reading.lose(f"-W {value}", "no JobSpec field holds it")


def _variables(reading: batch.Reading, value: str) -> None:
    for item in value.split(","):
        name, equals, setting = item.partition("=")
        if equals:
            reading.environment[name] = setting
        else:
            reading.lose(f"-v {item}", "a variable passed from the submitting environment")


def _finish(reading: batch.Reading, state: dict[str, Any]) -> None:
    """Resources into the JobSpec's shape, once every directive is read."""
    resources: dict[str, tuple[str, int]] = state["resources"]
    fields = reading.fields
    chunks, chunk_memory = 1, False
    if "select" in resources:
        chunks, chunk_memory = _chunks(reading, resources.pop("select"))
    elif "nodes" in resources:
        _torque_nodes(reading, resources.pop("nodes"))
    if "place" in resources:
        _placement(reading, resources.pop("place"), chunks)
    for key, (value, line) in resources.items():
        reading.line = line
        spelling = f"-l {key}={value}"
        if key == "walltime":
            fields["walltime"] = clock_seconds(value, spelling) or None
        elif key == "ncpus" and "tasks" not in fields:
            fields["cores_per_task"] = count(value, spelling)
        elif key == "procs" and "tasks" not in fields:
            fields["tasks"] = count(value, spelling)
        elif key == "mem" and not chunk_memory:
            fields["memory_mb"] = pbs_megabytes(value, spelling)
        elif key == "pmem" and "memory_mb" not in fields and "mem" not in resources:
            fields["memory_mb"] = pbs_megabytes(value, spelling) * fields.get("tasks", 1)
        else:
            reading.lose(spelling, "no JobSpec field holds it")
    for stream, field in (("o", "stdout"), ("e", "stderr")):
        if stream in state:
            fields[field] = state[stream]
    join = state.get("join", "n")
    if join == "eo" and "e" in state:
        fields["stdout"], fields["stderr"] = state["e"], None
    elif join == "oe":
        fields.pop("stderr", None)
    elif "o" in state and "e" not in state:
        reading.lose("stderr", "without -j oe or -e, PBS writes it to its own <name>.e<id> file")


def _chunks(reading: batch.Reading, select: tuple[str, int]) -> tuple[int, bool]:
    """`select=N:res=value:...` (the first chunk kind): the number of chunks, and whether they
    set the memory."""
    value, reading.line = select
    kinds = value.split("+")
    for other in kinds[1:]:
        reading.lose(f"select ...+{other}", "a JobSpec has one kind of chunk")
    number, *parts = kinds[0].split(":")
    chunks = count(number, f"select={value}") if number else 1
    resources = dict(part.partition("=")[::2] for part in parts)
    spelling = f"select={value}"
    cpus = count(resources.pop("ncpus", "1"), spelling)
    per_chunk = count(resources.pop("mpiprocs", "1"), spelling)
    gpus = count(resources.pop("ngpus", "0"), spelling, least=0)
    fields = reading.fields
    fields["tasks"] = chunks * per_chunk
    fields["cores_per_task"], exact = max(cpus // per_chunk, 1), cpus % per_chunk == 0
    if not exact:
        reading.lose(f"ncpus={cpus}", f"{cpus} cores for {per_chunk} tasks per chunk")
    if gpus:
        fields["gpus_per_task"], exact = batch.per(gpus, per_chunk)
        if not exact:
            reading.lose(f"ngpus={gpus}", f"{gpus} GPUs for {per_chunk} tasks per chunk")
    memory = resources.pop("mem", None)
    if memory is not None:
        fields["memory_mb"] = pbs_megabytes(memory, spelling) * chunks
    for key, setting in resources.items():
        reading.lose(f"select ...:{key}={setting}", "no JobSpec field holds it")
    return chunks, memory is not None


def _placement(reading: batch.Reading, place: tuple[str, int], chunks: int) -> None:
    value, reading.line = place
    for word in value.split(":"):
        if word == "scatter":
            reading.fields["nodes"] = chunks
        elif word == "pack":
            reading.fields["nodes"] = 1
        elif word in ("excl", "exclhost"):
            reading.fields["exclusive"] = True
        elif word not in ("free", "shared"):
            reading.lose(f"place={word}", "no JobSpec field holds it")


def _torque_nodes(reading: batch.Reading, nodes: tuple[str, int]) -> None:
    """Torque's `nodes=N[:ppn=P][:gpus=G]` (the first node kind)."""
    value, reading.line = nodes
    kinds = value.split("+")
    for other in kinds[1:]:
        reading.lose(f"nodes=...+{other}", "a JobSpec has one kind of node")
    first, *parts = kinds[0].split(":")
    if not first.isdigit():
        reading.lose(f"nodes={first}", "a named host: the JobSpec asks for one node")
        first = "1"
    count_nodes = count(first, f"nodes={value}")
    properties = dict(part.partition("=")[::2] for part in parts)
    per_node = count(properties.pop("ppn", "1"), f"nodes={value}")
    gpus = count(properties.pop("gpus", "0"), f"nodes={value}", least=0)
    fields = reading.fields
    fields["nodes"], fields["tasks"] = count_nodes, count_nodes * per_node
    if gpus:
        fields["gpus_per_task"], exact = batch.per(gpus, per_node)
        if not exact:
            reading.lose(f"gpus={gpus}", f"{gpus} GPUs per node for {per_node} tasks")
    for key, setting in properties.items():
        reading.lose(f"nodes=...:{key}{'=' if setting else ''}{setting}", "a node property")
