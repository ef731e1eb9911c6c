"""Finding a face in a photo for the API, as pure functions: the face to enroll
(:func:`scan_photo`), the face to verify (:func:`probe_photo`) and every face with its
landmarks (:func:`detect_photo`); and :func:`answer_scan`, which turns a
``FaceScanRequested`` into its ``FaceScanFinished``.

They run in the recognizer processes (the API asks over ``faces.scan``, see
:mod:`api.scans`), with the recognizers' default detection settings, so an enrolled face
is encoded exactly as the faces it will be matched against. Their results are the
outcomes of :class:`~schemas.events.FaceScanFinished` (``schemas.events.Scan*``), sent
as they are; encodings keep the full precision they had when the API computed them
itself. No I/O here.
"""

from __future__ import annotations

import logging
import time
from binascii import a2b_base64
from dataclasses import dataclass
from datetime import UTC, datetime

import face_recognition

from api.imaging import face_crop
from recognizer import quality
from recognizer.core import (
    Decoded,
    DetectionConfig,
    FoundFace,
    decode_image,
    encode_box,
    find_faces,
    largest_face,
    scaled_box,
)
from recognizer.errors import ImageRejected
from schemas import events as ev
from schemas.encoding import floats
from schemas.events import ScanKind

log = logging.getLogger(__name__)

#: ``face`` of :func:`scan_photo` and :func:`probe_photo`: the largest face.
LARGEST = "largest"
FaceChoice = int | str | None

ScanResult = ev.ScanFaceFound | ev.ScanSeveralFaces | ev.ScanNoFace | ev.ScanRejected
ProbeResult = ev.ScanProbe | ev.ScanSeveralFaces | ev.ScanNoFace | ev.ScanRejected
DetectResult = ev.ScanDetection | ev.ScanRejected


def scan_photo(
    data: bytes, num_jitters: int = 1, face: FaceChoice = None, check_quality: bool = True
) -> ScanResult:
    """Decode ``data`` and encode one face with the recognizers' detection settings.

    ``face`` chooses it: its index (left to right, as results number faces), or
    :data:`LARGEST`. With None, a photo with one face enrolls it and a photo with several
    answers :class:`~schemas.events.ScanSeveralFaces` (their boxes) for the client to
    choose from; an index past the last face does too. The face is encoded from
    ``num_jitters`` jittered copies (enrollment happens once per face, so it can afford
    what the per-image hot path cannot).

    The chosen face is judged as a template first (:func:`template_quality`): with
    ``check_quality``, one that breaks a refusal limit is answered ``ScanRejected``
    (``reason`` :data:`~schemas.events.POOR_TEMPLATE`) and not encoded; otherwise every
    note comes back in the found face's ``quality``.

    Any exception other than a rejected image is a fault of the worker and propagates.
    """
    cfg = DetectionConfig()
    found = _chosen_face(data, cfg, face)
    if not isinstance(found, _Chosen):
        return found
    decoded, faces, chosen = found.decoded, found.faces, found.face
    notes = template_quality(decoded, chosen)
    refused = [n for n in notes if n.severity == "refuse"]
    if refused and check_quality:
        return ev.ScanRejected(
            reason=ev.POOR_TEMPLATE, detail="; ".join(n.message for n in refused), quality=notes
        )
    encoding = chosen.encoding if num_jitters == 1 else encode_box(decoded.rgb, chosen.box, num_jitters)
    box = scaled_box(chosen.box, decoded)
    return ev.ScanFaceFound.of(
        index=faces.index(chosen),
        box=box,
        encoding=[float(x) for x in encoding],
        faces_found=len(faces),
        model=cfg.model_info().model_copy(update={"num_jitters": num_jitters}),
        crop=face_crop(data, box, decoded.width, decoded.height),
        quality=notes,
    )


def template_quality(decoded: Decoded, chosen: FoundFace) -> list[ev.QualityNote]:
    """What :mod:`recognizer.quality` says of ``chosen`` as a template, measured in the
    pixels it is encoded from (refusals first; empty: a good one)."""
    issues = quality.judge(quality.measure(decoded.rgb, chosen.box))
    return [
        ev.QualityNote(code=i.code, severity=i.severity, message=i.message, value=i.value, limit=i.limit)
        for i in issues
    ]


def probe_photo(data: bytes, face: FaceChoice = None) -> ProbeResult:
    """Decode ``data`` and encode the face to verify as the recognizers encode a submitted
    image's faces (their default detection settings, like enrollment; one jitter).

    ``face`` chooses it as in :func:`scan_photo`: an index (left to right), :data:`LARGEST`,
    or None (a photo with one face; several answer ``ScanSeveralFaces``, as does an index
    past the last face). Any exception other than a rejected image is a fault of the
    worker and propagates.
    """
    cfg = DetectionConfig()
    found = _chosen_face(data, cfg, face)
    if not isinstance(found, _Chosen):
        return found
    decoded, faces, chosen = found.decoded, found.faces, found.face
    return ev.ScanProbe(
        index=faces.index(chosen),
        box=scaled_box(chosen.box, decoded),
        encoding=[float(x) for x in chosen.encoding],
        faces_found=len(faces),
    )


