"""The operator's pages in a real browser, on real photos through the whole platform.

An operator logs in (HTTP Basic, the key as password), filters the results list, sees
the thumbnails load, opens an image from its row, finds the enrolled person's box and
name over the photo and confirms that face (the person has one more enrolled face); then
names a group of unknown faces on the review page as a new person and sees the earlier
images named, without uploading anything again.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import ApiKey, NewContext
from tests.e2e.test_lfw import follow_results, upload
from tests.platform import Platform, until, wait_gallery_applied

pytestmark = pytest.mark.browser

LFW = Path("lfw-dev/known")


def _identity(faces_dir: Path, skip: int) -> list[Path]:
    """The photos of an LFW identity with at least four: counted from the end of the
    alphabet, past the last one (the e2e tests enroll from the start, and the last)."""
    people = sorted((p for p in (faces_dir / LFW).iterdir() if len(list(p.glob("*.jpg"))) >= 4), reverse=True)
    return sorted(people[1 + skip].glob("*.jpg"))[:4]


def _submit(platform: Platform, photos: list[Path], tmp_path: Path, tag: str) -> dict[str, dict[str, object]]:
    """Submit copies of ``photos`` named ``<tag>-<n>.jpg`` and wait for their final results."""
    copies = []
    for n, photo in enumerate(photos):
        copy = tmp_path / f"{tag}-{n}.jpg"
        shutil.copyfile(photo, copy)
        copies.append(copy)
    with httpx.Client(headers=platform.headers, base_url=platform.ingest_url, timeout=60) as ingest:
        accepted = upload(ingest, copies)
    with httpx.Client(headers=platform.headers, timeout=60) as api:
        return follow_results(api, {i: url for i, (_, url) in accepted.items()}, timeout=180)


def _people_in(result: dict[str, object]) -> set[str]:
    faces = result["faces"]
    assert isinstance(faces, list)
    return {f["person_id"] for f in faces if f["person_id"]}


def _loaded(img: Locator) -> None:
    """The image arrived and decoded (a broken one has no natural width)."""
    expect(img).to_be_visible()
    until("the image is loaded", lambda: bool(img.evaluate("i => i.complete && i.naturalWidth > 0")), 30)


@pytest.fixture
def operator(new_context: NewContext, base_url: str, api_key: ApiKey) -> Page:
    """A page logged in with a key that may look, submit and enroll (not erase)."""
    return new_context(api_key("query", "submit", "enroll"), base_url).new_page()


def test_an_image_reached_from_its_row_shows_the_enrolled_persons_box_and_name_to_confirm(
    operator: Page, platform: Platform, faces_dir: Path, tmp_path: Path
) -> None:
    photos = _identity(faces_dir, 0)
    name = f"Browser {photos[0].parent.name.replace('_', ' ')}"
    with httpx.Client(base_url=platform.api_url, headers=platform.headers, timeout=120) as api:
        person = api.post("/v1/people", json={"name": name}).json()["id"]
        try:
            for photo in photos[:2]:
                enrolled = api.post(
                    f"/v1/people/{person}/faces",
                    params={"face_index": "largest"},
                    files={"file": (photo.name, photo.read_bytes())},
                )
                assert enrolled.status_code == 201, enrolled.text
            wait_gallery_applied(platform)
            tag = f"browser-{uuid.uuid4().hex[:10]}"
            results = _submit(platform, photos[2:4], tmp_path, tag)
            # LFW is hard: not every photo of an enrolled person is named; at least one is.
            named_images = sum(person in _people_in(r) for r in results.values())
            assert named_images >= 1, results

            operator.goto("/")
            operator.fill("form#filters input[name=filename]", tag)
            operator.click("form#filters button[type=submit]")
            rows = operator.locator("table#images tr[data-image-id]")
            expect(rows).to_have_count(2)
            for n in range(2):
                _loaded(rows.nth(n).locator("img.thumb"))
            operator.select_option("form#filters select[name=person]", person)
            operator.click("form#filters button[type=submit]")
            expect(rows).to_have_count(named_images)
            expect(rows.first).to_contain_text(name)
            image_id = rows.first.get_attribute("data-image-id")

            rows.first.locator("a.open").click()
            expect(operator).to_have_url(f"{platform.api_url}/images/{image_id}")
            _loaded(operator.locator("#photo"))
            boxes = operator.locator(".photo .face")
            faces = results[str(image_id)]["faces"]
            assert isinstance(faces, list)
            expect(boxes).to_have_count(len(faces))
            known = operator.locator(".photo .face:not(.unknown)")
            expect(known.first.locator(".label")).to_contain_text(name)
            # The box lies over the photo, where the recognizer found the face.
            photo_box = operator.locator("#photo").bounding_box()
            face_box = known.first.bounding_box()
            assert photo_box is not None
            assert face_box is not None
            assert photo_box["x"] <= face_box["x"] < photo_box["x"] + photo_box["width"]
            assert photo_box["y"] <= face_box["y"] < photo_box["y"] + photo_box["height"]
            expect(operator.locator("#erase")).to_have_count(0)  # not an admin key
            # The rule that named the face: derived from the stated false-accept rate.
            rule = operator.locator("table.info tr", has_text="rule")
            expect(rule).to_contain_text("derived for a stated false-accept rate of 1.00%")

            # Confirming the named face enrolls it for the person: one more face on their page.
            named = operator.locator("#faces li", has=operator.locator(f"a[href='/people/{person}']"))
            named.first.locator("button.confirm-face").click()
            expect(named.first.locator(".message:not(.error)")).to_contain_text("Confirmed")
            operator.goto(f"/people/{person}")
            cards = operator.locator("#enrolled .card")
            expect(cards).to_have_count(3)
            expect(operator.locator(f"#enrolled .card a[href='/images/{image_id}']")).to_have_count(1)

            operator.goto("/?status=bogus")
            expect(operator.locator("#error")).to_contain_text("status")
        finally:
            api.delete(f"/v1/people/{person}")


def test_naming_a_group_of_unknown_faces_names_the_earlier_images(
    operator: Page, platform: Platform, faces_dir: Path, tmp_path: Path
) -> None:
    photos = _identity(faces_dir, 1)
    tag = f"review-{uuid.uuid4().hex[:10]}"
    results = _submit(platform, photos, tmp_path, tag)
    assert {r["status"] for r in results.values()} == {"unresolved"}, results
    ours = set(results)

    operator.goto("/review")
    groups = operator.locator(".group")
    expect(groups.first).to_be_visible()

    def ids_of(group: Locator) -> set[str]:
        srcs = group.locator("img.crop").evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")
        return {src.split("/")[3] for src in srcs}

    best = max(range(groups.count()), key=lambda n: len(ids_of(groups.nth(n)) & ours))
    group = groups.nth(best)
    grouped = ids_of(group) & ours
    assert len(grouped) >= 2, "the photos of one person fall in one group"
    _loaded(group.locator("img.crop").first)

    name = f"Reviewed {photos[0].parent.name.replace('_', ' ')} {tag[-4:]}"
    group.locator("input[name=name]").fill(name)
    group.locator("button.new-person").click()
    expect(group.locator(".message:not(.error)")).to_contain_text("being matched again")

    with httpx.Client(base_url=platform.api_url, headers=platform.headers, timeout=60) as api:
        found = api.get("/v1/people", params={"q": name}).json()["data"]
        assert [p["name"] for p in found] == [name]
        person = found[0]["id"]
        try:
            until(
                "the grouped images are named",
                lambda: all(
                    any(f["person_id"] == person for f in api.get(f"/v1/images/{i}").json()["faces"])
                    for i in grouped
                ),
                timeout=120,
            )
            operator.goto(f"/?filename={tag}")
            for image_id in grouped:
                expect(operator.locator(f"tr[data-image-id='{image_id}']")).to_contain_text(name)
            operator.locator(f"tr[data-image-id='{sorted(grouped)[0]}'] a.open").click()
            expect(operator.locator(".photo .face:not(.unknown) .label").first).to_contain_text(name)
            # The person's page shows the faces enrolled from the results, as crops.
            operator.goto(f"/people/{person}")
            expect(operator.locator("#name")).to_have_text(name)
            _loaded(operator.locator("#enrolled img.enrolled").first)
        finally:
            api.delete(f"/v1/people/{person}")


def test_people_are_created_renamed_given_a_face_from_a_group_photo_and_erased_on_their_page(
    new_context: NewContext, base_url: str, api_key: ApiKey, faces_dir: Path
) -> None:
    admin = new_context(api_key("admin"), base_url).new_page()
    admin.on("dialog", lambda dialog: dialog.accept())  # the confirmations of removing and erasing
    name = f"Browser person {uuid.uuid4().hex[:8]}"
    admin.goto("/people")
    admin.fill("input[name=name]", name)
    admin.click("#create-person")
    expect(admin.locator("#name")).to_have_text(name)
    person = admin.url.rsplit("/", 1)[1]
    try:
        admin.fill("form:has(#rename) input[name=name]", f"{name} renamed")
        admin.click("#rename")
        expect(admin.locator("#name")).to_have_text(f"{name} renamed")

        # A photo with two faces: the page shows them, and a click on one enrolls it.
        admin.set_input_files(
            "form[data-enroll] input[type=file]", faces_dir / "sample/examples/two_people.jpg"
        )
        admin.click("#add-photo")
        picks = admin.locator(".chooser button.pick")
        expect(picks).to_have_count(2)
        expect(admin.locator(".message.error")).to_contain_text("2 faces")
        picks.nth(1).click()
        enrolled = admin.locator("#enrolled img.enrolled")
        expect(enrolled).to_have_count(1)
        _loaded(enrolled.first)

        admin.locator("#enrolled button.remove-face").click()
        expect(admin.locator("#enrolled")).to_have_count(0)
        expect(admin.locator("text=No face enrolled yet.")).to_be_visible()

        admin.click("#erase-person")
        expect(admin).to_have_url(f"{base_url}/people")
        assert admin.request.get(f"{base_url}/v1/people/{person}").status == 404
    finally:
        with httpx.Client(base_url=base_url, headers={"X-API-Key": api_key("admin")}, timeout=60) as api:
            api.delete(f"/v1/people/{person}")
