"""The Parsl EnsembleExecutor on the local member: apps, errors, resources, rules, retries."""

from __future__ import annotations

import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import dill
import parsl
import pytest
from parsl import bash_app, python_app
from parsl.app.errors import BashExitFailure
from parsl.config import Config
from parsl.data_provider.files import File
from parsl.errors import ConfigurationError
from parsl.executors.errors import InvalidResourceSpecification
from parsl.serialize.errors import SerializationError
from parsl.utils import RepresentationMixin

from parsl_ensemble import EnsembleExecutor, calls
from parsl_ensemble.errors import EnsembleTaskError
from parsl_ensemble.worker import RemoteError


@pytest.fixture
def load(tmp_path, monkeypatch):
    """Load a DFK with one EnsembleExecutor (in tmp_path); return the executor."""
    monkeypatch.chdir(tmp_path)
    loaded = []

    def _load(retries: int = 0, retry_handler=None, **settings) -> EnsembleExecutor:
        settings.setdefault("member_settings", {})["log_dir"] = str(tmp_path / "logs")
        executor = EnsembleExecutor(**settings)
        config = Config(
            executors=[executor],
            run_dir=str(tmp_path / "runinfo"),
            retries=retries,
            retry_handler=retry_handler,
        )
        loaded.append(parsl.load(config))
        return executor

    yield _load
    for dfk in loaded:
        if not dfk.cleanup_called:
            dfk.cleanup()


@python_app
def add(a, b=1, parsl_resource_specification=None):
    return a + b


@python_app
def fail(message):
    raise KeyError(message)


@python_app
def parsl_in_worker(*files):
    import sys

    return "parsl" in sys.modules


@python_app
def use_memory(megabytes, parsl_resource_specification=None):
    import time

    block = b"x" * (megabytes * 2**20)
    time.sleep(1)
    return len(block) // 2**20


@python_app
def sleep(seconds, parsl_resource_specification=None):
    import time

    time.sleep(seconds)


@bash_app
def echo(message, stdout=None, stderr=None):
    return f"echo {message}; echo to-stderr >&2"


@bash_app
def exit_with(code):
    return f"exit {code}"


@bash_app
def copy(inputs=(), outputs=()):
    return f"cp {inputs[0]} {outputs[0]}"


def test_python_apps_closures_and_lambdas(load):
    load()
    offset = 10

    @python_app
    def shifted(x):
        return x + offset

    square = python_app(lambda x: x * x)
    assert [f.result() for f in [add(i) for i in range(5)]] == [1, 2, 3, 4, 5]
    assert shifted(1).result() == 11
    assert square(7).result() == 49
    assert add(add(1), b=add(2)).result() == 5  # dependencies resolve between jobs


def test_worker_does_not_import_parsl(load, tmp_path):
    load()
    source = tmp_path / "in.txt"
    source.write_text("data\n")
    assert parsl_in_worker().result() is False
    assert parsl_in_worker(File(str(source))).result() is False


def test_bash_app_stdout_stderr_files_and_outputs(load, tmp_path):
    load()
    assert echo("hello", stdout="out.txt", stderr=str(tmp_path / "err.txt")).result() == 0
    assert (tmp_path / "out.txt").read_text() == "hello\n"
    assert (tmp_path / "err.txt").read_text().endswith("to-stderr\n")
    source = tmp_path / "source.txt"
    source.write_text("content\n")
    target = File(str(tmp_path / "target.txt"))
    copy(inputs=[File(str(source))], outputs=[target]).result()
    assert Path(target.filepath).read_text() == "content\n"


def test_remote_exception_keeps_its_type_and_traceback(load):
    load()
    future = fail("missing")
    with pytest.raises(KeyError, match="missing"):
        future.result()
    frames = traceback.extract_tb(future.exception().__traceback__)
    assert any(frame.name == "fail" and frame.filename == __file__ for frame in frames)


def test_bash_exit_code_is_parsls_error(load):
    load()
    with pytest.raises(BashExitFailure) as raised:
        exit_with(3).result()
    assert raised.value.exitcode == 3


def test_resource_specification_becomes_the_job(load, mocker):
    executor = load()
    submitted = mocker.spy(executor.ensemble, "submit")
    spec = {
        "num_tasks": 2,
        "num_nodes": 1,
        "cores_per_task": 1,
        "gpus_per_task": 0,
        "memory": 512,
        "walltime": 30,
        "group": "small",
    }
    add(1, parsl_resource_specification=spec).result()
    add(1).result()
    first, second = (h.spec for h in submitted.spy_return_list)
    assert (first.tasks, first.nodes, first.cores_per_task, first.gpus_per_task) == (2, 1, 1, 0)
    assert (first.memory_mb, first.walltime, first.group) == (512, 30, "small")
    assert second.group == "add"  # the app's name by default
    assert second.command[:4] == [sys.executable, "-P", "-m", "parsl_ensemble.worker"]


def test_unknown_keys_warn_once_each(load):
    load()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            add(1, parsl_resource_specification={"cores": 2, "priority": 1}).result()
    messages = sorted(
        str(w.message) for w in caught if str(w.message).startswith("EnsembleExecutor")
    )
    assert len(messages) == 2
    assert "'cores'" in messages[0] and "'priority'" in messages[1]


def test_bad_resource_values_fail_the_future(load):
    load()
    with pytest.raises(InvalidResourceSpecification, match="num_tasks"):
        add(1, parsl_resource_specification={"num_tasks": 0}).result()


def test_a_request_no_member_can_meet_fails_at_once(load):
    load(member_settings={"cores": 2})
    with pytest.raises(EnsembleTaskError, match="unsatisfiable") as raised:
        add(1, parsl_resource_specification={"cores_per_task": 64}).result(timeout=30)
    assert raised.value.outcome == "unsatisfiable"


