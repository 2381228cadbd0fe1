"""A warm worker's connection as its member reads it (`warm_connection`), with a fake transport:
the hello first, then reports split however the reads fall, and one end per welcomed worker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from ensemble_core.members import warm_connection
from ensemble_core.members.warm_connection import WorkerConnection


class Transport(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Member:
    def __init__(self, welcome: bool = True) -> None:
        self.welcomes: list[tuple[dict[str, Any], str]] = []
        self.reports: list[tuple[str, bytes]] = []
        self.ends: list[tuple[str, str]] = []
        self.answer = "w1" if welcome else None

    def welcome(self, hello: dict[str, Any], challenge: str, transport: Any) -> str | None:
        self.welcomes.append((hello, challenge))
        return self.answer

    def connect(self) -> tuple[WorkerConnection, Transport]:
        connection = WorkerConnection(self.welcome, self.reports_to, self.ended)
        transport = Transport()
        connection.connection_made(transport)
        return connection, transport

    def reports_to(self, worker: str, line: bytes) -> None:
        self.reports.append((worker, bytes(line)))

    def ended(self, worker: str, why: str) -> None:
        self.ends.append((worker, why))


def test_hello_then_reports_split_across_reads_then_one_end():
    async def scenario() -> tuple[Member, Transport]:
        member = Member()
        connection, transport = member.connect()
        challenge = json.loads(transport.written[0])["challenge"]
        connection.data_received(b'{"name": "w1", "proof": "p"}\n{"op": "st')
        connection.data_received(b'art", "id": "warm_1"}\n{"op": "done"')
        connection.data_received(b', "id": "warm_1", "status": 0}\n')
        connection.connection_lost(None)
        assert member.welcomes == [({"name": "w1", "proof": "p"}, challenge)]
        return member, transport

    member, transport = asyncio.run(scenario())
    assert [json.loads(line)["op"] for _, line in member.reports] == ["start", "done"]
    assert member.ends == [("w1", "its connection ended")] and not transport.closed


def test_a_hello_refused_or_unreadable_closes_the_connection_unheard():
    async def scenario(first: bytes, welcome: bool) -> tuple[Member, Transport]:
        member = Member(welcome)
        connection, transport = member.connect()
        connection.data_received(first + b'{"op": "done", "id": "warm_1"}\n')
        connection.connection_lost(None)
        return member, transport

    for first, welcome in [(b'{"name": "w1"}\n', False), (b"[1, 2]\n", True), (b"{\n", True)]:
        member, transport = asyncio.run(scenario(first, welcome))
        assert transport.closed and member.reports == [] and member.ends == []


def test_no_hello_in_time_or_a_line_too_long_closes_it(monkeypatch):
    monkeypatch.setattr(warm_connection, "HELLO_SECONDS", 0.01)
    monkeypatch.setattr(warm_connection, "MAX_LINE", 100)

    async def silent() -> Transport:
        _, transport = Member().connect()
        await asyncio.sleep(0.1)
        return transport

    assert asyncio.run(silent()).closed

    async def too_long() -> tuple[Member, Transport]:
        member = Member()
        connection, transport = member.connect()
        connection.data_received(b'{"name": "w1"}\n')
        connection.data_received(b"x" * 60)
        connection.data_received(b"x" * 41)
        connection.connection_lost(None)
        return member, transport

    member, transport = asyncio.run(too_long())
    assert transport.closed
    assert member.ends == [("w1", "its connection failed: a line longer than 100 bytes")]
