"""Time-ordered UUIDs (version 7, RFC 9562) — Python 3.11 has no ``uuid.uuid7``."""

from __future__ import annotations

import random
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> uuid.UUID:
    """A version-7 UUID; monotonic within this process (a 12-bit counter orders one ms)."""
    return uuid.UUID(int=_uuid7_int())


def uuid7_str() -> str:
    """``str(uuid7())``, without building a ``UUID`` object (this is on every append)."""
    digits = f"{_uuid7_int():032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _uuid7_int() -> int:
    global _last_ms, _counter
    # Ids must be unique, not secret: Python's generator (seeded from the OS, reseeded in
    # a forked child) is enough, and spares the append path a syscall per event.
    rand = random.getrandbits(80)  # counter seed + rand_b
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, (rand >> 64) & 0x3FF
        else:
            # Same millisecond (or the clock went back): keep order by counting up.
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
            ms = _last_ms
        counter = _counter
    rand_b = rand & ((1 << 62) - 1)
    return (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
