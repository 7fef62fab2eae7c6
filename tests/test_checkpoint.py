"""Signed checkpoints: Go's sumdb note vectors, round trips, every edit detected, and
malformed input rejected with a clear error, never a crash.

Vectors: golang.org/x/mod/sumdb/note, note_test.go (the PeterNeumann and EnochRoot keys,
notes and the malformed-note list) and docs/checkpoints.md (the worked example).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from hypothesis import given
from hypothesis import strategies as st

from auditmw._transparency.inputs import load_keys
from auditmw._transparency.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from auditmw._transparency.notes import (
    BadSignatureError,
    Checkpoint,
    CheckpointError,
    MalformedNoteError,
    NoteSignature,
    SigningKey,
    UnknownKeyError,
    VerifierKey,
    WrongOriginError,
    generate_key,
    key_id,
    load_signing_key,
    log_origin,
    open_checkpoint,
    open_note,
    parse_note,
    save_signing_key,
    save_verifier_key,
    sign_checkpoint,
    sign_note,
)

# --- Go's sumdb/note vectors -------------------------------------------------------------

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqd"
    "ngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWL"
    "ox33WWd1RvMc+QQ=\n"
)
PETER = VerifierKey.parse(PETER_VKEY)
ENOCH = VerifierKey.parse(ENOCH_VKEY)


def note(*parts: str) -> bytes:
    return "".join(parts).encode()


def insert_abcd(sig_line: str) -> str:
    """Go's corruption: "ABCD" inserted at byte 60 of a signature line (valid base64)."""
    raw = sig_line.encode()
    return (raw[:60] + b"ABCD" + raw[60:]).decode()


