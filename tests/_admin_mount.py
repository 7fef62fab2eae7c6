"""Where the admin app tests mount the admin app, and the Basic challenge they give it."""

from __future__ import annotations

MOUNT = "/admin/audit"
CHALLENGE = 'Basic realm="audit"'
