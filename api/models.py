"""Request and response bodies of the results API (``XPublic`` / ``XsPublic{data,count}``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.events import Box, QualityNote
from schemas.lifecycle import Status
from schemas.webhooks import WebhookEvent


def _storable(v: str) -> str:
    # PostgreSQL text cannot hold NUL, and lone surrogates are not UTF-8: refuse them
    # here as bad input rather than fail in the database with a 500.
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return v


#: Client-supplied text that will be stored or compared in the database.
Text = Annotated[str, AfterValidator(_storable)]


def storable_filename(name: str | None) -> str | None:
    """An uploaded file's name, made storable (multipart names are not validated input)."""
    if name is None:
        return None
    return name.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")[:1024] or None


#: An image's status (schemas/lifecycle.py is the one place the words are spelled).
ImageStatus = Status


class RerunnableStatus(StrEnum):
    """The statuses a re-run may start from (schemas.lifecycle.RERUNNABLE; a unit test
    checks they agree): the image's last run is over without a name."""

    UNRESOLVED = "unresolved"
    FAILED = "failed"


class _Public(BaseModel):
    model_config = ConfigDict(frozen=True)


class FacePublic(_Public):
    index: int
    box: Box
    person_id: uuid.UUID | None
    person_name: str | None
    distance: float | None


class ImagePublic(_Public):
    id: uuid.UUID
    status: ImageStatus
    status_reason: str | None
    status_detail: str | None
    filename: str | None
    content_type: str | None
    size_bytes: int | None
    source: str | None
    camera: str | None
    metadata: dict[str, Any]
    submitted_at: datetime | None
    finished_at: datetime | None
    width: int | None
    height: int | None
    face_count: int | None
    run: int
    attempts: int
    gallery_version: int | None
    rule: dict[str, Any] | None
    model: dict[str, Any] | None
    faces: list[FacePublic]


class ImagesPublic(_Public):
    data: list[ImagePublic]
    count: int = Field(
        description="Images matching the filter, whatever the page, counted up to 10,000 (see count_capped)."
    )
    count_capped: bool = Field(default=False, description="More than 10,000 images match: count stops there.")
    next_cursor: str | None = Field(
        default=None,
        description="Pass as `cursor` for the next (older) page; null on the last page. Keyset "
        "paging: a page does not shift when new images arrive.",
    )


class PersonErasedPublic(_Public):
    person_id: uuid.UUID
    faces_removed: int = Field(description="Enrolled faces tombstoned on the gallery topic.")


class ImageErasedPublic(_Public):
    image_id: uuid.UUID


class DeadLetterReplayPublic(_Public):
    replayed: int = Field(description="Dead-lettered images resubmitted as a new run.")
    skipped: int = Field(description="Parked messages that carry no image (not replayable).")
    erased: int = Field(
        default=0, description="Dead-lettered images erased since: passed over, never resubmitted."
    )


class RerunPublic(_Public):
    image_id: uuid.UUID
    run: int = Field(description="The run the resubmitted image will be recognized as.")


class RerunsPublic(_Public):
    rerun: int = Field(description="Images resubmitted.")
    skipped: int = Field(description="Images of that status whose bytes are no longer stored.")
    matched: int = Field(default=0, description="Images in the scope (at most the limit): rerun + skipped.")
    not_rerunnable: list[uuid.UUID] = Field(
        default_factory=list,
        description="Of the ids asked for, those not re-run: unknown, or of another status than asked "
        "(processed, pending), or past the limit.",
    )


class RerunOrder(StrEnum):
    OLDEST = "oldest"
    NEWEST = "newest"


#: Most images one bulk re-run resubmits; each one is a full image on the broker.
RERUN_MAX = 10_000


class RerunScope(BaseModel):
    """Which failed or unresolved images ``POST /v1/images/rerun`` resubmits: every field
    narrows the scope (all of them together); an empty body is every such image."""

    model_config = ConfigDict(extra="forbid")

    ids: list[uuid.UUID] | None = Field(
        default=None, min_length=1, max_length=RERUN_MAX, description="Only these images."
    )
    status: list[RerunnableStatus] | None = Field(
        default=None,
        min_length=1,
        description="Only images of these statuses (default: failed and unresolved).",
    )
    camera: Text | None = Field(default=None, min_length=1, max_length=255, description="Only this camera's.")
    since: AwareDatetime | None = Field(default=None, description="Only images submitted at or after this.")
    until: AwareDatetime | None = Field(default=None, description="Only images submitted before this.")
    order: RerunOrder = Field(
        default=RerunOrder.OLDEST, description="Which images go first (and which the limit keeps)."
    )
    limit: int | None = Field(
        default=None, ge=1, le=RERUN_MAX, description="At most this many (default 1000)."
    )

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise ValueError("until must be after since")
        return self


def _trimmed(v: str) -> str:
    v = v.strip()
    if not v:
        raise ValueError("must not be blank")
    return v


