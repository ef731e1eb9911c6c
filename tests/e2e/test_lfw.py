"""End to end on real photos, through the public HTTP APIs only.

Enroll 50 lfw-dev people by their first photo, submit their other photos and 100
strangers through ingest, and check, by following the ``result_url`` ingest answers
with each image, that every image reaches a final status, that known people are
identified at least as accurately as calling face_recognition directly on the same files
with the same decision rule, and that strangers come back unknown. Then group photos and
the odd inputs of ``extras/``.
"""

from __future__ import annotations

import csv
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from recognizer.gallery import Gallery
from recognizer.settings import RecognizerSettings
from tests.platform import Platform, wait_gallery_applied

pytestmark = pytest.mark.e2e

FINAL = {"processed", "unresolved", "failed"}
PEOPLE = 50


def upload(client: httpx.Client, paths: list[Path], batch: int = 20) -> dict[str, tuple[Path, str]]:
    """Submit ``paths`` through ingest: {image id: (its path, the result_url ingest gave it)}."""
    accepted: dict[str, tuple[Path, str]] = {}
    for i in range(0, len(paths), batch):
        chunk = paths[i : i + batch]
        r = client.post("/v1/images", files=[("files", (p.name, p.read_bytes())) for p in chunk])
        assert r.status_code == 202, r.text
        for item, path in zip(r.json()["data"], chunk, strict=True):
            url = urlsplit(item["result_url"])
            assert url.scheme in ("http", "https"), f"result_url is not absolute: {item}"
            assert url.netloc, f"result_url is not absolute: {item}"
            accepted[item["id"]] = (path, item["result_url"])
    return accepted


def submit(client: httpx.Client, paths: list[Path], batch: int = 20) -> dict[str, Path]:
    return {image_id: path for image_id, (path, _) in upload(client, paths, batch).items()}


def follow_results(
    client: httpx.Client,
    urls: dict[str, str],
    timeout: float = 600,
    done: Callable[[dict[str, Any]], bool] = lambda result: result["status"] in FINAL,
) -> dict[str, dict[str, Any]]:
    """Follow each image's ``result_url`` (``urls``: by image id) until ``done`` (by default:
    its status is final). Not yet: 200 with status ``pending``, or 503 with Retry-After (the
    results API catching up). Anything else fails at once: 404 included, since ingest
    records an image before it answers 202 with its result_url."""
    results: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(results) < len(urls) and time.monotonic() < deadline:
        wait = 0.5  # poll interval
        for image_id, url in urls.items():
            if image_id in results:
                continue
            r = client.get(url)
            if r.status_code == 503 and "retry-after" in r.headers:
                wait = min(wait, float(r.headers["retry-after"]))
                continue
            assert r.status_code == 200, f"{url} (image {image_id}) answered {r.status_code}: {r.text[:200]}"
            result = r.json()
            assert result["id"] == image_id, (url, result)
            if done(result):
                results[image_id] = result
            else:
                assert result["status"] == "pending" or result["status"] in FINAL, (url, result)
        time.sleep(wait)
    missing = [i for i in urls if i not in results]
    assert not missing, f"{len(missing)} images never reached a final status, e.g. {missing[:3]}"
    return results


def wait_final(client: httpx.Client, ids: list[str], timeout: float = 600) -> dict[str, dict[str, Any]]:
    """Poll ``/v1/images/{id}`` until final, a 404 counting as not yet: for images published
    straight to the topic, which the results API knows once projected. Uploads through
    ingest are followed by their result_url instead (:func:`follow_results`)."""
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(done) < len(ids) and time.monotonic() < deadline:
        for image_id in ids:
            if image_id not in done:
                r = client.get(f"/v1/images/{image_id}")
                if r.status_code == 200 and r.json()["status"] in FINAL:
                    done[image_id] = r.json()
        time.sleep(0.5)
    missing = [i for i in ids if i not in done]
    assert not missing, f"{len(missing)} images never reached a final status, e.g. {missing[:3]}"
    return done


