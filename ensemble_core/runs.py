"""What `ensemble run` and `ensemble attach` share: the state directory of a run.

A run is recorded in a state directory (by default `.ensemble-state/<file name>` beside the
ensemble file) so that a killed or detached controller can be resumed. The directory also keeps
how the run was started (the file, extra rules, member and settings) and a digest of the
validated configuration: a resumed run must be the same run, so an edited file is refused rather
than mixed with the rules' state of another version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ensemble_core.errors import ConfigError

if TYPE_CHECKING:  # `ensemble status` and `report` read STATE_DIRECTORY without either
    from ensemble_core.rules.schema import EnsembleFile
    from ensemble_core.state import StateJournal

STATE_DIRECTORY = ".ensemble-state"


def default_state_dir(file: str) -> Path:
    """`.ensemble-state/<file name>` beside the ensemble file."""
    path = Path(file).resolve()
    return path.parent / STATE_DIRECTORY / path.name


def digest(config: EnsembleFile) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def open_state(directory: str | Path, *, fresh: bool, command: dict[str, Any]) -> StateJournal:
    """The journal of `directory`, checked against `command` (how this run is started): an
    unfinished run recorded there must be of the same configuration."""
    from ensemble_core.state import StateJournal

    journal = StateJournal(directory, fresh=fresh, command=command)
    recorded = journal.recorded_command()
    if recorded is not None and recorded.get("digest") != command["digest"]:
        journal.close()
        raise ConfigError(
            f"{directory}: holds an unfinished run of {recorded.get('file')} as it was then, and "
            "the rules or jobs differ now: restore them to resume it, or start anew (--fresh; "
            "Snakemake: --ensemble-fresh; its jobs may still run on the queue)"
        )
    return journal


def recorded_command(directory: str | Path) -> dict[str, Any]:
    """How the unfinished run recorded in `directory` was started (for `ensemble attach`)."""
    path = Path(directory)
    if not (path / "state.db").is_file():
        raise ConfigError(f"{directory}: no ensemble state here; give the --state of a run")
    from ensemble_core.state import StateJournal

    journal = StateJournal(path)
    try:
        recorded = journal.recorded_command()
    finally:
        journal.close()
    if recorded is None:
        raise ConfigError(
            f"{directory}: the run recorded here has ended; nothing to attach to "
            "(`ensemble run FILE` starts a new one)"
        )
    if recorded.get("front_door", "cli") != "cli":
        raise ConfigError(
            f"{directory}: this ensemble belongs to a {recorded['front_door']} run: run the same "
            f"{recorded['front_door']} command again to resume it"
        )
    return recorded
