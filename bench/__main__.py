"""`python -m bench [--smoke] [options]`: every benchmark in turn (`make bench`), each given the same options,
stopping at the first that fails. `make test` runs each one's `--smoke` as a test of its own
(tests/bench/test_smoke.py), beside the rest of the suite."""

import subprocess
import sys

from bench import BENCHMARKS


def main() -> int:
    for name in BENCHMARKS:
        done = subprocess.run([sys.executable, "-m", f"bench.{name}", *sys.argv[1:]], check=False)
        if done.returncode != 0:
            return done.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
