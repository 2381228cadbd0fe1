"""JobSpec <-> Slurm batch script: the sbatch writer, and the reader's directive syntax,
mappings, bodies and errors."""

from __future__ import annotations

import pytest
from test_translate_kubernetes import FULL

from ensemble_core.errors import ConfigError
from ensemble_core.spec import JobSpec
from ensemble_core.translate import BATCH, DEPENDENCIES, QUEUE
from ensemble_core.translate.slurm import from_slurm, slurm_time, to_slurm


def test_slurm_script_for_a_full_job():
    translation = to_slurm(FULL)
    assert translation.document == (
        "#!/bin/bash\n"
        "#SBATCH --job-name=align\n"
        "#SBATCH --nodes=2\n"
        "#SBATCH --ntasks=4\n"
        "#SBATCH --cpus-per-task=2\n"
        "#SBATCH --gpus-per-task=1\n"
        "#SBATCH --exclusive\n"
        "#SBATCH --mem=2048M\n"
        "#SBATCH --tmp=500M\n"
        "#SBATCH --time=1-01:01:02\n"
        '#SBATCH --chdir="/work dir"\n'
        '#SBATCH --output="out %%j.log"\n'
        "#SBATCH --error=err.log\n"
        "\n"
        "export A=1,2\n"
        "srun --cpus-per-task=2 python -c 'print('\"'\"'hi, there'\"'\"')'\n"
    )
    assert translation.lost == [
        "group=Align Reads! (Slurm gives a job one name: it holds the name)",
        "attempt=2 (Slurm does not count attempts)",
        "walltime=90061.5s to the second (Slurm enforces whole minutes: 1502 min)",
        "attributes ['k'] (Slurm has no free job attributes)",
        "environment variable 'BAD-NAME' (not a valid shell variable name)",
    ]


def test_slurm_script_for_a_small_job_uses_the_group_as_name():
    translation = to_slurm(JobSpec(command=["true"], group="echo"))
    assert translation.document == (
        "#!/bin/bash\n"
        "#SBATCH --job-name=echo\n"
        "#SBATCH --ntasks=1\n"
        "#SBATCH --cpus-per-task=1\n"
        "\n"
        "srun --cpus-per-task=1 true\n"
    )
    assert translation.lost == []


def test_slurm_memory_without_nodes_is_per_cpu_for_several_tasks():
    spec = JobSpec(command=["a.out"], tasks=3, cores_per_task=2, memory_mb=1000, disk_mb=10)
    translation = to_slurm(spec)
    lines = translation.document.splitlines()
    assert "#SBATCH --mem-per-cpu=167M" in lines
    assert "#SBATCH --tmp=10M" in lines
    assert translation.lost == [
        "memory_mb=1000 exactly (rounded up to 167 MB per cpu, 1002 MB in all)"
    ]
    single = to_slurm(JobSpec(command=["a.out"], memory_mb=1000)).document.splitlines()
    assert "#SBATCH --mem=1000M" in single


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(1, "00:00:01"), (59.01, "00:01:00"), (3600, "01:00:00"), (86400, "1-00:00:00")],
)
def test_slurm_time(seconds, expected):
    assert slurm_time(seconds) == expected


def test_a_batch_body_is_written_as_it_is_and_other_launchers_are_named():
    spec = JobSpec(
        command=["/bin/sh", "-c", "module load mpi\nflux run -n4 ./app $PBS_JOBID $SLURM_JOB_ID"],
        tasks=4,
        attributes={BATCH: True},
    )
    translation = to_slurm(spec)
    assert translation.document.startswith("#!/bin/sh\n")
    assert translation.document.endswith(
        "\n\nmodule load mpi\nflux run -n4 ./app $PBS_JOBID $SLURM_JOB_ID\n"
    )
    assert translation.lost == [
        "the body's `flux run` lines (Slurm has no flux run: run as written)",
        "the body's $PBS_JOBID (Slurm does not set it)",
    ]


def read(directives: str, body: str = "hostname") -> JobSpec:
    return from_slurm(f"#!/bin/bash\n{directives}\n{body}\n", "job.sbatch").document


@pytest.mark.parametrize(
    "directives",
    [
        "#SBATCH --nodes=2 --ntasks=8 --cpus-per-task=4",
        "#SBATCH --nodes 2 --ntasks 8 --cpus-per-task 4",
        "#SBATCH -N2 -n8 -c4",
        "#SBATCH -N 2 -n 8 -c 4",
        "#SBATCH -N 2\n#SBATCH -n 8   # eight tasks\n#SBATCH -c4",
        "#SBATCH --nodes=2 --ntasks=8 --cpus-per-t=4",
        "#SBATCH -N 2 --ntasks-per-node=4 -c 4",
        "#SBATCH   --nodes=2\n# a comment between\n\n#SBATCH -n8 -c4",
    ],
)
def test_every_documented_option_syntax_reads_the_same(directives):
    spec = read(directives)
    assert (spec.nodes, spec.tasks, spec.cores_per_task) == (2, 8, 4)


