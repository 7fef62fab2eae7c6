"""``auditmw verify --public-key``: the log checked against signed checkpoints.

The hash chain cannot see a log rewritten consistently, or its tail cut off; checkpoints
kept outside the database can. Each test writes a real store through the API (both
backends), signs checkpoints of it (here, with ``sign_checkpoint`` over the roots of the
events' hashes, as an auditor or the issuer would), tampers with the database as someone
with write access would (``tests/_attacker.py``) and runs ``auditmw verify`` in-process.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import rfc8785

from auditmw import Checkpointing, DirectorySink, NewEvent, VerifyReport, open_store
from auditmw._cli import main
from auditmw._stores.verify import CHECKPOINTS_REMOVED
from auditmw._transparency.checkpoint_report import CheckpointReport
from auditmw._transparency.external import (
    BAD_SIGNATURE,
    COLUMN_MISMATCH,
    FORK,
    MALFORMED,
    TRUNCATED,
    UNKNOWN_KEY,
    WRONG_ORIGIN,
    _LogTree,
    _Signed,
    check_checkpoints,
    log_of_origin,
)
from auditmw._transparency.inputs import CheckpointInput
from auditmw._transparency.merkle import (
    consistency_proof,
    leaf_hash,
    root,
    verify_consistency,
)
from auditmw._transparency.notes import Checkpoint, SigningKey, log_origin, sign_checkpoint

from ._attacker import PostgresTarget, SQLiteTarget, Target
from ._attacker import leaf_hash as entry_hash
from ._postgres import drop_schema, new_schema_name

KEY_NAME = "audit.example.com/app"
N = 20


# --- building stores, keys and checkpoints ----------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_target(backend: str, path: Path, request: pytest.FixtureRequest) -> Target:
    if backend == "sqlite":
        return SQLiteTarget(path)
    return PostgresTarget(request.getfixturevalue("pg_schema"))


@pytest.fixture
def target(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Target:
    """Where the store under test goes (nothing created yet)."""
    return make_target(backend, tmp_path / "audit.db", request)


@pytest.fixture
def forged(backend: str, tmp_path: Path) -> Iterator[Target]:
    """A second, empty store of the same backend: where an attacker builds a new log."""
    if backend == "sqlite":
        yield SQLiteTarget(tmp_path / "forged.db")
        return
    schema = new_schema_name()
    yield PostgresTarget(schema)
    asyncio.run(drop_schema(schema))


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate(KEY_NAME)


@pytest.fixture
def pub(tmp_path: Path, key: SigningKey) -> str:
    """The verifier key file of ``key``."""
    path = tmp_path / "audit.pub"
    path.write_text(key.verifier.encode() + "\n", encoding="utf-8")
    return str(path)


def fill(url: str, n: int, log: str = "default", tag: str = "honest") -> list[bytes]:
    """Append ``n`` events to ``log``; their hashes (the log's Merkle leaves)."""

    async def run() -> list[bytes]:
        async with open_store(url) as store:
            hashes = []
            for i in range(n):
                event = await store.append(
                    NewEvent(
                        action="document.updated",
                        resource="document",
                        resource_id=f"{tag}-{i}",
                        log=log,
                    )
                )
                hashes.append(bytes.fromhex(event.hash))
            return hashes

    return asyncio.run(run())


def signed(
    key: SigningKey,
    leaves: list[bytes],
    size: int,
    log: str = "default",
    *,
    prefix: str | None = None,
    tree_root: bytes | None = None,
) -> bytes:
    """The signed checkpoint of the first ``size`` leaves of ``log``."""
    origin = log_origin(key.name if prefix is None else prefix, log)
    head = root(leaves[:size]) if tree_root is None else tree_root
    return sign_checkpoint(Checkpoint(origin, size, head), key)


def save(path: Path, note: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(note)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``auditmw *argv``, run in this process."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def report_of(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out, err = run(capsys, *argv, "--json")
    assert "Traceback" not in err
    return code, orjson.loads(out)


def kinds(report: dict[str, Any]) -> list[tuple[str, str | None, int | None]]:
    return [(f["kind"], f["log"], f["size"]) for f in report["checkpoints"]["findings"]]


def assert_usage_error(code: int, out: str, err: str, *words: str) -> None:
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("auditmw verify: ")
    assert "Traceback" not in err
    for word in words:
        assert word in err


def delete_tail(target: Target, first_seq: int, log: str = "default") -> None:
    """What someone with write access does to hide the newest events."""
    with target.attacker() as attacker:
        attacker.execute("DELETE FROM auditmw_events WHERE log = ? AND seq >= ?", (log, first_seq))


def replace_all_rows(target: Target, source: Target) -> None:
    """Swap the whole log for another, self-consistent one (a full rewrite)."""
    with target.attacker() as attacker:
        attacker.execute("DELETE FROM auditmw_events")
        if isinstance(source, SQLiteTarget):
            attacker.execute("ATTACH DATABASE ? AS forged", (str(source.path),))
            attacker.execute("INSERT INTO auditmw_events SELECT * FROM forged.auditmw_events")
        else:
            assert isinstance(source, PostgresTarget)
            attacker.execute(
                f'INSERT INTO auditmw_events SELECT * FROM "{source.schema}".auditmw_events'
            )


# --- an intact log --------------------------------------------------------------------------


def test_a_log_that_extends_the_auditors_checkpoints_verifies(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaves = fill(target.url, N)
    other = fill(target.url, 3, log="billing/eu")  # a log name that needs percent-encoding
    old = save(tmp_path / "old.checkpoint", signed(key, leaves, 13))
    older = save(tmp_path / "eu.checkpoint", signed(key, other, 1, "billing/eu"))
    sink = tmp_path / "sink"
    DirectorySink(sink).write("default", N, signed(key, leaves, N))

    argv = ["verify", target.url, "--public-key", pub, "--checkpoint", old]
    argv += ["--checkpoint", older, "--sink", str(sink)]
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"OK: {N + 3} entries intact")
    assert "checkpoints: 3 checked with 1 key(s)" in lines
    assert "  log 'billing/eu': 3 entries, 1 anchored (by the checkpoint of size 1: " in out
    assert (
        f"  log 'default': {N} entries, {N} anchored (by the checkpoint of size {N}: "
        f"sink default/{N:020d}.checkpoint), 0 not yet anchored"
    ) in lines
    assert f"log 'default' extends file {old} (size 13): consistency proof to size {N}" in out

    code, report = report_of(capsys, *argv)
    assert code == 0 and report["ok"] is True and report["chain_ok"] is True
    anchors = report["checkpoints"]
    assert anchors["findings"] == []
    assert anchors["logs"]["default"]["root"] == root(leaves).hex()
    assert anchors["logs"]["billing/eu"]["not_yet_anchored"] == 2
    proofs = {proof["source"]: proof for proof in anchors["consistency_proofs"]}
    proof = proofs[f"file {old}"]
    assert (proof["old_size"], proof["new_size"], proof["verified"]) == (13, N, True)
    # The proof stands on its own: anyone holding the two roots can check it.
    nodes = [bytes.fromhex(node) for node in proof["proof"]]
    assert nodes == consistency_proof(leaves, 13, N)
    assert verify_consistency(13, N, root(leaves[:13]), root(leaves), nodes)
    assert len(nodes) <= math.ceil(math.log2(N)) + 1
    # ...and is bound to its sizes and roots: for anything else it fails.
    assert not verify_consistency(12, N, root(leaves[:12]), root(leaves), nodes)
    assert not verify_consistency(13, N - 1, root(leaves[:13]), root(leaves[: N - 1]), nodes)
    assert not verify_consistency(13, N, root(other), root(leaves), nodes)


def test_entries_after_the_newest_checkpoint_are_not_yet_anchored(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaves = fill(target.url, N)
    sink = tmp_path / "sink"
    for size in (5, 15):
        DirectorySink(sink).write("default", size, signed(key, leaves, size))
    code, out, _ = run(capsys, "verify", target.url, "--public-key", pub, "--sink", str(sink))
    assert code == 0  # information, not damage
    assert f"log 'default': {N} entries, 15 anchored" in out
    assert f"{N - 15} not yet anchored" in out

    # No checkpoint of a log at all: nothing of it is anchored, and that is no finding.
    fill(target.url, 2, log="audit-of-admins")
    code, report = report_of(capsys, "verify", target.url, "--public-key", pub)
    assert code == 0
    assert report["checkpoints"]["logs"]["audit-of-admins"]["not_yet_anchored"] == 2
    assert report["checkpoints"]["logs"]["default"]["anchored"] == 0  # the sink not given


async def test_python_api(any_store: Any, key: SigningKey) -> None:
    events = [await any_store.append(NewEvent(action="a", resource="r")) for _ in range(9)]
    leaves = [bytes.fromhex(event.hash) for event in events]
    notes = [
        CheckpointInput(signed(key, leaves, 4), "mine", prove=True),
        CheckpointInput(signed(key, leaves, 12), "from the future"),
    ]
    report = await check_checkpoints(any_store, [key.verifier], notes)
    assert not report.ok and report.chain.ok
    assert [(f.kind, f.log, f.size, f.source) for f in report.findings] == [
        (TRUNCATED, "default", 12, "from the future")
    ]
    assert "3 missing from the end" in report.findings[0].message
    assert report.logs["default"].anchored == 4
    assert report.logs["default"].not_yet_anchored == 5
    (proof,) = report.proofs
    assert proof.verified and (proof.old_size, proof.new_size) == (4, 9)
    with pytest.raises(ValueError, match="verifier key"):
        await check_checkpoints(any_store, [], notes)


# --- what the chain cannot see --------------------------------------------------------------


def test_a_truncated_tail_is_caught_by_a_checkpoint_file_and_by_the_sink(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaves = fill(target.url, N)
    mine = save(tmp_path / "mine.checkpoint", signed(key, leaves, 17))
    sink = tmp_path / "sink"
    DirectorySink(sink).write("default", N, signed(key, leaves, N))
    delete_tail(target, 16)  # seq 16..20 gone: a shorter, perfectly valid chain

    code, out, _ = run(capsys, "verify", target.url)
    assert code == 0 and out.startswith("OK: 15 entries intact")  # the chain cannot tell

    for given in (["--checkpoint", mine], ["--sink", str(sink)]):
        code, out, _ = run(capsys, "verify", target.url, "--public-key", pub, *given)
        assert code == 1
        assert out.startswith("DAMAGED: the chain is intact (15 entries) but 1 checkpoint")
        missing = 2 if given[0] == "--checkpoint" else 5
        assert f"{missing} missing from the end" in out
    code, report = report_of(
        capsys, "verify", target.url, "--public-key", pub, "--checkpoint", mine, "--sink", str(sink)
    )
    assert code == 1 and report["ok"] is False and report["chain_ok"] is True
    assert kinds(report) == [(TRUNCATED, "default", 17), (TRUNCATED, "default", N)]
    assert report["checkpoints"]["consistency_proofs"] == []  # nothing to prove it from


def test_a_full_rewrite_signed_with_another_key_is_caught(
    target: Target,
    forged: Target,
    key: SigningKey,
    pub: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    honest = fill(target.url, N)
    mine = save(tmp_path / "mine.checkpoint", signed(key, honest, 12))
    # The attacker builds a new, self-consistent log (one event changed: "rewritten"),
    # signs it with a key of their own, even of the same name, and swaps it in.
    mallory = SigningKey.generate(KEY_NAME)
    rewritten = fill(forged.url, N, tag="rewritten")
    sink = tmp_path / "sink"
    DirectorySink(sink).write("default", N, signed(mallory, rewritten, N))
    replace_all_rows(target, forged)

    code, out, _ = run(capsys, "verify", target.url)
    assert code == 0  # a consistent chain: only checkpoints can tell

    argv = ["verify", target.url, "--public-key", pub, "--checkpoint", mine, "--sink", str(sink)]
    code, out, _ = run(capsys, *argv)
    assert code == 1
    assert f"UNKNOWN_KEY: (sink default/{N:020d}.checkpoint): no signature by a known key" in out
    assert f"FORK: log 'default' size 12 (file {mine}): the log's first 12 entries" in out
    assert f"log 'default' does NOT extend file {mine} (size 12)" in out
    code, report = report_of(capsys, *argv)
    assert kinds(report) == [(UNKNOWN_KEY, None, None), (FORK, "default", 12)]
    assert report["checkpoints"]["logs"]["default"]["anchored"] == 0
    (proof,) = report["checkpoints"]["consistency_proofs"]
    assert proof["verified"] is False

    # With the attacker's key trusted instead, their checkpoint anchors their log; the
    # auditor's own checkpoint still shows the fork.
    evil = tmp_path / "mallory.pub"
    evil.write_text(mallory.verifier.encode(), encoding="utf-8")
    argv[3] = str(evil)
    code, report = report_of(capsys, *argv)
    assert code == 1
    assert kinds(report) == [(UNKNOWN_KEY, None, None)]  # mine, by a key not given
    assert report["checkpoints"]["logs"]["default"]["anchored"] == N


def test_a_modified_entry_forks_every_checkpoint_after_it(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The leaves are the hashes of the entries as stored, recomputed, not the hash column:
    an entry edited without its hash column forks the checkpoints that cover it, while a
    hash column edited alone (the entry is as signed) does not."""
    leaves = fill(target.url, N)
    sink = tmp_path / "sink"
    for size in (5, 10, N):
        DirectorySink(sink).write("default", size, signed(key, leaves, size))
    with target.attacker() as attacker:
        entry = attacker.read_entry(8)
        attacker.write_entry(8, entry.replace(b"honest-7", b"honest-X"), rehash=False)
        attacker.execute(
            "UPDATE auditmw_events SET hash = ? WHERE log = 'default' AND seq = 3", ("ab" * 32,)
        )
    code, report = report_of(capsys, "verify", target.url, "--public-key", pub, "--sink", str(sink))
    assert code == 1
    assert [(f["seq"], f["kind"]) for f in report["findings"]] == [
        (3, "column_mismatch"),
        (8, "modified"),
    ]
    assert kinds(report) == [(FORK, "default", 10), (FORK, "default", N)]
    assert report["checkpoints"]["logs"]["default"]["anchored"] == 5


# --- checkpoints that cannot be trusted -------------------------------------------------------


def edits(note: bytes) -> dict[str, bytes]:
    """The note with its size, root, origin or one signature character changed."""
    text, _, signature = note.partition(b"\n\n")
    origin, size, head = text.split(b"\n")
    flipped_root = head[:10] + (b"B" if head[10:11] != b"B" else b"C") + head[11:]
    position = len(signature) // 2  # inside the Ed25519 signature, past the key id
    flipped_sig = (
        signature[:position]
        + (b"A" if signature[position : position + 1] != b"A" else b"B")
        + signature[position + 1 :]
    )
    return {
        "size": b"\n".join([origin, str(int(size) - 1).encode(), head]) + b"\n\n" + signature,
        "root": b"\n".join([origin, size, flipped_root]) + b"\n\n" + signature,
        "origin": b"\n".join([origin + b"x", size, head]) + b"\n\n" + signature,
        "signature": text + b"\n\n" + flipped_sig,
    }


def test_an_edited_checkpoint_is_a_bad_signature(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaves = fill(target.url, 8)
    note = signed(key, leaves, 8)
    argv = ["verify", target.url, "--public-key", pub]
    for what, edited in edits(note).items():
        argv += ["--checkpoint", save(tmp_path / f"{what}.checkpoint", edited)]
    code, report = report_of(capsys, *argv)
    assert code == 1
    assert kinds(report) == [(BAD_SIGNATURE, None, None)] * 4
    assert report["checkpoints"]["logs"]["default"]["anchored"] == 0


def test_two_roots_for_one_size_are_a_fork(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaves = fill(target.url, N)
    true = save(tmp_path / "a.checkpoint", signed(key, leaves, 10))
    other = [*leaves[:9], leaf_hash(b"another history")]
    false = save(tmp_path / "b.checkpoint", signed(key, other, 10))
    argv = ["verify", target.url, "--public-key", pub, "--checkpoint", true, "--checkpoint", false]
    code, out, _ = run(capsys, *argv)
    assert code == 1
    assert "checkpoints disagree on the root at size 10" in out
    assert "the signer signed two histories" in out
    code, report = report_of(capsys, *argv)
    assert kinds(report) == [(FORK, "default", 10), (FORK, "default", 10)]
    first, second = report["checkpoints"]["findings"]
    assert true in first["source"] and false in first["source"]  # both named
    assert second["source"] == f"file {false}"  # and the one the log contradicts
    assert report["checkpoints"]["logs"]["default"]["anchored"] == 10  # the true one


def test_checkpoints_of_other_origins(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaves = fill(target.url, 6)
    other_prefix = save(tmp_path / "p.checkpoint", signed(key, leaves, 6, prefix="elsewhere.org"))
    base = ["verify", target.url, "--public-key", pub, "--checkpoint", other_prefix]
    code, report = report_of(capsys, *base)
    assert code == 0  # any prefix by default: the log is named after the last "/"
    code, report = report_of(capsys, *base, "--origin-prefix", KEY_NAME)
    assert code == 1 and kinds(report) == [(WRONG_ORIGIN, None, 6)]

    no_slash = sign_checkpoint(Checkpoint("default", 6, root(leaves)), key)
    encoded = sign_checkpoint(Checkpoint(f"{KEY_NAME}/%64efault", 6, root(leaves)), key)
    argv = ["verify", target.url, "--public-key", pub]
    for name, note in (("no-slash", no_slash), ("non-canonical", encoded)):
        argv += ["--checkpoint", save(tmp_path / name, note)]
    code, out, _ = run(capsys, *argv)
    assert code == 1
    assert sum(line.startswith("  WRONG_ORIGIN: ") for line in out.splitlines()) == 2
    assert "is not <prefix>/<log>" in out


@pytest.mark.parametrize(
    ("origin", "log"),
    [
        ("a.example/default", "default"),
        ("a.example/b/billing%2Feu", "billing/eu"),
        ("x/%C3%A9t%C3%A9", "été"),
        ("/default", "default"),
        ("default", None),
        ("a.example/", None),
        ("a.example/%64", None),  # must be written "d"
        ("a.example/%2f", None),  # lowercase hex is not canonical
        ("a.example/%FF", None),  # not UTF-8
        ("a.example/a b", None),
    ],
)
def test_log_of_origin(origin: str, log: str | None) -> None:
    assert log_of_origin(origin) == log
    if log is not None:
        assert log_of_origin(origin, prefix=origin.rpartition("/")[0]) == log
        assert log_of_origin(origin, prefix="other") is None


# --- hostile files ------------------------------------------------------------------------------


def test_hostile_checkpoint_files_are_findings(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaves = fill(target.url, 4)
    files = {
        "empty": b"",
        "garbage": bytes(range(256)) * 4,
        "huge": signed(key, leaves, 4) + b"x" * (2 << 20),
        "text": b"hello\n",
        "cut": signed(key, leaves, 4)[:-10],
    }
    argv = ["verify", target.url, "--public-key", pub]
    for name, data in files.items():
        argv += ["--checkpoint", save(tmp_path / name, data)]
    sink = tmp_path / "sink"
    save(sink / "default" / f"{4:020d}.checkpoint", b"\x00\xff garbage")
    code, out, err = run(capsys, *argv, "--sink", str(sink))
    assert code == 1 and err == ""
    assert sum(line.startswith("  MALFORMED: (") for line in out.splitlines()) == 6
    assert "longer than 1048576 bytes" in out
    assert "not valid UTF-8" in out
    code, report = report_of(capsys, *argv)
    assert kinds(report) == [(MALFORMED, None, None)] * 5


def test_unusable_arguments_exit_2_with_one_line(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    leaves = fill(target.url, 4)
    good = save(tmp_path / "good.checkpoint", signed(key, leaves, 4))
    private = tmp_path / "audit.key"
    private.write_text(key.encode() + "\n", encoding="utf-8")
    cases: list[tuple[list[str], str]] = [
        (["--checkpoint", good], "--checkpoint needs --public-key"),
        (["--sink", str(tmp_path)], "--sink needs --public-key"),
        (["--origin-prefix", "x"], "--origin-prefix needs --public-key"),
        (["--public-key", str(tmp_path / "missing.pub")], "missing.pub"),
        (["--public-key", str(tmp_path)], "directory"),
        (["--public-key", save(tmp_path / "empty.pub", b"")], "no verifier key"),
        (["--public-key", save(tmp_path / "bin.pub", b"\xff\x00\xfe")], "not UTF-8"),
        (["--public-key", save(tmp_path / "junk.pub", b"hello world\n")], "not a verifier key"),
        (["--public-key", save(tmp_path / "big.pub", b"#" * (2 << 20))], "too large"),
        (["--public-key", str(private)], "signing key"),
        (["--public-key", pub, "--checkpoint", str(tmp_path / "gone")], "gone"),
        (["--public-key", pub, "--checkpoint", str(tmp_path)], "directory"),
        (["--public-key", pub, "--sink", str(tmp_path / "nowhere")], "not a directory"),
    ]
    for extra, words in cases:
        code, out, err = run(capsys, "verify", target.url, *extra)
        assert_usage_error(code, out, err, words)
        assert key.encode() not in err  # a secret is never echoed
    code, out, err = run(capsys, "verify", "--jsonl", good, "--public-key", pub)
    assert code == 2


# --- the consistency proof of a single pass -----------------------------------------------------


def test_the_single_pass_consistency_proof_is_rfc_9162s() -> None:
    """The proof gathered in the pass over the leaves (without knowing where the log
    ends) is RFC 9162's, for every pair of sizes up to 80."""
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(80)]
    for old in range(40):
        for new in range(old, 80):
            checkpoint = _Signed("default", old, root(leaves[:old]), ["mine"], ["mine"])
            tree = _LogTree("default", [checkpoint])
            for leaf in leaves[:new]:
                tree.append(leaf)
            report = CheckpointReport(VerifyReport())
            tree.finish(report)
            (proof,) = report.proofs
            nodes = [bytes.fromhex(node) for node in proof.proof]
            assert nodes == consistency_proof(leaves, old, new), (old, new)
            assert proof.verified and report.findings == []


# --- checkpoints issued by the store itself ---------------------------------------------------


def fill_checkpointed(url: str, key: SigningKey, sink: Path, n: int, every: int = 5) -> None:
    """``n`` events through a store that issues a checkpoint every ``every`` entries (and
    on close) into its table and a directory sink."""

    async def run() -> None:
        checkpointing = Checkpointing(key, every=every, interval=None, sink=DirectorySink(sink))
        async with open_store(url, checkpointing=checkpointing) as store:
            for i in range(n):
                await store.append(NewEvent(action="a.b", resource="r", resource_id=str(i)))

    asyncio.run(run())


def stored_sizes(url: str) -> list[int]:
    async def run() -> list[int]:
        async with open_store(url, create=False) as store:
            return [checkpoint.size for checkpoint in await store.checkpoints()]

    return asyncio.run(run())


def tamper_with_checkpoints(target: Target, sql: str, params: tuple[Any, ...]) -> None:
    """Someone with write access to the checkpoint table, its append-only guard removed."""
    with target.attacker(drop_triggers=False) as attacker:
        if isinstance(target, SQLiteTarget):
            for trigger in ("auditmw_checkpoints_no_update", "auditmw_checkpoints_no_delete"):
                attacker.execute(f"DROP TRIGGER {trigger}")
        else:
            attacker.execute("ALTER TABLE auditmw_checkpoints DISABLE TRIGGER USER")
        attacker.execute(sql, params)


def restore_protections(target: Target) -> None:
    """Put the append-only guards back, as a careful attacker would (leaving no warning
    behind). On SQLite that is what reopening the store does."""
    if isinstance(target, SQLiteTarget):

        async def reopen() -> None:
            async with open_store(target.url):  # re-creates missing triggers
                pass

        asyncio.run(reopen())
        return
    with target.attacker(drop_triggers=False) as attacker:
        for table in ("auditmw_events", "auditmw_checkpoints"):
            for trigger in (f"{table}_no_change", f"{table}_no_truncate"):
                attacker.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {trigger}")


def reset_id_counter(target: Target) -> None:
    """Make SQLite's AUTOINCREMENT counter of checkpoint ids forget the deleted ones."""
    if isinstance(target, SQLiteTarget):
        with target.attacker(drop_triggers=False) as attacker:
            attacker.execute(
                "UPDATE sqlite_sequence SET seq = coalesce((SELECT max(id) FROM "
                "auditmw_checkpoints), 0) WHERE name = 'auditmw_checkpoints'"
            )


def rewrite_from(target: Target, first: int) -> None:
    """Change entry ``first`` of the default log and chain every later entry anew: a
    consistent rewrite, which only checkpoints can show."""
    with target.attacker() as attacker:
        last = int(attacker.fetchval("SELECT max(seq) FROM auditmw_events WHERE log = 'default'"))
        prev = attacker.read_hash(first - 1)
        for seq in range(first, last + 1):
            data = orjson.loads(attacker.read_entry(seq))
            data["prev_hash"] = prev
            if seq == first:
                data["resource_id"] = "rewritten"
            entry = rfc8785.dumps(data)
            prev = entry_hash(entry)
            attacker.execute(
                "UPDATE auditmw_events SET entry = ?, hash = ?, prev_hash = ?, resource_id = ? "
                "WHERE log = 'default' AND seq = ?",
                (entry, prev, data["prev_hash"], data["resource_id"], seq),
            )


def chain_findings(report: dict[str, Any]) -> list[tuple[str | None, int | None, str]]:
    return [(f["log"], f["seq"], f["kind"]) for f in report["findings"]]


def test_the_stores_own_checkpoints_are_checked(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = tmp_path / "sink"
    fill_checkpointed(target.url, key, sink, 12)
    sizes = stored_sizes(target.url)
    entries = sizes[-1]  # the store issued its last checkpoint on close
    assert len(sizes) >= 2 and sizes[0] < entries - 2

    code, out, err = run(capsys, "verify", target.url)
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == [
        f"checkpoints: {len(sizes)} signed checkpoint(s) in the store, not checked "
        "(give --public-key)"
    ]

    code, out, _ = run(capsys, "verify", target.url, "--public-key", pub, "--sink", str(sink))
    assert code == 0, out
    assert f"checkpoints: {2 * len(sizes)} checked with 1 key(s)" in out
    assert f"log 'default': {entries} entries, {entries} anchored" in out
    assert "0 not yet anchored" in out

    # The tail and the checkpoints covering it deleted together, the guard put back: the
    # remaining checkpoints still match, and still cover the key record at seq 1...
    # (Every checkpoint left is smaller than the entries left, whatever sizes the issuer
    # happened to sign at: some entries are then not anchored.)
    delete_tail(target, entries - 2)
    tamper_with_checkpoints(
        target, "DELETE FROM auditmw_checkpoints WHERE size > ?", (entries - 3,)
    )
    restore_protections(target)
    code, report = report_of(capsys, "verify", target.url, "--public-key", pub)
    assert report["checkpoints"]["findings"] == [] and report["warnings"] == []
    if isinstance(target, SQLiteTarget):  # ...but SQLite counts every id it gave out
        assert code == 1
        assert [(f["log"], f["kind"]) for f in report["findings"]] == [(None, CHECKPOINTS_REMOVED)]
        assert "were deleted" in report["findings"][0]["message"]
    else:  # PostgreSQL keeps no such count: nothing in the database shows it...
        assert code == 0 and report["checkpoints"]["logs"]["default"]["not_yet_anchored"] > 0
    # ...the sink, outside the database, does.
    code, report = report_of(capsys, "verify", target.url, "--public-key", pub, "--sink", str(sink))
    assert code == 1
    assert (TRUNCATED, "default", entries) in kinds(report)
    assert all(kind == TRUNCATED for kind, _, _ in kinds(report))


def test_edited_columns_of_a_stored_checkpoint_are_reported(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fill_checkpointed(target.url, key, tmp_path / "sink", 7)
    tamper_with_checkpoints(target, "UPDATE auditmw_checkpoints SET size = size + 100", ())
    code, report = report_of(capsys, "verify", target.url, "--public-key", pub)
    assert code == 1
    assert {kind for kind, _, _ in kinds(report)} == {COLUMN_MISMATCH}
    # The signed notes are what is checked: they still anchor the whole log.
    log = report["checkpoints"]["logs"]["default"]
    assert log["not_yet_anchored"] == 0


# --- checkpoints removed from the store's table ---------------------------------------------


@pytest.mark.parametrize("careful", [False, True], ids=["careless", "careful"])
def test_a_rewrite_with_every_checkpoint_deleted_is_found_without_a_sink(
    target: Target,
    key: SigningKey,
    pub: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    careful: bool,
) -> None:
    """Part of the log rewritten consistently, then every stored checkpoint (which would
    show the rewrite) deleted. The log still holds the record of the key (seq 1), and the
    issuer signs a checkpoint covering that record as soon as it makes it: with none by
    that key left, checkpoints were removed. A careful attacker also puts the table's
    guard back and (SQLite) resets its id counter: the key record still shows it."""
    fill_checkpointed(target.url, key, tmp_path / "sink", 12)
    assert run(capsys, "verify", target.url, "--public-key", pub)[0] == 0  # no false alarm
    rewrite_from(target, 5)
    assert run(capsys, "verify", target.url)[0] == 0  # the chain alone cannot tell
    tamper_with_checkpoints(target, "DELETE FROM auditmw_checkpoints", ())
    if careful:
        restore_protections(target)
        reset_id_counter(target)

    removed = [("default", 1, CHECKPOINTS_REMOVED)]
    if isinstance(target, SQLiteTarget) and not careful:
        removed.insert(0, (None, None, CHECKPOINTS_REMOVED))  # ids counted, and missing
    for extra in ([], ["--public-key", pub]):
        code, report = report_of(capsys, "verify", target.url, *extra)
        assert code == 1 and report["ok"] is False
        assert chain_findings(report) == removed
        assert bool(report["warnings"]) is not careful  # the guard, dropped or disabled
    assert report["checkpoints"]["checked"] == 0  # nothing left to check
    message = report["findings"][-1]["message"]
    assert f"key {KEY_NAME}+{key.key_id.hex()} signs the log's checkpoints" in message
    assert "no checkpoint by that key of size 1 or more: they were removed" in message
    code, out, _ = run(capsys, "verify", target.url, "--public-key", pub)
    assert out.startswith(f"DAMAGED: {len(removed)} finding(s); first: ")
    assert "log 'default' seq 1: checkpoints_removed: this entry records that key" in out


def test_the_checkpoints_of_a_rotated_key_deleted(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checkpoints by the first key remain, the newer key's are gone: fewer than the key
    records prove. Only the newer key's record (seq 8) is reported."""
    fill_checkpointed(target.url, key, tmp_path / "sink", 6)  # record at 1, events 2..7
    newer = SigningKey.generate(f"{KEY_NAME}/2026")
    fill_checkpointed(target.url, newer, tmp_path / "sink2", 6)  # record at 8
    tamper_with_checkpoints(
        target, "DELETE FROM auditmw_checkpoints WHERE key = ?", (newer.verifier.encode(),)
    )
    restore_protections(target)
    reset_id_counter(target)
    code, report = report_of(capsys, "verify", target.url, "--public-key", pub)
    assert code == 1
    assert chain_findings(report) == [("default", 8, CHECKPOINTS_REMOVED)]
    assert f"key {newer.name}+{newer.key_id.hex()} signs" in report["findings"][0]["message"]
    assert report["checkpoints"]["findings"] == []  # the first key's still match
    assert report["checkpoints"]["logs"]["default"]["anchored"] == 7


def test_forged_rows_in_their_place_fail_the_signature_check(
    target: Target, key: SigningKey, pub: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key record is checked against the table's unsigned columns, so a forged row
    naming the key hides the removal from a verify without keys; with the key, the
    forgery is what is reported."""
    fill_checkpointed(target.url, key, tmp_path / "sink", 4)
    tamper_with_checkpoints(target, "DELETE FROM auditmw_checkpoints", ())
    reset_id_counter(target)  # (SQLite) the forged row then gets id 1, as if the first
    forged_note = b"not a signed checkpoint"
    with target.attacker(drop_triggers=False) as attacker:
        attacker.execute(
            "INSERT INTO auditmw_checkpoints (log, size, root, frontier, note, key, created_at) "
            "VALUES ('default', 100, ?, ?, ?, ?, '2026-01-01T00:00:00.000000Z')",
            (b"\x00" * 32, b"\x00", forged_note, key.verifier.encode()),
        )
    restore_protections(target)
    code, report = report_of(capsys, "verify", target.url)
    assert code == 0 and report["checkpoints"]["unchecked"] == 1  # nothing is checked
    code, report = report_of(capsys, "verify", target.url, "--public-key", pub)
    assert code == 1 and chain_findings(report) == []
    assert kinds(report) == [(MALFORMED, None, None)]
