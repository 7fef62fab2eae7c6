"""Quart, served by uvicorn, driven over real HTTP: the app.py docs/frameworks.md shows.

The app signs users in through its own session cookie, hands ``g.user`` to auditmw in
``before_request``, has a sync and an async ``@audited`` view, maps ``StoreError`` to the
503 and serves the admin app beside itself with ``auditmw.mount()``, which passes the
server's lifespan on to Quart (``while_serving`` opens and closes the store).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from quart import Quart
from quart.sessions import SecureCookieSessionInterface

from auditmw import EventFilter, open_store

from . import _sites
from ._servers import UvicornProcess
from ._sites import DOCS, empty_store, named_blocks, new_request_id, with_id, write_lock

APP = named_blocks("frameworks.md")["app.py"]
SECRET_KEY = "quart-test-secret"
USER_AGENT = "auditmw-test/quart"
USER_IDS = {"ann": "u-1", "bob": "u-2"}


def test_every_python_block_of_docs_frameworks_md_is_served_by_a_test() -> None:
    text = (DOCS / "frameworks.md").read_text(encoding="utf-8")
    assert text.count("```python") == len(named_blocks("frameworks.md"))  # none unnamed
    assert set(named_blocks("frameworks.md")) == {
        "mysite/settings.py",  # tests/test_integration_django.py
        "mysite/asgi.py",
        "mysite/views.py",
        "mysite/urls.py",
        "app.py",  # here
    }


class Site(_sites.Site):
    """The documented app served by uvicorn, and the store it writes."""

    user_agent = USER_AGENT

    async def start_session(self, client: httpx.AsyncClient, user: str | None) -> None:
        """Signed in through the app's /login as ``user`` when given."""
        if user is not None:
            form = {"email": f"{user}@example.com", "password": user}
            signed_in = await client.post("/login", data=form)
            assert signed_in.status_code == 200, signed_in.text
            assert "session" in client.cookies


@contextmanager
def serving(root: Path, store: str) -> Iterator[Site]:
    (root / "app.py").write_text(APP)
    env = {**os.environ, "SECRET_KEY": SECRET_KEY, "AUDIT_STORE": store}
    server = UvicornProcess("app:app", root, env)
    try:
        yield Site(server, store)
    finally:
        server.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("quart-app")
    with empty_store(request.param, root) as store, serving(root, store) as running:
        yield running


async def test_sign_in_and_a_sync_view_record_the_user_ip_user_agent_and_request_id(
    site: Site,
) -> None:
    signed_in, archived = new_request_id(), new_request_id()
    async with site.client() as client:
        response = await client.post(
            "/login",
            data={"email": "ann@example.com", "password": "ann"},
            headers=with_id(signed_in),
        )
        assert response.status_code == 200, response.text
        response = await client.post("/notes/1/archive", headers=with_id(archived))
    assert response.status_code == 200, response.text
    assert response.json() == {"archived": 1}
    assert response.headers["x-request-id"] == archived
    [sign_in] = await site.events_of(signed_in)
    assert (sign_in.action, sign_in.user_id, sign_in.user_email) == (
        "user.signed_in",
        "u-1",
        "ann@example.com",
    )
    [event] = await site.events_of(archived)
    assert (event.action, event.resource, event.resource_id, event.outcome) == (
        "note.archived",
        "note",
        "1",
        "success",
    )
    assert (event.user_id, event.user_email) == ("u-1", "ann@example.com")
    assert (event.ip_address, event.user_agent) == ("127.0.0.1", USER_AGENT)


async def test_a_sync_view_returning_an_error_status_tuple_is_a_failure(site: Site) -> None:
    request_id = new_request_id()
    async with site.client("bob") as bob:
        response = await bob.post("/notes/99/archive", headers=with_id(request_id))
    assert response.status_code == 404
    [event] = await site.events_of(request_id)
    assert (event.action, event.resource_id, event.outcome, event.user_id) == (
        "note.archived",
        "99",
        "failure",
        "u-2",
    )


async def test_an_async_view_records_the_user_and_abort_403_as_denied(site: Site) -> None:
    allowed, refused = new_request_id(), new_request_id()
    async with site.client("ann") as ann:
        response = await ann.delete("/notes/2", headers=with_id(allowed))
        assert response.status_code == 200, response.text
    async with site.client("bob") as bob:
        response = await bob.delete("/notes/2", headers=with_id(refused))
        assert response.status_code == 403
    [done] = await site.events_of(allowed)
    assert (done.action, done.resource_id, done.outcome, done.user_id) == (
        "note.deleted",
        "2",
        "success",
        "u-1",
    )
    [denied] = await site.events_of(refused)
    assert (denied.outcome, denied.user_id, denied.user_email) == (
        "denied",
        "u-2",
        "bob@example.com",
    )
    assert denied.details == {"error": "Forbidden", "status_code": 403}


