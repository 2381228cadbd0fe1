"""Bad input never comes back: the corpus in tests/bad_input/, one case per file with the line it
must give beside it (`case.yaml`, `case.expected`), and the cases a file cannot hold (a FIFO, a
directory, a file too large or nested 200,000 levels deep).

Each case is refused with exactly its line by the loader every front door shares, by `ensemble
validate` and `ensemble run` (exit 2, that line alone, no job), and through Parsl's and
Snakemake's rules settings. The front doors' own settings (flags, `member_settings`, resources)
are refused the same way, in the same words.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from parsl.errors import ConfigurationError
from parsl.executors.errors import InvalidResourceSpecification
from snakemake_interface_common.exceptions import WorkflowError

from ensemble_core.errors import ConfigError
from ensemble_core.rules.loader import load, load_rules
from ensemble_core.rules.yamlfile import MAX_FILE_BYTES
from parsl_ensemble.executor import EnsembleExecutor
from parsl_ensemble.resources import job_fields
from snakemake_executor_plugin_ensemble.jobspec import job_spec
from snakemake_executor_plugin_ensemble.settings import ExecutorSettings, member_settings

CORPUS = Path(__file__).parent / "bad_input"
CASES = sorted(CORPUS.glob("*.yaml"))
ENSEMBLE = [sys.executable, "-m", "ensemble_core.cli"]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
#: One case of each class of the corpus, run through the CLI as a user would.
THROUGH_THE_CLI = (
    "latin1",
    "utf16",
    "nested-3000-levels",
    "empty",
    "member-cores-four",
    "member-log-dir-is-a-file",
    "command-unbalanced-quote",
    "duplicate-rules-key",
    "metric-counter-typo",
    "change-x1e308",
    "every-nan",
    "count-1e9",
)


def expected(case: Path) -> str:
    return case.with_suffix(".expected").read_text().rstrip("\n")


def ensemble(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ENSEMBLE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def assert_refused(result: subprocess.CompletedProcess, line: str) -> None:
    assert (result.returncode, result.stderr, result.stdout) == (2, f"ensemble: {line}\n", "")


def test_every_case_has_its_expected_line():
    assert len(CASES) >= 50
    for case in CASES:
        assert case.with_suffix(".expected").read_text().count("\n") == 1, case.name


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.stem)
def test_the_loader_refuses_each_case_with_its_line(case, monkeypatch):
    monkeypatch.chdir(CORPUS)
    with pytest.raises(ConfigError) as error:
        load(case.name)
    assert str(error.value) == expected(case)


@pytest.mark.parametrize("name", THROUGH_THE_CLI)
def test_validate_and_run_print_the_line_alone_and_exit_2(name):
    case = CORPUS / f"{name}.yaml"
    for command in ("validate", "run"):
        assert_refused(ensemble(command, case.name, cwd=CORPUS), expected(case))


def test_a_rules_file_given_by_flag_is_read_the_same_way(tmp_path):
    case = CORPUS / "utf16.yaml"
    main = tmp_path / "main.yaml"
    main.write_text("jobs:\n  - {name: a, command: 'true'}\nrules: []\n")
    result = ensemble("run", str(main), "--rules", str(case), cwd=tmp_path)
    assert_refused(result, expected(case).replace(case.name, str(case), 1))


def test_parsl_rules_are_read_the_same_way(tmp_path):
    case = CORPUS / "latin1.yaml"
    executor = EnsembleExecutor(rules=[str(case)], member_settings={"log_dir": str(tmp_path)})
    with pytest.raises(ConfigurationError) as error:
        executor.start()
    assert str(error.value).endswith(expected(case).replace(case.name, str(case), 1))
    assert executor.ensemble is None


def test_snakemake_rules_are_read_the_same_way(tmp_path):
    case = CORPUS / "metric-statistic-unknown.yaml"
    (tmp_path / "Snakefile").write_text(
        'rule a:\n    output: "a.txt"\n    shell: "touch {output}"\n'
    )
    result = subprocess.run(
        [SNAKEMAKE, "--executor", "ensemble", "-j", "1", "--ensemble-rules", str(case)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = expected(case).replace(case.name, str(case), 1)
    assert result.returncode != 0
    assert [text for text in result.stderr.splitlines() if line in text], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "a.txt").exists()


def test_a_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "ensemble.yaml"
    os.mkfifo(fifo)
    result = ensemble("run", fifo.name, cwd=tmp_path, timeout=30)
    line = "ensemble.yaml: is a FIFO (named pipe), not a file: give the path of a YAML file"
    assert_refused(result, line)


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "rules.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"rules.yaml: is a directory, not a file"):
        load(str(tmp_path / "rules.yaml"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_an_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("rules: []\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match=r"rules.yaml: cannot read it \(Permission denied\)"):
        load(str(path))


def test_a_file_too_large_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as stream:
        stream.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ConfigError, match=r"huge.yaml: larger than 64 MB"):
        load(str(path))


def test_nesting_that_would_crash_the_c_parser_is_measured_first(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("rules: " + "[" * 200_000 + "]" * 200_000 + "\n")
    # In a child process: were the guard missing, the C composer would kill the interpreter.
    result = ensemble("validate", path.name, cwd=tmp_path)
    line = "deep.yaml:1: nested deeper than 32 levels of lists and mappings: no ensemble or "
    assert_refused(result, line + "rules file needs that; check the file")


def test_a_rules_list_is_merged_once_per_file_and_each_file_read_once(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("rules:\n  - trigger: job-oom\n    action: {name: resubmit}\n")
    assert len(load_rules([str(good), "retry-oom"]).rules) == 2
    with pytest.raises(ConfigError, match=r"^.*empty.yaml:1: the file is empty"):
        load_rules([str(good), str(CORPUS / "empty.yaml")])


# Front-door settings: the same values refused in the same words everywhere -------------------


def test_cli_snakemake_and_parsl_refuse_a_setting_in_the_same_words(tmp_path):
    example = Path(__file__).parents[1] / "examples" / "ensembles" / "hello-world.yaml"
    for setting, value, problem in [
        ("cores", 0, "must be at least 1 (got 0)"),
        ("max_nodes", -1, "must be at least 1 (got -1)"),
        ("memory_mb", 2 * 10**12, "must be at most 1e+12 (got 2000000000000)"),
        (
            "image",
            "python",
            "is a setting of the kubernetes member, but the member is 'local': drop it or "
            "choose the kubernetes member",
        ),
    ]:
        joiner = " " if setting == "image" else ": "
        flag = setting.replace("_", "-")
        result = ensemble("run", str(example), f"--{flag}", str(value), cwd=tmp_path)
        assert result.returncode == 2
        assert result.stderr.startswith(f"ensemble: --{flag}{joiner}{problem}"), result.stderr
        with pytest.raises(WorkflowError) as snakemake:
            member_settings(ExecutorSettings(**{setting: value}))
        assert str(snakemake.value).startswith(f"--ensemble-{flag}{joiner}{problem}")
        with pytest.raises(ConfigurationError) as parsl:
            EnsembleExecutor(member_settings={setting: value})
        assert f"member_settings['{setting}']{joiner}{problem}" in str(parsl.value)
    assert not (tmp_path / "ensemble-logs").exists()


def test_snakemake_refuses_a_negative_memory_overhead():
    with pytest.raises(WorkflowError, match=r"^--ensemble-memory-overhead-mb: must be at least 0"):
        member_settings(ExecutorSettings(memory_overhead_mb=-5))


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ({"mem_mb": -5}, "resource mem_mb=-5: must be at least 0 (got -5)"),
        ({"runtime": -3}, "resource runtime=-3: must be at least 0 (got -3)"),
        ({"_cores": float("inf")}, "resource _cores=inf: must be a finite number (got inf)"),
    ],
)
def test_snakemake_resources_that_would_run_without_a_limit_are_refused(resources, message):
    job = SimpleNamespace(name="a", jobid=1, resources=resources, attempt=1, rules=["a"])
    with pytest.raises(ValueError, match=re.escape(message)):
        job_spec(job, "true", "/work", "/logs/a.log")


def test_parsl_takes_one_rule_set_by_name_and_refuses_what_is_not_settings(tmp_path):
    executor = EnsembleExecutor(rules="retry-oom", member_settings={"log_dir": str(tmp_path)})
    executor.start()
    try:
        assert executor.ensemble is not None
        assert [rule.trigger for rule in executor.ensemble.config.rules] == ["job-oom"]
    finally:
        executor.shutdown()
    with pytest.raises(ConfigurationError, match=r"member_settings must be a dict .*, not list"):
        EnsembleExecutor(member_settings=["cores", 4])
    with pytest.raises(ConfigurationError, match=r"member_settings\['cores'\]: must be a whole"):
        EnsembleExecutor(member_settings={"cores": "four"})
    with pytest.raises(ConfigurationError, match=r"controller must be 'process' or 'thread'"):
        EnsembleExecutor(controller="fork")
    with pytest.raises(InvalidResourceSpecification, match=r"must be a dict .*, not list"):
        job_fields(["num_tasks", 2])
    with pytest.raises(InvalidResourceSpecification, match=r"walltime: must be a finite number"):
        job_fields({"walltime": float("nan")})
