"""Details as they enter an event: JSON-ready, with sensitive values masked.

Masking happens before the event is hashed, so a secret never reaches the log, its
hash chain or its exports. A key is sensitive when, lowercased and stripped of
everything but letters and digits, it contains a sensitive word: with the default
words ``new_password``, ``X-Api-Key`` and ``refresh_token`` are all masked. This
over-masks (``token_count`` too) rather than leak. Every value under a sensitive key
is replaced by ``"[MASKED]"``, at any depth, except None, which shows that there was
no value; structure is kept, so a diff still shows *that* a password changed.

The same walk turns common Python values into JSON: datetimes, dates and times to ISO
8601, UUIDs, Decimals and paths to strings, enums to their value, tuples and sets to
lists, dataclasses and pydantic models to objects. Anything else is left for the event
validation to reject with a clear message.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import re
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Address
from pathlib import PurePath
from typing import Any

from auditmw._diff import fields_of
from auditmw._errors import ValidationError

DEFAULT_SENSITIVE_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "token",
    "secret",
    "api_key",
    "authorization",
    "cookie",
    "private_key",
    "credential",
)
MASKED = "[MASKED]"
# A guard against cycles and runaway nesting; the store's own limit (32) is lower.
MAX_DEPTH = 64

MAX_KNOWN_KEYS = 10_000  # bounds the memory of keys seen (callers may use data as keys)
_PLAIN = frozenset({str, int, float, bool})
_NOT_ALPHANUMERIC = re.compile(r"[\W_]+")
_STRINGIFIED = (uuid.UUID, Decimal, PurePath, IPv4Address, IPv6Address)


def _normalize(key: str) -> str:
    return _NOT_ALPHANUMERIC.sub("", key.lower())


class Masker:
    """Makes details JSON-ready and masks the values of sensitive keys (see module doc)."""

    def __init__(self, sensitive_keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS) -> None:
        if isinstance(sensitive_keys, str):
            raise TypeError("sensitive_keys must be a collection of strings, not one string")
        words = sorted({word for key in sensitive_keys if (word := _normalize(key))})
        self.sensitive_keys = tuple(words)
        self._pattern = re.compile("|".join(map(re.escape, words))) if words else None
        # Detail keys are few and repeat on every event: remember each key's answer.
        self._known: dict[str, bool] = {}

    def is_sensitive(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        known = self._known.get(key)
        if known is None:
            known = self._pattern is not None and self._pattern.search(_normalize(key)) is not None
            if len(self._known) < MAX_KNOWN_KEYS:
                self._known[key] = known
        return known

    def __call__(self, details: Mapping[str, Any]) -> dict[str, Any]:
        """A masked, JSON-ready copy of ``details``; the original is left untouched."""
        return self._mapping(details, 0, masked=False)

    def _mapping(self, value: Mapping[Any, Any], depth: int, masked: bool) -> dict[Any, Any]:
        return {
            key: self._value(item, depth + 1, masked or self.is_sensitive(key))
            for key, item in value.items()
        }

    def _value(self, value: Any, depth: int, masked: bool) -> Any:
        if depth > MAX_DEPTH:
            raise ValidationError("details", f"nested deeper than {MAX_DEPTH} levels")
        if type(value) in _PLAIN:  # the common case first (subclasses, e.g. enums, below)
            return MASKED if masked else value
        if value is None:
            return None
        if isinstance(value, enum.Enum):  # before str and int: StrEnum and IntEnum are both
            return self._value(value.value, depth + 1, masked)
        if isinstance(value, str | bool | int | float):
            return MASKED if masked else value
        if isinstance(value, Mapping):
            return self._mapping(value, depth, masked)
        if isinstance(value, list | tuple | set | frozenset):
            return [self._value(item, depth + 1, masked) for item in value]
        if (dataclasses.is_dataclass(value) and not isinstance(value, type)) or callable(
            getattr(value, "model_dump", None)
        ):
            return self._mapping(fields_of(value), depth, masked)
        if isinstance(value, datetime.date | datetime.time):  # datetime is a date
            return MASKED if masked else value.isoformat()
        if isinstance(value, _STRINGIFIED):
            return MASKED if masked else str(value)
        return MASKED if masked else value
