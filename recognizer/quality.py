"""Whether an enrollment face makes a good template: measured, then judged against limits.

Pure: numbers in, numbers and verdicts out; no HTTP, database or file access. The
enrollment scan calls :func:`measure` on the decoded RGB array it already holds (with the
chosen face's box in that array's pixels, and the 68 landmarks if it has them) and
:func:`judge` on the result; a ``refuse`` issue means "do not enroll, say why", a
``flag`` means "enroll, and report the warning".

The limits come from ``python -m benchmarks.enroll_quality`` (docs/MATCHING.md,
"Enrollment quality"; ``docs/bench/enroll_quality-2cores.json``, ``enroll_quality.png``):
each is where the template's quality falls off clearly on lfw-dev.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from schemas.events import Box

#: 68-point landmarks by feature, as ``face_recognition.face_landmarks`` returns them.
Landmarks = Mapping[str, Sequence[tuple[float, float]]]
#: (top, right, bottom, left), face_recognition's order.
Location = tuple[int, int, int, int]

IssueCode = Literal["too_small", "blurred", "turned"]
Severity = Literal["refuse", "flag"]

# --- the limits (docs/MATCHING.md, "Enrollment quality", has the figures) ---------------

# Chosen on lfw-dev with one template per person in the 285-person gallery (k = 1) and
# the shipped rule (derived for that gallery from MATCH_FALSE_ACCEPT=1%: tolerance 0.60,
# margin 0.15), where a full-size, sharp, frontal template names 61-65% of the person's
# other photos. Refuse: the template names under half of that, or starts giving the
# person's photos to somebody else. Flag: it names clearly fewer (5-29 points), or the
# evidence is thinner; the person can still be recognised, a better photo would do more.
# The figures: docs/MATCHING.md, "Enrollment quality".

#: Face box height, in pixels of the array the face is encoded from. Templates from
#: 60 px up name as many as full-size ones (63.1-63.4% by box bin); 52 px boxes lose 4.6
#: points, the detector's smallest boxes (36 px) 6-17, and a 20 px face (which the
#: shipped detector does not even find) 46: refused, for boxes that come from elsewhere.
MIN_HEIGHT_REFUSE = 30
MIN_HEIGHT_FLAG = 60
#: :func:`sharpness`. From 2 up templates name 61-65%; 1.5-2 names 54%, 1-1.5 46%;
#: under 1 (a blur of sigma about 2% of the face's height) they name 24% or fewer, under
#: half (and give 0.3-0.6% of the person's photos to somebody else, 0.0-0.3% when sharp).
#: Natural photos under 2: 4% of lfw-dev's; under 1: 0.3%.
MIN_SHARPNESS_REFUSE = 1.0
MIN_SHARPNESS_FLAG = 2.0
#: |:func:`yaw`|. Flat (59-63%) up to 0.6, 57% at 0.6-0.75, 34% over 0.75 (33 of about
#: 1,400 photos, 2%). Flagged, never refused: no wrong names, and a turned photo beside a
#: frontal one can help with turned probes.
MAX_YAW_FLAG = 0.75

#: The side, in pixels, of the square the face crop is resized to before its sharpness is
#: measured: the size at which dlib's encoder sees a face (a 150 px chip with 25% padding
#: around it), so blur finer than the encoder can see does not count and the score does
#: not depend on the photo's resolution.
SHARPNESS_SIDE = 100


@dataclass(frozen=True)
class FaceQuality:
    """What one face measures.

    ``height_px``: the box's height (clipped to the image), in the array's pixels.
    ``sharpness``: :func:`sharpness` of the box's crop; higher is sharper.
    ``yaw``: :func:`yaw`, signed: -1..1, 0 frontal.
    """

    height_px: int
    sharpness: float
    yaw: float


@dataclass(frozen=True)
class QualityIssue:
    """One reason the face makes a poor template: ``value`` measured against ``limit``."""

    code: IssueCode
    severity: Severity
    message: str
    value: float
    limit: float


def measure(
    image: npt.NDArray[np.uint8], box: Box | Location, landmarks: Landmarks | None = None
) -> FaceQuality:
    """Measure the face in ``box`` of ``image`` (RGB ``uint8``, (H, W, 3)).

    ``box`` is in ``image``'s pixels (a :class:`~schemas.events.Box` or face_recognition's
    (top, right, bottom, left)); parts outside the image are clipped away. ``landmarks``
    are face_recognition's 68 points for that box (``face_landmarks(..., model="large")``,
    in ``image``'s pixels); when None they are computed here, which loads dlib's models.
    Raises ``ValueError`` when the box has no pixel inside the image.
    """
    top, right, bottom, left = _clip(image, box)
    if landmarks is None:
        landmarks = _landmarks(image, (top, right, bottom, left))
    return FaceQuality(
        height_px=bottom - top,
        sharpness=sharpness(image[top:bottom, left:right]),
        yaw=yaw(landmarks),
    )


def judge(q: FaceQuality) -> list[QualityIssue]:
    """Every limit ``q`` breaks, refusals first; an empty list: a good template."""
    issues: list[QualityIssue] = []
    if q.height_px < MIN_HEIGHT_FLAG:
        refuse = q.height_px < MIN_HEIGHT_REFUSE
        limit = MIN_HEIGHT_REFUSE if refuse else MIN_HEIGHT_FLAG
        issues.append(
            QualityIssue(
                "too_small",
                "refuse" if refuse else "flag",
                f"the face is {q.height_px} px high, under the {limit} px"
                f" {'needed' if refuse else 'advised'}: use a larger or closer photo",
                float(q.height_px),
                float(limit),
            )
        )
    if q.sharpness < MIN_SHARPNESS_FLAG:
        refuse = q.sharpness < MIN_SHARPNESS_REFUSE
        limit_s = MIN_SHARPNESS_REFUSE if refuse else MIN_SHARPNESS_FLAG
        issues.append(
            QualityIssue(
                "blurred",
                "refuse" if refuse else "flag",
                f"the face is blurred: sharpness {q.sharpness:.2f}, under the {limit_s:.2f}"
                f" {'needed' if refuse else 'advised'}: use a sharper photo",
                q.sharpness,
                limit_s,
            )
        )
    if abs(q.yaw) > MAX_YAW_FLAG:
        issues.append(
            QualityIssue(
                "turned",
                "flag",
                f"the face is turned to the side: yaw {abs(q.yaw):.2f}, over the {MAX_YAW_FLAG:.2f}"
                " advised: a photo facing the camera makes a better template",
                abs(q.yaw),
                MAX_YAW_FLAG,
            )
        )
    return sorted(issues, key=lambda i: i.severity != "refuse")


def sharpness(crop: npt.NDArray[np.uint8]) -> float:
    """How sharp a face crop (RGB or grey ``uint8``) is, whatever its size or contrast.

    100 times the variance of the Laplacian of the crop in grey, resized to
    :data:`SHARPNESS_SIDE` px square and scaled to unit standard deviation (so a dim or
    low-contrast face is not taken for a blurred one). A flat crop scores 0. On lfw-dev's
    photos the median is 5.7 and 99% score over 1.4; a Gaussian blur of sigma 1% of the
    face's height brings a face to about 2, 2% to about 0.8. A face smaller than the
    square is enlarged first, so it scores low too: the encoder sees it that blurred.
    """
    if crop.size == 0:
        raise ValueError("an empty crop has no sharpness")
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY) if crop.ndim == 3 else crop
    h, w = grey.shape[:2]
    # Area averaging to shrink (no aliasing), bilinear to enlarge (a small face is seen
    # by the encoder enlarged and blurry: so it is measured).
    shrink = h >= SHARPNESS_SIDE and w >= SHARPNESS_SIDE
    square = cv2.resize(
        grey,
        (SHARPNESS_SIDE, SHARPNESS_SIDE),
        interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
    ).astype(np.float64)
    std = float(square.std())
    if std < 1e-6:
        return 0.0
    lap = cv2.Laplacian((square - square.mean()) / std, cv2.CV_64F)
    return 100.0 * float(lap.var())  # scaled so that a typical face scores a few units


def yaw(landmarks: Landmarks) -> float:
    """How far the face is turned left or right, from its 68 landmarks: -1..1.

    The nose tip's position between the two ends of the jaw line (points 0 and 16, at
    the ears), along the line joining them (so a tilted head reads the same): 0 when the
    nose is midway (frontal), +1 or -1 when it reaches one end (profile). Positive: the
    nose points to the image's right. Not an angle, and it grows faster than one once the
    far side of the jaw is hidden: on lfw-dev half the photos are under 0.23, 95% under
    0.66; the 2% over 0.75 are visibly turned, those near 1 near profiles. Raises
    ``ValueError`` without the ``chin`` and ``nose_bridge`` features (the 5-point
    ``small`` model has neither).
    """
    try:
        jaw, bridge = landmarks["chin"], landmarks["nose_bridge"]
    except KeyError as exc:
        raise ValueError(f"the 68-point landmarks are needed (no {exc.args[0]!r})") from None
    a = np.asarray(jaw[0], dtype=np.float64)
    b = np.asarray(jaw[-1], dtype=np.float64)
    tip = np.asarray(bridge[-1], dtype=np.float64)
    axis = b - a
    length = math.hypot(*axis)
    if length == 0:
        return 0.0
    t = float((tip - a) @ axis) / (length * length)  # 0 at point 0, 1 at point 16
    return float(np.clip(2.0 * t - 1.0, -1.0, 1.0))


def _clip(image: npt.NDArray[np.uint8], box: Box | Location) -> Location:
    top, right, bottom, left = (box.top, box.right, box.bottom, box.left) if isinstance(box, Box) else box
    h, w = image.shape[:2]
    top, bottom = max(0, int(top)), min(h, int(bottom))
    left, right = max(0, int(left)), min(w, int(right))
    if bottom <= top or right <= left:
        raise ValueError(f"the box {box} has no pixel inside the {w}x{h} image")
    return top, right, bottom, left


def _landmarks(image: npt.NDArray[np.uint8], location: Location) -> Landmarks:
    with warnings.catch_warnings():
        # face_recognition_models imports pkg_resources, which warns on import.
        warnings.simplefilter("ignore")
        import face_recognition

    [marks] = face_recognition.face_landmarks(image, face_locations=[location], model="large")
    return marks  # type: ignore[no-any-return]
