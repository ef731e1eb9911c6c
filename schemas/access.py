"""Who may do what on the broker: one Kafka principal per service, and its ACLs.

The one source of truth for Kafka authorization. Every grant below is derived from
what the code does (the produce and consume calls of each service); the prod
KafkaUsers (deploy/k8s/overlays/prod/kafka-users.yaml) are generated from it and
tests/deploy checks that they still match, and ``python -m common.kafka_access apply``
creates the same ACLs on any other cluster. Anything not granted here is refused by a
broker with an authorizer and ``allow.everyone.if.no.acl.found=false``.

The point of the split: the recognizer parses untrusted images, so it may read the
gallery but never write it (nor read what the API or the stream write into the read
model); ingest may only publish submissions; nobody but the admin creates topics.
What the API publishes on ``images.recognize`` (re-matches) carries encodings, never an
image; a recognizer that reads it detects nothing.

Every service principal may DESCRIBE every facestream topic: each service runs
:func:`common.kafka.ensure_topics` at start-up, which checks that every declared topic
exists (a topic a principal cannot describe looks missing to it, and creating it would
be refused). Describe reveals a topic's partitions and offsets, never its messages.

Consumer groups are granted by prefix, so that a deployment may suffix a group id
(``STREAM_APP_ID=facestream-stream-blue``) without a new ACL; a group id outside these
prefixes is refused. No service uses transactions (no transactional ids) and none needs
IdempotentWrite on the cluster: since Kafka 3.0 (KIP-679) an idempotent producer only
needs Write on some topic.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas import topics


class Resource(StrEnum):
    TOPIC = "topic"
    GROUP = "group"
    CLUSTER = "cluster"


class Pattern(StrEnum):
    LITERAL = "literal"
    PREFIXED = "prefixed"


class Operation(StrEnum):
    """Kafka's ACL operations that facestream grants (a subset of ``AclOperation``)."""

    READ = "Read"
    WRITE = "Write"
    DESCRIBE = "Describe"
    CREATE = "Create"
    ALTER = "Alter"
    DESCRIBE_CONFIGS = "DescribeConfigs"
    ALTER_CONFIGS = "AlterConfigs"


@dataclass(frozen=True, order=True)
class Acl:
    """One allowed operation on one resource (or every resource with ``name`` as prefix)."""

    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation


@dataclass(frozen=True)
class Principal:
    """A Kafka user (``User:<user>``) and everything it is allowed; nothing else is."""

    service: str
    user: str
    acls: frozenset[Acl]

    def may(self, operation: Operation, resource: Resource, name: str) -> bool:
        """Whether an ACL of this principal allows ``operation`` on the resource ``name``
        (Kafka's rules: Read, Write and Alter imply Describe; a prefixed ACL covers every
        name that starts with it)."""
        implied = {operation}
        if operation is Operation.DESCRIBE:
            implied |= {Operation.READ, Operation.WRITE, Operation.ALTER}
        if operation is Operation.DESCRIBE_CONFIGS:
            implied.add(Operation.ALTER_CONFIGS)
        return any(
            a.resource is resource
            and a.operation in implied
            and (a.name == name if a.pattern is Pattern.LITERAL else name.startswith(a.name))
            for a in self.acls
        )


#: Kafka's name for the one cluster resource.
CLUSTER_NAME = "kafka-cluster"
#: Every facestream topic (schemas/topics.py).
ALL_TOPICS = tuple(t.name for t in topics.TOPICS)

# Consumer group ids (prefixes). Their defaults live with the services; tests/unit
# checks that each default starts with its prefix here.
#: The stream worker's Faust app id is its group (STREAM_APP_ID, stream/settings.py).
STREAM_GROUP = "facestream-stream"
#: The recognizers' one group (RECOGNIZER_GROUP_ID, recognizer/settings.py).
RECOGNIZER_GROUP = "facestream-recognizers"
#: Each recognizer's gallery reader (recognizer/worker.py): assign() only, never commits.
GALLERY_READER_GROUP = "facestream-gallery-reader"
#: The API's reader of scan answers (api/scans.py): assign() only, never commits.
SCAN_REPLY_GROUP = "facestream-api-scan-replies"
#: The API's dead-letter replay (api/dead_letters.py GROUP).
REPLAY_GROUP = "facestream-dead-letter-replay"
#: notify's consumer groups, a prefix: webhooks (NOTIFY_GROUP_ID) and MQTT (MQTT_GROUP_ID,
#: facestream-notify-mqtt); notify/settings.py.
NOTIFY_GROUP = "facestream-notify"


