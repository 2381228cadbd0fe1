"""Several members as users declare them: files and their errors, `ensemble run`, the API, the
Snakemake and Parsl front doors, and runs on two real queues at once (local + Flux, local +
Kubernetes), each with a burst rule that moves a group's jobs from one member to the other."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import parsl
import pytest
from parsl import python_app
from parsl.config import Config
from parsl.errors import ConfigurationError
from snakemake_interface_common.exceptions import WorkflowError

from ensemble_core.api import open_ensemble
from ensemble_core.errors import ConfigError
from ensemble_core.events import Outcome
from ensemble_core.matching import MEMBER_ATTRIBUTE
from ensemble_core.rules.loader import parse
from ensemble_core.spec import JobSpec
from parsl_ensemble import EnsembleExecutor
from snakemake_executor_plugin_ensemble.settings import ExecutorSettings, member_settings

ROOT = Path(__file__).parents[1]
ENSEMBLE = [sys.executable, "-m", "ensemble_core.cli"]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

TWO = """
members:
  small: {name: local, cores: 1}
  big: {name: local, cores: 4, features: [fast]}
"""


def ensemble(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ENSEMBLE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def run_json(path: Path, cwd: Path) -> dict:
    result = ensemble("run", str(path), "--json", "--no-state", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# Declaring members ------------------------------------------------------------------------------


BAD = {
    "both": (
        TWO + "member: {cores: 2}\n",
        ":5: member: give member: (one member) or members: (several, by name), not both",
    ),
    "default": (TWO + "default: smal\n", ":5: default: no member 'smal' (members: small, big); "),
    "name": (
        "members:\n  a/b: {name: local}\n",
        ":2: members.a/b: a member's name is letters, digits, '_', '.' or '-'",
    ),
    "kind": (
        "members:\n  hpc: {name: slurm}\n",
        ":2: members.hpc.name: unknown member 'slurm': choose one of local, flux, kubernetes",
    ),
    "setting": (
        "members:\n  hpc: {name: flux, cores: 2}\n",
        ":2: members.hpc.cores: is a setting of the local member, but the member is 'flux': "
        "drop it or choose the local member (members: {hpc: {name: local}})",
    ),
    "offers": (
        "members:\n  hpc: {name: flux, offers: {cpus: 2}}\n",
        ":2: members.hpc.offers.cpus: unknown key: an offer has cores, gpus, memory_mb, nodes, "
        "max_nodes",
    ),
    "features": (
        "members:\n  hpc: {name: flux, features: a100}\n",
        ":2: members.hpc.features: a list of words such as [x86_64, a100] (got 'a100')",
    ),
    "policy": (
        TWO + "routing: {policy: random}\n",
        ":5: routing.policy: Input should be 'first', 'least-backlog' or 'least-pending'",
    ),
    "group member": (
        TWO + "jobs:\n  - {name: sim, command: 'true', member: bigg}\n",
        ":6: jobs[0].member: no member 'bigg' (members: small, big); did you mean 'big'?",
    ),
    "route member": (
        TWO + "jobs:\n  - {name: sim, command: 'true'}\nrules:\n  - trigger: start\n"
        "    action: {name: route, label: sim, member: cloud}\n",
        ":9: rules[0].action.member: no member 'cloud' (members: small, big)",
    ),
    "route label": (
        TWO + "jobs:\n  - {name: sim, command: 'true'}\nrules:\n  - trigger: start\n"
        "    action: {name: route, label: sims, member: big}\n",
        ":9: rules[0].action.label: route of unknown job group 'sims' (groups: sim); did you",
    ),
    "metric": (
        TWO + "rules:\n  - trigger: metric\n    name: count.@smal.running\n"
        "    action: {name: terminate}\n",
        ":7: rules[0].name: a metric of no member 'smal' (members: small, big); did you mean",
    ),
    "one member": (
        "jobs:\n  - {name: sim, command: 'true'}\nrules:\n  - trigger: start\n"
        "    action: {name: submit, label: sim, member: big}\n",
        ":5: rules[0].action.member: no member 'big', but the run has one member: declare "
        "several under members:",
    ),
    "cancel member": (
        TWO + "rules:\n  - trigger: start\n    action: {name: cancel, member: big}\n",
        ":7: rules[0].action.member: the cancel action names no member (submit, resubmit, "
        "grow, shrink, route do)",
    ),
    "no members": ("default: hpc\n", ":1: default: default: is about several members"),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_declarations_are_one_line_naming_the_place(name: str) -> None:
    text, expected = BAD[name]
    with pytest.raises(ConfigError) as raised:
        parse(text, "f.yaml")
    message = str(raised.value)
    assert message.startswith(f"f.yaml{expected}"), message
    assert "\n" not in message


def test_a_shared_rules_file_names_members_known_at_run_time(tmp_path: Path) -> None:
    rules = tmp_path / "burst.yaml"
    rules.write_text("rules:\n  - trigger: job-oom\n    action: {name: resubmit, member: bigg}\n")
    parse(rules.read_text(), str(rules))  # alone: the members are not known yet
    with pytest.raises(ConfigError, match=r"burst.yaml:3: rules\[0\]\.action\.member: no member"):
        open_ensemble(rules=[str(rules)], members={"small": {}, "big": {"name": "local"}})


def test_burst_example_moves_the_groups_jobs_to_the_bigger_member(tmp_path: Path) -> None:
    example = ROOT / "examples" / "ensembles" / "burst.yaml"
    promised = json.loads(re.search(r"^# expect: (\{.*\})$", example.read_text(), re.M).group(1))
    report = run_json(example, tmp_path)
    for member, counts in promised["members"].items():
        for key, value in counts.items():
            assert report["members"][member][key] == value, (member, report["members"])
    routed = [entry["detail"] for entry in report["actions"] if entry["action"] == "route"]
    assert routed == ["sim: big", "sim: no route (as declared, or matched) (was big)"]
    assert set(report["member"]["members"]) == {"small", "big"}
    assert report["member"]["members"]["big"]["offers"]["cores"] == 4


def test_the_summary_shows_each_member_and_flags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text(
        TWO + "jobs:\n  - {name: sim, command: 'true', count: 2, requires: [fast]}\n"
        "rules:\n  - trigger: start\n    action: {name: submit, label: sim}\n"
    )
    result = ensemble("run", str(path), "--no-state", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    table = lines[lines.index("") + 1 :]
    assert table[0].split()[:4] == ["member", "submitted", "running", "success"]
    assert table[2].split()[:4] == ["big", "2", "0", "2"]  # the feature only big offers
    assert any(line.startswith("member small (local): nodes 1") for line in lines)
    refused = ensemble("run", str(path), "--cores", "2", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr == (
        f"ensemble: --cores: {path} declares several members (members:): set each one's "
        "settings in its entry there\n"
    )
    detached = ensemble("run", str(path), "--detach", cwd=tmp_path)
    assert (detached.returncode, detached.stderr) == (
        2,
        "ensemble: --detach: the jobs of small, big end with the controller; detach a run "
        "whose members are all flux or kubernetes\n",
    )


def test_the_api_takes_members_as_a_mapping_or_a_file(tmp_path: Path) -> None:
    file = tmp_path / "members.yaml"
    file.write_text(TWO + "default: big\nrouting: {policy: least-backlog}\n")
    logs = {"local": {"log_dir": str(tmp_path / "logs")}}
    for members in (str(file), {"small": {"cores": 1}, "big": {"name": "local", "cores": 4}}):
        opened = open_ensemble(members=members, defaults=logs)
        try:
            pinned = opened.submit(
                JobSpec(command=["true"], attributes={MEMBER_ATTRIBUTE: "small"})
            )
            other = opened.submit(JobSpec(command=["true"], cores_per_task=2))
            assert pinned.wait(30) is Outcome.SUCCESS and other.wait(30) is Outcome.SUCCESS
            assert (pinned.member_id.split("/")[0], other.member_id.split("/")[0]) == (
                "small",
                "big",
            )
            assert list((tmp_path / "logs").iterdir())  # the defaults reached the members
        finally:
            opened.close()
    with pytest.raises(ConfigError, match=r"^members: members\.big\.cores: must be at least 1"):
        open_ensemble(members={"big": {"cores": 0}})


# Front doors ------------------------------------------------------------------------------------


def test_snakemake_with_a_members_file_and_a_rule_that_names_its_member(tmp_path: Path) -> None:
    (tmp_path / "members.yaml").write_text(TWO)
    (tmp_path / "Snakefile").write_text(
        textwrap.dedent(
            """
            rule all:
                input: "big.txt", "any.txt"

            rule on_big:
                output: "big.txt"
                resources: ensemble_member="big"
                shell: "echo big > {output}"

            rule anywhere:
                output: "any.txt"
                shell: "echo any > {output}"
            """
        )
    )
    result = subprocess.run(
        [SNAKEMAKE, "--executor", "ensemble", "-j", "2", "--ensemble-members", "members.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "(small+big member; log:" in result.stderr
    summary = result.stderr[result.stderr.index("Ensemble summary:") :].splitlines()
    start = next(i for i, line in enumerate(summary) if line.startswith("member "))
    rows = {line.split()[0]: line.split()[1:4] for line in summary[start + 2 : start + 4]}
    assert rows == {"big": ["1", "0", "1"], "small": ["1", "0", "1"]}
    assert (tmp_path / ".snakemake" / "ensemble_logs").is_dir()  # the local members' logs
    with pytest.raises(WorkflowError, match=r"^--ensemble-cores: with --ensemble-members, each"):
        member_settings(ExecutorSettings(members="members.yaml", cores=2))
    assert member_settings(ExecutorSettings(members="members.yaml")) == {}


@python_app
def square(x, parsl_resource_specification=None):
    return x * x


def test_parsl_apps_go_to_the_member_their_resource_specification_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    members = {
        "small": {"name": "local", "cores": 1, "log_dir": str(tmp_path / "logs")},
        "big": {"name": "local", "cores": 4, "log_dir": str(tmp_path / "logs")},
    }
    with pytest.raises(ConfigurationError, match=r"members: members\.big\.core: the local"):
        EnsembleExecutor(members={"big": {"core": 4}})
    with pytest.raises(ConfigurationError, match=r"with members, each member's settings"):
        EnsembleExecutor(members=members, member_settings={"cores": 2})
    executor = EnsembleExecutor(members=members)
    dfk = parsl.load(Config(executors=[executor], run_dir=str(tmp_path / "runinfo")))
    try:
        futures = [
            square(2, parsl_resource_specification={"member": "big"}),
            square(3, parsl_resource_specification={"cores_per_task": 2}),
            square(4),
        ]
        assert [future.result(60) for future in futures] == [4, 9, 16]
        counts = executor.ensemble.snapshot()["members"]
        assert (counts["big"]["success"], counts["small"]["success"]) == (2, 1)
    finally:
        dfk.cleanup()


# Two real queues at once ------------------------------------------------------------------------

BURST = """
members:
  {first}
  {second}
