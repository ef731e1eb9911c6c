"""A circuit breaker for calls to a dependency that may be down (broker, database).

closed --(``failure_threshold`` failures in a row)--> open --(after the current
delay)--> half-open: the next call is a probe --(success)--> closed, delay reset
                                               --(failure)--> open, delay doubled (capped)

While open, :meth:`CircuitBreaker.allow` says no without touching the dependency, so
callers fail fast (an HTTP 503 with ``Retry-After``) or wait (a consumer pauses)
instead of piling up timeouts or burning retries. State is exported as the gauge
``facestream_circuit_state{dependency}`` (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum

from prometheus_client import Counter, Gauge

CIRCUIT_STATE = Gauge(
    "facestream_circuit_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open.", ["dependency"]
)
CIRCUIT_OPENED = Counter("facestream_circuit_opened_total", "Times a circuit opened.", ["dependency"])


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    """Not thread-safe; one per dependency per event loop (or thread)."""

    def __init__(
        self,
        dependency: str,
        *,
        failure_threshold: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dependency = dependency
        self.failure_threshold = failure_threshold
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._clock = clock
        self._failures = 0
        self._delay = base_delay
        self._opened_at = 0.0
        self._state = State.CLOSED
        CIRCUIT_STATE.labels(dependency).set(State.CLOSED)

    @property
    def state(self) -> State:
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when not open)."""
        if self._state != State.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._delay - self._clock())

    def allow(self) -> bool:
        """May a call be made now? An open circuit turns half-open once its delay is over."""
        if self._state == State.OPEN and self.retry_in() == 0.0:
            self._set(State.HALF_OPEN)
        return self._state != State.OPEN

    def record_success(self) -> None:
        self._failures = 0
        self._delay = self.base_delay
        self._set(State.CLOSED)

    def record_failure(self) -> None:
        self._failures += 1
        if self._state == State.HALF_OPEN:  # the probe failed: wait longer this time
            self._delay = min(self.max_delay, self._delay * 2)
            self._open()
        elif self._state == State.CLOSED and self._failures >= self.failure_threshold:
            self._open()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._set(State.OPEN)
        CIRCUIT_OPENED.labels(self.dependency).inc()

    def _set(self, state: State) -> None:
        self._state = state
        CIRCUIT_STATE.labels(self.dependency).set(state)
