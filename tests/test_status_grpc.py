"""The gRPC service a running ensemble serves with `--grpc`, spoken to as ensemble-python's
clients speak: stubs generated from its protos/ensemble-service.proto (the copy beside the
service), not from the service's own message classes."""

from __future__ import annotations

import argparse
import importlib
import json
import stat
import sys
from pathlib import Path

import pytest

grpc = pytest.importorskip("grpc", reason="the gRPC service is the `grpc` extra")
protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools compiles the proto")

from ensemble_core.control.grpc_service import messages  # noqa: E402
from ensemble_core.control.serve import parse_address, start_controls  # noqa: E402
from ensemble_core.ensemble import Ensemble  # noqa: E402
from ensemble_core.errors import ConfigError  # noqa: E402
from ensemble_core.members import create_member  # noqa: E402
from ensemble_core.rules.loader import parse  # noqa: E402
from ensemble_core.state import StateJournal  # noqa: E402

PROTO = Path(__file__).parents[1] / "ensemble_core" / "control" / "ensemble-service.proto"

RULES = """
jobs:
  - {{name: held, command: "sh -c 'while [ ! -e {release} ]; do sleep 0.05; done'"}}
  - {{name: quick, command: "true", count: 2}}
rules:
  - trigger: start
    action: {{name: submit, label: held}}
"""


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """ensemble_service_pb2 and _pb2_grpc, as ensemble-python generates them."""
    out = tmp_path_factory.mktemp("generated")
    status = protoc.main(
        [
            "protoc",
            f"-I{PROTO.parent}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            PROTO.name,
        ]
    )
    assert status == 0
    sys.path.insert(0, str(out))
    try:
        yield (
            importlib.import_module("ensemble_service_pb2"),
            importlib.import_module("ensemble_service_pb2_grpc"),
        )
    finally:
        sys.path.remove(str(out))


@pytest.fixture
def served(tmp_path):
    """A running ensemble (one held job) with its gRPC service on a free loopback port."""
    release = tmp_path / "release"
    member = create_member("local", cores=2, nodes=1, max_nodes=3, log_dir=str(tmp_path / "logs"))
    journal = StateJournal(tmp_path / "state", command={"file": "g.yaml"})
    ensemble = Ensemble(member, parse(RULES.format(release=release), "g.yaml"), state=journal)
    ensemble.start()
    serving = start_controls(
        ensemble, journal, argparse.Namespace(grpc=("127.0.0.1", 0), grpc_token_file=None)
    )
    try:
        yield ensemble, serving.grpc_address, tmp_path / "state" / "grpc-token"
    finally:
        release.touch()
        serving.close()
        ensemble.close()


