"""Cheap checks at the edge: is this upload an image we could ever process?

Only the header is parsed (no pixel decoding), so a bad upload is refused in
microseconds with a clear reason; faults found only when decoding (a truncated file)
end as a ``failed`` status with the reason later.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from recognizer.core import ACCEPTED_FORMATS


class UploadRejected(Exception):
    """An upload that is refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int
    content_type: str


def storable_filename(name: str | None) -> str | None:
    """A client's file name, made storable (PostgreSQL text holds no NUL; the event takes
    valid UTF-8 up to 1024 characters): multipart names and file-system names are not
    validated input, and a bad one must not cost the upload."""
    if name is None:
        return None
    return name.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")[:1024] or None


def check_text(what: str, value: str) -> None:
    """Raise UploadRejected(422) unless ``value`` can be stored as text (no NUL, valid Unicode)."""
    if "\x00" in value:
        raise UploadRejected(422, f"{what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UploadRejected(422, f"{what} must be valid Unicode text") from None


def check_image(data: bytes, *, max_bytes: int, max_pixels: int, name: str = "file") -> ImageHeader:
    """Raise :class:`UploadRejected` unless ``data`` looks like a processable image."""
    if not data:
        raise UploadRejected(400, f"{name}: empty file")
    if len(data) > max_bytes:
        raise UploadRejected(413, f"{name}: {len(data)} bytes is over the limit of {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))  # reads the header only
            fmt, (w, h) = img.format or "unknown", img.size
    except UnidentifiedImageError:
        raise UploadRejected(415, f"{name}: not an image (unrecognised content)") from None
    except Image.DecompressionBombError:
        raise UploadRejected(413, f"{name}: declares too many pixels (decompression bomb)") from None
    except Exception as exc:  # noqa: BLE001 - any header parser failure means "not an image"
        raise UploadRejected(415, f"{name}: not a readable image ({type(exc).__name__})") from None
    if fmt not in ACCEPTED_FORMATS:
        raise UploadRejected(415, f"{name}: unsupported image format {fmt}")
    if w * h > max_pixels:
        raise UploadRejected(413, f"{name}: {w}x{h} is more than {max_pixels} pixels (decompression bomb?)")
    return ImageHeader(fmt, w, h, Image.MIME.get(fmt, "application/octet-stream"))
