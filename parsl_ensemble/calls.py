"""Submit side of the worker protocol: pack a Parsl call, read back its outcome.

Parsl hands the executor its own wrappers around the app's function: `wrap_error` (python and
bash apps) and `remote_side_bash_executor` (bash apps). Both import parsl when they run, so the
call is unwrapped here: the worker runs the app's function (or the lean bash runner) and sends
exceptions back with their traceback; the Future gets them as Parsl's executors give them.
Functions go by value (`dill`, `recurse=True`), so that unpickling the app defined in a module
that imports parsl does not import that module; parsl Files go as their lean twin.
"""

from __future__ import annotations

import functools
import io
import pickle
import sys
from collections.abc import Callable
from typing import Any

import dill
import parsl.app.errors
from parsl.app.bash import remote_side_bash_executor
from parsl.data_provider.files import File as ParslFile

from parsl_ensemble import files
from parsl_ensemble.bash import BashAppError, run_bash_app

_WRAP_ERROR_CODE = parsl.app.errors.wrap_error(len).__code__


def unwrap(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function the worker runs for what Parsl submitted: the same call, no parsl import."""
    if getattr(func, "__code__", None) is not _WRAP_ERROR_CODE:
        return func  # e.g. monitoring or a python app's walltime wrapper: run as given
    inner = func.__wrapped__  # type: ignore[attr-defined]
    if isinstance(inner, functools.partial) and inner.func is remote_side_bash_executor:
        return functools.partial(run_bash_app, *inner.args, **inner.keywords)
    return inner


class _Pickler(dill.Pickler):
    """dill, with parsl Files sent as `parsl_ensemble.files.File` (no parsl import to load)."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is ParslFile:
            return files.File, (obj.url, obj.local_path)
        return NotImplemented


def pack(func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The worker's input: this process's import path and the call, functions by value."""
    buffer = io.BytesIO()
    _Pickler(buffer, recurse=True).dump((unwrap(func), args, kwargs))
    return pickle.dumps((list(sys.path), buffer.getvalue()))


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
