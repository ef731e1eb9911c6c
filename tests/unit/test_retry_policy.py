from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemas import codec
from schemas import events as ev
from stream.retry import GiveUp, RetryLater, decide

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[2] / "schemas/examples/facestream.recognition.failed.v1.json"


def _failure(**changes: object) -> ev.RecognitionFailed:
    failure = codec.decode(EXAMPLE.read_bytes()).data
    assert isinstance(failure, ev.RecognitionFailed)
    return failure.model_copy(update=changes)


def test_transient_failures_back_off_exponentially() -> None:
    delays = []
    for attempt in (1, 2, 3):
        d = decide(_failure(attempt=attempt), NOW, max_attempts=4, base_delay_s=1.0, max_delay_s=60)
        assert isinstance(d, RetryLater)
        assert d.attempt == attempt + 1
        delays.append(d.not_before - NOW)
    assert delays == [timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=4)]


def test_backoff_is_capped() -> None:
    d = decide(_failure(attempt=10), NOW, max_attempts=20, base_delay_s=1.0, max_delay_s=30)
    assert isinstance(d, RetryLater)
    assert d.not_before - NOW == timedelta(seconds=30)


def test_gives_up_after_max_attempts() -> None:
    assert isinstance(decide(_failure(attempt=4), NOW, 4, 1.0, 60), GiveUp)


def test_bad_input_is_never_retried() -> None:
    d = decide(_failure(retryable=False, reason=ev.FailureReason.CORRUPT_IMAGE), NOW, 4, 1.0, 60)
    assert isinstance(d, GiveUp)
    assert json.dumps(d.reason)