default: {default}
jobs:
  - {{name: sim, command: sleep 0.2, count: 2}}
rules:
  - trigger: start
    action: {{name: submit, label: sim}}
  # The burst: once the default member has run two, the group's next jobs go to the other.
  - trigger: metric
    name: count.@{default}.success
    when: 2
    action: {{name: route, label: sim, member: {other}}}
  - trigger: metric
    name: count.@{default}.success
    when: 2
    action: {{name: submit, label: sim}}
"""


def _burst_counts(report: dict, default: str, other: str) -> None:
    assert report["exit"] == "completed"
    assert report["groups"]["sim"]["success"] == 4
    assert report["members"][default]["success"] == 2
    assert report["members"][other]["success"] == 2
    routed = [entry["detail"] for entry in report["actions"] if entry["action"] == "route"]
    assert routed == [f"sim: {other}"]


@pytest.mark.skipif(shutil.which("flux") is None, reason="flux is not on PATH")
def test_local_and_a_real_flux_instance_burst_from_one_to_the_other(tmp_path: Path) -> None:
    from test_flux_integration import flux_instance

    with flux_instance("--test-size=2") as instance:
        path = tmp_path / "burst.yaml"
        path.write_text(
            BURST.format(
                first=f"hpc: {{name: flux, flux_uri: '{instance.uri}'}}",
                second=f"here: {{name: local, cores: 2, log_dir: {tmp_path / 'logs'}}}",
                default="hpc",
                other="here",
            )
        )
        report = run_json(path, tmp_path)
        listed = subprocess.run(
            ["flux", "jobs", "-a", "-n", "-o", "{status}"],
            env={**os.environ, "FLUX_URI": instance.uri},
            capture_output=True,
            text=True,
            check=True,
        )
    _burst_counts(report, "hpc", "here")
    assert listed.stdout.split() == ["COMPLETED", "COMPLETED"]  # the two jobs before the burst


def test_local_and_a_real_kubernetes_control_plane_burst_from_one_to_the_other(
    tmp_path: Path,
) -> None:
    from kubernetes_cluster import SKIP_REASON, Cluster, control_plane_script

    if control_plane_script() is None:
        pytest.skip(SKIP_REASON)
    cluster = Cluster(tmp_path / "control-plane", "ensemble").start()
    try:
        path = tmp_path / "burst.yaml"
        path.write_text(
            BURST.format(
                first=f"here: {{name: local, cores: 2, log_dir: {tmp_path / 'logs'}}}",
                second=(
                    "cloud: {name: kubernetes, image: 'python:3.12-slim', namespace: ensemble, "
                    f"kubeconfig: '{cluster.kubeconfig}', log_dir: {tmp_path / 'k8s-logs'}}}"
                ),
                default="here",
                other="cloud",
            )
        )
        report = run_json(path, tmp_path)
        _burst_counts(report, "here", "cloud")
        assert report["member"]["members"]["cloud"]["member"] == "kubernetes"
        jobs = cluster.objects("jobs", report["member"]["members"]["cloud"]["selector"])
        assert len(jobs) == 2  # the two routed jobs ran as Kubernetes Jobs
    finally:
        cluster.stop()
