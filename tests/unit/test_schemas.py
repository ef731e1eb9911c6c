"""The event contract: every published example parses, JSON Schemas match the models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from common.kafka import config_drift
from schemas import codec
from schemas import events as ev
from schemas.errors import SchemaError
from schemas.generate import JSON_DIR, render
from schemas.topics import DAY_MS, RETENTION_DAYS, TOPICS

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "schemas" / "examples").glob("*.json"))


def test_there_is_an_example_for_every_event_type() -> None:
    named = {p.name.rsplit(".v", 1)[0] for p in EXAMPLES}
    assert named == set(codec.EVENT_TYPES)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_published_example_still_parses(path: Path) -> None:
    raw = path.read_bytes()
    env = codec.decode(raw)
    assert env.type == path.name.rsplit(".v", 1)[0]
    # and round-trips through the current encoder unchanged
    assert codec.decode(codec.encode(env)) == env


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_json_schema_files(path: Path) -> None:
    obj = json.loads(path.read_text())
    schema = json.loads((JSON_DIR / f"{obj['type']}.v{obj['version']}.json").read_text())
    jsonschema.validate(obj, schema)


def test_json_schema_files_are_generated_from_the_models() -> None:
    for name, text in render().items():
        assert (JSON_DIR / name).read_text() == text, f"schemas/json/{name} is stale: run `make schemas`"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "tombstone"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"type": "facestream.image.submitted"}', "bad envelope"),
        (b'{"type": "facestream.image.submitted", "version": 1, "data": 3}', "data must be"),
        (b'{"type": "facestream.image.submitted", "version": 1, "data": {"image_id": "x"}}', "invalid"),
        (b'{"type": "facestream.image.submitted", "version": 0, "data": {}}', "bad version"),
    ],
)
def test_invalid_messages_raise_schema_error(raw: bytes | None, message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        codec.decode(raw)


def test_unknown_types_and_newer_versions_are_skippable() -> None:
    with pytest.raises(codec.UnknownEvent):
        codec.decode(b'{"type": "facestream.something.new", "version": 1, "data": {}}')
    with pytest.raises(codec.UnknownEvent):
        codec.decode(b'{"type": "facestream.person.enrolled", "version": 99, "data": {}}')


def test_unknown_fields_are_ignored_so_additive_changes_do_not_break_old_readers() -> None:
    obj = json.loads((EXAMPLES[0]).read_text())
    obj["data"]["a_field_from_the_future"] = 1
    obj["another_attribute"] = "x"
    assert codec.decode(json.dumps(obj)).type == obj["type"]


def test_upcasters_run_step_by_step(monkeypatch: pytest.MonkeyPatch) -> None:
    etype = "facestream.person.enrolled"
    monkeypatch.setitem(codec.EVENT_TYPES, etype, (3, ev.PersonEnrolled))
    monkeypatch.setitem(codec.UPCASTERS, (etype, 1), lambda d: {**d, "full_name": d["name"]})
    monkeypatch.setitem(codec.UPCASTERS, (etype, 2), lambda d: {**d, "name": d.pop("full_name").upper()})
    v1 = json.loads(next(p for p in EXAMPLES if p.name.startswith(etype)).read_text())
    env = codec.decode(json.dumps(v1))
    assert env.version == 3
    assert env.data.name == v1["data"]["name"].upper()


def test_a_missing_upcaster_is_a_schema_error(monkeypatch: pytest.MonkeyPatch) -> None:
    etype = "facestream.person.enrolled"
    monkeypatch.setitem(codec.EVENT_TYPES, etype, (2, ev.PersonEnrolled))
    v1 = next(p for p in EXAMPLES if p.name.startswith(etype)).read_bytes()
    with pytest.raises(SchemaError, match="no upcaster"):
        codec.decode(v1)


def test_the_readme_states_each_topics_retention_as_declared() -> None:
    """What the README promises is kept, and for how long, is what the topics are given;
    nothing that carries images or results outlives RETENTION_DAYS."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([\w.-]+)` \| \d+ \| ([^|]+) \|", readme, re.MULTILINE))
    for topic in TOPICS:
        if topic.config.get("cleanup.policy") == "compact":
            assert rows[topic.name].strip() == "compacted"
            continue
        ms = int(topic.config["retention.ms"])
        assert ms <= RETENTION_DAYS * DAY_MS, topic.name
        assert rows[topic.name].strip() == _duration(ms), topic.name


def _duration(ms: int) -> str:
    """``ms`` as the README writes it: whole days, or else whole hours."""
    days, hours = ms // DAY_MS, ms // 3_600_000
    if ms % DAY_MS == 0:
        return f"{days} day{'s' if days != 1 else ''}"
    assert ms % 3_600_000 == 0, f"{ms} ms is not a whole number of hours"
    return f"{hours} hour{'s' if hours != 1 else ''}"


def test_config_drift_names_only_declared_entries_the_broker_lacks() -> None:
    declared = {"retention.ms": "604800000", "cleanup.policy": "delete"}
    actual = {"retention.ms": "2592000000", "cleanup.policy": "delete", "segment.bytes": "1073741824"}
    assert config_drift(declared, actual) == {"retention.ms": "604800000"}
    assert config_drift(declared, {**actual, "retention.ms": "604800000"}) == {}
    assert config_drift(declared, {}) == declared
