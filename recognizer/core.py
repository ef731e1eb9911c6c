"""Recognition as a pure function: image bytes + gallery -> faces, boxes and names.

Nothing here knows about Kafka, HTTP or databases. The same function serves the
recognizer workers, enrollment (``encode_faces``) and the benchmarks, so what is
measured is what runs.
"""

from __future__ import annotations

import contextlib
import io
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


@dataclass(frozen=True)
class DetectionConfig:
    """How faces are found and encoded.

    ``detection_max_side``: images whose longer side exceeds it are downscaled for
    detection only (HOG's cost grows with pixel count); boxes are mapped back and faces
    are encoded from the full-resolution image.
    ``max_pixels``: images declaring more pixels are refused before being decoded
    (decompression bombs).
    """

    detector: str = "hog"
    upsample: int = 1
    detection_max_side: int = 1024
    num_jitters: int = 1
    max_pixels: int = 50_000_000

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


def load_image(data: bytes, max_pixels: int = DetectionConfig.max_pixels) -> npt.NDArray[np.uint8]:
    """Decode image bytes to an upright RGB ``uint8`` array (H, W, 3).

    Handles EXIF orientation, RGBA/greyscale/palette/16-bit modes and any accepted format
    whatever the file name says. Raises :class:`ImageRejected` with the reason for bytes
    that are not an image, are corrupt or truncated, or declare too many pixels.
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
            img.load()
    except UnidentifiedImageError:
        raise ImageRejected(FailureReason.NOT_AN_IMAGE, "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(FailureReason.DECOMPRESSION_BOMB, str(exc)) from None
    except ImageRejected:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(FailureReason.CORRUPT_IMAGE, f"cannot decode {fmt}: {exc}") from None
    with contextlib.suppress(Exception):  # a broken EXIF block must not lose the image
        img = ImageOps.exif_transpose(img) or img
    if img.mode == "RGBA" or img.mode == "LA" or (img.mode == "P" and "transparency" in img.info):
        # Flatten transparency onto white rather than letting it turn black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode.startswith("I;16") or img.mode == "I":
        img = img.point(lambda v: v / 256).convert("L")
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


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
    rgb = load_image(data, cfg.max_pixels)
    timings["decode"] = (time.perf_counter() - t0) * 1000
    faces = find_faces(rgb, cfg, timings)
    t1 = time.perf_counter()
    matches = gallery.match(np.stack([f.encoding for f in faces]) if faces else np.empty((0, 128)), rule)
    timings["match"] = (time.perf_counter() - t1) * 1000
    return Recognition(
        width=rgb.shape[1], height=rgb.shape[0], faces=faces, matches=matches, timings_ms=timings
    )


def largest_face(faces: list[FoundFace]) -> FoundFace | None:
    """The face with the largest box (the subject of an enrollment photo)."""
    if not faces:
        return None
    return max(faces, key=lambda f: (f.box.bottom - f.box.top) * (f.box.right - f.box.left))
