"""MQTT's pure parts (notify/mqtt.py) and its settings: the broker URL, topic levels made
safe, the messages a result makes, Home Assistant's discovery config, and the refusals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from notify.mqtt import (
    UNKNOWN_CAMERA,
    BrokerAddress,
    MqttUrlError,
    Publication,
    Topics,
    camera_slug,
    discovery_config,
    failed,
    parse_url,
    recognized,
    status,
)
from notify.settings import NotifySettings
from schemas import codec
from schemas.access import BY_SERVICE, Operation, Resource
from schemas.events import Box, FaceMatch, FacesRecognized, FailureReason, ImageFailed

ROOT = Path(__file__).resolve().parents[2]
ADA, BOB = str(uuid.uuid4()), str(uuid.uuid4())
TOPICS = Topics()


def _result(*faces: tuple[str | None, float | None]) -> FacesRecognized:
    example = (ROOT / "schemas/examples/facestream.faces.recognized.v1.json").read_bytes()
    base = codec.decode(example).data
    assert isinstance(base, FacesRecognized)
    matches = [
        FaceMatch(index=i, box=Box(top=10 * i, right=20, bottom=30, left=5), person_id=p, distance=d)
        for i, (p, d) in enumerate(faces)
    ]
    return base.model_copy(update={"faces": matches, "run": 2})


def _by_kind(messages: list[Publication]) -> dict[str, list[Publication]]:
    out: dict[str, list[Publication]] = {}
    for m in messages:
        out.setdefault(m.kind, []).append(m)
    return out


# --------------------------------------------------------------------------- the URL


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://broker", BrokerAddress("broker", 1883)),
        ("mqtts://broker", BrokerAddress("broker", 8883, tls=True)),
        ("mqtt://ha:s3cret@10.0.0.5:1884", BrokerAddress("10.0.0.5", 1884, username="ha", password="s3cret")),
        ("mqtt://a%40b:p%2Fw%3A@broker/", BrokerAddress("broker", 1883, username="a@b", password="p/w:")),
        ("mqtt://user@[::1]:1883", BrokerAddress("::1", 1883, username="user")),
    ],
)
def test_the_broker_url_gives_host_port_tls_and_login(url: str, expected: BrokerAddress) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://broker", "scheme must be mqtt:// or mqtts://"),
        ("broker:1883", "scheme must be"),
        ("mqtt://", "no host"),
        ("mqtt://broker:0", "port must be"),
        ("mqtt://broker:70000", "port must be"),
        ("mqtt://broker:http", "port must be"),
        ("mqtt://broker/facestream", "no path"),
        ("mqtt://broker?x=1", "no path, query"),
        ("mqtt://:secret@broker", "password without a user"),
    ],
)
def test_a_bad_broker_url_is_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(MqttUrlError, match=why):
        parse_url(url)


def test_the_password_is_never_shown() -> None:
    assert "s3cret" not in repr(parse_url("mqtt://ha:s3cret@broker"))
    with pytest.raises(ValidationError) as refused:
        NotifySettings(mqtt_url="mqtt://ha:s3cret@broker:99999")  # type: ignore[arg-type]
    assert "MQTT_URL: the port must be" in str(refused.value)
    assert "s3cret" not in str(refused.value)
    settings = NotifySettings(mqtt_url="mqtt://ha:s3cret@broker")  # type: ignore[arg-type]
    assert "s3cret" not in repr(settings)


# --------------------------------------------------------------------------- settings


def test_mqtt_is_off_unless_mqtt_url_is_set() -> None:
    assert NotifySettings().mqtt_broker() is None
    assert NotifySettings(mqtt_url="").mqtt_broker() is None  # type: ignore[arg-type]
    on = NotifySettings(mqtt_url="mqtts://ha:pw@broker.lan")  # type: ignore[arg-type]
    assert on.mqtt_broker() == BrokerAddress("broker.lan", 8883, tls=True, username="ha", password="pw")
    assert on.mqtt_topics() == Topics("facestream", "homeassistant")


def test_mqtt_url_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQTT_URL", "mqtt://broker:1884")
    monkeypatch.setenv("MQTT_TOPIC_PREFIX", "site/facestream")
    settings = NotifySettings()
    assert settings.mqtt_broker() == BrokerAddress("broker", 1884)
    assert settings.mqtt_topics().status == "site/facestream/status"
    monkeypatch.setenv("MQTT_URL", "tcp://broker")
    with pytest.raises(ValidationError, match="mqtt_url"):
        NotifySettings()


@pytest.mark.parametrize("prefix", ["", "/facestream", "facestream/", "a//b", "a/+", "#", "$SYS"])
def test_a_topic_prefix_with_wildcards_or_empty_levels_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="mqtt_topic_prefix"):
        NotifySettings(mqtt_topic_prefix=prefix)
    with pytest.raises(ValidationError, match="mqtt_discovery_prefix"):
        NotifySettings(mqtt_discovery_prefix=prefix)


def test_mqtts_own_consumer_group_is_within_notifys_acl() -> None:
    settings = NotifySettings()
    assert settings.mqtt_group_id != settings.notify_group_id
    assert BY_SERVICE["notify"].may(Operation.READ, Resource.GROUP, settings.mqtt_group_id)


# --------------------------------------------------------------------------- topics


@pytest.mark.parametrize(
    ("camera", "slug"),
    [
        ("lobby", "lobby"),
        ("Front door", "Front_door"),
        ("site/a/+/#", "site_a"),
        ("Küche", "Kuche"),
        ("cam-2_B", "cam-2_B"),
        ("  ", UNKNOWN_CAMERA),
        ("///", UNKNOWN_CAMERA),
        ("门口", UNKNOWN_CAMERA),
        (None, UNKNOWN_CAMERA),
    ],
)
def test_a_camera_becomes_a_safe_topic_level(camera: str | None, slug: str) -> None:
    assert camera_slug(camera) == slug


def test_topics_live_under_the_prefixes() -> None:
    topics = Topics("home/facestream", "ha")
    assert topics.status == "home/facestream/status"
    assert topics.camera("lobby", "person") == "home/facestream/cameras/lobby/person"
    assert topics.seen(ADA) == f"home/facestream/people/{ADA}/seen"
    assert topics.discovery("lobby") == "ha/sensor/facestream_lobby/config"
    assert topics.home_assistant_status == "ha/status"


# --------------------------------------------------------------------------- messages


def test_a_recognition_names_the_nearest_person_on_the_camera() -> None:
    result = _result((ADA, 0.41), (None, 0.7), (BOB, 0.32))
    made = recognized(result, TOPICS, camera="Front door", names={ADA: "Ada", BOB: "Bob"})
    assert [m.kind for m in made] == ["recognized", "seen", "seen", "attributes", "person"]
    kinds = _by_kind(made)
    [summary] = kinds["recognized"]
    assert summary.topic == "facestream/cameras/Front_door/recognized"
    assert not summary.retain
    body = orjson.loads(summary.payload)
    assert body == {
        "image_id": result.image_id,
        "run": 2,
        "camera": "Front door",
        "people": [
            {
                "id": ADA,
                "name": "Ada",
                "distance": 0.41,
                "box": {"top": 0, "right": 20, "bottom": 30, "left": 5},
            },
            {
                "id": BOB,
                "name": "Bob",
                "distance": 0.32,
                "box": {"top": 20, "right": 20, "bottom": 30, "left": 5},
            },
        ],
        "unknown_faces": 1,
        "occurred_at": result.recognized_at.isoformat(),
    }
    assert [m.topic for m in kinds["seen"]] == [
        f"facestream/people/{ADA}/seen",
        f"facestream/people/{BOB}/seen",
    ]
    bob = orjson.loads(kinds["seen"][1].payload)
    assert bob["camera"] == "Front door"
    assert bob["image_id"] == result.image_id
    assert bob["distance"] == 0.32
    [state] = kinds["person"]
    assert (state.topic, state.payload, state.retain) == (
        "facestream/cameras/Front_door/person",
        b"Bob",
        True,
    )
    [attributes] = kinds["attributes"]
    assert attributes.retain
    assert orjson.loads(attributes.payload) == {
        "person_id": BOB,
        "person_name": "Bob",
        "distance": 0.32,
        "people": ["Ada", "Bob"],
        "unknown_faces": 1,
        "image_id": result.image_id,
        "camera": "Front door",
        "occurred_at": result.recognized_at.isoformat(),
    }


def test_only_unknown_faces_make_the_state_unknown() -> None:
    made = recognized(_result((None, 0.8), (None, None)), TOPICS, camera=None, names={})
    assert [m.kind for m in made] == ["recognized", "attributes", "person"]
    state = _by_kind(made)["person"][0]
    assert (state.topic, state.payload) == (f"facestream/cameras/{UNKNOWN_CAMERA}/person", b"unknown")
    attributes = orjson.loads(_by_kind(made)["attributes"][0].payload)
    assert attributes["person_id"] is None
    assert attributes["unknown_faces"] == 2


def test_an_image_without_a_face_leaves_the_state_as_it_was() -> None:
    made = recognized(_result(), TOPICS, camera="lobby", names={})
    assert [m.kind for m in made] == ["recognized"]
    assert orjson.loads(made[0].payload)["unknown_faces"] == 0


def test_an_erased_person_is_never_named_nor_given_a_topic() -> None:
    made = recognized(_result((ADA, 0.3)), TOPICS, camera="lobby", names={ADA: "Ada"}, erased={ADA})
    assert [m.kind for m in made] == ["recognized", "attributes", "person"]
    assert all(ADA.encode() not in m.payload and ADA not in m.topic for m in made)
    assert all(b"Ada" not in m.payload for m in made)
    assert _by_kind(made)["person"][0].payload == b"unknown"


def test_a_person_missing_from_the_read_model_is_named_by_id() -> None:
    made = recognized(_result((ADA, 0.3)), TOPICS, camera="lobby", names={})
    assert _by_kind(made)["person"][0].payload == ADA.encode()
    assert orjson.loads(_by_kind(made)["seen"][0].payload)["name"] is None


def test_a_failed_image_is_reported_on_its_camera() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    result = ImageFailed(
        image_id=str(uuid.uuid4()),
        run=1,
        attempts=3,
        reason=FailureReason.CORRUPT_IMAGE,
        detail="bad",
        failed_at=at,
    )
    [message] = failed(result, TOPICS, camera="lobby")
    assert (message.kind, message.topic, message.retain) == (
        "failed",
        "facestream/cameras/lobby/failed",
        False,
    )
    assert orjson.loads(message.payload) == {
        "image_id": result.image_id,
        "run": 1,
        "camera": "lobby",
        "reason": "corrupt_image",
        "detail": "bad",
        "occurred_at": at.isoformat(),
    }


def test_status_is_retained_for_home_assistants_availability() -> None:
    assert status(TOPICS, online=True) == Publication("status", "facestream/status", b"online", retain=True)
    assert status(TOPICS, online=False).payload == b"offline"


# --------------------------------------------------------------------------- Home Assistant


def test_the_discovery_config_makes_the_camera_a_sensor_of_the_last_person_seen() -> None:
    message = discovery_config(TOPICS, "Front door")
    assert message.kind == "discovery"
    assert message.topic == "homeassistant/sensor/facestream_Front_door/config"
    assert message.retain
    config = orjson.loads(message.payload)
    assert config == {
        "name": "Last person seen",
        "unique_id": "facestream_Front_door_last_person",
        "default_entity_id": "sensor.facestream_front_door_last_person",
        "object_id": "facestream_Front_door_last_person",
        "state_topic": "facestream/cameras/Front_door/person",
        "json_attributes_topic": "facestream/cameras/Front_door/attributes",
        "availability_topic": "facestream/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "icon": "mdi:face-recognition",
        "device": {
            "identifiers": ["facestream_Front_door"],
            "name": "Front door",
            "manufacturer": "facestream",
            "model": "Camera",
        },
        "origin": {"name": "facestream"},
    }
    # The topics it names are those the messages go to.
    made = recognized(_result((ADA, 0.3)), TOPICS, camera="Front door", names={ADA: "Ada"})
    topics = {m.kind: m.topic for m in made}
    assert config["state_topic"] == topics["person"]
    assert config["json_attributes_topic"] == topics["attributes"]
    assert config["availability_topic"] == status(TOPICS, online=True).topic


def test_home_assistant_ids_use_only_the_characters_it_accepts() -> None:
    config = orjson.loads(discovery_config(TOPICS, "Hall/2 + Küche #1").payload)
    for key in ("unique_id", "object_id"):
        assert all(c.isascii() and (c.isalnum() or c in "_-") for c in config[key]), config[key]
    domain, _, entity = config["default_entity_id"].partition(".")
    assert domain == "sensor"
    assert all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in entity), entity
    assert orjson.loads(discovery_config(TOPICS, None).payload)["device"]["name"] == "Unknown camera"