#: A person's name: storable text, trimmed, not blank.
PersonName = Annotated[
    Text,
    Field(min_length=1, max_length=200, description="Shown as given, trimmed."),
    AfterValidator(_trimmed),
]


class PersonCreate(BaseModel):
    """``id`` is optional; a client that sends one may retry the request safely."""

    id: uuid.UUID | None = None
    name: PersonName


class PersonPublic(_Public):
    id: uuid.UUID
    name: str
    face_count: int
    created_at: datetime


class PeoplePublic(_Public):
    data: list[PersonPublic]
    count: int


class EnrolledFacePublic(_Public):
    face_id: uuid.UUID
    person_id: uuid.UUID
    box: Box | None
    filename: str | None
    enrolled_at: datetime
    crop_url: str | None = Field(default=None, description="A JPEG crop of the face, when one was kept.")
    source_image_id: uuid.UUID | None = Field(
        default=None, description="The image it was named in, for a face enrolled from a result."
    )


class PersonDetailPublic(PersonPublic):
    faces: list[EnrolledFacePublic]


class FaceEnrollmentPublic(EnrolledFacePublic):
    faces_found: int | None = Field(
        description="Faces in the photo; with several, the largest was enrolled. Null on a replay."
    )
    quality: list[QualityNote] = Field(
        default_factory=list,
        description="Why this face makes a poorer template than it could (too_small, blurred, turned), with"
        " the measured value and the limit; empty for a good one, and on a replay.",
    )


class PoorTemplatePublic(_Public):
    """422 of an enrollment face that would make a poor template (docs/MATCHING.md,
    "Enrollment quality"); ``accept_poor=true`` enrolls it anyway."""

    detail: str
    quality: list[QualityNote]


class FaceChoicePublic(_Public):
    index: int = Field(description="Pass as face_index to enroll this face.")
    box: Box


class SeveralFacesPublic(_Public):
    """422 of an enrollment photo with several faces and no face_index."""

    detail: str
    faces: list[FaceChoicePublic] = Field(description="The photo's faces, left to right.")


class FaceRemovedPublic(_Public):
    person_id: uuid.UUID
    face_id: uuid.UUID


class PersonRename(BaseModel):
    name: PersonName


