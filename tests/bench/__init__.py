"""Benchmarks of Opsbook on the real stack: `make bench` (python -m tests.bench).

A compose project of its own (opsbook-bench, ports 28000/29000/29090, build/bench-stack/; another
with OPSBOOK_BENCH_PROJECT and the OPSBOOK_BENCH_*_PORT settings), the demo accounts plus forty
bench engineers; figures measured back to back once the machine is quiet; every comparison a
ratio of samples taken side by side in the same run; docs/benchmarks.md written from the results.
Nothing here is a test: no time is asserted anywhere.
"""

import sys
from pathlib import Path

# The hub's package lives in hub/ (as for the unit tests, tests/unit/conftest.py): the floor takes
# the engineers' CPU weight from it.
HUB_DIR = Path(__file__).resolve().parents[2] / "hub"
if str(HUB_DIR) not in sys.path:
    sys.path.insert(0, str(HUB_DIR))
