"""``/v1/admin``: operator actions."""

from __future__ import annotations

import asyncio
from typing import Annotated

from confluent_kafka import KafkaException
from fastapi import APIRouter, Query, status

from api.dead_letters import replay_dead_letters
from api.deps import SettingsDep
from api.models import DeadLetterReplayPublic
from api.publishing import BrokerUnavailable

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.post("/dead-letters/replay", status_code=status.HTTP_202_ACCEPTED)
async def replay(
    settings: SettingsDep, limit: Annotated[int, Query(ge=1, le=100_000)] = 1000
) -> DeadLetterReplayPublic:
    """Resubmit dead-lettered images (as a new run) after a fix; 503 if the broker is down.

    Each dead letter is replayed once: the next call continues after the last one
    replayed. Parked messages that are not images (unparseable events) are skipped.
    """
    try:
        result = await asyncio.to_thread(replay_dead_letters, settings.librdkafka(), limit)
    except KafkaException as exc:
        raise BrokerUnavailable(f"the event broker did not answer ({exc}); retry later") from exc
    return DeadLetterReplayPublic(replayed=result.replayed, skipped=result.skipped)
