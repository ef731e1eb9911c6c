"""Each file's fate, as people and scripts read it (pure, unit-tested).

A command collects one :class:`Item` per file (or image) and ends with
:func:`exit_status`: 0 when every item is ``ok`` or ``skipped``; 4 when the wait for
results timed out (the ``pending`` items); 1 when some were refused, failed or not sent.
A command stopped by an error (:mod:`cli.errors`) still reports the items it has.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, TextIO

from cli.errors import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_TIMED_OUT


class Fate(StrEnum):
    OK = "ok"  # enrolled, accepted, or recognized (processed / unresolved)
    SKIPPED = "skipped"  # already enrolled for this person
    REFUSED = "refused"  # the service refused this file (``detail`` says why)
    FAILED = "failed"  # accepted, then the image's status became ``failed``
    PENDING = "pending"  # accepted, no final status before the timeout
    NOT_SENT = "not sent"  # the command stopped before sending it


#: Fates that make the command fail.
BAD = frozenset({Fate.REFUSED, Fate.FAILED, Fate.PENDING, Fate.NOT_SENT})


@dataclass
class Item:
    """One file and what became of it; ``None`` fields are left out of the JSON."""

    file: str
    fate: Fate
    detail: str | None = None  # the server's reason (refused, failed), or what happened
    http_status: int | None = None  # the refusing answer's status
    id: str | None = None  # the image id ingest gave it
    status: str | None = None  # the image's status (pending, processed, unresolved, failed)
    status_reason: str | None = None
    people: list[str] | None = None  # who was found (``unknown`` for a stranger)
    person: str | None = None  # enroll: the person the photo is for
    person_id: str | None = None
    face_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: (str(v) if k == "fate" else v) for k, v in asdict(self).items() if v is not None}

    def describe(self) -> str:
        """The human line: ``<file>: <fate and its reason>``."""
        return f"{self.file}: {self.outcome()}"

    def outcome(self) -> str:
        status = f" {self.http_status}" if self.http_status else ""
        if self.fate is Fate.REFUSED:
            return f"refused{status}: {self.detail}"
        if self.fate is Fate.NOT_SENT:
            return f"not sent ({self.detail})" if self.detail else "not sent"
        if self.fate is Fate.SKIPPED:
            return "skipped (already enrolled)"
        if self.fate is Fate.PENDING:
            return f"pending (image {self.id}): no final status before the timeout"
        if self.fate is Fate.FAILED:
            why = f" ({self.status_reason})" if self.status_reason else ""
            return f"failed{why}: {self.detail or 'no detail'} (image {self.id})"
        if self.person is not None:
            return "ok (enrolled)"
        if self.status in (None, "pending"):
            return f"ok (accepted as image {self.id})"
        found = ", ".join(self.people or []) or "no face"
        why = f" ({self.status_reason})" if self.status_reason else ""
        return f"ok: {self.status}{why}: {found}"


def exit_status(items: Iterable[Item]) -> int:
    fates = {i.fate for i in items}
    if Fate.PENDING in fates:
        return EXIT_TIMED_OUT
    return EXIT_ITEMS_FAILED if fates & BAD else EXIT_OK


def summary(items: Iterable[Item]) -> str:
    """``3 ok, 1 refused`` (fates in a fixed order, only those present)."""
    counts = Counter(i.fate for i in items)
    return ", ".join(f"{counts[f]} {f}" for f in Fate if counts[f]) or "nothing to do"


def write(items: Iterable[Item], out: TextIO, *, as_json: bool, quiet: bool) -> None:
    """One line per item: JSON objects (every item, whatever ``quiet``), or the human
    lines (with ``quiet``, only the items that went wrong)."""
    for item in items:
        if as_json:
            out.write(json.dumps(item.as_json(), ensure_ascii=False) + "\n")
        elif not quiet or item.fate in BAD:
            out.write(item.describe() + "\n")
    out.flush()
