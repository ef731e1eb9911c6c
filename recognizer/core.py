"""Recognition as a pure function: image bytes + gallery -> faces, boxes and names.

Nothing here knows about Kafka, HTTP or databases. The same function serves the
recognizer workers, enrollment (``encode_faces``) and the benchmarks, so what is
measured is what runs.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from recognizer.errors import ImageRejected
from recognizer.gallery import Gallery, Match
from schemas.events import Box, FailureReason, MatchRule, ModelInfo, Outcome

with warnings.catch_warnings():
    # face_recognition_models still imports pkg_resources, which warns on import.
    warnings.simplefilter("ignore")
    import face_recognition

# face_recognition turns on Pillow's "load truncated images" for the whole process on
# import; a truncated upload must end as a failed image ("corrupt"), not a grey half.
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Formats accepted whatever the file is called (the content decides, not the name).
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "GIF", "BMP", "PPM", "TIFF", "MPO"})

#: Formats Pillow can decode at reduced size (``Image.draft``): never held at full size.
DRAFT_FORMATS = frozenset({"JPEG", "MPO"})

#: Pixel modes ``Image.reduce`` works on; others are converted first (at full size).
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBa", "La", "CMYK", "YCbCr", "I", "F"})

#: The declared pixel count above which an image is refused without decoding it.
#:
#: The recognizer's container is limited to 1 GiB (``deploy/k8s/base/recognizer.yaml``).
#: A worker holds about 210 MiB before any image (Python, dlib and its models: measured
#: with ``ru_maxrss``); the supervisor, the Kafka client and the gallery get another
#: 300 MiB of headroom, which leaves about 500 MiB for one image. A format that cannot be
#: decoded reduced (PNG, WebP, ...) is held once at full size: at most 5 bytes a pixel
#: (4 for RGBA, CMYK or 32-bit greyscale, plus 1 for a palette image converted before it
#: is reduced). Everything after that works at ``max_decoded_pixels`` (16 MP), which
#: peaks at about 10 bytes a pixel (conversions, flattening, the array, dlib's copies):
#: 160 MB. So 5 B x N + 160 MB <= 500 MiB gives N <= 70 MP; 50 MP keeps a margin.
#: ``tests/unit/test_core.py`` measures it: a 50 MP RGBA PNG (212 KB) now adds about
#: 420 MiB to a worker's peak (it added 1,030 MiB when it was decoded at full size and
#: converted three times), and the test holds it under 512 MiB.
MAX_PIXELS = 50_000_000


@dataclass(frozen=True)
class DetectionConfig:
    """How faces are found and encoded.

    ``detection_max_side``: images whose longer side exceeds it are downscaled for
    detection only (HOG's cost grows with pixel count); boxes are mapped back and faces
    are encoded from the decoded image.
    ``max_decoded_pixels``: the working size. Larger images are decoded reduced (JPEG in
    the decoder itself, through ``Image.draft``; other formats decoded once, then reduced
    before any conversion), faces are found and encoded at that size, and boxes are
    mapped back to the original pixels.
    ``max_pixels``: images declaring more pixels are refused before being decoded
    (decompression bombs). See :data:`MAX_PIXELS` for how it follows from the memory limit.
    """

    detector: str = "hog"
    upsample: int = 1
    detection_max_side: int = 1024
    num_jitters: int = 1
    max_pixels: int = MAX_PIXELS
    max_decoded_pixels: int = 16_000_000

    def model_info(self) -> ModelInfo:
        return ModelInfo(
            detector=self.detector,
            upsample=self.upsample,
            detection_max_side=self.detection_max_side,
            num_jitters=self.num_jitters,
        )


@dataclass(frozen=True)
class FoundFace:
    box: Box
    encoding: npt.NDArray[np.float64]  # shape (128,)


@dataclass(frozen=True)
class Recognition:
    """What one image contained. ``matches[i]`` belongs to ``faces[i]``."""

    width: int
    height: int
    faces: list[FoundFace]
    matches: list[Match]
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def outcome(self) -> Outcome:
        if not self.faces:
            return Outcome.NO_FACE
        if any(m.person_id is not None for m in self.matches):
            return Outcome.IDENTIFIED
        return Outcome.UNKNOWN_FACES


@dataclass(frozen=True)
class Decoded:
    """An image decoded upright as RGB, perhaps reduced: ``rgb`` is (H, W, 3) ``uint8``;
    ``width`` and ``height`` are the original's (upright), ``scale`` = original / decoded."""

    rgb: npt.NDArray[np.uint8]
    width: int
    height: int
    scale: float


def load_image(
    data: bytes, max_pixels: int = MAX_PIXELS, max_decoded_pixels: int | None = None
) -> npt.NDArray[np.uint8]:
    """Decode image bytes to an upright RGB ``uint8`` array (H, W, 3); see :func:`decode_image`."""
    return decode_image(data, max_pixels, max_decoded_pixels).rgb


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, max_decoded_pixels: int | None = None) -> Decoded:
    """Decode image bytes upright as RGB, reduced to at most ``max_decoded_pixels`` (None: never).

    Handles EXIF orientation, RGBA/greyscale/palette/16-bit modes and any accepted format
    whatever the file name says. Raises :class:`ImageRejected` with the reason for bytes
    that are not an image, are corrupt or truncated, or declare more than ``max_pixels``
    (checked from the header, before any pixel is decoded).
    """
    if not data:
        raise ImageRejected(FailureReason.NOT_AN_IMAGE, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            fmt = img.format or "unknown"
            if fmt not in ACCEPTED_FORMATS:
                raise ImageRejected(FailureReason.NOT_AN_IMAGE, f"unsupported image format {fmt}")
            w, h = img.size
            if w * h > max_pixels:
                raise ImageRejected(
                    FailureReason.DECOMPRESSION_BOMB, f"{w}x{h} is more than {max_pixels} pixels"
                )
            factor = _reduction(w, h, max_decoded_pixels)
            if factor > 1 and fmt in DRAFT_FORMATS:
                # The decoder scales by 1/2, 1/4 or 1/8, to at least the size asked for.
                img.draft("RGB", (math.ceil(w / factor), math.ceil(h / factor)))
            img.load()
            factor = _reduction(*img.size, max_decoded_pixels)
            if factor > 1:
                if img.mode not in _REDUCIBLE_MODES:
                    img = _plain_mode(img)
                img = img.reduce(factor)
    except UnidentifiedImageError:
        raise ImageRejected(FailureReason.NOT_AN_IMAGE, "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(FailureReason.DECOMPRESSION_BOMB, str(exc)) from None
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(FailureReason.CORRUPT_IMAGE, f"cannot decode {fmt}: {exc}") from None
    scale = w / img.size[0]
    stored = img.size
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose the image
        img = ImageOps.exif_transpose(img) or img
    if img.size != stored:  # turned a quarter: so is the original
        w, h = h, w
    img = _plain_mode(img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return Decoded(rgb=np.asarray(img, dtype=np.uint8), width=w, height=h, scale=scale)


def _reduction(w: int, h: int, max_pixels: int | None) -> int:
    """The integer factor (per side) that brings ``w`` x ``h`` to at most ``max_pixels``."""
    if max_pixels is None or w * h <= max_pixels:
        return 1
    factor = math.ceil(math.sqrt(w * h / max_pixels))
    while math.ceil(w / factor) * math.ceil(h / factor) > max_pixels:
        factor += 1
    return factor


def _plain_mode(img: Image.Image) -> Image.Image:
    """``img`` in RGB, RGBA (transparency flattened later), L or a mode already plain."""
    if img.mode == "RGBA" or img.mode == "LA" or (img.mode == "P" and "transparency" in img.info):
        # Flatten transparency onto white rather than letting it turn black.
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if img.mode.startswith("I;16") or img.mode == "I":
        return img.point(lambda v: v / 256).convert("L")
    if img.mode in ("P", "1", "CMYK", "YCbCr", "F", "La", "RGBa"):
        return img.convert("RGB")
    return img


def find_faces(
    rgb: npt.NDArray[np.uint8], cfg: DetectionConfig, timings: dict[str, float] | None = None
) -> list[FoundFace]:
    """Find and encode every face, left to right. Boxes are in ``rgb``'s pixels."""
    t0 = time.perf_counter()
    h, w = rgb.shape[:2]
    scale = min(1.0, cfg.detection_max_side / max(h, w))
    small = rgb
    if scale < 1.0:
        # Area averaging: the right filter for shrinking (no aliasing), and OpenCV's is fast.
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
    locations = face_recognition.face_locations(
        small, number_of_times_to_upsample=cfg.upsample, model=cfg.detector
    )
    if scale < 1.0:
        locations = [
            (
                max(0, round(t / scale)),
                min(w, round(r / scale)),
                min(h, round(b / scale)),
                max(0, round(lft / scale)),
            )
            for (t, r, b, lft) in locations
        ]
    locations.sort(key=lambda loc: (loc[3], loc[0]))
    t1 = time.perf_counter()
    encodings = face_recognition.face_encodings(
        rgb, known_face_locations=locations, num_jitters=cfg.num_jitters
    )
    t2 = time.perf_counter()
    if timings is not None:
        timings["detect"] = (t1 - t0) * 1000
        timings["encode"] = (t2 - t1) * 1000
    return [
        FoundFace(Box(top=t, right=r, bottom=b, left=lft), np.asarray(enc, dtype=np.float64))
        for (t, r, b, lft), enc in zip(locations, encodings, strict=True)
    ]


def encode_box(rgb: npt.NDArray[np.uint8], box: Box, num_jitters: int = 1) -> npt.NDArray[np.float64]:
    """Encode the face in ``box``, averaging ``num_jitters`` randomly jittered copies."""
    location = (box.top, box.right, box.bottom, box.left)
    [encoding] = face_recognition.face_encodings(
        rgb, known_face_locations=[location], num_jitters=num_jitters
    )
    return np.asarray(encoding, dtype=np.float64)


def recognize(data: bytes, gallery: Gallery, rule: MatchRule, cfg: DetectionConfig) -> Recognition:
    """Recognize every face in one image file's bytes.

    Raises :class:`ImageRejected` for input that can never succeed; any other exception
    is a fault of this process (the caller may retry elsewhere).
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    decoded = decode_image(data, cfg.max_pixels, cfg.max_decoded_pixels)
    timings["decode"] = (time.perf_counter() - t0) * 1000
    faces = find_faces(decoded.rgb, cfg, timings)
    if decoded.scale != 1.0:
        faces = [FoundFace(scaled_box(f.box, decoded), f.encoding) for f in faces]
    t1 = time.perf_counter()
    matches = gallery.match(np.stack([f.encoding for f in faces]) if faces else np.empty((0, 128)), rule)
    timings["match"] = (time.perf_counter() - t1) * 1000
    return Recognition(
        width=decoded.width, height=decoded.height, faces=faces, matches=matches, timings_ms=timings
    )


def scaled_box(box: Box, decoded: Decoded) -> Box:
    """``box`` (in the decoded pixels) in the original image's pixels."""
    s = decoded.scale
    return Box(
        top=max(0, round(box.top * s)),
        right=min(decoded.width, round(box.right * s)),
        bottom=min(decoded.height, round(box.bottom * s)),
        left=max(0, round(box.left * s)),
    )


def largest_face(faces: list[FoundFace]) -> FoundFace | None:
    """The face with the largest box (the subject of an enrollment photo)."""
    if not faces:
        return None
    return max(faces, key=lambda f: (f.box.bottom - f.box.top) * (f.box.right - f.box.left))
