"""The door: what every HTTP request passes before routing, before a byte of its body is read.

FastAPI parses a form or JSON body before a route's dependencies run, so a check made
in a dependency comes too late: an anonymous upload would be spooled to ``/tmp`` before
its 401, and invalid JSON would get 422 instead. :class:`Door` is a pure ASGI middleware
that both services install (``create_app``) and that, in this order:

1. lets the operational paths through (``/healthz``, ``/readyz``, ``/metrics``, the
   OpenAPI schema and its pages): they need no key;
2. refuses cross-site requests that change state (403, see :func:`cross_site`);
3. authenticates the key (``X-API-Key``, ``Authorization: Bearer`` or HTTP Basic) with
   :class:`common.auth.Authenticator`: 401 with ``WWW-Authenticate`` (no key, a bad
   one), 429 (the address failed too often), 503 (the database cannot tell). The
   principal goes into the request's state; each route's ``require(scope)`` then checks
   the scope and the key's rate;
4. counts the body's bytes as they arrive, chunked bodies included, and answers 413 as
   soon as the count passes the limit (at once if ``Content-Length`` already does).

Every refusal is answered before the body is read (``{"detail": ...}``, like every other
4xx); the server discards whatever the client still sends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.auth import Authenticator, Credentials, credentials_from

#: Methods that change nothing: HTTP Basic credentials are accepted for them without more.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

#: Paths that need no key besides the app's schema and documentation pages (common.http.ops_router).
OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(frozen=True)
class BodyLimits:
    """The most bytes a request body may have: ``upload`` for ``multipart/form-data``,
    ``other`` for every other body (JSON, form-urlencoded, anything)."""

    upload: int
    other: int

    def of(self, headers: Headers) -> tuple[int, str]:
        """The limit for a request with these headers, and its name for the answer."""
        if headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return self.upload, "request body"
        return self.other, "JSON body" if "json" in headers.get("content-type", "") else "request body"


class BodyTooLarge(HTTPException):
    """Raised by the counting ``receive`` once a body passes its limit. FastAPI passes an
    HTTPException raised while it reads a body on to its handler (a 413 answer)."""

    def __init__(self, limit: int, what: str) -> None:
        super().__init__(413, f"{what} over {limit} bytes")


def cross_site(method: str, headers: Headers, credentials: Credentials | None) -> str | None:
    """Why a request must be refused as a possible cross-site request forgery, or None.

    The results page's browser login keeps the key as HTTP Basic credentials, which the
    browser then attaches to any request to this host, also one that another site's page
    makes (a plain form post needs no permission). So:

    * Basic credentials are accepted for a request that changes state only when it also
      carries ``X-Requested-With`` (the pages' buttons send it): a cross-site page cannot
      set a header without the CORS permission these services never give, and a plain
      form cannot set one at all. Other clients send their key as ``X-API-Key`` or Bearer;
    * a request that changes state and carries a browser's sign of another origin
      (``Sec-Fetch-Site`` other than ``same-origin``/``none``, or an ``Origin`` whose
      host is not the ``Host``) is refused, whatever its credentials.
    """
    if method in SAFE_METHODS:
        return None
    fetch_site = headers.get("sec-fetch-site", "").lower()
    if fetch_site and fetch_site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
    origin = headers.get("origin")
    if origin is not None and not _same_host(origin, headers.get("host", "")):
        return f"cross-site request refused (Origin {origin!r} is not this host)"
    if credentials is not None and credentials.scheme == "basic" and "x-requested-with" not in headers:
        return (
            f"HTTP Basic credentials are accepted for {method} only from the results pages (with "
            "X-Requested-With): send the key as X-API-Key or Authorization: Bearer"
        )
    return None


def _same_host(origin: str, host: str) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:  # e.g. "http://[::1"
        return False
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (a sandboxed or privacy-sensitive context) and anything odd
    default = ":443" if parts.scheme == "https" else ":80"
    return parts.netloc.lower().removesuffix(default) == host.lower().removesuffix(default)


class Door:
    """Pure ASGI middleware (see the module's docstring); one per app, registered by
    :func:`install`. Refusals are answered here, not raised: this runs outside the
    app's exception handlers."""

    def __init__(
        self, app: ASGIApp, auth: Authenticator, limits: BodyLimits, open_paths: Iterable[str]
    ) -> None:
        self.app = app
        self.auth = auth
        self.limits = limits
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        limit, what = self.limits.of(headers)
        try:
            if scope["path"] not in self.open_paths:
                credentials = credentials_from(headers)
                if (reason := cross_site(scope["method"], headers, credentials)) is not None:
                    raise HTTPException(403, reason)
                client = scope.get("client")
                principal = await self.auth.authenticate(credentials, client[0] if client else "unknown")
                scope.setdefault("state", {})["principal"] = principal
            declared = headers.get("content-length", "")
            if declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(limit, what)
        except HTTPException as exc:
            await _answer(exc, scope, receive, send)
            return

        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, what)
            return message

        async def noting(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, noting)
        except BodyTooLarge as exc:  # read outside FastAPI's body parsing, not handled in the app
            if started:
                raise
            await _answer(exc, scope, receive, send)


async def _answer(exc: HTTPException, scope: Scope, receive: Receive, send: Send) -> None:
    await JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)(
        scope, receive, send
    )


def install(app: FastAPI, auth: Authenticator, limits: BodyLimits, public: Iterable[str] = ()) -> None:
    """Put a :class:`Door` in front of ``app``'s routes; the schema, its pages (FastAPI's,
    and ``public``: common.docs) and the operational paths stay open."""
    docs = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    open_paths = OPS_PATHS | {path for path in docs if path} | set(public)
    app.add_middleware(Door, auth=auth, limits=limits, open_paths=open_paths)
