"""RFC 8785 (JCS) canonical JSON, with a fast path through orjson.

orjson with sorted keys writes the same bytes as JCS for everything except floats
(``1.0``, ``-0.0``, ``1e20``, ``1e-6``...) and keys outside the Basic Multilingual Plane (JCS
sorts by UTF-16 code units, orjson by code points). orjson also refuses ``str``
subclasses as keys (e.g. a ``StrEnum``) and ``tuple`` subclasses (e.g. a namedtuple).
``check_json`` walks a value once: it rejects what JSON cannot represent exactly and
tells whether the fast path is safe; when it is not, the reference implementation
(``rfc8785``) writes it. A property test keeps the two byte-identical.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import rfc8785

from auditmw._errors import ValidationError
from auditmw._text import is_unicode

MAX_SAFE_INTEGER = 2**53 - 1


def check_json(value: Any, path: str, max_depth: int) -> bool:
    """Raise ``ValidationError`` unless ``value`` is exactly representable in JCS.

    Returns True when the orjson fast path is byte-identical to JCS for ``value``.
    """
    return _check(value, path, max_depth, 0, _NO_KEYS, [])


def check_details(value: Any, path: str, max_depth: int, keys: frozenset[str]) -> tuple[bool, bool]:
    """``check_json``, and whether an object member at any depth has one of ``keys``
    (lowercased) and a value that is not null: the personal data of format 2, found in
    the same walk."""
    found: list[str] = []
    fast = _check(value, path, max_depth, 0, keys, found)
    return fast, bool(found)


_NO_KEYS: frozenset[str] = frozenset()


def _check(
    value: Any, path: str, max_depth: int, depth: int, keys: frozenset[str], found: list[str]
) -> bool:
    if depth > max_depth:
        raise ValidationError(path, f"nested deeper than {max_depth} levels")
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        check_text(value, path)
        return True
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ValidationError(
                path, f"integer {value} is outside ±(2**53-1); store it as a string"
            )
        return True
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(path, f"{value!r} is not a JSON number")
        return False  # JCS writes floats in ECMAScript form; orjson does not.
    if isinstance(value, dict):
        fast = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(path, f"key {key!r} is not a string")
            check_text(key, f"{path} key {key[:40]!r}")
            if type(key) is not str:
                fast = False  # orjson rejects str subclasses (StrEnum...) as keys.
            elif not key.isascii() and any(ord(ch) > 0xFFFF for ch in key):
                fast = False  # UTF-16 and code-point key order can differ.
            if keys and item is not None and key.lower() in keys:
                found.append(key)
            fast = _check(item, f"{path}.{key}", max_depth, depth + 1, keys, found) and fast
        return fast
    if isinstance(value, list | tuple):
        # orjson writes lists (and their subclasses) and plain tuples, not namedtuples.
        fast = isinstance(value, list) or type(value) is tuple
        for index, item in enumerate(value):
            fast = _check(item, f"{path}[{index}]", max_depth, depth + 1, keys, found) and fast
        return fast
    raise ValidationError(
        path, f"{type(value).__name__} is not JSON; convert it to a string, number or object"
    )


def check_text(text: str, path: str) -> None:
    if not is_unicode(text):
        raise ValidationError(path, "contains a lone surrogate (not valid Unicode)")


def canonical_json(value: Any, *, fast: bool) -> bytes:
    """JCS bytes of a value already accepted by ``check_json``."""
    if fast:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return rfc8785.dumps(value)


def canonical_string(text: str) -> bytes:
    """JCS bytes of a string already accepted by ``check_json`` (orjson escapes like JCS)."""
    return orjson.dumps(text)
