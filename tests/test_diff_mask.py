"""diff() and masking; and that a masked secret never reaches the stored bytes."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid
from decimal import Decimal
from typing import Any

import pydantic
import pytest

import auditmw
from auditmw import diff
from auditmw._mask import MASKED, Masker


@dataclasses.dataclass
class ProjectRow:
    name: str
    description: str
    owner_id: int


class ProjectModel(pydantic.BaseModel):
    name: str
    description: str
    owner_id: int


class ProjectObject:
    def __init__(self, name: str, description: str, owner_id: int) -> None:
        self.name = name
        self.description = description
        self.owner_id = owner_id
        self._cache = object()  # private: never compared


@pytest.mark.parametrize("kind", [dict, ProjectRow, ProjectModel, ProjectObject])
def test_diff_reports_changed_fields_only(kind: Any) -> None:
    def make(name: str, description: str) -> Any:
        values = {"name": name, "description": description, "owner_id": 1}
        return values if kind is dict else kind(**values)

    before, after = make("Apollo", "moon"), make("Apollo", "the moon")
    assert diff(before, after) == {"description": {"from": "moon", "to": "the moon"}}
    assert diff(before, make("Apollo", "moon")) == {}


def test_diff_with_none_is_creation_or_deletion() -> None:
    assert diff(None, {"a": 1}) == {"a": {"from": None, "to": 1}}
    assert diff({"a": 1}, None) == {"a": {"from": 1, "to": None}}


def test_diff_keeps_field_order_and_counts_missing_as_none() -> None:
    changes = diff({"b": 1, "a": 1}, {"a": 2, "c": 3, "b": 1})
    assert list(changes) == ["a", "c"]
    assert changes["c"] == {"from": None, "to": 3}


def test_diff_fields_limits_the_comparison() -> None:
    before, after = {"a": 1, "b": 1}, {"a": 2, "b": 2}
    assert diff(before, after, fields=["b"]) == {"b": {"from": 1, "to": 2}}


def test_a_change_of_type_is_a_change() -> None:
    assert diff({"a": 1}, {"a": True}) == {"a": {"from": 1, "to": True}}
    assert diff({"a": 1}, {"a": 1.0}) == {"a": {"from": 1, "to": 1.0}}


def test_diff_of_unsupported_values_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        diff(42, 43)


# --- masking ------------------------------------------------------------------------


def test_default_sensitive_keys_at_any_depth_and_any_spelling() -> None:
    details = {
        "username": "ada",
        "password": "hunter2",
        "new_password": "hunter3",
        "headers": {"X-Api-Key": "k", "Authorization": "Bearer t", "Cookie": "s=1", "accept": "*"},
        "items": [{"refresh_token": "r", "id": 1}],
        "APISECRET": "s",
        "client_secret": None,  # None stays: it shows there was no value
    }
    masked = Masker()(details)
    assert masked == {
        "username": "ada",
        "password": MASKED,
        "new_password": MASKED,
        "headers": {"X-Api-Key": MASKED, "Authorization": MASKED, "Cookie": MASKED, "accept": "*"},
        "items": [{"refresh_token": MASKED, "id": 1}],
        "APISECRET": MASKED,
        "client_secret": None,
    }
    assert details["password"] == "hunter2"  # the caller's dict is untouched


def test_everything_under_a_sensitive_key_is_masked_structure_kept() -> None:
    masked = Masker()({"tokens": {"github": "g", "list": ["a", 1, None], "n": 2.5}})
    assert masked == {"tokens": {"github": MASKED, "list": [MASKED, MASKED, None], "n": MASKED}}


def test_masking_a_diff_shows_that_a_secret_changed_not_its_value() -> None:
    changes = diff({"password": "old", "name": "a"}, {"password": "new", "name": "b"})
    assert Masker()({"changes": changes}) == {
        "changes": {
            "password": {"from": MASKED, "to": MASKED},
            "name": {"from": "a", "to": "b"},
        }
    }


def test_custom_sensitive_keys_replace_the_defaults() -> None:
    masker = Masker([*auditmw.DEFAULT_SENSITIVE_KEYS, "ssn"])
    assert masker({"SSN": "123", "password": "p"}) == {"SSN": MASKED, "password": MASKED}
    only_ssn = Masker(["ssn"])
    assert only_ssn({"password": "p"}) == {"password": "p"}
    assert Masker([])({"password": "p"}) == {"password": "p"}
    with pytest.raises(TypeError):
        Masker("password")  # one string is a classic mistake: not a list of words


class Color(enum.Enum):
    RED = "red"


def test_common_python_values_become_json() -> None:
    moment = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    out = Masker()(
        {
            "at": moment,
            "day": moment.date(),
            "id": ident,
            "price": Decimal("9.99"),
            "color": Color.RED,
            "tags": ("a", "b"),
            "row": ProjectRow("n", "d", 1),
            "model": ProjectModel(name="n", description="d", owner_id=1),
            "secret_at": moment,
        }
    )
    assert out == {
        "at": "2024-05-01T12:30:00+00:00",
        "day": "2024-05-01",
        "id": "12345678-1234-5678-1234-567812345678",
        "price": "9.99",
        "color": "red",
        "tags": ["a", "b"],
        "row": {"name": "n", "description": "d", "owner_id": 1},
        "model": {"name": "n", "description": "d", "owner_id": 1},
        "secret_at": MASKED,
    }


def test_cyclic_details_are_rejected_not_a_recursion_error() -> None:
    details: dict[str, Any] = {}
    details["self"] = details
    with pytest.raises(auditmw.ValidationError):
        Masker()(details)


async def test_a_secret_never_reaches_the_stored_bytes(store: auditmw.SQLiteStore) -> None:
    with auditmw.acting_as(user_id="u1", store=store):
        event = await auditmw.audit(
            "user.updated",
            "user",
            "u1",
            {"Authorization": "Bearer sk-live-123"},
            changes=diff({"password": "hunter2"}, {"password": "correct horse"}),
        )
    assert event is not None
    assert event.details == {
        "Authorization": MASKED,
        "changes": {"password": {"from": MASKED, "to": MASKED}},
    }
    rows = [row async for row in store.iter_chain_rows()]
    assert len(rows) == 1
    for secret in (b"sk-live-123", b"hunter2", b"correct horse"):
        assert secret not in rows[0].entry
    report = await store.verify()
    assert report.ok