async def test_anonymous_requests_carry_no_user(site: Site) -> None:
    archived, deleted = new_request_id(), new_request_id()
    async with site.client() as anonymous:
        assert (await anonymous.post("/notes/1/archive", headers=with_id(archived))).is_success
        assert (await anonymous.delete("/notes/1", headers=with_id(deleted))).status_code == 403
    for request_id in (archived, deleted):
        [event] = await site.events_of(request_id)
        assert (event.user_id, event.user_email, event.ip_address) == (None, None, "127.0.0.1")


async def test_the_admin_app_beside_quart_reads_the_quart_session(site: Site) -> None:
    archived = new_request_id()
    async with site.client("ann") as ann:
        await ann.post("/notes/2/archive", headers=with_id(archived))
        mount_point = await ann.get("/admin/audit")
        assert (mount_point.status_code, mount_point.headers["location"]) == (307, "audit/")
        page = await ann.get("/admin/audit/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        events = await ann.get("/admin/audit/events", params={"action": "note.archived"})
        assert events.status_code == 200, events.text
        assert archived in [e["request_id"] for e in events.json()["events"]]
    async with site.client("bob") as bob:
        forbidden = await bob.get("/admin/audit/events")
    async with site.client() as anonymous:
        unauthenticated = await anonymous.get("/admin/audit/events")
        quart_404 = await anonymous.get("/admin/auditor")  # not under the mount: Quart's
    assert (forbidden.status_code, forbidden.json()["error"]["code"]) == (403, "forbidden")
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "unauthenticated"
    assert quart_404.status_code == 404 and "error" not in quart_404.text


def session_cookie(secret_key: str, email: str) -> str:
    """A Quart session cookie for ``email``, signed with ``secret_key`` the way Quart
    signs its own."""
    signer = Quart(__name__)
    signer.secret_key = secret_key
    serializer = SecureCookieSessionInterface().get_signing_serializer(signer)
    assert serializer is not None
    return serializer.dumps({"email": email})


@pytest.mark.parametrize(
    ("cookie", "status"),
    [
        (session_cookie(SECRET_KEY, "ann@example.com"), 200),  # what Quart itself issues
        (session_cookie("another-key", "ann@example.com"), 401),  # forged
        (session_cookie(SECRET_KEY, "mallory@example.com"), 401),  # no such user
        ("eyJlbWFpbCI6ImFubkBleGFtcGxlLmNvbSJ9", 401),  # unsigned
        ("x" * 5000, 401),
    ],
    ids=["signed", "forged", "unknown-user", "unsigned", "huge"],
)
async def test_the_admin_app_grants_only_sessions_quart_signed(
    site: Site, cookie: str, status: int
) -> None:
    async with httpx.AsyncClient(base_url=site.server.base_url) as client:
        response = await client.get("/admin/audit/events", headers={"cookie": f"session={cookie}"})
    assert response.status_code == status, response.text


async def test_fail_closed_and_the_store_closed_by_quart_at_shutdown(tmp_path: Path) -> None:
    store = tmp_path / "audit.db"
    sync_id, async_id, after_id = new_request_id(), new_request_id(), new_request_id()
    with serving(tmp_path, str(store)) as site:
        async with site.client("ann") as ann:
            with write_lock(store):  # the store waits busy_timeout (5 s), then fails
                responses = await asyncio.gather(
                    ann.post("/notes/1/archive", headers=with_id(sync_id)),
                    ann.delete("/notes/1", headers=with_id(async_id)),
                )
            for response, request_id in zip(responses, (sync_id, async_id), strict=True):
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/json"
                assert response.json()["error"]["code"] == "audit_unavailable"
                assert response.headers["retry-after"] == "5"
                assert response.headers["x-request-id"] == request_id
            recovered = await ann.post("/notes/1/archive", headers=with_id(after_id))
            assert recovered.status_code == 200, recovered.text
        site.server.stop()
        # Quart's own lifespan ran (mount() passed it on): while_serving closed the store.
        assert any(re.search("Application shutdown complete", line) for line in site.server.log)
    async with open_store(store) as reopened:
        events = [e async for e in reopened.iter_events(EventFilter())]
        assert [e.request_id for e in events if e.action.startswith("note.")] == [after_id]
        assert (await reopened.verify()).ok
