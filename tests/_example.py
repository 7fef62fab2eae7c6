"""The example app (example_app/) as its tests use it: its two versions and the demo
accounts it seeds (example_app/db.py), as Basic auth pairs and as a sign-in form."""

from __future__ import annotations

from example_app.db import DEMO_USERS

FRAMEWORKS = ["starlette", "litestar"]  # example_app/app.py and example_app/litestar_app.py

_BY_ROLE = {role: (email, password) for email, password, role in DEMO_USERS}
ADMIN = _BY_ROLE["admin"]  # (email, password): httpx's auth=
MEMBER = _BY_ROLE["member"]


def sign_in_form(account: tuple[str, str]) -> dict[str, str]:
    """What the sign-in page posts for ``account`` (as a form or as JSON)."""
    email, password = account
    return {"email": email, "password": password}
