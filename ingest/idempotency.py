"""Image ids: random, or derived from the client's ``Idempotency-Key`` so a retry gets the same ones.

With a key, the id of a file is ``uuid5(NAMESPACE, caller, key, position, sha256)``: the
same request sent again by the same caller (the API key's public id) yields the same
ids, so a retry after a lost answer or a 503 republishes the same images instead of
new copies. Republishing is harmless: the projector upserts the image's row and every
result is keyed by image id. Another caller, another key, another position or other
bytes give other ids.
"""

from __future__ import annotations

import uuid

from ingest.validation import UploadRejected

HEADER = "Idempotency-Key"
MAX_LENGTH = 255
#: Fixed forever: changing it would give every retried request new ids.
NAMESPACE = uuid.UUID("6f1d4a52-3a8e-5b0c-9d6e-2c7f9b1e8a43")

DESCRIPTION = (
    "Makes the request safe to retry: with the same key (1 to 255 printable ASCII characters), "
    "the same API key and the same files in the same order, a retry answers the same image ids, "
    "and the images are not submitted twice. Without it every file gets a new random id."
)


def check_key(raw: str | None) -> str | None:
    """The header's value if valid, None if absent; raises UploadRejected(400) otherwise."""
    if raw is None:
        return None
    if not 1 <= len(raw) <= MAX_LENGTH or not all(" " <= c <= "~" for c in raw):
        raise UploadRejected(400, f"the {HEADER} header must be 1 to {MAX_LENGTH} printable ASCII characters")
    return raw


def image_id(caller: str, key: str | None, position: int, sha256: str) -> str:
    """The id of the file at ``position`` (0-based) of a request; random without a key."""
    if key is None:
        return str(uuid.uuid4())
    return str(uuid.uuid5(NAMESPACE, "\x00".join((caller, key, str(position), sha256))))
