"""The ingest API over HTTP, running as its own process against the real broker.

Idempotency keys, batches the broker partly refuses and outages of PostgreSQL are
tested in-process in test_submission.py.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.test_lfw import wait_final
from tests.platform import Platform

pytestmark = pytest.mark.integration


def _jpeg(colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(buf, "JPEG")
    return buf.getvalue()


def _bomb() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def ingest(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as client:
        yield client


def test_legacy_single_and_batch_paths_are_processed(platform: Platform, ingest: httpx.Client) -> None:
    r = ingest.post("/image/post", json={"path": "sample/examples/obama.jpg"})
    assert r.status_code == 200, r.text
    single = r.json()["id"]
    r = ingest.post(
        "/images/post",
        json={"paths": [{"path": "sample/examples/biden.jpg"}, {"path": "extras/no_face/dlib_eagle.jpg"}]},
    )
    assert r.status_code == 200, r.text
    batch = [i["id"] for i in r.json()["images"]]
    with httpx.Client(headers=platform.headers, base_url=platform.api_url) as api:
        results = wait_final(api, [single, *batch])
    assert len(results[single]["faces"]) == 1
    assert results[batch[1]]["status_reason"] == "no_face"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("../../../etc/passwd", 403),
        ("/etc/passwd", 403),
        ("sample/../../../../etc/hostname", 403),
        ("sample/examples", 400),
        ("sample/examples/nope.jpg", 404),
        ("README.md", 415),
    ],
)
def test_legacy_paths_outside_the_root_or_not_images_are_refused(
    ingest: httpx.Client, path: str, status: int
) -> None:
    r = ingest.post("/image/post", json={"path": path})
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_one_bad_path_in_a_batch_refuses_the_batch(ingest: httpx.Client) -> None:
    r = ingest.post("/images/post", json={"paths": [{"path": "sample/examples/obama.jpg"}, {"path": "../x"}]})
    assert r.status_code == 403
    assert "../x" in r.json()["detail"]


@pytest.mark.parametrize(
    ("files", "status", "words"),
    [
        ([("files", ("empty.jpg", b""))], 400, "empty"),
        ([("files", ("notes.jpg", b"plain text, not a picture"))], 415, "not an image"),
        ([("files", ("bomb.png", _bomb()))], 413, "pixels"),
        ([("files", ("ok.jpg", _jpeg())), ("files", ("bad.jpg", b"nope"))], 415, "bad.jpg"),
    ],
)
def test_bad_uploads_get_a_clear_4xx(
    ingest: httpx.Client, files: list[tuple[str, tuple[str, bytes]]], status: int, words: str
) -> None:
    r = ingest.post("/v1/images", files=files)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


def test_uploads_without_files_or_with_bad_metadata_are_422(ingest: httpx.Client) -> None:
    assert ingest.post("/v1/images", data={"source": "x"}).status_code == 422
    r = ingest.post("/v1/images", files=[("files", ("a.jpg", _jpeg()))], data={"metadata": "[1, 2]"})
    assert r.status_code == 422
    assert "metadata" in r.json()["detail"]


def test_json_endpoints_refuse_wrong_or_oversized_bodies(ingest: httpx.Client) -> None:
    assert (
        ingest.post(
            "/image/post", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert ingest.post("/image/post", json={"nopath": 1}).status_code == 422
    big = b'{"path": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    r = ingest.post("/image/post", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_upload_with_metadata_is_queryable_by_camera(
    platform: Platform, ingest: httpx.Client, faces_dir: Path
) -> None:
    photo = faces_dir / "sample/examples/biden.jpg"
    r = ingest.post(
        "/v1/images",
        files=[("files", (photo.name, photo.read_bytes()))],
        data={"camera": "gate-7", "source": "test", "metadata": '{"site": "hq"}'},
    )
    assert r.status_code == 202
    image_id = r.json()["data"][0]["id"]
    with httpx.Client(headers=platform.headers, base_url=platform.api_url) as api:
        result = wait_final(api, [image_id])[image_id]
        assert result["camera"] == "gate-7"
        listed = api.get("/v1/images", params={"camera": "gate-7"}).json()
    assert image_id in [i["id"] for i in listed["data"]]


def test_health_readiness_and_metrics(ingest: httpx.Client) -> None:
    assert ingest.get("/healthz").json() == {"status": "ok"}
    assert ingest.get("/readyz").json()["ready"] is True
    metrics = ingest.get("/metrics").text
    assert "facestream_ingest_images_accepted_total" in metrics
    assert "facestream_http_requests_total" in metrics


def test_result_url_is_absolute_and_answers_right_after_the_202(platform: Platform) -> None:
    """Read-your-writes: 40 uploads from 8 clients at once, each result_url fetched (as given,
    with no base URL) the moment its 202 arrives: none may answer 404."""

    def submit_and_read(i: int) -> tuple[str, str, int]:
        with httpx.Client(headers=platform.headers, timeout=60) as client:
            r = client.post(
                f"{platform.ingest_url}/v1/images", files=[("files", (f"ryw-{i}.jpg", _jpeg((i, 7, 99))))]
            )
            assert r.status_code == 202, r.text
            [item] = r.json()["data"]
            return item["id"], item["result_url"], client.get(item["result_url"]).status_code

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit_and_read, range(40)))
    assert [url for _, url, _ in answers] == [f"{platform.api_url}/v1/images/{i}" for i, _, _ in answers]
    assert [status for _, _, status in answers] == [200] * 40

    with httpx.Client(headers=platform.headers, timeout=60) as client:
        r = client.post(
            f"{platform.ingest_url}/v1/images",
            files=[("files", (f"batch-{i}.jpg", _jpeg((i, 99, 7)))) for i in range(10)],
        )
        assert r.status_code == 202, r.text
        statuses = [client.get(item["result_url"]).status_code for item in r.json()["data"]]
    assert statuses == [200] * 10