def on_topics(names: tuple[str, ...] | list[str], *operations: Operation) -> set[Acl]:
    """``operations`` on each of the topics ``names`` (literal names)."""
    return {Acl(Resource.TOPIC, n, Pattern.LITERAL, op) for n in names for op in operations}


def on_group(prefix: str, *operations: Operation) -> set[Acl]:
    """``operations`` on every consumer group whose id starts with ``prefix``."""
    return {Acl(Resource.GROUP, prefix, Pattern.PREFIXED, op) for op in operations}


def _principal(service: str, *acls: set[Acl]) -> Principal:
    return Principal(service, f"facestream-{service}", frozenset().union(*acls))


R, W, D = Operation.READ, Operation.WRITE, Operation.DESCRIBE

INGEST = _principal(
    "ingest",
    on_topics(ALL_TOPICS, D),
    on_topics([topics.SUBMITTED], W),  # ingest/submission.py: one ImageSubmitted per upload
)

STREAM = _principal(
    "stream",
    on_topics(ALL_TOPICS, D),  # ensure_topics, and the lag exporter's end offsets
    # Its Faust agents (stream/app.py create_app).
    on_topics([topics.SUBMITTED, topics.FAILURES, topics.RETRY, topics.RESULTS, topics.GALLERY], R),
    on_topics(
        [
            topics.RECOGNIZE,  # due retries (stream/app.py send_retry)
            topics.SUBMITTED,  # the reconciler re-dispatches stuck images
            topics.RESULTS,  # the final ImageFailed of an image out of retries (handlers)
            topics.DEAD_LETTER,  # stream/delivery.py
            topics.GALLERY,  # tombstones of an erasure's purge
        ],
        W,
    ),
    on_group(STREAM_GROUP, R),
    # The lag exporter and the reconciler read the recognizers' committed offsets
    # (stream/metrics.py): Describe, not Read, so it can neither join nor commit there.
    on_group(RECOGNIZER_GROUP, D),
)

RECOGNIZER = _principal(
    "recognizer",
    on_topics(ALL_TOPICS, D),
    on_topics([*topics.RECOGNIZER_INPUTS, topics.GALLERY], R),
    # Outcomes (recognizer/worker.py, dispatch.py), and the answers to the API's scans
    # (faces.scan is one of its inputs). Never the gallery: it parses untrusted images,
    # and a compromised recognizer must not be able to enroll faces.
    on_topics([topics.RESULTS, topics.FAILURES, topics.DEAD_LETTER, topics.SCANNED], W),
    on_group(RECOGNIZER_GROUP, R),
    on_group(GALLERY_READER_GROUP, R),
)

API = _principal(
    "api",
    on_topics(ALL_TOPICS, D),
    # Enrollment and erasure (api/routes/people.py).
    on_topics([topics.GALLERY], W),
    # Re-runs (api/routes/images.py) and the dead-letter replay (api/dead_letters.py).
    on_topics([topics.SUBMITTED], W),
    # Re-matches after a face is named in review: RematchRequested (schemas/events.py),
    # stored encodings matched again without the image.
    on_topics([topics.RECOGNIZE], W),
    on_topics([topics.DEAD_LETTER], R),
    on_group(REPLAY_GROUP, R),
    # Photos to enroll, verify or detect go to the recognizers and come back answered
    # (api/scans.py): the API runs no face detection itself.
    on_topics([topics.SCAN], W),
    on_topics([topics.SCANNED], R),
    on_group(SCAN_REPLY_GROUP, R),
)

NOTIFY = _principal(
    "notify",
    on_topics(ALL_TOPICS, D),  # ensure_topics
    # Webhooks and MQTT messages are made from results (notify/consumer.py); it publishes
    # nothing to Kafka.
    on_topics([topics.RESULTS], R),
    on_group(NOTIFY_GROUP, R),
)

#: The services' principals: one KafkaUser each in prod.
SERVICES: tuple[Principal, ...] = (INGEST, STREAM, RECOGNIZER, API, NOTIFY)

#: Creates and grows the topics (``ensure_topics``, a migration step) where no operator
#: does: Strimzi's Topic Operator does in prod, so prod has no such user. Applying the
#: ACLs themselves needs Alter on the cluster: a cluster administrator's, not granted here.
ADMIN = _principal(
    "admin",
    on_topics(
        ALL_TOPICS,
        Operation.CREATE,
        Operation.ALTER,  # create_partitions
        Operation.DESCRIBE,
        Operation.DESCRIBE_CONFIGS,
        Operation.ALTER_CONFIGS,
    ),
)

