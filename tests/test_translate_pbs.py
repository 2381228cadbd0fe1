"""JobSpec <-> PBS batch script: qsub's directive syntax, chunks and placement, Torque's
forms, the working directory, and bad directives."""

from __future__ import annotations

import pytest

from ensemble_core.errors import ConfigError
from ensemble_core.spec import JobSpec
from ensemble_core.translate import ARRAY, BATCH, DEPENDENCIES
from ensemble_core.translate.pbs import from_pbs, to_pbs

SPREAD = JobSpec(
    command=["./app", "--n", "3"],
    name="run",
    nodes=2,
    tasks=8,
    cores_per_task=2,
    gpus_per_task=1,
    exclusive=True,
    memory_mb=8192,
    walltime=3600,
    environment={"A": "1"},
    cwd="/scratch/run 1",
    stdout="out.log",
    attributes={
        "system.queue": "q",
        ARRAY: "1-10%2",
        DEPENDENCIES: [{"scheme": "afterok", "value": "7"}],
    },
)


def test_a_spread_job_is_one_chunk_per_node_scattered():
    translation = to_pbs(SPREAD)
    assert translation.document == (
        "#!/bin/bash\n"
        "#PBS -N run\n"
        "#PBS -l select=2:ncpus=8:mpiprocs=4:ngpus=4:mem=4096mb\n"
        "#PBS -l place=scatter:excl\n"
        "#PBS -l walltime=01:00:00\n"
        "#PBS -q q\n"
        "#PBS -W depend=afterok:7\n"
        "#PBS -J 1-10%2\n"
        "#PBS -o out.log\n"
        "#PBS -j oe\n"
        "\n"
        "cd '/scratch/run 1'\n"
        "export A=1\n"
        "mpiexec -n 8 ./app --n 3\n"
    )
    assert translation.lost == []
    assert from_pbs(translation.document, "run.pbs").document == SPREAD


def test_what_pbs_cannot_hold_is_listed():
    spec = JobSpec(
        command=["x"],
        nodes=2,
        tasks=3,
        disk_mb=10,
        stdout="out-{{id}}.log",
        attributes={ARRAY: "1,3,5"},
    )
    translation = to_pbs(spec)
    assert "#PBS -l select=3:ncpus=1:mpiprocs=1\n" in translation.document
    assert 'cd "$PBS_O_WORKDIR"\nmpiexec -n 3 x\n' in translation.document
    assert translation.lost == [
        "nodes=2 (3 tasks do not share 2 nodes evenly, and PBS chunks are all alike: one chunk "
        "per task, placed freely)",
        "disk_mb=10 (PBS has no standard resource for a job's disk)",
        "array=1,3,5 (PBS arrays are a range: 1-10:2%4)",
        "stdout=out-{{id}}.log (PBS paths take no job id: PBS's own <name>.o<id> file)",
    ]


def read(directives: str, body: str = "hostname") -> JobSpec:
    return from_pbs(f"#!/bin/bash\n{directives}\n{body}\n", "job.pbs").document


@pytest.mark.parametrize(
    "directives",
    [
        "#PBS -l select=2:ncpus=8:mpiprocs=4 -l place=scatter",
        "#PBS -lselect=2:ncpus=8:mpiprocs=4,place=scatter",
        "#PBS -l select=2:ncpus=8:mpiprocs=4\n#PBS -l place=scatter",
        "  #PBS -l select=2:ncpus=8:mpiprocs=4 \\\n      -l place=scatter",
        "#PBS -l nodes=2:ppn=4 -l ncpus=99",
    ],
)
def test_every_documented_option_syntax_reads_the_same(directives):
    spec = read(directives)
    assert (spec.nodes, spec.tasks) == (2, 8)


