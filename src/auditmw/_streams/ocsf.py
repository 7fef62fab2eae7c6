"""The OCSF format (``--format ocsf``): each event as an OCSF 1.3.0 event of one of three
classes, chosen by its action (docs/streams.md has the table):

- Authentication (3002) for signing in and out (``user.sign_in``, ``user.sign_in_failed``,
  ``auth.login``, ``user.sign_out``, ...);
- Account Change (3001) for passwords, roles, permissions, API keys, MFA and the
  lifecycle of users and accounts;
- API Activity (6003) for everything else (a resource created, read, updated, deleted).

``ocsf_record`` is the mapping; ``formats.OcsfFormat`` the format that uses it. The
record keeps the whole native record (the JSON Lines export's line, ``formats``)
under ``unmapped.auditmw``: a receiver de-duplicates by ``metadata.uid`` (the event's id)
and checks the chain and each hash from it, as for the native format.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson

from auditmw._event import Event
from auditmw._stores.jsonl import jsonl_line

OCSF_VERSION = "1.3.0"

AUTHENTICATION = 3002
ACCOUNT_CHANGE = 3001
API_ACTIVITY = 6003

try:
    PRODUCT_VERSION = version("auditmw")
except PackageNotFoundError:  # run from a source tree that is not installed
    PRODUCT_VERSION = "unknown"

# Activity ids, by the words of an action (its dotted parts split on "_" and "-").
_LOGON = {"sign_in", "signin", "login", "log_in", "logon"}
_LOGOFF = {"sign_out", "signout", "logout", "log_out", "logoff"}
_ACCOUNT_WORDS = {
    "password",
    "role",
    "roles",
    "permission",
    "permissions",
    "api_key",
    "apikey",
    "mfa",
    "2fa",
    "totp",
    "account",
}
_ACCOUNT_RESOURCES = {"user", "users", "account", "accounts"}
_CREATE = {"create", "created", "add", "added", "new", "register", "registered", "invite"}
_READ = {"read", "view", "viewed", "get", "list", "listed", "export", "exported", "search"}
_UPDATE = {"update", "updated", "change", "changed", "edit", "edited", "set", "modify"}
_DELETE = {"delete", "deleted", "remove", "removed", "destroy", "destroyed", "purge"}
_ATTACH = {"grant", "granted", "assign", "assigned", "attach", "attached"}
_DETACH = {"revoke", "revoked", "unassign", "unassigned", "detach", "detached"}
_ENABLE = {"enable", "enabled", "activate", "activated", "unlock", "unlocked"}
_DISABLE = {"disable", "disabled", "deactivate", "deactivated", "suspend", "suspended"}
_LOCK = {"lock", "locked"}
_RESET = {"reset"}

_WORD = re.compile(r"[a-z0-9]+")

# outcome -> (status_id, status, severity_id)
_STATUS = {
    "success": (1, "Success", 1),  # Informational
    "failure": (2, "Failure", 2),  # Low
    "denied": (2, "Failure", 3),  # Medium: refused by a policy
}


def _words(action: str) -> set[str]:
    """The words of ``action``, single and adjacent pairs joined by "_" (so
    ``user.sign_in_failed`` has ``sign_in`` and ``api-key.created`` has ``api_key``)."""
    single = _WORD.findall(action.lower())
    pairs = {f"{a}_{b}" for a, b in itertools.pairwise(single)}
    return set(single) | pairs


def classify(action: str, resource: str) -> tuple[int, int]:
    """``(class_uid, activity_id)`` of an event with ``action`` on ``resource``."""
    words = _words(action)
    if words & _LOGON:
        return AUTHENTICATION, 1
    if words & _LOGOFF:
        return AUTHENTICATION, 2
    if words & _ACCOUNT_WORDS or resource.lower() in _ACCOUNT_RESOURCES:
        lifecycle = resource.lower() in _ACCOUNT_RESOURCES or "account" in words
        return ACCOUNT_CHANGE, _account_activity(words, lifecycle=lifecycle)
    return API_ACTIVITY, _api_activity(words)


def _account_activity(words: set[str], *, lifecycle: bool) -> int:
    """The activity of an Account Change; ``lifecycle``: the account itself changed
    (created, deleted, locked...), not one of its keys or grants."""
    if "password" in words:
        return 4 if words & _RESET else 3  # Password Reset, Password Change
    if words & {"mfa", "2fa", "totp"}:
        if words & _ENABLE or words & _CREATE:
            return 10  # MFA Factor Enable
        if words & _DISABLE or words & _DELETE:
            return 11  # MFA Factor Disable
    if words & {"role", "roles", "permission", "permissions"}:
        if words & _ATTACH:
            return 7  # Attach Policy
        if words & _DETACH:
            return 8  # Detach Policy
    if lifecycle:
        for activity, verbs in (
            (1, _CREATE),
            (6, _DELETE),
            (9, _LOCK),
            (2, _ENABLE),
            (5, _DISABLE),
        ):
            if words & verbs:
                return activity
    return 99  # Other: e.g. an API key created or revoked


def _api_activity(words: set[str]) -> int:
    for activity, verbs in ((1, _CREATE), (2, _READ), (3, _UPDATE), (4, _DELETE)):
        if words & verbs:
            return activity
    return 99  # Other


def _epoch_ms(timestamp: str) -> int:
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


def _user(user_id: str | None, email: str | None) -> dict[str, Any]:
    user: dict[str, Any] = {}
    if user_id is not None:
        user["uid"] = user_id
    if email is not None:
        user["email_addr"] = email
        user["name"] = email
    if not user:
        user = {"name": "unknown", "type_id": 0}  # an anonymous request, or the system
    return user


def ocsf_record(event: Event) -> dict[str, Any]:
    """``event`` as an OCSF 1.3.0 event (see the module docstring)."""
    class_uid, activity_id = classify(event.action, event.resource)
    status_id, status, severity_id = _STATUS.get(event.outcome, (0, "Unknown", 0))
    actor = _user(event.user_id, event.user_email)
    record: dict[str, Any] = {
        "class_uid": class_uid,
        "category_uid": class_uid // 1000,
        "activity_id": activity_id,
        "type_uid": class_uid * 100 + activity_id,
        "time": _epoch_ms(event.timestamp),
        "severity_id": severity_id,
        "status_id": status_id,
        "status": status,
        "message": event.action,
        "actor": {"user": actor},
        "metadata": {
            "version": OCSF_VERSION,
            "product": {
                "name": "auditmw",
                "vendor_name": "auditmw",
                "version": PRODUCT_VERSION,
            },
            "uid": event.id,
            "log_name": event.log,
            "sequence": event.seq,
            "original_time": event.timestamp,
        },
        "unmapped": {"auditmw": orjson.loads(jsonl_line(event))},
    }
    if event.outcome != "success":
        record["status_detail"] = event.outcome
    if event.request_id is not None:
        record["metadata"]["correlation_uid"] = event.request_id
    if event.ip_address is not None:
        record["src_endpoint"] = {"ip": event.ip_address}
    if event.user_agent is not None:
        record["http_request"] = {"user_agent": event.user_agent}
    if class_uid == AUTHENTICATION:
        record["user"] = actor
        # Required (or a dst_endpoint): what was signed in to, the audited service, which
        # the event names only by its log.
        record["service"] = {"name": event.log}
    elif class_uid == ACCOUNT_CHANGE:
        is_user = event.resource.lower() in _ACCOUNT_RESOURCES and event.resource_id
        record["user"] = {"uid": event.resource_id} if is_user else actor
    else:
        record["api"] = {"operation": event.action}
        resource: dict[str, Any] = {"type": event.resource, "name": event.resource}
        if event.resource_id is not None:
            resource["uid"] = event.resource_id
        record["resources"] = [resource]
        # Required by the class: an event made without a request has no address.
        record.setdefault("src_endpoint", {"name": "unknown"})
    return record
