"""Finding the face to enroll in a photo; runs in the API's process pool, never in the event loop.

Everything here is picklable across the pool boundary: the worker catches
:class:`~recognizer.errors.ImageRejected` itself and returns it as data, because that
exception cannot be rebuilt from its pickled form. :class:`EnrollmentPool` owns the
process pool and replaces it when a worker dies.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from common.errors import FacestreamError
from schemas.events import Box, ModelInfo


@dataclass(frozen=True)
class FaceFound:
    """The face to enroll (``index`` of ``faces_found``, left to right), its encoding and a
    JPEG crop of it for the person's page."""

    index: int
    box: Box
    encoding: list[float]
    faces_found: int
    model: ModelInfo
    crop: bytes


@dataclass(frozen=True)
class SeveralFaces:
    """The photo has several faces and none was chosen: their boxes, left to right."""

    boxes: list[Box]


@dataclass(frozen=True)
class NoFace:
    """The photo decoded but no face was detected."""


@dataclass(frozen=True)
class Rejected:
    """The bytes are not an image that can be decoded; ``detail`` says why."""

    reason: str
    detail: str


#: ``face`` of :func:`scan_photo`: the index of the face to enroll, or the largest one.
LARGEST = "largest"
FaceChoice = int | str | None

ScanResult = FaceFound | SeveralFaces | NoFace | Rejected

log = logging.getLogger(__name__)
T = TypeVar("T")


class EncoderCrashed(FacestreamError):
    """The photo's encoding killed the worker twice, on two pools: it is not retried again."""


class EnrollmentPool:
    """The process pool that runs :func:`scan_photo`, replaced whenever a worker dies.

    A dead worker (killed for memory, a crash in dlib) breaks a ``ProcessPoolExecutor``
    for good: every later call would raise ``BrokenProcessPool``. :meth:`scan` runs a
    photo whose pool broke once more on a fresh pool; if that one breaks too the photo
    is the cause and :class:`EncoderCrashed` is raised. :meth:`works` (readiness) answers
    False while the pool is broken and replaces it, so the API is out of rotation only
    until the next probe or enrollment.
    """

    def __init__(
        self, workers: int = 1, task: Callable[[bytes, int, FaceChoice], ScanResult] | None = None
    ) -> None:
        self._workers = workers
        self._task = task or scan_photo  # a picklable module-level function
        self._lock = threading.Lock()
        self._closed = False
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # "spawn", because forking a process that runs threads (the producer's) can
        # deadlock the child.
        executor = ProcessPoolExecutor(
            max_workers=self._workers, mp_context=multiprocessing.get_context("spawn")
        )
        executor.submit(warm_up)  # in the background: nobody waits for it
        return executor

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        """Start a new pool unless another caller already replaced ``broken``."""
        with self._lock:
            if self._closed or self._executor is not broken:
                return
            log.warning("the enrollment process pool broke (a worker died); starting a new one")
            self._executor = self._start()
        broken.shutdown(wait=False, cancel_futures=True)

    async def scan(self, data: bytes, num_jitters: int = 1, face: FaceChoice = None) -> ScanResult:
        """:func:`scan_photo` in a worker process. Raises :class:`EncoderCrashed` when the
        photo broke two pools in a row."""
        return await self.run(self._task, data, num_jitters, face)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` (picklable) in a worker process, on a fresh pool once if the first
        one broke. Raises :class:`EncoderCrashed` when it broke two pools in a row."""
        loop = asyncio.get_running_loop()
        for _attempt in range(2):
            executor = self._executor
            try:
                return await loop.run_in_executor(executor, fn, *args)
            except BrokenProcessPool:
                self._replace(executor)
        raise EncoderCrashed("the work crashed the enrollment worker twice")

    def works(self) -> bool:
        """Whether the pool takes work now; a broken pool answers False and is replaced."""
        executor = self._executor
        try:
            executor.submit(_alive)
        except BrokenProcessPool:
            self._replace(executor)
            return False
        except RuntimeError:  # shut down
            return False
        return True

    def shutdown(self) -> None:
        """Stop the workers, cancelling queued photos (waits for the one running)."""
        with self._lock:
            self._closed = True
            executor = self._executor
        executor.shutdown(wait=True, cancel_futures=True)

    def pids(self) -> list[int]:
        """The worker processes' ids (for operators and tests)."""
        processes = getattr(self._executor, "_processes", None) or {}
        return list(processes)


def scan_photo(data: bytes, num_jitters: int = 1, face: FaceChoice = None) -> ScanResult:
    """Decode ``data`` and encode one face with the recognizers' detection settings.

    ``face`` chooses it: its index (left to right, as results number faces), or
    :data:`LARGEST`. With None, a photo with one face enrolls it and a photo with several
    answers :class:`SeveralFaces` (their boxes) for the client to choose from; an index
    past the last face does too. The face is encoded from ``num_jitters`` jittered copies
    (enrollment happens once per face, so it can afford what the per-image hot path cannot).

    Any exception other than a rejected image is a fault of the worker and propagates.
    """
    # Imported here, not at the top: only the worker process needs dlib and its models
    # (hundreds of MB); the API process that submits this function never loads them.
    from api.imaging import face_crop
    from recognizer.core import (
        DetectionConfig,
        decode_image,
        encode_box,
        find_faces,
        largest_face,
        scaled_box,
    )
    from recognizer.errors import ImageRejected

    cfg = DetectionConfig()
    try:
        # Reduced like the recognizers' images, so a huge photo cannot exhaust the worker.
        decoded = decode_image(data, cfg.max_pixels, cfg.max_decoded_pixels)
    except ImageRejected as exc:
        return Rejected(reason=exc.reason.value, detail=exc.detail)
    faces = find_faces(decoded.rgb, cfg)
    if not faces:
        return NoFace()
    if face == LARGEST:
        chosen = largest_face(faces)
    elif isinstance(face, int) and 0 <= face < len(faces):
        chosen = faces[face]
    elif face is None and len(faces) == 1:
        chosen = faces[0]
    else:
        return SeveralFaces([scaled_box(f.box, decoded) for f in faces])
    assert chosen is not None
    index = faces.index(chosen)
    encoding = chosen.encoding if num_jitters == 1 else encode_box(decoded.rgb, chosen.box, num_jitters)
    box = scaled_box(chosen.box, decoded)
    return FaceFound(
        index=index,
        box=box,
        encoding=[float(x) for x in encoding],
        faces_found=len(faces),
        model=cfg.model_info().model_copy(update={"num_jitters": num_jitters}),
        crop=face_crop(data, box, decoded.width, decoded.height),
    )


def _alive() -> None:
    """A no-op: submitting it tells whether the pool still takes work."""


def warm_up() -> None:
    """Load dlib and its models in the worker now, so the first enrollment does not wait for them."""
    importlib.import_module("recognizer.core")
