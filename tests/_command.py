"""The ``auditmw`` command run in this process, as a test reads it."""

from __future__ import annotations

import pytest

from auditmw._cli import main


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``auditmw *argv``: its exit code, and what it wrote to stdout and stderr."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
