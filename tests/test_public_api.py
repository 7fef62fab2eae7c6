"""The public API is exactly what ``auditmw.__all__`` lists, sorted and importable."""

from __future__ import annotations

import types

import auditmw


def test_all_is_sorted_and_unique() -> None:
    assert list(auditmw.__all__) == sorted(set(auditmw.__all__))


def test_every_listed_name_exists() -> None:
    missing = [name for name in auditmw.__all__ if not hasattr(auditmw, name)]
    assert missing == []


def test_every_public_name_is_listed() -> None:
    public = {
        name
        for name, value in vars(auditmw).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations"}
    }
    assert public - set(auditmw.__all__) == set()


def test_public_objects_come_from_private_modules() -> None:
    """Internals live in private modules; users import only from ``auditmw``."""
    for name in auditmw.__all__:
        module = getattr(getattr(auditmw, name), "__module__", "auditmw._")
        if module.startswith("auditmw"):
            assert module.split(".")[1].startswith("_"), (name, module)
