from __future__ import annotations

from common.circuit import CircuitBreaker, State
from tests.clock import Clock


def state(cb: CircuitBreaker) -> State:
    """Read the state afresh (mypy would keep the value narrowed by an earlier assert)."""
    return cb.state


def test_opens_after_repeated_failures_and_fails_fast() -> None:
    clock = Clock()
    cb = CircuitBreaker("test-a", failure_threshold=3, base_delay=1.0, clock=clock)
    for _ in range(2):
        cb.record_failure()
        assert cb.allow()
    cb.record_failure()
    assert cb.state == State.OPEN
    assert not cb.allow()
    assert cb.retry_in() == 1.0


def test_probes_with_growing_backoff_and_closes_when_the_dependency_answers() -> None:
    clock = Clock()
    cb = CircuitBreaker("test-b", failure_threshold=1, base_delay=1.0, max_delay=3.0, clock=clock)
    cb.record_failure()
    delays = []
    for _ in range(4):
        delays.append(cb.retry_in())
        clock.now += cb.retry_in()
        assert cb.allow()  # half-open: one probe goes through
        assert cb.state == State.HALF_OPEN
        cb.record_failure()  # the probe fails
        assert not cb.allow()
    assert delays == [1.0, 2.0, 3.0, 3.0]
    clock.now += cb.retry_in()
    assert cb.allow()
    cb.record_success()
    assert cb.state == State.CLOSED
    cb.record_failure()
    assert state(cb) == State.OPEN
    assert cb.retry_in() == 1.0  # the delay was reset by the success


def test_a_success_resets_the_failure_count() -> None:
    cb = CircuitBreaker("test-c", failure_threshold=2, clock=Clock())
    cb.record_failure()
    cb.record_success()
    cb.record_failure()
    assert cb.state == State.CLOSED
