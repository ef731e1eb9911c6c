"""The services' API pages (``/docs``), served from this host: they work without internet.

FastAPI's own ``/docs`` page loads Swagger UI from a CDN, so it is blank on a network
that cannot reach one. Here the page loads Swagger UI's files from ``ASSET_PREFIX`` on
the service itself; ``scripts/install.sh`` and the Dockerfile put them in
``docs_assets_dir`` (``scripts/fetch_swagger_ui.py``). Without them ``/docs`` answers
503 saying how to install them; the OpenAPI document (``/openapi.json``) never needs them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi import FastAPI, HTTPException, status
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import Field
from pydantic_settings import BaseSettings

DOCS_PATH = "/docs"
ASSET_PREFIX = "/docs/assets"
#: Where scripts/install.sh (in .venv) and the Dockerfile (in /opt/venv) put the files.
DEFAULT_ASSETS_DIR = Path(sys.prefix) / "share" / "facestream" / "swagger-ui"
#: The files the page loads, and their types; nothing else is served from the folder.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


class DocsSettings(BaseSettings):
    docs_assets_dir: Path = Field(
        default=DEFAULT_ASSETS_DIR, description="Swagger UI's files for /docs (make install puts them there)."
    )


def install(app: FastAPI, assets_dir: Path) -> frozenset[str]:
    """Serve ``/docs`` and its files from ``assets_dir``; returns the paths served, which
    are public like the OpenAPI document (the door lets them through without a key).
    Create ``app`` with ``docs_url=None, redoc_url=None`` (no page that needs a CDN)."""

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        missing = [name for name in ASSETS if not (assets_dir / name).is_file()]
        if missing:
            return HTMLResponse(
                f"<!doctype html><title>API docs unavailable</title><p>Swagger UI's files are not "
                f"installed in {assets_dir} (missing: {', '.join(missing)}). Run <code>make install</code>, "
                f"or <code>python scripts/fetch_swagger_ui.py {assets_dir}</code>. The OpenAPI document is "
                f'at <a href="{app.openapi_url}">{app.openapi_url}</a>.</p>',
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{ASSET_PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSET_PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{ASSET_PREFIX}/favicon-32x32.png",
        )

    @app.get(ASSET_PREFIX + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        path = assets_dir / name
        if name not in ASSETS or not path.is_file():
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no file {name} here")
        return FileResponse(path, media_type=ASSETS[name], headers={"Cache-Control": "public, max-age=86400"})

    return frozenset({DOCS_PATH, *(f"{ASSET_PREFIX}/{name}" for name in ASSETS)})
