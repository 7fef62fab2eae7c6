"""The dashboard: its page and its static files (``dashboard/``), its own files only."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from auditmw._admin.responses import error_response

DASHBOARD_DIR = Path(__file__).with_name("dashboard")
# The dashboard runs only its own files: nothing inline, nothing from elsewhere.
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def dashboard_routes() -> list[BaseRoute]:
    """``GET /`` (the page) and ``/static/...`` (its files)."""
    return [
        Route("/", dashboard, methods=["GET"]),
        Mount("/static", StaticFiles(directory=DASHBOARD_DIR, check_dir=False)),
    ]


async def dashboard(request: Request) -> Response:
    index = DASHBOARD_DIR / "index.html"
    if not index.is_file():
        return error_response(404, "not_found", "the dashboard is not installed")
    return FileResponse(index, headers={"content-security-policy": DASHBOARD_CSP})
