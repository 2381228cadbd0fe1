"""Shared test helpers: the recorded Flux data and a controller on the local member."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def read_journal(name: str) -> list[dict]:
    """A recorded Flux journal (`tests/fixtures/flux/*.jsonl`) as a list of records."""
    return [json.loads(line) for line in (FIXTURES / "flux" / name).read_text().splitlines()]


@pytest.fixture
def log_dir(tmp_path: Path) -> str:
    return str(tmp_path / "logs")


def journal_dies(journal) -> None:
    """What a killed controller leaves of its state journal: its locks go, its writer process
    reads the end of its input, writes what it was given and ends (the next journal waits)."""
    journal._db.close()
    journal._lock.close()
    journal._writer_lock.close()
    if journal.handoff.writer is not None:
        journal.handoff._to_writer.close()
