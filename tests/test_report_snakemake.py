"""`snakemake --executor ensemble --ensemble-report FILE`: the report of a real workflow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

#: Three jobs of two rules; `count` fails its first attempt and Snakemake's --retries runs it
#: again (a retry Snakemake makes: a new ensemble job, not a resubmission by a rule).
SNAKEFILE = """
rule all:
    input: expand("out/{n}.txt", n=[1, 2]), "out/count.txt"

rule make:
    output: "out/{n}.txt"
    shell: "echo {wildcards.n} > {output}"

rule count:
    output: "out/count.txt"
    shell: "if [ ! -e tried ]; then touch tried; exit 3; fi; echo 2 > {output}"
"""


def test_the_workflow_ends_with_its_report(tmp_path):
    (tmp_path / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))
    result = subprocess.run(
        [SNAKEMAKE, "--executor=ensemble", "-j2", "--retries=1", "--ensemble-report=report.html"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Ensemble report of 4 job(s): {tmp_path / 'report.html'}" in result.stderr
    page = (tmp_path / "report.html").read_text()
    outcomes = re.search(r'Plotly\.newPlot\(\s*"chart-0",\s*(\[.*?\]),\s*\{', page, re.DOTALL)
    assert outcomes is not None
    traces = {trace["name"]: dict(zip(trace["y"], trace["x"], strict=True))
              for trace in json.loads(outcomes.group(1))}  # fmt: skip
    assert traces == {"success": {"count": 1, "make": 2}, "failed": {"count": 1, "make": 0}}
    assert "Ensemble report: " + tmp_path.name in page
