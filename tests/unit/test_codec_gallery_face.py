"""``codec.gallery_event``, the gallery feed's fast path: the same answer as ``decode`` for
what it accepts, and None (so the caller decodes in full) for anything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from recognizer.gallery import Gallery, default_rule
from recognizer.worker import GalleryFeed
from schemas import codec
from schemas import events as ev

EXAMPLE = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "facestream.face.enrolled.v1.json"
PERSON = EXAMPLE.parent / "facestream.person.enrolled.v1.json"


def test_agrees_with_decode_on_the_published_examples():
    raw = EXAMPLE.read_bytes()
    face = codec.gallery_event(raw)
    full = codec.decode(raw).data
    assert isinstance(full, ev.FaceEnrolled)
    assert isinstance(face, codec.GalleryFace)
    assert (face.person_id, face.face_id) == (full.person_id, full.face_id)
    assert list(face.encoding) == full.encoding

    person = codec.gallery_event(PERSON.read_bytes())
    full_person = codec.decode(PERSON.read_bytes()).data
    assert isinstance(full_person, ev.PersonEnrolled)
    assert person == codec.GalleryPerson(full_person.person_id, full_person.name)


def _person_with(change) -> bytes:
    obj = orjson.loads(PERSON.read_bytes())
    change(obj)
    return orjson.dumps(obj)


def _with(change) -> bytes:
    obj = orjson.loads(EXAMPLE.read_bytes())
    change(obj)
    return orjson.dumps(obj)


@pytest.mark.parametrize(
    "raw",
    [
        None,  # a tombstone
        b"not json",
        b"[1, 2]",
        (EXAMPLE.parent / "facestream.image.failed.v1.json").read_bytes(),
        _with(lambda o: o.update(version=2)),  # newer than this code: decode says so
        _with(lambda o: o.pop("version")),
        _with(lambda o: o.update(data=None)),
        _with(lambda o: o["data"].update(person_id="someone")),
        _with(lambda o: o["data"].update(face_id=7)),
        _with(lambda o: o["data"].update(encoding=o["data"]["encoding"][:127])),
        _with(lambda o: o["data"]["encoding"].__setitem__(3, None)),
        _with(lambda o: o["data"]["encoding"].__setitem__(3, "0.1")),
        _with(lambda o: o["data"].pop("encoding")),
        _with(lambda o: o["data"].update(encoding={})),
        _with(lambda o: o.update(type="facestream.person.enrolled")),  # a face's data as a person's
        _person_with(lambda o: o["data"].update(name="")),
        _person_with(lambda o: o["data"].update(name="x" * 201)),
        _person_with(lambda o: o["data"].update(name=None)),
        _person_with(lambda o: o["data"].update(person_id="8a1d2c3b")),
    ],
)
def test_anything_else_goes_to_the_full_decoder(raw):
    assert codec.gallery_event(raw) is None


@pytest.mark.parametrize("number", [0, True, -1, 1e-300])
def test_numbers_are_numbers_as_in_the_model(number):
    raw = _with(lambda o: o["data"]["encoding"].__setitem__(0, number))
    face = codec.gallery_event(raw)
    full = codec.decode(raw).data
    assert isinstance(face, codec.GalleryFace)
    assert isinstance(full, ev.FaceEnrolled)
    assert list(face.encoding) == full.encoding


class _Message:
    """Just what ``GalleryFeed._apply`` reads of a Kafka message."""

    def __init__(self, offset: int, key: str, value: bytes | None) -> None:
        self._offset, self._key, self._value = offset, key.encode(), value

    def error(self):
        return None

    def key(self):
        return self._key

    def value(self):
        return self._value

    def offset(self):
        return self._offset


def _msg(offset: int, key: str, value: bytes | None) -> Any:
    return _Message(offset, key, value)


def test_the_feed_applies_faces_people_and_tombstones():
    gallery = Gallery()
    feed = GalleryFeed({"bootstrap.servers": "127.0.0.1:1"}, gallery)  # never connects here
    try:
        face = orjson.loads(EXAMPLE.read_bytes())["data"]
        person = (EXAMPLE.parent / "facestream.person.enrolled.v1.json").read_bytes()
        pid, fid = face["person_id"], face["face_id"]
        feed._apply(_msg(0, f"person:{pid}", person))
        feed._apply(_msg(1, f"face:{pid}:{fid}", EXAMPLE.read_bytes()))  # the fast path
        feed._apply(_msg(2, f"face:{pid}:x", _with(lambda o: o["data"].update(face_id="bad"))))  # skipped
        assert len(gallery) == 1
        assert gallery.names == {pid: orjson.loads(person)["data"]["name"]}
        assert gallery.version == 3
        [m] = gallery.match([face["encoding"]], default_rule())
        assert m.nearest_person_id == pid
        assert m.distance == 0.0
        feed._apply(_msg(3, f"face:{pid}:{fid}", None))
        assert len(gallery) == 0
        assert gallery.people == 0
    finally:
        feed.close()
