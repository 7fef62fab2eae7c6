"""Verification: the whole chain (``/verify``) and one event's inclusion proof."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from auditmw._admin.parameters import MAX_AGE, check_params, parse_max_age
from auditmw._admin.reading import event_by_id
from auditmw._admin.responses import error_response, json_response
from auditmw._event import utc_timestamp
from auditmw._stores.store import AuditStore
from auditmw._transparency.proofs import prove_inclusion


class VerificationRoutes:
    """``/verify`` and ``/events/{event_id}/proof`` of ``store``. Verifications are shared
    by the requests that arrive while one runs, and kept for ``max_age``."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._verifying: asyncio.Future[dict[str, Any]] | None = None
        self._last_verified: tuple[float, dict[str, Any]] | None = None  # (monotonic, body)

    def routes(self) -> list[Route]:
        return [
            Route("/events/{event_id}/proof", self.proof, methods=["GET"]),
            Route("/verify", self.verify, methods=["GET"]),
        ]

    async def proof(self, request: Request) -> Response:
        """The event's Merkle inclusion proof: anchored in the newest stored checkpoint
        that covers it, else against its log's current root."""
        check_params(request.query_params.multi_items(), ())
        event = await event_by_id(self.store, request.path_params["event_id"])
        proof = None if event is None else await prove_inclusion(self.store, event.log, event.seq)
        if proof is None:
            return error_response(404, "not_found", "no event has this id")
        return json_response(proof.to_dict())

    async def verify(self, request: Request) -> Response:
        params = check_params(request.query_params.multi_items(), (MAX_AGE.name,))
        max_age = parse_max_age(params.get("max_age"))
        last = self._last_verified
        if max_age is not None and last is not None and time.monotonic() - last[0] <= max_age:
            return json_response(last[1])  # recent enough for the caller
        # Requests that arrive while a verification runs share it (it reads every event).
        if self._verifying is None or self._verifying.done():
            self._verifying = asyncio.ensure_future(self._run_verification())
        return json_response(await asyncio.shield(self._verifying))

    async def _run_verification(self) -> dict[str, Any]:
        report = await self.store.verify()
        body = {**report.to_dict(), "checked_at": utc_timestamp()}
        self._last_verified = (time.monotonic(), body)
        return body
