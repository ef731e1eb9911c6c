"""MQTT and Home Assistant discovery end to end (notify/mqtt*.py) on the running platform,
whose notify publishes to a real mosquitto (the session's ``mosquitto`` fixture, with a
password file). What Home Assistant would see is read back by MQTT clients of our own."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from notify.mqtt import camera_slug
from tests.conftest import Mosquitto
from tests.e2e.test_lfw import enroll, wait_final
from tests.platform import NOTIFY_TEST_PORT, Platform, until, wait_gallery_applied

pytestmark = pytest.mark.integration

PREFIX, DISCOVERY = "facestream", "homeassistant"


@dataclass(frozen=True)
class Got:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return orjson.loads(self.payload)


@dataclass
class Subscriber:
    """An MQTT client of the test's broker that records every message on ``topics`` (QoS
    1). ``persistent``: a session the broker keeps (and queues for) while it is away, as
    a Home Assistant that must miss nothing would have."""

    broker: Mosquitto
    topics: tuple[str, ...] = (f"{PREFIX}/#", f"{DISCOVERY}/#")
    persistent: bool = False
    got: list[Got] = field(default_factory=list)
    subscribed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"facestream-test-{uuid.uuid4().hex[:8]}",
            clean_session=not self.persistent,
        )
        self.client.username_pw_set(self.broker.user, self.broker.password)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._connected
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.got.append(Got(m.topic, bytes(m.payload), m.retain))

    def _connected(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        assert not reason.is_failure, f"the test's MQTT client was refused: {reason}"
        client.subscribe([(t, 1) for t in self.topics])

    def start(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(30), "not subscribed within 30 s"
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[Got]:
        return [m for m in list(self.got) if m.topic == topic]

    def wait(self, what: str, topic: str, match: Callable[[Got], bool] = lambda _m: True) -> Got:
        """The first message on ``topic`` that ``match``es, waiting up to 120 s for it."""
        until(what, lambda: any(match(m) for m in self.on(topic)))
        return next(m for m in self.on(topic) if match(m))


@pytest.fixture
def subscriber(mosquitto: Mosquitto) -> Iterator[Subscriber]:
    sub = Subscriber(mosquitto).start()
    yield sub
    sub.stop()


@pytest.fixture
def api(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as client:
        yield client


def _person(faces_dir: Path, nth: int) -> tuple[str, list[Path]]:
    people = sorted(p for p in (faces_dir / "lfw-dev/known").iterdir() if len(list(p.iterdir())) >= 2)
    person = people[nth]
    return person.name, sorted(person.iterdir())


def _stranger(faces_dir: Path, nth: int) -> Path:
    """A photo of someone never enrolled."""
    folder = sorted((faces_dir / "lfw-dev/strangers").iterdir())[nth]
    return sorted(folder.iterdir())[0]


def _submit(platform: Platform, api: httpx.Client, photo: Path, camera: str) -> dict[str, Any]:
    """Submit ``photo`` through ingest as ``camera``'s; the image's final result."""
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        r = ingest.post(
            "/v1/images", files={"files": (photo.name, photo.read_bytes())}, data={"camera": camera}
        )
        assert r.status_code == 202, r.text
    image_id = r.json()["data"][0]["id"]
    [result] = wait_final(api, [image_id], timeout=180).values()
    return dict(result)


def _readiness(url: str) -> dict[str, bool]:
    try:
        return dict(httpx.get(f"{url}/readyz", timeout=5).json()["checks"])
    except httpx.HTTPError:
        return {}


def _metric(url: str, sample: str) -> float:
    """The value of one sample (``name{labels}``) on ``url``'s /metrics (0 if absent)."""
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_camera_is_a_home_assistant_sensor_of_the_last_person_seen(
    platform: Platform, api: httpx.Client, subscriber: Subscriber, mosquitto: Mosquitto, faces_dir: Path
) -> None:
    folder, photos = _person(faces_dir, 5)
    name = f"{folder.replace('_', ' ')} {uuid.uuid4().hex[:6]}"
    camera = f"Front door/{uuid.uuid4().hex[:6]}"  # a '/' of its own: made a safe topic level
    slug = camera_slug(camera)
    assert "/" not in slug
    recognized_topic = f"{PREFIX}/cameras/{slug}/recognized"
    attributes_topic = f"{PREFIX}/cameras/{slug}/attributes"
    person_id = enroll(api, name, photos[0])
    try:
        wait_gallery_applied(platform)
        result = _submit(platform, api, photos[1], camera)
        assert result["status"] == "processed", result
        [face] = [f for f in result["faces"] if f["person_id"] == person_id]

        state = subscriber.wait(f"{name} on {slug}'s person topic", f"{PREFIX}/cameras/{slug}/person")
        assert state.payload.decode() == name

        # Home Assistant's discovery config came first, and is valid for an MQTT sensor.
        config_topic = f"{DISCOVERY}/sensor/facestream_{slug}/config"
        config = subscriber.wait("the camera's discovery config", config_topic).json()
        assert config["state_topic"] == f"{PREFIX}/cameras/{slug}/person"
        assert config["json_attributes_topic"] == attributes_topic
        assert config["availability_topic"] == f"{PREFIX}/status"
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")
        assert config["unique_id"] == config["object_id"] == f"facestream_{slug}_last_person"
        assert config["device"]["identifiers"] == [f"facestream_{slug}"]
        assert config["device"]["name"] == camera
        assert config["device"]["manufacturer"] == "facestream"
        assert config["name"]
        assert config["icon"].startswith("mdi:")
        order = [m.topic for m in subscriber.got]
        assert order.index(config_topic) < order.index(state.topic)

        recognized = subscriber.wait(
            "the recognition", recognized_topic, lambda m: m.json()["image_id"] == result["id"]
        ).json()
        assert recognized["camera"] == camera
        assert recognized["run"] == 0
        assert recognized["occurred_at"]
        [seen_person] = [p for p in recognized["people"] if p["id"] == person_id]
        assert seen_person["name"] == name
        assert seen_person["distance"] == pytest.approx(face["distance"], abs=1e-4)
        assert set(seen_person["box"]) == {"top", "right", "bottom", "left"}
        assert recognized["unknown_faces"] == len(result["faces"]) - len(recognized["people"])

        sighting = subscriber.wait("the sighting", f"{PREFIX}/people/{person_id}/seen").json()
        assert sighting["camera"] == camera
        assert sighting["image_id"] == result["id"]
        assert sighting["name"] == name

        attributes = subscriber.wait("the attributes", attributes_topic).json()
        assert attributes["person_id"] == person_id
        assert attributes["person_name"] == name
        assert attributes["image_id"] == result["id"]

        # Retained: a Home Assistant that connects now sees the sensor, its state and
        # notify's availability at once.
        late = Subscriber(
            mosquitto, topics=(config_topic, f"{PREFIX}/cameras/{slug}/+", f"{PREFIX}/status")
        ).start()
        try:
            until("the retained messages", lambda: len(late.got) >= 4, timeout=30)
            retained = {m.topic: m for m in late.got}
            assert all(m.retain for m in late.got)
            assert retained[config_topic].json() == config
            assert retained[state.topic].payload.decode() == name
            assert retained[f"{PREFIX}/status"].payload == b"online"
            assert recognized_topic not in retained  # events are not retained
        finally:
            late.stop()

        # Only faces of no enrolled person: the state says "unknown".
        stranger = _submit(platform, api, _stranger(faces_dir, 0), camera)
        assert stranger["faces"], stranger
        assert not any(f["person_id"] for f in stranger["faces"]), stranger
        subscriber.wait("unknown on the person topic", state.topic, lambda m: m.payload == b"unknown")
        unknown = subscriber.wait(
            "the stranger's recognition", recognized_topic, lambda m: m.json()["image_id"] == stranger["id"]
        ).json()
        assert unknown["people"] == []
        assert unknown["unknown_faces"] == len(stranger["faces"])
        attributes = subscriber.on(attributes_topic)[-1].json()
        assert attributes["person_id"] is None
        assert attributes["image_id"] == stranger["id"]
    finally:  # left enrolled, the person would make later tests' photos of them ambiguous
        assert api.delete(f"/v1/people/{person_id}").status_code == 200


