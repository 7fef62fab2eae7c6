"""What a stream sends for each event: a ``Format`` turns a stored ``Event`` into a record,
a JSON document carrying at least its id, log, seq, hash and prev_hash, so a receiver can
de-duplicate (by id, or log and seq) and check the chain (docs/streams.md).

``native`` is the JSON Lines export's event form, written by the export's own function:
the canonical entry exactly as hashed, with ``hash`` added. A receiver verifies each
record as ``auditmw verify --jsonl`` does (docs/format.md). A new format subclasses
``Format`` and joins ``FORMATS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import orjson

from auditmw._event import Event
from auditmw._stores.jsonl import jsonl_line
from auditmw._streams.ocsf import ocsf_record


class Format(ABC):
    """How events become records."""

    name: ClassVar[str]
    media_type: ClassVar[str] = "application/json"

    @abstractmethod
    def record(self, event: Event) -> dict[str, Any]:
        """``event`` as a JSON-able record."""

    def encode(self, event: Event) -> bytes:
        """``event``'s record as JSON bytes, no line end (by default ``record``'s, as
        orjson writes it)."""
        return orjson.dumps(self.record(event))


class NativeFormat(Format):
    """The JSON Lines export's line of each event (``auditmw._stores.jsonl.jsonl_line``)."""

    name = "native"

    def record(self, event: Event) -> dict[str, Any]:
        document: dict[str, Any] = orjson.loads(jsonl_line(event))
        return document

    def encode(self, event: Event) -> bytes:
        return jsonl_line(event)[:-1]  # the exact bytes the export writes, without "\n"


FORMATS: dict[str, type[Format]] = {NativeFormat.name: NativeFormat}


def format_named(name: str) -> Format:
    """The format called ``name``; ``ValueError`` when there is none."""
    format_class = FORMATS.get(name)
    if format_class is None:
        raise ValueError(f"unknown stream format {name!r}: use one of {', '.join(FORMATS)}")
    return format_class()


class OcsfFormat(Format):
    """Events as OCSF 1.3.0 events (``auditmw._streams.ocsf``; docs/streams.md)."""

    name = "ocsf"

    def record(self, event: Event) -> dict[str, Any]:
        return ocsf_record(event)


FORMATS[OcsfFormat.name] = OcsfFormat
