"""One warm worker's connection to its member, as an asyncio protocol: the member's challenge,
the worker's hello, then its reports, each handled in the callback that received them.

With asyncio's streams a coroutine was resumed for every read (the reader's buffer fed, a
future set, a task stepped, the buffer copied out again): on this project's 2-core test machine
about a tenth of the controller thread's work per warm task, on the thread whose GIL the
workflow's own threads share. The protocol hands each read's complete lines to the member
straight away.

What the lines mean is the member's (`warm.WarmMember`): it checks the hello (`welcome`, which
answers the worker, or None to close the connection unheard), reads each report (`report`) and
learns of the end (`ended`, with why) of a connection it welcomed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from ensemble_core.members.warm_protocol import HELLO_SECONDS, MAX_LINE, encode, new_challenge

#: (the hello, the challenge it answers, the connection's transport) -> its worker, or None.
Welcome = Callable[[dict[str, Any], str, asyncio.WriteTransport], Any]


class WorkerConnection(asyncio.Protocol):
    """A connection from a worker; see the module's docstring."""

    def __init__(
        self,
        welcome: Welcome,
        report: Callable[[Any, bytes], None],
        ended: Callable[[Any, str], None],
    ) -> None:
        self._welcome = welcome
        self._report = report
        self._ended = ended
        self._challenge = new_challenge()
        self._transport: asyncio.WriteTransport | None = None
        self._hello_timer: asyncio.TimerHandle | None = None
        #: What `welcome` answered: the worker whose connection this is, once proven.
        self._worker: Any = None
        self._closed = False
        self._rest = bytearray()
        self._why = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self._transport = transport
        transport.write(encode({"challenge": self._challenge}))
        self._hello_timer = asyncio.get_running_loop().call_later(HELLO_SECONDS, self._close)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._rest += data  # a long line comes in many reads: appended to, not copied whole
        lines = []
        if b"\n" in data:
            *lines, self._rest = self._rest.split(b"\n")
        if len(self._rest) > MAX_LINE:
            self._close(f"its connection failed: a line longer than {MAX_LINE} bytes")
            return
        for line in lines:
            if self._worker is not None:
                self._report(self._worker, line)
            elif not self._hello(line):
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        if self._worker is not None:
            why = f"its connection failed: {exc}" if exc else self._why or "its connection ended"
            self._ended(self._worker, why)

    def _hello(self, line: bytes) -> bool:
        """The worker's first line: whether the member welcomed it (else it is closed)."""
        assert self._transport is not None and self._hello_timer is not None
        self._hello_timer.cancel()
        try:
            hello = json.loads(line)
        except ValueError:
            hello = None
        if isinstance(hello, dict):
            self._worker = self._welcome(hello, self._challenge, self._transport)
        if self._worker is None:
            self._close()
            return False
        return True

    def _close(self, why: str = "") -> None:
        self._closed = True
        self._why = why
        if self._transport is not None:
            self._transport.close()
