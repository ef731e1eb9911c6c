"""The results page in a real browser, and the fence that keeps the browser on loopback.

A photo goes through ingest as any client sends it; once the platform has a final result
for it, the results page (``/``), opened in chromium with an API key as the HTTP Basic
password, lists it. Without a usable key the page answers 401 (403 without the scope).
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Error, Page, Route, expect

from tests.browser.conftest import ApiKey, NetworkGuard, NewContext, outside_loopback
from tests.e2e.test_lfw import follow_results, upload
from tests.platform import Platform

pytestmark = pytest.mark.browser

PHOTO = Path("sample/examples/knn_examples/test/obama1.jpg")


def test_results_page_lists_a_submitted_photo(
    page: Page, platform: Platform, faces_dir: Path, tmp_path: Path
) -> None:
    photo = tmp_path / f"browser-smoke-{uuid.uuid4().hex[:12]}.jpg"  # a name only this test uses
    shutil.copyfile(faces_dir / PHOTO, photo)
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        ((image_id, (_, result_url)),) = upload(ingest, [photo]).items()
    with httpx.Client(headers=platform.headers, timeout=60) as api:
        result = follow_results(api, {image_id: result_url}, timeout=120)[image_id]

    response = page.goto("/")
    assert response is not None
    assert response.status == 200
    expect(page).to_have_title(re.compile("facestream"))
    row = page.locator("table tr", has_text=photo.name)
    expect(row).to_have_count(1)
    expect(row).to_contain_text(result["status"])
    expect(row.locator(f"a[href*='{image_id}']:visible").first).to_be_visible()  # its link


def test_without_a_key_the_browser_is_asked_to_log_in(new_context: NewContext, base_url: str) -> None:
    page = new_context(base_url=base_url).new_page()
    # Nobody answers the Basic challenge (a person would cancel the prompt): Playwright
    # refuses the navigation, after the browser received the 401.
    with (
        page.expect_response(f"{base_url}/") as answer,
        pytest.raises(Error, match="ERR_INVALID_AUTH_CREDENTIALS"),
    ):
        page.goto("/")
    assert answer.value.status == 401
    assert answer.value.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(("who", "status"), [("an unknown key", 401), ("a key without the query scope", 403)])
def test_the_results_page_needs_a_key_with_the_query_scope(
    new_context: NewContext, base_url: str, api_key: ApiKey, who: str, status: int
) -> None:
    key = "fsk_000000000000_nope" if who == "an unknown key" else api_key("submit")
    response = new_context(key, base_url).new_page().goto("/")
    assert response is not None
    assert response.status == status, f"{who}: {response.status}"
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Basic")


#: A page as a careless template would make it: assets from other hosts, one from here.
OUTSIDE_HTML = """<!doctype html><html><head>
<link rel="stylesheet" href="https://cdn.example.org/site.css">
<script src="https://cdn.example.org/lib.js"></script>
</head><body>
<img src="http://example.com/x.png"><img src="http://127.0.0.1:9/local.png">
</body></html>"""


def test_requests_outside_loopback_are_aborted_and_recorded(
    new_context: NewContext, network_guard: NetworkGuard
) -> None:
    page = new_context().new_page()
    page.route(
        "http://127.0.0.1:9/outside", lambda route: route.fulfill(body=OUTSIDE_HTML, content_type="text/html")
    )
    local: list[str] = []

    def serve_local(route: Route) -> None:
        local.append(route.request.url)
        route.fulfill(body=b"", content_type="image/png")

    page.route("http://127.0.0.1:9/local.png", serve_local)

    with page.expect_event("requestfailed", lambda r: r.url == "http://example.com/x.png") as failed:
        page.goto("http://127.0.0.1:9/outside")
    assert (failed.value.failure or "").startswith("net::ERR_BLOCKED_BY_CLIENT")
    with pytest.raises(Error, match="ERR_BLOCKED_BY_CLIENT"):
        page.goto("https://example.net/")

    assert local == ["http://127.0.0.1:9/local.png"]  # loopback passes
    assert sorted(set(network_guard.blocked)) == [
        "http://example.com/x.png",
        "https://cdn.example.org/lib.js",
        "https://cdn.example.org/site.css",
        "https://example.net/",
    ]
    with pytest.raises(pytest.fail.Exception, match="outside loopback"):
        network_guard.check()  # what the fixture's teardown runs
    network_guard.take()  # expected here: the teardown must not fail this test


@pytest.mark.parametrize(
    ("url", "outside"),
    [
        ("http://127.0.0.1:8001/", False),
        ("http://127.8.0.1/", False),
        ("http://localhost:8001/x", False),
        ("http://[::1]:8001/", False),
        ("ws://127.0.0.1/socket", False),
        ("data:image/png;base64,AAAA", False),
        ("about:blank", False),
        ("http://example.com/", True),
        ("http://localhost.example.com/", True),
        ("http://10.0.0.1/", True),
        ("http://0.0.0.0/", True),
        ("http://[::ffff:8.8.8.8]/", True),
        ("file:///etc/passwd", True),
    ],
)
def test_outside_loopback(url: str, outside: bool) -> None:
    assert outside_loopback(url) is outside
