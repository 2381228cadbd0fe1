"""YAML and JSON documents handed to `ensemble translate`, with the line of every problem."""

from __future__ import annotations

from typing import Any

import yaml

from ensemble_core.errors import ConfigError


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
    for part in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((value for key, value in node.value if key.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if part < len(node.value) else None
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def keys(node: yaml.Node) -> dict[str, Any]:
    """The scalar values of a mapping's top-level keys (to tell a format by its keys)."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {
        key.value: value.value if isinstance(value, yaml.ScalarNode) else True
        for key, value in node.value
        if isinstance(key, yaml.ScalarNode)
    }
