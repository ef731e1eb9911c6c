"""``/v1/admin``: operator actions."""

from __future__ import annotations

import asyncio
from typing import Annotated

from confluent_kafka import KafkaException
from fastapi import APIRouter, HTTPException, Path, Query, status

from api.dead_letters import ReplayInProgress, replay_dead_letters, replay_lock
from api.deps import PoolDep, SettingsDep
from api.models import DeadLetterReplayPublic
from common.auth import KeyCreate, KeyCreated, KeyPublic, create_key, list_keys, require, revoke_key
from common.errors import BrokerUnavailable

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[require("admin")])


@router.post("/dead-letters/replay", status_code=status.HTTP_202_ACCEPTED)
async def replay(
    settings: SettingsDep, pool: PoolDep, limit: Annotated[int, Query(ge=1, le=100_000)] = 1000
) -> DeadLetterReplayPublic:
    """Resubmit dead-lettered images (as a new run) after a fix; 503 if the broker is down
    or does not acknowledge them (then nothing of this call counts as replayed), 409 while
    another replay runs.

    Each dead letter is replayed once: the next call continues after the last one
    replayed. A call stops after ``DEAD_LETTER_REPLAY_DEADLINE_S`` seconds; call again for
    the rest. Parked messages that are not images (unparseable events) are skipped, and
    images erased since they were parked are passed over (``erased``), never resubmitted.
    """
    loop = asyncio.get_running_loop()

    def is_erased(image_id: str) -> bool:  # called on the replay's thread
        check = pool.fetchval("SELECT EXISTS (SELECT 1 FROM erased_images WHERE id = $1::uuid)", image_id)
        return bool(asyncio.run_coroutine_threadsafe(check, loop).result(timeout=30))

    try:
        async with replay_lock(pool):
            result = await asyncio.to_thread(
                replay_dead_letters,
                settings.librdkafka(),
                limit,
                deadline_s=settings.dead_letter_replay_deadline_s,
                is_erased=is_erased,
            )
    except ReplayInProgress as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except KafkaException as exc:
        raise BrokerUnavailable(f"the event broker did not answer ({exc}); retry later") from exc
    return DeadLetterReplayPublic(replayed=result.replayed, skipped=result.skipped, erased=result.erased)


@router.post("/keys", status_code=status.HTTP_201_CREATED)
async def create_api_key(pool: PoolDep, spec: KeyCreate) -> KeyCreated:
    """Create an API key with the given scopes, and optionally an expiry (``expires_at`` or
    ``expires_in_days``; 422 if it is past). The key is in this answer and nowhere else."""
    try:
        return await create_key(pool, spec)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"invalid request: {exc}") from None


@router.get("/keys")
async def list_api_keys(pool: PoolDep, include_revoked: Annotated[bool, Query()] = False) -> list[KeyPublic]:
    """Every key (without its secret), oldest first, with its expiry and when it was last used.
    Revoked keys only with ``include_revoked``; expired ones always (``expired: true``)."""
    return await list_keys(pool, include_revoked=include_revoked)


@router.delete("/keys/{key_id}")
async def revoke_api_key(
    pool: PoolDep, key_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> KeyPublic:
    """Revoke a key (idempotent). Services stop accepting it within AUTH_CACHE_TTL_S."""
    revoked = await revoke_key(pool, key_id)
    if revoked is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no API key {key_id!r}")
    return revoked
