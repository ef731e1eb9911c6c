"""api.catchup.OutageWatch: an unknown id is "not yet" while the database is down and for a
grace after it comes back, then 404 again."""

from __future__ import annotations

from api.catchup import OutageWatch
from tests.clock import Clock


def test_unknown_ids_are_not_yet_during_an_outage_and_its_grace() -> None:
    clock = Clock()
    watch = OutageWatch(grace_s=60, clock=clock)
    assert not watch.catching_up()  # never down: an unknown id is unknown
    watch.saw_down()
    assert watch.catching_up()
    clock.now += 300
    watch.saw_up()
    assert watch.catching_up()  # the rows written during the outage may be on their way
    clock.now += 59
    assert watch.catching_up()
    clock.now += 2
    assert not watch.catching_up()


def test_a_database_that_answers_starts_no_grace() -> None:
    clock = Clock()
    watch = OutageWatch(grace_s=60, clock=clock)
    watch.saw_up()
    watch.saw_up()
    assert not watch.catching_up()
