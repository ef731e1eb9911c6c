"""Event payloads, one model per event type and schema version.

Naming: past tense, the fact that happened. Additive, optional fields may be added to a
version; anything else is a new version with an upcaster in :mod:`schemas.codec`.

Topics and what travels on them (see :mod:`schemas.topics`):

==========================  =========================================  ===================
topic                       events                                     key
==========================  =========================================  ===================
images.submitted            ImageSubmitted                             image id
images.recognize            RecognitionRequested (retries),            image id
                            RematchRequested (review: match again)
images.failures             RecognitionFailed (+ the request)          image id
images.retry                (read only: older stream workers' retries) image id
images.results              FacesRecognized, ImageFailed               image id
images.dead-letter          ImageDeadLettered                          image id (or none)
gallery (compacted)         PersonEnrolled, FaceEnrolled               person:ID, face:PID:FID
faces.scan                  FaceScanRequested                          request id
faces.scanned               FaceScanFinished                           request id
==========================  =========================================  ===================
"""

from __future__ import annotations

import base64
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

#: Ids are UUIDs in canonical text form (any version).
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

#: A face's encoding: 128 numbers (dlib's face_recognition_resnet_model_v1). Stored as 128
#: float32 (:mod:`schemas.encoding`), so events carry them at float32 precision.
Encoding = Annotated[list[float], Field(min_length=128, max_length=128)]


class _Data(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


# --------------------------------------------------------------------------- images


class ImageSubmitted(_Data):
    """An image was accepted for recognition.

    The image bytes travel inside the event (``image_b64``), so no service needs a shared
    volume; the size limit keeps the message under the topic's ``max.message.bytes``.
    ``run`` is 0 for the first submission and grows by one with each re-run of the same
    image: consumers keep only the newest run's results.
    """

    image_id: str = Field(pattern=UUID_PATTERN, description="Id of the image (UUID); the Kafka key.")
    run: int = Field(default=0, ge=0, description="0 on submission, +1 per re-run.")
    filename: str | None = Field(default=None, max_length=1024)
    content_type: str | None = Field(default=None, max_length=255)
    size_bytes: int = Field(ge=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str | None = Field(default=None, max_length=255, description="Who sent it (client, camera feed).")
    camera: str | None = Field(default=None, max_length=255, description="Camera or tenant key.")
    metadata: dict[str, str] = Field(default_factory=dict)
    image_b64: str = Field(description="The image file's bytes, base64 (RFC 4648).")
    submitted_at: datetime


class RecognitionRequested(_Data):
    """The stream layer asks a recognizer to process one image (one attempt)."""

    image: ImageSubmitted
    attempt: int = Field(default=1, ge=1, description="1 for the first try, +1 per retry.")
    not_before: datetime | None = Field(default=None, description="Retry no earlier than this.")
    last_error: str | None = None


class Box(_Data):
    """A face's bounding box in pixels of the original (EXIF-upright) image."""

    top: int
    right: int
    bottom: int
    left: int


class FaceMatch(_Data):
    """One face found in an image and who it is (or ``person_id`` null: unknown)."""

    index: int = Field(ge=0, description="Position of the face in the image's result (left to right).")
    box: Box
    person_id: str | None = None
    person_name: str | None = Field(
        default=None,
        description="Deprecated, no longer sent: people are named only in the gallery and the "
        "read model, so that an erasure leaves no name in the results topic. Ignored when read.",
    )
    distance: float | None = Field(default=None, description="Distance to the matched (or nearest) person.")
    second_distance: float | None = Field(default=None, description="Distance to the second-nearest person.")
    encoding: Encoding | None = Field(
        default=None,
        description="The face's encoding (128 numbers, float32 precision), so that it can be enrolled "
        "from the result or matched again without detecting. Biometric data: kept only as long as the "
        "image, and nulled when the matched person is erased. Absent from older recognizers' results.",
    )


class ModelInfo(_Data):
    detector: str = "hog"
    encoder: str = "dlib_face_recognition_resnet_model_v1"
    upsample: int = 1
    detection_max_side: int
    num_jitters: int = 1


class MatchRule(_Data):
    """The decision rule that named (or did not name) each face."""

    name: str = Field(description="Rule id, e.g. nearest-person-min/v1.")
    tolerance: float
    margin: float
    aggregation: str = Field(description="How several photos of one person combine (min, mean, centroid).")
    cohort: int = Field(
        default=1,
        ge=1,
        description="The margin is to the mean distance of the next this many people (1: second-nearest).",
    )
    false_accept_target: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="The stated share of strangers' faces that may be named (MATCH_FALSE_ACCEPT), from which"
        " tolerance and margin were derived for the gallery; None: a fixed rule.",
    )
    false_accept_estimate: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="The rate the derivation estimated for the tolerance and margin.",
    )
    calibration: str | None = Field(
        default=None,
        description="How the rate was estimated: leave-one-out (the gallery's own faces) or model.",
    )
    calibrated_people: int | None = Field(
        default=None, ge=0, description="People in the gallery it was derived for."
    )


