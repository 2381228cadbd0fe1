"""`ensemble`: run, validate and inspect ensembles from the command line.

Exit status: 0 when the ensemble ran to its end or a rule terminated it, 1 when it stopped at a
global limit or on a member error, 2 for bad input, 128 + the signal on SIGINT (130) or SIGTERM
(143), after every job was cancelled.

The signal handlers are the first thing `main` sets, and the modules that take time to import are
imported after that, so a signal at any moment ends the command with one line.

`ensemble run` imports what a run needs only when it needs it; its start-up (imports, pydantic's
schemas, the file) runs with the garbage collector paused (`CollectorPause`).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ensemble_core.errors import ConfigError, EnsembleError

if TYPE_CHECKING:
    from ensemble_core.ensemble import Ensemble
    from ensemble_core.rules.schema import EnsembleFile

EXIT_STATUS = {"completed": 0, "terminated": 0, "limit": 1, "error": 1}
BAD_INPUT = 2
STATUS_SECONDS = 0.5

#: Whether code of the user's may have run in this process (custom actions: --allow-custom).
_user_code = False

#: The flags of `ensemble run` that become member settings (each member takes some of them), by
#: help group: (flag, type, help). `--memory-mb` sets `memory_mb`.
MEMBER_FLAG_GROUPS: dict[str, list[tuple[str, type | None, str]]] = {
    "local member": [
        ("--cores", int, "cores per node (default: this machine's)"),
        ("--memory-mb", int, "memory per node (default: this machine's)"),
        ("--gpus", int, "gpus per node (default: 0)"),
        ("--nodes", int, "virtual nodes at start (default: 1)"),
        ("--max-nodes", int, "most nodes grow may reach (default: nodes)"),
        ("--log-dir", None, "job output files (default: ensemble-logs)"),
    ],
    "flux member": [("--flux-uri", None, "Flux instance (default: FLUX_URI)")],
    "kubernetes member": [
        ("--namespace", None, "namespace for Jobs"),
        ("--image", None, "container image the jobs run in"),
        ("--kubeconfig", None, "kubeconfig file (default: in-cluster or ~/.kube)"),
        ("--context", None, "kubeconfig context (default: its current one)"),
        ("--minicluster", None, "MiniCluster (namespace/name) grow/shrink resize"),
    ],
    "warm workers (any member; docs/warm-workers.md)": [
        ("--workers", int, "run jobs on N warm workers (default: off)"),
        ("--max-workers", int, "most workers grow may reach"),
        ("--worker-cores", int, "cores of each worker (default: 1)"),
        ("--worker-memory-mb", int, "memory of each worker"),
        ("--idle-seconds", float, "an idle worker leaves after (60)"),
        ("--address", None, "where workers connect back to (default: loopback)"),
    ],
}
MEMBER_FLAGS = tuple(
    flag[2:].replace("-", "_") for flags in MEMBER_FLAG_GROUPS.values() for flag, _, _ in flags
)


class Interrupted(BaseException):
    """A signal that arrived before the ensemble ran: nothing to cancel, end the command."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class Signals:
    """SIGINT and SIGTERM, from the first instruction of `main` on.

    Before the ensemble runs, a signal ends the command at once (no job exists yet); once it
    runs, a signal stops it, which cancels every job, and the run ends with 128 + the signal.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.ensemble: Ensemble | None = None
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
        if self.ensemble is None:
            raise Interrupted(signum)
        self.ensemble.stop(f"interrupted ({self.name})", "interrupted")


class CollectorPause:
    """Python's cyclic garbage collector, paused while an ensemble command starts.

    Importing the modules and building pydantic's schemas makes a few hundred thousand objects
    that live to the end; every collection on the way walks them again: about 80 collections,
    10 ms of CPU in a one-job run. Nothing made then is garbage worth a collection, so the
    collector waits until the ensemble is about to run (`resume`); what the start made is then
    left out of every later collection (`gc.freeze`).
    """

    def __init__(self) -> None:
        self.paused = gc.isenabled()
        gc.disable()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            gc.freeze()
            gc.enable()


def main(argv: list[str] | None = None) -> int:
    signals = Signals()
    collector = CollectorPause()
    try:
        args = _parser().parse_args(argv)
        args.signals = signals
        args.collector = collector
        if args.command not in (_run, _attach):  # these resume it once the ensemble is built
            collector.resume()
        logging.basicConfig(
            level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
            format="%(message)s",
        )
        status = args.command(args)
        sys.stdout.flush()  # inside: a reader gone while the last output is written is caught
        return status
    except Interrupted as interrupted:
        name = signal.Signals(interrupted.signum).name
        print(f"ensemble: interrupted by {name} before any job started", file=sys.stderr)
        return 128 + interrupted.signum
    except ConfigError as error:
        print(f"ensemble: {error}", file=sys.stderr)
        return BAD_INPUT
    except EnsembleError as error:
        print(f"ensemble: {error}", file=sys.stderr)
        return EXIT_STATUS["error"]
    except BrokenPipeError:
        # The reader of stdout went away (`ensemble status | head`): end quietly, as a shell
        # tool does on SIGPIPE, without the interpreter's complaint at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    finally:
        collector.resume()


def _parser() -> argparse.ArgumentParser:
    from ensemble_core.control.command import add_control_parsers
    from ensemble_core.control.serve import add_control_flags
    from ensemble_core.members import MEMBERS

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
    _output_flags(run)
    add_control_flags(run)
    run.add_argument("--allow-custom", action="store_true", help="allow custom actions to run")
    state = run.add_argument_group("state (resume a run whose controller was killed, or detach)")
    state.add_argument(
        "--state",
        metavar="DIR",
        help="where the run is recorded (default: .ensemble-state/<file name> beside the file); "
        "a run recorded there that did not end is resumed",
    )
    state.add_argument("--no-state", action="store_true", help="record nothing")
    state.add_argument(
        "--fresh", action="store_true", help="start anew, ignoring an unfinished run recorded"
    )
    state.add_argument(
        "--detach",
        action="store_true",
        help="submit, record and exit, leaving the jobs running (Flux, Kubernetes); "
        "`ensemble attach DIR` follows them to the end",
    )
    for title, flags in MEMBER_FLAG_GROUPS.items():
        group = run.add_argument_group(title)
        for flag, kind, text in flags:
            group.add_argument(flag, type=kind, help=text)
    run.set_defaults(command=_run)

    attach = commands.add_parser(
        "attach", help="follow a detached or interrupted run (its --state DIR) to its end"
    )
    attach.add_argument("state", metavar="DIR", help="the state directory of the run")
    _output_flags(attach)
    add_control_flags(attach)
    attach.set_defaults(command=_attach)

    validate = commands.add_parser("validate", help="check an ensemble or rules file")
    validate.add_argument("file", nargs="+", help="file paths or shared rule names")
    validate.set_defaults(command=_validate)

    schema = commands.add_parser("schema", help="print the JSON Schema of the YAML format")
    schema.set_defaults(command=_schema)

    from ensemble_core.translate.command import add_translate_parser

    add_translate_parser(commands)
    add_control_parsers(commands)
    return parser


def _output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every action")


def _member_settings(args: argparse.Namespace, config: EnsembleFile, member: str) -> dict[str, Any]:
    """The file's `member:` settings with the flags over them, checked for `member`."""
    from ensemble_core.members.settings import SettingError, check_settings

    settings = {k: v for k, v in config.member.items() if k != "name"}
    flags = {flag for flag in MEMBER_FLAGS if getattr(args, flag, None) is not None}
    settings.update({flag: getattr(args, flag) for flag in flags})
    try:
        return check_settings(member, settings)
    except SettingError as error:
        if error.setting in flags:
            name = "--" + error.setting.replace("_", "-")
        else:
            name = f"member.{error.setting} (in {args.file})"
        raise ConfigError(error.phrased(name, "--member {}")) from None


