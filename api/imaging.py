"""What the pages show of a stored image: a thumbnail, a display copy and face crops.

Pure functions of the stored bytes (Pillow only, no dlib): the routes run them in a
thread, once per image, kind and run, and cache the JPEG in ``thumbnails``
(api/queries.py). Every rendering is upright (EXIF orientation applied), the frame the
recognizers' boxes are in, so a box drawn over a display copy lands on its face at any
scale.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps

from schemas.events import Box

#: Longest side of a results-list thumbnail, of an image page's display copy, of a face crop.
THUMB_SIDE = 240
PREVIEW_SIDE = 1600
CROP_SIDE = 160
#: A crop shows this much of the face's surroundings on each side (a fraction of the box).
CROP_MARGIN = 0.35
#: No stored image is larger (ingest refuses bigger ones); a stored one above this is refused here too.
MAX_PIXELS = 100_000_000
JPEG_QUALITY = 85


class NotRenderable(ValueError):
    """The stored bytes cannot be shown (not an image Pillow decodes, or too large)."""


@dataclass(frozen=True)
class Kind:
    """A rendering of an image: its cache key and how to make it."""

    key: str
    face_index: int | None = None

    @classmethod
    def face(cls, index: int) -> Kind:
        return cls(f"face:{index}", index)


THUMB = Kind("thumb")
PREVIEW = Kind("preview")


def _open_upright(data: bytes, fit: int) -> Image.Image:
    """Decode ``data`` upright as RGB, reduced (cheaply, by the JPEG decoder when it can)
    to no less than ``fit`` pixels on its longest side."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise NotRenderable(f"{w}x{h} is more than {MAX_PIXELS} pixels")
            if img.format == "JPEG" and max(w, h) > 2 * fit:
                img.draft("RGB", (math.ceil(w * fit / max(w, h)), math.ceil(h * fit / max(w, h))))
            img.load()
    except NotRenderable:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise NotRenderable(f"cannot decode the stored image: {exc}") from None
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose the image
        img = ImageOps.exif_transpose(img) or img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    return img.convert("RGB")


def _jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def fitted(data: bytes, side: int) -> bytes:
    """The whole image, upright, scaled down to at most ``side`` pixels on its longest side (JPEG)."""
    img = _open_upright(data, side)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return _jpeg(img)


def face_crop(data: bytes, box: Box, width: int | None, height: int | None, side: int = CROP_SIDE) -> bytes:
    """A square crop around ``box`` (in pixels of the upright original, ``width`` x ``height``)
    with a margin, scaled to ``side`` pixels (JPEG)."""
    img = _open_upright(data, side * 4)
    # The decoder may have reduced the image: boxes are in the original's pixels.
    scale = img.size[0] / width if width else 1.0
    cx, cy = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    half = max(box.right - box.left, box.bottom - box.top) * (0.5 + CROP_MARGIN)
    region = (
        round((cx - half) * scale),
        round((cy - half) * scale),
        round((cx + half) * scale),
        round((cy + half) * scale),
    )
    crop = img.crop(region)  # outside the image: filled with black, the face stays centred
    crop.thumbnail((side, side), Image.Resampling.LANCZOS)
    return _jpeg(crop)


def render(
    data: bytes, kind: Kind, box: Box | None = None, width: int | None = None, height: int | None = None
) -> bytes:
    """The JPEG of ``kind`` for the stored image ``data``. Raises :class:`NotRenderable`."""
    if kind.face_index is not None:
        if box is None:
            raise ValueError("a face crop needs the face's box")
        return face_crop(data, box, width, height)
    return fitted(data, PREVIEW_SIDE if kind == PREVIEW else THUMB_SIDE)


#: Declared types the stored bytes are served as; anything else goes as application/octet-stream.
SAFE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/gif",
        "image/webp",
        "image/bmp",
        "image/tiff",
        "image/avif",
        "image/heic",
    }
)
