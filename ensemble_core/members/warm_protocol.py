"""What a warm worker and its member say to each other: JSON lines over one TCP connection.

The worker opens the connection (it may run on another node), the member sends a random
challenge, and the worker answers with an HMAC of it under the run's secret, which the member
put in the worker job's environment. So the secret never crosses the network, and a process that
merely reaches the port is closed without being heard. JSON rather than pickle: the member reads
what workers send, and nothing a worker sends may run code in the controller.

Member to worker: `run` (a task), `cancel`, `preload` (modules to import before forking),
`reuse` (modules whose in-process tasks may share a process, `warm_runner`), `stop`.
Worker to member: `hello`, then per task `start`, `exception` (type, note) and `done` (the wait
status, or none when the task never ran; `result`, base64, when its reused process sent the
task's result back: `warm_result`; `tidied` when the task left its output files empty and the
worker removed them), and `learned` (modules its tasks imported).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

#: The worker job's environment: where to connect, its name, the run's secret (the worker
#: removes all three from its environment before any task starts).
ADDRESS_ENV = "ENSEMBLE_WARM_ADDRESS"
NAME_ENV = "ENSEMBLE_WARM_WORKER"
SECRET_ENV = "ENSEMBLE_WARM_SECRET"
#: The longest line either side accepts (a task's message carries its environment).
MAX_LINE = 16 * 2**20
#: How long a connection may take to prove itself before it is closed.
HELLO_SECONDS = 10.0


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def new_secret() -> str:
    return secrets.token_hex(32)


def new_challenge() -> str:
    return secrets.token_hex(16)


def proof(secret: str, challenge: str) -> str:
    """What a worker that knows the secret answers to the challenge."""
    return hmac.new(secret.encode(), challenge.encode(), hashlib.sha256).hexdigest()


def proven(secret: str, challenge: str, answer: Any) -> bool:
    return isinstance(answer, str) and hmac.compare_digest(proof(secret, challenge), answer)
