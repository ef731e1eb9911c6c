"""The ingest service's composition root and routes (FastAPI, default port 8000).

How image bytes travel: inside the ImageSubmitted event (base64), up to
``max_image_bytes`` (10 MiB by default; the topics accept 16 MiB messages). That keeps
every service free of shared volumes and blob stores, makes each event self-contained
(replayable, re-runnable, consumable by any client) and costs one extra copy of the
image on the broker for the topic's retention. Larger images are refused with 413.

What a client can rely on: every file of a request is checked before any is published
(one bad file refuses the request); the files are then published together, and the
answer is 202 only when the broker acknowledged every one, each id already known to
the results API (:mod:`ingest.pending`). Otherwise 503 lists every file with its id
and fate (:mod:`ingest.submission`); an ``Idempotency-Key`` makes the retry safe
(:mod:`ingest.idempotency`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import stat
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, HTTPException, Request, UploadFile
from fastapi.responses import JSONResponse

from common import docs, door, openapi
from common.auth import Authenticator, Principal, require
from common.db import create_pool
from common.http import instrument, ops_router, readable_validation_errors
from common.kafka import ensure_topics
from common.publisher import Publisher
from ingest import idempotency
from ingest.metrics import REJECTED
from ingest.models import (
    ACCEPTED,
    AcceptedImage,
    AcceptedImages,
    FileFate,
    LegacyFate,
    LegacyPartlyAccepted,
    LegacyPath,
    LegacyPaths,
    PartlyAccepted,
)
from ingest.pending import PendingRows
from ingest.settings import IngestSettings
from ingest.submission import (
    SOURCE,
    BatchNotAccepted,
    CheckedFile,
    Outcome,
    Submitter,
    not_accepted_detail,
    retry_after,
)
from ingest.validation import UploadRejected, check_image, check_text, storable_filename
from schemas.lifecycle import Status

log = logging.getLogger(__name__)


def get_settings(request: Request) -> IngestSettings:
    settings: IngestSettings = request.app.state.settings
    return settings


def get_submitter(request: Request) -> Submitter:
    submitter: Submitter = request.app.state.submitter
    return submitter


SettingsDep = Annotated[IngestSettings, Depends(get_settings)]
SubmitterDep = Annotated[Submitter, Depends(get_submitter)]
IdempotencyKey = Annotated[str | None, Header(alias=idempotency.HEADER, description=idempotency.DESCRIPTION)]

#: The answers every submitting endpoint may give besides its success.
_SUBMIT_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "A file is empty, a path cannot be read, or the Idempotency-Key header is invalid."},
    413: {
        "description": "Too many files, a file too large, too many pixels, or the request body over "
        "MAX_REQUEST_BYTES (MAX_JSON_BYTES for a JSON body)."
    },
    415: {"description": "A file is not an image of an accepted format."},
}


def _trace_id(request: Request) -> str | None:
    tp = request.headers.get("traceparent", "")
    parts = tp.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return request.headers.get("x-trace-id") or None


def _caller(request: Request) -> str:
    """Whose request this is, for idempotent ids: the public id of the API key."""
    principal: Principal = request.state.principal  # set by require(...)
    return principal.key_id


def _reject(exc: UploadRejected) -> HTTPException:
    REJECTED.labels(str(exc.status)).inc()
    return HTTPException(exc.status, exc.detail)


def _checked_key(raw: str | None) -> str | None:
    try:
        return idempotency.check_key(raw)
    except UploadRejected as exc:
        raise _reject(exc) from None


def _result_url(settings: IngestSettings, image_id: str) -> str:
    return f"{settings.results_base_url}/v1/images/{image_id}"


def _fate(o: Outcome) -> str:
    return ACCEPTED if o.error is None else str(o.error)


router = APIRouter()


@router.post(
    "/v1/images",
    status_code=202,
    response_model=AcceptedImages,
    tags=["images"],
    dependencies=[require("submit")],
    responses={
        **_SUBMIT_ERRORS,
        503: {
            "model": PartlyAccepted,
            "description": "The broker did not acknowledge some (or all) files: every file is listed "
            "in order with its id and fate; Retry-After says when to repeat the request.",
        },
    },
)
async def submit_images(
    request: Request,
    settings: SettingsDep,
    submitter: SubmitterDep,
    files: Annotated[list[UploadFile], File(description="One or more image files.")],
    source: Annotated[str | None, Form(max_length=255)] = None,
    camera: Annotated[str | None, Form(max_length=255, description="Camera or tenant key.")] = None,
    metadata: Annotated[
        str | None, Form(max_length=16384, description="JSON object of string values.")
    ] = None,
    idempotency_key: IdempotencyKey = None,
) -> AcceptedImages:
    """Accept images for recognition: 202 with one id per file, in order.

    All files are checked before any is published: one bad file refuses the whole
    request (with the file and the reason), so a client never has to guess which were
    taken. Then every file is published at once; 202 only if the broker acknowledged
    each one (each ``result_url`` answers from then on), otherwise 503 listing every
    file with its id and fate. With ``Idempotency-Key`` a retry gets the same ids.
    """
    key = _checked_key(idempotency_key)
    if len(files) > settings.max_batch_files:
        raise _reject(
            UploadRejected(413, f"{len(files)} files is over the limit of {settings.max_batch_files}")
        )
    meta = _parse_metadata(metadata)
    try:
        for what, value in (("source", source), ("camera", camera)):
            if value is not None:
                check_text(what, value)
    except UploadRejected as exc:
        raise _reject(exc) from None
    checked: list[CheckedFile] = []
    for i, upload in enumerate(files):
        name = upload.filename or f"file #{i + 1}"
        try:
            if upload.filename is not None:
                check_text(f"the name of file #{i + 1} ({upload.filename!r})", upload.filename)
            data = await upload.read(settings.max_image_bytes + 1)
            header = check_image(
                data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_pixels, name=name
            )
        except UploadRejected as exc:
            raise _reject(exc) from None
        checked.append(CheckedFile(data, header, storable_filename(upload.filename), meta))
    outcomes = await submitter.submit(
        checked,
        caller=_caller(request),
        idempotency_key=key,
        source=source,
        camera=camera,
        trace_id=_trace_id(request),
    )
    if not all(o.accepted for o in outcomes):
        fates = [
            FileFate(
                id=o.id,
                filename=o.filename,
                size_bytes=o.size_bytes,
                fate=_fate(o),
                result_url=_result_url(settings, o.id) if o.accepted else None,
            )
            for o in outcomes
        ]
        body = PartlyAccepted(detail=not_accepted_detail(outcomes), data=fates, count=len(fates))
        raise BatchNotAccepted(body.model_dump(mode="json"), retry_after(outcomes))
    accepted = [
        AcceptedImage(
            id=o.id, filename=o.filename, size_bytes=o.size_bytes, result_url=_result_url(settings, o.id)
        )
        for o in outcomes
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
    try:
        for k, v in obj.items():
            check_text("metadata key", k)
            check_text(f"metadata value of {k!r}", v)
    except UploadRejected as exc:
        raise _reject(exc) from None
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
    paths: list[str], request: Request, settings: IngestSettings, submitter: Submitter, key: str | None
) -> list[Outcome]:
    """Check every path, then submit them all; 503 (every path and its fate) unless all were accepted."""
    if settings.images_root is None:
        raise HTTPException(403, "the path-based endpoints are disabled: IMAGES_ROOT is not configured")
    if len(paths) > settings.max_batch_files:
        raise _reject(
            UploadRejected(413, f"{len(paths)} paths is over the limit of {settings.max_batch_files}")
        )
    checked = []
    for raw in paths:
        try:
            check_text("path", raw)
            target = resolve_legacy_path(settings.images_root, raw)
            check_text(f"the name of the file at {raw!r}", target.name)
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
        checked.append(CheckedFile(data, header, storable_filename(target.name), {"path": raw}))
    outcomes = await submitter.submit(
        checked,
        caller=_caller(request),
        idempotency_key=key,
        source="legacy-path",
        camera=None,
        trace_id=_trace_id(request),
    )
    if not all(o.accepted for o in outcomes):
        images = [
            LegacyFate(
                id=o.id,
                path=raw,
                fate=_fate(o),
                result_url=_result_url(settings, o.id) if o.accepted else None,
            )
            for o, raw in zip(outcomes, paths, strict=True)
        ]
        body = LegacyPartlyAccepted(detail=not_accepted_detail(outcomes), images=images)
        raise BatchNotAccepted(body.model_dump(mode="json"), retry_after(outcomes))
    return outcomes


_LEGACY_ERRORS: dict[int | str, dict[str, Any]] = {
    **_SUBMIT_ERRORS,
    403: {"description": "The path is outside IMAGES_ROOT, or IMAGES_ROOT is not configured."},
    404: {"description": "No such file under IMAGES_ROOT."},
    503: {
        "model": LegacyPartlyAccepted,
        "description": "The broker did not acknowledge some (or all) images: every path is listed "
        "with its id and fate; Retry-After says when to repeat the request.",
    },
}


@router.post("/image/post", tags=["legacy"], dependencies=[require("submit")], responses=_LEGACY_ERRORS)
async def legacy_post_image(
    body: LegacyPath,
    request: Request,
    settings: SettingsDep,
    submitter: SubmitterDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Legacy: ``{"path": ...}`` relative to the images root. 200 as before, now with the image id."""
    key = _checked_key(idempotency_key)
    [accepted] = await _submit_paths([body.path], request, settings, submitter, key)
    return {
        "id": accepted.id,
        "path": body.path,
        "status": Status.PENDING.value,
        "result_url": _result_url(settings, accepted.id),
    }


