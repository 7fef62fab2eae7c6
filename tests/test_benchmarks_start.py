"""Every benchmark in benchmarks/ still starts: its imports of the package resolve.

The benchmarks import internals they measure (stores, checkpoints); a rename inside the
package must not leave one broken until somebody runs it. ``--help`` imports everything
and measures nothing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ._paths import ROOT

BENCHMARKS = sorted(
    path for path in (ROOT / "benchmarks").glob("*.py") if not path.name.startswith("_")
)


def test_there_are_benchmarks() -> None:
    assert len(BENCHMARKS) >= 5


@pytest.mark.parametrize("script", BENCHMARKS, ids=[path.stem for path in BENCHMARKS])
def test_the_benchmark_starts(script: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", str(script), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
