"""A one-line progress bar for long CLI runs; silent unless the stream is a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self.total = total
        self._last_draw = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last_draw < 0.1 and done != self.total):
            return
        self._last_draw = now
        if self.total:
            fraction = min(done / self.total, 1.0)
            bar = "#" * int(fraction * 30)
            line = f"{self.label} [{bar:<30}] {done:,}/{self.total:,} {fraction:4.0%}"
        else:
            line = f"{self.label} {done:,}"
        self.stream.write("\r" + line)
        self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
