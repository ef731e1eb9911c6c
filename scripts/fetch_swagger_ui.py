"""Fetch Swagger UI's files for the services' /docs pages (standard library only).

The API pages must work without internet, so the services serve Swagger UI themselves
(common/docs.py) instead of linking a CDN. The files come from the Swagger UI webjar on
Maven Central (a zip of the swagger-ui-dist npm package), pinned by version and SHA-256.
Used by scripts/install.sh (into .venv) and the Dockerfile (into the image):

    python scripts/fetch_swagger_ui.py DEST_DIR

Idempotent: does nothing when DEST_DIR already holds this version's files.
"""

from __future__ import annotations

import hashlib
import io
import sys
import urllib.request
import zipfile
from pathlib import Path

VERSION = "5.34.1"
URL = f"https://repo1.maven.org/maven2/org/webjars/swagger-ui/{VERSION}/swagger-ui-{VERSION}.jar"
SHA256 = "b57f6379a9498c94160d5fd413984757b04d1683ac757d7ba0b6d9b4ba0daee2"
#: What the pages use (common/docs.py serves exactly these), and the bundle's licence.
FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "swagger-ui-bundle.js.LICENSE.txt")


def fetch(dest: Path) -> None:
    stamp = dest / f".swagger-ui-{VERSION}"
    if stamp.exists() and all((dest / f).is_file() for f in FILES):
        return
    with urllib.request.urlopen(URL, timeout=120) as answer:
        jar = answer.read()
    digest = hashlib.sha256(jar).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{URL}: SHA-256 {digest}, expected {SHA256}; not installed")
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(jar)) as archive:
        for name in FILES:
            (dest / name).write_bytes(archive.read(f"META-INF/resources/webjars/swagger-ui/{VERSION}/{name}"))
    for old in dest.glob(".swagger-ui-*"):
        old.unlink()
    stamp.touch()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: fetch_swagger_ui.py DEST_DIR")
    fetch(Path(sys.argv[1]))
    print(f"[install] Swagger UI {VERSION} in {sys.argv[1]}", file=sys.stderr)
