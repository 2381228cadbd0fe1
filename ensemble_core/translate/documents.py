"""YAML and JSON documents handed to `ensemble translate`, with the line of every problem."""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError

from ensemble_core.errors import ConfigError
from ensemble_core.rules.yamlfile import line_of


def compose(text: str, source: str) -> list[yaml.Node]:
    """The documents of a YAML (or JSON) text, or a ConfigError naming the line at fault."""
    try:
        return [node for node in yaml.compose_all(text, Loader=yaml.SafeLoader) if node]
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        column = f" at column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML or JSON ({problem}{column})") from None


def data(node: yaml.Node) -> Any:
    """A composed document as Python data."""
    return yaml.safe_load(yaml.serialize(node))


def line(node: yaml.Node, path: list[Any]) -> int:
    """The 1-based line of the deepest node on `path` that the document has."""
    return line_of(node, path)


def problem(error: ValidationError) -> tuple[list[Any], str]:
    """Where pydantic's first complaint about a JobSpec is, and `place: message` for it."""
    first = error.errors()[0]
    place = ".".join(str(part) for part in first["loc"]) or "spec"
    return list(first["loc"]), f"{place}: {first['msg']}"


def keys(node: yaml.Node) -> dict[str, Any]:
    """The scalar values of a mapping's top-level keys (to tell a format by its keys)."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {
        key.value: value.value if isinstance(value, yaml.ScalarNode) else True
        for key, value in node.value
        if isinstance(key, yaml.ScalarNode)
    }
