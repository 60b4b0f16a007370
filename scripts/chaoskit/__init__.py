"""The chaos run of scripts/chaos.py, in small parts.

The worker launcher, database and Kafka producing helpers are the test suite's
(tests/support), shared with the benchmarks: the repository root goes on the import path
for them (scripts/chaos.py has only scripts/ there).
"""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
