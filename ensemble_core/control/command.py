"""`ensemble status`, `ensemble action` and `ensemble report`: a run seen and steered from outside.

Each names a run by its state directory; `status` and `report` find it themselves when the
current directory holds the state of exactly one ensemble file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ensemble_core.control.controls import OPERATOR_ACTIONS
from ensemble_core.control.status import RECENT_ACTIONS, recorded_status, status_text
from ensemble_core.errors import ConfigError, EnsembleError
from ensemble_core.runs import STATE_DIRECTORY

DEFAULT_REPORT = "ensemble-report.html"


def add_control_parsers(commands: Any) -> None:
    """The `status`, `action` and `report` subcommands, added to the CLI's subparsers."""
    status = commands.add_parser(
        "status",
        help="a running or finished ensemble: groups, queue, member, latest rule firings",
        description="Show how a run stands: from its controller while it runs, else from its "
        "state journal.",
    )
    _state_argument(status)
    status.add_argument("--json", action="store_true", help="print one JSON object instead")
    status.add_argument(
        "--recent",
        type=int,
        default=RECENT_ACTIONS,
        metavar="N",
        help=f"how many of the latest rule firings to show (default: {RECENT_ACTIONS})",
    )
    status.set_defaults(command=run_status)

    action = commands.add_parser(
        "action",
        help="act on a running ensemble: grow, shrink, submit GROUP, cancel GROUP, route GROUP "
        "MEMBER, terminate",
        description="Ask the controller of a running ensemble to act, as a rule would; the "
        "action is recorded as rule -1 (trigger `operator`). "
        + "; ".join(OPERATOR_ACTIONS.values())
        + ".",
    )
    action.add_argument("state", metavar="DIR", help="the state directory of the run")
    action.add_argument("name", metavar="ACTION", choices=OPERATOR_ACTIONS, help="the action")
    action.add_argument("arguments", nargs="*", metavar="ARG", help="N, GROUP [N] or nothing")
    action.add_argument("--json", action="store_true", help="print one JSON object instead")
    action.set_defaults(command=run_action)

    report = commands.add_parser(
        "report",
        help="one self-contained HTML report of a run (charts, timeline, rules)",
        description="Write an HTML report of a run from its state journal: one file that "
        "opens offline in any browser.",
    )
    _state_argument(report)
    report.add_argument(
        "-o",
        "--output",
        default=DEFAULT_REPORT,
        metavar="FILE",
        help=f"where to write it (default: {DEFAULT_REPORT})",
    )
    report.set_defaults(command=run_report)


def _state_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "state",
        nargs="?",
        metavar="DIR",
        help=f"the run's state directory (default: the one in ./{STATE_DIRECTORY}, if only one)",
    )


def state_directory(given: str | None, cwd: Path | None = None) -> Path:
    """The state directory named, or the only one recorded beside the current directory's
    ensemble files; ConfigError saying how to name it otherwise."""
    from ensemble_core.control.recorded import DATABASE

    if given is not None:
        path = Path(given)
        if not (path / DATABASE).is_file():
            raise ConfigError(
                f"{given}: no ensemble state here; give the state directory of a run "
                f"({STATE_DIRECTORY}/<file name> beside its file, or its --state DIR)"
            )
        return path
    here = cwd or Path.cwd()
    found = sorted(path.parent for path in (here / STATE_DIRECTORY).glob(f"*/{DATABASE}"))
    if len(found) == 1:
        return found[0].relative_to(here) if cwd is None else found[0]
    if not found:
        raise ConfigError(
            f"no ensemble state in ./{STATE_DIRECTORY}: give the run's state directory "
            f"(`ensemble run FILE` records in {STATE_DIRECTORY}/<file name> beside FILE, or "
            "where --state said)"
        )
    names = ", ".join(str(path.relative_to(here)) for path in found)
    raise ConfigError(f"several runs are recorded here ({names}): name one of them")


def run_status(args: argparse.Namespace) -> int:
    from ensemble_core.control.client import NotRunning, ask

    directory = state_directory(args.state)
    recent = max(0, args.recent)
    try:
        status = ask(directory, {"request": "status", "recent": recent})["status"]
    except NotRunning:
        status = recorded_status(directory, recent)
    print(json.dumps(status) if args.json else status_text(status))
    return 0


def run_action(args: argparse.Namespace) -> int:
    from ensemble_core.control.client import NotRunning, ask

    directory = state_directory(args.state)
    request = {"request": "action", **_action_arguments(args.name, args.arguments)}
    try:
        recorded = ask(directory, request)["recorded"]
    except NotRunning:
        raise EnsembleError(_why_not_running(directory)) from None
    if args.json:
        print(json.dumps({"recorded": recorded}))
    for entry in [] if args.json else recorded:
        where = f" [{entry['group']}]" if entry.get("group") else ""
        print(f"{entry['action']}{where} at {entry['time']:.1f}s: {entry['detail']}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from ensemble_core.report_html import write_report

    directory = state_directory(args.state)
    jobs = write_report(directory, args.output)
    print(f"{args.output}: the report of {jobs} job(s) recorded in {directory}")
    return 0


def _action_arguments(name: str, arguments: list[str]) -> dict[str, Any]:
    """ACTION's ARGs as the request's `value` and `label` (the controller checks them)."""
    names = {"grow": ("value", "member"), "shrink": ("value", "member")}
    names.update({"submit": ("label", "value"), "route": ("label", "member")})
    names.update({"cancel": ("label",), "terminate": ()})
    expected = names[name]
    if len(arguments) > len(expected):
        raise ConfigError(
            f"action {name}: '{arguments[len(expected)]}' is one argument too many "
            f"({OPERATOR_ACTIONS[name]})"
        )
    return {"name": name, **dict(zip(expected, arguments, strict=False))}


def _why_not_running(directory: Path) -> str:
    status = recorded_status(directory, 0)
    if status["controller"] == "ended":
        return f"{directory}: the run recorded here has ended ({status['exit']}): nothing to act on"
    return (
        f"{directory}: no controller is following this run (it was killed or detached): "
        f"`ensemble attach {directory}` follows it again; then act on it"
    )
