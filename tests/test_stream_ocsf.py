"""``--format ocsf``: every record validates against the published OCSF 1.3.0 schema (the
JSON Schema that ocsf-json-schema generates from the schema export it ships, checked
with jsonschema), carries its class's required attributes, is classed by its action as
docs/streams.md's table says, and keeps the native record (so the chain still verifies)."""

from __future__ import annotations

import asyncio
import gzip
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

from auditmw import NewEvent
from auditmw._cli import ExitCode
from auditmw._stores.jsonl import verify_jsonl
from auditmw._stores.open import open_store
from auditmw._streams.ocsf import OCSF_VERSION, classify

from ._command import cli
from ._paths import DOCS

# action, resource -> class_uid, activity_id (as in docs/streams.md's table)
EXPECTED = [
    ("user.sign_in", "session", 3002, 1),
    ("user.sign_in_failed", "session", 3002, 1),
    ("auth.login", "session", 3002, 1),
    ("user.sign_out", "session", 3002, 2),
    ("user.logout", "session", 3002, 2),
    ("user.password_changed", "user", 3001, 3),
    ("user.password_reset", "user", 3001, 4),
    ("user.created", "user", 3001, 1),
    ("user.deleted", "user", 3001, 6),
    ("user.locked", "user", 3001, 9),
    ("user.enabled", "user", 3001, 2),
    ("user.disabled", "user", 3001, 5),
    ("user.role_granted", "user", 3001, 7),
    ("permission.revoked", "project", 3001, 8),
    ("user.mfa_enabled", "user", 3001, 10),
    ("user.mfa_disabled", "user", 3001, 11),
    ("api_key.created", "api_key", 3001, 99),
    ("api-key.revoked", "api_key", 3001, 99),
    ("invoice.created", "invoice", 6003, 1),
    ("report.exported", "report", 6003, 2),
    ("invoice.updated", "invoice", 6003, 3),
    ("invoice.deleted", "invoice", 6003, 4),
    ("audit.stream_reset", "stream", 6003, 99),
]
CLASS_NAMES = {3001: "account_change", 3002: "authentication", 6003: "api_activity"}


@cache
def published() -> OcsfJsonSchemaEmbedded:
    return OcsfJsonSchemaEmbedded(get_ocsf_schema(version=OCSF_VERSION))


@cache
def validator(class_uid: int) -> Draft202012Validator:
    schema = published().get_class_schema(class_name=CLASS_NAMES[class_uid], profiles=[])
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def required(class_uid: int) -> set[str]:
    """The class's required attributes in the published schema (profiles aside)."""
    attributes = get_ocsf_schema(version=OCSF_VERSION)["classes"][CLASS_NAMES[class_uid]]
    profile_only = {"cloud", "osint"}  # required by the cloud and OSINT profiles, not used
    return {
        name
        for name, attribute in attributes["attributes"].items()
        if attribute.get("requirement") == "required"
    } - profile_only


def events() -> list[NewEvent]:
    made = []
    for n, (action, resource, _, _) in enumerate(EXPECTED):
        known = n % 3 != 2  # every third one anonymous, without a request: the defaults
        made.append(
            NewEvent(
                action=action,
                resource=resource,
                resource_id=str(n) if n % 4 else None,
                outcome=("success", "failure", "denied")[n % 3],
                user_id=f"u{n}" if known and n % 2 else None,
                user_email=f"user{n}@example.com" if known else None,
                ip_address="203.0.113.7" if known else None,
                user_agent="Mozilla/5.0 (test)" if known else None,
                request_id=f"req-{n}" if known else None,
                details={"n": n, "nested": {"list": [1, "two"]}},
            )
        )
    return made