def test_go_keys_parse_and_match() -> None:
    signer = SigningKey.parse(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id.hex() == "c74f20a3"
    assert signer.verifier == PETER
    assert signer.encode() == PETER_SKEY
    assert PETER.encode() == PETER_VKEY
    assert ENOCH.key_id == key_id("EnochRoot", ENOCH.public_key) == bytes.fromhex("af0cfe78")


def test_go_sign_vector() -> None:
    # Ed25519 is deterministic: the same key signs the same text to the same bytes.
    assert sign_note(TEXT, SigningKey.parse(PETER_SKEY)) == note(TEXT, "\n", PETER_SIG)


def test_go_open_one_known_one_unknown() -> None:
    opened = open_note(note(TEXT, "\n", PETER_SIG, ENOCH_SIG), [PETER])
    assert opened.text == TEXT
    assert opened.verified_by == (PETER,)
    assert [(s.name, s.key_id.hex()) for s in opened.unverified] == [("EnochRoot", "af0cfe78")]


def test_go_open_both_known() -> None:
    opened = open_note(note(TEXT, "\n", PETER_SIG, ENOCH_SIG), [PETER, ENOCH])
    assert opened.verified_by == (PETER, ENOCH)
    assert opened.unverified == ()


def test_go_open_no_known_key() -> None:
    with pytest.raises(UnknownKeyError, match="no signature by a known key") as caught:
        open_note(note(TEXT, "\n", PETER_SIG, ENOCH_SIG), [])
    assert caught.value.kind == "UNKNOWN_KEY"
    assert [s.name for s in caught.value.signatures] == ["PeterNeumann", "EnochRoot"]


def test_go_open_duplicated_key_is_harmless() -> None:
    opened = open_note(note(TEXT, "\n", PETER_SIG), [ENOCH, PETER, ENOCH])
    assert opened.verified_by == (PETER,)


def test_go_too_many_signatures() -> None:
    for keys in ([PETER], []):
        with pytest.raises(MalformedNoteError, match="more than 100"):
            open_note(note(TEXT, "\n", PETER_SIG * 101), keys)


def test_go_invalid_signature() -> None:
    with pytest.raises(BadSignatureError, match="PeterNeumann\\+c74f20a3") as caught:
        open_note(note(TEXT, "\n", insert_abcd(PETER_SIG)), [PETER])
    assert caught.value.kind == "BAD_SIGNATURE"
    assert caught.value.key == PETER


def test_go_duplicated_verified_and_unverified_signatures() -> None:
    message = note(TEXT, "\n", PETER_SIG, PETER_SIG, ENOCH_SIG, ENOCH_SIG, insert_abcd(ENOCH_SIG))
    opened = open_note(message, [PETER])
    assert opened.verified_by == (PETER,)
    assert len(opened.unverified) == 2  # the repeated Enoch line is dropped, ABCD kept
    assert opened.unverified[0].line() == ENOCH_SIG
    assert opened.unverified[1].line() == insert_abcd(ENOCH_SIG)


@pytest.mark.parametrize(
    "message",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        "\xff" + TEXT + "\n" + PETER_SIG,  # Go's byte 0xff: invalid UTF-8 (below)
        TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2p"
        "ZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ],
)
def test_go_malformed_notes(message: str) -> None:
    raw = message.encode()
    if message.startswith("\xff"):
        raw = b"\xff" + raw[2:]  # the raw byte 0xff, as in Go, not U+00FF
    with pytest.raises(MalformedNoteError):
        open_note(raw, [PETER])


def test_non_canonical_base64_is_malformed() -> None:
    # "...AM=" and "...AN=" decode to the same bytes (only the unused padding bits
    # differ); Go accepts both, auditmw only the canonical one, so a note has one spelling.
    assert PETER_SIG.endswith("AM=\n")
    with pytest.raises(MalformedNoteError, match="canonical"):
        open_note(note(TEXT, "\n", PETER_SIG[:-3] + "N=\n"), [PETER])


def mangled(text: str) -> list[str]:
    """note_test.go's manglings: every proper substring, and every byte plus one."""
    raw = text.encode()
    found = {
        raw[i:j].decode()
        for i in range(len(raw) + 1)
        for j in range(i + 1, len(raw) + 1)
        if (i, j) != (0, len(raw))
    }
    found |= {(raw[:i] + bytes([raw[i] + 1]) + raw[i + 1 :]).decode() for i in range(len(raw))}
    return sorted(found)


def test_go_verifier_key_manglings_are_rejected() -> None:
    for text in mangled(PETER_VKEY):
        with pytest.raises(MalformedNoteError):
            VerifierKey.parse(text)
    # A wrong-length key with its id adjusted; an unknown algorithm with its id adjusted.
    for text in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(MalformedNoteError):
            VerifierKey.parse(text)


def test_go_signer_key_manglings_are_rejected() -> None:
    for text in mangled(PETER_SKEY):
        with pytest.raises(MalformedNoteError):
            SigningKey.parse(text)


# --- checkpoints ----------------------------------------------------------------------------

ORIGIN = "audit.example.com/app/default"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey("audit.example.com/app", hashlib.sha256(b"test key").digest())


def sample_leaves(n: int) -> list[bytes]:
    return [leaf_hash(b"event %d" % i) for i in range(n)]


def test_round_trip(key: SigningKey) -> None:
    checkpoint = Checkpoint(ORIGIN, 10, root(sample_leaves(10)))
    signed = sign_checkpoint(checkpoint, key)
    assert signed.decode().startswith(f"{ORIGIN}\n10\n")
    opened = open_checkpoint(signed, [key.verifier], origin=ORIGIN)
    assert opened.checkpoint == checkpoint
    assert opened.verified_by == (key.verifier,)
    assert opened.note == signed
    assert open_checkpoint(signed.decode(), [key.verifier]).checkpoint == checkpoint


def test_empty_log_checkpoint(key: SigningKey) -> None:
    signed = sign_checkpoint(Checkpoint(ORIGIN, 0, EMPTY_ROOT), key)
    assert b"\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n" in signed
    assert open_checkpoint(signed, [key.verifier]).checkpoint.size == 0


def test_extension_lines_round_trip(key: SigningKey) -> None:
    checkpoint = Checkpoint(ORIGIN, 3, root(sample_leaves(3)), ("ext one", "ext — two"))
    assert open_checkpoint(sign_checkpoint(checkpoint, key), [key.verifier]).checkpoint == (
        checkpoint
    )


def test_several_signers(key: SigningKey) -> None:
    other, other_public = generate_key("witness.example.org/w1")
    signed = sign_checkpoint(Checkpoint(ORIGIN, 1, sample_leaves(1)[0]), key, other)
    assert open_checkpoint(signed, [other_public]).verified_by == (other_public,)
    assert open_checkpoint(signed, [key.verifier, other_public]).verified_by == (
        key.verifier,
        other_public,
    )


def edit_line(signed: bytes, number: int, new: str) -> bytes:
    lines = signed.decode().split("\n")
    lines[number] = new
    return "\n".join(lines).encode()


def test_edited_size_is_detected(key: SigningKey) -> None:
    signed = sign_checkpoint(Checkpoint(ORIGIN, 10, root(sample_leaves(10))), key)
    with pytest.raises(BadSignatureError):
        open_checkpoint(edit_line(signed, 1, "9"), [key.verifier])


def test_edited_root_is_detected(key: SigningKey) -> None:
    signed = sign_checkpoint(Checkpoint(ORIGIN, 10, root(sample_leaves(10))), key)
    other_root = Checkpoint(ORIGIN, 10, root(sample_leaves(11)[1:])).body().split("\n")[2]
    with pytest.raises(BadSignatureError):
        open_checkpoint(edit_line(signed, 2, other_root), [key.verifier])


def test_edited_origin_is_detected(key: SigningKey) -> None:
    signed = sign_checkpoint(Checkpoint(ORIGIN, 10, root(sample_leaves(10))), key)
    with pytest.raises(BadSignatureError):
        open_checkpoint(edit_line(signed, 0, "audit.example.com/app/billing"), [key.verifier])


def test_edited_signature_is_detected(key: SigningKey) -> None:
    signed = sign_checkpoint(Checkpoint(ORIGIN, 10, root(sample_leaves(10))), key)
    text = signed.decode().rsplit("\n\n", 1)[0]
    parsed = parse_note(signed).signatures[0]
    flipped = bytearray(parsed.signature)
    flipped[10] ^= 1
    forged = NoteSignature(parsed.name, parsed.key_id, bytes(flipped)).line()
    with pytest.raises(BadSignatureError):
        open_checkpoint(f"{text}\n\n{forged}", [key.verifier])


def test_resigned_by_another_key_is_unknown(key: SigningKey) -> None:
    # A full rewrite: the attacker recomputes the tree and signs with a key of their own,
    # even one with the same name.
    forger = SigningKey(key.name, hashlib.sha256(b"attacker").digest())
    signed = sign_checkpoint(Checkpoint(ORIGIN, 10, root(sample_leaves(10))), forger)
    with pytest.raises(UnknownKeyError) as caught:
        open_checkpoint(signed, [key.verifier])
    assert caught.value.kind == "UNKNOWN_KEY"


def test_checkpoint_of_another_log(key: SigningKey) -> None:
    signed = sign_checkpoint(
        Checkpoint(log_origin(key.name, "billing"), 1, sample_leaves(1)[0]), key
    )
    with pytest.raises(WrongOriginError) as caught:
        open_checkpoint(signed, [key.verifier], origin=log_origin(key.name, "default"))
    assert caught.value.kind == "WRONG_ORIGIN"


def test_checkpoint_root_and_proofs_work_together(key: SigningKey) -> None:
    # The path a verifier takes: open two checkpoints, then check proofs against them.
    log = sample_leaves(300)
    old = open_checkpoint(
        sign_checkpoint(Checkpoint(ORIGIN, 123, root(log[:123])), key), [key.verifier]
    )
    new = open_checkpoint(sign_checkpoint(Checkpoint(ORIGIN, 300, root(log)), key), [key.verifier])
    a, b = old.checkpoint, new.checkpoint
    assert verify_consistency(a.size, b.size, a.root, b.root, consistency_proof(log, 123))
    assert verify_inclusion(log[77], 77, b.size, inclusion_proof(log, 77), b.root)
    # A fork: a rewritten log that still has 300 entries no longer extends checkpoint a.
    forked = [*log[:50], leaf_hash(b"rewritten"), *log[51:]]
    assert not verify_consistency(
        a.size, b.size, a.root, root(forked), consistency_proof(forked, 123)
    )


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("origin\n10\n", "origin, a tree size and a root"),
        ("origin\n010\nROOT\n", "leading zeros"),
        ("origin\n+10\nROOT\n", "leading zeros"),
        ("origin\n 10\nROOT\n", "leading zeros"),
        ("origin\n10 \nROOT\n", "leading zeros"),
        ("origin\n\u0661\u0660\nROOT\n", "leading zeros"),  # Arabic-Indic digits
        ("origin\n1_0\nROOT\n", "leading zeros"),
        ("origin\n-1\nROOT\n", "leading zeros"),
        ("origin\n9223372036854775808\nROOT\n", "out of range"),
        ("origin\n99999999999999999999\nROOT\n", "leading zeros"),
        ("origin\n10\nROOT \n", "not valid base64"),
        ("origin\n10\n!!!!\n", "not valid base64"),
        ("origin\n10\nROOT\n\next\n", "non-empty"),
        ("origin\n10\nROOT", "ends with a newline"),
        ("\n10\nROOT\n", "origin must be"),
        ("origin\n10\n" + "A" * 44 + "\n", "32 bytes"),  # 33 bytes
        ("origin\n10\n" + "AAAB" * 10 + "AAF=\n", "canonical"),  # padding bits set
    ],
)
def test_malformed_checkpoint_bodies(body: str, problem: str) -> None:
    body = body.replace("ROOT", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=")
    with pytest.raises(MalformedNoteError, match=problem):
        Checkpoint.parse(body)


def test_a_signed_but_malformed_body_is_malformed(key: SigningKey) -> None:
    # The signature verifies (the signer signed garbage): still not a checkpoint.
    with pytest.raises(MalformedNoteError, match="base64"):
        open_checkpoint(sign_note("origin\n5\nnot base64!\n", key), [key.verifier])


@pytest.mark.parametrize(
    ("edit", "problem"),
    [
        (lambda s: s.replace("\n\n", "\n"), "no blank line"),
        (lambda s: s.replace("\n", "\r\n"), "control character"),
        (lambda s: s.replace("—", "--"), "em dash"),
        (lambda s: s.replace("— ", "—  "), "signature line"),
        (lambda s: s[:-1] + " \n", "base64"),
        (lambda s: s[:-1], "newline"),
        (lambda s: s + "\n", "newline"),
        (lambda s: s.replace("=\n", "\n"), "base64"),
        (lambda s: s + "— name c2ln\n", "at least one byte"),
        (lambda s: "\ufeff" + s.replace("\n\n", " \n\n"), None),  # BOM: bad signature
    ],
)
def test_malformed_notes_are_rejected_clearly(
    key: SigningKey, edit: object, problem: str | None
) -> None:
    signed = sign_checkpoint(Checkpoint(ORIGIN, 10, root(sample_leaves(10))), key).decode()
    assert callable(edit)
    if problem is None:
        with pytest.raises(BadSignatureError):
            open_checkpoint(edit(signed), [key.verifier])
        return
    with pytest.raises(MalformedNoteError, match=problem):
        open_checkpoint(edit(signed), [key.verifier])


def test_note_text_must_end_in_newline_to_be_signed(key: SigningKey) -> None:
    with pytest.raises(MalformedNoteError):
        sign_note("no newline", key)
    with pytest.raises(MalformedNoteError):
        Checkpoint("line\nbreak", 1, EMPTY_ROOT)
    with pytest.raises(ValueError):
        sign_note("text\n")


@given(st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_arbitrary_input_never_crashes(message: str | bytes) -> None:
    try:
        open_checkpoint(message, [PETER])
    except CheckpointError as error:
        assert error.kind in ("MALFORMED", "UNKNOWN_KEY", "BAD_SIGNATURE")
    else:  # pragma: no cover - would need a forged Ed25519 signature
        raise AssertionError("accepted a note PeterNeumann never signed")


@given(st.data())
def test_any_single_byte_change_is_detected(data: st.DataObject) -> None:
    signing_key = SigningKey("audit.example.com/app", hashlib.sha256(b"test key").digest())
    signed = sign_checkpoint(Checkpoint(ORIGIN, 4242, root(sample_leaves(5))), signing_key)
    position = data.draw(st.integers(0, len(signed) - 1), label="position")
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != signed[position]), label="byte")
    changed = signed[:position] + bytes([byte]) + signed[position + 1 :]
    with pytest.raises(CheckpointError):
        open_checkpoint(changed, [signing_key.verifier], origin=ORIGIN)


