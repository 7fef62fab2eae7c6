"""What changed between two versions of a record: ``diff(before, after)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any


def fields_of(obj: object) -> dict[str, Any]:
    """The fields of a record as a dict: a mapping, a dataclass instance, a pydantic model
    (anything with ``model_dump()``) or a plain object (its public attributes). None is {}."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {field.name: getattr(obj, field.name) for field in dataclasses.fields(obj)}
    model_dump = getattr(obj, "model_dump", None)
    if callable(model_dump):
        dumped = model_dump()
        if isinstance(dumped, Mapping):
            return dict(dumped)
    if hasattr(obj, "__dict__"):
        return {name: value for name, value in vars(obj).items() if not name.startswith("_")}
    slots = [name for cls in type(obj).__mro__ for name in getattr(cls, "__slots__", ())]
    if slots:
        return {
            name: getattr(obj, name)
            for name in slots
            if not name.startswith("_") and hasattr(obj, name)
        }
    raise TypeError(
        f"cannot diff a {type(obj).__name__}: pass mappings, dataclasses, pydantic models "
        "or objects with attributes"
    )


def diff(
    before: object, after: object, *, fields: Iterable[str] | None = None
) -> dict[str, dict[str, Any]]:
    """``{field: {"from": old, "to": new}}`` for the fields that changed, in field order.

    ``before`` and ``after`` are mappings, dataclasses, pydantic models or plain objects;
    None stands for "no record" (creation or deletion), so every field shows as changed.
    A field missing on one side counts as None. ``fields`` limits the comparison to
    those names. Nothing changed gives ``{}``: pass it to ``audit(changes=...,
    skip_if_unchanged=True)`` to record nothing then.

    The comparison is shallow: a nested value that changed is reported whole. Values
    that differ only in type (``1`` and ``True``, ``1`` and ``1.0``) count as changed.
    """
    old, new = fields_of(before), fields_of(after)
    names = list(fields) if fields is not None else list(dict.fromkeys([*old, *new]))
    changes: dict[str, dict[str, Any]] = {}
    for name in names:
        was, now = old.get(name), new.get(name)
        if type(was) is not type(now) or was != now:
            changes[name] = {"from": was, "to": now}
    return changes
