"""Where the test data lives: ``tests/data`` in this checkout (see its README).

One constant, so that no test builds the path on its own (they once reached for a folder
beside the repository, which a clone does not have).
"""

from __future__ import annotations

from pathlib import Path

TESTDATA = Path(__file__).resolve().parents[1] / "data"