@pytest.mark.parametrize(
    ("directives", "expected"),
    [
        ("#PBS -l ncpus=4,mem=2gb", {"cores_per_task": 4, "memory_mb": 2048}),
        ("#PBS -l select=3:ncpus=2", {"tasks": 3, "cores_per_task": 2}),
        ("#PBS -l select=1:ncpus=4:mpiprocs=4 -l place=pack", {"nodes": 1, "tasks": 4}),
        ("#PBS -l select=2:ncpus=1:mem=1000", {"tasks": 2, "memory_mb": 2}),
        ("#PBS -l select=1:ncpus=2:mpiprocs=2:ngpus=4", {"tasks": 2, "gpus_per_task": 2}),
        ("#PBS -l walltime=90", {"walltime": 90.0}),
        ("#PBS -l walltime=1:30", {"walltime": 90.0}),
        ("#PBS -l procs=6,pmem=1gb", {"tasks": 6, "memory_mb": 6144}),
        ("#PBS -l place=excl", {"exclusive": True}),
        ("#PBS -N name -d /data", {"name": "name", "cwd": "/data"}),
        ("#PBS -v A=1,B=2", {"environment": {"A": "1", "B": "2"}}),
        ("#PBS -l nodes=1:ppn=2:gpus=2", {"nodes": 1, "tasks": 2, "gpus_per_task": 1}),
    ],
)
def test_resources_map_onto_jobspec_fields(directives, expected):
    dumped = read(directives).model_dump(exclude_defaults=True, exclude={"command", "attributes"})
    assert dumped == expected


@pytest.mark.parametrize(
    ("directives", "stdout", "stderr"),
    [
        ("#PBS -o a.log -e b.log", "a.log", "b.log"),
        ("#PBS -o a.log -j oe", "a.log", None),
        ("#PBS -e b.log -j eo", "b.log", None),
        ("#PBS -o login1:/home/me/a.log -j oe", "/home/me/a.log", None),
    ],
)
def test_output_and_joins(directives, stdout, stderr):
    spec = read(directives)
    assert (spec.stdout, spec.stderr) == (stdout, stderr)


def test_an_unjoined_stdout_lists_where_stderr_goes():
    translation = from_pbs("#PBS -o a.log\nhostname\n", "job.pbs")
    assert translation.lost == [
        "line 1: stderr (without -j oe or -e, PBS writes it to its own <name>.e<id> file)"
    ]


@pytest.mark.parametrize(
    ("body", "cwd", "command"),
    [
        ("cd $PBS_O_WORKDIR\n./app", None, ["./app"]),
        ('cd "${PBS_O_WORKDIR}"\n./app', None, ["./app"]),
        ("cd /scratch/x\n./app", "/scratch/x", ["./app"]),
        ("cd $HOME/x\n./app", None, ["/bin/bash", "-c", "cd $HOME/x\n./app"]),
    ],
)
def test_a_leading_cd_is_the_working_directory(body, cwd, command):
    spec = read("#PBS -N x", body)
    assert (spec.cwd, spec.command) == (cwd, command)


def test_the_shell_option_runs_a_body_without_its_own_line():
    spec = from_pbs("#PBS -S /bin/tcsh\nsetenv A 1\necho $A\n", "job.pbs").document
    assert spec.command == ["/bin/tcsh", "-c", "setenv A 1\necho $A"]
    several = read("#PBS -l select=4", "echo one\necho two")
    assert several.attributes == {BATCH: True}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#PBS -N x # a comment\nx\n", "job.pbs:1: '#' is not an option"),
        ("#PBS --name x\nx\n", "job.pbs:1: unknown option --"),
        ("#PBS -Y\nx\n", "job.pbs:1: unknown option -Y"),
        ("#PBS -l walltime\nx\n", "job.pbs:1: -l walltime: a resource is name=value"),
        ("#PBS -l select=2:ncpus=lots\nx\n", "job.pbs:1: select=2:ncpus=lots must be a whole"),
        ("\n#PBS -l mem=4zb\nx\n", "job.pbs:2: -l mem=4zb must be a size such as 4gb"),
        ("#PBS -l walltime=1h\nx\n", "job.pbs:1: -l walltime=1h must be a time such as 3600"),
        ("#PBS -W depend=afterwards:1\nx\n", "job.pbs:1: -W depend: 'afterwards:1' is not one"),
        ("#PBS -N x\n", "job.pbs:2: the script runs no command"),
    ],
)
def test_bad_directives_are_one_line_naming_file_and_line(text, message):
    with pytest.raises(ConfigError) as error:
        from_pbs(text, "job.pbs")
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)
