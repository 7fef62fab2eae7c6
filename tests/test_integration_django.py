"""Django through its own ASGI handler, served by uvicorn, driven over real HTTP.

The project is the one docs/frameworks.md shows (its settings' MIDDLEWARE, asgi.py,
views.py and urls.py are taken from the page as they stand) plus what a test needs: a
database, two users (ann is staff, bob is not), a login template and a few extra views.
Django's settings are process-wide, so each server is its own process; the test signs
in through Django's login view (CSRF included), as a browser does, and reads the events
from the store the server wrote.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from auditmw import EventFilter, open_store

from . import _sites
from ._servers import UvicornProcess
from ._sites import empty_store, named_blocks, new_request_id, write_lock

DOC_FILES = named_blocks("frameworks.md")
USER_AGENT = "auditmw-test/django"

BASE_SETTINGS = """\
import os
from pathlib import Path

SECRET_KEY = "test-only-" + "x" * 50
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
]
ROOT_URLCONF = "testurls"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DJANGO_DB"]}
}
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [Path(__file__).resolve().parent.parent / "templates"],
    }
]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast sign-ins
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
"""

# Views a test needs beyond the documented ones: a class-based view, and one that waits
# for the test (a connection to its gate) so that the server can be stopped mid-request.
TEST_URLS = """\
import os
import socket

from django.contrib.auth.views import LogoutView
from django.http import JsonResponse
from django.urls import path
from django.views import View

import auditmw
from mysite.urls import urlpatterns as site_urls


class InvoiceArchive(View):
    @auditmw.audited("invoice.archived", "invoice", resource_id="invoice_id")
    async def post(self, request, invoice_id):
        return JsonResponse({"archived": invoice_id})


@auditmw.audited("invoice.held", "invoice", resource_id="invoice_id")
def hold_invoice(request, invoice_id):
    gate = ("127.0.0.1", int(os.environ["TEST_GATE_PORT"]))
    with socket.create_connection(gate) as connection:
        connection.recv(1)  # the test answers once the server is shutting down
    return JsonResponse({"held": invoice_id})


urlpatterns = [
    *site_urls,
    path("accounts/logout/", LogoutView.as_view(next_page="/accounts/login/")),
    path("invoices/<int:invoice_id>/archive", InvoiceArchive.as_view()),
    path("invoices/<int:invoice_id>/hold", hold_invoice),
]
"""

# A server started with TEST_EXTRA_MIDDLEWARE gets these after the documented ones.
EXTRA_MIDDLEWARE = """
MIDDLEWARE += [name for name in os.environ.get("TEST_EXTRA_MIDDLEWARE", "").split(",") if name]
"""

# An old-style middleware that can only run sync: listed after AuditUserMiddleware, it
# makes Django run AuditUserMiddleware in sync mode, in its worker thread.
SYNC_ONLY_MIDDLEWARE = """\
class SyncOnly:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)
"""

LOGIN_TEMPLATE = '<form method="post">{% csrf_token %}{{ form }}</form>\n'

SETUP_DATABASE = """\
import json

import django

django.setup()
from django.contrib.auth.models import User
from django.core.management import call_command

