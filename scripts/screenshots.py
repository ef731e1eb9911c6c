"""Regenerate the README's screenshots from a running platform (``make screenshots``).

Opens the results API's pages in Debian's headless chromium (``/usr/bin/chromium``,
driven by Playwright; ``make install`` installs it), logged in with HTTP Basic (the key
as password, as a person logs in), and writes one PNG per page into ``docs/screenshots/``:

    results.png   /                 the recent images
    image.png     /images/{id}      the first processed image listed on /
    review.png    /review           the review queue
    person.png    /people/{id}      the first person listed on /people

Every page is taken at 1280x900, whole (``full_page``), once the network is idle.

    python scripts/screenshots.py [--base-url URL] [--key KEY] [--out DIR]

The key: ``--key``, else ``$FACESTREAM_API_KEY``, else the bootstrap admin key ``make up``
wrote to ``.run/admin-key``; it needs the ``query`` scope. The base URL: ``--base-url``,
else ``$FACESTREAM_API_URL``, else ``make up``'s ``http://127.0.0.1:8001``. The browser
fetches nothing from any other origin: such requests are aborted and reported.

Exit status 1 when any page could not be taken (it answered other than 200, or the link
to it was missing): every page is still tried, and each failure is named on stderr. The
screenshot of a failed page is left as it was.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from playwright.sync_api import Browser, Error, Page, Route, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = Path(os.environ.get("FACESTREAM_RUN_DIR", ROOT / ".run"))
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 30_000
DESCRIPTION = "Regenerate the README's screenshots from a running platform (make up)."


class PageFailed(Exception):
    """A page could not be shot; the message says which and why."""


@dataclass(frozen=True)
class Shot:
    """``file`` shows the page at ``path``, or, with ``find_link``, the page it links to
    from there (``find_link`` gives the link's href, None when there is none)."""

    file: str
    path: str
    find_link: Callable[[Page], str | None] | None = None


def first_href(page: Page, *selectors: str) -> str | None:
    """The ``href`` of the first element matching the first selector that matches any."""
    for selector in selectors:
        found = page.locator(selector)
        if found.count():
            return found.first.get_attribute("href")
    return None


SHOTS = (
    Shot("results.png", "/"),
    Shot(
        "image.png",
        "/?status=processed",  # an image with a named face shows its boxes and labels
        find_link=lambda page: first_href(
            page, "table#images tr[data-image-id] a.open", "a[href^='/images/']"
        ),
    ),
    Shot("review.png", "/review"),
    Shot(
        "person.png",
        "/people",
        find_link=lambda page: first_href(page, "table#people a[href^='/people/']", "a[href^='/people/']"),
    ),
)


def shrink(path: Path) -> None:
    """Rewrite the PNG with a 256-colour palette: the README's screenshots stay a few
    hundred KB in the repository instead of megabytes (a photo page is mostly photo)."""
    from PIL import Image

    with Image.open(path) as shot:
        small = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def default_key() -> str | None:
    key = os.environ.get("FACESTREAM_API_KEY")
    if key:
        return key
    stored = RUN_DIR / "admin-key"
    return stored.read_text().strip() if stored.is_file() else None


def visit(page: Page, url: str) -> None:
    """Open ``url`` and wait until the network is idle; :class:`PageFailed` unless it answers 200."""
    try:
        response = page.goto(url, wait_until="networkidle")
    except Error as e:
        raise PageFailed(str(e).splitlines()[0]) from e  # names the URL
    if response is None or response.status != 200:
        raise PageFailed(f"{url} answered {response.status if response else 'nothing'}")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def take(browser: Browser, base_url: str, key: str, shot: Shot, out: Path) -> Path:
    """Take one screenshot; raises :class:`PageFailed`."""
    origin = origin_of(base_url)
    elsewhere: list[str] = []

    def other_origin(url: str) -> bool:
        return urlsplit(url).scheme in ("http", "https") and origin_of(url) != origin

    def abort_elsewhere(route: Route) -> None:
        elsewhere.append(route.request.url)
        route.abort("blockedbyclient")

    context = browser.new_context(
        base_url=base_url,
        http_credentials={"username": "screenshots", "password": key, "origin": origin},
        viewport={"width": VIEWPORT["width"], "height": VIEWPORT["height"]},
        service_workers="block",
    )
    try:
        context.set_default_timeout(TIMEOUT_MS)
        context.route(other_origin, abort_elsewhere)
        page = context.new_page()
        url = urljoin(base_url, shot.path)
        if shot.find_link is not None:
            visit(page, url)
            href = shot.find_link(page)
            if not href:
                raise PageFailed(f"no link to the page on {shot.path}")
            url = urljoin(page.url, href)
        visit(page, url)
        path = out / shot.file
        page.screenshot(path=path, full_page=True, animations="disabled")
        shrink(path)
        if elsewhere:
            print(
                f"[screenshots] {shot.file}: aborted requests to other origins: {elsewhere}", file=sys.stderr
            )
        return path
    finally:
        context.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/screenshots.py", description=DESCRIPTION)
    parser.add_argument(
        "--base-url",
        default=os.environ.get("FACESTREAM_API_URL", "http://127.0.0.1:8001"),
        help="results API (default: $FACESTREAM_API_URL, else %(default)s)",
    )
    parser.add_argument(
        "--key", default=default_key(), help="API key (default: $FACESTREAM_API_KEY, .run/admin-key)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="default %(default)s")
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("no API key: pass --key, set FACESTREAM_API_KEY, or run `make up` (.run/admin-key)")
    if not CHROMIUM.is_file():
        print(f"[screenshots] {CHROMIUM} is missing: run `make install`", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            for shot in SHOTS:
                try:
                    path = take(browser, args.base_url, args.key, shot, args.out)
                except PageFailed as e:
                    failed.append(shot.file)
                    print(f"[screenshots] FAILED {shot.file}: {e}", file=sys.stderr)
                else:
                    print(
                        f"[screenshots] wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
                    )
        finally:
            browser.close()
    if failed:
        print(f"[screenshots] {len(failed)} of {len(SHOTS)} failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
