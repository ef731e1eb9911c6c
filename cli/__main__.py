"""``python -m cli {enroll,submit,demo,keys}``: see ``python -m cli --help``.

Every call sends an API key: ``--api-key``, else ``$FACESTREAM_API_KEY``, else the
bootstrap admin key that ``make up`` wrote to ``.run/admin-key``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cli.folders import images_in, people_in
from schemas import lifecycle

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "datasets" / "faces" / "sample" / "examples" / "knn_examples"
FINAL = {s.value for s in lifecycle.FINAL}
RUN_DIR = Path(os.environ.get("FACESTREAM_RUN_DIR", ROOT / ".run"))


def default_api_key() -> str | None:
    key = os.environ.get("FACESTREAM_API_KEY")
    if key:
        return key
    stored = RUN_DIR / "admin-key"
    return stored.read_text().strip() if stored.is_file() else None


def keys(api: httpx.Client, args: argparse.Namespace) -> None:
    """``keys create|list|revoke`` through the results API's admin endpoints."""
    if args.keys_command == "create":
        body: dict[str, Any] = {"name": args.name, "scopes": args.scopes.split(",")}
        if args.rate is not None:
            body["rate_per_minute"] = args.rate
        r = api.post("/v1/admin/keys", json=body)
        _check(r)
        key = r.json()
        print(f"created key {key['id']} ({key['name']}; scopes {','.join(key['scopes'])})")
        print(key["key"])
        print("Store it now: it is not shown again.", file=sys.stderr)
    elif args.keys_command == "list":
        r = api.get("/v1/admin/keys", params={"include_revoked": args.all})
        _check(r)
        print(f"{'id':14} {'name':24} {'scopes':28} {'rate/min':>9} {'created':20} revoked")
        for k in r.json():
            rate = str(k["rate_per_minute"] or "default")
            print(
                f"{k['id']:14} {k['name'][:24]:24} {','.join(k['scopes']):28} {rate:>9} "
                f"{k['created_at'][:19]:20} {(k['revoked_at'] or '')[:19]}"
            )
    else:
        r = api.delete(f"/v1/admin/keys/{args.id}")
        _check(r)
        print(f"revoked key {args.id}")


def enroll(api: httpx.Client, folder: Path, per_person: int | None = None) -> dict[str, str]:
    """Enroll every person of ``folder``; returns name -> person id. Prints progress."""
    existing = {p["name"]: p["id"] for p in _all_people(api)}
    ids: dict[str, str] = {}
    people = people_in(folder)
    for n, (name, photos) in enumerate(people.items(), 1):
        pid = existing.get(name)
        if pid is None:
            r = api.post("/v1/people", json={"name": name})
            _check(r)
            pid = r.json()["id"]
        ids[name] = pid
        added = already = 0
        for photo in photos[:per_person]:
            with photo.open("rb") as fh:
                # A portrait's subject is its largest face (a photo may show bystanders).
                r = api.post(
                    f"/v1/people/{pid}/faces",
                    params={"face_index": "largest"},
                    files={"file": (photo.name, fh)},
                )
            if r.status_code == 201:
                added += 1
            elif r.status_code == 200:  # this photo was already enrolled for them
                already += 1
            else:
                print(f"  ! {photo.name}: {r.json().get('detail', r.text)}", file=sys.stderr)
        print(
            f"[{n}/{len(people)}] enrolled {name}: {added} face(s)"
            + (f", {already} already" if already else "")
        )
    return ids


def submit(ingest: httpx.Client, folder: Path, batch: int = 10) -> dict[str, Path]:
    """Upload every image under ``folder``; returns image id -> file."""
    files = images_in(folder)
    ids: dict[str, Path] = {}
    for i in range(0, len(files), batch):
        chunk = files[i : i + batch]
        handles = [p.open("rb") for p in chunk]
        try:
            r = ingest.post(
                "/v1/images", files=[("files", (p.name, h)) for p, h in zip(chunk, handles, strict=True)]
            )
        finally:
            for h in handles:
                h.close()
        if r.status_code != 202:
            print(
                f"  ! batch {i // batch + 1}: {r.status_code} {r.json().get('detail', r.text)}",
                file=sys.stderr,
            )
            continue
        for item, path in zip(r.json()["data"], chunk, strict=True):
            ids[item["id"]] = path
        print(f"submitted {min(i + batch, len(files))}/{len(files)}")
    return ids


