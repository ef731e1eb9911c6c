"""The OpenAPI documents declare the error answers the services really send.

Every facestream error is ``{"detail": "<one sentence>"}`` (:class:`ErrorBody`): the
door's refusals (401, 403, 413, 429, 503), the routes' own (404, 409, 415, ...), and
invalid requests (422, one sentence: ``common.http.readable_validation_errors``, not
FastAPI's list of objects). :func:`install` adds them to every operation of an app's
document, with an example each, and describes the path and query parameters that
recur across routes, so that every operation and parameter is described.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """The body of every error answer."""

    detail: str = Field(description="What went wrong, in one sentence.")


#: Status -> (what it means, an example ``detail``).
ERRORS: dict[int, tuple[str, str]] = {
    400: ("The request is malformed.", "the Idempotency-Key header is not a valid key"),
    401: (
        "No API key, or one that is unknown or revoked (the answer carries WWW-Authenticate).",
        "an API key is required (X-API-Key header)",
    ),
    403: (
        "The key lacks this operation's scope, or a cross-site request that changes state was refused.",
        "this API key lacks the 'admin' scope",
    ),
    404: ("Nothing has this id.", "no image with id 0b6f5ac4-3c4e-4d3e-9a77-2f1e8c1d5b20"),
    409: (
        "The request conflicts with the current state: an id already used, an operation already running.",
        "a dead-letter replay is already running",
    ),
    413: (
        "The body, or a file in it, is over its limit (counted as it arrives).",
        "request body over 1048576 bytes",
    ),
    415: ("A file is not an image of an accepted format.", "photo.txt: not an image (JPEG, PNG, ...)"),
    422: (
        "The request is invalid: a parameter, a field or a file (the first problems, in one sentence).",
        "invalid request: query.limit: Input should be less than or equal to 500",
    ),
    429: (
        "Over the key's rate, or too many failed key checks from this address; retry after Retry-After.",
        "rate limit of 600 requests per minute exceeded; retry in 3 s",
    ),
    503: (
        "The broker or the database is unavailable (nothing was done); retry after Retry-After.",
        "cannot verify the API key: the database is unavailable",
    ),
}

#: Descriptions of parameters that recur across routes, by name.
PARAMETERS: dict[str, str] = {
    "image_id": "Id of the image (UUID), as returned on submission.",
    "person_id": "Id of the person (UUID).",
    "key_id": "Public id of the API key (the part after fsk_).",
    "limit": "How many items to return at most.",
    "offset": "How many items to skip (for the next page).",
    "status": "Only images with this status (pending, processed, unresolved, failed).",
    "camera": "Only images from this camera (or tenant) key.",
    "person": "Only images in which this person (id) was identified.",
    "include_revoked": "Include revoked keys.",
    "face_id": "Client-chosen id of the face: makes retries safe.",
    "Idempotency-Key": "Client-chosen key: a retry returns the first answer instead of acting twice.",
}

_DOOR = (401, 403, 429, 503)
_VALIDATION_REFS = ("#/components/schemas/HTTPValidationError",)


def install(app: FastAPI, public: Iterable[str]) -> None:
    """Declare the error answers in ``app``'s OpenAPI document. ``public`` paths (health,
    the document, the docs page) are not behind the door: no 401/403/429 there."""
    plain = app.openapi
    open_paths = frozenset(public)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            declare_errors(plain(), open_paths)
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


def declare_errors(spec: dict[str, Any], public: frozenset[str]) -> None:
    """Add (in place) every error answer each operation of ``spec`` can give, and the
    descriptions of the recurring parameters."""
    spec.setdefault("components", {}).setdefault("schemas", {})["ErrorBody"] = ErrorBody.model_json_schema()
    for path, item in spec.get("paths", {}).items():
        for operation in item.values():
            codes = {int(c) for c in operation.get("responses", {}) if str(c)[0] in "45"} | {422}
            if path not in public:
                codes |= set(_DOOR)
                if "requestBody" in operation:
                    codes.add(413)
            if "{" in path:
                codes.add(404)
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses[str(code)] = _error_response(
                    code, responses.pop(str(code), responses.pop(code, None))
                )
            for parameter in operation.get("parameters", []):
                if not parameter.get("description"):
                    described = parameter.get("schema", {}).get("description")
                    parameter["description"] = described or PARAMETERS.get(parameter["name"], "")


def _error_response(code: int, declared: dict[str, Any] | None) -> dict[str, Any]:
    """The route's own declaration when it names a body model of its own; else ErrorBody,
    with the route's description if it has one (it says what this route means by it)."""
    meaning, example = ERRORS[code]
    declared = declared or {}
    schema = declared.get("content", {}).get("application/json", {}).get("schema", {})
    if schema and schema.get("$ref") not in _VALIDATION_REFS:
        return declared
    description = declared.get("description") if code != 422 else None
    return {
        "description": description or meaning,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ErrorBody"},
                "example": {"detail": example},
            }
        },
    }
