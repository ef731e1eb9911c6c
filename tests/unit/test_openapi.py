"""The OpenAPI documents say what the services really answer: every operation and
parameter described, every error answer declared as ``{"detail": ...}`` with an example.
No broker or database: the document is built from the routes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app as create_api
from api.settings import ApiSettings
from common.openapi import ErrorBody
from ingest.app import create_app as create_ingest
from ingest.settings import IngestSettings

KEY = SecretStr("fsk-unit-admin-key-not-secret")
PUBLIC = {"/healthz", "/readyz"}


def _apps() -> list[FastAPI]:
    return [create_ingest(IngestSettings(admin_api_key=KEY)), create_api(ApiSettings(admin_api_key=KEY))]


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]


@pytest.mark.parametrize("app", _apps(), ids=["ingest", "api"])
def test_every_operation_and_parameter_is_described(app: FastAPI) -> None:
    spec = app.openapi()
    for path, method, op in _operations(spec):
        assert op.get("description"), f"{method} {path}"
        for parameter in op.get("parameters", []):
            assert parameter.get("description"), f"{method} {path} {parameter['name']}"


@pytest.mark.parametrize("app", _apps(), ids=["ingest", "api"])
def test_every_error_answer_is_declared_with_its_real_body_and_an_example(app: FastAPI) -> None:
    spec = app.openapi()
    assert spec["components"]["schemas"]["ErrorBody"] == ErrorBody.model_json_schema()
    for path, method, op in _operations(spec):
        codes = set(op["responses"])
        assert "422" in codes, f"{method} {path}"
        if path not in PUBLIC:
            assert {"401", "403", "429", "503"} <= codes, f"{method} {path}: {sorted(codes)}"
        if "{" in path:
            assert "404" in codes, f"{method} {path}"
        if "requestBody" in op and path not in PUBLIC:
            assert "413" in codes, f"{method} {path}"
        for code in codes - {"200", "201", "202"}:
            content = op["responses"][code]["content"]["application/json"]
            assert op["responses"][code]["description"], f"{method} {path} {code}"
            if content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}:
                ErrorBody.model_validate(content["example"])


async def test_the_served_document_declares_the_body_sent_for_422() -> None:
    """FastAPI declared 422 as a list of objects; facestream answers one sentence."""
    app = create_api(ApiSettings(admin_api_key=KEY))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        answer = await client.get("/openapi.json")  # public: no key, nothing connects
    assert answer.status_code == 200
    declared = answer.json()["paths"]["/v1/images"]["get"]["responses"]["422"]["content"]["application/json"]
    assert declared["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert declared["example"]["detail"].startswith("invalid request: ")
