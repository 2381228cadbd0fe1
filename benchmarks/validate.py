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


#: A job group and a rule that submits it, in block style and in flow style.
STYLES = {
    "block style": (
        "  - name: g{i}\n    command: sleep {seven}\n    count: 2\n",
        "  - trigger: metric\n    name: count.g{i}.success\n    when: 2\n"
        "    action:\n      name: submit\n      label: g{i}\n",
    ),
    "flow style": (
        "  - {{name: g{i}, command: sleep {seven}, count: 2}}\n",
        "  - {{trigger: metric, name: count.g{i}.success, when: 2, "
        "action: {{name: submit, label: g{i}}}}}\n",
    ),
}


def write_file(path: Path, style: str) -> tuple[int, int]:
    """Groups and rules in `style` until the file reaches TARGET_BYTES: (groups, bytes)."""
    group, rule = STYLES[style]
    jobs, rules, size = [], [], 0
    while size < TARGET_BYTES:
        i = len(jobs)
        jobs.append(group.format(i=i, seven=i % 7))
        rules.append(rule.format(i=i))
        size += len(jobs[-1]) + len(rules[-1])
    path.write_text("jobs:\n" + "".join(jobs) + "rules:\n" + "".join(rules))
    return len(jobs), path.stat().st_size


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
        for name in STYLES:
            path = Path(directory) / f"{name.split()[0]}.yaml"
            count, size = write_file(path, name)
            ours, peer = measure(OURS, path), measure(PEER, path)
            print(
                f"| {name} | {count:,} + {count:,} | {size / 1e6:.1f} | {ours[0]:.2f} s, "
                f"{ours[1]} MB | {peer[0]:.2f} s, {peer[1]} MB |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
