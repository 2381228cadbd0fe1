"""Read rule and ensemble files, by path or by name from the shared library, with clear errors.

Every problem becomes one `ConfigError` line naming the file, the line, the place and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ensemble_core.errors import ConfigError
from ensemble_core.rules.schema import EnsembleFile, Rule


def library_dir() -> Path:
    """The shared rules shipped with the package (wheel) or beside it (source checkout)."""
    packaged = Path(__file__).resolve().parent.parent / "shared_rules"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "rules"


def library_names() -> list[str]:
    return sorted(path.stem for path in library_dir().glob("*.yaml"))


def resolve(path_or_name: str) -> Path:
    """A path as given, or a name from the shared library (`retry-oom` -> rules/retry-oom.yaml)."""
    path = Path(path_or_name)
    if path.exists():
        return path
    candidate = library_dir() / f"{path_or_name.removesuffix('.yaml')}.yaml"
    if "/" not in path_or_name and candidate.exists():
        return candidate
    names = ", ".join(library_names())
    raise ConfigError(
        f"{path_or_name}: no such file, and no shared rule set of that name (shared: {names})"
    )


def load(path_or_name: str) -> EnsembleFile:
    """Load and validate one file."""
    path = resolve(path_or_name)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror}); check the path") from None
    return parse(text, str(path))


def parse(text: str, source: str) -> EnsembleFile:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{source}{where}: YAML syntax error: {problem}; fix the YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: expected a mapping with rules: (and jobs:), not a list")
    try:
        ensemble = EnsembleFile.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, node, source)) from None
    _check_labels(ensemble, node, source)
    return ensemble


def _check_labels(ensemble: EnsembleFile, node: yaml.Node | None, source: str) -> None:
    """A submit must name a group of this file's `jobs:`."""
    names = {job.name for job in ensemble.jobs}
    for index, rule in enumerate(ensemble.rules):
        label = rule.action.label
        if rule.action.name == "submit" and label not in names:
            known = ", ".join(sorted(names)) or "none: add a jobs: section"
            line = _line_of(node, ["rules", index, "action", "label"])
            raise ConfigError(
                f"{source}:{line}: rules[{index}].action.label: submit of unknown job group "
                f"'{label}' (groups: {known})"
            )


def load_rules(paths_or_names: list[str]) -> EnsembleFile:
    """Several shared rule files merged into one (front doors accept a list)."""
    files = [load(item) for item in paths_or_names]
    if not files:
        return EnsembleFile()
    rules: list[Rule] = [rule for file in files for rule in file.rules]
    jobs = [job for file in files for job in file.jobs]
    merged = files[0].model_copy(update={"rules": rules, "jobs": jobs})
    for section in ("limits", "logging"):
        setting = {
            key: value
            for file in files
            for key, value in getattr(file, section)
            if key in getattr(file, section).model_fields_set
        }
        setattr(merged, section, getattr(merged, section).model_copy(update=setting))
    return merged


def _describe(error: ValidationError, node: yaml.Node | None, source: str) -> str:
    """The first problem as `file:line: place: message`."""
    errors = error.errors()
    first = min(errors, key=lambda e: e["type"] != "extra_forbidden")
    location = [part for part in first["loc"] if not str(part).startswith("function-")]
    line = _line_of(node, location)
    place = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location).lstrip(".")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"unknown key '{location[-1]}'; check its spelling (see `ensemble schema`)"
    elif first["type"] == "missing":
        message = f"missing key '{location[-1]}'; add it (see `ensemble schema`)"
    elif first["type"] == "literal_error":
        message = f"{message} (got {first['input']!r})"
    extra = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}:{line}: {place or 'top level'}: {message}{extra}"


def _line_of(node: Any, location: list[Any]) -> int:
    """The 1-based line of the deepest YAML node on `location` that exists."""
    line = 1 if node is None else node.start_mark.line + 1
    for part in location:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == part), None)
            if child is None:
                child = next((k for k, _ in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line
