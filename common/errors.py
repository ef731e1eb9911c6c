"""The one error base of facestream, and the failures every service shares.

Each service's own errors derive from :class:`FacestreamError` too, so a caller can tell
"ours, with a meaning" from a bug. "A dependency is down" has exactly two names:
:class:`BrokerUnavailable` and :class:`DatabaseUnavailable`.
"""

from __future__ import annotations


class FacestreamError(Exception):
    """Base of every error facestream raises on purpose."""


class BrokerUnavailable(FacestreamError):
    """The broker did not acknowledge (or was not asked: its circuit is open).

    ``retry_after`` is a hint in seconds for the caller's client (HTTP ``Retry-After``).
    """

    def __init__(self, message: str, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DatabaseUnavailable(FacestreamError):
    """PostgreSQL cannot be reached right now (see :data:`common.db.DATABASE_UNAVAILABLE`)."""