@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30))
def test_log_origins_are_safe_lines(log: str) -> None:
    origin = log_origin("audit.example.com/app", log)
    assert re.fullmatch(r"audit\.example\.com/app/[A-Za-z0-9_.~%-]+", origin)
    Checkpoint(origin, 0, EMPTY_ROOT)  # a valid origin line


def test_log_origins_do_not_collide() -> None:
    logs = ["a/b", "a%2Fb", "a b", "a+b", "a%20b", "Ä", "A\u0308", "default"]
    assert len({log_origin("p", log) for log in logs}) == len(logs)


# --- keys and key files ----------------------------------------------------------------------


def test_generated_keys_work() -> None:
    signer, verifier = generate_key("audit.example.com/app")
    assert signer.verifier == verifier
    assert VerifierKey.parse(verifier.encode()) == verifier
    assert SigningKey.parse(signer.encode()) == signer
    assert signer.encode().startswith(f"PRIVATE+KEY+audit.example.com/app+{verifier.key_id.hex()}+")
    assert signer.seed.hex() not in repr(signer)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u00a0b", "a\u3000b", "a\tb", "a\x01b"])
def test_invalid_key_names(name: str) -> None:
    with pytest.raises(MalformedNoteError):
        generate_key(name)


def test_key_files(tmp_path: Path) -> None:
    signer, verifier = generate_key("audit.example.com/app")
    secret, public = tmp_path / "audit.key", tmp_path / "audit.pub"
    save_signing_key(signer, secret)
    save_verifier_key(verifier, public)
    if os.name == "posix":
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert load_signing_key(secret) == signer
    assert load_keys([public]) == [verifier]
    with pytest.raises(FileExistsError):  # a key is never overwritten
        save_signing_key(generate_key("other")[0], secret)
    with pytest.raises(FileExistsError):
        save_verifier_key(verifier, public)