def test_status_and_actions_need_the_token_and_speak_ensemble_pythons_messages(served, generated):
    ensemble, address, token_file = served
    pb2, pb2_grpc = generated
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    Result = pb2.Response.ResultType
    with grpc.insecure_channel(address) as channel:
        stub = pb2_grpc.EnsembleOperatorStub(channel)
        request = pb2.StatusRequest(member="local", name="g")
        denied = stub.RequestStatus(request)
        assert denied.status == Result.DENIED
        assert json.loads(denied.payload)["error"].startswith("denied: give the service's token")
        wrong = stub.RequestStatus(request, metadata=[("authorization", "Bearer nope")])
        assert wrong.status == Result.DENIED

        status = stub.RequestStatus(request, metadata=[("authorization", f"Bearer {token}")])
        assert status.status == Result.SUCCESS
        payload = json.loads(status.payload)
        assert payload["controller"] == "running" and payload["groups"]["held"]["submitted"] == 1

        # ensemble-python's EnsembleClient.action_request sends no metadata: the payload's token
        grow = pb2.ActionRequest(
            member="local", name="g", action="grow", payload=json.dumps({"grow": 2, "token": token})
        )
        grown = stub.RequestAction(grow)
        assert grown.status == Result.SUCCESS, grown.payload
        [entry] = json.loads(grown.payload)["recorded"]
        assert (entry["rule"], entry["detail"]) == (-1, "grew by 2 node(s) to 3")

        untold = stub.RequestAction(pb2.ActionRequest(action="terminate"))
        assert untold.status == Result.DENIED
        assert ensemble.member.describe()["nodes"] == 3 and not ensemble.wait(0)

        def act(action: str, payload: str) -> tuple[int, dict]:
            answer = stub.RequestAction(
                pb2.ActionRequest(action=action, payload=payload),
                metadata=[("authorization", f"Bearer {token}")],
            )
            return answer.status, json.loads(answer.payload)

        assert act("explode", "") == (
            Result.ERROR,
            {"error": "unknown action 'explode': give one of grow, shrink, submit, route, "
             "cancel, terminate"},
        )  # fmt: skip
        assert act("submit", '{"label": "nope"}') == (
            Result.ERROR,
            {"error": "submit: no job group 'nope' (the groups: held, quick)"},
        )
        status_code, answer = act("grow", "{not json")
        assert status_code == Result.ERROR and answer["error"].startswith("the payload is not")
        assert act("shrink", '{"shrink": -1}')[1]["recorded"][0]["detail"].startswith(
            "shrank by 1 node(s) to 2"
        )
        assert act("submit", '{"label": "quick", "value": 1}')[1]["recorded"][0]["detail"] == (
            "1 x quick"
        )
        assert act("terminate", "")[0] == Result.SUCCESS
    assert ensemble.wait(30)
    assert ensemble.stop_reason == "rule -1 terminated the ensemble"


@pytest.mark.parametrize(
    ("text", "address"),
    [("50051", ("127.0.0.1", 50051)), ("0.0.0.0:1", ("0.0.0.0", 1)), ("[::1]:0", ("::1", 0))],
)
def test_the_address_is_loopback_unless_a_host_is_named(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["http", ":50051", "host:99999", "host:"])
def test_a_bad_address_says_what_to_give(text):
    with pytest.raises(argparse.ArgumentTypeError, match=rf"'{text}': give \[HOST:\]PORT, such"):
        parse_address(text)


def test_the_token_comes_from_the_file_given_or_the_environment(tmp_path, monkeypatch):
    member = create_member("local", cores=1, log_dir=str(tmp_path / "logs"))
    ensemble = Ensemble(member, parse("rules: []", "t.yaml"))
    ensemble.start()
    try:

        def serve(token_file: str | None = None):
            arguments = argparse.Namespace(grpc=("127.0.0.1", 0), grpc_token_file=token_file)
            return start_controls(ensemble, None, arguments)

        monkeypatch.delenv("ENSEMBLE_GRPC_TOKEN", raising=False)
        with pytest.raises(ConfigError, match="this run has no state directory for its token"):
            serve()
        empty = tmp_path / "empty"
        empty.write_text("\n")
        with pytest.raises(ConfigError, match=f"--grpc-token-file {empty}: the file is empty"):
            serve(str(empty))
        with pytest.raises(ConfigError, match="No such file or directory"):
            serve(str(tmp_path / "missing"))
        monkeypatch.setenv("ENSEMBLE_GRPC_TOKEN", "from-the-environment")
        serving = serve()
        try:
            request = messages()["StatusRequest"]()
            with grpc.insecure_channel(serving.grpc_address) as channel:
                call = channel.unary_unary(
                    "/convergedcomputing.org.grpc.v1.EnsembleOperator/RequestStatus",
                    request_serializer=type(request).SerializeToString,
                    response_deserializer=messages()["Response"].FromString,
                )
                answer = call(request, metadata=[("authorization", "Bearer from-the-environment")])
            assert answer.status == 1 and json.loads(answer.payload)["controller"] == "running"
        finally:
            serving.close()
    finally:
        ensemble.close()
