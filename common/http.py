"""HTTP pieces every FastAPI service shares: health, readiness, metrics, request metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import uvicorn
from fastapi import APIRouter, FastAPI, HTTPException, Request, Response, status
from fastapi.dependencies.models import Dependant
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "facestream_http_requests_total", "HTTP requests handled.", ["service", "method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "facestream_http_request_duration_seconds",
    "HTTP request latency.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

#: Methods counted by name; any other (a client may send any token) counts as "other",
#: so a client cannot grow the label set.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]
#: Given a refused request, its status and the sentence why: a page to answer, or None.
HtmlError = Callable[[Request, int, str], Response | None]


def ops_router(readiness: ReadinessCheck) -> APIRouter:
    """``/healthz`` (the process is alive), ``/readyz`` (can do work now), ``/metrics``."""
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive (liveness): 200 whatever its dependencies."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Whether this instance can do its work now (readiness): 200, or 503 naming the
        check that failed."""
        checks = await readiness()
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


class _Instrumented:
    """Pure ASGI middleware (``BaseHTTPMiddleware`` costs a task and two streams per request)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # Routing records the matched route in the scope. (Scanning app.router.routes
            # does not work: FastAPI lists an included router as one opaque entry.)
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            HTTP_LATENCY.labels(self.service, method, route).observe(time.perf_counter() - start)
            HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()


def instrument(app: FastAPI, service: str) -> None:
    """Count and time every request by route template (a bounded label set)."""
    app.add_middleware(_Instrumented, service=service)


def readable_validation_errors(app: FastAPI, html: HtmlError | None = None) -> None:
    """Answer invalid requests with 422 and one readable sentence in ``detail``.

    FastAPI's default ``detail`` is a list of objects; every facestream 4xx has a string.
    ``html``, given the request, the status and the sentence, may answer a page instead
    (for the routes that are pages: a person in a browser reads it), for these and for
    every other refusal (HTTPException); it answers None for the JSON routes.
    """

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        detail = f"invalid request: {problems}"
        page = html(request, status.HTTP_422_UNPROCESSABLE_CONTENT, detail) if html else None
        return page or JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    app.add_exception_handler(RequestValidationError, invalid)
    if html is None:
        return

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        page = html(request, exc.status_code, str(exc.detail)) if exc.status_code != 401 else None
        if page is not None:
            return page
        return await http_exception_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, refused)


_KNOWN_QUERY: dict[int, frozenset[str]] = {}


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters of a route and of every dependency under it."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def known_query_only(request: Request) -> None:
    """A dependency that refuses (422) a query parameter the route does not declare.

    FastAPI ignores unknown parameters, so a misspelt filter (``?stauts=failed``) silently
    answers the unfiltered list; a client is told instead. Used app-wide by the results API.
    """
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    known = _KNOWN_QUERY.get(id(route))
    if known is None:  # the routes live as long as the app: computed once per route
        known = _KNOWN_QUERY[id(route)] = frozenset(_query_names(dependant))
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"invalid request: unknown query parameter {', '.join(map(repr, unknown))} "
            f"(this path takes: {listed})",
        )


def serve(app: FastAPI, host: str, port: int, log_level: str) -> None:
    """Run ``app`` with uvicorn until SIGTERM/SIGINT.

    On SIGTERM uvicorn stops accepting, finishes in-flight requests (up to 20 s, inside
    a pod's default 30 s grace period), then runs the lifespan's shutdown (producer
    flush, pool close), and exits by re-raising the signal.
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), timeout_graceful_shutdown=20)