def test_verifier_key_file_with_several_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# current key\n{PETER_VKEY}\n\n  {ENOCH_VKEY}  \n", encoding="utf-8")
    assert load_keys([path]) == [PETER, ENOCH]
    path.write_text("not a key\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not a verifier key"):
        load_keys([path])


# --- the worked example of docs/checkpoints.md -------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "checkpoints.md"
BLOCK = re.compile(r"^```(\w+) ([\w.-]+)\n(.*?)\n```$", re.DOTALL | re.MULTILINE)
REFERENCE_DATA = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657"]
REFERENCE_DATA.append("606162636465666768696a6b6c6d6e6f")


def doc_blocks() -> dict[str, str]:
    return {name: body for _, name, body in BLOCK.findall(DOC.read_text(encoding="utf-8"))}


def test_doc_example_is_what_auditmw_writes() -> None:
    blocks = doc_blocks()
    seed = hashlib.sha256(b"auditmw example key: public, never use it").digest()
    signer = SigningKey("example.com/audit", seed)
    assert blocks["example-signer-key"] == signer.encode()
    assert blocks["example-verifier-key"] == signer.verifier.encode()
    log = [leaf_hash(bytes.fromhex(data)) for data in REFERENCE_DATA]
    origin = log_origin("example.com/audit", "reference")
    for size in (6, 8):
        signed = sign_checkpoint(Checkpoint(origin, size, root(log[:size])), signer)
        assert blocks[f"example-checkpoint-{size}"] + "\n" == signed.decode()
    assert blocks["example-consistency-6-8"].split() == [p.hex() for p in consistency_proof(log, 6)]
    assert blocks["example-inclusion-5-8"].split() == [p.hex() for p in inclusion_proof(log, 5)]


def test_doc_standalone_verifier_agrees() -> None:
    blocks = doc_blocks()
    namespace: dict[str, object] = {}
    exec(compile(blocks["verify_checkpoint.py"], "verify_checkpoint.py", "exec"), namespace)
    open_cp, incl, cons = (
        namespace["open_checkpoint"],
        namespace["verify_inclusion"],
        namespace["verify_consistency"],
    )
    assert callable(open_cp) and callable(incl) and callable(cons)
    vkey = blocks["example-verifier-key"]
    origin6, size6, root6 = open_cp((blocks["example-checkpoint-6"] + "\n").encode(), vkey)
    origin8, size8, root8 = open_cp((blocks["example-checkpoint-8"] + "\n").encode(), vkey)
    assert (origin6, size6, origin8, size8) == (
        "example.com/audit/reference",
        6,
        "example.com/audit/reference",
        8,
    )
    consistency = [bytes.fromhex(h) for h in blocks["example-consistency-6-8"].split()]
    inclusion = [bytes.fromhex(h) for h in blocks["example-inclusion-5-8"].split()]
    leaf5 = leaf_hash(bytes.fromhex("40414243"))
    assert cons(6, 8, root6, root8, consistency)
    assert incl(leaf5, 5, 8, inclusion, root8)
    assert not cons(6, 8, root8, root6, consistency)
    assert not incl(leaf5, 4, 8, inclusion, root8)
    # It agrees with auditmw on random proofs too.
    log = sample_leaves(100)
    for old, new in [(1, 2), (3, 7), (16, 100), (37, 64), (0, 5), (5, 5)]:
        proof = consistency_proof(log[:new], old)
        assert cons(old, new, root(log[:old]), root(log[:new]), proof)
    with pytest.raises(InvalidSignature):
        open_cp(
            edit_line((blocks["example-checkpoint-8"] + "\n").encode(), 1, "7"),
            vkey,
        )