@pytest.mark.parametrize(
    ("directives", "expected"),
    [
        ("#SBATCH -N 3", {"nodes": 3, "tasks": 3}),
        ("#SBATCH --mem=4G", {"memory_mb": 4096}),
        ("#SBATCH -N2 --mem=4G", {"nodes": 2, "tasks": 2, "memory_mb": 8192}),
        ("#SBATCH -n4 -c2 --mem-per-cpu=100", {"tasks": 4, "cores_per_task": 2, "memory_mb": 800}),
        ("#SBATCH -n2 --gpus-per-task=1 --mem-per-gpu=1G", {"tasks": 2, "gpus_per_task": 1}),
        ("#SBATCH -n4 --gpus=8", {"tasks": 4, "gpus_per_task": 2}),
        ("#SBATCH -N2 -n4 --gres=gpu:4", {"nodes": 2, "tasks": 4, "gpus_per_task": 2}),
        ("#SBATCH -N2 -n4 --gpus-per-node=2", {"nodes": 2, "tasks": 4, "gpus_per_task": 1}),
        ("#SBATCH --tmp=2G -N2", {"nodes": 2, "tasks": 2, "disk_mb": 4096}),
        ("#SBATCH -t 90", {"walltime": 5400.0}),
        ("#SBATCH -t 2-12", {"walltime": 216000.0}),
        ("#SBATCH --time=UNLIMITED", {}),
        ("#SBATCH -D /scratch/run --exclusive", {"cwd": "/scratch/run", "exclusive": True}),
        ("#SBATCH -J sim -o %x-%j.out -e err%%.log", {"name": "sim"}),
        ("#SBATCH --export=ALL,A=1,B=two", {"environment": {"A": "1", "B": "two"}}),
    ],
)
def test_directives_map_onto_jobspec_fields(directives, expected):
    spec = read(directives)
    dumped = spec.model_dump(exclude_defaults=True, exclude={"command", "attributes", "stdout"})
    dumped.pop("stderr", None)
    if "--mem-per-gpu" in directives:
        expected["memory_mb"] = 2048
    assert dumped == expected


def test_output_patterns_become_jobspec_templates():
    spec = read("#SBATCH -J sim -o %x-%j.out -e err%%-%5j.log")
    assert (spec.stdout, spec.stderr) == ("sim-{{id}}.out", "err%-{{id}}.log")
    unnamed = from_slurm("#!/bin/bash\n#SBATCH -o %x.out\nhostname\n", "runs/job.sbatch")
    assert unnamed.document.stdout == "job.sbatch.out"


def test_queue_account_dependencies_and_array_are_attributes():
    spec = read("#SBATCH -p debug -A proj --array=0-15:2%4 -d afterok:11:12,afternotok:13")
    assert spec.attributes == {
        QUEUE: "debug",
        "system.bank": "proj",
        "array": "0-15:2%4",
        DEPENDENCIES: [
            {"scheme": "afterok", "value": "11"},
            {"scheme": "afterok", "value": "12"},
            {"scheme": "afternotok", "value": "13"},
        ],
    }


@pytest.mark.parametrize(
    ("directives", "lost"),
    [
        ("#SBATCH --qos=high", "line 2: --qos=high (no JobSpec field holds it)"),
        ("#SBATCH --nodes=2-4", "line 2: --nodes=2-4 (a node range: the JobSpec asks for 2)"),
        ("#SBATCH --exclusive=user", "line 2: --exclusive=user (a JobSpec's exclusive reserves"),
        ("#SBATCH --export=NONE", "line 2: --export=NONE (the job starts without the submitting"),
        ("#SBATCH --export=A=1", "line 2: --export=A=1 (without ALL, only these variables"),
        ("#SBATCH --gres=gpu:v100:1,nvme:1", "line 2: --gres=nvme:1 (a JobSpec holds no generic"),
        ("#SBATCH -d afterok:1?afterok:2", "line 2: --dependency=afterok:1?afterok:2 ('?'"),
        ("#SBATCH -d singleton", "line 2: --dependency=singleton (no RFC 26 dependency"),
        ("#SBATCH -o %u.out", "line 2: --output %u (no JobSpec template: kept as text)"),
        ("#SBATCH -n4 --mem=1G", "line 2: --mem=1024M per node (with no --nodes Slurm may use"),
    ],
)
def test_what_a_jobspec_cannot_hold_is_listed_with_its_line(directives, lost):
    translation = from_slurm(f"#!/bin/bash\n{directives}\nhostname\n", "job.sbatch")
    assert any(item.startswith(lost) for item in translation.lost), translation.lost


