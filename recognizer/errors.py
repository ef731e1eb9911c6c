"""Errors of the recognizer package."""

from common.errors import FacestreamError
from schemas.events import FailureReason


class RecognizerError(FacestreamError):
    """Base of every error raised by the recognizer package."""


class ImageRejected(RecognizerError):
    """The bytes are not an image this recognizer can ever process (never retried)."""

    def __init__(self, reason: FailureReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
