"""Warm tasks' output files on a real worker: made when the task starts, appended to when they
exist, gone when the task left them empty; an empty one is moved aside and linked in as the
next task's new file (the same inode), never over a file that exists."""

from __future__ import annotations

import json
from pathlib import Path

from test_warm_member import in_process
from test_warm_reuse import one_worker, outcomes, run_all

from ensemble_core.events import Outcome
from ensemble_core.spec import JobSpec


def stdout_inode(record: Path, then: str = "") -> list[str]:
    """A task that writes the inode of its standard output and the worker's scratch directory
    (its TMPDIR's parent) to `record`, then does `then`."""
    return in_process(
        "import json, os; json.dump([os.fstat(1).st_ino, os.path.dirname(os.environ['TMPDIR'])],"
        f" open({str(record)!r}, 'w')); {then}"
    )


def test_empty_outputs_go_and_their_files_serve_the_next_tasks(tmp_path, log_dir):
    out = tmp_path / "out"
    out.mkdir()
    before = out / "before.log"
    before.write_text("kept\n")
    records = [tmp_path / f"inode{i}" for i in range(4)]
    quiet = "import sys; sys.stdout = open(os.devnull, 'w')"  # timeit prints nothing now
    specs = [
        JobSpec(command=stdout_inode(records[0], quiet), stdout=str(out / "a.log")),
        JobSpec(command=stdout_inode(records[1], quiet), stdout=str(out / "b.log")),
        JobSpec(command=stdout_inode(records[2], "print('said')"), stdout=str(out / "c.log")),
        JobSpec(command=stdout_inode(records[3], "print('more')"), stdout=str(before)),
    ]
    with one_worker(log_dir, reuse=None) as ensemble:
        first = run_all(ensemble, specs[:1])
        inode, scratch = json.loads(records[0].read_text())
        assert not (out / "a.log").exists()
        # Its empty file waits in the worker's scratch directory, for the next task.
        assert [path.stat().st_ino for path in Path(scratch).glob("spare-*")] == [inode]
        handles = first + run_all(ensemble, specs[1:])
    assert outcomes(handles) == [Outcome.SUCCESS] * 4
    inodes = [json.loads(record.read_text())[0] for record in records]
    assert inodes[0] == inodes[1] == inodes[2]  # a's empty file became b's, then c's
    assert inodes[3] == before.stat().st_ino != inodes[0]  # an existing file is appended to
    assert sorted(path.name for path in out.iterdir()) == ["before.log", "c.log"]
    assert (out / "c.log").read_text().startswith("said\n")
    assert before.read_text().startswith("kept\nmore\n")


def test_an_output_file_in_a_directory_not_made_yet_gets_its_directory(tmp_path, log_dir):
    records = [tmp_path / f"inode{i}" for i in range(3)]
    quiet = "import sys; sys.stdout = open(os.devnull, 'w')"
    specs = [
        JobSpec(command=stdout_inode(records[0], quiet), stdout=str(tmp_path / "a.log")),
        # A spare file waits now; this one's directory does not exist yet: made, as for a job.
        JobSpec(command=stdout_inode(records[1], "print('deep')"), stdout=str(tmp_path / "x/y/b")),
        JobSpec(command=stdout_inode(records[2], quiet), stdout=str(tmp_path / "z/c.log")),
    ]
    with one_worker(log_dir, reuse=None) as ensemble:
        handles = run_all(ensemble, specs[:1]) + run_all(ensemble, specs[1:])
    assert outcomes(handles) == [Outcome.SUCCESS] * 3
    assert (tmp_path / "x/y/b").read_text().startswith("deep\n")
    assert (tmp_path / "z").is_dir() and not (tmp_path / "z/c.log").exists()
