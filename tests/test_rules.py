"""The rules schema, the located error messages, and the engine's firing semantics."""

import json
from pathlib import Path

import pytest

from ensemble_core.errors import ConfigError
from ensemble_core.members.settings import SettingError, check_settings, members_with
from ensemble_core.metrics import Metrics
from ensemble_core.rules.conditions import parse_condition, parse_duration
from ensemble_core.rules.engine import RuleEngine, metric_group
from ensemble_core.rules.loader import library_names, load, load_rules, parse
from ensemble_core.rules.metric_names import (
    COUNTER_KEYS,
    GAUGES,
    STATISTIC_NAMES,
    check_metric_name,
)
from ensemble_core.rules.schema import EnsembleFile, Limits, Rule

EXAMPLES = sorted((Path(__file__).parents[1] / "examples" / "ensembles").glob("*.yaml"))


def rules(*items: dict) -> list[Rule]:
    return [Rule.model_validate(item) for item in items]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    "when, value, fires",
    [
        (3, 3, True),
        (3, 4, False),
        ("> 5", 6, True),
        ("> 5", 5, False),
        ("<= 2.5", 2.5, True),
        (">= 30s", 29.9, False),
        (">= 1m", 60, True),
        ("== 0", 0, True),
        ("!= 0", 0, False),
        ("500ms", 0.5, True),
    ],
)
def test_conditions(when, value, fires):
    assert parse_condition(when)(value) is fires


@pytest.mark.parametrize("bad", ["about 5", "> five", "", ">>3", True])
def test_bad_conditions_say_what_is_expected(bad):
    with pytest.raises(ValueError, match="comparison"):
        parse_condition(bad)


def test_durations():
    assert parse_duration("5m") == 300
    assert parse_duration(2) == 2.0
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="negative"):
        parse_duration(-1)


def test_metric_names_map_to_their_group():
    assert metric_group("count.sleep.success") == "sleep"
    assert metric_group("mean.my-group-pending") == "my-group"
    assert metric_group("queue.pending") == "*"


def test_repetitions_default_to_once_like_ensemble_python():
    engine = RuleEngine(
        rules({"trigger": "job-finish", "action": {"name": "grow"}}), Limits(), Clock()
    )
    fired = [len(engine.job_event("finish", "g", job)) for job in range(3)]
    assert fired == [1, 0, 0]


def test_backoff_counts_evaluations_like_ensemble_python():
    engine = RuleEngine(
        rules(
            {
                "trigger": "job-finish",
                "name": "sleep",
                "action": {"name": "grow", "repetitions": 3, "backoff": 2},
            }
        ),
        Limits(),
        Clock(),
    )
    fired = [bool(engine.job_event("finish", "sleep", job)) for job in range(8)]
    assert fired == [True, False, False, True, False, False, True, False]


def test_group_filter_and_name_alias():
    engine = RuleEngine(
        rules(
            {"trigger": "job-success", "group": "a", "action": {"name": "grow", "repetitions": 9}},
            {"trigger": "job-finish", "name": "b", "action": {"name": "shrink", "repetitions": 9}},
        ),
        Limits(),
        Clock(),
    )
    assert engine.job_outcome("success", "b", 1) == []
    assert [f.index for f in engine.job_outcome("success", "a", 1)] == [0]
    assert [f.index for f in engine.job_event("finish", "b", 1)] == [1]


def test_outcome_triggers_cover_their_outcomes():
    engine = RuleEngine(
        rules({"trigger": "job-fail", "action": {"name": "grow", "repetitions": 9}}),
        Limits(),
        Clock(),
    )
    assert engine.job_outcome("success", "g", 1) == []
    assert engine.job_outcome("cancelled", "g", 1) == []
    assert len(engine.job_outcome("oom", "g", 1)) == 1
    assert len(engine.job_outcome("failed", "g", 2)) == 1


