"""Schema-based fuzzing: schemathesis generates requests from the admin app's own OpenAPI
document (valid and invalid values, every route) and sends them over real HTTP (httpx,
ASGI transport) to the real app on a real store. No response may be a 5xx, and every
response must match the document (status, content type, body schema, headers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from auditmw import AdminApp, SQLiteStore
from auditmw._admin.openapi import openapi_document

from ._asgi import client_for
from .test_admin import ADMIN, authorize
from .test_query import SAMPLE, write_events

SCHEMA = schemathesis.openapi.from_dict(openapi_document())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
CASES = st.one_of(
    *(
        operation.as_strategy(generation_mode=mode)
        for operation in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    )
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture
async def client(store_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    await write_events(store_path, SAMPLE)
    async with (
        SQLiteStore(store_path) as store,
        client_for(AdminApp(store, authorize=authorize)) as c,
    ):
        yield c


async def send(client: httpx.AsyncClient, case: Any, headers: dict[str, str]) -> httpx.Response:
    return await client.request(
        case.method,
        case.formatted_path,
        params=case.query or None,
        headers={**(case.headers or {}), **headers},
    )


@FUZZ
@given(case=CASES)
async def test_admin_requests_never_fail_the_server(client: httpx.AsyncClient, case: Any) -> None:
    response = await send(client, case, ADMIN)
    assert response.status_code < 500, (case.formatted_path, case.query, response.text[:500])
    checks = CHECKS
    if case.meta is not None and case.meta.generation.mode == GenerationMode.NEGATIVE:
        checks = [*CHECKS, negative_data_rejection]  # invalid input must get a 4xx
    case.validate_response(response, checks=checks)


@settings(FUZZ, max_examples=100)
@given(case=CASES)
async def test_anonymous_requests_get_nothing(client: httpx.AsyncClient, case: Any) -> None:
    response = await send(client, case, {})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
