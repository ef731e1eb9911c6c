"""Erasure: a deleted person stops being matched everywhere; a deleted image is gone."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_lfw import enroll, submit, wait_final
from tests.platform import Platform

pytestmark = pytest.mark.integration


def test_a_deleted_person_is_no_longer_matched_by_any_replica_and_is_anonymised(
    platform: Platform, faces_dir: Path
) -> None:
    person = sorted(p for p in (faces_dir / "lfw-dev/known").iterdir() if len(list(p.iterdir())) >= 4)[-2]
    photos = sorted(person.iterdir())
    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        person_id = enroll(api, person.name, photos[0])
        time.sleep(2)
        # several copies: the recognize topic spreads them over every recognizer process
        before = wait_final(api, list(submit(ingest, [photos[0]] * 6)))
        assert all(r["status"] == "processed" for r in before.values()), before
        assert all(r["faces"][0]["person_id"] == person_id for r in before.values())

        r = api.delete(f"/v1/people/{person_id}")
        assert r.status_code == 200, r.text
        assert r.json()["faces_removed"] == 1
        erased_at = time.monotonic()
        while True:
            after = wait_final(api, list(submit(ingest, [photos[0]] * 6)))
            if all(res["faces"][0]["person_id"] is None for res in after.values()):
                break
            assert time.monotonic() - erased_at < 30, "a replica still matches the erased person"
        elapsed = time.monotonic() - erased_at
        print(f"\nerased person unmatched by every replica {elapsed:.2f}s after DELETE (incl. recognition)")
        assert elapsed < 10

        assert api.get(f"/v1/people/{person_id}").status_code == 404
        assert api.delete(f"/v1/people/{person_id}").status_code == 404
        for image_id in before:
            old = api.get(f"/v1/images/{image_id}").json()
            assert old["status"] == "unresolved"
            assert old["status_reason"] == "unknown_faces"
            assert [f["person_id"] for f in old["faces"]] == [None]
            assert [f["person_name"] for f in old["faces"]] == [None]
        assert api.get("/v1/images", params={"person": person_id}).json()["count"] == 0


def test_a_deleted_image_is_gone_and_stays_gone(platform: Platform, faces_dir: Path) -> None:
    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        [image_id] = submit(ingest, [faces_dir / "sample/examples/biden.jpg"])
        wait_final(api, [image_id])
        assert api.delete(f"/v1/images/{image_id}").status_code == 200
        assert api.get(f"/v1/images/{image_id}").status_code == 404
        assert api.post(f"/v1/images/{image_id}/rerun").status_code == 404
        assert api.delete(f"/v1/images/{image_id}").status_code == 404
        assert api.delete("/v1/images/not-a-uuid").status_code == 422
