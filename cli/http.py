"""One service the CLI talks to: its name, its URL, and what its answers mean.

Contract: :meth:`Service.send` returns the service's answer, whatever its status, after
retrying 429 and 503 answers that carry ``Retry-After`` (at most ``retries`` times, each
wait at most ``max_wait`` seconds: every request the CLI repeats carries a client id or
an ``Idempotency-Key``, so a repeat does nothing twice). No answer at all raises
:class:`~cli.errors.Unreachable`. :meth:`Service.refused` turns an answer into the
:class:`~cli.errors.Refused` that names the service, its URL and the server's detail.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from cli.errors import Refused, Unreachable, transport_reason

INGEST = "ingest API"
RESULTS = "results API"


def detail_of(r: httpx.Response) -> str:
    """The server's one-sentence ``detail``, else the start of the body, else the reason phrase."""
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    text = r.text.strip()
    return text[:300] if text else r.reason_phrase


def retry_after(r: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header in seconds (the form these services send)."""
    raw = r.headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


@dataclass
class Service:
    name: str
    client: httpx.Client
    retries: int = 3
    max_wait: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    @property
    def url(self) -> str:
        return str(self.client.base_url).rstrip("/")

    def send(self, method: str, path: str, *, retries: int | None = None, **kw: Any) -> httpx.Response:
        """The answer to ``method path`` (see the module's contract)."""
        budget = self.retries if retries is None else retries
        while True:
            try:
                r = self.client.request(method, path, **kw)
            except httpx.TransportError as exc:
                raise Unreachable(self.name, self.url, transport_reason(exc)) from None
            wait = retry_after(r) if r.status_code in (429, 503) else None
            if wait is None or budget <= 0 or wait > self.max_wait:
                return r
            budget -= 1
            self.sleep(wait)

    def refused(self, r: httpx.Response) -> Refused:
        what = f"{r.request.method} {r.request.url.path}"
        return Refused(self.name, self.url, r.status_code, detail_of(r), what)

    def expect(self, r: httpx.Response, *ok: int) -> httpx.Response:
        """``r`` if its status is one of ``ok``, else raise :meth:`refused`."""
        if r.status_code not in ok:
            raise self.refused(r)
        return r
