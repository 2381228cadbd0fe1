"""Parsl's own test suite against one EnsembleExecutor on the local member, one job per task
(tests/parsl_config.py) and with warm workers (tests/parsl_config_warm.py).

It runs in a subprocess, as Parsl runs it (`pytest $PARSL/tests --config FILE`), in a temporary
directory so its `pytest-parsl/` run directories stay out of the project. What is left out and
why: docs/parsl.md, "Parsl's test suite".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import parsl
import pytest

CONFIGS = [Path(__file__).with_name(name) for name in ("parsl_config.py", "parsl_config_warm.py")]
PARSL_TESTS = Path(parsl.__file__).parent / "tests"

#: -k expression: markers whose tests cannot pass here (see docs/parsl.md)
KEYWORDS = "not cleannet and not unix_filesystem_permissions_required"
#: tests that cannot pass with any memory-enforcing executor (see docs/parsl.md)
DESELECTED = ["test_error_handling/test_resource_spec.py::test_resource"]
SUITE_TIMEOUT_SECONDS = 480


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda path: path.stem)
def test_parsl_suite_passes(config, tmp_path):
    bin_dir = str(Path(sys.executable).parent)
    environment = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    environment.pop("PYTEST_ADDOPTS", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(PARSL_TESTS),
        "--config",
        str(config),
        "-k",
        KEYWORDS,
        *(f"--deselect={test}" for test in DESELECTED),
        "-q",
        "-rfEs",  # the short summary names failures and errors too (the tail is shown)
        "-p",
        "no:cacheprovider",
        "-c",
        os.devnull,
        "--rootdir",
        str(PARSL_TESTS),
    ]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT_SECONDS,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    summary = lines[-1] if lines else result.stderr.strip()[-2000:]
    print(f"Parsl's suite on EnsembleExecutor: {summary}")
    assert result.returncode == 0, "\n".join(lines[-80:]) + result.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary
