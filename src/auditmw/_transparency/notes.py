"""Signed checkpoints: C2SP ``tlog-checkpoint`` bodies in C2SP ``signed-note``s, Ed25519.

A checkpoint commits to a log's Merkle tree, its size and root (``auditmw._transparency.merkle``)::

    <origin>\\n<tree size, decimal>\\n<base64 root hash>\\n[<extension line>\\n ...]

and the note appends a blank line and one signature line per key::

    — <key name> <base64(4-byte key id ‖ 64-byte Ed25519 signature of the body)>

Key id = ``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ 32-byte public key)[:4]``. Keys are written as
Go's ``golang.org/x/mod/sumdb/note`` writes them, so either tool reads the other's:
verifier key ``<name>+<hex key id>+<base64(0x01 ‖ public key)>``, signer key
``PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 ‖ 32-byte seed)>``.

Opening a note follows Go's ``note.Open``: the note must be UTF-8 without control
characters but newline; the text ends at the last blank line; signatures by keys that are
not given are ignored; a signature by a given key that fails rejects the whole note
(``BadSignatureError``); a note no given key signed is ``UnknownKeyError``; anything
unparsable is ``MalformedNoteError``. Signing and checking signatures need the
``cryptography`` package (the ``checkpoints`` extra), imported only then: parsing works,
and ``import auditmw`` succeeds, without it; signing or checking a signature without it
raises ``MissingExtraError`` naming the extra (``require_cryptography``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import ClassVar
from urllib.parse import quote, unquote

from auditmw._errors import AuditError
from auditmw._transparency.merkle import HASH_SIZE

ALG_ED25519 = 0x01
SIGNATURE_SIZE = 64
MAX_SIGNATURES = 100  # Go's note.Open limit; C2SP requires accepting at least 16
MAX_NOTE_BYTES = 1 << 20
MAX_TREE_SIZE = (1 << 63) - 1  # Go's tlog sizes are int64
_SIG_PREFIX = "\N{EM DASH} "
_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_HEX8 = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)
# Unicode White_Space: what Go's unicode.IsSpace rejects in key names (str.isspace
# differs slightly: it also counts U+001C..U+001F).
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


class CheckpointError(AuditError):
    """A note or checkpoint was rejected; ``kind`` says why, for reports."""

    kind: ClassVar[str] = "CHECKPOINT_ERROR"


class MalformedNoteError(CheckpointError, ValueError):
    """Not a well-formed signed note or checkpoint (or key); nothing was verified."""

    kind: ClassVar[str] = "MALFORMED"


class UnknownKeyError(CheckpointError):
    """The note is well formed but none of its signatures is by a key we were given."""

    kind: ClassVar[str] = "UNKNOWN_KEY"

    def __init__(self, message: str, signatures: tuple[NoteSignature, ...]) -> None:
        super().__init__(message)
        self.signatures = signatures


class BadSignatureError(CheckpointError):
    """A signature by a key we were given does not verify: the note was altered or forged."""

    kind: ClassVar[str] = "BAD_SIGNATURE"

    def __init__(self, message: str, key: VerifierKey) -> None:
        super().__init__(message)
        self.key = key


class WrongOriginError(CheckpointError):
    """A validly signed checkpoint, but for another log than the one expected."""

    kind: ClassVar[str] = "WRONG_ORIGIN"


class MissingExtraError(AuditError, ImportError):
    """Signing or checking signatures needs ``cryptography``, the optional ``checkpoints``
    extra, and it is not installed."""


def require_cryptography(purpose: str) -> ModuleType:
    """The Ed25519 module of ``cryptography``; ``MissingExtraError`` naming ``purpose``
    and the extra to install when it cannot be imported."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise MissingExtraError(
            f"{purpose} needs the cryptography package: pip install 'auditmw[checkpoints]'"
        ) from exc
    return ed25519


# --- keys --------------------------------------------------------------------------------


def is_valid_key_name(name: str) -> bool:
    """Non-empty, no Unicode space, no ``+`` (C2SP signed-note; Go's ``isValidName``)."""
    return bool(name) and "+" not in name and not _SPACES.intersection(name) and _printable(name)