class Outcome(StrEnum):
    IDENTIFIED = "identified"  # at least one enrolled person named -> status processed
    UNKNOWN_FACES = "unknown_faces"  # faces, none of them enrolled -> unresolved
    NO_FACE = "no_face"  # no face found -> unresolved


class FacesRecognized(_Data):
    """A recognizer processed an image: every face, its box and its match."""

    image_id: str = Field(pattern=UUID_PATTERN)
    run: int = 0
    attempt: int = 1
    outcome: Outcome
    faces: list[FaceMatch]
    width: int
    height: int
    model: ModelInfo
    rule: MatchRule
    gallery_version: int = Field(description="Gallery topic offset the recognizer had applied.")
    gallery_size: int = Field(description="Encodings in the gallery when matched.")
    timings_ms: dict[str, float] = Field(default_factory=dict)
    worker: str | None = None
    submitted_at: datetime | None = None
    recognized_at: datetime


class FaceToMatch(_Data):
    """One face of a :class:`RematchRequested`: where it is and its stored encoding."""

    index: int = Field(ge=0, description="The face's index in the image's result; kept in the new result.")
    box: Box
    encoding: Encoding | None = Field(
        default=None,
        description="The face's encoding as stored with the result. null: the face stays unknown "
        "(its encoding was erased with a person, or the result predates encodings).",
    )


class RematchRequested(_Data):
    """A re-match of an image's faces was asked for: match their stored encodings against
    the gallery again, without the image and without detecting anew (e.g. after a face of
    it was named in review). Travels on ``images.recognize``, keyed by image id.

    The outcome is an ordinary :class:`FacesRecognized` of run ``run`` with the same faces
    (indices, boxes, encodings), so the projector stores it like any newer run. The
    recognizer matches only once it has applied the gallery topic up to
    ``gallery_version`` (its ``Gallery.version``, the offset after the last gallery event
    applied), so that the enrollment that caused the re-match is in.

    Recognizers older than this event see an unknown event type and pass it over (their
    offset is committed and nothing is published): during a rolling upgrade a re-match
    taken by an old replica is lost, not failed, and can be asked for again.
    """

    image_id: str = Field(pattern=UUID_PATTERN, description="Id of the image (UUID); the Kafka key.")
    run: int = Field(ge=1, description="The run the result will carry: the stored run + 1.")
    faces: list[FaceToMatch] = Field(description="Every face of the stored result, each index once.")
    width: int = Field(ge=1, description="The image's width in pixels (upright), as stored.")
    height: int = Field(ge=1, description="The image's height in pixels (upright), as stored.")
    gallery_version: int = Field(
        ge=0,
        description="Match only with a gallery that has applied the gallery topic up to here (the "
        "offset after the enrollment that asked for the re-match).",
    )
    model: ModelInfo = Field(description="The model the encodings were computed with (kept in the result).")
    submitted_at: datetime | None = Field(default=None, description="When the image was submitted.")
    requested_at: datetime
    reason: str | None = Field(
        default=None, max_length=1000, description='Why, for people: e.g. "review: named as <person id>".'
    )

    @model_validator(mode="after")
    def _indices_are_unique(self) -> Self:
        indices = [f.index for f in self.faces]
        if len(set(indices)) != len(indices):
            raise ValueError("each face index may appear once")
        return self


class FailureReason(StrEnum):
    NOT_AN_IMAGE = "not_an_image"
    CORRUPT_IMAGE = "corrupt_image"
    TOO_LARGE = "too_large"
    DECOMPRESSION_BOMB = "decompression_bomb"
    INVALID_EVENT = "invalid_event"
    RETRIES_EXHAUSTED = "retries_exhausted"
    INTERNAL_ERROR = "internal_error"


