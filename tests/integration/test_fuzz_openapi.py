"""Fuzz both HTTP APIs from their own OpenAPI schemas: no input may cause a 5xx.

schemathesis generates requests from each service's ``/openapi.json`` (valid and
invalid: wrong types, huge values, odd unicode, missing fields) against the running
services, with an admin key. Checked: no server error, and no endpoint that declares
the API key ignores a missing or wrong one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.platform import Platform

pytestmark = pytest.mark.integration
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.parametrize("service", ["ingest", "api"])
def test_no_request_makes_a_service_answer_5xx(platform: Platform, service: str) -> None:
    url = platform.ingest_url if service == "ingest" else platform.api_url
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error,ignored_auth",
            "--header",
            f"X-API-Key: {platform.headers['X-API-Key']}",
            "--max-examples",
            "40",
            "--seed",
            "20261126",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=280,
    )
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    assert "passed" in summary
