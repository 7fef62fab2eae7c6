"""Each POST /notes appends an audit event; GET /verify proves the chain intact."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from auditmw import NewEvent, SQLiteStore, ValidationError


def create_app(data_dir: Path) -> Starlette:
    data_dir.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(data_dir / "audit.db")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with store:  # closing commits every pending event
            yield

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse(
            "auditmw demo\n\n"
            "  curl -X POST localhost:8000/notes -d 'hello'   # records note.created\n"
            "  curl localhost:8000/verify                     # proves the chain intact\n"
        )

    async def create_note(request: Request) -> JSONResponse:
        text = (await request.body()).decode("utf-8", "replace")
        client = request.client.host if request.client else None
        try:
            event = await store.append(
                NewEvent(
                    action="note.created",
                    resource="note",
                    details={"text": text},
                    ip_address=client,
                    user_agent=request.headers.get("user-agent"),
                )
            )
        except ValidationError as exc:
            error = {"code": "invalid_event", "message": str(exc)}
            return JSONResponse({"error": error}, status_code=400)
        return JSONResponse(event.to_dict(), status_code=201)

    async def verify(request: Request) -> JSONResponse:
        return JSONResponse((await store.verify()).to_dict())

    routes = [
        Route("/", home),
        Route("/notes", create_note, methods=["POST"]),
        Route("/verify", verify),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
