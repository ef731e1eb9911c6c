"""``/v1/verify`` and ``/v1/detect``: synchronous face verification and detection; nothing is stored.

Both have the uploaded photos decoded and searched by a recognizer (:mod:`api.scans`,
as enrollment does; 503 if none answers within ``SCAN_TIMEOUT_S``), with the checks
every upload gets: the door's body limit (``MAX_REQUEST_BYTES``), then
``VERIFY_MAX_BYTES`` per photo (413, read no further than the limit), then the decoder's
(not an image, corrupt, or declaring more pixels than the recognizers accept: 422 with
the reason, as enrollment answers). Verification decides with the recognizers' tolerance
and aggregation (``MATCH_TOLERANCE``, ``MATCH_AGGREGATION``; :mod:`api.faces`).

Both need the ``verify`` scope and pass, besides the key's own rate, a rate of their own
(``VERIFY_RATE_PER_MINUTE`` a key, both routes together): each photo costs a recognizer
process about a second, taken from recognition and shared with enrollment.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection
from typing import Annotated, TypeVar

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile, status
from fastapi.responses import JSONResponse

from api import queries
from api.deps import PoolDep, ScansDep, SettingsDep
from api.faces import face_choice, stored_encodings, verdict
from api.models import (
    DetectedFacePublic,
    DetectionPublic,
    FaceChoicePublic,
    LandmarksPublic,
    PhotoFacesPublic,
    VerificationPublic,
    VerifiedFacePublic,
)
from api.scans import PhotoCrashedWorker, ProbeResult, ScanClient
from common.auth import RATE_LIMITED, RateLimiter, principal_of, require
from schemas.events import ScanNoFace, ScanProbe, ScanRejected, ScanSeveralFaces

router = APIRouter(prefix="/v1", tags=["verification"])

_FACE_INDEX = r"^([0-9]{1,4}|largest)$"
_VERIFY_FIELDS = frozenset({"files", "file", "person_id", "face_index", "face_index_2"})
_DETECT_FIELDS = frozenset({"file"})
T = TypeVar("T")


def _photo_rate(request: Request, settings: SettingsDep) -> None:
    """429 once the key has made ``VERIFY_RATE_PER_MINUTE`` calls of these routes in a minute
    (a token bucket per key, like the key's own rate, which ``require`` checked already).
    Keys without a rate (the bootstrap admin key) are not limited."""
    principal = principal_of(request.scope)
    if principal is None or principal.rate_per_minute is None:
        return
    limiter: RateLimiter = request.app.state.verify_limiter
    wait = limiter.acquire(principal.key_id, settings.verify_rate_per_minute)
    if wait > 0:
        RATE_LIMITED.labels("api").inc()
        retry = max(1, math.ceil(wait))
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"rate limit of {settings.verify_rate_per_minute} verifications and detections per minute "
            f"exceeded; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )


_ACCESS = [require("verify"), Depends(_photo_rate)]
_413 = {"description": "A photo is over VERIFY_MAX_BYTES, or the request over MAX_REQUEST_BYTES."}


@router.post(
    "/verify",
    dependencies=_ACCESS,
    response_model=VerificationPublic,
    responses={
        404: {"description": "No person has this person_id."},
        409: {"description": "The person has no enrolled face with a stored encoding to compare with."},
        413: _413,
        422: {
            "model": PhotoFacesPublic,
            "description": "Not two photos (or one and a person_id), a photo that is not an image, has no "
            "face, or has several and no face index for it (then `faces` lists them and `photo` says "
            "which).",
        },
    },
)
async def verify(
    request: Request,
    pool: PoolDep,
    scans: ScansDep,
    settings: SettingsDep,
    files: Annotated[
        list[UploadFile] | None,
        File(description="Two photos to compare: two parts named files (no person_id)."),
    ] = None,
    file: Annotated[
        UploadFile | None, File(description="One photo, compared with the enrolled faces of person_id.")
    ] = None,
    person_id_form: Annotated[
        uuid.UUID | None, Form(alias="person_id", description="The person to compare the photo with.")
    ] = None,
    face_index_form: Annotated[
        str | None, Form(alias="face_index", pattern=_FACE_INDEX, description="As the query parameter.")
    ] = None,
    face_index_2_form: Annotated[
        str | None, Form(alias="face_index_2", pattern=_FACE_INDEX, description="As the query parameter.")
    ] = None,
    person_id: Annotated[
        uuid.UUID | None,
        Query(description="The person whose enrolled faces the photo is compared with (or a form field)."),
    ] = None,
    face_index: Annotated[
        str | None,
        Query(
            pattern=_FACE_INDEX,
            description="Which face of the first photo (left to right, from 0, as the 422 lists them), or "
            "`largest`. Needed only for a photo with several faces. Or a form field.",
        ),
    ] = None,
    face_index_2: Annotated[
        str | None,
        Query(
            pattern=_FACE_INDEX,
            description="The same for the second photo (two files only). Or a form field.",
        ),
    ] = None,
) -> VerificationPublic | JSONResponse:
    """Whether two photos show the same person, or a photo shows an enrolled person: synchronous,
    nothing is stored.

    Send two photos as two parts named `files`, or one `file` and a `person_id`. Each photo's
    face is found and encoded as the recognizers encode a submitted image's; the answer's
    `distance` is between the two encodings, or from the photo's face to the person's
    enrolled faces aggregated as the recognizers aggregate them (`MATCH_AGGREGATION`,
    centroid by default: the mean of their encodings). `same_person` is recognition's
    tolerance test: `distance` at most `threshold` (`MATCH_TOLERANCE`). (Recognition also
    wants the nearest person to stand out from the next ones in the gallery, a margin that
    has no meaning one to one.)

    A photo with several faces answers 422 listing their boxes, unless `face_index` (first
    photo) or `face_index_2` (second) says which; no face, or not an image, is 422 too.
    404 unknown person, 409 a person with no stored encoding, 413 a photo over
    `VERIFY_MAX_BYTES`. Needs the `verify` scope; limited to `VERIFY_RATE_PER_MINUTE` calls
    a key (with `/v1/detect`).
    """
    await _known_fields(request, _VERIFY_FIELDS)
    person = _one_of(person_id, person_id_form, "person_id")
    choices = [
        face_choice(_one_of(face_index, face_index_form, "face_index")),
        face_choice(_one_of(face_index_2, face_index_2_form, "face_index_2")),
    ]
    uploads = _photos(files, file, person)
    if person is not None and choices[1] is not None:
        raise _invalid("face_index_2 chooses a face of a second photo; with person_id there is one photo")
    labels = ["the photo"] if len(uploads) == 1 else ["the first photo", "the second photo"]
    photos = [
        await _read(upload, settings.verify_max_bytes, label)
        for upload, label in zip(uploads, labels, strict=True)
    ]
    enrolled: list[list[float]] = []
    if person is not None:
        if not await queries.person_exists(pool, person):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no person with id {person}")
        rows = await pool.fetch(
            "SELECT encoding FROM person_faces WHERE person_id = $1 AND encoding IS NOT NULL ORDER BY id",
            person,
        )
        if not rows:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"person {person} has no enrolled face with a stored encoding to compare with: "
                "enroll a photo of them first",
            )
        enrolled = stored_encodings([r["encoding"] for r in rows])
    probes: list[ScanProbe] = []
    for number, (data, label) in enumerate(zip(photos, labels, strict=True), start=1):
        found = await _probe(scans, data, choices[number - 1], number, label)
        if isinstance(found, JSONResponse):
            return found
        probes.append(found)
    against = enrolled if person is not None else [probes[1].encoding]
    decided = verdict(probes[0].encoding, against, settings.match_tolerance, settings.match_aggregation)
    return VerificationPublic(
        same_person=decided.same_person,
        distance=round(decided.distance, 4),
        threshold=settings.match_tolerance,
        faces=[
            VerifiedFacePublic(photo=n, index=p.index, box=p.box, faces_found=p.faces_found)
            for n, p in enumerate(probes, start=1)
        ],
        person_id=person,
        enrolled_faces=len(enrolled) if person is not None else None,
        aggregation=settings.match_aggregation,
    )


@router.post(
    "/detect",
    dependencies=_ACCESS,
    responses={
        413: _413,
        422: {"description": "Not an image, or one that cannot be decoded (the reason is given)."},
    },
)
async def detect(
    request: Request,
    file: Annotated[UploadFile, File(description="The photo.")],
    scans: ScansDep,
    settings: SettingsDep,
    encodings: Annotated[
        bool,
        Query(description="Also give each face's 128-number encoding (as a result carries it)."),
    ] = False,
) -> DetectionPublic:
    """Every face in a photo, left to right as results number them: its box, its 68 landmarks
    and, with `encodings=true`, its encoding. Synchronous; nothing is stored.

    Faces are found as the recognizers find them (the same boxes a submitted image would
    get, in pixels of the upright original). Landmarks are face_recognition's 68 points by
    feature (`chin`, `left_eyebrow`, `right_eyebrow`, `nose_bridge`, `nose_tip`, `left_eye`,
    `right_eye`, `top_lip`, `bottom_lip`); the chin's often lie outside the box. A photo
    without a face answers 200 with no faces. 413 a photo over `VERIFY_MAX_BYTES`, 422 not
    an image. Needs the `verify` scope; limited to `VERIFY_RATE_PER_MINUTE` calls a key (with
    `/v1/verify`).
    """
    await _known_fields(request, _DETECT_FIELDS)
    data = await _read(file, settings.verify_max_bytes, "the photo")
    try:
        found = await scans.detect(data, encodings)
    except PhotoCrashedWorker:
        raise _invalid("the photo is not a usable image: reading it crashed the worker twice") from None
    if isinstance(found, ScanRejected):
        raise _invalid(f"the photo is not a usable image ({found.reason}): {found.detail}")
    return DetectionPublic(
        width=found.width,
        height=found.height,
        faces=[
            DetectedFacePublic(
                index=i, box=f.box, landmarks=LandmarksPublic(**f.landmarks), encoding=f.encoding
            )
            for i, f in enumerate(found.faces)
        ],
        count=len(found.faces),
    )


# ------------------------------------------------------------------------------- helpers


def _invalid(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail)


async def _known_fields(request: Request, known: Collection[str]) -> None:
    """422 for a form field the route does not take: FastAPI would ignore it, and a misspelt
    ``face_index`` would silently compare another face."""
    unknown = sorted(set((await request.form()).keys()) - set(known))
    if unknown:
        raise _invalid(
            f"invalid request: unknown form field {', '.join(map(repr, unknown))} "
            f"(this path takes: {', '.join(sorted(known))})"
        )


def _one_of(query: T | None, form: T | None, name: str) -> T | None:
    """The value given as a query parameter or a form field; 422 if both, and they differ."""
    if query is not None and form is not None and query != form:
        raise _invalid(f"{name} is given twice, as a query parameter and a form field, with different values")
    return query if query is not None else form


def _photos(
    files: list[UploadFile] | None, file: UploadFile | None, person: object | None
) -> list[UploadFile]:
    """The photos to compare, first to last; 422 unless two ``files``, or one photo (``file``,
    or a single ``files`` part) and a person."""
    files = files or []
    if person is not None:
        if len(files) + (file is not None) != 1:
            raise _invalid("with person_id, send one photo (a part named file)")
        return [file] if file is not None else files
    if file is not None or len(files) != 2:
        raise _invalid(
            "send two photos as two parts named files, or one photo (file) and a person_id; "
            f"got {len(files)} part(s) named files and {'one' if file is not None else 'no'} named file"
        )
    return files


async def _read(upload: UploadFile, limit: int, label: str) -> bytes:
    """The upload's bytes; 413, having read no more than ``limit`` + 1 bytes, if it has more."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE, f"{label} is larger than {limit} bytes (VERIFY_MAX_BYTES)"
        )
    return data


async def _probe(
    scans: ScanClient, data: bytes, choice: int | str | None, number: int, label: str
) -> ScanProbe | JSONResponse:
    """The face of one photo to compare (scanned by a recognizer); 422 (raised) for a photo that
    is not an image or has no face, and returned for one with several faces (their boxes)."""
    try:
        found: ProbeResult = await scans.probe(data, choice)
    except PhotoCrashedWorker:
        raise _invalid(f"{label} is not a usable image: reading it crashed the worker twice") from None
    if isinstance(found, ScanRejected):
        raise _invalid(f"{label} is not a usable image ({found.reason}): {found.detail}")
    if isinstance(found, ScanNoFace):
        raise _invalid(f"no face found in {label}")
    if isinstance(found, ScanSeveralFaces):
        parameter = "face_index" if number == 1 else "face_index_2"
        asked = "" if choice is None else f" ({parameter} {choice} is not one of them)"
        body = PhotoFacesPublic(
            detail=f"{label} has {len(found.boxes)} faces{asked}: say which with {parameter} "
            f"(0 to {len(found.boxes) - 1}, left to right) or {parameter}=largest",
            photo=number,
            faces=[FaceChoicePublic(index=i, box=b) for i, b in enumerate(found.boxes)],
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    return found
