"""Verification's decision, pure: the distance between a face and a person (or another face)
as the recognizers compute it, and whether it passes their tolerance.

The distance comes from the recognizers' own gallery (:class:`recognizer.gallery.Gallery`,
numpy only: no dlib here), holding just the one person: each enrolled encoding as float32,
the person's distance aggregated over them (``centroid``: to the mean of the encodings;
``min``; ``mean``) exactly as a recognizer aggregates it. The decision is the tolerance
part of their rule (``distance <= tolerance``). The margin part compares the nearest
person with the next ones in a gallery; with one person there are no next ones, which is
also how a recognizer treats a gallery of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from api.scans import LARGEST, FaceChoice
from recognizer.gallery import Gallery
from schemas.encoding import DIM, NBYTES, EncodingError

#: The one person of a verification's gallery.
_PERSON = "verified"


@dataclass(frozen=True)
class Verdict:
    """The distance between the probe and the person, and whether it is within ``tolerance``."""

    distance: float
    same_person: bool


def verdict(
    probe: Sequence[float], enrolled: Sequence[Sequence[float]], tolerance: float, aggregation: str
) -> Verdict:
    """Compare the ``probe`` encoding with one person's ``enrolled`` encodings (at least one).

    The distance is unrounded; raises ValueError for an unknown aggregation or no encoding.
    """
    if not enrolled:
        raise ValueError("a person needs at least one encoding to be compared with")
    gallery = Gallery(ann_threshold=0)  # exact search: one person
    for i, encoding in enumerate(enrolled):
        gallery.add_face(_PERSON, str(i), np.asarray(encoding, dtype=np.float32))
    per, _ = gallery.person_distances(np.asarray(probe, dtype=np.float32), aggregation)
    distance = float(per[0, 0])
    return Verdict(distance=distance, same_person=distance <= tolerance)


def stored_encodings(rows: Sequence[bytes]) -> list[list[float]]:
    """``person_faces.encoding`` values (512 bytes: 128 float32, little-endian) as numbers.

    Raises :class:`~schemas.encoding.EncodingError` for a value of the wrong length.
    """
    out = []
    for data in rows:
        if len(data) != NBYTES:
            raise EncodingError(f"a stored encoding is {NBYTES} bytes, not {len(data)}")
        out.append(np.frombuffer(data, dtype="<f4").reshape(DIM).tolist())
    return out


def face_choice(value: str | None) -> FaceChoice:
    """A ``face_index`` parameter (digits or ``largest``, already validated) as
    :meth:`api.scans.ScanClient.probe` takes it."""
    if value is None or value == LARGEST:
        return value
    return int(value)
