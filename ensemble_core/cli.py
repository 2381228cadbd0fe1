"""`ensemble`: run, validate and inspect ensembles from the command line.

Exit status: 0 when the ensemble ran to its end or a rule terminated it, 1 when it stopped at a
global limit or on a member error, 2 for bad input, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any

from ensemble_core.ensemble import Ensemble
from ensemble_core.errors import EnsembleError
from ensemble_core.members import MEMBERS, create_member
from ensemble_core.report import status_line, summary_table
from ensemble_core.rules.loader import load, load_rules
from ensemble_core.rules.schema import EnsembleFile
from ensemble_core.translate.command import add_translate_parser

EXIT_STATUS = {"completed": 0, "terminated": 0, "limit": 1, "error": 1, "interrupted": 130}
STATUS_SECONDS = 0.5

#: CLI flags that become member settings, by member.
MEMBER_FLAGS = {
    "local": ("cores", "memory_mb", "gpus", "nodes", "max_nodes", "log_dir"),
    "flux": ("flux_uri",),
    "kubernetes": ("namespace", "image", "kubeconfig", "minicluster"),
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(message)s",
    )
    try:
        return args.command(args)
    except EnsembleError as error:
        print(f"ensemble: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ensemble",
        description="Run rule-driven ensembles of jobs on local, Flux or Kubernetes.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run an ensemble file until it ends")
    run.add_argument("file", help="ensemble YAML (jobs + rules), ensemble-python's format works")
    run.add_argument("--member", choices=MEMBERS, help="where jobs run (default: local)")
    run.add_argument(
        "--rules",
        action="append",
        default=[],
        metavar="FILE_OR_NAME",
        help="more rules, by path or shared name (retry-oom, retry-timeout, grow-on-backlog)",
    )
    run.add_argument("--json", action="store_true", help="print one JSON object instead")
    run.add_argument("--allow-custom", action="store_true", help="allow custom actions to run")
    run.add_argument("-v", "--verbose", action="store_true", help="log every action")
    local = run.add_argument_group("local member")
    local.add_argument("--cores", type=int, help="cores per node (default: this machine's)")
    local.add_argument("--memory-mb", type=int, help="memory per node (default: this machine's)")
    local.add_argument("--gpus", type=int, help="gpus per node (default: 0)")
    local.add_argument("--nodes", type=int, help="virtual nodes at start (default: 1)")
    local.add_argument("--max-nodes", type=int, help="most nodes grow may reach (default: nodes)")
    local.add_argument("--log-dir", help="job output files (default: ensemble-logs)")
    flux = run.add_argument_group("flux member")
    flux.add_argument("--flux-uri", help="Flux instance (default: FLUX_URI)")
    kube = run.add_argument_group("kubernetes member")
    kube.add_argument("--namespace", help="namespace for Jobs")
    kube.add_argument("--image", help="container image the jobs run in")
    kube.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster or ~/.kube)")
    kube.add_argument("--minicluster", help="MiniCluster (namespace/name) grow/shrink resize")
    run.set_defaults(command=_run)

    validate = commands.add_parser("validate", help="check an ensemble or rules file")
    validate.add_argument("file", nargs="+", help="file paths or shared rule names")
    validate.set_defaults(command=_validate)

    schema = commands.add_parser("schema", help="print the JSON Schema of the YAML format")
    schema.set_defaults(command=_schema)

    add_translate_parser(commands)
    return parser


def _load_run_config(args: argparse.Namespace) -> EnsembleFile:
    config = load(args.file)
    if args.rules:
        extra = load_rules(args.rules)
        config = config.model_copy(update={"rules": [*config.rules, *extra.rules]})
    return config


def _member_settings(args: argparse.Namespace, config: EnsembleFile, member: str) -> dict[str, Any]:
    settings = {k: v for k, v in config.member.items() if k != "name"}
    for flag in MEMBER_FLAGS.get(member, ()):
        value = getattr(args, flag, None)
        if value is not None:
            settings[flag] = value
    return settings


def _run(args: argparse.Namespace) -> int:
    config = _load_run_config(args)
    if config.logging.debug:
        logging.getLogger().setLevel(logging.INFO)
    member_name = args.member or config.member.get("name", "local")
    member = create_member(member_name, **_member_settings(args, config, member_name))
    ensemble = Ensemble(member, config, allow_custom=args.allow_custom)
    interrupted = _watch_signals()
    try:
        ensemble.start()
        live = sys.stderr.isatty() and not args.json
        while not ensemble.wait(STATUS_SECONDS):
            if interrupted:
                ensemble.stop("interrupted (Ctrl-C)", "interrupted")
                ensemble.wait(30)
                break
            if live:
                print(f"\r\033[K{status_line(ensemble.snapshot())}", end="", file=sys.stderr)
        if live:
            print("\r\033[K", end="", file=sys.stderr)
        snapshot = ensemble.snapshot()
    finally:
        ensemble.close()
    exit_name = ensemble.exit
    if args.json:
        report = {**snapshot, "exit": exit_name, "reason": ensemble.stop_reason}
        print(json.dumps({**report, "member": member.describe()}))
    else:
        print(summary_table(snapshot))
        described = member.describe()
        settings = ", ".join(f"{k} {v}" for k, v in described.items() if k != "member")
        print(f"member {described.get('member', member.name)}: {settings}")
        if ensemble.stop_reason:
            print(f"ended: {ensemble.stop_reason}")
    if exit_name in ("limit", "error"):
        print(f"ensemble: stopped: {ensemble.stop_reason}", file=sys.stderr)
    return EXIT_STATUS[exit_name]


def _watch_signals() -> list[int]:
    """Turn SIGINT/SIGTERM into a flag the run loop checks, so jobs are cancelled, not orphaned."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return received


def _validate(args: argparse.Namespace) -> int:
    for item in args.file:
        config = load(item)
        print(f"{item}: ok ({len(config.jobs)} job groups, {len(config.rules)} rules)")
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(EnsembleFile.model_json_schema(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