def enroll(api: httpx.Client, name: str, photo: Path) -> str:
    r = api.post("/v1/people", json={"name": name})
    assert r.status_code == 201, r.text
    pid: str = r.json()["id"]
    r = api.post(
        f"/v1/people/{pid}/faces",
        params={"face_index": "largest"},  # an LFW photo may show bystanders
        files={"file": (photo.name, photo.read_bytes())},
    )
    assert r.status_code == 201, r.text
    return pid


def direct_face_recognition(enrolled: dict[str, Path], probes: list[Path]) -> dict[Path, str | None]:
    """The yardstick: face_recognition called directly, with the platform's decision rule."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import face_recognition
    gallery = Gallery()
    for name, photo in enrolled.items():
        encs = face_recognition.face_encodings(face_recognition.load_image_file(photo))
        if encs:
            gallery.add_face(name, name, encs[0])
            gallery.set_person(name, name)
    rule = RecognizerSettings().rules().rule(gallery)
    out: dict[Path, str | None] = {}
    for probe in probes:
        encs = face_recognition.face_encodings(face_recognition.load_image_file(probe))
        names = [m.person_id for m in gallery.match(np.array(encs), rule)] if encs else []
        out[probe] = next((n for n in names if n), None)
    return out


def test_lfw_known_people_and_strangers(platform: Platform, faces_dir: Path) -> None:
    lfw = faces_dir / "lfw-dev"
    by_person: dict[str, list[Path]] = defaultdict(list)
    strangers: list[Path] = []
    with (lfw / "manifest.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["set"] == "known":
                by_person[row["name"]].append(lfw / row["path"])
            else:
                strangers.append(lfw / row["path"])
    chosen = sorted(n for n, photos in by_person.items() if len(photos) >= 2)[:PEOPLE]
    assert len(chosen) == PEOPLE
    enrolled = {name: sorted(by_person[name])[0] for name in chosen}
    probes = {p: name for name in chosen for p in sorted(by_person[name])[1:]}

    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        person_ids: dict[str, str] = {}
        try:  # from the first enrollment: a failure halfway erases those already made
            for name, photo in enrolled.items():
                person_ids[enroll(api, name, photo)] = name
            wait_gallery_applied(platform)
            uploaded = upload(ingest, [*probes, *strangers])
            ids = {image_id: path for image_id, (path, _) in uploaded.items()}
            results = follow_results(api, {image_id: url for image_id, (_, url) in uploaded.items()})
        finally:
            # Out of the shared gallery: a later test (or run) enrolling one of them again
            # would otherwise find two people with the same face.
            for person_id in person_ids:
                api.delete(f"/v1/people/{person_id}")

    def named(result: dict[str, Any]) -> str | None:
        names = [person_ids.get(f["person_id"]) for f in result["faces"] if f["person_id"]]
        return names[0] if names else None

    correct = sum(1 for i, p in ids.items() if p in probes and named(results[i]) == probes[p])
    wrong = sum(1 for i, p in ids.items() if p in probes and named(results[i]) not in (None, probes[p]))
    accepted = [p for i, p in ids.items() if p not in probes and named(results[i]) is not None]
    baseline = direct_face_recognition(enrolled, list(probes))
    baseline_correct = sum(1 for p, n in baseline.items() if n == probes[p])

    print(
        f"\nlfw-dev, {PEOPLE} people x 1 photo: {len(probes)} probes, correct {correct} "
        f"(direct face_recognition: {baseline_correct}), wrong {wrong}; "
        f"strangers named {len(accepted)}/{len(strangers)}"
    )
    assert all(results[i]["status"] in {"processed", "unresolved"} for i in ids)
    assert correct >= baseline_correct
    assert correct / len(probes) >= 0.7  # one photo per person; see docs/MATCHING.md
    assert len(accepted) <= 0.05 * len(strangers), accepted
    for i, p in ids.items():
        r = results[i]
        if p in probes and named(r) == probes[p]:
            assert r["status"] == "processed"
            face = next(f for f in r["faces"] if f["person_id"])
            assert face["distance"] <= r["rule"]["tolerance"]
            assert set(face["box"]) == {"top", "right", "bottom", "left"}
        if named(r) is None:
            assert r["status"] == "unresolved"
            assert r["status_reason"] in {"unknown_faces", "no_face"}


def test_group_photos_and_odd_inputs(platform: Platform, faces_dir: Path) -> None:
    extras = faces_dir / "extras"
    cases = {
        extras / "group/facenet_pytorch_multiface.jpg": ("unresolved", "unknown_faces", 4),
        extras / "group/dlib_examples_faces/2008_002470.jpg": ("unresolved", "unknown_faces", 2),
        extras / "odd_format/deepface_img47_webp_content_named.jpg": ("unresolved", "unknown_faces", 1),
        extras / "derived/obama_grayscale_L.jpg": (None, None, 1),
        extras / "derived/obama_stored_rot90cw_exif_orientation8.jpg": (None, None, 1),
        extras / "grayscale/orl_att_faces/s1/1.pgm": ("unresolved", "unknown_faces", 1),
        extras / "no_face/dlib_horses.jpg": ("unresolved", "no_face", 0),
        extras / "exif/recurser_Portrait_6.jpg": ("unresolved", "no_face", 0),
        extras / "large/deepface_img40_3061x4600.jpg": ("unresolved", "unknown_faces", 1),
        faces_dir / "sample/tests/test_images/32bit.png": (None, None, 1),  # RGBA
    }
    missing = [p for p in cases if not p.exists()]
    assert not missing, missing
    existing = cases
    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        accepted = upload(ingest, list(existing), batch=5)
        ids = {image_id: path for image_id, (path, _) in accepted.items()}
        results = follow_results(api, {image_id: url for image_id, (_, url) in accepted.items()})
    for image_id, path in ids.items():
        status, reason, min_faces = existing[path]
        r = results[image_id]
        assert len(r["faces"]) >= min_faces, (path.name, r)
        if min_faces == 0:
            assert r["faces"] == []
        if status is not None:
            assert (r["status"], r["status_reason"]) == (status, reason), (path.name, r)
        for f in r["faces"]:
            b = f["box"]
            assert 0 <= b["left"] < b["right"] <= r["width"]
            assert 0 <= b["top"] < b["bottom"] <= r["height"]


def test_an_unresolved_image_is_recognized_after_enrolling_and_a_rerun(
    platform: Platform, faces_dir: Path
) -> None:
    person = sorted(p for p in (faces_dir / "lfw-dev/known").iterdir() if len(list(p.iterdir())) >= 4)[-1]
    photos = sorted(person.iterdir())
    with (
        httpx.Client(headers=platform.headers, base_url=platform.api_url, timeout=60) as api,
        httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest,
    ):
        [(image_id, (_, url))] = upload(ingest, [photos[3]]).items()
        before = follow_results(api, {image_id: url})[image_id]
        assert before["status"] == "unresolved", before
        assert before["status_reason"] == "unknown_faces"
        person_id = enroll(api, person.name, photos[0])
        try:
            r = api.post(
                f"/v1/people/{person_id}/faces",
                params={"face_index": "largest"},
                files={"file": (photos[1].name, photos[1].read_bytes())},
            )
            assert r.status_code == 201
            wait_gallery_applied(platform)
            r = api.post(f"/v1/images/{image_id}/rerun")
            assert r.status_code == 202, r.text
            after = follow_results(
                api, {image_id: url}, timeout=120, done=lambda res: res["run"] == 1 and res["status"] in FINAL
            )[image_id]
            assert after["run"] == 1
            assert after["status"] == "processed", after
            assert [f["person_id"] for f in after["faces"]] == [person_id]
            seen = api.get(f"/v1/people/{person_id}/images").json()
            assert image_id in [i["id"] for i in seen["data"]]
        finally:
            # Out of the shared gallery: later tests meet this person's photos as strangers.
            api.delete(f"/v1/people/{person_id}")
