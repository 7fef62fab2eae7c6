"""Merkle inclusion proofs of stored events: store, admin route and CLI, on every store."""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from auditmw import AdminApp, NewEvent, open_store
from auditmw._cli import main
from auditmw._transparency.inputs import load_keys
from auditmw._transparency.merkle import root
from auditmw._transparency.notes import (
    Checkpoint,
    load_signing_key,
    open_checkpoint,
    sign_checkpoint,
)
from auditmw._transparency.proofs import prove_inclusion

from .test_admin import ADMIN, authorize


async def test_every_entry_has_a_proof_that_verifies(store_url_factory: Callable[[], str]) -> None:
    async with open_store(store_url_factory()) as store:
        events = [await store.append(NewEvent(action="a", resource="r")) for _ in range(13)]
        await store.append(NewEvent(action="a", resource="r", log="other"))  # another tree
        expected_root = root([bytes.fromhex(event.hash) for event in events]).hex()
        for event in events:
            proof = await prove_inclusion(store, "default", event.seq)
            assert proof is not None and proof.verify()
            assert proof.root == expected_root and proof.tree_size == 13
            assert proof.leaf_hash == event.hash
            assert len(proof.proof) <= math.ceil(math.log2(13))
        proof = await prove_inclusion(store, "default", 5)
        assert proof is not None
        assert not dataclasses.replace(proof, seq=6).verify()  # another position
        flipped = ("0" * 64, *proof.proof[1:])
        assert not dataclasses.replace(proof, proof=flipped).verify()
        assert not dataclasses.replace(proof, leaf_hash=events[5].hash).verify()
        assert await prove_inclusion(store, "default", 0) is None
        assert await prove_inclusion(store, "default", 14) is None
        assert await prove_inclusion(store, "nope", 1) is None

        await store.append(NewEvent(action="later", resource="r"))
        grown = await prove_inclusion(store, "default", 5)
        assert grown is not None and grown.verify() and grown.root != proof.root
        assert proof.verify()  # the old proof still holds for the old tree


async def test_admin_route_serves_proofs(store_url_factory: Callable[[], str]) -> None:
    async with open_store(store_url_factory()) as store:
        events = [await store.append(NewEvent(action="a", resource="r")) for _ in range(6)]
        transport = httpx.ASGITransport(AdminApp(store, authorize=authorize))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get(f"/events/{events[2].id}/proof", headers=ADMIN)
            assert response.status_code == 200
            body = response.json()
            assert body["seq"] == 3 and body["leaf_index"] == 2 and body["tree_size"] == 6
            assert body["leaf_hash"] == events[2].hash and body["anchored"] is False
            assert body["root"] == root([bytes.fromhex(e.hash) for e in events]).hex()
            missing = await client.get("/events/nope/proof", headers=ADMIN)
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
            anonymous = await client.get(f"/events/{events[2].id}/proof")
            assert anonymous.status_code == 401 and events[2].hash not in anonymous.text


def test_cli_prove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    path = tmp_path / "audit.db"

    async def fill() -> list[str]:
        async with open_store(path) as store:
            return [(await store.append(NewEvent(action="a", resource="r"))).hash for _ in range(9)]

    hashes = asyncio.run(fill())
    assert main(["prove", str(path), "--seq", "4"]) == 0
    body = orjson.loads(capsys.readouterr().out)
    assert body["leaf_hash"] == hashes[3] and body["tree_size"] == 9
    assert body["root"] == root([bytes.fromhex(h) for h in hashes]).hex()
    assert main(["prove", str(path), "--seq", "10"]) == 2
    assert "no entry with seq 10" in capsys.readouterr().err
    assert main(["prove", str(tmp_path / "missing.db"), "--seq", "1"]) == 2


def test_cli_keygen_writes_a_usable_key_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "audit"
    assert main(["keygen", "audit.example.com", "--out", str(prefix)]) == 0
    printed = capsys.readouterr().out.strip()
    key_file = Path(f"{prefix}.key")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    signing = load_signing_key(key_file)
    verifiers = load_keys([f"{prefix}.pub"])
    assert [v.encode() for v in verifiers] == [printed]
    note = sign_checkpoint(Checkpoint("audit.example.com/default", 3, b"\x01" * 32), signing)
    assert open_checkpoint(note, verifiers).checkpoint.size == 3
    assert main(["keygen", "audit.example.com", "--out", str(prefix)]) == 2  # never overwrites
    assert "refusing to overwrite" in capsys.readouterr().err


def test_cli_keygen_creates_the_keys_directory_for_its_owner_only(tmp_path: Path) -> None:
    prefix = tmp_path / "keys" / "audit"  # as the README's `--out keys/audit`
    assert main(["keygen", "audit.example.com", "--out", str(prefix)]) == 0
    assert stat.S_IMODE(os.stat(prefix.parent).st_mode) == 0o700
    assert load_signing_key(f"{prefix}.key").name == "audit.example.com"
