"""JobSpec <-> Flux batch script: RFC 36 directives split as flux-core splits them, flux batch's
resource shapes, attributes, and bad directives (the real `flux batch --dry-run` agreeing is in
test_translate_corpus.py)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from ensemble_core.errors import ConfigError
from ensemble_core.spec import JobSpec
from ensemble_core.translate import BATCH
from ensemble_core.translate.flux import to_flux
from ensemble_core.translate.flux_batch import from_flux_batch, to_flux_batch, words_of


def test_a_job_is_written_with_the_attributes_its_jobspec_has():
    spec = JobSpec(
        command=["python", "train.py"],
        group="train",
        name="t 1",
        nodes=1,
        tasks=4,
        cores_per_task=2,
        gpus_per_task=1,
        memory_mb=4096,
        walltime=90.5,
        attributes={"system.queue": "gpu", "campaign": "a;b"},
    )
    translation = to_flux_batch(spec)
    assert translation.document == (
        "#!/bin/bash\n"
        "# flux: '--job-name=t 1'\n"
        "# flux: -N1\n"
        "# flux: -n4\n"
        "# flux: -c2\n"
        "# flux: -g1\n"
        "# flux: -t90.5s\n"
        "# flux: --queue=gpu\n"
        "# flux: '--setattr=user.group=\"train\"'\n"
        "# flux: '--setattr=user.campaign=\"a;b\"'\n"
        "# flux: '--setattr=user.ensemble={\"memory_mb\": 4096}'\n"
        "\n"
        "flux run -N1 -n4 -c2 -g1 python train.py\n"
    )
    assert translation.lost == ["memory_mb (not enforced by Flux jobspec v1)"]
    assert from_flux_batch(translation.document, "t.sh").document == spec


def test_a_batch_body_runs_once_without_a_launcher():
    spec = JobSpec(
        command=["/bin/bash", "-c", "flux run -n2 ./a\nflux run -n2 ./b"],
        tasks=2,
        attributes={BATCH: True},
    )
    translation = to_flux_batch(spec)
    assert translation.document.endswith("# flux: -n2\n\nflux run -n2 ./a\nflux run -n2 ./b\n")
    assert translation.lost == []
    assert "batch (a batch script's body runs once per task here" in to_flux(spec).lost[0]


def read(directives: str, body: str = "hostname") -> JobSpec:
    return from_flux_batch(f"#!/bin/sh\n{directives}\n{body}\n", "job.sh").document


@pytest.mark.parametrize(
    "directives",
    [
        "# flux: -N2 -n8 -c4",
        "# flux: --nodes=2 --nslots=8 --cores-per-slot=4",
        "# flux: --nodes 2 --nslots 8\n# flux: -c 4",
        "#flux: -N2\n#flux: -n8 -c4  # a comment",
        "## FLUX: -N 2 -n 8 -c 4",
    ],
)
def test_every_documented_directive_syntax_reads_the_same(directives):
    spec = read(directives)
    assert (spec.nodes, spec.tasks, spec.cores_per_task, spec.exclusive) == (2, 8, 4, False)


@pytest.mark.parametrize(
    ("directives", "expected"),
    [
        ("# flux: -N2", {"nodes": 2, "tasks": 2, "exclusive": True, "attributes": {BATCH: True}}),
        ("# flux: -n1 -t 30", {"walltime": 1800.0}),
        ("# flux: -n1 -t 1.5h", {"walltime": 5400.0}),
        ("# flux: -n1 --cwd=/data --job-name=x", {"cwd": "/data", "name": "x"}),
        ("# flux: -n1 --env=A=1 --env=B=x=y", {"environment": {"A": "1", "B": "x=y"}}),
        ("# flux: -n1 -S user.group=sim", {"group": "sim"}),
        ("# flux: -n1 -S user.ensemble='{\"attempt\": 3}'", {"attempt": 3}),
        ("# flux: -n1 --setattr=.user='{\"k\": 1}'", {"attributes": {"k": 1}}),
        (
            "# flux: -n1 -S foo=1 -S system.bar=x",
            {"attributes": {"system.foo": 1, "system.bar": "x"}},
        ),
        (
            "# flux: -n1 --dependency=afterok:f2?after=5",
            {
                "attributes": {
                    "system.dependencies": [{"scheme": "afterok", "value": "f2", "after": "5"}]
                }
            },
        ),
    ],
)
def test_directives_map_onto_jobspec_fields(directives, expected):
    dumped = read(directives).model_dump(exclude_defaults=True, exclude={"command"})
    assert dumped == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# flux: -n1\nx\n", "job.sh:1: not a Flux batch script: it must start with '#!'"),
        ("#!/bin/sh\n# flux: -x -n2\nx\n", "job.sh:2: --exclusive needs a node count (-N)"),
        ("#!/bin/sh\n# flux: -t 1h\nx\n", "job.sh:1: flux batch needs a number of slots (-n)"),
        (
            "#!/bin/sh\n# flux: -n1\n#flux: -c2\nx\n",
            "job.sh:3: the sentinel changed from '# flux:'",
        ),
        ("#!/bin/sh\n# flux: -n1\nx\n# flux: -c2\n", "job.sh:4: a 'flux:' directive after the"),
        ("#!/bin/sh\n# flux: nslots=2\nx\n", "job.sh:2: unknown directive 'nslots=2'"),
        ("#!/bin/sh\n# flux: --nodes-per-slot=2\nx\n", "job.sh:2: unknown option --nodes-per-slot"),
        ("#!/bin/sh\n# flux: --nsl=2\nx\n", "job.sh:2: unknown option --nsl"),
        ("#!/bin/sh\n# flux: -n1 -t 5y\nx\n", "job.sh:2: --time-limit must be a duration"),
        ('#!/bin/sh\n# flux: -n1 """\nx\n', "job.sh:2: cannot split the directive into words"),
        ("#!/bin/sh\n# flux: -n1 -S user.a=1 -S user.a.b=2\nx\n", "job.sh:2: --setattr=user.a.b=2"),
    ],
)
def test_bad_directives_are_one_line_naming_file_and_line(text, message):
    with pytest.raises(ConfigError) as error:
        from_flux_batch(text, "job.sh")
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


DIRECTIVES = [
    "-n1 --job-name='a b' --setattr=user.x='{\"k\": [1, 2]}'",
    '--env=A="two words" -S user.y=it\\\'s',
    "-N2 -n4 # trailing comment",
    "--setattr=user.z=(1) --output=o;p.log",
    "-S 'user.note=a|b&c'",
]


@pytest.mark.skipif(shutil.which("flux") is None, reason="flux is not on PATH")
def test_directives_split_into_the_words_flux_core_splits_them_into(tmp_path):
    """The same directive lines through flux-core's own RFC 36 DirectiveParser."""
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n" + "".join(f"# flux: {line}\n" for line in DIRECTIVES))
    program = (
        "import json, sys\n"
        "from flux.job.directives import DirectiveParser\n"
        "with open(sys.argv[1]) as f:\n"
        "    print(json.dumps([d.args for d in DirectiveParser(f).directives]))\n"
    )
    result = subprocess.run(
        ["flux", "python", "-c", program, str(script)], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == [words_of(line) for line in DIRECTIVES]
