"""Fixtures for the real-browser tests: Debian's headless chromium, driven by Playwright.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium``
(``scripts/install.sh`` installs Debian's package; without it every browser test fails
and says to run ``make install``). Nothing leaves loopback: every browser context this
module makes aborts each request to a host other than 127.0.0.0/8, ::1 or ``localhost``
and records it in :class:`NetworkGuard`; a test that attempted one fails at teardown.
As a second fence the browser itself sends everything that is not loopback to a proxy
that does not exist, so even requests Playwright cannot route (the browser's own) fail.

The fixtures, from the lowest:

- ``chromium`` (module): the :class:`~playwright.sync_api.Browser`.
- ``network_guard``: this test's :class:`NetworkGuard` (``take()`` what it blocked).
- ``new_context``: ``new_context(key=None, base_url=None)`` opens a guarded
  :class:`~playwright.sync_api.BrowserContext`, logged in with HTTP Basic when ``key``
  is given (the key as password, as a person types it into the browser's prompt).
- ``base_url`` (session): the results API of the test platform (tests/conftest.py).
- ``api_key`` (session): ``api_key("query", "submit")`` is a key with exactly those
  scopes, created once through the admin API.
- ``page``: a page logged in to ``base_url`` with a ``query`` key (``page.goto("/")``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    Route,
    WebSocketRoute,
    expect,
    sync_playwright,
)

from tests.platform import Platform

CHROMIUM = Path("/usr/bin/chromium")
#: Defaults Playwright adds keep background networking off; the dead proxy (loopback is
#: never proxied) makes whatever is left fail inside the browser.
CHROMIUM_ARGS = ["--no-sandbox", "--proxy-server=http://127.0.0.1:9"]
#: Playwright's per-action and expect() timeout, in ms: generous for a loaded test machine.
TIMEOUT_MS = 15_000
#: The user name sent with a key over HTTP Basic (the services read only the password).
BASIC_USER = "browser-test"

NewContext = Callable[..., BrowserContext]
ApiKey = Callable[..., str]


#: Schemes whose URLs name no host (the page's own content), never blocked.
HOSTLESS_SCHEMES = frozenset({"data", "blob", "about"})


def outside_loopback(url: str) -> bool:
    """Whether a request for ``url`` would leave this machine: its host is not
    ``localhost``, 127.0.0.0/8 or ``::1`` (a URL without a host counts as outside,
    except ``data:``, ``blob:`` and ``about:`` ones)."""
    parts = urlsplit(url)
    if parts.scheme in HOSTLESS_SCHEMES:
        return False
    if parts.hostname == "localhost":
        return False
    try:
        return parts.hostname is None or not ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:  # a name other than localhost
        return True


class NetworkGuard:
    """Aborts a browser context's requests that would leave loopback, and remembers them.

    Installed on a context by :meth:`install`; :meth:`check` (run at teardown) fails the
    test if anything was blocked, unless the test took the record with :meth:`take`.
    """

    def __init__(self) -> None:
        self.blocked: list[str] = []

    def install(self, context: BrowserContext) -> None:
        context.route(outside_loopback, self._abort)
        context.route_web_socket(outside_loopback, self._close)

    def _abort(self, route: Route) -> None:
        self.blocked.append(route.request.url)
        route.abort("blockedbyclient")

    def _close(self, ws: WebSocketRoute) -> None:
        self.blocked.append(ws.url)
        ws.close(code=1008, reason="facestream tests: no network outside loopback")

    def take(self) -> list[str]:
        """What was blocked so far (in order), forgotten here: for tests that expect it."""
        taken, self.blocked = self.blocked, []
        return taken

    def check(self) -> None:
        if self.blocked:
            pytest.fail(
                f"the browser tried to reach {len(self.blocked)} URL(s) outside loopback "
                f"(aborted): {', '.join(self.blocked[:5])}",
                pytrace=False,
            )


# Module scope, not session: sync Playwright runs an event loop in this thread while it is
# open, and the async tests of a later module need the thread's loop to themselves.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def chromium(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's chromium package; "
            "run `make install` (as root it runs apt-get install chromium)",
            pytrace=False,
        )
    expect.set_options(timeout=TIMEOUT_MS)
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    yield browser
    browser.close()


@pytest.fixture
def network_guard() -> Iterator[NetworkGuard]:
    guard = NetworkGuard()
    yield guard
    guard.check()


@pytest.fixture
def new_context(chromium: Browser, network_guard: NetworkGuard) -> Iterator[NewContext]:
    """``new_context(key=None, base_url=None)``: a guarded context, closed after the test.

    With ``key``, the context answers the results API's HTTP Basic challenge with it (for
    ``base_url``'s origin only, when given).
    """
    contexts: list[BrowserContext] = []

    def make(key: str | None = None, base_url: str | None = None) -> BrowserContext:
        context = chromium.new_context(
            base_url=base_url,
            http_credentials=(
                {"username": BASIC_USER, "password": key, **({"origin": base_url} if base_url else {})}
                if key is not None
                else None
            ),
            service_workers="block",  # their requests would bypass context.route
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(TIMEOUT_MS)
        network_guard.install(context)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def base_url(platform: Platform) -> str:
    return platform.api_url


@pytest.fixture(scope="session")
def api_key(platform: Platform) -> ApiKey:
    """``api_key(*scopes)``: a key with exactly ``scopes``, made once per set of scopes."""
    made: dict[frozenset[str], str] = {}

    def key(*scopes: str) -> str:
        wanted = frozenset(scopes)
        if wanted not in made:
            body = {"name": f"browser tests ({','.join(sorted(wanted))})", "scopes": sorted(wanted)}
            r = httpx.post(
                f"{platform.api_url}/v1/admin/keys", json=body, headers=platform.headers, timeout=30
            )
            assert r.status_code == 201, r.text
            made[wanted] = r.json()["key"]
        return made[wanted]

    return key


@pytest.fixture
def page(new_context: NewContext, base_url: str, api_key: ApiKey) -> Page:
    """A page logged in to the results API (``base_url``) with a ``query`` key."""
    return new_context(api_key("query"), base_url).new_page()
