"""stream.delivery.settle: an event is acknowledged only once its effects are done.

These use Faust's own Event and Message classes and its real acknowledgement check
(``Message.ack``); the broker-level proof is in tests/faults/test_delivery.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.types.tuples import ConsumerMessage, Message

from stream.delivery import settle


class _Consumer:
    """Records what Faust's Message.ack hands to the consumer (the offset to commit)."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, message: Message) -> bool:
        self.acked.append(message.offset)
        return True


def _event(offset: int = 7) -> faust.Event:
    app = faust.App("delivery-test", broker="memory://")
    message = ConsumerMessage("t", 0, offset, 0.0, 0, None, b"k", b"v", None)
    message.refcount = 1
    return faust.Event(app, b"k", b"v", None, message)


def _faust_ack(event: faust.Event, consumer: _Consumer) -> None:
    """What Faust's stream iterator does in its ``finally``, whatever the agent did."""
    event.message.ack(consumer)  # type: ignore[arg-type]


def test_a_finished_event_is_acknowledged() -> None:
    event, consumer, done = _event(), _Consumer(), []

    async def work() -> None:
        done.append(True)

    asyncio.run(settle(event, work, drain_s=1))
    _faust_ack(event, consumer)
    assert done
    assert consumer.acked == [7]


def _cancel_mid_event(work_s: float, drain_s: float) -> tuple[faust.Event, list[str]]:
    event, steps = _event(), []

    async def main() -> None:
        started = asyncio.Event()

        async def work() -> None:
            steps.append("started")
            started.set()
            await asyncio.sleep(work_s)  # the effect in progress (a write, a publish)
            steps.append("done")

        agent = asyncio.ensure_future(settle(event, work, drain_s=drain_s))
        await started.wait()
        agent.cancel()  # SIGTERM: Faust cancels its agents
        with pytest.raises(asyncio.CancelledError):
            await agent

    asyncio.run(main())
    return event, steps


def test_cancelled_mid_event_it_finishes_within_the_drain_and_is_acknowledged() -> None:
    event, steps = _cancel_mid_event(work_s=0.01, drain_s=5)
    consumer = _Consumer()
    _faust_ack(event, consumer)
    assert steps == ["started", "done"]
    assert consumer.acked == [7]


def test_cancelled_mid_event_past_the_drain_it_is_never_acknowledged() -> None:
    event, steps = _cancel_mid_event(work_s=30, drain_s=0.05)
    consumer = _Consumer()
    _faust_ack(event, consumer)
    assert steps == ["started"]
    assert consumer.acked == []


def test_an_error_escaping_the_work_leaves_the_event_unacknowledged() -> None:
    event, consumer = _event(), _Consumer()

    async def work() -> Any:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError):
        asyncio.run(settle(event, work, drain_s=1))
    _faust_ack(event, consumer)
    assert consumer.acked == []
