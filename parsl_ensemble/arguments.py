"""The EnsembleExecutor's arguments, checked when the executor is made.

A wrong argument fails the `Config(...)` line that names it, with one ConfigurationError in the
words `ensemble run` and the Snakemake plugin use, instead of a traceback from deep inside
`parsl.load()` or a rules list read letter by letter.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from parsl.errors import ConfigurationError

from ensemble_core.api import rule_names
from ensemble_core.errors import EnsembleError
from ensemble_core.members import MEMBERS
from ensemble_core.members.declared import load_members
from ensemble_core.members.settings import SettingError, check_settings
from ensemble_core.members.warm_settings import WARM_BOUNDS

#: Where the executor's controller may run (`EnsembleExecutor(controller=...)`).
CONTROLLERS = (None, "process", "thread")


def check_arguments(
    label: Any,
    member: Any,
    rules: Any,
    member_settings: Any,
    working_dir: Any,
    worker_command: Any,
    workers: Any = None,
    members: Any = None,
    controller: Any = None,
) -> None:
    """Raise ConfigurationError for the first argument the executor cannot use."""
    if not isinstance(label, str) or not label:
        raise ConfigurationError(f"EnsembleExecutor: label must be a name, not {label!r}")
    where = f"EnsembleExecutor '{label}'"
    if member not in MEMBERS:
        raise ConfigurationError(
            f"{where}: unknown member {member!r}: choose one of {', '.join(MEMBERS)}"
        )
    if controller not in CONTROLLERS:
        raise ConfigurationError(
            f"{where}: controller must be 'process' or 'thread' (or None: 'process' with warm "
            f"workers), not {controller!r}"
        )
    problem = WARM_BOUNDS["workers"].problem(workers) if workers is not None else None
    if problem:
        raise ConfigurationError(f"{where}: workers {problem}")
    try:
        if isinstance(rules, Collection) or not isinstance(rules, Iterable):
            rule_names(rules)  # an iterator is checked when it is read, at start()
        if member_settings is not None and not isinstance(member_settings, Mapping):
            raise ConfigurationError(
                f"{where}: member_settings must be a dict such as {{'cores': 4}}, not "
                f"{type(member_settings).__name__}"
            )
        warm = {"workers": workers} if workers is not None else {}
        check_settings(member, {**(member_settings or {}), **warm})
        if members is not None:
            load_members(members)
            if member_settings or workers is not None:
                raise ConfigurationError(
                    f"{where}: with members, each member's settings (workers too) go in its "
                    "entry of members, not in member_settings or workers"
                )
    except SettingError as error:
        name = f"member_settings[{error.setting!r}]"
        raise ConfigurationError(f"{where}: {error.phrased(name, 'member={!r}')}") from None
    except EnsembleError as error:
        raise ConfigurationError(f"{where}: {error}") from None
    if working_dir is not None and not isinstance(working_dir, (str, os.PathLike)):
        raise ConfigurationError(f"{where}: working_dir must be a path, not {working_dir!r}")
    if worker_command is not None and (
        isinstance(worker_command, str)
        or not isinstance(worker_command, Sequence)
        or not worker_command
        or not all(isinstance(word, str) and word for word in worker_command)
    ):
        raise ConfigurationError(
            f"{where}: worker_command must be a list of words such as "
            f"['python3', '-m', 'parsl_ensemble.worker'], not {worker_command!r}"
        )