def test_ensemble_python_state_aliases():
    rule = Rule.model_validate({"trigger": "job-sched", "action": {"name": "grow"}})
    assert rule.key == "job-priority"
    engine = RuleEngine([rule], Limits(), Clock())
    assert "priority" in engine.job_event_names


def test_cooldown_is_time_between_runs():
    clock = Clock()
    engine = RuleEngine(
        rules(
            {
                "trigger": "metric",
                "name": "queue.pending",
                "when": "> 0",
                "action": {"name": "grow", "repetitions": 5, "cooldown": "1m"},
            }
        ),
        Limits(),
        clock,
    )

    def value(name):
        return 3.0

    assert len(engine.all_metrics(value)) == 1
    clock.now = 59
    assert engine.all_metrics(value) == []
    clock.now = 61
    assert len(engine.all_metrics(value)) == 1


def test_resubmit_repetitions_count_per_job():
    engine = RuleEngine(
        rules({"trigger": "job-oom", "action": {"name": "resubmit", "repetitions": 2}}),
        Limits(),
        Clock(),
    )

    def resubmits(job):
        (index,) = engine.resubmit_rules("oom", "g", job) or (None,)
        return index is not None and engine.spend_resubmit(index, "g", job) is not None

    assert engine.job_outcome("oom", "g", "a") == []
    assert [resubmits("a") for _ in range(3)] == [True, True, False]
    assert resubmits("b")
    engine.forget("a")
    assert resubmits("a")


def test_metric_rules_fire_on_their_group_when_true():
    metrics = Metrics()
    engine = RuleEngine(
        rules(
            {
                "trigger": "metric",
                "name": "count.sleep.success",
                "when": 2,
                "action": {"name": "grow"},
            }
        ),
        Limits(),
        Clock(),
    )
    metrics.count("sleep", "success")
    assert engine.metrics_changed(["sleep"], metrics.value) == []
    metrics.count("sleep", "success")
    assert engine.metrics_changed(["other"], metrics.value) == []
    assert len(engine.metrics_changed(["sleep"], metrics.value)) == 1


def test_queue_gauges_add_up_the_groups_and_ask_for_the_oldest_wait():
    metrics = Metrics(oldest_pending=lambda: 42.0)
    metrics.count("a", "pending", 2)
    metrics.count("b", "pending")
    metrics.count("b", "running")
    assert metrics.value("queue.pending") == 3.0
    assert metrics.value("queue.running") == 1.0
    assert metrics.value("queue.oldest-pending") == 42.0
    assert metrics.value("queue.nonsense") is None
    assert metrics.value("mean.a-duration") is None


def test_global_limit_stops_firing_and_says_why():
    engine = RuleEngine(
        rules({"trigger": "job-success", "action": {"name": "grow", "repetitions": 100}}),
        Limits(max_actions=3),
        Clock(),
    )
    fired = sum(len(engine.job_outcome("success", "g", job)) for job in range(10))
    assert fired == 3
    assert "limits.max_actions" in engine.exhausted


def test_interval_rules_are_due_every_period():
    clock = Clock()
    engine = RuleEngine(
        rules(
            {"trigger": "interval", "every": "10s", "action": {"name": "grow", "repetitions": 2}}
        ),
        Limits(),
        clock,
    )
    engine.start()
    assert engine.next_interval() == 10
    clock.now = 10
    assert len(engine.due_intervals()) == 1
    clock.now = 15
    assert engine.due_intervals() == []
    clock.now = 20
    assert len(engine.due_intervals()) == 1


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(path):
    assert load(str(path)).rules


def test_merged_rule_files_keep_every_limit_and_heartbeat_they_set(tmp_path):
    first = tmp_path / "limits.yaml"
    first.write_text("limits: {max_jobs: 50000}\nrules: []\n")
    merged = load_rules([str(first), "grow-on-backlog"])
    assert merged.limits.max_jobs == 50000 and merged.limits.max_actions == 1000
    assert merged.heartbeat == 5


