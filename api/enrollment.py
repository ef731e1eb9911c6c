"""Finding the face to enroll in a photo; runs in the API's process pool, never in the event loop.

Everything here is picklable across the pool boundary: the worker catches
:class:`~recognizer.errors.ImageRejected` itself and returns it as data, because that
exception cannot be rebuilt from its pickled form.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from schemas.events import Box, ModelInfo


@dataclass(frozen=True)
class FaceFound:
    """The face to enroll: the largest of ``faces_found`` (the subject of a portrait)."""

    box: Box
    encoding: list[float]
    faces_found: int
    model: ModelInfo


@dataclass(frozen=True)
class NoFace:
    """The photo decoded but no face was detected."""


@dataclass(frozen=True)
class Rejected:
    """The bytes are not an image that can be decoded; ``detail`` says why."""

    reason: str
    detail: str


ScanResult = FaceFound | NoFace | Rejected


def scan_photo(data: bytes, num_jitters: int = 1) -> ScanResult:
    """Decode ``data`` and encode its largest face with the recognizers' detection settings.

    The enrolled face is encoded from ``num_jitters`` jittered copies (enrollment happens
    once per face, so it can afford what the per-image hot path cannot).

    Any exception other than a rejected image is a fault of the worker and propagates.
    """
    # Imported here, not at the top: only the worker process needs dlib and its models
    # (hundreds of MB); the API process that submits this function never loads them.
    from recognizer.core import DetectionConfig, encode_box, find_faces, largest_face, load_image
    from recognizer.errors import ImageRejected

    cfg = DetectionConfig()
    try:
        rgb = load_image(data, cfg.max_pixels)
    except ImageRejected as exc:
        return Rejected(reason=exc.reason.value, detail=exc.detail)
    faces = find_faces(rgb, cfg)
    face = largest_face(faces)
    if face is None:
        return NoFace()
    encoding = face.encoding if num_jitters == 1 else encode_box(rgb, face.box, num_jitters)
    return FaceFound(
        box=face.box,
        encoding=[float(x) for x in encoding],
        faces_found=len(faces),
        model=cfg.model_info().model_copy(update={"num_jitters": num_jitters}),
    )


def warm_up() -> None:
    """Load dlib and its models in the worker now, so the first enrollment does not wait for them."""
    importlib.import_module("recognizer.core")