def _run(args: argparse.Namespace) -> int:
    from ensemble_core.rules.loader import load_rules

    config = load_rules([args.file, *args.rules])
    member_name = args.member or config.member.get("name", "local")
    if config.members:
        _no_member_flags(args)
    settings = {} if config.members else _member_settings(args, config, member_name)
    command = {
        "file": str(Path(args.file).resolve()),
        "rules": args.rules,
        "member": member_name,
        "settings": settings,
        "allow_custom": args.allow_custom,
    }
    member = _create_member(config, member_name, settings)
    if args.detach and member.jobs_end_with_controller:
        whose, where = f"the {member_name} member's jobs", "on --member flux or kubernetes"
        if config.members:
            ending = [n for n, each in member.members.items() if each.jobs_end_with_controller]
            whose = f"the jobs of {', '.join(ending)}"
            where = "whose members are all flux or kubernetes"
        raise ConfigError(f"--detach: {whose} end with the controller; detach a run {where}")
    journal = None if args.no_state else _journal(args, config, command)
    return _follow(args, config, member, journal)


def _attach(args: argparse.Namespace) -> int:
    from ensemble_core.rules.loader import load_rules
    from ensemble_core.runs import digest, open_state, recorded_command

    command = recorded_command(args.state)
    config = load_rules([command["file"], *command["rules"]])
    member = _create_member(config, command["member"], command["settings"])
    journal = open_state(args.state, fresh=False, command={**command, "digest": digest(config)})
    args.allow_custom, args.detach = command["allow_custom"], False
    return _follow(args, config, member, journal)


