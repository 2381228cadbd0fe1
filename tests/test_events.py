"""Outcomes derived from real recorded Flux journals."""

from collections import defaultdict

from conftest import read_journal

from ensemble_core.events import AttemptRecord, JobEvent, Outcome, exit_code

EXPECTED = {
    "success": (Outcome.SUCCESS, 0),
    "fail-exit1": (Outcome.FAILED, 1),
    "fail-exit3": (Outcome.FAILED, 3),
    "timeout": (Outcome.TIMEOUT, 142),
    "cancel": (Outcome.CANCELLED, 143),
    "multinode": (Outcome.SUCCESS, 0),
    "unsatisfiable": (Outcome.UNSATISFIABLE, None),
}


def test_basic_journal_yields_the_recorded_kinds():
    records: defaultdict[int, AttemptRecord] = defaultdict(AttemptRecord)
    kinds = {}
    cleaned = []
    for line in read_journal("journal-basic.jsonl"):
        event = JobEvent.from_dict(line)
        records[event.jobid].observe(event)
        kinds[event.jobid] = line["kind"]
        if event.name == "clean":
            cleaned.append(event.jobid)
    assert sorted(kinds.values()) == sorted(EXPECTED)
    assert len(cleaned) == len(EXPECTED)
    for jobid, kind in kinds.items():
        record = records[jobid]
        assert (record.outcome, record.exit_code) == EXPECTED[kind], kind


def test_reasons_name_what_happened():
    records: defaultdict[int, AttemptRecord] = defaultdict(AttemptRecord)
    kinds = {}
    for line in read_journal("journal-basic.jsonl"):
        records[line["id"]].observe(JobEvent.from_dict(line))
        kinds[line["kind"]] = line["id"]
    assert records[kinds["fail-exit3"]].reason == "failed with exit code 3"
    assert "only 2 eligible" in records[kinds["unsatisfiable"]].reason
    assert records[kinds["timeout"]].reason == "timeout: resource allocation expired"
    assert records[kinds["success"]].reason == "success"


def test_timings_come_from_the_events():
    record = AttemptRecord()
    for name, stamp in (("submit", 1.0), ("start", 3.0), ("finish", 10.0), ("clean", 11.0)):
        record.observe(JobEvent(1, name, stamp, {"status": 0} if name == "finish" else {}))
    assert (record.submit_time, record.start_time, record.end_time) == (1.0, 3.0, 10.0)


def test_exit_code_of_wait_status():
    assert exit_code(0) == 0
    assert exit_code(768) == 3
    assert exit_code(9) == 137