@router.post("/images/post", tags=["legacy"], dependencies=[require("submit")], responses=_LEGACY_ERRORS)
async def legacy_post_images(
    body: LegacyPaths,
    request: Request,
    settings: SettingsDep,
    submitter: SubmitterDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Legacy: ``{"paths": [{"path": ...}, ...]}``. All paths are checked before any is sent."""
    key = _checked_key(idempotency_key)
    accepted = await _submit_paths([p.path for p in body.paths], request, settings, submitter, key)
    return {
        "images": [
            {
                "id": a.id,
                "path": p.path,
                "status": Status.PENDING.value,
                "result_url": _result_url(settings, a.id),
            }
            for a, p in zip(accepted, body.paths, strict=True)
        ]
    }


async def _batch_not_accepted(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BatchNotAccepted)
    return JSONResponse(
        exc.body, status_code=503, headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    )


async def _stop_flushing(flusher: asyncio.Task[None], pending: PendingRows) -> None:
    """Stop the backlog task, then give the backlog one last chance (what is left is lost here,
    and created by the projector from the events)."""
    flusher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flusher
    if pending.backlog and not await pending.flush():
        log.warning("stopping with %d pending rows unwritten (the projector adds them)", pending.backlog)


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """Build the ingest app; the publisher, pool and backlog task exist only while its lifespan runs."""
    settings = settings or IngestSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            conf = settings.librdkafka()
            await asyncio.to_thread(ensure_topics, conf)
            pool = await create_pool(
                settings.database_url.get_secret_value(), max_size=settings.db_pool_max_size
            )
            stack.push_async_callback(pool.close)
            app.state.pool = pool
            publisher = Publisher.connect(
                conf, source=SOURCE, delivery_timeout_ms=settings.kafka_delivery_timeout_ms
            )
            stack.push_async_callback(asyncio.to_thread, publisher.close)
            pending = PendingRows(
                pool, timeout=settings.pending_write_timeout_s, backlog_max=settings.pending_backlog_max
            )
            flusher = asyncio.create_task(pending.run(), name="ingest-pending-backlog")
            stack.push_async_callback(_stop_flushing, flusher, pending)
            app.state.submitter = Submitter(publisher, pending)
            yield

    app = FastAPI(title="facestream ingest", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.auth = Authenticator("ingest", settings, pool=lambda: app.state.pool)

    async def readiness() -> dict[str, bool]:
        submitter: Submitter = app.state.submitter
        return {"kafka": await asyncio.to_thread(submitter.publisher.ready)}

    limits = door.BodyLimits(settings.max_request_bytes, settings.max_json_bytes)
    public = docs.install(app, settings.docs_assets_dir)
    door.install(app, app.state.auth, limits, public=public)
    openapi.install(app, public | door.OPS_PATHS | {app.openapi_url or ""})
    app.include_router(router)
    app.include_router(ops_router(readiness))
    readable_validation_errors(app)
    app.add_exception_handler(BatchNotAccepted, _batch_not_accepted)
    instrument(app, "ingest")
    return app
