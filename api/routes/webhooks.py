"""``/v1/webhooks``: signed webhooks, managed with the admin scope; notify/ delivers them.

The secret (the HMAC-SHA256 key of ``X-Facestream-Signature``) is made here, answered
once on creation and never again. A URL facestream never calls (not http(s), link-local,
cloud metadata; private and loopback with ``WEBHOOK_ALLOW_PRIVATE=false``) is refused
with 422 (common/ssrf.py); notify checks what the name resolves to before every attempt.
Deleting a webhook deletes its deliveries, pending ones included.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status

from api.deps import PoolDep, SettingsDep
from api.models import (
    WebhookCreate,
    WebhookCreatedPublic,
    WebhookDeliveriesPublic,
    WebhookDeliveryPublic,
    WebhookPublic,
    WebhooksPublic,
)
from common.auth import require
from common.ssrf import RefusedUrl, check_url

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=[require("admin")])

WebhookId = Annotated[uuid.UUID, Path(description="The webhook's id (from its creation).")]

_COLUMNS = "id, url, events, cameras, people, created_at"


def _public(row: Any) -> WebhookPublic:
    return WebhookPublic(
        id=row["id"],
        url=row["url"],
        events=row["events"],
        cameras=row["cameras"],
        people=row["people"],
        created_at=row["created_at"],
    )


def _missing(webhook_id: uuid.UUID) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no webhook {webhook_id}")


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_webhook(pool: PoolDep, settings: SettingsDep, spec: WebhookCreate) -> WebhookCreatedPublic:
    """Create a webhook; the answer holds its signing secret, shown this once. 422 names
    why a URL is refused."""
    try:
        check_url(spec.url, allow_private=settings.webhook_allow_private)
    except RefusedUrl as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"url refused: {exc}") from None
    webhook_id = uuid.uuid4()
    secret = "whsec_" + secrets.token_urlsafe(32)
    await pool.execute(
        "INSERT INTO webhooks (id, url, events, cameras, people, secret) VALUES ($1, $2, $3, $4, $5, $6)",
        webhook_id,
        spec.url,
        sorted({e.value for e in spec.events}),
        sorted(set(spec.cameras)),
        sorted(set(spec.people)),
        secret,
    )
    return WebhookCreatedPublic(id=webhook_id, secret=secret)


@router.get("")
async def list_webhooks(pool: PoolDep) -> WebhooksPublic:
    """Every webhook (without its secret), oldest first."""
    rows = await pool.fetch(f"SELECT {_COLUMNS} FROM webhooks ORDER BY created_at, id")
    return WebhooksPublic(data=[_public(r) for r in rows], count=len(rows))


@router.get("/{webhook_id}")
async def get_webhook(pool: PoolDep, webhook_id: WebhookId) -> WebhookPublic:
    """One webhook (without its secret)."""
    row = await pool.fetchrow(f"SELECT {_COLUMNS} FROM webhooks WHERE id = $1", webhook_id)
    if row is None:
        raise _missing(webhook_id)
    return _public(row)


@router.delete("/{webhook_id}")
async def delete_webhook(pool: PoolDep, webhook_id: WebhookId) -> WebhookPublic:
    """Delete a webhook and its deliveries: nothing more is sent to it."""
    row = await pool.fetchrow(f"DELETE FROM webhooks WHERE id = $1 RETURNING {_COLUMNS}", webhook_id)
    if row is None:
        raise _missing(webhook_id)
    return _public(row)


@router.get("/{webhook_id}/deliveries")
async def list_deliveries(
    pool: PoolDep,
    webhook_id: WebhookId,
    limit: Annotated[int, Query(ge=1, le=1000, description="The newest this many.")] = 100,
) -> WebhookDeliveriesPublic:
    """A webhook's deliveries, newest first: each one's id (``X-Facestream-Delivery``),
    event, image, attempts, last answer or error, and state (pending, delivered, failed)."""
    if await pool.fetchval("SELECT 1 FROM webhooks WHERE id = $1", webhook_id) is None:
        raise _missing(webhook_id)
    rows = await pool.fetch(
        """
        SELECT id, event, image_id, run, face_index, state, attempts, last_status, last_error,
               created_at, last_attempt_at, finished_at,
               CASE WHEN state = 'pending' THEN next_attempt_at END AS next_attempt_at
        FROM webhook_deliveries WHERE webhook_id = $1
        ORDER BY created_at DESC, id DESC LIMIT $2
        """,
        webhook_id,
        limit,
    )
    data = [WebhookDeliveryPublic(**dict(r)) for r in rows]
    return WebhookDeliveriesPublic(data=data, count=len(data))
