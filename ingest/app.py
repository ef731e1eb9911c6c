"""The ingest service's composition root and routes (FastAPI, default port 8000).

How image bytes travel: inside the ImageSubmitted event (base64), up to
``max_image_bytes`` (10 MiB by default; the topics accept 16 MiB messages). That keeps
every service free of shared volumes and blob stores, makes each event self-contained
(replayable, re-runnable, consumable by any client) and costs one extra copy of the
image on the broker for the topic's retention. Larger images are refused with 413.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from confluent_kafka import KafkaException
from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from common.auth import Authenticator, require
from common.circuit import CircuitBreaker
from common.db import create_pool
from common.http import instrument, ops_router, readable_validation_errors
from common.kafka import AsyncProducer, ensure_topics
from ingest.metrics import ACCEPTED_BYTES, ACCEPTED_IMAGES, REJECTED
from ingest.settings import IngestSettings
from ingest.validation import ImageHeader, UploadRejected, check_image
from schemas import codec, topics
from schemas.envelope import new_id
from schemas.events import ImageSubmitted

SOURCE = "ingest"


class AcceptedImage(BaseModel):
    id: str
    filename: str | None
    size_bytes: int
    status: str = "pending"
    result_url: str


class AcceptedImages(BaseModel):
    data: list[AcceptedImage]
    count: int


class LegacyPath(BaseModel):
    path: str = Field(min_length=1, max_length=4096)


class LegacyPaths(BaseModel):
    paths: list[LegacyPath] = Field(min_length=1)


class Publisher:
    """Turns accepted images into ImageSubmitted events and waits for the broker's ack.

    A circuit breaker guards the broker: after repeated failures requests get 503 with
    ``Retry-After`` at once, instead of each waiting for the delivery timeout, until a
    probe finds the broker back.
    """

    def __init__(self, producer: AsyncProducer) -> None:
        self.producer = producer
        self.breaker = CircuitBreaker("kafka", failure_threshold=3, base_delay=1.0, max_delay=30.0)

    async def submit(
        self,
        data: bytes,
        header: ImageHeader,
        filename: str | None,
        *,
        source: str | None,
        camera: str | None,
        metadata: dict[str, str],
        trace_id: str | None,
    ) -> AcceptedImage:
        image_id = new_id()
        event = ImageSubmitted(
            image_id=image_id,
            filename=filename,
            content_type=header.content_type,
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            source=source,
            camera=camera,
            metadata=metadata,
            image_b64=base64.b64encode(data).decode("ascii"),
            submitted_at=datetime.now(UTC),
        )
        if not self.breaker.allow():
            REJECTED.labels("broker_unavailable").inc()
            retry = max(1, math.ceil(self.breaker.retry_in()))
            raise HTTPException(
                503,
                f"the event broker is unavailable; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        try:
            await self.producer.send(
                topics.SUBMITTED, codec.encode_data(event, source=SOURCE, trace_id=trace_id), key=image_id
            )
        except KafkaException as exc:
            self.breaker.record_failure()
            REJECTED.labels("broker_unavailable").inc()
            raise HTTPException(
                503, f"the event broker did not accept the image: {exc}", headers={"Retry-After": "5"}
            ) from None
        self.breaker.record_success()
        ACCEPTED_IMAGES.inc()
        ACCEPTED_BYTES.inc(len(data))
        return AcceptedImage(
            id=image_id, filename=filename, size_bytes=len(data), result_url=f"/v1/images/{image_id}"
        )


def get_settings(request: Request) -> IngestSettings:
    settings: IngestSettings = request.app.state.settings
    return settings


def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


SettingsDep = Annotated[IngestSettings, Depends(get_settings)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]


def _trace_id(request: Request) -> str | None:
    tp = request.headers.get("traceparent", "")
    parts = tp.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return request.headers.get("x-trace-id") or None


def _reject(exc: UploadRejected) -> HTTPException:
    REJECTED.labels(str(exc.status)).inc()
    return HTTPException(exc.status, exc.detail)


router = APIRouter()


@router.post(
    "/v1/images",
    status_code=202,
    response_model=AcceptedImages,
    tags=["images"],
    dependencies=[require("submit")],
)
async def submit_images(
    request: Request,
    settings: SettingsDep,
    publisher: PublisherDep,
    files: Annotated[list[UploadFile], File(description="One or more image files.")],
    source: Annotated[str | None, Form(max_length=255)] = None,
    camera: Annotated[str | None, Form(max_length=255, description="Camera or tenant key.")] = None,
    metadata: Annotated[
        str | None, Form(max_length=16384, description="JSON object of string values.")
    ] = None,
) -> AcceptedImages:
    """Accept images for recognition: 202 with one id per file, in order.

    All files are checked before any is published: one bad file refuses the whole
    request (with the file and the reason), so a client never has to guess which were
    taken. 503 (retry later) if the broker does not acknowledge.
    """
    if len(files) > settings.max_batch_files:
        raise _reject(
            UploadRejected(413, f"{len(files)} files is over the limit of {settings.max_batch_files}")
        )
    meta = _parse_metadata(metadata)
    checked: list[tuple[bytes, ImageHeader, str | None]] = []
    for i, upload in enumerate(files):
        name = upload.filename or f"file #{i + 1}"
        data = await upload.read(settings.max_image_bytes + 1)
        try:
            header = check_image(
                data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_pixels, name=name
            )
        except UploadRejected as exc:
            raise _reject(exc) from None
        checked.append((data, header, upload.filename))
    trace = _trace_id(request)
    accepted = [
        await publisher.submit(
            data, header, filename, source=source, camera=camera, metadata=meta, trace_id=trace
        )
        for data, header, filename in checked
    ]
    return AcceptedImages(data=accepted, count=len(accepted))


def _parse_metadata(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _reject(UploadRejected(422, f"metadata is not valid JSON: {exc.msg}")) from None
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise _reject(UploadRejected(422, "metadata must be a JSON object of string values"))
    return obj


def resolve_legacy_path(root: Path, raw: str) -> Path:
    """Map a legacy client's path to a regular file inside ``root``, or raise UploadRejected.

    Relative paths are taken from ``root``; absolute ones must lie inside it. Symlinks
    are followed and the *target* must be inside ``root`` too.
    """
    if "\x00" in raw:
        raise UploadRejected(400, "path contains a NUL byte")
    root = root.resolve()
    candidate = Path(raw)
    target = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if not target.is_relative_to(root):
        raise UploadRejected(403, f"path {raw!r} is outside the images root")
    try:
        st = target.stat()
    except FileNotFoundError:
        raise UploadRejected(404, f"path {raw!r} does not exist under the images root") from None
    except OSError as exc:
        raise UploadRejected(400, f"path {raw!r} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UploadRejected(400, f"path {raw!r} is not a regular file")
    return target


async def _submit_paths(
    paths: list[str], request: Request, settings: IngestSettings, publisher: Publisher
) -> list[AcceptedImage]:
    if settings.images_root is None:
        raise HTTPException(403, "the path-based endpoints are disabled: IMAGES_ROOT is not configured")
    if len(paths) > settings.max_batch_files:
        raise _reject(
            UploadRejected(413, f"{len(paths)} paths is over the limit of {settings.max_batch_files}")
        )
    checked = []
    for raw in paths:
        try:
            target = resolve_legacy_path(settings.images_root, raw)
            if target.stat().st_size > settings.max_image_bytes:
                raise UploadRejected(413, f"{raw}: over the limit of {settings.max_image_bytes} bytes")
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                data = fh.read(settings.max_image_bytes + 1)
            header = check_image(
                data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_pixels, name=raw
            )
        except UploadRejected as exc:
            raise _reject(exc) from None
        except OSError as exc:
            raise _reject(UploadRejected(400, f"path {raw!r} cannot be read: {exc.strerror}")) from None
        checked.append((data, header, target.name))
    trace = _trace_id(request)
    return [
        await publisher.submit(
            d, h, name, source="legacy-path", camera=None, metadata={"path": raw}, trace_id=trace
        )
        for (d, h, name), raw in zip(checked, paths, strict=True)
    ]


@router.post("/image/post", tags=["legacy"], dependencies=[require("submit")])
async def legacy_post_image(
    body: LegacyPath, request: Request, settings: SettingsDep, publisher: PublisherDep
) -> dict[str, Any]:
    """Legacy: ``{"path": ...}`` relative to the images root. 200 as before, now with the image id."""
    accepted = await _submit_paths([body.path], request, settings, publisher)
    return {
        "id": accepted[0].id,
        "path": body.path,
        "status": "pending",
        "result_url": accepted[0].result_url,
    }


@router.post("/images/post", tags=["legacy"], dependencies=[require("submit")])
async def legacy_post_images(
    body: LegacyPaths, request: Request, settings: SettingsDep, publisher: PublisherDep
) -> dict[str, Any]:
    """Legacy: ``{"paths": [{"path": ...}, ...]}``. All paths are checked before any is sent."""
    accepted = await _submit_paths([p.path for p in body.paths], request, settings, publisher)
    return {
        "images": [
            {"id": a.id, "path": p.path, "status": "pending", "result_url": a.result_url}
            for a, p in zip(accepted, body.paths, strict=True)
        ]
    }


class BodyLimit:
    """Refuse a request whose declared body is over the limit (JSON: ``json_limit``) before reading it.

    Pure ASGI: ``BaseHTTPMiddleware`` would cost a task and two streams per request.
    """

    def __init__(self, app: ASGIApp, json_limit: int, limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length", b"")
            if length.isdigit():
                size = int(length)
                detail = None
                if b"json" in headers.get(b"content-type", b"") and size > self.json_limit:
                    detail = f"JSON body over {self.json_limit} bytes"
                elif size > self.limit:
                    detail = f"request body over {self.limit} bytes"
                if detail is not None:
                    await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """Build the ingest app; the producer is created in the lifespan, not at import."""
    settings = settings or IngestSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        conf = settings.librdkafka()
        ensure_topics(conf)
        # Only API keys are read from the database: a small pool is plenty.
        app.state.pool = await create_pool(settings.database_url.get_secret_value(), max_size=4)
        producer = AsyncProducer({**conf, "delivery.timeout.ms": settings.kafka_delivery_timeout_ms})
        app.state.publisher = Publisher(producer)
        try:
            yield
        finally:
            producer.close()
            await app.state.pool.close()

    app = FastAPI(title="facestream ingest", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.state.auth = Authenticator("ingest", settings, pool=lambda: app.state.pool)

    async def readiness() -> dict[str, bool]:
        return {"kafka": app.state.publisher.producer.ready()}

    app.add_middleware(
        BodyLimit,
        json_limit=settings.max_json_bytes,
        limit=settings.max_image_bytes * settings.max_batch_files + 1024 * 1024,
    )
    app.include_router(router)
    app.include_router(ops_router(readiness))
    readable_validation_errors(app)
    instrument(app, "ingest")
    return app
