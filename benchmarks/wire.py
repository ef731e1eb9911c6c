"""What carrying the image inside the JSON event costs, against raw bytes with the
envelope in Kafka headers (the alternative issue 9 asked to measure).

For photos of several sizes: the time to encode an ImageSubmitted (ingest) and to decode
it and get the image bytes back (the recognizer, and the stream's projector), with the
codec as shipped (JSON envelope, base64 image) and with the image as the raw message
value (the envelope, without the image, as a JSON header). Medians of repeated runs in
the same process, and their ratio.
"""

from __future__ import annotations

import base64
import hashlib
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas import codec
from schemas import events as ev
from schemas.envelope import new_id

SIZES = (100_000, 1_000_000, 10_000_000)


def _event(data: bytes) -> ev.ImageSubmitted:
    return ev.ImageSubmitted(
        image_id=new_id(),
        filename="photo.jpg",
        content_type="image/jpeg",
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        image_b64=base64.b64encode(data).decode("ascii"),
        submitted_at=datetime.now(UTC),
    )


def _median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def measure(size: int, repeats: int) -> dict[str, Any]:
    data = bytes(range(256)) * (size // 256)

    def json_encode() -> bytes:
        event = _event(data)  # base64 is part of the JSON way's cost
        return codec.encode_data(event, source="bench")

    wire = json_encode()

    def json_decode() -> bytes:
        _, e = codec.decode_as(wire, ev.ImageSubmitted)
        return base64.b64decode(e.image_b64, validate=True)

    def raw_encode() -> tuple[bytes, bytes]:
        meta = {"id": new_id(), "type": "facestream.image.submitted", "size_bytes": len(data)}
        return orjson.dumps(meta), data

    header, value = raw_encode()

    def raw_decode() -> bytes:
        orjson.loads(header)
        return value

    out = {
        "bytes": size,
        "json_message_bytes": len(wire),
        "json_encode_ms": _median_ms(json_encode, repeats),
        "json_decode_ms": _median_ms(json_decode, repeats),
        "raw_encode_ms": _median_ms(raw_encode, repeats),
        "raw_decode_ms": _median_ms(raw_decode, repeats),
    }
    out["json_over_raw_bytes"] = len(wire) / size
    return out


def run(quick: bool, _out: object = None) -> dict[str, Any]:
    repeats = 15 if quick else 50
    return {"repeats": repeats, "sizes": [measure(s, repeats) for s in SIZES]}