def _no_member_flags(args: argparse.Namespace) -> None:
    """A file with several members takes each one's settings from its entry, not from flags."""
    for flag in ("member", *MEMBER_FLAGS):
        if getattr(args, flag, None) is not None:
            raise ConfigError(
                f"--{flag.replace('_', '-')}: {args.file} declares several members (members:): "
                "set each one's settings in its entry there"
            )


def _create_member(config: EnsembleFile, name: str, settings: dict[str, Any]) -> Any:
    """The member of the run: the one named, or the router over the file's `members:`."""
    if not config.members:
        from ensemble_core.members import create_member

        return create_member(name, **settings)
    from ensemble_core.members.declared import create_router, in_config

    return create_router(in_config(config))


def _journal(args: argparse.Namespace, config: EnsembleFile, command: dict[str, Any]):
    """The run's state journal: --state, or the default beside the file (where it cannot be
    made, the run goes on without one and says so)."""
    from ensemble_core.runs import default_state_dir, digest, open_state

    directory = args.state or default_state_dir(args.file)
    command["digest"] = digest(config)
    try:
        journal = open_state(directory, fresh=args.fresh, command=command)
    except ConfigError:
        if args.state or args.detach:
            raise
        print(f"ensemble: no state recorded ({directory} cannot be used)", file=sys.stderr)
        return None
    if journal.recorded_command() is not None and not args.fresh:
        print(f"ensemble: resuming the run recorded in {directory}", file=sys.stderr)
    return journal


def _follow(args: argparse.Namespace, config: EnsembleFile, member: Any, journal: Any) -> int:
    """Run (or resume) the ensemble to its end, or until it is detached; the exit status."""
    from ensemble_core.control.serve import start_controls
    from ensemble_core.ensemble import Ensemble

    if config.logging.debug:
        logging.getLogger().setLevel(logging.INFO)
    global _user_code
    _user_code = _user_code or bool(args.allow_custom)
    ensemble = Ensemble(member, config, allow_custom=args.allow_custom, state=journal)
    args.collector.resume()
    signals: Signals = args.signals
    signals.ensemble = ensemble  # from here on a signal stops the ensemble
    detached = False
    shown: list[Any] = []  # the control transports and the progress display, closed first
    try:
        ensemble.start()
        shown.append(start_controls(ensemble, journal, args))
        if args.detach:
            detached = ensemble.settle()
            return _detached(args, ensemble, journal)
        if not args.json:
            from ensemble_core.progress import Progress, planned_jobs

            shown.append(Progress(ensemble, planned=planned_jobs(config)))
        while not ensemble.wait(STATUS_SECONDS):
            pass
    finally:
        for part in reversed(shown):
            part.close()
        ensemble.close(detach=detached)
    return _report(args, ensemble, signals)