def wait_for(api: httpx.Client, ids: dict[str, Path], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll the results API until every image has a final status (or ``timeout``)."""
    results: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(results) < len(ids) and time.monotonic() < deadline:
        for image_id in ids:
            if image_id in results:
                continue
            r = api.get(f"/v1/images/{image_id}")
            if r.status_code == 200 and r.json()["status"] in FINAL:
                results[image_id] = r.json()
        print(f"\r{len(results)}/{len(ids)} images finished", end="", flush=True)
        if len(results) < len(ids):
            time.sleep(0.5)
    print()
    return results


def report(ids: dict[str, Path], results: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'image':40} {'status':11} people found")
    for image_id, path in ids.items():
        res = results.get(image_id)
        if res is None:
            print(f"{path.name[:40]:40} {'(pending)':11}")
            continue
        names = [f["person_name"] or "unknown" for f in res.get("faces", [])]
        reason = f"({res['status_reason']})" if res.get("status_reason") else ""
        print(f"{path.name[:40]:40} {res['status']:11} {', '.join(names) or '-'} {reason}")


def _all_people(api: httpx.Client) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        r = api.get("/v1/people", params={"limit": 500, "offset": len(out)})
        _check(r)
        page = r.json()["data"]
        out.extend(page)
        if len(page) < 500:
            return out


def _check(r: httpx.Response) -> None:
    if r.status_code >= 400:
        raise SystemExit(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cli", description="facestream command line")
    parser.add_argument("--api", default="http://127.0.0.1:8001", help="results API (default %(default)s)")
    parser.add_argument("--ingest", default="http://127.0.0.1:8000", help="ingest API (default %(default)s)")
    parser.add_argument(
        "--api-key", default=default_api_key(), help="API key (default: $FACESTREAM_API_KEY, .run/admin-key)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enroll", help="enroll a folder: <person>/<image> or person_1.jpg files")
    p.add_argument("folder", type=Path)
    p.add_argument("--per-person", type=int, help="at most this many photos per person")
    p = sub.add_parser("submit", help="submit every image under a folder and show the results")
    p.add_argument("folder", type=Path)
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--timeout", type=float, default=300)
    p = sub.add_parser("demo", help="enroll --known, submit --images, show the results")
    p.add_argument("--known", type=Path, default=SAMPLE / "train")
    p.add_argument("--images", type=Path, default=SAMPLE / "test")
    p.add_argument("--timeout", type=float, default=300)
    p = sub.add_parser("keys", help="manage API keys (needs an admin key)")
    keys_sub = p.add_subparsers(dest="keys_command", required=True)
    k = keys_sub.add_parser("create", help="create a key; prints it once")
    k.add_argument("name")
    k.add_argument("--scopes", required=True, help="comma-separated: submit,query,enroll,verify,admin")
    k.add_argument("--rate", type=int, help="requests per minute (default: the services' default)")
    k = keys_sub.add_parser("list", help="list keys (never their secrets)")
    k.add_argument("--all", action="store_true", help="include revoked keys")
    k = keys_sub.add_parser("revoke", help="revoke a key by id")
    k.add_argument("id")
    args = parser.parse_args(argv)

    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    with (
        httpx.Client(base_url=args.api, timeout=60, headers=headers) as api,
        httpx.Client(base_url=args.ingest, timeout=60, headers=headers) as ing,
    ):
        try:
            if args.command == "keys":
                keys(api, args)
            elif args.command == "enroll":
                enroll(api, args.folder, args.per_person)
            elif args.command == "submit":
                ids = submit(ing, args.folder)
                if not args.no_wait:
                    report(ids, wait_for(api, ids, args.timeout))
            else:
                print(f"enrolling the people in {args.known}")
                enroll(api, args.known)
                time.sleep(1)  # let every recognizer apply the new gallery entries
                print(f"\nsubmitting the images in {args.images}")
                ids = submit(ing, args.images)
                report(ids, wait_for(api, ids, args.timeout))
                print(f"\nSee them all at {args.api}/")
        except (NotADirectoryError, httpx.HTTPError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
