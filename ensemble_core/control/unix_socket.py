"""The control socket: `control.sock` in the state directory, for `ensemble status` and `action`.

No network: a Unix socket that only its owner may open (mode 0600, made so before it listens),
and every connection's peer is checked (SO_PEERCRED) to be the user that runs the ensemble, so
another user who reaches it anyway (a directory made wide open) is refused. One request per
connection, one JSON line each way:

    {"request": "status", "recent": 10}
    {"request": "action", "name": "grow", "value": 2}      (also label for submit and cancel)

and the answer `{"ok": true, "status": {...}}` or `{"ok": true, "recorded": [...]}` or
`{"ok": false, "error": "..."}`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ensemble_core.control.controls import Controls
from ensemble_core.errors import ConfigError, EnsembleError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
#: The longest request line read (a request is a few dozen bytes).
MAX_REQUEST_BYTES = 64 * 1024
#: Longer socket paths do not fit in sockaddr_un (108 bytes with its final NUL).
_MAX_PATH_BYTES = 100


class ControlSocket(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Serves `Controls` on the state directory's socket, from threads of its own: `start`,
    then `stop`."""

    daemon_threads = True

    def __init__(self, controls: Controls, directory: Path) -> None:
        self.controls = controls
        self.path = Path(directory) / SOCKET_NAME
        self.path.unlink(
            missing_ok=True
        )  # left by a killed controller (the journal's lock is ours)
        with socket_address(self.path) as address:
            super().__init__(address, _Handler)
        self._stopping = False
        #: `stop` writes to it: the serving loop's select returns at once, without a poll's
        #: wait or a connection made only to wake it.
        self._wake, self._waker = os.pipe()
        self._serving = threading.Thread(target=self._serve, name="ensemble-control", daemon=True)

    def server_bind(self) -> None:
        super().server_bind()
        os.chmod(self.path, 0o600)  # before listen(): nobody else connects in between

    def server_close(self) -> None:
        super().server_close()
        self.path.unlink(missing_ok=True)
        for descriptor in (self._wake, self._waker):
            os.close(descriptor)

    def start(self) -> None:
        """Serve from a thread of its own."""
        self._serving.start()

    def stop(self) -> None:
        """End serving now (a request being answered finishes on its own thread) and close."""
        self._stopping = True
        os.write(self._waker, b"stop")
        if self._serving.is_alive():
            self._serving.join()
        self.server_close()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            selector.register(self._wake, selectors.EVENT_READ)
            while not self._stopping:
                for key, _ in selector.select():
                    if key.fileobj is self and not self._stopping:
                        self._handle_request_noblock()

    def answer(self, line: bytes) -> dict[str, Any]:
        """The answer to one request line."""
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            return _refused(f"a request is one JSON object on one line ({error})")
        kind = request.get("request")
        try:
            if kind == "status":
                recent = request.get("recent")
                return {"ok": True, "status": self.controls.status(recent)}
            if kind == "action":
                recorded = self.controls.act(
                    request.get("name"),
                    request.get("value"),
                    request.get("label"),
                    request.get("member"),
                )
                return {"ok": True, "recorded": recorded}
        except (ConfigError, EnsembleError) as error:
            return _refused(str(error))
        except Exception as error:  # the controller's answer: the request fails, the run goes on
            from ensemble_core.actions import one_line  # (`ensemble status` imports this module)

            log.warning("ensemble: a control request failed: %s", one_line(error))
            return _refused(f"failed: {one_line(error)}")
        return _refused(f"unknown request {kind!r}: give 'status' or 'action'")


class _Handler(socketserver.StreamRequestHandler):
    server: ControlSocket

    def handle(self) -> None:
        uid = peer_uid(self.request)
        if uid != os.getuid():
            answer = _refused(f"refused: this ensemble belongs to uid {os.getuid()}, not {uid}")
        else:
            line = self.rfile.readline(MAX_REQUEST_BYTES)
            answer = self.server.answer(line)
        with contextlib.suppress(OSError):  # the client went away: nobody to tell
            self.wfile.write(json.dumps(answer).encode() + b"\n")


def _refused(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


def peer_uid(connection: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket."""
    credentials = connection.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
    )
    _pid, uid, _gid = struct.unpack("3i", credentials)
    return uid


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """An address for `path` that fits in a socket address: the path itself, or for a deep
    state directory the same file reached through the directory's descriptor in /proc."""
    text = os.fspath(path)
    if len(text.encode()) <= _MAX_PATH_BYTES:
        yield text
        return
    descriptor = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{descriptor}/{path.name}"
    finally:
        os.close(descriptor)
