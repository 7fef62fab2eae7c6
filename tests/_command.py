"""The ``auditmw`` command run in this process, as a test reads it."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest

from auditmw._cli import main

from ._paths import ROOT


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``auditmw *argv``: its exit code, and what it wrote to stdout and stderr."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def on_terminal(
    *argv: str, stream: str = "stdout", timeout: float | None = 60
) -> tuple[int, bytes]:
    """``python -m auditmw *argv`` in a child process whose ``stream`` ("stdout" or
    "stderr") is a pseudo-terminal: its exit code, and all it wrote there."""
    primary, secondary = pty.openpty()
    try:
        child = subprocess.run(
            [sys.executable, "-m", "auditmw", *argv],
            **{stream: secondary},  # type: ignore[arg-type]
            cwd=ROOT,
            timeout=timeout,
        )
        os.close(secondary)
        shown = b""
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:  # Linux: EIO once the child's side is closed
                break
            if not data:
                break
            shown += data
    finally:
        os.close(primary)
    return child.returncode, shown
