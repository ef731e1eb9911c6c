"""The retry policy, as a pure function (unit-tested without a broker)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.events import RecognitionFailed


@dataclass(frozen=True)
class RetryLater:
    attempt: int
    not_before: datetime


@dataclass(frozen=True)
class GiveUp:
    reason: str


def decide(
    failure: RecognitionFailed, now: datetime, max_attempts: int, base_delay_s: float, max_delay_s: float
) -> RetryLater | GiveUp:
    """Retry a retryable failure with exponential backoff, up to ``max_attempts`` tries.

    A failure that is not retryable (bad input) is given up at once: retrying cannot help.
    """
    if not failure.retryable:
        return GiveUp("not retryable")
    if failure.request is None:
        return GiveUp("no request to retry")
    if failure.attempt >= max_attempts:
        return GiveUp(f"gave up after {failure.attempt} attempts")
    delay = min(max_delay_s, base_delay_s * 2 ** (failure.attempt - 1))
    return RetryLater(attempt=failure.attempt + 1, not_before=now + timedelta(seconds=delay))
