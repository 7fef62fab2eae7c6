"""Ready-made events for the actions most applications audit.

The action names are the ones most applications audit. Each is one
``audit()`` call, so the actor, IP, user agent and request id come from the current
request (or ``acting_as``), and each returns what ``audit()`` returns::

    from auditmw import actions, diff

    await actions.resource_updated("project", project.id, diff(before, project))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from auditmw._event import Event
from auditmw._record import ResourceId, audit


async def user_signed_in(user_id: str, user_email: str | None = None) -> Event | None:
    """``user.signed_in`` on ``session``. The user is named here: at sign-in the request
    is not authenticated yet."""
    return await audit("user.signed_in", "session", user_id=user_id, user_email=user_email)


async def user_signed_out(
    user_id: str | None = None, user_email: str | None = None
) -> Event | None:
    """``user.signed_out`` on ``session``, by the request's user unless one is named."""
    return await audit("user.signed_out", "session", user_id=user_id, user_email=user_email)


async def resource_created(
    resource: str, resource_id: ResourceId, details: Mapping[str, Any] | None = None
) -> Event | None:
    """``<resource>.created``."""
    return await audit(f"{resource}.created", resource, resource_id, details)


async def resource_updated(
    resource: str,
    resource_id: ResourceId,
    changes: Mapping[str, Any],
    *,
    skip_if_unchanged: bool = False,
) -> Event | None:
    """``<resource>.updated`` with ``details["changes"]`` (``diff(before, after)``).

    With ``skip_if_unchanged=True`` an update that changed nothing records nothing.
    """
    return await audit(
        f"{resource}.updated",
        resource,
        resource_id,
        changes=changes,
        skip_if_unchanged=skip_if_unchanged,
    )


async def resource_deleted(resource: str, resource_id: ResourceId) -> Event | None:
    """``<resource>.deleted``."""
    return await audit(f"{resource}.deleted", resource, resource_id)


async def permission_changed(target_user_id: str, old_role: str, new_role: str) -> Event | None:
    """``permission.changed`` on the ``user`` whose role changed, with both roles."""
    return await audit(
        "permission.changed",
        "user",
        target_user_id,
        {"old_role": old_role, "new_role": new_role},
    )


async def api_key_created(key_id: str) -> Event | None:
    """``api_key.created``: the key's id, never the key itself."""
    return await audit("api_key.created", "api_key", key_id)


async def export_requested(export_type: str) -> Event | None:
    """``export.requested`` with the export type (``details["type"]``)."""
    return await audit("export.requested", "export", details={"type": export_type})
