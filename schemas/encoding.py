"""A face encoding's two forms: 128 numbers in an event, 512 bytes in PostgreSQL.

Events carry an encoding as a JSON array of 128 numbers (``FaceMatch.encoding``,
``FaceToMatch.encoding``, ``FaceEnrolled.encoding``); the read model stores it as
``bytea``: 128 float32, little-endian (``faces.encoding``, ``person_faces.encoding``,
migration 0002). The gallery holds float32 too, so nothing that matches is lost on the way.

:func:`floats` gives the numbers an event carries: each a decimal of at most 9
significant digits that reads back as the same float32, so an encoding is about 1.7 KB of
JSON and ``pack(floats(x)) == pack(x)``: a stored encoding and the event it came from
agree bit for bit. Pure and light (numpy only): the API, the stream worker and the
recognizer all import it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

#: Numbers in an encoding (dlib's face_recognition_resnet_model_v1).
DIM = 128
#: Bytes of a stored encoding: DIM float32.
NBYTES = DIM * 4
_WIRE = np.dtype("<f4")


class EncodingError(ValueError):
    """Not an encoding: the wrong length, or a number that is not finite."""


def _vector(values: Sequence[float] | npt.ArrayLike) -> npt.NDArray[np.float32]:
    try:
        vec = np.asarray(values, dtype=_WIRE)
    except (TypeError, ValueError) as exc:
        raise EncodingError(f"not an encoding: {exc}") from None
    if vec.shape != (DIM,):
        raise EncodingError(f"an encoding has {DIM} numbers, not shape {vec.shape}")
    if not np.isfinite(vec).all():
        raise EncodingError("an encoding's numbers must be finite")
    return vec


def pack(values: Sequence[float] | npt.ArrayLike) -> bytes:
    """The 512 bytes stored for an encoding (128 float32, little-endian)."""
    return _vector(values).tobytes()


def unpack(data: bytes) -> list[float]:
    """The numbers of a stored encoding, as :func:`floats` gives them (for an event)."""
    if len(data) != NBYTES:
        raise EncodingError(f"a stored encoding is {NBYTES} bytes, not {len(data)}")
    return _decimals(np.frombuffer(data, dtype=_WIRE))


def floats(values: Sequence[float] | npt.ArrayLike) -> list[float]:
    """``values`` as float32 and then as the short decimals an event carries (see the module)."""
    return _decimals(_vector(values))


def _decimals(vec: npt.NDArray[np.float32]) -> list[float]:
    # 9 significant digits always read back as the same float32 (IEEE 754: FLT_DECIMAL_DIG),
    # and Python's repr of the float64 read from them is at most those 9 digits.
    return [float(f"{v:.9g}") for v in vec.tolist()]