PRINCIPALS: tuple[Principal, ...] = (*SERVICES, ADMIN)
BY_SERVICE = {p.service: p for p in PRINCIPALS}


def strimzi_acls(principal: Principal) -> list[dict[str, object]]:
    """The principal's ACLs as a Strimzi KafkaUser's ``spec.authorization.acls``: one rule
    per resource with its operations, in a stable order."""
    grouped: dict[tuple[Resource, str, Pattern], list[str]] = {}
    for acl in sorted(principal.acls):
        grouped.setdefault((acl.resource, acl.name, acl.pattern), []).append(acl.operation.value)
    rules: list[dict[str, object]] = []
    for (resource, name, pattern), operations in grouped.items():
        target: dict[str, str] = {"type": resource.value}
        if resource is not Resource.CLUSTER:
            target["name"] = name
            target["patternType"] = "prefix" if pattern is Pattern.PREFIXED else "literal"
        rules.append({"resource": target, "operations": sorted(operations)})
    return rules


def from_strimzi(rules: list[dict[str, object]]) -> frozenset[Acl]:
    """The ACLs of a KafkaUser's ``spec.authorization.acls`` (the inverse of
    :func:`strimzi_acls`); a deny rule or an unknown operation raises ``ValueError``."""
    found: set[Acl] = set()
    for rule in rules:
        if rule.get("type", "allow") != "allow":
            raise ValueError(f"facestream grants, never denies: {rule}")
        target = rule["resource"]
        operations = rule["operations"]
        if not isinstance(target, dict) or not isinstance(operations, list):
            raise ValueError(f"not a Strimzi ACL rule: {rule}")
        resource = Resource(target["type"])
        name = str(target.get("name", CLUSTER_NAME))
        pattern = Pattern.PREFIXED if target.get("patternType") == "prefix" else Pattern.LITERAL
        found |= {Acl(resource, name, pattern, Operation(op)) for op in operations}
    return frozenset(found)


#: prod (deploy/k8s/overlays/prod): the Strimzi cluster and the namespace it watches.
STRIMZI_CLUSTER = "main"
STRIMZI_NAMESPACE = "kafka"


def password_secret(principal: Principal) -> str:
    """The Secret (in the Kafka namespace) the User Operator reads the principal's password
    from; the prod overlay generates it from the same file as the service's own Secret."""
    return f"{principal.user}-password"


def kafka_users_yaml() -> str:
    """deploy/k8s/overlays/prod/kafka-users.yaml: one Strimzi KafkaUser per service."""
    out = [
        "# Generated from schemas/access.py by `python -m schemas.access`: do not edit, change",
        "# that file and regenerate (tests/deploy checks that this file is its output).",
        "#",
        "# One SCRAM-SHA-512 user per service, each with only the ACLs its code needs. They",
        f'# live in the Kafka cluster\'s namespace ("{STRIMZI_NAMESPACE}"), where the User Operator',
        "# watches. A Secret in one namespace cannot be read from another, so the password is",
        "# ours, not one the operator generates: each KafkaUser reads it from a Secret that",
        "# kustomization.yaml generates here from the same file as the service's own Secret.",
    ]
    for principal in SERVICES:
        out += [
            "---",
            "apiVersion: kafka.strimzi.io/v1",
            "kind: KafkaUser",
            "metadata:",
            f"  name: {principal.user}",
            f"  namespace: {STRIMZI_NAMESPACE}",
            "  labels:",
            f"    strimzi.io/cluster: {STRIMZI_CLUSTER}",
            "spec:",
            "  authentication:",
            "    type: scram-sha-512",
            "    password:",
            "      valueFrom:",
            "        secretKeyRef:",
            f"          name: {password_secret(principal)}",
            "          key: KAFKA_SASL_PASSWORD",
            "  authorization:",
            "    type: simple",
            "    acls:",
        ]
        for rule in strimzi_acls(principal):
            target = rule["resource"]
            assert isinstance(target, dict)
            assert isinstance(rule["operations"], list)
            out.append(f"      - resource: {{{', '.join(f'{k}: {v}' for k, v in target.items())}}}")
            out.append(f"        operations: [{', '.join(rule['operations'])}]")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(kafka_users_yaml(), end="")