def test_directives_after_the_first_command_are_listed_not_read():
    translation = from_slurm("#!/bin/bash\n#SBATCH -n2\nhostname\n#SBATCH -n4\n", "job.sbatch")
    assert translation.document.tasks == 2
    assert translation.lost == [
        "line 4: a directive after the first command (Slurm reads directives only before the "
        "script's first command)"
    ]


@pytest.mark.parametrize(
    ("body", "command", "batch"),
    [
        ("python run.py --n 3", ["python", "run.py", "--n", "3"], True),
        ("srun python run.py", ["python", "run.py"], False),
        ("srun -n 4 --cpus-per-task=2 ./app 'a b'", ["./app", "a b"], False),
        ('srun ./app --in "$INPUT"', ["/bin/bash", "-c", './app --in "$INPUT"'], False),
        ("srun ./app > out.log", ["/bin/bash", "-c", "srun ./app > out.log"], True),
        ("mpirun -np 4 ./app", ["./app"], False),
        ("module load x\nsrun ./app", ["/bin/bash", "-c", "module load x\nsrun ./app"], True),
        ("srun --mpi=pmix \\\n    ./app", ["./app"], False),
    ],
)
def test_the_body_becomes_the_command(body, command, batch):
    spec = read("#SBATCH -n 4 -c 2", body)
    assert spec.command == command
    assert spec.attributes.get(BATCH, False) is batch


def test_leading_exports_become_the_environment():
    spec = read("#SBATCH -n1", "export A=1 B='two words'\nexport C=\"x\"\nsrun ./app")
    assert spec.environment == {"A": "1", "B": "two words", "C": "x"}
    assert spec.command == ["./app"]
    expanded = read("#SBATCH -n1", "export PATH=$HOME/bin:$PATH\n./app")
    assert expanded.environment == {}
    assert expanded.command == ["/bin/bash", "-c", "export PATH=$HOME/bin:$PATH\n./app"]


def test_srun_options_that_differ_from_the_job_are_listed():
    translation = from_slurm("#!/bin/bash\n#SBATCH -n4\nsrun -n 2 --label ./app\n", "job.sbatch")
    assert translation.document.command == ["./app"]
    assert translation.lost == [
        "line 3: srun -n 2 (the job's own shape differs)",
        "line 3: srun --label (the launcher's own option)",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#SBATCH -n2\nhostname\n", "job.sbatch:1: not a Slurm batch script: sbatch needs '#!'"),
        ("#!\n#SBATCH -n2\nhostname\n", "job.sbatch:1: not a Slurm batch script: sbatch needs"),
        ("#!/bin/bash\n#SBATCH --frobnicate\nx\n", "job.sbatch:2: unknown option --frobnicate"),
        ("#!/bin/bash\n#SBATCH -Z\nx\n", "job.sbatch:2: unknown option -Z"),
        ("#!/bin/bash\n#SBATCH --mem\nx\n", "job.sbatch:2: --mem needs a value"),
        ("#!/bin/bash\n#SBATCH --gpus-per\nx\n", "job.sbatch:2: --gpus-per is ambiguous"),
        ("#!/bin/bash\n\n#SBATCH -n two\nx\n", "job.sbatch:3: --ntasks must be a whole number"),
        ("#!/bin/bash\n#SBATCH --mem=4X\nx\n", "job.sbatch:2: --mem must be a size such as"),
        ("#!/bin/bash\n#SBATCH -t 1:2:3:4\nx\n", "job.sbatch:2: --time must be a time such as"),
        ("#!/bin/bash\n#SBATCH -J 'open\nx\n", "job.sbatch:2: cannot split the directive"),
        ("#!/bin/bash\n#SBATCH -n2 extra\nx\n", "job.sbatch:2: 'extra' is not an option"),
        ("#!/bin/bash\n#SBATCH --mem=1G --mem-per-cpu=1G\nx\n", "job.sbatch:2: --mem-per-cpu and"),
        ("#!/bin/bash\n#SBATCH -d after\nx\n", "job.sbatch:2: --dependency: 'after' is not one"),
        ("#!/bin/bash\n#SBATCH -n2\n", "job.sbatch:3: the script runs no command"),
        ("#!/usr/bin/perl\n#SBATCH -n2\nprint 1;\n", "job.sbatch:1: a script for /usr/bin/perl"),
    ],
)
def test_bad_scripts_are_one_line_naming_file_and_line(text, message):
    with pytest.raises(ConfigError) as error:
        from_slurm(text, "job.sbatch")
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_dos_line_breaks_read_as_unix_ones():
    dos = from_slurm("#!/bin/sh\r\n#SBATCH -n2\r\nsrun ./x\r\n", "job.sbatch").document
    assert dos == from_slurm("#!/bin/sh\n#SBATCH -n2\nsrun ./x\n", "job.sbatch").document
    assert dos.command == ["./x"]
