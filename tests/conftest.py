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