def stream_ocsf(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, list[Any]]:
    url = str(tmp_path / "audit.db")

    async def append() -> None:
        async with open_store(url) as store:
            for event in events():
                await store.append(event)

    asyncio.run(append())
    out = tmp_path / "out"
    code, _, err = cli(capsys, "stream", url, "--to", f"file://{out}", "--format", "ocsf", "--once")
    assert code == ExitCode.OK, err
    lines = b"".join(gzip.decompress(p.read_bytes()) for p in sorted(out.glob("*.gz")))
    return Path(url), [orjson.loads(line) for line in lines.splitlines()]


def test_every_record_validates_against_the_published_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, records = stream_ocsf(tmp_path, capsys)
    assert len(records) == len(EXPECTED)
    for record, (action, _, class_uid, activity_id) in zip(records, EXPECTED, strict=True):
        assert record["message"] == action
        assert (record["class_uid"], record["activity_id"]) == (class_uid, activity_id)
        assert record["type_uid"] == class_uid * 100 + activity_id
        assert record["category_uid"] == class_uid // 1000
        errors = [e.message for e in validator(class_uid).iter_errors(record)]
        assert errors == [], (action, errors)
        assert required(class_uid) <= record.keys(), action
        assert record["metadata"]["version"] == OCSF_VERSION


def test_the_schema_check_is_not_vacuous(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, records = stream_ocsf(tmp_path, capsys)
    record = records[0]
    check = validator(record["class_uid"])
    for broken in (
        {k: v for k, v in record.items() if k != "user"},  # required by Authentication
        {**record, "time": "yesterday"},
        {**record, "severity": 7},  # a string in OCSF
        {**record, "shoe_size": 42},  # not an attribute of the class
        {**record, "metadata": {**record["metadata"], "product": {}}},  # needs vendor_name
    ):
        assert list(check.iter_errors(broken)), broken


def test_records_carry_the_event_and_its_verifiable_native_form(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, records = stream_ocsf(tmp_path, capsys)
    native = [orjson.dumps(r["unmapped"]["auditmw"]) + b"\n" for r in records]
    assert verify_jsonl(native, reserialized=True).ok
    native[3] = native[3].replace(b'"outcome":"success"', b'"outcome":"denied"')
    assert not verify_jsonl(native, reserialized=True).ok
    with_ip = 0
    for n, record in enumerate(records):
        event = record["unmapped"]["auditmw"]
        assert record["metadata"]["uid"] == event["id"]
        assert record["metadata"]["sequence"] == event["seq"] == n + 1
        assert record["metadata"]["log_name"] == "default"
        moment = datetime.fromisoformat(event["timestamp"])
        assert record["time"] == int(moment.timestamp() * 1000)
        status = {"success": (1, 1), "failure": (2, 2), "denied": (2, 3)}[event["outcome"]]
        assert (record["status_id"], record["severity_id"]) == status
        if opened(event, "ip_address"):
            with_ip += 1
            assert record["src_endpoint"] == {"ip": opened(event, "ip_address")}
            assert record["http_request"] == {"user_agent": opened(event, "user_agent")}
            assert record["metadata"]["correlation_uid"] == event["request_id"]
        actor = record["actor"]["user"]
        assert actor.get("uid") == event["user_id"] or event["user_id"] is None
        assert actor.get("email_addr") == opened(event, "user_email")
    assert with_ip > 0


def opened(event: dict[str, Any], name: str) -> Any:
    """The value of ``name`` in a native record: its opening (entry format 2, which holds
    null where it commits to a personal value), or the entry's own member."""
    opening = (event.get("openings") or {}).get(f"/{name}")
    return event[name] if opening is None else orjson.loads(opening[1])


@pytest.mark.parametrize(("action", "resource", "class_uid", "activity_id"), EXPECTED)
def test_classes_by_action(action: str, resource: str, class_uid: int, activity_id: int) -> None:
    assert classify(action, resource) == (class_uid, activity_id)


def test_the_documented_table_is_the_mapping() -> None:
    text = (DOCS / "streams.md").read_text()
    for action, resource, class_uid, activity_id in EXPECTED:
        assert f"| `{action}` | `{resource}` | {class_uid} | {activity_id} |" in text, action
