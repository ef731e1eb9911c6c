"""Finding faces in an uploaded photo, in the API's process pool, never in the event loop:
the face to enroll (:func:`scan_photo`), the face to verify (:func:`probe_photo`) and every
face with its landmarks (:func:`detect_photo`).

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
from typing import TYPE_CHECKING, Any, TypeVar

from common.errors import FacestreamError
from schemas.events import Box, ModelInfo

if TYPE_CHECKING:  # only the worker process imports dlib and its models (see scan_photo)
    from recognizer.core import Decoded, DetectionConfig, FoundFace


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


@dataclass(frozen=True)
class Probe:
    """The face of a photo to verify (``index`` of ``faces_found``, left to right): its box
    and its encoding as the recognizers compute a submitted image's (one jitter)."""

    index: int
    box: Box
    encoding: list[float]
    faces_found: int


ProbeResult = Probe | SeveralFaces | NoFace | Rejected

#: A landmark: (x, y) in pixels of the original, upright image.
Point = tuple[int, int]


@dataclass(frozen=True)
class DetectedFace:
    """One face: its box, its 68 landmarks by feature (face_recognition's names: ``chin``,
    ``left_eye``, ...) and, when asked for, its encoding."""

    box: Box
    landmarks: dict[str, list[Point]]
    encoding: list[float] | None


@dataclass(frozen=True)
class Detection:
    """Every face of a photo, left to right; ``width`` and ``height`` of the upright original."""

    width: int
    height: int
    faces: list[DetectedFace]


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
    # Imported here, not at the top (in every function of this module): only the worker
    # process needs dlib and its models (hundreds of MB); the API process that submits
    # these functions never loads them.
    from api.imaging import face_crop
    from recognizer.core import DetectionConfig, encode_box, scaled_box

    cfg = DetectionConfig()
    found = _chosen_face(data, cfg, face)
    if not isinstance(found, _Chosen):
        return found
    decoded, faces, chosen = found.decoded, found.faces, found.face
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


def probe_photo(data: bytes, face: FaceChoice = None) -> ProbeResult:
    """Decode ``data`` and encode the face to verify as the recognizers encode a submitted
    image's faces (their default detection settings, like enrollment; one jitter).

    ``face`` chooses it as in :func:`scan_photo`: an index (left to right), :data:`LARGEST`,
    or None (a photo with one face; several answer :class:`SeveralFaces`, as does an index
    past the last face). Any exception other than a rejected image is a fault of the
    worker and propagates.
    """
    from recognizer.core import DetectionConfig, scaled_box

    cfg = DetectionConfig()
    found = _chosen_face(data, cfg, face)
    if not isinstance(found, _Chosen):
        return found
    decoded, faces, chosen = found.decoded, found.faces, found.face
    return Probe(
        index=faces.index(chosen),
        box=scaled_box(chosen.box, decoded),
        encoding=[float(x) for x in chosen.encoding],
        faces_found=len(faces),
    )


def detect_photo(data: bytes, encodings: bool = False) -> Detection | Rejected:
    """Decode ``data`` and find every face as the recognizers do (the same boxes, left to
    right, in the original's pixels), with face_recognition's 68 landmarks (the ``large``
    shape model) and, if ``encodings``, the encoding each face gets in a result.

    Landmarks are found in the decoded (perhaps reduced) image and scaled to the
    original's pixels like the boxes; the chin's points often lie below or beside the box
    (the detector's box is tight), and may lie outside the image. Any exception other
    than a rejected image is a fault of the worker and propagates.
    """
    import face_recognition

    from recognizer.core import DetectionConfig, find_faces, scaled_box
    from schemas.encoding import floats

    cfg = DetectionConfig()
    decoded = _decode(data, cfg)
    if isinstance(decoded, Rejected):
        return decoded
    faces = find_faces(decoded.rgb, cfg)
    locations = [(f.box.top, f.box.right, f.box.bottom, f.box.left) for f in faces]
    marks: list[dict[str, list[tuple[float, float]]]] = (
        face_recognition.face_landmarks(decoded.rgb, face_locations=locations, model="large") if faces else []
    )
    s = decoded.scale
    return Detection(
        width=decoded.width,
        height=decoded.height,
        faces=[
            DetectedFace(
                box=scaled_box(f.box, decoded),
                landmarks={
                    feature: [(round(x * s), round(y * s)) for x, y in points]
                    for feature, points in m.items()
                },
                encoding=floats(f.encoding) if encodings else None,
            )
            for f, m in zip(faces, marks, strict=True)
        ],
    )


def _decode(data: bytes, cfg: DetectionConfig) -> Decoded | Rejected:
    """``data`` decoded as the recognizers decode it (reduced like their images, so a huge
    photo cannot exhaust the worker), or why it cannot be."""
    from recognizer.core import decode_image
    from recognizer.errors import ImageRejected

    try:
        return decode_image(data, cfg.max_pixels, cfg.max_decoded_pixels)
    except ImageRejected as exc:
        return Rejected(reason=exc.reason.value, detail=exc.detail)


@dataclass(frozen=True)
class _Chosen:
    decoded: Decoded
    faces: list[FoundFace]
    face: FoundFace


def _chosen_face(
    data: bytes, cfg: DetectionConfig, face: FaceChoice
) -> _Chosen | Rejected | NoFace | SeveralFaces:
    """Decode ``data``, find its faces and pick the one ``face`` names (see :func:`_choose`);
    or why there is none to take."""
    from recognizer.core import find_faces, scaled_box

    decoded = _decode(data, cfg)
    if isinstance(decoded, Rejected):
        return decoded
    faces = find_faces(decoded.rgb, cfg)
    if not faces:
        return NoFace()
    chosen = _choose(faces, face)
    if chosen is None:
        return SeveralFaces([scaled_box(f.box, decoded) for f in faces])
    return _Chosen(decoded, faces, chosen)


def _choose(faces: list[FoundFace], face: FaceChoice) -> FoundFace | None:
    """The face ``face`` names (an index, :data:`LARGEST`, or None: the only one), or None
    when the photo has several and none was named, or the index is past the last."""
    from recognizer.core import largest_face

    if face == LARGEST:
        return largest_face(faces)
    if isinstance(face, int) and 0 <= face < len(faces):
        return faces[face]
    if face is None and len(faces) == 1:
        return faces[0]
    return None


def _alive() -> None:
    """A no-op: submitting it tells whether the pool still takes work."""


def warm_up() -> None:
    """Load dlib and its models in the worker now, so the first enrollment does not wait for them."""
    importlib.import_module("recognizer.core")
