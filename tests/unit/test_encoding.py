"""schemas/encoding.py: an encoding as 512 stored bytes and as an event's numbers; and the
events that carry encodings (FaceMatch, RematchRequested)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import orjson
import pydantic
import pytest

from schemas import codec
from schemas import encoding as enc
from schemas import events as ev

RNG = np.random.default_rng(7)


def _vector() -> npt.NDArray[np.float64]:
    return RNG.normal(0, 0.1, 128)


def test_pack_is_128_little_endian_float32() -> None:
    values = [i / 256 - 0.25 for i in range(128)]
    data = enc.pack(values)
    assert len(data) == enc.NBYTES == 512
    assert list(struct.unpack("<128f", data)) == [np.float32(v) for v in values]


def test_unpack_reads_back_what_was_packed_bit_for_bit() -> None:
    for _ in range(50):
        vec = _vector()
        data = enc.pack(vec)
        numbers = enc.unpack(data)
        assert enc.pack(numbers) == data
        assert numbers == enc.floats(vec)
        assert all(isinstance(n, float) for n in numbers)
        assert max(abs(a - b) for a, b in zip(numbers, vec, strict=True)) < 1e-7


def test_floats_are_short_in_json() -> None:
    """At most 9 significant digits each (float32's), not float64's 17."""
    numbers = enc.floats(_vector())
    assert max(len(Decimal(repr(n)).normalize().as_tuple().digits) for n in numbers) <= 9
    assert len(orjson.dumps(numbers)) < 1800  # float64 reprs: about 2,600


@pytest.mark.parametrize(
    "bad",
    [
        [0.0] * 127,
        [0.0] * 129,
        [[0.0] * 128],
        [float("nan")] + [0.0] * 127,
        [float("inf")] * 128,
        ["x"] * 128,
    ],
    ids=["127", "129", "nested", "nan", "inf", "text"],
)
def test_not_an_encoding_is_refused(bad: list[object]) -> None:
    with pytest.raises(enc.EncodingError):
        enc.pack(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 511, 513, 1024])
def test_a_stored_value_of_the_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(enc.EncodingError, match="512 bytes"):
        enc.unpack(b"\0" * size)


# --------------------------------------------------------------------------- the events


def _rematch(**change: object) -> dict[str, object]:
    data: dict[str, object] = {
        "image_id": "3f2b8c1e-6a4d-4c7e-9b1a-2d5e8f9a0b1c",
        "run": 1,
        "faces": [
            {"index": 0, "box": {"top": 1, "right": 2, "bottom": 3, "left": 0}, "encoding": [0.1] * 128},
            {"index": 1, "box": {"top": 1, "right": 2, "bottom": 3, "left": 0}, "encoding": None},
        ],
        "width": 10,
        "height": 10,
        "gallery_version": 5,
        "model": {"detection_max_side": 1024},
        "requested_at": datetime.now(UTC).isoformat(),
    }
    return {**data, **change}


def test_a_rematch_request_round_trips_through_the_codec() -> None:
    event = ev.RematchRequested.model_validate(_rematch())
    env = codec.decode(codec.encode_data(event, source="test"))
    assert env.type == "facestream.rematch.requested"
    assert env.data == event
    assert event.faces[1].encoding is None
    assert event.reason is None
    assert event.submitted_at is None


@pytest.mark.parametrize(
    "change",
    [
        {
            "faces": [
                {"index": 0, "box": {"top": 1, "right": 2, "bottom": 3, "left": 0}, "encoding": [0.1] * 127}
            ]
        },
        {"faces": [{"index": -1, "box": {"top": 1, "right": 2, "bottom": 3, "left": 0}}]},
        {"faces": [{"index": 2, "box": {"top": 1, "right": 2, "bottom": 3, "left": 0}}] * 2},
        {"run": 0},
        {"gallery_version": -1},
        {"image_id": "not-a-uuid"},
    ],
    ids=["short-encoding", "negative-index", "same-index-twice", "run-0", "negative-version", "bad-id"],
)
def test_a_bad_rematch_request_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        ev.RematchRequested.model_validate(_rematch(**change))


def test_a_face_match_carries_an_encoding_of_128_numbers_or_none() -> None:
    box = {"top": 1, "right": 2, "bottom": 3, "left": 0}
    assert ev.FaceMatch.model_validate({"index": 0, "box": box}).encoding is None  # older results
    assert (
        ev.FaceMatch.model_validate({"index": 0, "box": box, "encoding": [0.5] * 128}).encoding == [0.5] * 128
    )
    with pytest.raises(pydantic.ValidationError):
        ev.FaceMatch.model_validate({"index": 0, "box": box, "encoding": [0.5] * 12})
