"""Webhooks' pure parts (notify/deliveries.py, common/ssrf.py): which deliveries a result
makes and their bodies, the signature, the backoff, and which addresses are refused."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import asyncpg
import orjson
import pytest

from common.ssrf import RefusedUrl, check_url, refused_address
from notify.deliveries import RetryPolicy, Webhook, delivery_id, plan, sign, succeeded, verify
from notify.sender import Claimed, Sender, pinned_url
from notify.settings import NotifySettings
from schemas import codec
from schemas.access import BY_SERVICE, Operation, Resource
from schemas.events import Box, FaceMatch, FacesRecognized, ImageFailed
from schemas.topics import RESULTS

ROOT = Path(__file__).resolve().parents[2]
ADA, BOB = str(uuid.uuid4()), str(uuid.uuid4())


def _result(*people: str | None, camera_run: int = 0) -> FacesRecognized:
    example = (ROOT / "schemas/examples/facestream.faces.recognized.v1.json").read_bytes()
    base = codec.decode(example).data
    assert isinstance(base, FacesRecognized)
    faces = [
        FaceMatch(
            index=i, box=Box(top=10 * i, right=20, bottom=30, left=5), person_id=p, distance=0.3 + i / 10
        )
        for i, p in enumerate(people)
    ]
    return base.model_copy(update={"faces": faces, "run": camera_run})


def _hook(
    events: tuple[str, ...] = ("face.identified", "face.unknown", "image.failed"),
    *,
    cameras: tuple[str, ...] = (),
    people: tuple[str, ...] = (),
    hook_id: uuid.UUID | None = None,
) -> Webhook:
    return Webhook(
        id=str(hook_id or uuid.uuid4()),
        url="http://127.0.0.1:9/hook",
        events=frozenset(events),
        cameras=frozenset(cameras),
        people=frozenset(people),
        secret="whsec_test",
    )


def test_one_delivery_per_face_named_from_the_read_model() -> None:
    result = _result(ADA, None)
    hook = _hook()
    made = plan(result, [hook], camera="lobby", names={ADA: "Ada Lovelace"})
    assert [d.event.value for d in made] == ["face.identified", "face.unknown"]
    body = orjson.loads(made[0].body)
    assert body["event"] == "face.identified"
    assert body["delivery_id"] == made[0].id
    assert body["image_id"] == result.image_id
    assert body["camera"] == "lobby"
    assert body["person"] == {"id": ADA, "name": "Ada Lovelace"}
    assert body["face"] == {
        "index": 0,
        "box": {"top": 0, "right": 20, "bottom": 30, "left": 5},
        "distance": 0.3,
    }
    assert datetime.fromisoformat(body["occurred_at"]) == result.recognized_at
    unknown = orjson.loads(made[1].body)
    assert unknown["person"] is None
    assert unknown["face"]["index"] == 1


def test_delivery_ids_are_stable_and_distinct() -> None:
    result = _result(ADA, BOB)
    hook = _hook(hook_id=uuid.uuid4())
    first = plan(result, [hook], camera=None, names={})
    again = plan(result, [hook], camera=None, names={})
    assert [d.id for d in first] == [d.id for d in again]  # a redelivered result: the same rows
    assert [d.body for d in first] == [d.body for d in again]
    assert len({d.id for d in first}) == 2
    newer = plan(_result(ADA, BOB, camera_run=1), [hook], camera=None, names={})
    assert not {d.id for d in newer} & {d.id for d in first}
    assert first[0].id == delivery_id(hook.id, result.image_id, 0, "face.identified", 0)


def test_filters_events_cameras_and_people() -> None:
    result = _result(ADA, BOB, None)
    only_ada = _hook(people=(ADA,))
    only_known = _hook(events=("face.identified",))
    other_camera = _hook(cameras=("garage",))
    lobby = _hook(cameras=("lobby",), events=("face.unknown",))
    made = plan(result, [only_ada, only_known, other_camera, lobby], camera="lobby", names={})
    by_hook = {
        h.id: [(d.event.value, d.face_index) for d in made if d.webhook_id == h.id]
        for h in (only_ada, only_known, other_camera, lobby)
    }
    assert by_hook[only_ada.id] == [("face.identified", 0)]
    assert by_hook[only_known.id] == [("face.identified", 0), ("face.identified", 1)]
    assert by_hook[other_camera.id] == []
    assert by_hook[lobby.id] == [("face.unknown", 2)]


def test_an_erased_person_is_never_named() -> None:
    made = plan(_result(ADA), [_hook()], camera=None, names={ADA: "Ada"}, erased={ADA})
    body = orjson.loads(made[0].body)
    assert body["event"] == "face.unknown"
    assert body["person"] is None
    assert ADA.encode() not in made[0].body


def test_an_image_failed_carries_the_reason_not_a_face() -> None:
    example = (ROOT / "schemas/examples/facestream.image.failed.v1.json").read_bytes()
    failed = codec.decode(example).data
    assert isinstance(failed, ImageFailed)
    made = plan(failed, [_hook(), _hook(events=("face.unknown",))], camera="door", names={})
    assert len(made) == 1
    body = orjson.loads(made[0].body)
    assert body["event"] == "image.failed"
    assert body["reason"] == failed.reason.value
    assert body["detail"] == failed.detail
    assert body["face"] is None
    assert body["camera"] == "door"


def test_the_signature_is_the_hmac_of_the_raw_body() -> None:
    body = b'{"event":"face.identified"}'
    expected = hmac.new(b"whsec_k", body, hashlib.sha256).hexdigest()
    assert sign("whsec_k", body) == f"sha256={expected}"
    assert verify("whsec_k", body, f"sha256={expected}")
    assert not verify("whsec_other", body, f"sha256={expected}")
    assert not verify("whsec_k", body + b" ", f"sha256={expected}")


def test_backoff_doubles_up_to_a_bound_and_gives_up() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay_s=5, max_delay_s=12, max_age_s=3600)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [5, 10, 12, 12]
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert policy.next_attempt(1, now, now) == now + timedelta(seconds=5)
    assert policy.next_attempt(4, now, now) is None  # out of attempts
    old = RetryPolicy(max_attempts=100, base_delay_s=60, max_delay_s=60, max_age_s=3600)
    assert old.next_attempt(2, now - timedelta(seconds=3590), now) is None  # past its age
    assert [succeeded(s) for s in (199, 200, 204, 301, 500)] == [False, True, True, False, False]


@pytest.mark.parametrize(
    ("address", "always", "private"),
    [
        ("169.254.169.254", True, True),
        ("169.254.10.1", True, True),
        ("fe80::1", True, True),
        ("fd00:ec2::254", True, True),
        ("::ffff:169.254.169.254", True, True),
        ("224.0.0.1", True, True),
        ("127.0.0.1", False, True),
        ("10.1.2.3", False, True),
        ("192.168.1.10", False, True),
        ("172.16.0.1", False, True),
        ("100.64.0.1", False, True),
        ("::1", False, True),
        ("fd12::1", False, True),
        ("0.0.0.0", False, True),
        ("93.184.216.34", False, False),
        ("2606:4700::1111", False, False),
    ],
)
def test_ssrf_classification(address: str, always: bool, private: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert (refused_address(ip, allow_private=True) is not None) is always
    assert (refused_address(ip, allow_private=False) is not None) is private


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/x",
        "http://metadata.google.internal/computeMetadata/v1",
        "http://metadata/x",
        "http://user:pw@example.com/",
        "http:///nohost",
    ],
)
def test_urls_always_refused(url: str) -> None:
    with pytest.raises(RefusedUrl):
        check_url(url, allow_private=True)


def test_private_urls_allowed_unless_the_setting_says_no() -> None:
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "https://10.0.0.5/x"):
        check_url(url, allow_private=True)
        with pytest.raises(RefusedUrl):
            check_url(url, allow_private=False)
    check_url("https://hooks.example.com/facestream", allow_private=False)  # names resolve at delivery


def test_a_request_goes_to_the_checked_address() -> None:
    assert (
        pinned_url("https://hooks.example.com:8443/a?b=1", "93.184.216.34")
        == "https://93.184.216.34:8443/a?b=1"
    )
    assert pinned_url("http://h.example/x", "2606:4700::1111") == "http://[2606:4700::1111]/x"


def test_notify_reads_results_in_its_own_group() -> None:
    notify = BY_SERVICE["notify"]
    settings = NotifySettings()
    assert notify.may(Operation.READ, Resource.TOPIC, RESULTS)
    assert notify.may(Operation.READ, Resource.GROUP, settings.notify_group_id)
    assert not notify.may(Operation.WRITE, Resource.TOPIC, RESULTS)
    assert not notify.may(Operation.READ, Resource.TOPIC, "images.submitted")


def test_the_deliveries_are_planned_without_io() -> None:
    """notify/deliveries.py and common/ssrf.py decide; they import no broker, database or HTTP client."""
    import ast

    for path in ("notify/deliveries.py", "common/ssrf.py"):
        tree = ast.parse((ROOT / path).read_text())
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
        }
        assert imported.isdisjoint({"asyncpg", "confluent_kafka", "aiokafka", "httpx", "socket"}), path


async def test_an_address_refused_at_delivery_is_never_sent() -> None:
    """The name is resolved before each attempt: what it resolves to now decides (no DNS
    here: a resolver that answers what a rebinding name server would)."""
    answers = {"rebind.example": ["93.184.216.34", "169.254.169.254"], "home.example": ["192.168.1.20"]}

    async def resolver(host: str, port: int) -> list[str]:
        return answers[host]

    row = Claimed(
        id=str(uuid.uuid4()),
        webhook_id=str(uuid.uuid4()),
        event="face.identified",
        body=b"{}",
        attempts=0,
        created_at=datetime.now(UTC),
        url="https://rebind.example/hook",
        secret="whsec_test",
    )
    sender = Sender(cast(asyncpg.Pool, None), NotifySettings(), resolver)
    outcome = await sender.send(row)
    assert outcome.result == "refused"
    assert outcome.error is not None
    assert "169.254.169.254" in outcome.error
    strict = Sender(cast(asyncpg.Pool, None), NotifySettings(webhook_allow_private=False), resolver)
    home = await strict.send(Claimed(**{**row.__dict__, "url": "http://home.example:8123/hook"}))
    assert home.result == "refused"
    metadata = await sender.send(Claimed(**{**row.__dict__, "url": "http://metadata.google.internal/x"}))
    assert metadata.result == "refused"
