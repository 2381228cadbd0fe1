"""Submit side of the worker protocol: pack a Parsl call, read back its outcome.

Parsl hands the executor its own wrappers around the app's function: `wrap_error` (python and
bash apps) and `remote_side_bash_executor` (bash apps). Both import parsl when they run (a
second or more), which one job per task pays every time. So for job-per-task the call is
unwrapped: the worker runs the app's function (or `parsl_ensemble.bash`, the lean twin of the
bash runner), sends exceptions back with their traceback, and the Future gets them as Parsl's
executors give them.

That stands in for Parsl's code, so it is done only where it is known to be the same: the
source of both wrappers must be the one the twins were checked against (`CHECKED`; the tests
compare the twin with Parsl's runner on every error case). With another Parsl the call goes
as Parsl made it, wrappers and all: right, only slower to start, and said once in the log.

Warm workers run the same worker, forked from a process that has imported it, `dill` and
`tblib` once: not Parsl, whose 45 MB would make every fork slower (its wrappers, where they
run, import it once per worker and the worker keeps it).

Functions go by value (`dill`, `recurse=True`), so that unpickling the app defined in a module
that imports parsl does not import that module; parsl Files go as their lean twin.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import logging
import pickle
import sys
import types
from collections.abc import Callable
from typing import Any

import dill
import parsl
import parsl.app.errors
from parsl.app.bash import remote_side_bash_executor
from parsl.data_provider.files import File as ParslFile

from parsl_ensemble import files
from parsl_ensemble.bash import BashAppError, run_bash_app

log = logging.getLogger(__name__)

#: sha256 of the source of the Parsl functions the lean twins stand in for (parsl 2026.10.26).
CHECKED = {
    "wrap_error": "1f0dfdc82b9d5002f15168e5fdebd9c41b171f148d4414c23a939c127ed8b69c",
    "remote_side_bash_executor": (
        "736d67085d9831af9751f10e6f72b0e373dc56a377ca2b1d9461a143005073a1"
    ),
}
_WRAP_ERROR_CODE = parsl.app.errors.wrap_error(len).__code__


def fingerprint(function: Callable[..., Any]) -> str | None:
    """sha256 of a function's source, or None where the source cannot be read."""
    try:
        return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
    except (OSError, TypeError):
        return None


def _same_as_checked() -> dict[str, bool]:
    found = {
        "wrap_error": fingerprint(parsl.app.errors.wrap_error),
        "remote_side_bash_executor": fingerprint(remote_side_bash_executor),
    }
    same = {name: found[name] == digest for name, digest in CHECKED.items()}
    changed = [name for name, ok in same.items() if not ok]
    if changed:
        log.warning(
            "parsl %s's %s differ from what parsl_ensemble's lean worker was checked against "
            "(parsl 2026.10.26): job-per-task apps run Parsl's own wrappers, which import parsl "
            "in every job (about a second more per task; warm workers pay it once)",
            parsl.__version__,
            " and ".join(changed),
        )
    return same


#: Whether each of Parsl's wrappers may be replaced by its lean twin here.
LEAN = _same_as_checked()


def unwrap(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function the worker runs for what Parsl submitted: the same call, without importing
    parsl where the twins are known to be the same; else what Parsl submitted."""
    if not LEAN["wrap_error"] or getattr(func, "__code__", None) is not _WRAP_ERROR_CODE:
        return func  # e.g. monitoring or a python app's walltime wrapper: run as given
    inner = func.__wrapped__  # type: ignore[attr-defined]
    if isinstance(inner, functools.partial) and inner.func is remote_side_bash_executor:
        if not LEAN["remote_side_bash_executor"]:
            return func
        return functools.partial(run_bash_app, *inner.args, **inner.keywords)
    return inner


class _Pickler(dill.Pickler):
    """dill, with parsl Files sent as `parsl_ensemble.files.File` (no parsl import to load)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is ParslFile:
            return files.File, (obj.url, obj.local_path)
        return NotImplemented


class _NotData(Exception):
    """An argument `_DataPickler` leaves to dill."""


class _DataPickler(pickle.Pickler):
    """The C pickler, for arguments that are data: on this project's test machine dill took
    14 us for an app's empty arguments, this one 0.5 us. What dill packs otherwise than
    pickle would (functions, classes and modules, by value where they come from `__main__`;
    objects of classes defined in `__main__`) makes it give up, and dill packs the arguments
    as before; parsl Files go as their lean twin, as with dill."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is ParslFile:
            return files.File, (obj.url, obj.local_path)
        if isinstance(obj, _NOT_DATA) or type(obj).__module__ == "__main__":
            raise _NotData
        return NotImplemented


_NOT_DATA = (type, types.FunctionType, types.MethodType, types.ModuleType, types.CodeType)


def pack(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The lean worker's input: this process's import path, the function and the arguments,
    functions by value. The function is packed once per function object, as Parsl's own
    serializer caches callables (taken to be immutable): by value, with what it refers to, it
    is most of the cost (and the worker unpacks it once per process)."""
    try:
        function = _packed_function(func)
    except TypeError:  # unhashable
        function = _dumps(unwrap(func))
    return pickle.dumps((list(sys.path), function, _pack_arguments((args, kwargs))))


def _pack_arguments(arguments: tuple[tuple[Any, ...], dict[str, Any]]) -> bytes:
    """Data by the C pickler, anything else by dill (the worker loads both with dill)."""
    buffer = io.BytesIO()
    try:
        _DataPickler(buffer, dill.settings["protocol"]).dump(arguments)
    except (_NotData, pickle.PicklingError, TypeError, AttributeError):
        return _dumps(arguments)
    return buffer.getvalue()


@functools.lru_cache(maxsize=128)
def _packed_function(func: Callable[..., Any]) -> bytes:
    return _dumps(unwrap(func))


def _dumps(value: Any) -> bytes:
    buffer = io.BytesIO()
    _Pickler(buffer, recurse=True).dump(value)
    return buffer.getvalue()


def outcome(data: bytes) -> tuple[bool, Any]:
    """(True, value) or (False, exception to set on the Future) from the worker's output."""
    kind, value = dill.loads(data)
    if kind == "ok":
        return True, value
    if isinstance(value, BashAppError):
        error = getattr(parsl.app.errors, value.kind)(*value.kind_args)
        error.__cause__ = value.__cause__
        return False, error.with_traceback(value.__traceback__)
    return False, value
