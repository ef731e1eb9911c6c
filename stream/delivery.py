"""Carrying plans out so that no event is committed before its effect is durable.

Faust acknowledges the current event in a ``finally`` when the agent's loop body ends,
however it ends: normally, on an exception, or on cancellation at shutdown or a
rebalance; the acknowledged offset is committed soon after. So correctness cannot rest
on "an exception means redelivery". Two rules make it hold here:

1. :meth:`Executor.carry_out` never raises for a failure it knows: it finishes the plan
   or hands the message on explicitly.
   - broker or database unavailable, or a transient database refusal: retried in place
     with a growing, capped delay, for as long as it takes (an outage is no event's
     fault, and nothing after it in the partition could succeed meanwhile);
   - data the database refuses, or an event that is not valid: dead-lettered with the
     reason (the request included, so it can be replayed);
   - any other error: retried ``max_attempts`` times with backoff, then dead-lettered
     as ``internal_error``.
2. :func:`settle` runs the plan in a task of its own. When the agent is cancelled mid-plan
   it lets the plan finish within ``drain_s``; if it cannot (the database is down, say),
   it withholds the event's acknowledgement, so its offset is never committed and the
   event is redone after the restart. Redoing is harmless: every effect is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from common.errors import BrokerUnavailable
from common.publisher import Publisher
from schemas import codec, topics
from schemas import events as ev
from stream import metrics
from stream.database import Database, NotStorable
from stream.effects import DeadLetter, Effect, Finished, Incoming, Plan, Publish, Skipped, Store

log = logging.getLogger(__name__)
SOURCE = "stream"
#: Characters of an unparseable message kept in its dead letter.
RAW_KEEP = 65536

Sleep = Callable[[float], Awaitable[None]]


class Executor:
    """Carries plans out against one :class:`Database` and one :class:`Publisher`."""

    def __init__(
        self,
        db: Database,
        publisher: Publisher,
        *,
        max_attempts: int = 5,
        max_delay_s: float = 15.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.db = db
        self.publisher = publisher
        self.max_attempts = max_attempts
        self.max_delay_s = max_delay_s
        self._sleep = sleep

    async def handle(self, handler: Callable[[Incoming], Plan], msg: Incoming) -> None:
        """Plan ``msg`` with the pure ``handler`` and carry the plan out. A handler that
        raises (a bug) gets the message dead-lettered as ``internal_error``."""
        try:
            plan = handler(msg)
        except Exception as exc:  # a bug in a handler must not stall the partition
            log.exception("handler for %s@%d:%d raised", msg.topic, msg.partition, msg.offset)
            metrics.HANDLER_ERRORS.labels(msg.topic).inc()
            plan = Plan((DeadLetter(ev.FailureReason.INTERNAL_ERROR, f"handler raised {exc!r}"[:2000]),))
        await self.carry_out(plan, msg)

    async def carry_out(self, plan: Plan, msg: Incoming) -> None:
        """Apply every effect of ``plan`` in order; see the module docstring. An effect
        that had to be replaced by a dead letter ends the plan there."""
        for effect in plan.effects:
            if not await self._apply_with_care(effect, plan, msg):
                return

    async def _apply_with_care(self, effect: Effect, plan: Plan, msg: Incoming) -> bool:
        """Apply ``effect``, or dead-letter the message instead (then False)."""
        planned, failures = effect, 0
        while True:
            try:
                await self._apply(effect, plan, msg)
                return effect is planned
            except NotStorable as exc:
                effect, failures = DeadLetter(ev.FailureReason.INVALID_EVENT, f"not storable: {exc}"), 0
            except BrokerUnavailable as exc:
                metrics.PUBLISH_ERRORS.inc()
                log.warning("broker unavailable (%s); trying again in %.1fs", exc, exc.retry_after)
                await self._sleep(min(self.max_delay_s, max(0.1, exc.retry_after)))
            except Exception as exc:  # a fault we have no name for: bounded retries
                failures += 1
                metrics.HANDLER_ERRORS.labels(msg.topic).inc()
                log.exception(
                    "%s for %s@%d:%d failed (%d)",
                    type(effect).__name__,
                    msg.topic,
                    msg.partition,
                    msg.offset,
                    failures,
                )
                if failures < self.max_attempts:
                    await self._sleep(self._backoff(failures))
                elif isinstance(effect, DeadLetter):
                    raise  # even parking it fails: settle() leaves it uncommitted and the worker restarts
                else:
                    detail = f"{type(effect).__name__} failed {failures} times: {exc!r}"
                    effect, failures = DeadLetter(ev.FailureReason.INTERNAL_ERROR, detail), 0

    def _backoff(self, failures: int) -> float:
        return float(min(self.max_delay_s, 0.1 * 2.0 ** (failures - 1)))

    async def _apply(self, effect: Effect, plan: Plan, msg: Incoming) -> None:
        if isinstance(effect, Store):
            loop = asyncio.get_running_loop()
            start = loop.time()
            await self.db.run(effect.write)
            metrics.PROJECTOR_WRITE_SECONDS.observe(loop.time() - start)
            metrics.PROJECTED.labels(effect.label).inc()
            if effect.label == "retry_scheduled":
                metrics.RETRIES.inc()
        elif isinstance(effect, Publish):
            await self.publisher.publish(effect.topic, effect.value, effect.key)
        elif isinstance(effect, DeadLetter):
            await self._dead_letter(effect, plan, msg)
        elif isinstance(effect, Finished):
            metrics.record_finished(effect.status, effect.submitted_at)
        elif isinstance(effect, Skipped):
            metrics.SKIPPED.labels(msg.topic).inc()
            log.info("skipping %s@%d:%d: %s", msg.topic, msg.partition, msg.offset, effect.why)

    async def _dead_letter(self, effect: DeadLetter, plan: Plan, msg: Incoming) -> None:
        parked = dead_letter(effect, plan, msg)
        key = plan.image_id or (msg.key.decode("utf-8", "replace") if msg.key else None)
        value = codec.encode_data(parked, source=SOURCE, trace_id=plan.trace_id)
        await self.publisher.publish(topics.DEAD_LETTER, value, key)
        metrics.DEAD_LETTERS.labels(effect.reason.value).inc()


def dead_letter(effect: DeadLetter, plan: Plan, msg: Incoming) -> ev.ImageDeadLettered:
    """The ImageDeadLettered for ``msg``: its request when it had one, else its raw text."""
    raw = None
    if plan.request is None and msg.value is not None:
        raw = msg.value[:RAW_KEEP].decode("utf-8", "replace")
    return ev.ImageDeadLettered(
        reason=effect.reason,
        detail=effect.detail[:2000],
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        request=plan.request,
        raw=raw,
    )


def incoming(event: faust.EventT[Any]) -> Incoming:
    m = event.message
    return Incoming(m.topic, m.partition, m.offset, event.key, event.value)


def withhold_ack(event: faust.EventT[Any]) -> None:
    """Make Faust's coming acknowledgement of ``event`` a no-op, so its offset is never
    committed by this process and the event is delivered again after a restart.

    Faust acknowledges a message only while ``message.acked`` is false (both its Python
    and its Cython stream iterators test it); once true, its offset never enters the
    consumer's acknowledged set. Used only when the agent is being cancelled, so no later
    event of the partition is acknowledged by this process afterwards.
    """
    event.message.acked = True


async def settle(event: faust.EventT[Any], work: Callable[[], Awaitable[None]], drain_s: float) -> None:
    """Run ``work`` for ``event`` to its end; see rule 2 of the module docstring.

    Returns once ``work`` has finished. Re-raises the agent's cancellation (after the
    drain) and any error ``work`` raised, in both cases withholding the acknowledgement
    unless ``work`` finished.
    """
    task = asyncio.ensure_future(work())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        try:
            await asyncio.wait({task}, timeout=drain_s)
        finally:
            if not _finished(task):
                task.cancel()
                withhold_ack(event)
                metrics.WITHHELD.inc()
                log.warning("cancelled mid-event %s; left uncommitted, to be redone", incoming(event))
        raise
    except BaseException:
        withhold_ack(event)
        metrics.WITHHELD.inc()
        raise


def _finished(task: asyncio.Future[None]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None
