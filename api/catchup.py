"""Read-your-writes across a database outage: an unknown id right after one is "not yet".

Ingest writes an image's pending row before it answers 202, so an accepted id is known
here at once. While PostgreSQL is down ingest still accepts images and writes their rows
once the database is back (so does the stream's projector, from the events); the results
API answers 503 meanwhile. For a short grace after the database comes back, those rows
may still be on their way: an id this API does not know then answers 503 with
``Retry-After`` ("catching up"), never 404. Outside that grace an unknown id is 404.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class OutageWatch:
    """Knows whether the database is down, or came back less than ``grace_s`` ago."""

    def __init__(self, grace_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace_s = grace_s
        self._clock = clock
        self._down = False
        self._back_at: float | None = None

    def saw_down(self) -> None:
        self._down = True

    def saw_up(self) -> None:
        if self._down:
            self._down = False
            self._back_at = self._clock()
            log.info("the database is back; unknown ids answer 503 for %.0f s", self.grace_s)

    def catching_up(self) -> bool:
        if self._down:
            return True
        return self._back_at is not None and self._clock() - self._back_at < self.grace_s

    async def watch(self, answers: Callable[[], Awaitable[bool]], interval_s: float = 1.0) -> None:
        """Probe the database every ``interval_s`` (run in the app's lifespan)."""
        while True:
            if await answers():
                self.saw_up()
            else:
                self.saw_down()
            await asyncio.sleep(interval_s)