def test_a_recognition_made_while_the_broker_is_down_arrives_once_it_is_back(
    platform: Platform, api: httpx.Client, mosquitto: Mosquitto, faces_dir: Path
) -> None:
    # A persistent session: the broker keeps what is published for it while it is away.
    home_assistant = Subscriber(mosquitto, persistent=True).start()
    camera = f"garage-{uuid.uuid4().hex[:6]}"
    errors = 'facestream_mqtt_errors_total{stage="publish"}'
    try:
        until("notify is connected", lambda: _readiness(platform.notify_url).get("mqtt") is True)
        mosquitto.stop()
        until("notify sees the broker gone", lambda: _readiness(platform.notify_url).get("mqtt") is False)
        failed_before = _metric(platform.notify_url, errors)

        result = _submit(platform, api, _stranger(faces_dir, 1), camera)
        # notify read it and could not publish it (and tries again, never skipping it).
        until("notify tries to publish", lambda: _metric(platform.notify_url, errors) > failed_before)
    finally:
        mosquitto.start()
    recognized = home_assistant.wait(
        "the recognition made while the broker was down",
        f"{PREFIX}/cameras/{camera}/recognized",
        lambda m: m.json()["image_id"] == result["id"],
    ).json()
    assert recognized["unknown_faces"] == len(result["faces"])
    home_assistant.wait(
        "the camera's state", f"{PREFIX}/cameras/{camera}/person", lambda m: m.payload == b"unknown"
    )
    home_assistant.wait("notify online again", f"{PREFIX}/status", lambda m: m.payload == b"online")
    until("notify is ready again", lambda: _readiness(platform.notify_url).get("mqtt") is True)
    home_assistant.stop()


def test_a_wrong_mqtt_password_is_reported_and_leaves_webhooks_running(
    platform: Platform, mosquitto: Mosquitto
) -> None:
    port = NOTIFY_TEST_PORT + 1
    url = f"http://127.0.0.1:{port}"
    platform.start(
        "notify-wrong-mqtt-password",
        module="notify",
        ready_url=None,
        env={
            "NOTIFY_PORT": str(port),
            "MQTT_URL": mosquitto.url(password="not-the-password"),
            "MQTT_GROUP_ID": f"facestream-notify-mqtt-{uuid.uuid4().hex[:6]}",
        },
    )
    try:
        until(
            "its webhook path is ready, its MQTT is not",
            lambda: _readiness(url) == {"database": True, "consumer": True, "sender": True, "mqtt": False},
        )
        until(
            "its connection refusals are counted",
            lambda: _metric(url, 'facestream_mqtt_errors_total{stage="connect"}') >= 2,
        )
        log = (platform.log_dir / "notify-wrong-mqtt-password.log").read_text()
        assert "refused the connection" in log
        assert "check the user and password in MQTT_URL" in log
        assert "not-the-password" not in log
        assert platform.procs["notify-wrong-mqtt-password"].poll() is None, "it exited"
        r = httpx.get(f"{url}/readyz", timeout=5)
        assert r.status_code == 503
        assert r.json()["ready"] is False
    finally:
        platform.stop("notify-wrong-mqtt-password")
