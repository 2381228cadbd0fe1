"""Read rule and ensemble files, by path or by name from the shared library, with clear errors.

Every problem becomes one `ConfigError` line naming the file, the line, the place and the fix.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from pydantic import ValidationError

from ensemble_core.bounds import shown
from ensemble_core.errors import ConfigError
from ensemble_core.members import MEMBERS
from ensemble_core.members.settings import SettingError, check_settings
from ensemble_core.rules import yamlfile
from ensemble_core.rules.engine import metric_group
from ensemble_core.rules.metric_names import check_metric_name, did_you_mean
from ensemble_core.rules.schema import EnsembleFile, Rule
from ensemble_core.rules.yamlfile import Document, collector_paused, place, read_text


def library_dir() -> Path:
    """The shared rules shipped with the package (wheel) or beside it (source checkout)."""
    packaged = Path(__file__).resolve().parent.parent / "shared_rules"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "rules"


def library_names() -> list[str]:
    return sorted(path.stem for path in library_dir().glob("*.yaml"))


def resolve(path_or_name: str) -> Path:
    """A path as given, or a name from the shared library (`retry-oom` -> rules/retry-oom.yaml)."""
    path = Path(path_or_name)
    try:
        if path.exists():
            return path
    except ValueError:  # a NUL in the name
        raise ConfigError(f"{path_or_name!r}: not a file name (it holds a NUL character)") from None
    candidate = library_dir() / f"{path_or_name.removesuffix('.yaml')}.yaml"
    if "/" not in path_or_name and candidate.exists():
        return candidate
    names = ", ".join(library_names())
    raise ConfigError(
        f"{path_or_name}: no such file, and no shared rule set of that name (shared: {names})"
    )


def load(path_or_name: str, members: Collection[str] | None = None) -> EnsembleFile:
    """Read, parse and validate one file, once (`members`: see `parse`)."""
    path = resolve(path_or_name)
    with collector_paused():
        return parse(read_text(str(path)), str(path), members)


def parse(text: str, source: str, members: Collection[str] | None = None) -> EnsembleFile:
    """Validate a file's text: the YAML, the schema, then what refers to what.

    What names a member is checked against the file's own `members:`, else against `members`
    (the run's, known to a front door; empty: one member), else, for an ensemble file (with
    `jobs:`), against none; a shared rules file read alone names members known only at run
    time."""
    document = yamlfile.parse(text, source)
    data = document.data
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a single value ({shown(data)})"
        raise ConfigError(
            f"{source}:1: top level: expected a mapping with rules: (and jobs:), not {kind}"
        )
    try:
        ensemble = EnsembleFile.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, document)) from None
    _check_groups(ensemble, document)
    _check_member(ensemble, document)
    _check_members(ensemble, document)
    if ensemble.members:
        members = list(ensemble.members)
    elif members is None and ensemble.jobs:
        members = ()
    if members is not None:
        _check_member_names(ensemble, document, members)
    return ensemble


def _check_groups(ensemble: EnsembleFile, document: Document) -> None:
    """Group names are unique; what names a group names one of `jobs:` (when the file has them:
    a shared rules file names Snakemake rules or Parsl functions, known only at run time)."""
    names: dict[str, int] = {}
    for index, job in enumerate(ensemble.jobs):
        first = names.setdefault(job.name, index)
        if first != index:
            raise document.fail(
                ["jobs", index, "name"],
                f"a second job group '{job.name}' (the first is jobs[{first}]): rename one",
            )
    known = ", ".join(sorted(names)) or "none: add a jobs: section"
    for index, rule in enumerate(ensemble.rules):
        action = rule.action
        if action.name == "submit" and action.label not in names:
            raise document.fail(
                ["rules", index, "action", "label"],
                f"submit of unknown job group '{action.label}' (groups: {known})"
                + did_you_mean(action.label or "", names),
            )
        if not names:
            continue
        if action.name in ("cancel", "route") and action.label and action.label not in names:
            raise document.fail(
                ["rules", index, "action", "label"],
                f"{action.name} of unknown job group '{action.label}' (groups: {known})"
                + did_you_mean(action.label, names),
            )
        group_key = "group" if rule.group else "name"
        if rule.trigger.startswith("job-") and rule.job_group and rule.job_group not in names:
            raise document.fail(
                ["rules", index, group_key],
                f"no job group '{rule.job_group}' (groups: {known})"
                + did_you_mean(rule.job_group, names)
                + ": the rule would never fire",
            )
        if rule.trigger == "metric" and rule.name:
            try:
                check_metric_name(rule.name, names)
            except ValueError as error:
                raise document.fail(
                    ["rules", index, "name"], f"{error}: the rule would never fire"
                ) from None


def _check_member(ensemble: EnsembleFile, document: Document) -> None:
    """The `member:` block against the settings of the member it names (local by default)."""
    settings = dict(ensemble.member)
    name = settings.pop("name", "local")
    if name not in MEMBERS:
        raise document.fail(
            ["member", "name"],
            f"unknown member {shown(name)}: choose one of {', '.join(MEMBERS)}",
        )
    try:
        check_settings(name, settings)
    except SettingError as error:
        raise document.fail(
            ["member", error.setting],
            error.hinted("member: {{name: {}}}"),
        ) from None


def _check_members(ensemble: EnsembleFile, document: Document) -> None:
    """`members:` (several members), `default:` and `routing:`, each entry against the settings
    of the member it names."""
    if not ensemble.members:
        for key in ("default", "routing"):
            if key in ensemble.model_fields_set:
                raise document.fail(
                    [key], f"{key}: is about several members: declare them under members:"
                )
        return
    from ensemble_core.members.declared import DeclarationError, declared  # several members only

    if ensemble.member:
        raise document.fail(
            ["member"],
            "give member: (one member) or members: (several, by name), not both: move these "
            "settings into an entry of members:",
        )
    try:
        declared(ensemble.members, ensemble.default, ensemble.routing.policy)
    except DeclarationError as error:
        message = error.problem
        if error.place == ["default"]:
            message += did_you_mean(ensemble.default or "", ensemble.members)
        raise document.fail(error.place, message) from None


def _check_member_names(
    ensemble: EnsembleFile, document: Document, members: Collection[str]
) -> None:
    """What names a member (a group's `member:`, an action's, a metric of `@member`) names one
    of `members`, or says that the run has one member."""

    def check(name: str, where: list[str | int], what: str) -> None:
        if name in members:
            return
        if not members:
            raise document.fail(
                where,
                f"{what} '{name}', but the run has one member: declare several under members: "
                "(docs/several-members.md)",
            )
        known = ", ".join(members)
        raise document.fail(
            where, f"{what} '{name}' (members: {known})" + did_you_mean(name, members)
        )

    for index, job in enumerate(ensemble.jobs):
        if job.member is not None:
            check(job.member, ["jobs", index, "member"], "no member")
    for index, rule in enumerate(ensemble.rules):
        if rule.action.member is not None:
            check(rule.action.member, ["rules", index, "action", "member"], "no member")
        group = metric_group(rule.name or "") if rule.trigger == "metric" else ""
        if group.startswith("@"):
            check(group[1:], ["rules", index, "name"], "a metric of no member")


def load_rules(paths_or_names: list[str], members: Collection[str] | None = None) -> EnsembleFile:
    """Several shared rule files merged into one (front doors accept a list).

    What names a member is checked against `members` (a front door's), else against the first
    file's (an ensemble file's own `members:`, or one member)."""
    files = []
    for item in paths_or_names:
        file = load(item, members)
        if members is None:
            members = list(file.members)
        files.append(file)
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


def _describe(error: ValidationError, document: Document) -> str:
    """The first problem as `file:line: place: message`."""
    errors = error.errors()
    first = min(errors, key=lambda e: e["type"] != "extra_forbidden")
    location = [part for part in first["loc"] if not str(part).startswith("function-")]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = f"unknown key '{location[-1]}'; check its spelling (see `ensemble schema`)"
    elif first["type"] == "missing":
        message = f"missing key '{location[-1]}'; add it (see `ensemble schema`)"
    elif first["type"] == "literal_error":
        message = f"{message} (got {shown(first['input'])})"
    extra = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{document.source}:{document.line_of(location)}: {place(location)}: {message}{extra}"
