"""A Snakemake workflow on a real Flux whose Snakemake is killed (a lost login session) while its
jobs run, then followed again by the same command: the jobs that were running are followed to
their end, not submitted twice (counted on the instance).

Skipped where Flux is absent.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_flux_integration import flux_instance

from ensemble_core.testing.waiting import eventually

pytestmark = [
    pytest.mark.flux,
    pytest.mark.skipif(shutil.which("flux") is None, reason="flux is not on PATH"),
]

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
JOBS = 3


@pytest.fixture(scope="module")
def flux_uri():
    with flux_instance("--test-size=1") as instance:
        yield instance.uri


def flux_jobs(uri: str) -> list[str]:
    """Every job the instance has had (active or not)."""
    done = subprocess.run(
        ["flux", "jobs", "-a", "-n", "-o", "{id}"],
        env={**os.environ, "FLUX_URI": uri},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()


def snakemake(workdir: Path, uri: str, *extra: str) -> subprocess.Popen:
    command = [
        SNAKEMAKE,
        "--executor",
        "ensemble",
        "--ensemble-member",
        "flux",
        "--ensemble-detach",
        "-j",
        str(JOBS),
        *extra,
    ]
    return subprocess.Popen(
        command,
        cwd=workdir,
        env={**os.environ, "FLUX_URI": uri},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_killed_workflow_is_followed_again_not_resubmitted(tmp_path, flux_uri):
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            f"""
            rule all:
                input: expand("out/{{i}}.txt", i=range({JOBS}))
            rule slow:
                output: "out/{{i}}.txt"
                shell: "sleep 6; echo {{wildcards.i}} > {{output}}"
            """
        )
    )
    before = len(flux_jobs(flux_uri))
    first = snakemake(tmp_path, flux_uri)
    reached = eventually(lambda: len(flux_jobs(flux_uri)) - before >= JOBS, 60, every=0.2)
    assert reached, "the jobs never reached Flux"
    first.send_signal(signal.SIGKILL)  # the session is lost: the jobs go on on Flux
    first.communicate(timeout=60)
    assert len(flux_jobs(flux_uri)) - before == JOBS

    # What a user types after a lost session: Snakemake's own unlock, then the same command.
    unlock = subprocess.run([SNAKEMAKE, "--unlock"], cwd=tmp_path, capture_output=True, text=True)
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    second = snakemake(tmp_path, flux_uri, "--rerun-incomplete")
    output, _ = second.communicate(timeout=180)
    assert second.returncode == 0, output[-3000:]
    assert sorted(p.read_text() for p in (tmp_path / "out").glob("*.txt")) == [
        f"{i}\n" for i in range(JOBS)
    ]
    assert len(flux_jobs(flux_uri)) - before == JOBS  # followed, never submitted again
