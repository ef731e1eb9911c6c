"""Applying schemas/access.py's ACLs to a broker, for clusters that no operator manages.

In prod, Strimzi's User Operator applies them from the KafkaUsers (kafka-users.yaml);
anywhere else an administrator runs, with the credentials of a principal allowed to
alter the cluster's ACLs (a super user) in the usual ``KAFKA_*`` settings::

    python -m common.kafka_access show     # the principals and their ACLs
    python -m common.kafka_access apply    # make the broker's ACLs for them exactly these
    python -m common.kafka_access topics   # create/grow the topics (as facestream-admin)

``apply`` is idempotent and exact for the facestream principals: it creates the ACLs
that are missing and deletes those of these principals that schemas/access.py no longer
grants. ACLs of any other principal are left alone. The SCRAM or PLAIN users themselves
(and their passwords) are the cluster's business, not this module's.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from common.errors import BrokerUnavailable
from common.kafka import ensure_topics
from common.settings import ServiceSettings
from schemas.access import PRINCIPALS, Acl, Operation, Pattern, Principal, Resource

_RESOURCE = {
    Resource.TOPIC: ResourceType.TOPIC,
    Resource.GROUP: ResourceType.GROUP,
    Resource.CLUSTER: ResourceType.BROKER,
}
_PATTERN = {Pattern.LITERAL: ResourcePatternType.LITERAL, Pattern.PREFIXED: ResourcePatternType.PREFIXED}
_OPERATION = {
    Operation.READ: AclOperation.READ,
    Operation.WRITE: AclOperation.WRITE,
    Operation.DESCRIBE: AclOperation.DESCRIBE,
    Operation.CREATE: AclOperation.CREATE,
    Operation.ALTER: AclOperation.ALTER,
    Operation.DESCRIBE_CONFIGS: AclOperation.DESCRIBE_CONFIGS,
    Operation.ALTER_CONFIGS: AclOperation.ALTER_CONFIGS,
}


def kafka_principal(principal: Principal) -> str:
    """How the broker names a SASL user."""
    return f"User:{principal.user}"


def binding(principal: Principal, acl: Acl) -> AclBinding:
    """The ALLOW binding of one ACL, from any host."""
    return AclBinding(
        _RESOURCE[acl.resource],
        acl.name,
        _PATTERN[acl.pattern],
        kafka_principal(principal),
        "*",
        _OPERATION[acl.operation],
        AclPermissionType.ALLOW,
    )


@dataclass(frozen=True)
class Applied:
    created: int
    deleted: int


def apply_acls(
    admin: AdminClient, principals: Iterable[Principal] = PRINCIPALS, timeout: float = 30.0
) -> Applied:
    """Make the broker's ACLs of ``principals`` exactly theirs in schemas/access.py.

    Raises :class:`KafkaException` when the broker refuses (the caller may not alter ACLs,
    or the broker has no authorizer: SECURITY_DISABLED) or does not answer; what was
    already created or deleted stays so, and running it again completes the rest.
    """
    principals = list(principals)
    wanted = {binding(p, a) for p in principals for a in p.acls}
    present: set[AclBinding] = set()
    for p in principals:
        everything = AclBindingFilter(
            ResourceType.ANY,
            None,  # type: ignore[arg-type]  # None matches any name (describe_acls' contract)
            ResourcePatternType.ANY,
            kafka_principal(p),
            None,  # type: ignore[arg-type]  # any host
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        present |= set(admin.describe_acls(everything, request_timeout=timeout).result(timeout=timeout))
    create = sorted(wanted - present, key=str)
    delete = [
        AclBindingFilter(
            b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type
        )
        for b in sorted(present - wanted, key=str)
    ]
    if create:
        for fut in admin.create_acls(create, request_timeout=timeout).values():
            fut.result(timeout=timeout)
    if delete:
        for fut in admin.delete_acls(delete, request_timeout=timeout).values():
            fut.result(timeout=timeout)
    return Applied(created=len(create), deleted=len(delete))


def describe(principals: Iterable[Principal] = PRINCIPALS) -> str:
    """One line per ACL: principal, operation, resource (a human-readable table)."""
    lines = []
    for p in principals:
        for acl in sorted(p.acls):
            star = "*" if acl.pattern is Pattern.PREFIXED else ""
            lines.append(
                f"{kafka_principal(p):28} {acl.operation.value:16} {acl.resource.value} {acl.name}{star}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.kafka_access", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("show", "apply", "topics"))
    args = parser.parse_args(argv)
    if args.command == "show":
        print(describe())
        return 0
    conf = ServiceSettings().librdkafka()
    try:
        if args.command == "topics":
            ensure_topics(conf)
            print("topics ensured")
        else:
            done = apply_acls(AdminClient(conf))
            print(f"ACLs applied: {done.created} created, {done.deleted} deleted")
    except (KafkaException, BrokerUnavailable) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
