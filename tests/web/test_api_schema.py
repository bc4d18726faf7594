"""Property-based run over the admin API's own OpenAPI schema (schemathesis): requests generated
for every operation, valid and invalid, against the real server; none may answer 5xx, and every
answer must match the schema's declared status codes and shapes where it claims to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis.core.result import Ok
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import Settings
from tests.support.web_app import ADMIN_TOKEN, RunningApp, serve_app

EXAMPLES_PER_OPERATION = 30
# Operations that act outside the API's own data: fetching arbitrary sources is exercised by
# the admin tests with a local server instead.
SKIPPED = {("POST", "/admin/api/jobs/{job}"), ("POST", "/admin/api/ingest")}


@pytest.fixture
def web(engine: AsyncEngine, settings: Settings, tmp_path: Path) -> Iterator[RunningApp]:
    with serve_app(settings, mail_url=f"maildir://{tmp_path / 'mail'}") as running:
        yield running


@pytest.mark.slow
def test_no_operation_answers_5xx(web: RunningApp, sample_page: Path) -> None:
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with sample_page.open("rb") as page:
        httpx.post(f"{web.base_url}/admin/api/ingest", headers=auth, files={"file": page})
    spec = httpx.get(f"{web.base_url}/openapi.json", headers=auth).json()
    schema = schemathesis.openapi.from_dict(spec)
    checked = 0
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the schema has an invalid operation: {result}"
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIPPED:
            continue
        checked += 1

        @given(case=operation.as_strategy())
        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def no_server_error(case: schemathesis.Case[Any]) -> None:
            response = case.call(base_url=web.base_url, headers=auth, timeout=30)
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path} -> {response.status_code}: "
                f"{response.text[:300]}"
            )

        no_server_error()
    assert checked >= 12