call_command("migrate", verbosity=0)
ann = User.objects.create_user("ann", "ann@example.com", "ann-password", is_staff=True)
bob = User.objects.create_user("bob", "bob@example.com", "bob-password")
print(json.dumps({"ann": ann.pk, "bob": bob.pk}))
"""


class Project:
    """The documented project on disk, with its Django database and users."""

    def __init__(self, root: Path) -> None:
        self.root = root
        site = root / "mysite"
        site.mkdir(parents=True)
        (site / "__init__.py").write_text("")
        settings = BASE_SETTINGS + "\n" + DOC_FILES["mysite/settings.py"] + EXTRA_MIDDLEWARE
        (site / "settings.py").write_text(settings)
        (root / "syncmiddleware.py").write_text(SYNC_ONLY_MIDDLEWARE)
        for name in ("asgi.py", "views.py", "urls.py"):
            (site / name).write_text(DOC_FILES[f"mysite/{name}"])
        (root / "testurls.py").write_text(TEST_URLS)
        (root / "templates" / "registration").mkdir(parents=True)
        (root / "templates" / "registration" / "login.html").write_text(LOGIN_TEMPLATE)
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "mysite.settings",
            "DJANGO_DB": str(root / "django.sqlite3"),
            "PYTHONPATH": str(root),
        }
        setup = subprocess.run(
            [sys.executable, "-c", SETUP_DATABASE],
            cwd=root,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        self.user_ids = {name: str(pk) for name, pk in json.loads(setup.stdout).items()}

    @contextmanager
    def serving(self, store: str, **env: str) -> Iterator[UvicornProcess]:
        server = UvicornProcess(
            "mysite.asgi:application", self.root, {**self.env, "AUDIT_STORE": store, **env}
        )
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return Project(tmp_path_factory.mktemp("django-project"))


class Site(_sites.Site):
    """The project's server and the store it writes."""

    user_agent = USER_AGENT

    def __init__(self, project: Project, server: UvicornProcess, store: str) -> None:
        super().__init__(server, store)
        self.project = project

    async def start_session(self, client: httpx.AsyncClient, user: str | None) -> None:
        """Django's CSRF cookie (from the login form) and, for ``user``, a signed-in
        session."""
        form = await client.get("/accounts/login/")
        assert form.status_code == 200, form.text
        if user is not None:
            signed_in = await client.post(
                "/accounts/login/",
                data={
                    "username": user,
                    "password": f"{user}-password",
                    "csrfmiddlewaretoken": client.cookies["csrftoken"],
                },
            )
            assert signed_in.status_code == 302, signed_in.text  # to LOGIN_REDIRECT_URL
            assert "sessionid" in client.cookies


def posting(client: httpx.AsyncClient, request_id: str) -> dict[str, str]:
    """Headers for a POST through Django's CSRF check, with our request id."""
    return {"x-csrftoken": client.cookies["csrftoken"], "x-request-id": request_id}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest, project: Project, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("django-store")
    with empty_store(request.param, directory) as store, project.serving(store) as server:
        yield Site(project, server, store)


async def test_a_sync_view_records_the_django_user_ip_user_agent_and_request_id(
    site: Site,
) -> None:
    request_id = new_request_id()
    async with site.client("ann") as ann:
        response = await ann.post(
            "/invoices/7/pay", data={"amount": "12.50"}, headers=posting(ann, request_id)
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"paid": 7}
    assert response.headers["x-request-id"] == request_id
    [event] = await site.events_of(request_id)
    assert (event.action, event.resource, event.resource_id, event.outcome) == (
        "invoice.paid",
        "invoice",
        "7",
        "success",
    )
    assert event.details == {"amount": "12.50"}
    assert (event.user_id, event.user_email) == (site.project.user_ids["ann"], "ann@example.com")
    assert (event.ip_address, event.user_agent) == ("127.0.0.1", USER_AGENT)


async def test_an_async_view_records_the_django_user_and_permission_denied(site: Site) -> None:
    allowed, refused = new_request_id(), new_request_id()
    async with site.client("ann") as ann:
        response = await ann.post("/invoices/8/refund", headers=posting(ann, allowed))
        assert response.status_code == 200, response.text
    async with site.client("bob") as bob:
        response = await bob.post("/invoices/8/refund", headers=posting(bob, refused))
        assert response.status_code == 403
    [done] = await site.events_of(allowed)
    assert (done.action, done.resource_id, done.outcome) == ("invoice.refunded", "8", "success")
    assert (done.user_id, done.user_email) == (site.project.user_ids["ann"], "ann@example.com")
    assert done.request_id == allowed and done.ip_address == "127.0.0.1"
    [denied] = await site.events_of(refused)
    assert (denied.action, denied.outcome) == ("invoice.refunded", "denied")
    assert denied.details == {"error": "PermissionDenied", "status_code": 403}
    assert (denied.user_id, denied.user_email) == (site.project.user_ids["bob"], "bob@example.com")


