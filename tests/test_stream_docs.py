"""docs/streams.md's samples run: the receiver's check accepts what a stream delivers and
catches a changed or missing event; the lifespan example streams from inside an app."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditmw import NewEvent, entry_hash

from ._command import cli
from ._paths import DOCS
from ._streams import append_events, segment_lines
from ._waiting import until

SAMPLES = re.findall(r"```python\n(.*?)```", (DOCS / "streams.md").read_text(), re.S)
RECEIVER, LIFESPAN, *_ = SAMPLES  # then the webhook receiver (test_stream_webhook.py)


def test_the_receiver_check_accepts_a_stream_and_catches_tampering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "audit.db")
    append_events(url, 5)
    append_events(url, 3, log="other")
    out = tmp_path / "out"
    assert (
        cli(capsys, "stream", url, "--to", f"file://{out}", "--once", "--batch-size", "2")[0] == 0
    )
    records = [line.rstrip(b"\n") for line in segment_lines(out)]
    namespace: dict[str, Any] = {}
    exec(RECEIVER, namespace)
    check = namespace["check"]
    last: dict[str, tuple[int, str]] = {}
    for record in records:
        check(record, last)
    assert last.keys() == {"default", "other"}

    changed = records[1].replace(b'"resource_id":"1"', b'"resource_id":"9"')
    with pytest.raises(ValueError, match="hash mismatch"):
        check(changed, {})
    # An event forged with a correct hash of its own does not link to the one before.
    forged = orjson.loads(records[1])
    forged["prev_hash"] = "1" * 64
    trusted: dict[str, tuple[int, str]] = {}
    check(records[0], trusted)
    with pytest.raises(ValueError, match="broken link"):
        check(_rehashed(forged), trusted)


def _rehashed(event: dict[str, Any]) -> bytes:
    """``event`` as a native record with a correct hash of its (changed) content."""
    event.pop("hash")
    entry = orjson.dumps(event, option=orjson.OPT_SORT_KEYS)  # canonical for this content
    return entry[:-1] + b',"hash":"%s"}' % entry_hash(entry).encode()


async def test_the_lifespan_example_streams_from_inside_the_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "segments"
    source = LIFESPAN.replace("file:///var/lib/audit-segments", f"file://{out}")
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    store = namespace["store"]
    async with namespace["lifespan"](namespace["app"]):
        await store.append(NewEvent(action="invoice.paid", resource="invoice"))
        await until(lambda: len(list(out.glob("*.jsonl.gz"))) == 1, hang_guard=30)
        [state] = await store.backend.stream_states("default")
        assert state.lease_owner is not None
    assert [orjson.loads(line)["action"] for line in segment_lines(out)] == ["invoice.paid"]
