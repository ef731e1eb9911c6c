"""The results API's composition root: :func:`create_app` wires settings, clients and routes.

Nothing connects at import time. The lifespan creates the topics if missing, the
database pool, the publisher and the scan client with its reader of the recognizers'
answers (:mod:`api.scans`: photos are scanned by the recognizers, this process never
loads dlib), and closes them in reverse order on shutdown. Start-up fails (and the process exits) if the
broker or the database does not answer, or if the schema lacks a migration this code
ships (common.db.require_schema: run ``python -m common.migrate``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import asyncpg
from fastapi import Depends, FastAPI, Request, status
from fastapi.responses import HTMLResponse, JSONResponse

from api.catchup import OutageWatch
from api.deps import Resources
from api.routes import admin, images, page, people, review, verify, webhooks
from api.scans import ScanClient, ScanReplies, ScanUnanswered, replica_id
from api.settings import ApiSettings
from common import docs, door, openapi
from common.auth import Authenticator, RateLimiter
from common.db import create_pool, database_answers
from common.errors import BrokerUnavailable
from common.http import instrument, known_query_only, ops_router, readable_validation_errors
from common.kafka import ensure_topics
from common.publisher import Publisher

log = logging.getLogger(__name__)


def create_app(settings: ApiSettings) -> FastAPI:
    """Build the app; its clients exist only while its lifespan runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await asyncio.to_thread(ensure_topics, settings.librdkafka())
            pool = await create_pool(
                settings.database_url.get_secret_value(), max_size=settings.db_pool_max_size
            )
            stack.push_async_callback(pool.close)
            publisher = Publisher.connect(
                settings.librdkafka(), source="api", delivery_timeout_ms=settings.kafka_delivery_timeout_ms
            )
            stack.push_async_callback(asyncio.to_thread, publisher.close)
            replies = ScanReplies(settings.librdkafka(), replica_id())
            await asyncio.to_thread(replies.start)
            stack.push_async_callback(asyncio.to_thread, replies.close)
            scans = ScanClient(publisher, replies, settings.scan_timeout_s)
            outages = OutageWatch(settings.catch_up_grace_s)
            watcher = asyncio.create_task(outages.watch(lambda: database_answers(pool)))
            stack.callback(watcher.cancel)
            app.state.resources = Resources(
                pool=pool, publisher=publisher, scans=scans, replies=replies, outages=outages
            )
            log.info("api ready on %s:%s", settings.api_host, settings.api_port)
            yield

    async def readiness() -> dict[str, bool]:
        resources: Resources = app.state.resources
        return {
            "database": await database_answers(resources.pool),
            "kafka": await asyncio.to_thread(resources.publisher.ready),
            "scan_replies": resources.replies.ready(),
        }

    app = FastAPI(
        title="facestream results API",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # A misspelt filter answers 422 instead of the unfiltered list.
        dependencies=[Depends(known_query_only)],
    )
    app.state.settings = settings
    app.state.auth = Authenticator("api", settings, pool=lambda: app.state.resources.pool)
    # /v1/verify and /v1/detect: a rate of their own per key (VERIFY_RATE_PER_MINUTE).
    app.state.verify_limiter = RateLimiter()
    limits = door.BodyLimits(settings.max_request_bytes, settings.max_json_bytes)
    public = docs.install(app, settings.docs_assets_dir)
    door.install(app, app.state.auth, limits, public=public)
    openapi.install(app, public | door.OPS_PATHS | {app.openapi_url or ""})
    app.include_router(ops_router(readiness))
    app.include_router(images.router)
    app.include_router(people.router)
    app.include_router(review.router)
    app.include_router(page.router)
    app.include_router(admin.router)
    app.include_router(verify.router)
    app.include_router(webhooks.router)
    readable_validation_errors(app, html=_html_error)
    app.add_exception_handler(BrokerUnavailable, _broker_unavailable)
    app.add_exception_handler(ScanUnanswered, _broker_unavailable)
    for error in DATABASE_DOWN:
        app.add_exception_handler(error, _database_unavailable)
    instrument(app, "api")
    return app


def _html_error(request: Request, status_code: int, detail: str) -> HTMLResponse | None:
    """The operator's pages answer a refusal with a readable page; the JSON API with JSON (None)."""
    route = request.scope.get("route")
    if "pages" not in (getattr(route, "tags", None) or []):
        return None
    return page.error_page(status_code, detail)


#: Errors that mean PostgreSQL cannot be reached right now (a 503, not a 500).
DATABASE_DOWN: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    asyncpg.InternalClientError,
    ConnectionError,
    TimeoutError,
)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    resources: Resources | None = getattr(request.app.state, "resources", None)
    if resources is not None:
        resources.outages.saw_down()
    return JSONResponse(
        {"detail": f"the database is unavailable ({type(exc).__name__}); retry later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": "5"},
    )


async def _broker_unavailable(_request: Request, exc: Exception) -> JSONResponse:
    """503 naming what is unavailable: the broker, or the recognizers that scan photos."""
    assert isinstance(exc, BrokerUnavailable | ScanUnanswered)
    return JSONResponse(
        {"detail": str(exc)},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))},
    )
