"""An image's lifecycle: its statuses and how an outcome becomes one.

::

    submitted --> pending --(FacesRecognized)--> processed   (someone enrolled was named)
                     |                      `--> unresolved  (no_face | unknown_faces)
                     `--(ImageFailed)--------> failed       (a FailureReason)
    unresolved | failed --(re-run: run + 1)--> pending

This module is the one place these words are spelled: the projector, the results API,
the CLI, the benchmarks and the SQL ``CHECK`` constraint on ``images.status`` (a test
compares them) all follow it.
"""

from __future__ import annotations

from enum import StrEnum

from schemas.events import Outcome


class Status(StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    UNRESOLVED = "unresolved"
    FAILED = "failed"


#: Statuses after which nothing more happens to the run.
FINAL: frozenset[Status] = frozenset({Status.PROCESSED, Status.UNRESOLVED, Status.FAILED})
#: Statuses a re-run may start from: the last run ended without a name.
RERUNNABLE: frozenset[Status] = frozenset({Status.UNRESOLVED, Status.FAILED})

_OF_OUTCOME = {
    Outcome.IDENTIFIED: Status.PROCESSED,
    Outcome.UNKNOWN_FACES: Status.UNRESOLVED,
    Outcome.NO_FACE: Status.UNRESOLVED,
}


def status_of(outcome: Outcome) -> Status:
    """The status a recognition outcome gives its image."""
    return _OF_OUTCOME[outcome]


def reason_of(outcome: Outcome) -> str | None:
    """The ``status_reason`` stored with that status (None when the image was processed)."""
    return None if status_of(outcome) is Status.PROCESSED else outcome.value