def _detached(args: argparse.Namespace, ensemble: Any, journal: Any) -> int:
    running = sum(entry.get("submitted", 0) for entry in ensemble.snapshot()["groups"].values())
    where = journal.directory
    if args.json:
        print(json.dumps({"detached": True, "state": str(where), "submitted": running}))
    else:
        print(
            f"detached: {running} job(s) submitted to the {ensemble.member.name} member go on; "
            f"`ensemble attach {where}` follows them to the end"
        )
    return 0


def _report(args: argparse.Namespace, ensemble: Ensemble, signals: Signals) -> int:
    """Print the summary (or the JSON report); the exit status."""
    from ensemble_core.report import summary_table

    snapshot = ensemble.snapshot()
    described = ensemble.member.describe()
    exit_name = ensemble.exit
    if args.json:
        report = {**snapshot, "exit": exit_name, "reason": ensemble.stop_reason}
        print(json.dumps({**report, "member": described}))
    else:
        print(summary_table(snapshot))
        for name, each in described.get("members", {}).items():
            print(f"member {name} ({each.get('member')}): {_settings_line(each)}")
        if "members" not in described:
            name = described.get("member", ensemble.member.name)
            print(f"member {name}: {_settings_line(described)}")
        if ensemble.stop_reason:
            print(f"ended: {ensemble.stop_reason}")
    if exit_name == "interrupted" and signals.received:
        print(f"ensemble: interrupted by {signals.name}: its jobs were cancelled", file=sys.stderr)
        return 128 + signals.received
    if exit_name in ("limit", "error"):
        print(f"ensemble: stopped: {ensemble.stop_reason}", file=sys.stderr)
    return EXIT_STATUS.get(exit_name, EXIT_STATUS["error"])


def _settings_line(described: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in described.items() if k != "member")


def _validate(args: argparse.Namespace) -> int:
    from ensemble_core.rules.loader import load

    for item in args.file:
        config = load(item)
        print(f"{item}: ok ({len(config.jobs)} job groups, {len(config.rules)} rules)")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from ensemble_core.rules.schema import EnsembleFile

    print(json.dumps(EnsembleFile.model_json_schema(), indent=2))
    return 0


def program() -> NoReturn:
    """The `ensemble` command: `main`, then the exit.

    Python's own exit tears the interpreter down once the command is over: a last collection
    of every object that lives to the end (the imported modules, pydantic's schemas: about
    35 ms of CPU), then every module's objects freed one by one (5 ms more). By then the
    command has closed all it opened, so it runs what is registered to run at exit (logging's
    flush), flushes its output and ends the process (`os._exit`), unless something may still
    need the teardown: a thread Python would wait for, or code of the user's that ran in this
    process (a custom action's module may leave a file for the teardown to flush). Then it
    exits as Python does, all of it."""
    status = main()
    if _user_code or _threads_to_wait_for():
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone: nothing to tell it
            stream.flush()
    os._exit(status)


def _threads_to_wait_for() -> bool:
    """Whether a thread other than this one runs that Python's exit would wait for."""
    main_thread = threading.main_thread()
    return any(
        thread is not main_thread and not thread.daemon and thread.is_alive()
        for thread in threading.enumerate()
    )


if __name__ == "__main__":
    program()