class RecognitionFailed(_Data):
    """A recognizer could not process an image on this attempt.

    ``retryable`` false means it never can (bad input); true means try again later.
    """

    image_id: str = Field(pattern=UUID_PATTERN)
    run: int = 0
    attempt: int = 1
    reason: FailureReason
    detail: str
    retryable: bool
    worker: str | None = None
    request: RecognitionRequested | None = Field(
        default=None, description="The request that failed, so the stream layer can retry it."
    )


class ImageFailed(_Data):
    """Final: the image will not be recognized; ``reason`` says why."""

    image_id: str = Field(pattern=UUID_PATTERN)
    run: int = 0
    attempts: int
    reason: FailureReason
    detail: str
    failed_at: datetime


class ImageDeadLettered(_Data):
    """A message parked on the dead-letter topic, with a machine-readable reason.

    ``request`` is the last recognition request when there was one; ``raw`` holds the
    original message value (text) when it could not even be parsed.
    """

    reason: FailureReason
    detail: str
    topic: str
    partition: int | None = None
    offset: int | None = None
    request: RecognitionRequested | None = None
    raw: str | None = None


# --------------------------------------------------------------------------- gallery


class PersonEnrolled(_Data):
    """A person was added to the gallery (or renamed). Gallery key ``person:<id>``."""

    person_id: str = Field(pattern=UUID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    enrolled_at: datetime


class FaceEnrolled(_Data):
    """A face encoding was added for a person. Gallery key ``face:<person_id>:<face_id>``.

    The encoding is computed once, at enrollment; recognizers only ever load it.
    """

    person_id: str = Field(pattern=UUID_PATTERN)
    face_id: str = Field(pattern=UUID_PATTERN)
    encoding: list[float] = Field(min_length=128, max_length=128)
    model: ModelInfo
    box: Box
    source_sha256: str | None = None
    filename: str | None = None
    enrolled_at: datetime


# --------------------------------------------------------------------------- face scans


class ScanKind(StrEnum):
    """What the API wants to know about a photo (see :class:`FaceScanRequested`)."""

    ENROLL = "enroll"  # the face to enroll: its encoding from jittered copies, and a crop
    PROBE = "probe"  # the face to verify, encoded as a submitted image's faces are
    DETECT = "detect"  # every face, with its landmarks (and encodings if asked)


#: Which face of a photo: its index (left to right, as results number faces), ``largest``,
#: or null (the only one; a photo with several answers with their boxes).
FaceChoice = Annotated[StrictInt, Field(ge=0)] | Literal["largest"] | None


class FaceScanRequested(_Data):
    """The API asks a recognizer to find a face in a photo, and waits for the answer
    (:class:`FaceScanFinished`, keyed by the same ``request_id``, addressed to ``reply_to``).

    The photo travels inline, base64, as an image does in :class:`ImageSubmitted`. A
    request read after ``expires_at`` is not scanned: the API has answered its client
    already (503), and nobody waits for the reply.
    """

    request_id: str = Field(pattern=UUID_PATTERN, description="Id of the request (UUID); the Kafka key.")
    kind: ScanKind
    image_b64: str = Field(description="The photo file's bytes, base64 (RFC 4648).")
    num_jitters: int = Field(
        default=1, ge=1, le=100, description="enroll: jittered copies averaged into the encoding."
    )
    face: FaceChoice = Field(default=None, description="enroll, probe: which face (index, largest, or null).")
    encodings: bool = Field(default=False, description="detect: give each face's encoding too.")
    check_quality: bool = Field(
        default=True,
        description="enroll: refuse a face that would make a poor template (recognizer.quality).",
    )
    reply_to: str = Field(
        min_length=1, max_length=255, description="The API replica that waits for the answer."
    )
    requested_at: datetime
    expires_at: datetime = Field(description="Nobody waits for the answer after this: do not scan.")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class QualityNote(_Data):
    """Why an enrollment face makes a poor template (``recognizer.quality``, docs/MATCHING.md
    "Enrollment quality"): ``code`` (too_small, blurred, turned), ``severity`` (refuse: not
    enrolled; flag: enrolled, a better photo would do more), a message, and the measured
    ``value`` against the ``limit``."""

    code: str
    severity: Literal["refuse", "flag"]
    message: str
    value: float
    limit: float


class ScanFaceFound(_Data):
    """enroll: the face to enroll (``index`` of ``faces_found``, left to right), its encoding
    and a JPEG crop of it for the person's page; ``quality``: what would make it a better
    template (flags, and refusals the request said to accept)."""

    result: Literal["face_found"] = "face_found"
    index: int = Field(ge=0)
    box: Box
    encoding: Encoding
    faces_found: int = Field(ge=1)
    model: ModelInfo
    crop_b64: str = Field(description="JPEG crop of the face, base64.")
    quality: list[QualityNote] = Field(default_factory=list)

    @classmethod
    def of(
        cls,
        *,
        index: int,
        box: Box,
        encoding: list[float],
        faces_found: int,
        model: ModelInfo,
        crop: bytes,
        quality: list[QualityNote] | None = None,
    ) -> ScanFaceFound:
        return cls(
            index=index,
            box=box,
            encoding=encoding,
            faces_found=faces_found,
            model=model,
            crop_b64=_b64(crop),
            quality=quality or [],
        )

    @property
    def crop(self) -> bytes:
        return base64.b64decode(self.crop_b64)


class ScanProbe(_Data):
    """probe: the face of a photo to verify (``index`` of ``faces_found``, left to right), its
    box and its encoding as the recognizers compute a submitted image's (one jitter)."""

    result: Literal["probe"] = "probe"
    index: int = Field(ge=0)
    box: Box
    encoding: Encoding
    faces_found: int = Field(ge=1)


class ScanSeveralFaces(_Data):
    """enroll, probe: the photo has several faces and none was chosen (or the chosen index
    is past the last): their boxes, left to right."""

    result: Literal["several_faces"] = "several_faces"
    boxes: list[Box]


class ScanNoFace(_Data):
    """enroll, probe: the photo decoded but no face was detected."""

    result: Literal["no_face"] = "no_face"


#: ``ScanRejected.reason`` of an enrollment face that would make a poor template.
POOR_TEMPLATE = "poor_template"


class ScanRejected(_Data):
    """The bytes are not an image that can be decoded, or (enroll) the face would make a
    poor template: ``reason`` (a :class:`FailureReason` value, or :data:`POOR_TEMPLATE`
    with its ``quality`` notes) and ``detail`` say why."""

    result: Literal["rejected"] = "rejected"
    reason: str
    detail: str
    quality: list[QualityNote] = Field(default_factory=list)


class DetectedFace(_Data):
    """detect: one face, its box, its 68 landmarks by feature (face_recognition's names:
    ``chin``, ``left_eye``, ...) as (x, y) pixels of the upright original, and, when asked
    for, its encoding."""

    box: Box
    landmarks: dict[str, list[tuple[int, int]]]
    encoding: Encoding | None = None


class ScanDetection(_Data):
    """detect: every face of the photo, left to right; ``width`` and ``height`` of the
    upright original."""

    result: Literal["detection"] = "detection"
    width: int
    height: int
    faces: list[DetectedFace]


class ScanCrashed(_Data):
    """The photo killed the recognizer process scanning it twice: it is not tried again."""

    result: Literal["crashed"] = "crashed"
    detail: str


class ScanFailed(_Data):
    """The scan raised in the recognizer (a fault of the code, not of the photo): ``detail``
    names the exception. The API answers 500, as for any fault of its own."""

    result: Literal["failed"] = "failed"
    detail: str


#: Every outcome of a scan, told apart by ``result``.
ScanOutcome = Annotated[
    ScanFaceFound
    | ScanProbe
    | ScanSeveralFaces
    | ScanNoFace
    | ScanRejected
    | ScanDetection
    | ScanCrashed
    | ScanFailed,
    Field(discriminator="result"),
]


class FaceScanFinished(_Data):
    """A recognizer's answer to a :class:`FaceScanRequested`, keyed by its ``request_id``:
    read by the API replica ``reply_to`` names, ignored by every other."""

    request_id: str = Field(pattern=UUID_PATTERN, description="The request's id; the Kafka key.")
    reply_to: str = Field(min_length=1, max_length=255)
    kind: ScanKind
    outcome: ScanOutcome
    worker: str | None = None
    seconds: float | None = Field(default=None, ge=0, description="Time the scan took in the recognizer.")
    finished_at: datetime