async def test_anonymous_requests_carry_no_user(site: Site) -> None:
    request_id = new_request_id()
    async with site.client() as anonymous:
        response = await anonymous.post(
            "/invoices/9/pay", data={"amount": "1"}, headers=posting(anonymous, request_id)
        )
    assert response.status_code == 200, response.text
    [event] = await site.events_of(request_id)
    assert (event.user_id, event.user_email) == (None, None)
    assert (event.ip_address, event.user_agent) == ("127.0.0.1", USER_AGENT)


async def test_a_class_based_view_method_is_audited_with_its_url_parameter(site: Site) -> None:
    request_id = new_request_id()
    async with site.client("bob") as bob:
        response = await bob.post("/invoices/10/archive", headers=posting(bob, request_id))
    assert response.status_code == 200, response.text
    [event] = await site.events_of(request_id)
    assert (event.action, event.resource_id, event.user_id) == (
        "invoice.archived",
        "10",
        site.project.user_ids["bob"],
    )


async def test_a_request_django_refuses_before_the_view_records_nothing(site: Site) -> None:
    request_id = new_request_id()
    async with site.client("ann") as ann:
        no_csrf = await ann.post("/invoices/11/pay", headers={"x-request-id": request_id})
        wrong_method = await ann.get("/invoices/11/pay", headers={"x-request-id": request_id})
    assert (no_csrf.status_code, wrong_method.status_code) == (403, 405)
    assert await site.events_of(request_id) == []


