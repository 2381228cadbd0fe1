"""The lean worker: run one Parsl task inside an ensemble job.

`python -m parsl_ensemble.worker PATH@OFFSET+LENGTH OUT` reads `(sys.path, function, arguments)`
from that slice of PATH (calls of many tasks share a file, `inputs`), the function and
`(args, kwargs)` each `dill.dumps(..., recurse=True)`, calls the function and writes
`("ok", value)` or `("error", exception)` to OUT, the exception with its traceback (tblib); in
a warm worker's reused process, a small one goes back with the task's end instead of to OUT.

It imports neither parsl nor the executor: `import parsl` costs 0.7-1.7 s, more than most tasks
take, and the executor sends functions by value so that unpickling them needs no parsl either.
In a job of several tasks every rank runs the function and rank 0 writes the result, as Parsl's
FluxExecutor does.
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
from typing import Any

if __name__ == "__main__":
    # Run as the importable module, not as __main__: RemoteError must unpickle by reference.
    # At once, before the rest of this file: a warm worker's reused process runs this file as
    # `__main__` for every task, and making its class and functions again each time cost more
    # than the rest of the file does for a no-op app.
    from parsl_ensemble.worker import main as module_main

    sys.exit(module_main(sys.argv))

#: Where a warm worker's reused process takes a task's result (no file): see main.
WARM_RESULT = "ensemble_core.members.warm_result"


class RemoteError(Exception):
    """Stands in for a task's exception that cannot be pickled: its type, text and traceback."""

    def __init__(self, type_name: str, text: str, remote_traceback: str) -> None:
        super().__init__(type_name, text, remote_traceback)
        self.type_name, self.text, self.remote_traceback = type_name, text, remote_traceback

    def __str__(self) -> str:
        return f"{self.type_name}: {self.text}\nremote traceback:\n{self.remote_traceback}"


def run(call: str) -> tuple[str, Any]:
    """Load the call and make it: ("ok", value) or ("error", exception)."""
    calls, _, span = call.rpartition("@")
    offset, _, length = span.partition("+")
    path, function, arguments = pickle.loads(_read(calls, int(offset), int(length)))
    sys.path[:0] = [entry for entry in path if entry not in sys.path]
    import dill

    try:
        func = _function(function)
        args, kwargs = dill.loads(arguments)
        return "ok", func(*args, **kwargs)
    except Exception as error:
        # Drop this frame: the traceback a user reads starts in their own code.
        return "error", error.with_traceback(error.__traceback__.tb_next)


def _read(path: str, offset: int, length: int) -> bytes:
    """The slice of the calls file (fewer than `length` bytes only at its end). Read with
    os.pread: Python's buffered file made seven system calls and a reader object per task, a
    reused process's most for a no-op app; this makes three."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.pread(fd, length, offset)
        while len(data) < length:  # a short read, as a signal can make: read on
            more = os.pread(fd, length - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data
    finally:
        os.close(fd)


@functools.lru_cache(maxsize=128)
def _function(packed: bytes) -> Any:
    """The app's function, unpacked once per process that runs several (a reused one), as
    Parsl's own serializer caches callables."""
    import dill

    return dill.loads(packed)


def dumps(outcome: tuple[str, Any]) -> bytes:
    """Pickle the outcome; what cannot travel is replaced by an error saying so."""
    kind, value = outcome
    if kind == "error":
        from tblib import pickling_support

        pickling_support.install(value)
    try:
        return _pickle(outcome)
    except Exception as error:
        if kind == "error":
            import traceback

            text = "".join(traceback.format_exception(value))
            return _pickle(("error", RemoteError(type(value).__name__, str(value), text)))
        unpicklable = TypeError(f"the task's result ({type(value).__name__}) cannot be pickled")
        unpicklable.__cause__ = error
        return dumps(("error", unpicklable))


def _pickle(outcome: tuple[str, Any]) -> bytes:
    """pickle if it can, else dill (by value).

    dill imports the module named by any dict with a `__name__` that it pickles, and the frames
    of a traceback hold such dicts: for an app defined in a module that imports parsl, 0.7 s.
    """
    try:
        return pickle.dumps(outcome)
    except Exception:
        import dill

        return dill.dumps(outcome, recurse=True)


def main(argv: list[str]) -> int:
    call, out_path = argv[1:3]
    outcome = run(call)
    if os.environ.get("FLUX_TASK_RANK", "0") != "0":
        return 0
    data = dumps(outcome)
    write = functools.partial(_write, out_path, data)
    # In a warm worker's reused process the result goes back with the task's end, as HTEX
    # sends results over its socket: no file (`warm_result`). Only such a process has the
    # module loaded: a job of its own imports nothing for it.
    warm = sys.modules.get(WARM_RESULT)
    if warm is None or not warm.offer(data, write):
        write()
    return 0


def _write(path: str, data: bytes) -> None:
    """The result file, whole or not at all: the executor never reads half of one."""
    partial = f"{path}.part"
    with open(partial, "wb") as stream:
        stream.write(data)
    os.replace(partial, path)