def test_walltime_ends_the_job_as_timeout(load):
    load()
    with pytest.raises(EnsembleTaskError) as raised:
        sleep(60, parsl_resource_specification={"walltime": 0.5}).result(timeout=30)
    assert raised.value.outcome == "timeout"


def test_retry_oom_resubmits_with_more_memory_before_the_future_resolves(load, mocker):
    executor = load(rules=["retry-oom"])
    submitted = mocker.spy(executor.ensemble, "submit")
    assert use_memory(150, parsl_resource_specification={"memory": 100}).result() == 150
    (handle,) = submitted.spy_return_list
    assert [a.spec.memory_mb for a in handle.attempts] == [100, 200]
    assert [a.record.outcome.value for a in handle.attempts] == ["oom", "success"]


def test_without_a_rule_oom_fails_the_future(load):
    load()
    with pytest.raises(EnsembleTaskError, match="memory") as raised:
        use_memory(150, parsl_resource_specification={"memory": 100}).result()
    assert raised.value.outcome == "oom"


def test_parsl_retry_handler_can_change_the_resources(load, mocker):
    def more_memory(exception, task_record):
        task_record["resource_specification"] = {"memory": 400}
        return 1

    executor = load(retries=2, retry_handler=more_memory)
    submitted = mocker.spy(executor.ensemble, "submit")
    assert use_memory(150, parsl_resource_specification={"memory": 100}).result() == 150
    memories = [h.spec.memory_mb for h in submitted.spy_return_list]
    assert memories == [100, 400]  # two Parsl tries, each one job


def test_parsl_retries_rerun_a_failed_app(load, tmp_path):
    load(retries=2)
    marker = tmp_path / "tries"

    @python_app
    def flaky():
        with open(marker, "a") as stream:
            stream.write("x")
        if len(marker.read_text()) < 3:
            raise RuntimeError("not yet")
        return "done"

    assert flaky().result() == "done"
    assert marker.read_text() == "xxx"


def test_unpicklable_argument_result_and_exception(load):
    load()

    @python_app
    def generator():
        return (i for i in range(3))

    @python_app
    def raise_unpicklable():
        error = ValueError("carries a generator")
        error.generator = (i for i in range(3))
        raise error

    with pytest.raises(SerializationError):
        add(i for i in range(3)).result()
    with pytest.raises(TypeError, match="cannot be pickled"):
        generator().result()
    with pytest.raises(RemoteError, match="ValueError: carries a generator") as raised:
        raise_unpicklable().result()
    assert "raise_unpicklable" in raised.value.remote_traceback


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"member": "nowhere"}, "unknown member 'nowhere'"),
        ({"rules": ["no-such-rules"]}, "no-such-rules"),
    ],
)
def test_bad_member_or_rules_fail_parsl_load(load, settings, message):
    with pytest.raises(ConfigurationError, match=message):
        load(**settings)


def test_shutdown_cancels_running_tasks(load):
    load(member_settings={"cores": 2})
    future = sleep(60)
    add(1).result()  # the sleeper's job has started by now
    parsl.dfk().cleanup()
    with pytest.raises(EnsembleTaskError) as raised:
        future.result(timeout=0)
    assert raised.value.outcome == "cancelled"


def test_standalone_submit_cancel_and_outstanding(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    executor = EnsembleExecutor(working_dir=str(tmp_path / "work"))
    executor.start()
    try:
        assert executor.submit(pow, {}, 2, 5).result(timeout=30) == 32
        running = executor.submit(__import__("time").sleep, {}, 60)
        assert executor.outstanding == 1
        assert running.cancel()
        with pytest.raises(ZeroDivisionError):
            executor.submit(divmod, {}, 1, 0).result(timeout=30)
    finally:
        executor.shutdown()
    assert executor.outstanding == 0
    assert not list((tmp_path / "work").glob("task-*.in"))  # task files are removed


def test_every_init_argument_is_an_attribute(monkeypatch):
    monkeypatch.setattr(RepresentationMixin, "_validate_repr", True)
    text = repr(EnsembleExecutor(label="x", rules=["retry-oom"]))
    assert text.startswith("EnsembleExecutor(") and "retry-oom" in text


def test_the_example_shows_retry_oom_saving_a_task(tmp_path):
    example = Path(__file__).parents[1] / "examples" / "parsl" / "retry_oom.py"
    done = subprocess.run(
        [sys.executable, str(example)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "held (MB): [20, 40, 60, 80, 200]" in done.stdout
    assert "(resubmit) job 5: attempt 2: memory_mb 256" in done.stdout


def test_arguments_that_are_data_skip_dill_and_the_rest_go_as_before():
    """The C pickler packs data (and parsl Files, as their lean twin); functions, classes and
    what only dill can pack go by dill, by value, as they did."""
    data = ((1, "a", [2.0], {"k": b"x"}, File("file:///tmp/in.txt")), {"n": None})
    packed = calls._pack_arguments(data)
    assert b"dill" not in packed and b"parsl_ensemble.files" in packed
    (number, text, floats, mapping, file), keywords = dill.loads(packed)
    assert (number, text, floats, mapping, keywords) == (1, "a", [2.0], {"k": b"x"}, {"n": None})
    assert (type(file).__module__, file.url) == ("parsl_ensemble.files", "file:///tmp/in.txt")

    class Local:
        value = 5

    for value in (lambda: 5, Local, add, Local()):
        packed = calls._pack_arguments(((value,), {}))
        assert packed == calls._dumps(((value,), {}))  # exactly as dill packed it before