async def test_the_admin_app_beside_django_reads_django_sessions(site: Site) -> None:
    paid = new_request_id()
    async with site.client("ann") as ann:
        await ann.post("/invoices/12/pay", data={"amount": "5"}, headers=posting(ann, paid))
        mount_point = await ann.get("/admin/audit")
        assert (mount_point.status_code, mount_point.headers["location"]) == (307, "audit/")
        page = await ann.get("/admin/audit/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        events = await ann.get("/admin/audit/events", params={"resource_id": "12"})
        assert events.status_code == 200, events.text
        assert [e["request_id"] for e in events.json()["events"]] == [paid]
        export_id = new_request_id()
        export = await ann.get("/admin/audit/export.jsonl", headers={"x-request-id": export_id})
        assert export.status_code == 200
    [exported] = await site.events_of(export_id)
    assert (exported.action, exported.user_id) == ("export.requested", site.project.user_ids["ann"])
    async with site.client("bob") as bob:
        forbidden = await bob.get("/admin/audit/events")
    async with site.client() as anonymous:
        unauthenticated = await anonymous.get("/admin/audit/events")
        page_for_nobody = await anonymous.get("/admin/audit/")
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["error"]["code"] == "unauthenticated"
    assert page_for_nobody.status_code == 401


@pytest.mark.parametrize(
    "cookie",
    [
        "0123456789abcdefghijklmnopqrstuv",  # well formed, never issued
        "x" * 5000,
        "../../etc/passwd",
        "\u00e9t\u00e9",
    ],
)
async def test_the_admin_app_denies_a_session_cookie_django_never_issued(
    site: Site, cookie: str
) -> None:
    headers = {"cookie": f"sessionid={cookie}".encode()}
    async with httpx.AsyncClient(base_url=site.server.base_url) as client:
        response = await client.get("/admin/audit/events", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_a_session_signed_out_in_django_no_longer_opens_the_admin_app(site: Site) -> None:
    async with site.client("ann") as ann, httpx.AsyncClient(base_url=site.server.base_url) as copy:
        copied = {"cookie": f"sessionid={ann.cookies['sessionid']}"}
        assert (await copy.get("/admin/audit/events", headers=copied)).status_code == 200
        signed_out = await ann.post(
            "/accounts/logout/", headers={"x-csrftoken": ann.cookies["csrftoken"]}
        )
        assert signed_out.status_code == 302
        after = await copy.get("/admin/audit/events", headers=copied)
    assert after.status_code == 401


def test_import_auditmw_imports_neither_django_nor_quart() -> None:
    """Both are optional: only ``auditmw.django`` (and the app's own code) imports them."""
    check = (
        "import sys, auditmw; "
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'django', 'quart'}); "
        "print(loaded)"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


# --- failures and shutdown: servers of their own -----------------------------------------


async def test_fail_closed_a_store_that_cannot_write_answers_503_for_sync_and_async_views(
    project: Project, tmp_path: Path
) -> None:
    store = tmp_path / "audit.db"
    with project.serving(str(store)) as server:
        site = Site(project, server, str(store))
        sync_id, async_id, after_id = new_request_id(), new_request_id(), new_request_id()
        async with site.client("ann") as ann:
            with write_lock(store):  # the store waits busy_timeout (5 s), then fails
                responses = await asyncio.gather(
                    ann.post("/invoices/13/pay", headers=posting(ann, sync_id)),
                    ann.post("/invoices/13/refund", headers=posting(ann, async_id)),
                )
            for response, request_id in zip(responses, (sync_id, async_id), strict=True):
                assert response.status_code == 503, response.text
                assert response.headers["content-type"] == "application/json"
                assert response.json()["error"]["code"] == "audit_unavailable"
                assert response.headers["retry-after"] == "5"
                assert response.headers["x-request-id"] == request_id
            recovered = await ann.post(
                "/invoices/13/pay", data={"amount": "1"}, headers=posting(ann, after_id)
            )
            assert recovered.status_code == 200, recovered.text
        assert await site.events_of(sync_id) == []
        assert await site.events_of(async_id) == []
        assert [e.action for e in await site.events_of(after_id)] == ["invoice.paid"]


async def test_behind_a_sync_only_middleware_the_user_is_handed_over_in_sync_mode(
    project: Project, tmp_path: Path
) -> None:
    store = tmp_path / "audit.db"
    with project.serving(str(store), TEST_EXTRA_MIDDLEWARE="syncmiddleware.SyncOnly") as server:
        site = Site(project, server, str(store))
        paid, refunded = new_request_id(), new_request_id()
        async with site.client("ann") as ann:
            response = await ann.post("/invoices/15/pay", headers=posting(ann, paid))
            assert response.status_code == 200, response.text
            response = await ann.post("/invoices/15/refund", headers=posting(ann, refunded))
            assert response.status_code == 200, response.text
        for request_id in (paid, refunded):
            [event] = await site.events_of(request_id)
            assert (event.user_id, event.user_email) == (
                project.user_ids["ann"],
                "ann@example.com",
            )


async def test_stopping_the_server_mid_request_still_commits_the_event(
    project: Project, tmp_path: Path
) -> None:
    store = tmp_path / "audit.db"
    gate = socket.create_server(("127.0.0.1", 0))
    gate_port = str(gate.getsockname()[1])
    request_id = new_request_id()
    with gate, project.serving(str(store), TEST_GATE_PORT=gate_port) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            held = asyncio.create_task(
                client.get("/invoices/14/hold", headers={"x-request-id": request_id})
            )
            view, _ = await asyncio.to_thread(gate.accept)  # the view is running
            with view:
                server.process.terminate()
                await asyncio.to_thread(server.wait_for, re.compile("Shutting down"))
                view.sendall(b"!")  # let the view finish, after shutdown began
                response = await held
        assert response.status_code == 200, response.text
        server.stop()  # uvicorn re-raises the SIGTERM once it has shut down
    assert any("Application shutdown complete" in line for line in server.log), server.log
    async with open_store(store) as reopened:
        [event] = [e async for e in reopened.iter_events(EventFilter())]
        assert (event.action, event.resource_id, event.request_id) == (
            "invoice.held",
            "14",
            request_id,
        )
        assert (await reopened.verify()).ok
