"""Text at the edges of the log: valid Unicode, header bytes read as text, and the column
form of a field.

- ``is_unicode``: a lone surrogate (``"\\ud800"``, which Python strings may hold, e.g. from
  ``json.loads``) is not Unicode text. Every entry point rejects it where the caller passed
  it (``ValidationError``, or ``QueryError`` for a filter).
- ``header_text``: an HTTP header value is bytes. It is read as UTF-8 when it is valid
  UTF-8 (what browsers and most clients send), otherwise as Latin-1 (ISO-8859-1, HTTP's
  historic charset): every byte becomes the character of the same number, so nothing is
  lost and the result never holds a lone surrogate. Captured metadata therefore never
  makes an event invalid.
- ``column_text``: the entry of an event keeps its text exactly (RFC 8785 escapes
  U+0000 as ``\\u0000``), but PostgreSQL ``text`` columns cannot hold U+0000. The indexed
  columns stored beside the entry hold the field with each U+0000 replaced by U+FFFD, on
  every backend alike (docs/format.md, "Stored columns").
"""

from __future__ import annotations

NUL = "\x00"
REPLACEMENT = "\ufffd"


def is_unicode(text: str) -> bool:
    """Whether ``text`` is valid Unicode: no lone surrogate (U+D800-U+DFFF), which no
    UTF-8 text, RFC 8785 entry or database column can hold."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")  # faster than a regex search, even when it fails
    except UnicodeEncodeError:
        return False
    return True


def is_column_text(text: str) -> bool:
    """Whether every backend can take ``text`` as a query parameter: valid Unicode,
    without U+0000 (which PostgreSQL refuses, failing the statement)."""
    return NUL not in text and is_unicode(text)


def header_text(raw: bytes) -> str:
    """A header value as text: UTF-8 when it decodes, else Latin-1 (see module doc)."""
    if raw.isascii():  # nearly every header: one fast pass
        return raw.decode("ascii")
    try:
        return raw.decode("utf-8")  # strict: encoded surrogates (ED A0 80) do not decode
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def column_text(value: str) -> str:
    """The column form of a text field: each U+0000 replaced by U+FFFD."""
    return value.replace(NUL, REPLACEMENT)
