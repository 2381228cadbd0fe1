"""ensemble-python's gRPC service (`EnsembleOperator`), served by a running ensemble.

`ensemble run FILE --grpc [HOST:]PORT` answers `RequestStatus` and `RequestAction` with the
messages of ensemble-python's protos/ensemble-service.proto (a copy is beside this file), so an
ensemble-operator-style controller can read the ensemble's status and drive it:

- `RequestStatus` -> `Response(payload=<the status JSON of ensemble status --json>, SUCCESS)`;
- `RequestAction(action="grow", payload='{"grow": 2}')`: the action is one of grow, shrink,
  submit, cancel, terminate; the payload a JSON object with `value` (or, as ensemble-python's
  members send it, the count under the action's own name) and `label` (the job group of submit
  and cancel). `SUCCESS` with `{"recorded": [...]}`, or `ERROR` with `{"error": "..."}`.

Every call needs the service's token, as the metadata `authorization: Bearer TOKEN` (or, for
clients that cannot set metadata such as ensemble-python's own, `"token"` in an action's
payload); without it the answer is `DENIED` and nothing happens. The service listens on
loopback unless a host is named; gRPC here is unencrypted, so a token sent to another host can
be read on the way.

The messages are built from a descriptor at run time rather than from generated code, so they
do not depend on the protobuf version that generated them.
"""

from __future__ import annotations

import functools
import hmac
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ensemble_core.actions import one_line
from ensemble_core.control.controls import Controls
from ensemble_core.errors import ConfigError, EnsembleError

log = logging.getLogger(__name__)

PACKAGE = "convergedcomputing.org.grpc.v1"
SERVICE = f"{PACKAGE}.EnsembleOperator"
#: The Response.ResultType values.
SUCCESS, ERROR, DENIED = 1, 2, 3
#: Calls served at once (status and actions are short; the controller serialises actions).
WORKERS = 4
#: How long close() lets calls in progress finish.
GRACE_SECONDS = 2.0


@functools.cache
def messages() -> dict[str, Any]:
    """The message classes of ensemble-service.proto: StatusRequest, ActionRequest, Response."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="ensemble-service.proto", package=PACKAGE, syntax="proto3"
    )

    def message(name: str, fields: list[tuple[str, int]]) -> descriptor_pb2.DescriptorProto:
        described = proto.message_type.add(name=name)
        for field_name, number in fields:
            described.field.add(
                name=field_name, number=number, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL
            )
        return described

    message("StatusRequest", [("member", 1), ("name", 2)])
    message("ActionRequest", [("member", 1), ("name", 2), ("action", 3), ("payload", 4)])
    response = message("Response", [("payload", 1)])
    response.field.add(
        name="status",
        number=4,
        type=field.TYPE_ENUM,
        type_name=f".{PACKAGE}.Response.ResultType",
        label=field.LABEL_OPTIONAL,
    )
    result_type = response.enum_type.add(name="ResultType")
    for number, name in enumerate(("UNSPECIFIED", "SUCCESS", "ERROR", "DENIED", "EXISTS")):
        result_type.value.add(name=name, number=number)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
        for name in ("StatusRequest", "ActionRequest", "Response")
    }


class GrpcService:
    """The EnsembleOperator service of one running ensemble, on a server of its own."""

    def __init__(self, controls: Controls, host: str, port: int, token: str) -> None:
        try:
            import grpc
        except ImportError:
            raise ConfigError(
                "--grpc needs grpcio and protobuf: pip install 'ensemble-executors[grpc]'"
            ) from None
        self._controls = controls
        self._token = token.encode()
        self._response = messages()["Response"]
        handlers = {
            "RequestStatus": grpc.unary_unary_rpc_method_handler(
                self.request_status,
                request_deserializer=messages()["StatusRequest"].FromString,
                response_serializer=self._response.SerializeToString,
            ),
            "RequestAction": grpc.unary_unary_rpc_method_handler(
                self.request_action,
                request_deserializer=messages()["ActionRequest"].FromString,
                response_serializer=self._response.SerializeToString,
            ),
        }
        self._server = grpc.server(ThreadPoolExecutor(max_workers=WORKERS))
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        where = f"[{host}]" if ":" in host else host
        try:
            self.port = self._server.add_insecure_port(f"{where}:{port}")
        except RuntimeError as error:
            raise ConfigError(f"--grpc {host}:{port}: cannot listen there ({error})") from None
        self.address = f"{where}:{self.port}"
        self._server.start()

    def close(self) -> None:
        self._server.stop(GRACE_SECONDS).wait()

    # The two calls ----------------------------------------------------------------------------

    def request_status(self, request: Any, context: Any) -> Any:
        if not self._authorized(context, None):
            return self._answer(DENIED, error=_DENIED)
        try:
            return self._response(payload=json.dumps(self._controls.status()), status=SUCCESS)
        except Exception as error:
            log.warning("ensemble: a gRPC status request failed: %s", one_line(error))
            return self._answer(ERROR, error=f"failed: {one_line(error)}")

    def request_action(self, request: Any, context: Any) -> Any:
        try:
            payload = json.loads(request.payload) if request.payload.strip() else {}
        except ValueError as error:
            payload = error
        if not self._authorized(context, payload if isinstance(payload, dict) else None):
            return self._answer(DENIED, error=_DENIED)
        if not isinstance(payload, dict):
            return self._answer(ERROR, error=f"the payload is not a JSON object ({payload})")
        name = request.action
        value = payload.get("value", payload.get(name))
        if name == "shrink" and isinstance(value, int) and value < 0:
            value = -value  # ensemble-python's members may send a shrink as a negative change
        try:
            recorded = self._controls.act(
                name, value, payload.get("label"), payload.get("target_member")
            )
        except (ConfigError, EnsembleError) as error:
            return self._answer(ERROR, error=str(error))
        except Exception as error:
            log.warning("ensemble: a gRPC action request failed: %s", one_line(error))
            return self._answer(ERROR, error=f"failed: {one_line(error)}")
        return self._answer(SUCCESS, recorded=recorded)

    def _answer(self, status: int, **payload: Any) -> Any:
        return self._response(payload=json.dumps(payload), status=status)

    def _authorized(self, context: Any, payload: dict[str, Any] | None) -> bool:
        given = ""
        for key, value in context.invocation_metadata():
            if key == "authorization" and value.startswith("Bearer "):
                given = value.removeprefix("Bearer ")
        if not given and payload is not None:
            given = str(payload.pop("token", ""))
        return hmac.compare_digest(given.encode(), self._token)


_DENIED = (
    "denied: give the service's token as the metadata 'authorization: Bearer TOKEN' "
    '(or "token" in an action\'s payload)'
)
