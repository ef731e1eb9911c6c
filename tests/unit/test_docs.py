"""The API pages (/docs) work without internet: every file they load is served by the
service itself, to anyone, like the OpenAPI document. No broker or database needed:
the pages do not touch them."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from api.app import create_app as create_api
from api.settings import ApiSettings
from common.docs import ASSETS, DEFAULT_ASSETS_DIR
from ingest.app import create_app as create_ingest
from ingest.settings import IngestSettings

KEY = SecretStr("fsk-unit-admin-key-not-secret")


def _ingest(assets: Path) -> FastAPI:
    return create_ingest(IngestSettings(admin_api_key=KEY, docs_assets_dir=assets))


def _api(assets: Path) -> FastAPI:
    return create_api(ApiSettings(admin_api_key=KEY, docs_assets_dir=assets))


SERVICES: list[Callable[[Path], FastAPI]] = [_ingest, _api]


async def _get(app: FastAPI, path: str) -> httpx.Response:
    # No lifespan: nothing connects; an anonymous caller, as a browser opening the page.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://svc") as client:
        return await client.get(path)


@pytest.mark.parametrize("make", SERVICES)
async def test_the_docs_page_loads_only_files_its_service_serves(make: Callable[[Path], Any]) -> None:
    assert all((DEFAULT_ASSETS_DIR / name).is_file() for name in ASSETS), "make install fetches them"
    app = make(DEFAULT_ASSETS_DIR)
    page = await _get(app, "/docs")
    assert page.status_code == 200, page.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text) + re.findall(
        r"""url: ?["']([^"']+)["']""", page.text
    )
    assert "/openapi.json" in urls
    assert len(urls) >= 4, urls
    for url in urls:
        assert re.match(r"/[^/]", url), f"{url} is not on this host"
        answer = await _get(app, url)
        assert answer.status_code == 200, (url, answer.status_code)
        assert answer.content, url
    bundle = await _get(app, "/docs/assets/swagger-ui-bundle.js")
    assert bundle.headers["content-type"].startswith("text/javascript")
    assert len(bundle.content) > 500_000  # Swagger UI itself, not a stand-in


@pytest.mark.parametrize("make", SERVICES)
async def test_without_the_files_the_docs_page_says_how_to_install_them(
    make: Callable[[Path], Any], tmp_path: Path
) -> None:
    page = await _get(make(tmp_path), "/docs")
    assert page.status_code == 503
    assert "make install" in page.text
    assert str(tmp_path) in page.text


@pytest.mark.parametrize(
    "path",
    ["/docs/assets/../../pyproject.toml", "/docs/assets/%2e%2e%2fpyproject.toml", "/docs/assets/index.html"],
)
async def test_only_the_pages_files_are_served(path: str, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("not one of the assets")
    answer = await _get(_api(tmp_path), path)
    assert answer.status_code in (401, 404), answer.text
