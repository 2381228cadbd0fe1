"""`python -m benchmarks` (or `make benchmark`): every benchmark, one after the other.

Benchmarks that need something this machine lacks (a Flux instance) say so and skip.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    failed = 0
    for script in sorted(HERE.glob("*.py")):
        if script.name.startswith("_"):
            continue
        print(f"== {script.stem}", flush=True)
        module = f"{HERE.name}.{script.stem}"
        failed += subprocess.run([sys.executable, "-m", module], cwd=HERE.parent).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
