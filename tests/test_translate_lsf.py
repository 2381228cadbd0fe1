"""JobSpec <-> LSF batch script: bsub's options as whole words, resource requirement strings,
GPUs, limits in LSF's units, arrays and dependency conditions."""

from __future__ import annotations

import pytest
from test_translate_pbs import SPREAD as PBS_SPREAD

from ensemble_core.errors import ConfigError
from ensemble_core.spec import JobSpec
from ensemble_core.translate import ARRAY, DEPENDENCIES
from ensemble_core.translate.lsf import from_lsf, to_lsf

#: The PBS tests' spread job, with what LSF carries and PBS does not.
SPREAD = PBS_SPREAD.model_copy(
    update={
        "environment": {},
        "stdout": "out.{{id}}.log",
        "attributes": {
            ARRAY: "1-10%2",
            DEPENDENCIES: [
                {"scheme": "afterok", "value": "7"},
                {"scheme": "afterany", "value": "8"},
            ],
        },
    }
)


def test_a_spread_job_is_slots_per_host_with_cores_and_gpus():
    translation = to_lsf(SPREAD)
    assert translation.document == (
        "#!/bin/bash\n"
        "#BSUB -J run[1-10]%2\n"
        "#BSUB -n 8\n"
        '#BSUB -R "span[ptile=4] affinity[core(2)]"\n'
        '#BSUB -gpu "num=1/task"\n'
        "#BSUB -x\n"
        "#BSUB -M 1024MB\n"
        "#BSUB -W 1:00\n"
        '#BSUB -w "done(7) && ended(8)"\n'
        '#BSUB -cwd "/scratch/run 1"\n'
        "#BSUB -oo out.%J.log\n"
        "\n"
        "mpirun -n 8 ./app --n 3\n"
    )
    assert translation.lost == []
    assert from_lsf(translation.document, "run.lsf").document == SPREAD


def test_what_lsf_cannot_hold_is_listed():
    translation = to_lsf(JobSpec(command=["x"], nodes=3, tasks=4, walltime=61, disk_mb=1))
    assert translation.lost == [
        "nodes=3 (4 tasks do not share 3 nodes evenly: LSF places them)",
        "disk_mb=1 (LSF limits no job's disk)",
        "walltime=61s exactly (LSF counts whole minutes)",
    ]
    assert "#BSUB -W 0:02\n" in translation.document


def read(directives: str, body: str = "hostname") -> JobSpec:
    return from_lsf(f"#!/bin/bash\n{directives}\n{body}\n", "job.lsf").document


@pytest.mark.parametrize(
    ("directives", "expected"),
    [
        ("#BSUB -n 4 -R 'span[hosts=1]'", {"nodes": 1, "tasks": 4}),
        ('#BSUB -n 6 -R "span[ptile=4]"', {"nodes": 2, "tasks": 6}),
        ('#BSUB -n 2\n#BSUB -R "affinity[core(3)]"', {"tasks": 2, "cores_per_task": 3}),
        ("#BSUB -n 2 -M 1GB", {"tasks": 2, "memory_mb": 2048}),
        ("#BSUB -M 2048", {"memory_mb": 2}),
        ("#BSUB -M 1.5G", {"memory_mb": 1536}),
        ("#BSUB -W 45", {"walltime": 2700.0}),
        ("#BSUB -W 2:30/hostA", {"walltime": 9000.0}),
        ('#BSUB -gpu "num=2/task" -n 2', {"tasks": 2, "gpus_per_task": 2}),
        (
            '#BSUB -gpu "num=4" -n 4 -R "span[ptile=2]"',
            {"nodes": 2, "tasks": 4, "gpus_per_task": 2},
        ),
        ("#BSUB -cwd /data -x", {"cwd": "/data", "exclusive": True}),
        ('#BSUB -env "all, A=1,B=two"', {"environment": {"A": "1", "B": "two"}}),
        ("#BSUB -n 2,8", {"tasks": 2}),
    ],
)
def test_options_map_onto_jobspec_fields(directives, expected):
    dumped = read(directives).model_dump(exclude_defaults=True, exclude={"command", "attributes"})
    assert dumped == expected


def test_array_names_and_dependency_conditions():
    spec = read('#BSUB -J "sweep[1-100:2]%10"\n#BSUB -w "done(12) && exit(13) && started(14)"')
    assert spec.name == "sweep"
    assert spec.attributes == {
        ARRAY: "1-100:2%10",
        DEPENDENCIES: [
            {"scheme": "afterok", "value": "12"},
            {"scheme": "afternotok", "value": "13"},
            {"scheme": "afterstart", "value": "14"},
        ],
    }
    either = from_lsf('#BSUB -w "done(1) || done(2)"\nx\n', "job.lsf")
    assert either.lost == [
        'line 1: -w "done(1) || done(2)" (only done(), ended(), exit() and started() joined by &&)'
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#BSUB -n4\nx\n", "job.lsf:1: unknown option -n4"),
        ("#BSUB --help\nx\n", "job.lsf:1: unknown option --help"),
        ("#BSUB -n\nx\n", "job.lsf:1: -n needs a value"),
        ("#BSUB -n four\nx\n", "job.lsf:1: -n must be a whole number"),
        ("#BSUB -W 1h\nx\n", "job.lsf:1: -W must be [hours:]minutes, not '1h'"),
        ("#BSUB -M lots\nx\n", "job.lsf:1: -M must be a size such as 4GB"),
        ("#BSUB -J 'a[1-2'\nx\n", "job.lsf:1: -J a[1-2: a job name is NAME or NAME[INDEXES]"),
    ],
)
def test_bad_options_are_one_line_naming_file_and_line(text, message):
    with pytest.raises(ConfigError) as error:
        from_lsf(text, "job.lsf")
    assert str(error.value).startswith(message), str(error.value)
