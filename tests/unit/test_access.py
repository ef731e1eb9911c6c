"""schemas/access.py: the Kafka principals and their ACLs (no broker; the real one is in
tests/integration/test_kafka_security.py)."""

from __future__ import annotations

import inspect

import pytest

from api import dead_letters, scans
from common.kafka_access import binding, describe
from recognizer import worker
from recognizer.settings import RecognizerSettings
from schemas import access, topics
from schemas.access import Operation, Resource
from stream.settings import StreamSettings

R, W, D = Operation.READ, Operation.WRITE, Operation.DESCRIBE


def test_the_recognizer_reads_the_gallery_but_never_writes_it() -> None:
    assert access.RECOGNIZER.may(R, Resource.TOPIC, topics.GALLERY)
    assert not access.RECOGNIZER.may(W, Resource.TOPIC, topics.GALLERY)


@pytest.mark.parametrize(
    ("principal", "writes"),
    [
        (access.INGEST, {topics.SUBMITTED}),
        (access.RECOGNIZER, {topics.RESULTS, topics.FAILURES, topics.DEAD_LETTER, topics.SCANNED}),
        # re-runs, re-matches, photos to scan
        (access.API, {topics.SUBMITTED, topics.RECOGNIZE, topics.GALLERY, topics.SCAN}),
        (
            access.STREAM,
            {topics.SUBMITTED, topics.RECOGNIZE, topics.RESULTS, topics.DEAD_LETTER, topics.GALLERY},
        ),
        (access.NOTIFY, set()),  # it only reads results
        (access.ADMIN, set()),
    ],
    ids=lambda p: p.service if isinstance(p, access.Principal) else "",
)
def test_who_writes_where(principal: access.Principal, writes: set[str]) -> None:
    assert {t for t in access.ALL_TOPICS if principal.may(W, Resource.TOPIC, t)} == writes


def test_scans_go_from_the_api_to_the_recognizers_and_back() -> None:
    """Only the API asks, only the recognizers answer; each reads only its side."""
    readers = {
        t: {p.service for p in access.PRINCIPALS if p.may(R, Resource.TOPIC, t)}
        for t in (topics.SCAN, topics.SCANNED)
    }
    assert readers == {topics.SCAN: {"recognizer"}, topics.SCANNED: {"api"}}
    assert access.API.may(R, Resource.GROUP, access.SCAN_REPLY_GROUP)
    assert '"group.id": SCAN_REPLY_GROUP' in inspect.getsource(scans.ScanReplies)


def test_only_the_gallerys_readers_read_it() -> None:
    readers = {p.service for p in access.PRINCIPALS if p.may(R, Resource.TOPIC, topics.GALLERY)}
    assert readers == {"stream", "recognizer"}


def test_every_service_may_describe_every_topic() -> None:
    """ensure_topics at each service's start-up sees only the topics it may describe."""
    for principal in access.SERVICES:
        assert all(principal.may(D, Resource.TOPIC, t) for t in access.ALL_TOPICS), principal.service


def test_only_the_admin_creates_topics() -> None:
    creators = {
        p.service
        for p in access.PRINCIPALS
        for t in access.ALL_TOPICS
        if p.may(Operation.CREATE, Resource.TOPIC, t)
    }
    assert creators == {"admin"}


def test_the_services_default_group_ids_are_granted() -> None:
    assert access.STREAM.may(R, Resource.GROUP, StreamSettings().stream_app_id)
    assert access.RECOGNIZER.may(R, Resource.GROUP, RecognizerSettings().recognizer_group_id)
    assert access.API.may(R, Resource.GROUP, dead_letters.GROUP)
    # The gallery reader's group is written inline where its consumer is made.
    assert f'"group.id": "{access.GALLERY_READER_GROUP}"' in inspect.getsource(worker.GalleryFeed)
    # The stream reads the recognizers' lag, but may not join their group.
    assert access.STREAM.may(D, Resource.GROUP, RecognizerSettings().recognizer_group_id)
    assert not access.STREAM.may(R, Resource.GROUP, RecognizerSettings().recognizer_group_id)


def test_group_prefixes_do_not_overlap() -> None:
    """A prefix that another service's group starts with would hand it that group."""
    prefixes = {a.name for p in access.SERVICES for a in p.acls if a.resource is Resource.GROUP}
    assert not [(a, b) for a in prefixes for b in prefixes if a != b and b.startswith(a)]


def test_strimzi_acls_round_trip() -> None:
    for principal in access.PRINCIPALS:
        assert access.from_strimzi(access.strimzi_acls(principal)) == principal.acls


def test_a_deny_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="never denies"):
        access.from_strimzi(
            [{"type": "deny", "resource": {"type": "topic", "name": "x"}, "operations": ["Read"]}]
        )


def test_bindings_name_the_users_and_allow() -> None:
    acl = next(iter(access.RECOGNIZER.acls))
    b = binding(access.RECOGNIZER, acl)
    assert (b.principal, b.host, b.name) == ("User:facestream-recognizer", "*", acl.name)
    assert "User:facestream-ingest" in describe()