def key_id(name: str, public_key: bytes) -> bytes:
    """``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public_key)[:4]``: the C2SP Ed25519 key id."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A named Ed25519 public key, as ``name+keyid+base64(0x01 ‖ key)``."""

    name: str
    public_key: bytes

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise MalformedNoteError(f"invalid key name {self.name!r}")
        if len(self.public_key) != 32:
            raise MalformedNoteError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    def encode(self) -> str:
        encoded = _b64(bytes([ALG_ED25519]) + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse ``name+hexid+base64``; the id must match the name and key."""
        parts = text.split("+", 2)
        if len(parts) != 3:
            raise MalformedNoteError("a verifier key is name+keyid+base64key")
        name, hex_id, key64 = parts
        key = _algorithm_key(name, hex_id, key64)
        if bytes.fromhex(hex_id) != key_id(name, key):
            raise MalformedNoteError("the verifier key's id does not match its name and key")
        return cls(name, key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_SIZE:
            return False
        ed25519 = require_cryptography("checking a signature")
        from cryptography.exceptions import InvalidSignature

        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):  # ValueError: not a point on the curve
            return False
        return True

    def __str__(self) -> str:
        return self.encode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A named Ed25519 private key. Keep it out of the database and out of logs."""

    name: str
    seed: bytes

    def __post_init__(self) -> None:
        if not is_valid_key_name(self.name):
            raise MalformedNoteError(f"invalid key name {self.name!r}")
        if len(self.seed) != 32:
            raise MalformedNoteError("an Ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        return cls(name, os.urandom(32))

    @property
    def verifier(self) -> VerifierKey:
        ed25519 = require_cryptography("deriving a verifier key")
        public = ed25519.Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return VerifierKey(self.name, public.public_bytes_raw())

    @property
    def key_id(self) -> bytes:
        return self.verifier.key_id

    def sign(self, message: bytes) -> bytes:
        ed25519 = require_cryptography("signing")
        signature: bytes = ed25519.Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)
        return signature

    def encode(self) -> str:
        encoded = _b64(bytes([ALG_ED25519]) + self.seed)
        return f"PRIVATE+KEY+{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def parse(cls, text: str) -> SigningKey:
        """Parse ``PRIVATE+KEY+name+hexid+base64``; the id must match the derived key."""
        parts = text.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise MalformedNoteError("a signer key is PRIVATE+KEY+name+keyid+base64seed")
        name, hex_id, key64 = parts[2:]
        key = cls(name, _algorithm_key(name, hex_id, key64))
        # The id is of the public key: derive it before trusting the pair.
        if bytes.fromhex(hex_id) != key.key_id:
            raise MalformedNoteError("the signer key's id does not match its name and key")
        return key

    def __repr__(self) -> str:  # never print the seed
        return f"SigningKey(name={self.name!r}, key_id={self.key_id.hex()})"


def generate_key(name: str) -> tuple[SigningKey, VerifierKey]:
    """A new Ed25519 key pair named ``name`` (e.g. ``audit.example.com/app``)."""
    key = SigningKey.generate(name)
    return key, key.verifier


def save_signing_key(key: SigningKey, path: str | os.PathLike[str]) -> None:
    """Write the signer key to a new file readable by its owner only; never overwrites."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(key.encode() + "\n")


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    return SigningKey.parse(Path(path).read_text(encoding="utf-8").strip())


def save_verifier_key(key: VerifierKey, path: str | os.PathLike[str]) -> None:
    """Write the verifier key (public) to a new file; never overwrites."""
    with open(path, "x", encoding="utf-8") as file:
        file.write(key.encode() + "\n")


# --- signed notes ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: who claims to have signed (name, key id) and the signature."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {_b64(self.key_id + self.signature)}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed signed note: its text (ending in newline) and signatures, unverified."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A note that at least one given key signed. ``verified_by`` are those keys;
    ``unverified`` are the signatures by keys that were not given (ignored)."""

    text: str
    verified_by: tuple[VerifierKey, ...]
    unverified: tuple[NoteSignature, ...]


def sign_note(text: str, *keys: SigningKey) -> bytes:
    """The signed note of ``text`` (which must end in a newline) by every key."""
    if not keys:
        raise ValueError("sign_note needs at least one key")
    _check_note_text(text)
    body = text.encode()
    lines = [NoteSignature(k.name, k.key_id, k.sign(body)).line() for k in keys]
    return body + b"\n" + "".join(lines).encode()


def parse_note(message: bytes | str) -> Note:
    """Split a signed note into text and signature lines; checks syntax only."""
    if isinstance(message, str):
        try:
            message = message.encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedNoteError("the note is not valid UTF-8") from None
    if len(message) > MAX_NOTE_BYTES:
        raise MalformedNoteError(f"the note is longer than {MAX_NOTE_BYTES} bytes")
    try:
        decoded = message.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNoteError("the note is not valid UTF-8") from None
    if not _printable(decoded.replace("\n", "")):
        raise MalformedNoteError("the note holds a control character other than newline")
    # The text ends at the last blank line; it may contain blank lines itself.
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("no blank line before the signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block.endswith("\n"):
        raise MalformedNoteError("no signature lines, or the last one lacks its newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"more than {MAX_SIGNATURES} signatures")
    return Note(text, tuple(_parse_signature_line(line) for line in lines))


def open_note(message: bytes | str, keys: Iterable[VerifierKey]) -> VerifiedNote:
    """Parse and verify a signed note against the given verifier keys (Go's ``note.Open``)."""
    note = parse_note(message)
    known: dict[tuple[str, bytes], VerifierKey] = {}
    for key in keys:
        other = known.setdefault((key.name, key.key_id), key)
        if other != key:  # Go: "ambiguous key"; a misconfiguration, not a verdict on the note
            raise ValueError(f"two different verifier keys named {key.name}+{key.key_id.hex()}")
    body = note.text.encode()
    verified: list[VerifierKey] = []
    unverified: list[NoteSignature] = []
    for sig in note.signatures:
        signer = known.get((sig.name, sig.key_id))
        if signer is None:
            if sig not in unverified:
                unverified.append(sig)
        elif signer not in verified:  # a key's later signatures are ignored, as in Go
            if not signer.verify(body, sig.signature):
                raise BadSignatureError(
                    f"invalid signature for key {signer.name}+{sig.key_id.hex()}", signer
                )
            verified.append(signer)
    if not verified:
        names = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in unverified)
        raise UnknownKeyError(
            f"no signature by a known key (signed by: {names})", tuple(unverified)
        )
    return VerifiedNote(note.text, tuple(verified), tuple(unverified))


# --- checkpoints -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint's body: ``origin`` names the log, ``size`` leaves, ``root`` their MTH."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or not _printable(self.origin):
            raise MalformedNoteError(
                "the origin must be a non-empty line without control characters"
            )
        if not isinstance(self.size, int) or isinstance(self.size, bool):
            raise MalformedNoteError("the tree size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise MalformedNoteError(f"tree size {self.size} is out of range")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise MalformedNoteError(f"the root hash must be {HASH_SIZE} bytes")
        for line in self.extensions:
            if not line or not _printable(line):
                raise MalformedNoteError(
                    "extension lines must be non-empty, without control characters"
                )

    def body(self) -> str:
        """The note text: origin, size, base64 root and extension lines, each with ``\\n``."""
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), _b64(self.root), *self.extensions)
        )

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the text of a signed note)."""
        if not text.endswith("\n"):
            raise MalformedNoteError("a checkpoint body ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedNoteError("a checkpoint has an origin, a tree size and a root hash")
        origin, size, root, *extensions = lines
        if not _DECIMAL.fullmatch(size) or len(size) > 19:
            raise MalformedNoteError(
                f"tree size {size[:40]!r} is not a decimal without leading zeros"
            )
        root_hash = _unb64(root, "root hash")
        checkpoint = cls(origin, int(size), root_hash, tuple(extensions))
        if checkpoint.body() != text:  # e.g. a blank line among the extensions
            raise MalformedNoteError("the checkpoint body is not in canonical form")
        return checkpoint


@dataclass(frozen=True, slots=True)
class VerifiedCheckpoint:
    """A checkpoint and the keys whose signatures on it verified."""

    checkpoint: Checkpoint
    verified_by: tuple[VerifierKey, ...]
    note: bytes


def log_origin(prefix: str, log: str) -> str:
    """The origin line of the checkpoints of ``log``: ``prefix/`` + the log name
    percent-encoded (UTF-8), so any log name gives one safe line and no two collide."""
    return f"{prefix}/{quote(log, safe='')}"


def sign_checkpoint(checkpoint: Checkpoint, *keys: SigningKey) -> bytes:
    """The signed note of ``checkpoint``: what a store keeps and publishes."""
    return sign_note(checkpoint.body(), *keys)


def open_checkpoint(
    message: bytes | str, keys: Sequence[VerifierKey], *, origin: str | None = None
) -> VerifiedCheckpoint:
    """Verify a signed checkpoint. Raises ``MalformedNoteError``, ``UnknownKeyError``,
    ``BadSignatureError`` or, when ``origin`` is given and differs, ``WrongOriginError``.

    The signature is checked before the body is parsed: nothing from an unverified body
    is trusted (or reported) beyond its syntax.
    """
    verified = open_note(message, keys)
    checkpoint = Checkpoint.parse(verified.text)
    if origin is not None and checkpoint.origin != origin:
        raise WrongOriginError(f"checkpoint of {checkpoint.origin!r}, expected {origin!r}")
    raw = message.encode() if isinstance(message, str) else bytes(message)
    return VerifiedCheckpoint(checkpoint, verified.verified_by, raw)


# --- helpers -----------------------------------------------------------------------------


def _printable(text: str) -> bool:
    # Signed notes forbid ASCII control characters (below U+0020); lines cannot hold '\n'.
    return not any(ch < " " for ch in text)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): padded, and canonical, so that one value has
    exactly one encoding."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedNoteError(f"{what} is not valid base64") from None
    if _b64(data) != text:
        raise MalformedNoteError(f"{what} is not canonical base64")
    return data


def _algorithm_key(name: str, hex_id: str, key64: str) -> bytes:
    """The 32 key bytes of ``base64(0x01 ‖ key)``, after checking the name and id syntax."""
    if not is_valid_key_name(name):
        raise MalformedNoteError(f"invalid key name {name!r}")
    if not _HEX8.fullmatch(hex_id):
        raise MalformedNoteError("a key id is 8 hexadecimal digits")
    data = _unb64(key64, "the key")
    if len(data) != 33 or data[0] != ALG_ED25519:
        raise MalformedNoteError("not an Ed25519 key (algorithm byte 0x01 and 32 bytes)")
    return data[1:]


def _parse_signature_line(line: str) -> NoteSignature:
    if not line.startswith(_SIG_PREFIX):
        raise MalformedNoteError("a signature line starts with an em dash (U+2014) and a space")
    name, space, sig64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not space or not is_valid_key_name(name) or not sig64:
        raise MalformedNoteError("a signature line is '— <key name> <base64 signature>'")
    raw = _unb64(sig64, "the signature")
    if len(raw) < 5:
        raise MalformedNoteError("a signature is a 4-byte key id and at least one byte")
    return NoteSignature(name, raw[:4], raw[4:])


def _check_note_text(text: str) -> None:
    if not text.endswith("\n") or not _printable(text.replace("\n", "")):
        raise MalformedNoteError("note text must end in a newline and hold no control characters")


def log_of_origin(origin: str, prefix: str | None = None) -> str | None:
    """The log whose checkpoints have this origin (``log_origin(prefix, log)``), or None.

    The log is the part after the last ``/``, percent-decoded; only the canonical encoding
    is accepted, so that one log has one origin. Any prefix unless ``prefix`` is given.
    """
    head, slash, tail = origin.rpartition("/")
    if not slash or (prefix is not None and head != prefix):
        return None
    try:
        log = unquote(tail, errors="strict")
    except UnicodeDecodeError:
        return None
    return log if log and quote(log, safe="") == tail else None
