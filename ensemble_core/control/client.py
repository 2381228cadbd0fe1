"""Asking a running ensemble, through the control socket in its state directory."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from ensemble_core.control.unix_socket import SOCKET_NAME, socket_address
from ensemble_core.errors import ConfigError, EnsembleError

#: How long an answer may take: an action waits for the controller to perform it (grow and
#: shrink are bounded by the controller itself).
ANSWER_SECONDS = 90.0


class NotRunning(EnsembleError):
    """No controller answers in this state directory."""


def ask(directory: str | Path, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request to the controller of `directory`; its answer (`ok` true), or
    ConfigError with the controller's words, or NotRunning."""
    path = Path(directory) / SOCKET_NAME
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.settimeout(ANSWER_SECONDS)
    try:
        with socket_address(path) as address:
            connection.connect(address)
        connection.sendall(json.dumps(request).encode() + b"\n")
        reply = connection.makefile("rb").readline()
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunning(f"{directory}: no controller is running this ensemble") from None
    except TimeoutError:
        raise EnsembleError(
            f"{directory}: the controller did not answer within {ANSWER_SECONDS:g} s"
        ) from None
    except OSError as error:
        raise EnsembleError(f"{path}: cannot ask the controller ({error.strerror})") from None
    finally:
        connection.close()
    if not reply:
        raise EnsembleError(f"{directory}: the controller closed the connection without answer")
    answer = json.loads(reply)
    if not answer.get("ok"):
        raise ConfigError(answer.get("error", "the controller refused the request"))
    return answer
