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
    """A file name as the event takes it (at most 1024 characters); None for no name.
    The name must have passed :func:`check_text` (no control characters, valid Unicode)."""
    if name is None:
        return None
    return name[:1024] or None


def _is_control(char: str) -> bool:
    """C0 controls (NUL to U+001F, tab and newline included), DEL, and the C1 controls."""
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def check_text(what: str, value: str) -> None:
    """Raise UploadRejected(422) unless ``value`` is text the event model and PostgreSQL take:
    no control characters (NUL, the other C0 controls including tab and newline, DEL, C1)
    and valid Unicode (no lone surrogates)."""
    for i, char in enumerate(value):
        if _is_control(char):
            name = " (NUL)" if char == "\x00" else ""
            raise UploadRejected(
                422, f"{what} must not contain control characters: U+{ord(char):04X}{name} at position {i}"
            )
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
