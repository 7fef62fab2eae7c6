"""Personal data in entry format 2: salted commitments in the entry, openings beside it.

An entry of format 2 holds ``null`` where a personal value was, and commits to the value
in its ``commitments`` member: JSON Pointer (RFC 6901) -> ``hex(SHA-256(salt || v))``, where
``v`` is the value's RFC 8785 canonical JSON and ``salt`` 16 random bytes of its own. The
*openings* (pointer -> ``[salt hex, v as a JSON string]``) are stored beside the entry, in
an erasable column, never in the hashed bytes: erasing a person deletes openings, and the
entry, its hash, the chain and every Merkle proof stay as they were. Without its salt a
commitment tests no guess (a hash of an e-mail address alone would be personal data still).

``v`` is kept as the exact text that was hashed, inside a JSON string: a verifier hashes
those bytes as they are (no number is parsed and written again), and the openings of an
export line hold no quote that is not escaped (see docs/format.md).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from auditmw._canonical import canonical_json

FORMAT = 2
# The top-level fields committed when they hold a value; their pointers.
PERSONAL_FIELDS = ("ip_address", "user_agent", "user_email")
FIELD_POINTERS = {name: "/" + name for name in PERSONAL_FIELDS}
POINTER_FIELDS = {pointer: name for name, pointer in FIELD_POINTERS.items()}
SALT_BYTES = 16
# ``details`` members (at any depth) whose key, lowercased, is one of these are committed.
DEFAULT_PERSONAL_KEYS = frozenset(
    {
        "email",
        "email_address",
        "name",
        "first_name",
        "last_name",
        "full_name",
        "display_name",
        "username",
        "phone",
        "phone_number",
        "mobile",
        "address",
        "street",
        "postal_code",
        "zip_code",
        "birth_date",
        "date_of_birth",
        "ip",
        "ip_address",
    }
)
# Resources that are a person: where the subject of an entry is the erased user (resource
# one of these, resource_id the user id), its personal details are erased too.
PERSON_RESOURCES = ("user",)
ERASED_ACTION = "audit.erased"
ERASED_RESOURCE = "user"
ERASED_MARK = "[erased]"  # how CSV and pages show an erased value


def escape_token(key: str) -> str:
    """A key as a JSON Pointer reference token (RFC 6901: ``~`` -> ``~0``, ``/`` -> ``~1``)."""
    if "~" in key or "/" in key:
        return key.replace("~", "~0").replace("/", "~1")
    return key


def pointer_tokens(pointer: str) -> list[str]:
    """The reference tokens of a JSON Pointer, unescaped; ``ValueError`` for a bad one."""
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer[:60]!r} is not a JSON Pointer")
    return [token.replace("~1", "/").replace("~0", "~") for token in pointer[1:].split("/")]


def is_field_pointer(pointer: str) -> bool:
    """Whether ``pointer`` is one of the committed top-level fields (not a detail)."""
    return pointer in POINTER_FIELDS


def redact_details(
    details: dict[str, Any], keys: frozenset[str]
) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """``details`` with each personal member (non-null, key in ``keys``) null, and those
    members as (pointer, value); the input is not changed."""
    found: list[tuple[str, Any]] = []
    redacted = _redact(details, keys, "/details", found)
    return redacted, found


def _redact(value: Any, keys: frozenset[str], pointer: str, found: list[tuple[str, Any]]) -> Any:
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            at = pointer + "/" + escape_token(key)
            if item is not None and key.lower() in keys:
                found.append((at, item))
                result[key] = None
            else:
                result[key] = _redact(item, keys, at, found)
        return result
    if isinstance(value, list | tuple):
        return [_redact(item, keys, f"{pointer}/{i}", found) for i, item in enumerate(value)]
    return value


def commit(values: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    """The canonical ``commitments`` object and the openings (JSON) of ``values``, each
    (pointer, canonical JSON bytes of the value); one ``urandom`` call for all salts.
    (On every append: written for speed, one orjson call per object.)"""
    salts = os.urandom(SALT_BYTES * len(values))
    salts_hex = salts.hex()
    sha256 = hashlib.sha256
    commitments: dict[str, str] = {}
    openings: dict[str, list[str]] = {}
    for index, (pointer, canonical) in enumerate(values):
        at = index * SALT_BYTES
        commitments[pointer] = sha256(salts[at : at + SALT_BYTES] + canonical).hexdigest()
        openings[pointer] = [salts_hex[2 * at : 2 * (at + SALT_BYTES)], canonical.decode()]
    # Pointers are plain str; JCS sorts by UTF-16 code units, orjson by code points: the
    # same order unless a key lies beyond the BMP (then the reference writer).
    fast = all(pointer.isascii() for pointer in commitments)
    return canonical_json(commitments, fast=fast), orjson.dumps(openings)


def commitment_of(salt_hex: str, canonical: str) -> str | None:
    """The commitment an opening gives, or None when its salt is not hex."""
    try:
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return None
    return hashlib.sha256(salt + canonical.encode("utf-8", "surrogatepass")).hexdigest()


def parse_openings(personal: object) -> dict[str, Any]:
    """The openings stored in a row's ``personal`` column (JSON text, bytes or None); an
    unreadable column reads as no openings (``verify`` reports what it cannot open)."""
    if personal is None:
        return {}
    try:
        openings = orjson.loads(personal)  # type: ignore[arg-type]
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return openings if isinstance(openings, dict) else {}


def opened_value(opening: object) -> tuple[bool, Any]:
    """(True, value) of a well-formed opening ``[salt hex, canonical JSON text]``."""
    if (
        isinstance(opening, list)
        and len(opening) == 2
        and isinstance(opening[0], str)
        and isinstance(opening[1], str)
    ):
        try:
            return True, orjson.loads(opening[1])
        except orjson.JSONDecodeError:
            pass
    return False, None


def open_entry(
    data: dict[str, Any], commitments: Mapping[str, Any], openings: Mapping[str, Any]
) -> tuple[str, ...]:
    """Put each opened value back into the parsed entry ``data`` (in place); returns the
    pointers whose opening is gone (erased), sorted."""
    erased = []
    for pointer in commitments:  # (on every read: the common cases first)
        opening = openings.get(pointer)
        if opening is None:
            erased.append(pointer)
            continue
        ok, value = opened_value(opening)
        if not ok:
            erased.append(pointer)
        elif pointer in POINTER_FIELDS:
            data[POINTER_FIELDS[pointer]] = value
        else:
            place(data, pointer, value)
    return tuple(sorted(erased)) if erased else ()


def place(data: dict[str, Any], pointer: str, value: Any) -> None:
    """Set the member at ``pointer`` in ``data`` (its parents exist: they held null)."""
    tokens = pointer_tokens(pointer)
    target: Any = data
    for token in tokens[:-1]:
        target = target[int(token)] if isinstance(target, list) else target[token]
    last = tokens[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value


def marked_details(details: Any, erased: Iterable[str]) -> Any:
    """A copy of ``details`` with ``ERASED_MARK`` at each erased detail pointer (for
    people: CSV cells, pages); ``details`` itself when none of it was erased."""
    pointers = [pointer for pointer in erased if pointer.startswith("/details/")]
    if not pointers or not isinstance(details, dict):
        return details
    marked = {"details": orjson.loads(orjson.dumps(details))}
    for pointer in pointers:
        try:
            place(marked, pointer, ERASED_MARK)
        except (KeyError, IndexError, ValueError, TypeError):
            continue  # not where the entry had it (changed behind the library's back)
    return marked["details"]


def field_name(pointer: str) -> str:
    """What an erasure counts a pointer as: the field, or ``details.<key>`` (the key, not
    the path: a path may run through keys that are data)."""
    if pointer in POINTER_FIELDS:
        return POINTER_FIELDS[pointer]
    return "details." + pointer_tokens(pointer)[-1].lower()


def openings_text(openings: Mapping[str, Any]) -> str | None:
    """The ``personal`` column for ``openings``: JSON text, None when there are none."""
    return orjson.dumps(dict(openings)).decode() if openings else None


def personal_keys(keys: Iterable[str]) -> frozenset[str]:
    """Keys as matched: lowercased; ``ValueError`` unless each is a non-empty string."""
    result = set()
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValueError(f"personal keys must be non-empty strings, not {key!r}")
        result.add(key.lower())
    return frozenset(result)