def detect_photo(data: bytes, encodings: bool = False) -> DetectResult:
    """Decode ``data`` and find every face as the recognizers do (the same boxes, left to
    right, in the original's pixels), with face_recognition's 68 landmarks (the ``large``
    shape model) and, if ``encodings``, the encoding each face gets in a result.

    Landmarks are found in the decoded (perhaps reduced) image and scaled to the
    original's pixels like the boxes; the chin's points often lie below or beside the box
    (the detector's box is tight), and may lie outside the image. Any exception other
    than a rejected image is a fault of the worker and propagates.
    """
    cfg = DetectionConfig()
    decoded = _decode(data, cfg)
    if isinstance(decoded, ev.ScanRejected):
        return decoded
    faces = find_faces(decoded.rgb, cfg)
    locations = [(f.box.top, f.box.right, f.box.bottom, f.box.left) for f in faces]
    marks: list[dict[str, list[tuple[float, float]]]] = (
        face_recognition.face_landmarks(decoded.rgb, face_locations=locations, model="large") if faces else []
    )
    s = decoded.scale
    return ev.ScanDetection(
        width=decoded.width,
        height=decoded.height,
        faces=[
            ev.DetectedFace(
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


def scan(request: ev.FaceScanRequested) -> ev.ScanOutcome:
    """What ``request`` asks for, by its kind; bad base64 is a rejected image. Any other
    exception is a fault of the worker and propagates."""
    try:
        # strict: the same refusals as b64decode(validate=True), as for a submitted image
        data = a2b_base64(request.image_b64, strict_mode=True)
    except ValueError as exc:  # binascii.Error is a ValueError
        return ev.ScanRejected(reason=ev.FailureReason.CORRUPT_IMAGE.value, detail=f"bad image_b64: {exc}")
    if request.kind is ScanKind.ENROLL:
        return scan_photo(data, request.num_jitters, request.face, request.check_quality)
    if request.kind is ScanKind.PROBE:
        return probe_photo(data, request.face)
    return detect_photo(data, request.encodings)


@dataclass(frozen=True)
class Answer:
    """The reply to one scan request, or None when it expired unanswered (nobody waits).
    ``outcome`` labels the metrics: the reply's ``result`` or "expired"."""

    reply: ev.FaceScanFinished | None
    outcome: str
    seconds: float


def answer_scan(request: ev.FaceScanRequested, worker: str, now: datetime | None = None) -> Answer:
    """Scan the photo of ``request`` unless it expired (at ``now``, by default the present).

    A scan that raises (a bug, not a bad photo) is answered ``ScanFailed`` with the
    exception, so the API's caller gets an answer rather than a timeout; a photo that
    kills the process is answered by the dispatcher (:func:`recognizer.dispatch.poison_outcome`).
    """
    if (now or datetime.now(UTC)) > request.expires_at:
        return Answer(None, "expired", 0.0)
    t0 = time.perf_counter()
    try:
        outcome: ev.ScanOutcome = scan(request)
        label = outcome.result
    except Exception as exc:
        log.exception("scan %s failed", request.request_id)
        outcome, label = ev.ScanFailed(detail=f"the scan failed: {exc!r}"[:500]), "failed"
    seconds = time.perf_counter() - t0
    return Answer(finished(request, outcome, worker, seconds), label, seconds)


def finished(
    request: ev.FaceScanRequested, outcome: ev.ScanOutcome, worker: str, seconds: float | None = None
) -> ev.FaceScanFinished:
    """The reply to ``request`` carrying ``outcome``."""
    return ev.FaceScanFinished(
        request_id=request.request_id,
        reply_to=request.reply_to,
        kind=request.kind,
        outcome=outcome,
        worker=worker,
        seconds=None if seconds is None else round(seconds, 4),
        finished_at=datetime.now(UTC),
    )


def _decode(data: bytes, cfg: DetectionConfig) -> Decoded | ev.ScanRejected:
    """``data`` decoded as the recognizers decode it (reduced like their images, so a huge
    photo cannot exhaust the worker), or why it cannot be."""
    try:
        return decode_image(data, cfg.max_pixels, cfg.max_decoded_pixels)
    except ImageRejected as exc:
        return ev.ScanRejected(reason=exc.reason.value, detail=exc.detail)


@dataclass(frozen=True)
class _Chosen:
    decoded: Decoded
    faces: list[FoundFace]
    face: FoundFace


def _chosen_face(
    data: bytes, cfg: DetectionConfig, face: FaceChoice
) -> _Chosen | ev.ScanRejected | ev.ScanNoFace | ev.ScanSeveralFaces:
    """Decode ``data``, find its faces and pick the one ``face`` names (see :func:`_choose`);
    or why there is none to take."""
    decoded = _decode(data, cfg)
    if isinstance(decoded, ev.ScanRejected):
        return decoded
    faces = find_faces(decoded.rgb, cfg)
    if not faces:
        return ev.ScanNoFace()
    chosen = _choose(faces, face)
    if chosen is None:
        return ev.ScanSeveralFaces(boxes=[scaled_box(f.box, decoded) for f in faces])
    return _Chosen(decoded, faces, chosen)


def _choose(faces: list[FoundFace], face: FaceChoice) -> FoundFace | None:
    """The face ``face`` names (an index, :data:`LARGEST`, or None: the only one), or None
    when the photo has several and none was named, or the index is past the last."""
    if face == LARGEST:
        return largest_face(faces)
    if isinstance(face, int) and 0 <= face < len(faces):
        return faces[face]
    if face is None and len(faces) == 1:
        return faces[0]
    return None
