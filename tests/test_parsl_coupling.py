"""What the job-per-task worker takes from Parsl, checked against the installed Parsl.

The lean worker stands in for two of Parsl's functions, `wrap_error` and the bash-app runner
`remote_side_bash_executor`, so that a job need not import Parsl (parsl_ensemble/calls.py). It
does so only while their source is the one the twins were checked against; these tests are that
check. When a new Parsl changes either, the first test fails: compare the twin with the new
source, adapt it, run these tests, then record the new fingerprint in `calls.CHECKED` (and raise
the lower bound of parsl in pyproject.toml to the release checked).
"""

from __future__ import annotations

import functools

import parsl
import parsl.app.errors
import pytest
from parsl.app.bash import BashApp, remote_side_bash_executor
from parsl.data_provider.files import File

from parsl_ensemble import calls
from parsl_ensemble.bash import BashAppError, run_bash_app


def test_the_installed_parsl_is_the_one_the_twins_were_checked_against():
    assert calls.LEAN == {"wrap_error": True, "remote_side_bash_executor": True}, (
        f"parsl {parsl.__version__} changed what parsl_ensemble's lean worker stands in for: "
        "see this module's docstring"
    )


def square(x):
    return x * x


def command(text, stdout=None, stderr=None, outputs=(), walltime=None):
    return text


def test_unwrap_gives_the_apps_own_function_and_the_lean_bash_runner():
    assert calls.unwrap(parsl.app.errors.wrap_error(square)) is square
    bash = calls.unwrap(BashApp(command).wrapped_remote_function)
    assert isinstance(bash, functools.partial) and bash.func is run_bash_app
    assert bash.args == (command,)
    other = functools.partial(square, 2)  # not Parsl's wrapper: left as it is
    assert calls.unwrap(other) is other


def outcome(runner, func, *args, **kwargs):
    """(error class name, message) or ("ok", return value) of one bash-app run."""
    try:
        return "ok", runner(func, *args, **kwargs)
    except BashAppError as error:  # the twin's, as the executor turns it into Parsl's
        raised = getattr(parsl.app.errors, error.kind)(*error.kind_args)
        return type(raised).__name__, str(raised)
    except Exception as error:
        return type(error).__name__, str(error)


def not_text(**kwargs):
    return 3


def bad_index(**kwargs):
    return kwargs["outputs_list"][5]  # as a command template indexing past its inputs


def bad_attribute(**kwargs):
    return kwargs["stdout"].missing  # as a template naming an attribute that is not there


CASES = [
    ("succeeds", command, ("echo hello",), {}),
    ("exit code", command, ("exit 3",), {}),
    ("walltime", command, ("sleep 5",), {"walltime": 0.3}),
    ("missing outputs", command, ("true",), {"outputs": [File("never-made.txt")]}),
    ("not text", not_text, (), {}),
    ("index error", bad_index, (), {"outputs_list": []}),
    ("attribute error", bad_attribute, (), {}),
    ("bad stdout", command, ("true",), {"stdout": "/proc/no/such/dir/out"}),
]


@pytest.mark.parametrize(("case", "func", "args", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_the_lean_bash_runner_does_what_parsls_does(
    case, func, args, kwargs, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    results = []
    for runner in (remote_side_bash_executor, run_bash_app):
        streams = {name: str(tmp_path / f"{runner.__name__}.{name}") for name in ("out", "err")}
        given = {"stdout": streams["out"], "stderr": streams["err"], **kwargs}
        result = outcome(runner, func, *args, **given)
        files = [
            (tmp_path / path).read_text() if (tmp_path / path).exists() else None
            for path in streams.values()
        ]
        results.append((result, files))
    assert results[0] == results[1]