def test_shared_rules_load_by_name():
    assert library_names() == ["grow-on-backlog", "retry-oom", "retry-timeout"]
    merged = load_rules(["retry-oom", "retry-timeout"])
    assert [rule.trigger for rule in merged.rules] == ["job-oom", "job-timeout"]
    assert merged.rules[0].action.changes == {"memory_mb": "x2"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("rules:\n  - trigger: start\n   action: [\n", "x.yaml:3: YAML syntax error"),
        (
            "rules:\n  - trigger: job-oomm\n    action: {name: grow}\n",
            "x.yaml:2: rules[0].trigger: unknown trigger 'job-oomm': use start, interval",
        ),
        (
            "rules:\n  - trigger: start\n    action: {name: explode}\n",
            "x.yaml:3: rules[0].action.name: Input should be 'submit', 'resubmit'",
        ),
        (
            'rules:\n  - trigger: metric\n    name: count.a.success\n    when: "about 5"\n'
            "    action: {name: grow}\n",
            "x.yaml:4: rules[0].when: when: 'about 5' is not a number (means ==) or a comparison",
        ),
        (
            "jobs:\n  - {name: a, command: x}\nrules:\n  - trigger: start\n"
            "    action: {name: submit, label: b}\n",
            "x.yaml:5: rules[0].action.label: submit of unknown job group 'b' (groups: a)",
        ),
        (
            "jobs:\n  - name: a\n    command: x\n    count: -1\n",
            "x.yaml:4: jobs[0].count: must be at least 0 (got -1)",
        ),
        (
            "rules:\n  - trigger: start\n    acton: {name: grow}\n",
            "x.yaml:3: rules[0].acton: unknown key",
        ),
        ("- 1\n- 2\n", "x.yaml:1: top level: expected a mapping"),
        (
            "custom: |\n  def f(): pass\nrules: []\n",
            "x.yaml:1: custom: code in the YAML is not run",
        ),
    ],
)
def test_bad_input_names_file_line_place_and_fix(text, expected):
    with pytest.raises(ConfigError) as error:
        parse(text, "x.yaml")
    assert str(error.value).startswith(expected), str(error.value)
    assert "\n" not in str(error.value)


def test_missing_file_lists_shared_names():
    with pytest.raises(ConfigError, match=r"no such file.*retry-oom"):
        load("nope.yaml")


def test_schema_is_json():
    schema = EnsembleFile.model_json_schema()
    json.dumps(schema)
    assert {"jobs", "rules", "logging", "limits"} <= set(schema["properties"])


def test_metric_names_are_checked_against_what_the_metrics_hold():
    metrics = Metrics()
    assert all(metrics.gauge(gauge) is not None for gauge in GAUGES)
    assert metrics.gauge("pendng") is None
    metrics.count("a.b", "resubmitted")
    for key in COUNTER_KEYS:
        check_metric_name(f"count.a.b.{key}", ["a.b"])
    assert metrics.value("count.a.b.resubmitted") == 1
    for statistic in STATISTIC_NAMES:
        check_metric_name(f"{statistic}.my-group-pending")
    with pytest.raises(ValueError, match=r"unknown statistic 'median'.*did you mean 'mean'"):
        check_metric_name("median.a-duration")
    with pytest.raises(ValueError, match=r"unknown group 'b' \(known: a\)"):
        check_metric_name("count.b.success", ["a"])
    check_metric_name("count.b.success")  # groups unknown (a shared rules file): not checked


def test_member_settings_follow_each_members_signature():
    assert members_with("log_dir") == ["local", "kubernetes"]
    assert members_with("flux_uri") == ["flux"]
    assert check_settings("local", {"cores": 2, "grace_seconds": 1}) == {
        "cores": 2,
        "grace_seconds": 1.0,
    }
    with pytest.raises(SettingError, match=r"^grace_seconds: must be a number \(got '2s'\)$"):
        check_settings("local", {"grace_seconds": "2s"})
    with pytest.raises(SettingError, match=r"^inherit_environment: must be true or false"):
        check_settings("flux", {"inherit_environment": "yes"})
