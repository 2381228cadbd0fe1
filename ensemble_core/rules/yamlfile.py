"""Reading a YAML file a user hands in: once, as UTF-8 text, with the C loader where present.

What is not a regular readable file, not UTF-8 text, nested absurdly deep or repeats a key is
refused with one `ConfigError` line naming the file, the line and the fix, before anything is
built from it. The C composer recurses once per nesting level and crashes the interpreter past a
few ten thousand levels, so a file that could nest that deep is measured first with the event
stream (which does not recurse); ordinary files, whose depth a glance at the text bounds, are not.
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from ensemble_core.errors import ConfigError

#: The largest file read: far above any real ensemble or rules file (20,000 groups and rules
#: take 2 MB), far below what would exhaust memory.
MAX_FILE_BYTES = 64 * 2**20
#: The deepest nesting of lists and mappings accepted (a real file nests 6 levels).
MAX_NESTING = 32

LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
#: Nesting the composer survives without a measure first: the C composer handles 20,000 levels
#: on an 8 MB stack, the Python one about 300 under the default recursion limit.
_SAFE_UNMEASURED_DEPTH = 1000 if LOADER is not yaml.SafeLoader else 100
_KINDS = {
    stat.S_ISDIR: "a directory",
    stat.S_ISFIFO: "a FIFO (named pipe)",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISSOCK: "a socket",
}
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True, slots=True)
class Document:
    """A parsed file: its data, the node tree (for line numbers) and its name in messages."""

    data: Any
    node: yaml.Node | None
    source: str

    def line_of(self, location: list[Any] | tuple[Any, ...]) -> int:
        """The 1-based line of the deepest node on `location` that exists."""
        return line_of(self.node, location)

    def fail(self, location: list[Any] | tuple[Any, ...], message: str) -> ConfigError:
        """The one-line error for a problem at `location`."""
        return ConfigError(f"{self.source}:{self.line_of(location)}: {place(location)}: {message}")


def read_text(path: str) -> str:
    """The file's text; a ConfigError if it is not a readable regular file of UTF-8 text."""
    try:
        kind = next((name for test, name in _KINDS.items() if test(os.stat(path).st_mode)), None)
        if kind is not None:
            raise ConfigError(f"{path}: is {kind}, not a file: give the path of a YAML file")
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror}); check the path") from None
    with open(descriptor, "rb") as stream:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: not a regular file: give the path of a YAML file")
        data = b"" if info.st_size > MAX_FILE_BYTES else stream.read(MAX_FILE_BYTES + 1)
    if info.st_size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_FILE_BYTES // 2**20} MB: not an ensemble or rules file"
        )
    return decode(data, path)


def decode(data: bytes, source: str) -> str:
    """UTF-8 text (a leading byte-order mark dropped), or a ConfigError saying where it is not."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{source}:1: the file is UTF-16 text: save it as UTF-8")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigError(
            f"{source}:{line}: byte 0x{data[error.start]:02x} at column {column} is not UTF-8: "
            "save the file as UTF-8 text"
        ) from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise ConfigError(
            f"{source}:{line}: a NUL character: this is not a text file (UTF-16?); "
            "save it as UTF-8 text"
        )
    return text


def parse(text: str, source: str) -> Document:
    """Parse once; refuse an empty document, absurd nesting and repeated keys."""
    if not text.strip():
        raise ConfigError(f"{source}:1: the file is empty: write rules: (and jobs:) in it")
    loader = LOADER(text)
    try:
        if _may_nest_deeper_than(text, _SAFE_UNMEASURED_DEPTH):
            _measure_nesting(text, source)
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(
                f"{source}:1: the file holds only comments: write rules: (and jobs:) in it"
            )
        _check_tree(node, source)
        data = loader.construct_document(node)
    except yaml.YAMLError as error:
        raise ConfigError(_syntax_error(error, text, source)) from None
    finally:
        loader.dispose()
    return Document(data, node, source)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the garbage collector while a file is read and validated: the node tree and the
    data are a million small objects that all live on, which every collection would walk again
    (with it running, a 2 MB file took three times as long)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _may_nest_deeper_than(text: str, depth: int) -> bool:
    """A cheap upper bound: every flow level opens a bracket; a block level needs a deeper
    column than its parent's, or the same column once (a list under a key)."""
    if len(text) <= depth:
        return False
    longest = max(map(len, text.splitlines()), default=0)
    return text.count("[") + text.count("{") + 2 * longest + 2 > depth


def _measure_nesting(text: str, source: str) -> None:
    """Walk the event stream (which does not recurse) and stop at the first level too deep."""
    depth = 0
    starts = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
    ends = (yaml.MappingEndEvent, yaml.SequenceEndEvent)
    for event in yaml.parse(text, Loader=LOADER):
        if isinstance(event, starts):
            depth += 1
            if depth > MAX_NESTING:
                raise _too_deep(source, event.start_mark.line + 1, None)
        elif isinstance(event, ends):
            depth -= 1


def _check_tree(root: yaml.Node, source: str) -> None:
    """Nesting and repeated keys, in file order; each node once (aliases share nodes)."""
    stack: list[tuple[yaml.Node, int, tuple[Any, ...]]] = [(root, 1, ())]
    seen: set[int] = set()
    while stack:
        node, depth, location = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if depth > MAX_NESTING:
            raise _too_deep(source, node.start_mark.line + 1, location)
        children: list[tuple[yaml.Node, int, tuple[Any, ...]]] = []
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, Any], yaml.Node] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE_TAG:
                    earlier = first.setdefault((key.tag, key.value), key)
                    if earlier is not key:
                        raise ConfigError(
                            f"{source}:{key.start_mark.line + 1}: {place((*location, name))}: "
                            f"the key '{name}' appears twice (first on line "
                            f"{earlier.start_mark.line + 1}): keep one"
                        )
                if isinstance(key, yaml.CollectionNode):
                    children.append((key, depth + 1, (*location, "?")))
                if isinstance(value, yaml.CollectionNode):
                    children.append((value, depth + 1, (*location, name)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                if isinstance(item, yaml.CollectionNode):
                    children.append((item, depth + 1, (*location, index)))
        stack.extend(reversed(children))


def _too_deep(source: str, line: int, location: tuple[Any, ...] | None) -> ConfigError:
    """`location` is None where it is not known (the event stream keeps no path)."""
    where = f"{place(location)}: " if location is not None else ""
    return ConfigError(
        f"{source}:{line}: {where}nested deeper than {MAX_NESTING} levels of lists and "
        "mappings: no ensemble or rules file needs that; check the file"
    )


def _syntax_error(error: yaml.YAMLError, text: str, source: str) -> str:
    """One line: where the YAML broke and what the parser expected."""
    mark = getattr(error, "problem_mark", None)
    if mark is not None:
        line = mark.line + 1
    else:  # a ReaderError: a character YAML does not allow
        line = text.count("\n", 0, getattr(error, "position", 0)) + 1
    if isinstance(error, yaml.reader.ReaderError):
        problem = f"character {error.character!r} is not allowed in YAML ({error.reason})"
    else:
        parts = [getattr(error, "context", None), getattr(error, "problem", None)]
        problem = ": ".join(part for part in parts if part) or str(error)
    return f"{source}:{line}: YAML syntax error: {' '.join(problem.split())}; fix the YAML"


def line_of(node: Any, location: list[Any] | tuple[Any, ...]) -> int:
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


def place(location: list[Any] | tuple[Any, ...]) -> str:
    """`rules[0].action.label` from ("rules", 0, "action", "label")."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location).lstrip(".")
    return text or "top level"
