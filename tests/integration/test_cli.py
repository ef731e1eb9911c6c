"""The command line (``./facestream``, run as a subprocess from another directory)
against the running platform: each file's fate, the exit statuses, and the errors that
name the service and its URL. People enrolled here get names of their own and are
erased at the end."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.platform import ADMIN_KEY, Platform

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "facestream"
STRANGERS = ("AJ_Cook", "Adam_Freier")


@dataclass
class Ran:
    code: int
    out: str
    err: str
    seconds: float

    def items(self) -> dict[str, dict[str, Any]]:
        """``--json`` output: each file's object, by the file's name."""
        objs = [json.loads(line) for line in self.out.splitlines() if line.strip()]
        return {Path(o["file"]).name: o for o in objs}


Cli = Callable[..., Ran]


@pytest.fixture
def cli(platform: Platform, tmp_path: Path) -> Cli:
    """Run ``./facestream ARGS`` from ``tmp_path/cwd``, with the platform's URLs and the admin
    key in the environment unless ``urls`` / ``key`` say otherwise."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def run(*args: str, key: str | None = ADMIN_KEY, urls: bool = True, timeout: float = 300) -> Ran:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACESTREAM_") and k != "PYTHONPATH"}
        env["FACESTREAM_RUN_DIR"] = str(tmp_path / "no-run-dir")  # never the checkout's admin key
        if key is not None:
            env["FACESTREAM_API_KEY"] = key
        if urls:
            env["FACESTREAM_API_URL"] = platform.api_url
            env["FACESTREAM_INGEST_URL"] = platform.ingest_url
        start = time.monotonic()
        done = subprocess.run(
            [str(LAUNCHER), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
        return Ran(done.returncode, done.stdout, done.stderr, time.monotonic() - start)

    return run


@pytest.fixture
def admin(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.api_url, headers=platform.headers, timeout=60) as client:
        yield client


@pytest.fixture
def photos(tmp_path: Path, faces_dir: Path) -> Path:
    """Two good photos (strangers: never enrolled), a text file named .jpg, a truncated JPEG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in STRANGERS:
        shutil.copy(faces_dir / "lfw-dev" / "strangers" / name / f"{name}_0001.jpg", folder)
    (folder / "notes.jpg").write_text("this is a text file, not a photo\n")
    obama = (faces_dir / "sample" / "examples" / "obama.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(obama[: len(obama) // 2])
    return folder


@pytest.fixture
def scoped_key(admin: httpx.Client) -> Iterator[Callable[[list[str]], str]]:
    made: list[str] = []

    def make(scopes: list[str]) -> str:
        r = admin.post("/v1/admin/keys", json={"name": f"cli-test-{'-'.join(scopes)}", "scopes": scopes})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        return str(r.json()["key"])

    yield make
    for key_id in made:
        admin.delete(f"/v1/admin/keys/{key_id}")


@pytest.fixture
def people(admin: httpx.Client, tmp_path: Path, faces_dir: Path) -> Iterator[tuple[Path, str]]:
    """A folder of two people named for this test only (two photos each) and the token in
    their names; everyone with the token in their name is erased afterwards."""
    token = uuid.uuid4().hex[:8]
    known = tmp_path / "known"
    for lfw in ("Aaron_Peirsol", "Abdullah_Gul"):
        folder = known / f"{lfw}_cli{token}"
        folder.mkdir(parents=True)
        for n in (1, 2):
            shutil.copy(faces_dir / "lfw-dev" / "known" / lfw / f"{lfw}_000{n}.jpg", folder)
    yield known, token
    found = admin.get("/v1/people", params={"q": f"cli{token}", "limit": 500}).json()["data"]
    for person in found:
        assert admin.delete(f"/v1/people/{person['id']}").status_code == 200


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_bad_file_does_not_lose_the_good_ones_and_each_fate_is_reported(
    cli: Cli, photos: Path, admin: httpx.Client
) -> None:
    ran = cli("submit", str(photos), "--json", "--timeout", "240")
    assert ran.code == 1, ran.err
    items = ran.items()
    assert sorted(items) == sorted([f"{n}_0001.jpg" for n in STRANGERS] + ["notes.jpg", "cut.jpg"])
    for name in STRANGERS:
        good = items[f"{name}_0001.jpg"]
        assert good["fate"] == "ok", good
        assert good["status"] == "unresolved"  # nobody enrolled: an unknown face
        assert good["people"] == ["unknown"]
        r = admin.get(f"/v1/images/{good['id']}")  # the service has it, under that id
        assert r.status_code == 200
        assert r.json()["filename"] == f"{name}_0001.jpg"
    refused = items["notes.jpg"]
    assert (refused["fate"], refused["http_status"]) == ("refused", 415)
    assert refused["detail"] == "not an image (unrecognised content)"  # the ingest API's reason
    assert "id" not in refused
    cut = items["cut.jpg"]
    assert (cut["fate"], cut["status"], cut["status_reason"]) == ("failed", "failed", "corrupt_image")
    assert "2 ok, 1 refused, 1 failed" in ran.err


def test_options_after_the_subcommand_all_good_exits_0(cli: Cli, photos: Path, platform: Platform) -> None:
    for bad in ("notes.jpg", "cut.jpg"):
        (photos / bad).unlink()
    given = ["--api", platform.api_url, "--ingest", platform.ingest_url, "--api-key", ADMIN_KEY]
    ran = cli("submit", "../photos", *given, key=None, urls=False)
    assert ran.code == 0, ran.err
    lines = sorted(ran.out.splitlines())
    assert lines == [f"../photos/{n}_0001.jpg: ok: unresolved (unknown_faces): unknown" for n in STRANGERS]


def test_a_key_without_the_query_scope_ends_the_wait_at_once(
    cli: Cli, photos: Path, platform: Platform, scoped_key: Callable[[list[str]], str]
) -> None:
    (photos / "notes.jpg").unlink()
    ran = cli("submit", str(photos), "--timeout", "200", key=scoped_key(["submit"]))
    assert ran.code == 3, ran.err
    assert ran.seconds < 60  # not the 200 s timeout
    assert f"facestream: the results API at {platform.api_url} refused GET /v1/images/" in ran.err
    assert "(403): the API key lacks the 'query' scope" in ran.err
    # what was submitted before the wait is still reported, with the image ids
    assert ran.out.count(": ok (accepted as image ") == 3, ran.out


def test_a_bad_key_is_refused_naming_the_service_and_its_url(
    cli: Cli, photos: Path, platform: Platform
) -> None:
    ran = cli("submit", str(photos), key="fsk-not-a-key-of-this-platform")
    assert ran.code == 3
    assert f"facestream: the ingest API at {platform.ingest_url} refused the API key (401): " in ran.err
    assert ran.out.count(": not sent") == 4  # every file is reported; nothing was lost silently
    ran = cli("--api-key", "fsk-not-a-key-of-this-platform", "keys", "list", key=None)
    assert ran.code == 3
    assert f"facestream: the results API at {platform.api_url} refused the API key (401): " in ran.err


def test_an_unreachable_service_is_named_with_its_url(cli: Cli, photos: Path) -> None:
    port = _free_port()
    ran = cli("submit", str(photos), "--ingest", f"http://127.0.0.1:{port}")
    assert ran.code == 3
    assert (
        f"facestream: cannot reach the ingest API at http://127.0.0.1:{port} (connection refused); "
        "is it running? make up" in ran.err
    )
    ran = cli("keys", "list", "--api", f"http://127.0.0.1:{port}")
    assert ran.code == 3
    assert f"cannot reach the results API at http://127.0.0.1:{port} (connection refused)" in ran.err


def test_enroll_is_idempotent_and_reports_each_photo(
    cli: Cli, people: tuple[Path, str], admin: httpx.Client, faces_dir: Path
) -> None:
    known, token = people
    first = cli("enroll", str(known), "--json")
    assert first.code == 0, first.err
    assert sorted(i["fate"] for i in first.items().values()) == ["ok"] * 4
    again = cli("enroll", str(known))
    assert again.code == 0, again.err
    assert (
        sorted(line.split(": ", 1)[1] for line in again.out.splitlines())
        == ["skipped (already enrolled)"] * 4
    )
    found = admin.get("/v1/people", params={"q": f"cli{token}"}).json()["data"]
    assert sorted((p["name"], p["face_count"]) for p in found) == [
        (f"Aaron Peirsol cli{token}", 2),
        (f"Abdullah Gul cli{token}", 2),
    ]  # one person each, reused; no photo enrolled twice
    person = known / f"Aaron_Peirsol_cli{token}"
    shutil.copy(faces_dir / "extras" / "no_face" / "dlib_horses.jpg", person)
    (person / "notes.jpg").write_text("not a photo")
    third = cli("enroll", str(known), "--json")
    assert third.code == 1
    fates = {name: (i["fate"], i.get("http_status")) for name, i in third.items().items()}
    assert fates.pop("dlib_horses.jpg") == ("refused", 422)
    assert fates.pop("notes.jpg") == ("refused", 422)
    assert set(fates.values()) == {("skipped", None)}
    assert third.items()["dlib_horses.jpg"]["detail"] == "no face found in the photo"


def test_a_blurred_photo_is_refused_with_its_reason_unless_accept_poor(
    cli: Cli, admin: httpx.Client, faces_dir: Path, tmp_path: Path
) -> None:
    from PIL import Image, ImageFilter

    token = uuid.uuid4().hex[:8]
    person = tmp_path / "poor" / f"Soft_Obama_cli{token}"
    person.mkdir(parents=True)
    sharp = Image.open(faces_dir / "sample/examples/obama-480p.jpg").convert("RGB")
    sharp.filter(ImageFilter.GaussianBlur(8)).save(person / "soft.jpg", "JPEG")
    try:
        refused = cli("enroll", str(person.parent), "--json")
        assert refused.code == 1
        item = refused.items()["soft.jpg"]
        assert (item["fate"], item["http_status"]) == ("refused", 422)
        assert item["detail"].startswith("the face would make a poor template: the face is blurred")
        accepted = cli("enroll", str(person.parent), "--accept-poor", "--json")
        assert accepted.code == 0, accepted.err
        item = accepted.items()["soft.jpg"]
        assert item["fate"] == "ok"
        assert "blurred" in item["detail"]
    finally:
        for p in admin.get("/v1/people", params={"q": f"cli{token}"}).json()["data"]:
            admin.delete(f"/v1/people/{p['id']}")


def test_import_of_an_archive_enrolls_everyone_once_with_several_photos_at_once(
    cli: Cli, people: tuple[Path, str], admin: httpx.Client, tmp_path: Path
) -> None:
    known, token = people
    archive = tmp_path / "people.tgz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(known, "lfw")  # wrapped in one folder, as LFW's own archive is

    first = cli("import", str(archive), "--concurrency", "3", "--json")
    assert first.code == 0, first.err
    assert sorted(i["fate"] for i in first.items().values()) == ["ok"] * 4
    again = cli("import", str(known), "--concurrency", "3", "--json")  # the folder: the same people
    assert again.code == 0, again.err
    assert sorted(i["fate"] for i in again.items().values()) == ["skipped"] * 4
    found = admin.get("/v1/people", params={"q": f"cli{token}"}).json()["data"]
    assert sorted((p["name"], p["face_count"]) for p in found) == [
        (f"Aaron Peirsol cli{token}", 2),
        (f"Abdullah Gul cli{token}", 2),
    ]
    (tmp_path / "notes.txt").write_text("not an archive")
    wrong = cli("import", str(tmp_path / "notes.txt"))
    assert wrong.code == 2
    assert "neither a folder nor a .zip or .tar archive" in wrong.err


def test_rerun_by_id_reports_what_was_not_rerun(cli: Cli, photos: Path) -> None:
    (photos / "notes.jpg").unlink()
    ran = cli("submit", str(photos), "--json")
    assert ran.code == 1
    items = ran.items()
    cut, good = items["cut.jpg"]["id"], items[f"{STRANGERS[0]}_0001.jpg"]["id"]
    processed = cli("rerun", "--id", cut, "--status", "failed", "--json")
    assert processed.code == 0, processed.err
    assert json.loads(processed.out) == {"rerun": 1, "skipped": 0, "matched": 1, "not_rerunnable": []}
    other = cli("rerun", "--id", good, "--status", "failed")  # unresolved, not failed
    assert other.code == 1
    assert "1 of the 1 ids named were not re-run" in other.out
    assert good in other.out


def test_keys_create_list_revoke(cli: Cli) -> None:
    name = f"cli-test-{uuid.uuid4().hex[:8]}"
    created = cli("keys", "create", name, "--scopes", "query", "--expires-in", "1.5", "--json")
    assert created.code == 0, created.err
    key = json.loads(created.out)
    assert key["expires_at"] is not None
    listed = cli("keys", "list")
    [row] = [line for line in listed.out.splitlines() if name in line]
    assert key["expires_at"].replace("T", " ")[:19] in row
    assert "never" in row  # never used yet
    used = cli("keys", "list", key=key["key"])
    assert used.code == 3  # a query key is not an admin key
    assert "the API key lacks the 'admin' scope" in used.err
    revoked = cli("keys", "revoke", key["id"])
    assert revoked.code == 0, revoked.err
    every = {k["id"]: k for k in json.loads(cli("keys", "list", "--all", "--json").out)}
    assert every[key["id"]]["revoked_at"] is not None
    assert key["id"] not in {k["id"] for k in json.loads(cli("keys", "list", "--json").out)}


def test_demo_finds_the_people_it_has_just_enrolled(
    cli: Cli, people: tuple[Path, str], faces_dir: Path, tmp_path: Path
) -> None:
    """No pause between enrolling and submitting: the recognizers apply the new gallery
    events before the images that follow them."""
    known, token = people
    images = tmp_path / "images"
    images.mkdir()
    for lfw in ("Aaron_Peirsol", "Abdullah_Gul"):
        shutil.copy(faces_dir / "lfw-dev" / "known" / lfw / f"{lfw}_0003.jpg", images)
    ran = cli("demo", "--known", str(known), "--images", str(images), "--json")
    assert ran.code == 0, ran.err
    items = ran.items()
    enrolled = [f"{lfw}_000{n}.jpg" for lfw in ("Aaron_Peirsol", "Abdullah_Gul") for n in (1, 2)]
    assert {items[name]["fate"] for name in enrolled} == {"ok"}
    assert items["Aaron_Peirsol_0003.jpg"]["people"] == [f"Aaron Peirsol cli{token}"]
    assert items["Abdullah_Gul_0003.jpg"]["people"] == [f"Abdullah Gul cli{token}"]
