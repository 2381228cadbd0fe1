"""JobSpec -> format -> JobSpec is the identity on what each format carries (hypothesis).

For every generated JobSpec and every format, the JobSpec read back equals `carried(spec, format)`:
the JobSpec as the format holds it, each projection below being what docs/translate.md says the
format keeps. Every field the format could not keep is named in the writer's lost list.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ensemble_core.spec import JobSpec
from ensemble_core.translate import ARRAY, BANK, BATCH, DEPENDENCIES, QUEUE, formats
from ensemble_core.translate.script import per
from ensemble_core.translate.shell import SHELL_WORDS

SCRIPTS = ("slurm", "pbs", "lsf", "flux-batch")
KNOWN = {QUEUE, BANK, DEPENDENCIES, ARRAY, BATCH}
LAUNCHER_WORDS = {"srun", "flux", "mpiexec", "mpirun"}

#: Text on one line, as names, paths and queues are (no NUL, no newline, no surrogate).
line_text = st.text(
    st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12
).filter(lambda text: text.strip() == text and text)
any_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\r"))
program = st.from_regex(r"\A[a-z][a-z0-9_./-]{0,10}\Z").filter(
    lambda word: word not in SHELL_WORDS and word not in LAUNCHER_WORDS
)
argv = st.builds(lambda first, rest: [first, *rest], program, st.lists(any_text, max_size=4))
#: Bodies a shell runs as a script: a first line of shell code, then anything.
body = st.builds(
    lambda first, rest: "\n".join([first, *rest]),
    st.sampled_from(
        [
            "set -e",
            'echo "start on $(hostname)"',
            "module load gcc/12",
            "for i in 1 2 3; do echo $i; done",
            "cd data && ls > listing.txt",
        ]
    ),
    st.lists(any_text.filter(lambda text: "\n" not in text), max_size=3),
)
script_command = st.builds(
    lambda shell, text: [shell, "-c", text], st.sampled_from(["/bin/bash", "/bin/sh", "bash"]), body
)
names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,12}\Z")
path = st.from_regex(r"\A[A-Za-z0-9_./ -]{1,16}\Z").filter(lambda text: text.strip() == text)
output_path = st.one_of(path, st.builds(lambda a, b: f"{a}-{{{{id}}}}{b}", path, path))
dependency = st.fixed_dictionaries(
    {
        "scheme": st.sampled_from(["afterok", "afterany", "afternotok", "afterstart"]),
        "value": st.from_regex(r"\A[1-9][0-9]{0,5}\Z"),
    }
)


@st.composite
def jobspecs(draw: st.DrawFn) -> JobSpec:
    tasks = draw(st.integers(1, 8))
    nodes = draw(st.none() | st.integers(1, tasks))
    attributes: dict = {}
    if draw(st.booleans()):
        attributes[QUEUE] = draw(names)
    if draw(st.booleans()):
        attributes[BANK] = draw(names)
    if draw(st.booleans()):
        attributes[DEPENDENCIES] = draw(st.lists(dependency, min_size=1, max_size=3))
    if draw(st.booleans()):
        attributes[ARRAY] = draw(st.sampled_from(["1-10", "0-15:2%4", "1,3,5"]))
    if draw(st.booleans()):
        attributes.update(draw(st.dictionaries(names, st.integers() | names, max_size=2)))
    command = draw(argv | script_command)
    if tasks > 1 and draw(st.booleans()):
        attributes[BATCH] = True
    variables = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z") | st.sampled_from(["BAD-NAME"])
    environment = draw(st.dictionaries(variables, any_text, max_size=3))
    return JobSpec(
        command=command,
        group=draw(st.sampled_from(["default", "sim"]) | names),
        name=draw(st.none() | names),
        nodes=nodes,
        tasks=tasks,
        cores_per_task=draw(st.integers(1, 8)),
        gpus_per_task=draw(st.integers(0, 4)),
        exclusive=draw(st.booleans()),
        memory_mb=draw(st.none() | st.integers(1, 10**6)),
        disk_mb=draw(st.none() | st.integers(1, 10**6)),
        walltime=draw(st.none() | st.integers(1, 10**7).map(float) | st.floats(0.5, 10**5)),
        environment=environment,
        cwd=draw(st.none() | path),
        stdout=draw(st.none() | output_path),
        stderr=draw(st.none() | output_path),
        attributes=attributes,
        attempt=draw(st.integers(1, 3)),
    )


def carried(spec: JobSpec, target: str) -> JobSpec:
    """`spec` as `target` holds it (docs/translate.md, "what maps")."""
    if target == "jobspec":
        return spec
    if target in ("flux", "flux-batch"):
        update: dict = {"exclusive": spec.exclusive and spec.nodes is not None}
        if target == "flux-batch":
            update["environment"] = _shell_names(spec.environment)
        return spec.model_copy(update=update)
    if target == "kubernetes":
        return spec.model_copy(
            update={
                "nodes": None,
                "tasks": 1,
                "cores_per_task": spec.total_cores,
                "gpus_per_task": spec.total_gpus,
                "exclusive": False,
                "stdout": None,
                "stderr": None,
                "walltime": None if spec.walltime is None else float(math.ceil(spec.walltime)),
            }
        )
    return spec.model_copy(update=_script_fields(spec, target))


def _script_fields(spec: JobSpec, target: str) -> dict:
    name = spec.name or (spec.group if spec.group != "default" else None)
    attributes = {key: value for key, value in spec.attributes.items() if key in KNOWN}
    update = {
        "group": "default",
        "name": name,
        "attempt": 1,
        "attributes": attributes,
        "environment": _shell_names(spec.environment),
        "walltime": None if spec.walltime is None else float(math.ceil(spec.walltime)),
    }
    if target == "slurm":
        divisor = spec.total_cores if spec.nodes is None and spec.tasks > 1 else spec.nodes or 1
        update["memory_mb"] = _rounded(spec.memory_mb, divisor)
        update["disk_mb"] = _rounded(spec.disk_mb, spec.nodes or 1)
        return update
    even = spec.nodes is not None and (spec.nodes == 1 or spec.tasks % spec.nodes == 0)
    update["nodes"] = spec.nodes if even else None
    update["disk_mb"] = None
    if target == "pbs":
        update["memory_mb"] = _rounded(spec.memory_mb, spec.nodes if even else spec.tasks)
        update["stdout"], update["stderr"] = (
            None if path is None or "{{" in path else path for path in (spec.stdout, spec.stderr)
        )
        if ARRAY in attributes and "," in attributes[ARRAY]:
            del attributes[ARRAY]
    else:  # lsf
        update["memory_mb"] = _rounded(spec.memory_mb, spec.tasks)
        update["walltime"] = None if spec.walltime is None else math.ceil(spec.walltime / 60) * 60.0
        if ARRAY in attributes and name is None:
            update["name"] = "array"
    return update


def _rounded(value: int | None, parts: int) -> int | None:
    return None if value is None else per(value, parts)[0] * parts


def _shell_names(environment: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in environment.items() if key != "BAD-NAME"}


#: The word a lost entry starts with for each field it reports.
LOST_WORDS = {
    field: field
    for field in ("memory_mb", "disk_mb", "walltime", "nodes", "tasks", "exclusive", "attempt")
}
LOST_WORDS.update(stdout="stdout", stderr="stderr", environment="environment variable")


@pytest.mark.parametrize("target", formats.FORMATS)
@settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(spec=jobspecs())
def test_written_and_read_back_is_what_the_format_carries(spec, target):
    written = formats.write(spec, target, image="busybox")
    read = formats.read(written.document, f"<{target}>", target)
    expected = carried(spec, target)
    assert read.document == expected, written.document
    lost = " ".join(written.lost)
    for field, word in LOST_WORDS.items():
        if getattr(expected, field) == getattr(spec, field):
            continue
        if target == "kubernetes" and field == "nodes" and spec.nodes == 1:
            continue  # a Pod runs on one node: nodes=1 reads back as unset
        assert word in lost, (field, written.lost)
    for key in set(spec.attributes) - set(expected.attributes):
        assert key in lost, (key, written.lost)
    assert "'batch'" not in lost  # the batch mark is the script's shape, never lost
    if spec.name and spec.group != "default" and target in SCRIPTS[:3]:
        assert "group" in lost


@pytest.mark.parametrize("target", formats.FORMATS)
@settings(
    max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(spec=jobspecs())
def test_a_translation_is_stable(spec, target):
    """Written from what it read, a format writes the same document again."""
    first = formats.write(spec, target, image="busybox").document
    again = formats.write(formats.read(first, "<x>", target).document, target, image="busybox")
    assert again.document == first
