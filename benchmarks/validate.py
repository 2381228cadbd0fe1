"""How long `ensemble validate` takes for a 2 MB ensemble file, and its memory, against the peer.

Two files of about 2 MB (job groups and metric rules that submit them), one in block style and
one in flow style (which makes the loader measure nesting on the event stream first). Each is
read in a fresh process: by the loader every front door uses (read once, C loader, checks, the
schema), and by the peer, `yaml.safe_load` as ensemble-python and the loader before it read
files (the pure-Python PyYAML loader; the old loader read every file twice so). Target: under 2 s.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_BYTES = 2_000_000
OURS = (
    "import resource, sys, time; from ensemble_core.rules.loader import load"
    "; t = time.perf_counter(); load(sys.argv[1]); print(time.perf_counter() - t,"
    " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
)
PEER = (
    "import resource, sys, time, yaml; t = time.perf_counter()"
    "; yaml.safe_load(open(sys.argv[1], encoding='utf-8')); print(time.perf_counter() - t,"
    " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
)


def block_file(path: Path) -> tuple[int, int]:
    """Groups and rules in block style until the file reaches TARGET_BYTES."""
    jobs, rules, count = [], [], 0
    while sum(map(len, jobs)) + sum(map(len, rules)) < TARGET_BYTES:
        jobs.append(f"  - name: g{count}\n    command: sleep {count % 7}\n    count: 2\n")
        rules.append(
            f"  - trigger: metric\n    name: count.g{count}.success\n    when: 2\n"
            f"    action:\n      name: submit\n      label: g{count}\n"
        )
        count += 1
    path.write_text("jobs:\n" + "".join(jobs) + "rules:\n" + "".join(rules))
    return count, path.stat().st_size


def flow_file(path: Path) -> tuple[int, int]:
    """The same in flow style, one group or rule a line."""
    jobs, rules, count = [], [], 0
    while sum(map(len, jobs)) + sum(map(len, rules)) < TARGET_BYTES:
        jobs.append(f"  - {{name: g{count}, command: sleep {count % 7}, count: 2}}\n")
        rules.append(
            f"  - {{trigger: metric, name: count.g{count}.success, when: 2, "
            f"action: {{name: submit, label: g{count}}}}}\n"
        )
        count += 1
    path.write_text("jobs:\n" + "".join(jobs) + "rules:\n" + "".join(rules))
    return count, path.stat().st_size


def measure(code: str, path: Path) -> tuple[float, int]:
    """(seconds, peak MB) of reading `path` in a fresh interpreter, best of three."""
    runs = []
    for _ in range(3):
        output = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        ).stdout.split()
        runs.append((float(output[0]), int(output[1])))
    return min(runs)


def main() -> int:
    print(
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}"
    )
    print(f"date: {time.strftime('%Y-%m-%d')}")
    print("| file | groups + rules | MB | loader: s, peak MB | yaml.safe_load: s, peak MB |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as directory:
        for name, make in (("block style", block_file), ("flow style", flow_file)):
            path = Path(directory) / f"{name.split()[0]}.yaml"
            count, size = make(path)
            ours, peer = measure(OURS, path), measure(PEER, path)
            print(
                f"| {name} | {count:,} + {count:,} | {size / 1e6:.1f} | {ours[0]:.2f} s, "
                f"{ours[1]} MB | {peer[0]:.2f} s, {peer[1]} MB |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
