"""Parsl's bash-app runner without importing parsl; it runs in the job-per-task worker.

Parsl wraps a bash app in `parsl.app.bash.remote_side_bash_executor`, which imports parsl (0.7 s
or more per task). This is the same procedure as parsl 2026.10.26's; `calls` uses it only while
the installed parsl's runner has that release's source (else Parsl's own runs), and
tests/test_parsl_coupling.py runs both on every case. Its errors travel as
`BashAppError(kind, *args)` and the executor raises `parsl.app.errors.<kind>(*args)`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import IO, Any

from parsl_ensemble.files import File


class BashAppError(Exception):
    """A parsl.app.errors exception to raise on the submit side: its class name and arguments."""

    def __init__(self, kind: str, *args: Any) -> None:
        super().__init__(kind, *args)
        self.kind, self.kind_args = kind, args


def run_bash_app(func: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Format the command line with the app's function, run it with bash, check the outputs."""
    func_name = getattr(func, "__name__", "bash_app")
    executable = None
    try:
        executable = func(*args, **kwargs)
        if not isinstance(executable, str):
            raise ValueError(f"Expected a str for bash_app commandline, got {type(executable)}")
    except AttributeError as e:
        if executable is not None:
            raise BashAppError(
                "AppBadFormatting",
                f"App formatting failed for app '{func_name}' with AttributeError: {e}",
            ) from e
        raise BashAppError(
            "BashAppNoReturn",
            f"Bash app '{func_name}' did not return a value, or returned None - "
            f"with this exception: {e}",
        ) from e
    except IndexError as e:
        raise BashAppError(
            "AppBadFormatting", f"App formatting failed for app '{func_name}' with IndexError: {e}"
        ) from e

    std_out = _open_std_stream("stdout", kwargs.get("stdout"))
    std_err = _open_std_stream("stderr", kwargs.get("stderr"))
    timeout = kwargs.get("walltime")
    if std_err is not None:
        print(f"--> executable follows <--\n{executable}\n--> end executable <--", file=std_err)
        std_err.flush()
    try:
        proc = subprocess.Popen(
            executable,
            stdout=std_out,
            stderr=std_err,
            shell=True,
            executable="/bin/bash",
            close_fds=False,
        )
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc.kill()  # parsl leaves it running; the job should end with the app
        raise BashAppError(
            "AppTimeout", f"App {func_name} exceeded walltime: {timeout} seconds"
        ) from e
    except Exception as e:
        raise BashAppError("AppException", f"App {func_name} caught exception", e) from e
    if proc.returncode != 0:
        raise BashAppError("BashExitFailure", func_name, proc.returncode)
    missing = [f for f in kwargs.get("outputs", []) if not os.path.exists(f.filepath)]
    if missing:
        raise BashAppError("MissingOutputs", f"Missing outputs from app {func_name}", missing)
    return proc.returncode


def _open_std_stream(name: str, spec: Any) -> IO[str] | None:
    """Open stdout/stderr as parsl does: a path (append), a (path, mode) tuple or a File."""
    if spec is None:
        return None
    parsl_files = sys.modules.get("parsl.data_provider.files")  # loaded if a File subclass came
    if isinstance(spec, File) or (parsl_files is not None and isinstance(spec, parsl_files.File)):
        fname, mode = os.fspath(spec), "w"
    elif isinstance(spec, str | os.PathLike):
        fname, mode = os.fspath(spec), "a+"
    elif (
        isinstance(spec, tuple)
        and len(spec) == 2
        and isinstance(spec[0], str | os.PathLike)
        and isinstance(spec[1], str)
    ):
        fname, mode = os.fspath(spec[0]), spec[1]
    else:
        # Invalid: parsl's own check raises the error parsl users expect (typeguard's); its
        # import is slow, but only a task that fails anyway pays it.
        from parsl.utils import get_std_fname_mode

        fname, mode = get_std_fname_mode(name, spec)
    if isinstance(fname, bytes):
        fname = fname.decode()
    try:
        if os.path.dirname(fname):
            os.makedirs(os.path.dirname(fname), exist_ok=True)
        return open(fname, mode)
    except Exception as e:
        raise BashAppError("BadStdStreamFile", str(fname)) from e