class PersonMerge(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: uuid.UUID = Field(alias="from", description="The person merged into this one, then erased.")


class PersonMergedPublic(_Public):
    person_id: uuid.UUID
    merged: uuid.UUID = Field(description="The person merged in, now erased.")
    faces_moved: int = Field(description="Their enrolled faces, enrolled again under this person.")
    faces_relabelled: int = Field(description="Faces in results that named them and now name this person.")


class ReviewFacePublic(_Public):
    image_id: uuid.UUID
    face_index: int
    box: Box
    seen_at: datetime | None
    camera: str | None
    filename: str | None
    crop_url: str
    distance: float | None = Field(
        description="Distance to the nearest enrolled person when it went unknown."
    )


class ReviewGroupPublic(_Public):
    size: int = Field(description="Faces in the group (the list shows the newest 24).")
    faces: list[ReviewFacePublic]


class ReviewGroupsPublic(_Public):
    groups: list[ReviewGroupPublic]
    groups_total: int = Field(description="Groups found, whatever the limit.")
    faces_considered: int = Field(description="Unknown faces grouped: the newest, up to the window.")
    window: int = Field(description="REVIEW_WINDOW: the most unknown faces grouped at once.")


class FaceRef(BaseModel):
    image_id: uuid.UUID
    face_index: int = Field(ge=0, le=10_000)


class ReviewAssign(BaseModel):
    """Name these faces: ``person_id`` (an existing person) or ``name`` (a new one), not both."""

    faces: list[FaceRef] = Field(min_length=1, max_length=500)
    person_id: uuid.UUID | None = None
    name: PersonName | None = None

    @model_validator(mode="after")
    def _one_target(self) -> ReviewAssign:
        if (self.person_id is None) == (self.name is None):
            raise ValueError("give person_id (an existing person) or name (a new one), not both")
        return self


class AssignPublic(_Public):
    person_id: uuid.UUID
    enrolled: int = Field(description="Faces enrolled from their stored encodings (FaceEnrolled).")
    rematched: int = Field(description="Images asked to be matched again (RematchRequested).")
    skipped: int = Field(description="Faces passed over: no longer unknown, or no stored encoding.")


class FaceConfirm(BaseModel):
    """Confirm a face of a result: as the person it names (no ``person_id``) or as ``person_id``."""

    person_id: uuid.UUID | None = Field(
        default=None, description="Who the face is: a correction, or a name for an unknown face."
    )


class FaceConfirmedPublic(EnrolledFacePublic):
    image_id: uuid.UUID
    face_index: int
    enrolled: bool = Field(description="Enrolled now (FaceEnrolled); false when an earlier call did.")
    was_named: uuid.UUID | None = Field(
        description="The other person the result named the face as (a correction); null otherwise."
    )
    rematched: bool = Field(description="The image was asked to be matched again (RematchRequested).")


# ------------------------------------------------------------ verification and detection


#: A landmark: ``[x, y]`` in pixels of the original, upright image.
Point = tuple[int, int]


class VerifiedFacePublic(_Public):
    photo: int = Field(description="1: the first photo (`file`, or the first of `files`); 2: the second.")
    index: int = Field(description="Which face of that photo was compared (left to right, from 0).")
    box: Box
    faces_found: int = Field(description="Faces found in that photo.")


class VerificationPublic(_Public):
    """The answer of ``POST /v1/verify``."""

    same_person: bool = Field(description="Whether distance is at most threshold: recognition's rule.")
    distance: float = Field(
        description="Euclidean distance between the two faces' encodings, or from the face to the "
        "person's enrolled faces aggregated as the recognizers do (see aggregation); 4 decimals."
    )
    threshold: float = Field(description="The recognizers' tolerance (MATCH_TOLERANCE).")
    faces: list[VerifiedFacePublic] = Field(description="The face used from each photo, in photo order.")
    person_id: uuid.UUID | None = Field(description="The person compared with; null for two photos.")
    enrolled_faces: int | None = Field(
        description="The person's enrolled faces (with a stored encoding) compared with; null for two photos."
    )
    aggregation: str = Field(
        description="How a person's enrolled faces make one distance (MATCH_AGGREGATION): centroid, the "
        "distance to the mean of their encodings; min, to the nearest; mean, the average distance."
    )


class PhotoFacesPublic(_Public):
    """422 of a verification photo with several faces and no face index for it."""

    detail: str
    photo: int = Field(description="Which photo: 1 (chosen with face_index) or 2 (face_index_2).")
    faces: list[FaceChoicePublic] = Field(description="The photo's faces, left to right.")


class LandmarksPublic(_Public):
    """face_recognition's 68 landmarks (dlib's shape model), by feature, as ``[x, y]`` points
    in pixels of the original image. The chin's points often lie outside the box (the
    detector's box is tight around the eyes, nose and mouth), and may lie outside the image."""

    chin: list[Point] = Field(description="17 points along the jaw, from the image's left to its right.")
    left_eyebrow: list[Point] = Field(description="5 points (the image's left).")
    right_eyebrow: list[Point] = Field(description="5 points (the image's right).")
    nose_bridge: list[Point] = Field(description="4 points, top down.")
    nose_tip: list[Point] = Field(description="5 points along the bottom of the nose.")
    left_eye: list[Point] = Field(description="6 points around the eye (the image's left).")
    right_eye: list[Point] = Field(description="6 points around the eye (the image's right).")
    top_lip: list[Point] = Field(description="12 points around the upper lip.")
    bottom_lip: list[Point] = Field(description="12 points around the lower lip.")


class DetectedFacePublic(_Public):
    index: int = Field(description="Position of the face (left to right, from 0), as results number them.")
    box: Box
    landmarks: LandmarksPublic
    encoding: list[float] | None = Field(
        description="The face's 128-number encoding, as a result carries it; only with encodings=true."
    )


class DetectionPublic(_Public):
    """The answer of ``POST /v1/detect``."""

    width: int = Field(description="Width of the upright image, in pixels (the boxes' frame).")
    height: int = Field(description="Height of the upright image, in pixels.")
    faces: list[DetectedFacePublic] = Field(description="Every face found, left to right; empty for none.")
    count: int = Field(description="How many faces.")


# --------------------------------------------------------------------------- webhooks


class WebhookCreate(BaseModel):
    """A webhook: where to POST, which events, and optional filters (empty: any)."""

    model_config = ConfigDict(extra="forbid")

    url: Text = Field(min_length=1, max_length=2048, description="http(s) URL the deliveries are POSTed to.")
    events: list[WebhookEvent] = Field(min_length=1, max_length=len(WebhookEvent))
    cameras: list[Annotated[Text, Field(min_length=1, max_length=255)]] = Field(
        default_factory=list, max_length=1000, description="Only images from these cameras (empty: any)."
    )
    people: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=1000,
        description="Only events naming one of these people (empty: any; with people, face.unknown and "
        "image.failed never match).",
    )


class WebhookCreatedPublic(_Public):
    id: uuid.UUID
    secret: str = Field(description="The signing key: shown in this answer and never again.")


class WebhookPublic(_Public):
    id: uuid.UUID
    url: str
    events: list[WebhookEvent]
    cameras: list[str]
    people: list[uuid.UUID]
    created_at: datetime


class WebhooksPublic(_Public):
    data: list[WebhookPublic]
    count: int


class WebhookDeliveryPublic(_Public):
    id: uuid.UUID = Field(description="The delivery id (X-Facestream-Delivery), the same on every attempt.")
    event: WebhookEvent
    image_id: uuid.UUID
    run: int
    face_index: int | None
    state: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status: int | None = Field(description="The last attempt's HTTP status, if it got an answer.")
    last_error: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = Field(description="When a pending delivery is tried next.")
    finished_at: datetime | None


class WebhookDeliveriesPublic(_Public):
    data: list[WebhookDeliveryPublic]
    count: int
