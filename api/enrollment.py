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

from common.errors import FacestreamError
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

log = logging.getLogger(__name__)


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

    def __init__(self, workers: int = 1, task: Callable[[bytes, int], ScanResult] | None = None) -> None:
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

    async def scan(self, data: bytes, num_jitters: int = 1) -> ScanResult:
        """:func:`scan_photo` in a worker process. Raises :class:`EncoderCrashed` when the
        photo broke two pools in a row."""
        loop = asyncio.get_running_loop()
        for _attempt in range(2):
            executor = self._executor
            try:
                return await loop.run_in_executor(executor, self._task, data, num_jitters)
            except BrokenProcessPool:
                self._replace(executor)
        raise EncoderCrashed("encoding the photo crashed the enrollment worker twice")

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


def scan_photo(data: bytes, num_jitters: int = 1) -> ScanResult:
    """Decode ``data`` and encode its largest face with the recognizers' detection settings.

    The enrolled face is encoded from ``num_jitters`` jittered copies (enrollment happens
    once per face, so it can afford what the per-image hot path cannot).

    Any exception other than a rejected image is a fault of the worker and propagates.
    """
    # Imported here, not at the top: only the worker process needs dlib and its models
    # (hundreds of MB); the API process that submits this function never loads them.
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
    face = largest_face(faces)
    if face is None:
        return NoFace()
    encoding = face.encoding if num_jitters == 1 else encode_box(decoded.rgb, face.box, num_jitters)
    return FaceFound(
        box=scaled_box(face.box, decoded),
        encoding=[float(x) for x in encoding],
        faces_found=len(faces),
        model=cfg.model_info().model_copy(update={"num_jitters": num_jitters}),
    )


def _alive() -> None:
    """A no-op: submitting it tells whether the pool still takes work."""


def warm_up() -> None:
    """Load dlib and its models in the worker now, so the first enrollment does not wait for them."""
    importlib.import_module("recognizer.core")
