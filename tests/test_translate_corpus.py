"""A corpus of batch scripts in the style of site documentation (tests/fixtures/batch/).

Each script's `.json` holds the JobSpec it must read as and what must be listed as not carried,
checked by hand against the scheduler's documentation. The Flux scripts are also handed to the
real `flux batch --dry-run`, whose jobspec must be the one the JobSpec read gives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES

from ensemble_core.spec import JobSpec
from ensemble_core.translate import BATCH, formats
from ensemble_core.translate.flux import to_flux
from ensemble_core.translate.flux_batch import to_flux_batch

CORPUS = sorted(
    path for path in (FIXTURES / "batch").rglob("*") if path.is_file() and path.suffix != ".json"
)
CORPUS = [path for path in CORPUS if path.name != "README.md"]
FLUX = shutil.which("flux")
needs_flux = pytest.mark.skipif(FLUX is None, reason="flux is not on PATH")


def _expected(path: Path) -> dict:
    return json.loads(path.with_name(path.name + ".json").read_text())


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_each_script_reads_as_its_recorded_jobspec(path):
    expected = _expected(path)
    text = path.read_text()
    assert formats.detect(text, path.name) == expected["format"]
    read = formats.read(text, path.name)
    assert read.document.model_dump(mode="json", exclude_defaults=True) == expected["jobspec"]
    assert read.lost == expected["lost"]


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_each_script_translates_to_every_format(path):
    spec = formats.read(path.read_text(), path.name).document
    for target in formats.FORMATS:
        written = formats.write(spec, target, image="busybox")
        back = formats.read(written.document, f"{path.name} as {target}", target).document
        assert back.command == spec.command, target
        assert all(isinstance(item, str) and item for item in written.lost)


def test_the_corpus_covers_every_dialect():
    dialects = {_expected(path)["format"] for path in CORPUS}
    assert dialects == {"slurm", "pbs", "lsf", "flux-batch", "kubernetes"}
    assert len(CORPUS) >= 20


def _dry_run(script: str, tmp_path: Path) -> dict:
    path = tmp_path / "job.sh"
    path.write_text(script)
    result = subprocess.run(
        [FLUX, "batch", "--dry-run", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _shape_and_attributes(jobspec: dict, spec: JobSpec) -> dict:
    """What both jobspecs must agree on (flux batch adds its broker command, the submitting
    environment, default output and a name of its own where the script sets none)."""
    system = jobspec["attributes"]["system"]
    user = {key: value for key, value in jobspec["attributes"].get("user", {}).items()}
    user.pop(BATCH, None)
    if user.get("group") == "default":
        del user["group"]
    output = system.get("shell", {}).get("options", {}).get("output", {})
    return {
        "resources": jobspec["resources"],
        "count": jobspec["tasks"][0]["count"],
        "duration": system.get("duration"),
        "queue": system.get("queue"),
        "bank": system.get("bank"),
        "dependencies": system.get("dependencies"),
        "cwd": system.get("cwd") if spec.cwd else None,
        "name": system.get("job", {}).get("name") if spec.name else None,
        "stdout": output.get("stdout") if spec.stdout else None,
        "stderr": output.get("stderr") if spec.stderr else None,
        "user": user,
    }


@needs_flux
@pytest.mark.parametrize("path", [path for path in CORPUS if path.suffix == ".flux"])
def test_flux_reads_each_flux_script_as_the_jobspec_read_gives(path, tmp_path):
    """The reader splits directives and shapes resources as flux-core itself does."""
    spec = formats.read(path.read_text(), path.name).document
    flux_says = _dry_run(path.read_text(), tmp_path)
    assert _shape_and_attributes(flux_says, spec) == _shape_and_attributes(
        to_flux(spec).document, spec
    )


WRITTEN = {
    "one task": JobSpec(command=["hostname"], walltime=90.5),
    "spread": JobSpec(
        command=["./app", "--size", "big one"],
        name="spread",
        group="sim",
        nodes=2,
        tasks=6,
        cores_per_task=2,
        gpus_per_task=1,
        exclusive=True,
        memory_mb=4096,
        attempt=2,
        stdout="out-{{id}}.log",
        stderr="err.log",
        cwd="/tmp/run dir",
        attributes={
            "system.queue": "batch",
            "system.bank": "proj",
            "system.dependencies": [{"scheme": "afterok", "value": "f2"}],
            "campaign": {"phase": 1},
        },
    ),
    "uneven": JobSpec(command=["x"], nodes=2, tasks=3, attributes={"a.b": 1}),
    "batch body": JobSpec(
        command=["/bin/sh", "-c", "set -e\nflux run -n4 ./step1\nflux run -n4 ./step2"],
        tasks=4,
        attributes={BATCH: True},
    ),
}


@needs_flux
@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_flux_reads_each_written_flux_script_as_to_flux_writes_the_job(name, tmp_path):
    spec = WRITTEN[name]
    flux_says = _dry_run(to_flux_batch(spec).document, tmp_path)
    assert _shape_and_attributes(flux_says, spec) == _shape_and_attributes(
        to_flux(spec).document, spec
    )
