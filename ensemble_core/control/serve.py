"""Starting and stopping the control transports of a running ensemble (`ensemble run`/`attach`).

The control socket is served whenever the run has a state directory; the gRPC service only when
`--grpc` asks for it. Both run on threads of their own and call only the controller's
thread-safe API. A socket that cannot be made (a state directory on a file system without Unix
sockets) costs the run nothing but `ensemble status` from outside, and says so.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ensemble_core.errors import ConfigError

if TYPE_CHECKING:
    from ensemble_core.control.controls import Controls

TOKEN_FILE = "grpc-token"
TOKEN_VARIABLE = "ENSEMBLE_GRPC_TOKEN"


def add_control_flags(parser: argparse.ArgumentParser) -> None:
    """`--grpc` and `--grpc-token-file`, for `ensemble run` and `ensemble attach`."""
    group = parser.add_argument_group("control from outside (see docs/status-and-report.md)")
    group.add_argument(
        "--grpc",
        type=parse_address,
        metavar="[HOST:]PORT",
        help="also serve ensemble-python's gRPC service (EnsembleOperator) there; loopback "
        "unless a host is named; 0 picks a free port",
    )
    group.add_argument(
        "--grpc-token-file",
        metavar="FILE",
        help=f"the token gRPC clients must give (default: ${TOKEN_VARIABLE}, else a new one "
        f"written to {TOKEN_FILE} in the state directory)",
    )


def parse_address(text: str) -> tuple[str, int]:
    """`--grpc [HOST:]PORT` as (host, port); loopback when no host is named (checked when the
    command line is read, before any job starts)."""
    host, colon, port = text.rpartition(":")
    host = host.strip("[]") if colon else "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535 or (colon and not host):
        raise argparse.ArgumentTypeError(
            f"'{text}': give [HOST:]PORT, such as 50051 (loopback) or 0.0.0.0:50051"
        )
    return host, number


class Serving:
    """The transports of one running ensemble; `close()` stops them (before the ensemble)."""

    def __init__(self) -> None:
        self._closers: list[Any] = []
        #: Where the gRPC service listens (HOST:PORT), when it was asked for.
        self.grpc_address: str | None = None

    def close(self) -> None:
        for close in reversed(self._closers):
            close()
        self._closers.clear()


def start_controls(ensemble: Any, journal: Any, args: argparse.Namespace) -> Serving:
    """Serve the control socket in the journal's directory (if any) and, with --grpc, gRPC."""
    serving = Serving()
    directory = None if journal is None else Path(journal.directory)
    if directory is None and not getattr(args, "grpc", None):
        return serving  # nothing to serve: nothing of it imported
    from ensemble_core.control.controls import Controls
    from ensemble_core.control.unix_socket import ControlSocket

    file = None if journal is None else (journal.command or {}).get("file")
    controls = Controls(ensemble, directory, file)
    if directory is not None:
        try:
            server = ControlSocket(controls, directory)
        except OSError as error:
            print(
                f"ensemble: no control socket in {directory} ({error.strerror}): "
                "`ensemble status` will read the journal only",
                file=sys.stderr,
            )
        else:
            server.start()
            serving._closers.append(server.stop)
    if getattr(args, "grpc", None):
        try:
            _start_grpc(controls, serving, directory, args)
        except BaseException:
            serving.close()
            raise
    return serving


def _start_grpc(
    controls: Controls, serving: Serving, directory: Path | None, args: argparse.Namespace
) -> None:
    from ensemble_core.control.grpc_service import GrpcService

    host, port = args.grpc
    token, where = _token(directory, args.grpc_token_file)
    service = GrpcService(controls, host, port, token)
    serving._closers.append(service.close)
    serving.grpc_address = service.address
    loopback = host in ("127.0.0.1", "::1", "localhost")
    note = "" if loopback else "; not loopback: the token travels unencrypted"
    print(f"ensemble: gRPC service on {service.address} (token: {where}{note})", file=sys.stderr)


def _token(directory: Path | None, file: str | None) -> tuple[str, str]:
    """The gRPC token and where it was found (or written)."""
    if file:
        try:
            token = Path(file).read_text().strip()
        except OSError as error:
            raise ConfigError(f"--grpc-token-file {file}: {error.strerror}") from None
        if not token:
            raise ConfigError(f"--grpc-token-file {file}: the file is empty; put a token in it")
        return token, file
    if os.environ.get(TOKEN_VARIABLE, "").strip():
        return os.environ[TOKEN_VARIABLE].strip(), f"${TOKEN_VARIABLE}"
    if directory is None:
        raise ConfigError(
            f"--grpc: this run has no state directory for its token: give --grpc-token-file "
            f"FILE or set {TOKEN_VARIABLE}"
        )
    token = secrets.token_urlsafe(32)
    path = directory / TOKEN_FILE
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as written:
        written.write(token + "\n")
    return token, str(path)
