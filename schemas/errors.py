"""Errors raised when bytes on a topic do not honour the contract."""

from common.errors import FacestreamError


class SchemaError(FacestreamError, ValueError):
    """A message is not a valid facestream event (bad JSON, unknown type, invalid data).

    Consumers treat it as poison: they dead-letter it with this message as the reason
    and move on; it is never retried.
    """
