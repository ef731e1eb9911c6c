"""A stream agent that stops on an unexpected error makes the worker unhealthy."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import faust
import pytest

from stream.app import note_crashes

NO_STREAM = cast(faust.StreamT[bytes], None)  # these agents never read their stream


def test_an_unexpected_error_is_noted_and_reraised() -> None:
    crashed: set[str] = set()

    async def project_results(_stream: Any) -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        asyncio.run(note_crashes(project_results, crashed)(NO_STREAM))
    assert crashed == {"project_results"}


def test_cancellation_and_a_clean_end_are_not_crashes() -> None:
    crashed: set[str] = set()

    async def cancelled(_stream: Any) -> None:
        raise asyncio.CancelledError  # what Faust does to agents on a rebalance

    async def finished(_stream: Any) -> None:
        return None

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(note_crashes(cancelled, crashed)(NO_STREAM))
    asyncio.run(note_crashes(finished, crashed)(NO_STREAM))
    assert crashed == set()
