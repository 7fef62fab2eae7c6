"""Request validation shared by both frameworks: bad input is a 400/422 JSON error.

Handlers raise ``ApiError``; each app turns it into
``{"error": {"code": ..., "message": ...}}`` with its status. It has a ``status_code``,
so an ``@audited`` handler that raises it records outcome ``failure`` (``denied`` for
401/403) with ``details = {"error": "ApiError", "status_code": ...}``.

Text must be valid Unicode: JSON lets a client send a lone surrogate (``"\\ud800"``, also
as raw bytes, which ``json.loads`` accepts), which no database column, UTF-8 encoder or
audit log can hold. It is a 422 naming the field, before anything is stored.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from .db import ROLES

MAX_NAME = 200
MAX_DESCRIPTION = 2000
MAX_EMAIL = 320
MAX_PASSWORD = 1024
RETRY_AFTER_SECONDS = 5  # the Retry-After of a 503
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
PROJECT_FIELDS = ("name", "description")


class ApiError(Exception):
    def __init__(
        self, status_code: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


def unauthenticated() -> ApiError:
    return ApiError(401, "unauthenticated", "Sign in first (HTTP Basic, a session or an API key).")


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"No such {what}.")


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def unavailable(code: str, message: str) -> ApiError:
    """A 503: the request changed nothing and may be retried."""
    headers = {"retry-after": str(RETRY_AFTER_SECONDS)}
    return ApiError(503, code, f"{message} Try again later.", headers)


def json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object: 400 when it is not JSON, 422 when not an object."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "malformed_json", "The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise invalid("The request body must be a JSON object.")
    return data


def form_or_json(content_type: str, body: bytes) -> dict[str, Any]:
    """A JSON body, or an HTML form (``application/x-www-form-urlencoded``)."""
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True))
        except UnicodeDecodeError:
            raise ApiError(400, "malformed_form", "The form is not valid UTF-8.") from None
    return json_object(body)


def _text(data: dict[str, Any], field: str, *, max_chars: int, required: bool) -> str | None:
    if field not in data:
        if required:
            raise invalid(f"{field!r} is required.")
        return None
    value = data[field]
    if not isinstance(value, str):
        raise invalid(f"{field!r} must be a string.")
    if required and not value.strip():
        raise invalid(f"{field!r} must not be empty.")
    if len(value) > max_chars:
        raise invalid(f"{field!r} is longer than {max_chars} characters.")
    if _LONE_SURROGATE.search(value):
        raise invalid(f"{field!r} is not valid Unicode text (it holds a lone surrogate).")
    return value


def credentials(data: dict[str, Any]) -> tuple[str, str]:
    """``email`` and ``password`` of a sign-in."""
    email = _text(data, "email", max_chars=MAX_EMAIL, required=True)
    password = _text(data, "password", max_chars=MAX_PASSWORD, required=True)
    assert email is not None and password is not None
    return email.strip().lower(), password


def attempted_email(data: dict[str, Any]) -> str | None:
    """The email a sign-in names, as the audit log can record it even when ``credentials``
    refused the request: each lone surrogate replaced by U+FFFD (as a form's undecodable
    bytes already are), cut to ``MAX_EMAIL`` characters. None when it names no email."""
    email = data.get("email")
    if not isinstance(email, str) or not email.strip():
        return None
    return _LONE_SURROGATE.sub("\ufffd", email.strip().lower()[:MAX_EMAIL])


def new_project(data: dict[str, Any]) -> tuple[str, str]:
    """``name`` (required) and ``description`` (default empty) of a new project."""
    _no_unknown_fields(data, PROJECT_FIELDS)
    name = _text(data, "name", max_chars=MAX_NAME, required=True)
    description = _text(data, "description", max_chars=MAX_DESCRIPTION, required=False)
    assert name is not None
    return name, description or ""


def project_patch(data: dict[str, Any]) -> dict[str, str]:
    """The fields a PATCH sets: any of ``name`` and ``description``."""
    _no_unknown_fields(data, PROJECT_FIELDS)
    patch: dict[str, str] = {}
    name = _text(data, "name", max_chars=MAX_NAME, required=False)
    if name is not None:
        if not name.strip():
            raise invalid("'name' must not be empty.")
        patch["name"] = name
    description = _text(data, "description", max_chars=MAX_DESCRIPTION, required=False)
    if description is not None:
        patch["description"] = description
    return patch


def role(data: dict[str, Any]) -> str:
    value = data.get("role")
    if value not in ROLES:
        raise invalid(f"'role' must be one of {', '.join(ROLES)}.")
    return str(value)


def api_key_name(data: dict[str, Any]) -> str:
    _no_unknown_fields(data, ("name",))
    return _text(data, "name", max_chars=MAX_NAME, required=False) or "unnamed"


def _no_unknown_fields(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:  # a typo ("nmae") must not look like a successful no-op
        raise invalid(f"Unknown field(s): {', '.join(map(repr, unknown))}.")
