"""The one shape of a verification report, whatever was verified.

A store's chain (``VerifyReport``), a JSON Lines export (``JsonlReport``) and a store
checked against signed checkpoints (``CheckpointReport``) all report the same way:

- ``ok``: no damage was found;
- ``findings``: the damage found, the first ones (each with ``line()`` and ``to_dict()``);
- ``logs``: what was proven of each log;
- ``warnings``: what is not damage but worth a look;
- ``summary()``: one line for people, ``details()``: the lines under it;
- ``to_json()``: the document ``auditmw verify --json`` prints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class ReportedFinding(Protocol):
    """One piece of damage, as a report lists it."""

    def line(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class Report(ABC):
    """What every verification report has (see the module docstring)."""

    __slots__ = ()

    findings: Sequence[ReportedFinding]
    logs: Mapping[str, Any]
    warnings: Sequence[str]

    @property
    @abstractmethod
    def ok(self) -> bool:
        """No damage was found."""

    @abstractmethod
    def summary(self) -> str:
        """One line for people: what was proven, or the first damage found."""

    @abstractmethod
    def details(self) -> list[str]:
        """The lines for people under the summary: the findings, then what else was
        checked."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The whole report as JSON-ready data."""


def printable(text: str) -> str:
    """Text that encodes as UTF-8: undecodable bytes (kept as surrogates) become \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that does not stand for a byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def finding_lines(findings: Sequence[ReportedFinding], total: int, what: str) -> list[str]:
    """The listed findings, indented, and how many more were counted but not listed."""
    lines = [f"  {finding.line()}" for finding in findings]
    if total > len(findings):
        lines.append(f"  ... and {total - len(findings)} more{what}")
    return lines
