"""Page loads at a million images: the results API's lists and pages, timed over HTTP.

Issue 11: an operator with a thousand cameras; the pages stay fast with a million images
(indexes, keyset paging), and nothing loads all faces into memory. Measured side by side
in one run, on two databases seeded the same way (1,000,000 and 10,000 images):

1. the wall time of one page load, as a client sees it (the real ``python -m api``
   process, uvicorn, loopback HTTP, one keep-alive connection), median and p95 of
   ``repeats`` loads of each request, alternating between the two databases so that
   drifts hit both alike; each answer is checked (status, and that every item honours
   the filter: a parameter the API ignores is an error, not a fast page);
2. the deep keyset page: ``next_cursor`` followed 199 times from the newest page, then
   the 200th page timed like the others (and ``offset=9950``, the same page the old way);
3. the ratio of the medians, 1M over 10k: "stays fast at any size" as a number;
4. the API process's peak resident memory after all the loads (``VmHWM``): a page that
   loaded all faces would show at 1M;
5. the plans PostgreSQL ran, once per request at 1M: a third API process on the 1M
   database logs in as a user whose sessions load ``auto_explain`` (every statement's
   plan with ``ANALYZE, BUFFERS``, read back from the server's log), so the plans are the
   API's own statements, parameters and prepared-statement plans included. The index
   names and sequential scans go into the table, the plans into ``<out>/pages_plans.txt``.

The data (:func:`seed`, set-based SQL): 1,000 cameras, submissions spread over 30 days,
statuses about 80 % processed, 15 % unresolved, 4 % failed, 1 % pending; 1-3 faces per
processed or unresolved image (a processed image's first face is a person, the others
half the time; every face of an unresolved one is unknown); every face keeps a 512-byte
encoding, as the projector stores it, drawn from 65,536 synthetic ones shaped like dlib's
(benchmarks/synthetic_faces.py), which the review page clusters; 2,000 people, one
enrolled face each, and a rare one seen in 3 images only.
File names as cameras write them: ``cam0042/2026-11-03T12-00-00_123456.jpg``.

The database cluster is the benchmark's own (``scripts/postgres.sh``, port 25533, data in
``/tmp/facestream-bench-pages-pg-25533``) and is kept between runs: a database that
already holds its seeded images (the ``bench_seed`` marker table, same seed version, no
applied migration edited since) is reused and only given the migrations added since, so
a rerun spends its time measuring. The broker (``scripts/kafka.sh``, port 29196) is only
there because the API needs one at start-up.

``python -m benchmarks pages`` (part of ``make bench``), or
``python -m benchmarks.pages [--reseed] [--repeats N] [--out bench-results]``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from psycopg import sql

from benchmarks.synthetic_faces import SyntheticFaces
from common.db import MIGRATIONS_DIR
from common.migrate import applied_migrations, apply_migrations, with_credentials
from recognizer.gallery import default_rule
from schemas.encoding import pack
from schemas.events import ModelInfo
from tests.platform import ADMIN_KEY, role_urls, wait_ready

ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = ROOT / ".run" / "bench-pages"
PG_PORT, KAFKA_PORT = 25533, 29196
#: One API process per database, and one more (on the largest) that logs its plans.
API_PORTS = (28101, 28102, 28103)
PG_DIR = Path(f"/tmp/facestream-bench-pages-pg-{PG_PORT}")
OWNER = "facestream"
#: Bumped whenever :func:`seed` changes what it writes: older databases are seeded again.
SEED_VERSION = 2
#: Distinct face encodings the seeded faces draw from (4 photos each of a quarter as many
#: strangers), so that the review page clusters encodings shaped like dlib's.
ENCODING_POOL = 65_536
#: The deep page: ``next_cursor`` followed this many pages deep.
DEEP_PAGE = 200
PAGE_SIZE = 50
#: Stop timing one request on one database after this long (at least MIN_SAMPLES loads).
BUDGET_S = 60.0
MIN_SAMPLES = 3
#: Give up following ``next_cursor`` after this long (a deep page that slow is the finding).
WALK_BUDGET_S = 300.0
#: Free disk the 1M database needs (about 2 GB of tables and indexes, WAL while seeding).
MIN_FREE_BYTES = 5 * 2**30


@dataclass(frozen=True)
class Spread:
    """How the synthetic images spread over cameras, time, statuses and people."""

    cameras: int = 1000
    people: int = 2000
    end: datetime = datetime(2026, 11, 20, tzinfo=UTC)
    days: int = 30
    #: Cumulative shares of processed, unresolved, failed (the rest is pending).
    processed: float = 0.80
    unresolved: float = 0.95
    failed: float = 0.99
    #: Images of the rare person (their first face); the other people are drawn uniformly.
    rare_images: int = 3

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


SPREAD = Spread()


def image_id(n: int) -> str:
    """The id of the ``n``-th seeded image (the same in every database)."""
    return _uuid(f"facestream-bench-image-{n}")


def person_id(n: int) -> str:
    """The id of the ``n``-th seeded person; person 0 is the rare one."""
    return _uuid(f"facestream-bench-person-{n}")


def _uuid(text: str) -> str:
    # PostgreSQL's md5(text)::uuid, as seeded there.
    h = hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def encoding_pool(size: int = ENCODING_POOL) -> list[bytes]:
    """``size`` stored encodings (512 bytes each, as :mod:`schemas.encoding` packs them) of
    ``size / 4`` synthetic people, 4 photos each, with the statistics of dlib's encodings."""
    faces = SyntheticFaces(seed=11)
    photos = faces.photos(np.repeat(faces.centres(size // 4), 4, axis=0))
    return [pack(row) for row in photos]


def rare_images(images: int, spread: Spread = SPREAD) -> list[int]:
    """Which seeded images show the rare person (their first face)."""
    every = max(1, images // spread.rare_images)
    return [n for n in range(7, images, every)][: spread.rare_images]


# ---------------------------------------------------------------------------- the data

_PEOPLE = """
INSERT INTO people (id, name, created_at)
SELECT md5('facestream-bench-person-' || n)::uuid, 'Person ' || lpad(n::text, 4, '0'), %(start)s
FROM generate_series(0, %(people)s - 1) AS n
"""
_ENROLLED = """
INSERT INTO person_faces (id, person_id, filename, box, enrolled_at)
SELECT md5('facestream-bench-enrolled-' || n)::uuid, md5('facestream-bench-person-' || n)::uuid,
       'person' || lpad(n::text, 4, '0') || '.jpg',
       '{"top": 40, "right": 200, "bottom": 200, "left": 40}'::jsonb, %(start)s
FROM generate_series(0, %(people)s - 1) AS n
"""

# One statement per chunk: the images, and (a data-modifying CTE) their faces. Images
# n in [lo, hi); the rare person's images are processed and their first face is theirs.
_CHUNK = """
WITH drawn AS (
    SELECT n,
           md5('facestream-bench-image-' || n)::uuid AS id,
           'cam' || lpad((n %% %(cameras)s)::text, 4, '0') AS camera,
           %(start)s::timestamptz + random() * %(span)s::interval AS at,
           CASE WHEN n = ANY(%(rare)s::bigint[]) THEN 0.0 ELSE random() END AS s,
           random() AS f
    FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) AS n
), typed AS (
    SELECT *,
           CASE WHEN s < %(processed)s THEN 'processed' WHEN s < %(unresolved)s THEN 'unresolved'
                WHEN s < %(failed)s THEN 'failed' ELSE 'pending' END AS status,
           CASE WHEN f < 0.6 THEN 1 WHEN f < 0.9 THEN 2 ELSE 3 END AS faces
    FROM drawn
), images_in AS (
    INSERT INTO images (id, run, status, status_reason, status_detail, filename, content_type,
                        size_bytes, sha256, source, camera, width, height, face_count, attempts,
                        gallery_version, rule, model, trace_id, submitted_at, finished_at, updated_at)
    SELECT id, 0, status,
           CASE status WHEN 'unresolved' THEN 'unknown_faces'
                       WHEN 'failed'
                       THEN (ARRAY['corrupt_image', 'not_an_image', 'retries_exhausted'])[1 + n %% 3]
           END,
           CASE WHEN status = 'failed' THEN 'synthetic failure for the benchmark' END,
           camera || '/' || to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24-MI-SS') || '_'
               || lpad(((n * 7919) %% 1000000)::text, 6, '0') || '.jpg',
           'image/jpeg', 40000 + (n * 7919) %% 400000, encode(sha256(id::text::bytea), 'hex'),
           'ingest', camera,
           CASE WHEN status IN ('processed', 'unresolved') THEN 1920 END,
           CASE WHEN status IN ('processed', 'unresolved') THEN 1080 END,
           CASE WHEN status IN ('processed', 'unresolved') THEN faces END,
           CASE WHEN status = 'pending' THEN 0 ELSE 1 END,
           CASE WHEN status IN ('processed', 'unresolved') THEN 1 END,
           CASE WHEN status IN ('processed', 'unresolved') THEN %(rule)s::jsonb END,
           CASE WHEN status IN ('processed', 'unresolved') THEN %(model)s::jsonb END,
           md5(id::text), at,
           CASE WHEN status <> 'pending' THEN at + interval '300 ms' + random() * interval '2 s' END,
           at
    FROM typed
    RETURNING id, status, face_count, submitted_at
), drawn_faces AS (
    SELECT i.id, k, i.submitted_at,
           (random() * 800)::int AS top, (random() * 1600)::int AS lft, 60 + (random() * 200)::int AS side,
           floor(random() * %(pool)s)::int AS pick,
           CASE WHEN i.status <> 'processed' THEN NULL
                WHEN k = 0 AND i.id = ANY(%(rare_ids)s::uuid[]) THEN md5('facestream-bench-person-0')::uuid
                WHEN k = 0 OR random() < 0.5
                THEN md5('facestream-bench-person-' || (1 + floor(random() * (%(people)s - 1)))::int)::uuid
           END AS person
    FROM images_in i CROSS JOIN LATERAL generate_series(0, i.face_count - 1) AS k
    WHERE i.status IN ('processed', 'unresolved')
)
INSERT INTO faces (image_id, face_index, run, box_top, box_right, box_bottom, box_left, person_id,
                   distance, second_distance, encoding, seen_at)
SELECT d.id, d.k, 0, d.top, d.lft + d.side, d.top + d.side, d.lft, d.person,
       CASE WHEN d.person IS NULL THEN 0.62 + random() * 0.3 ELSE 0.25 + random() * 0.3 END,
       0.7 + random() * 0.3,
       e.encoding,
       d.submitted_at
FROM drawn_faces d JOIN bench_encodings e ON e.k = d.pick
"""

_MARKER = """
CREATE TABLE bench_seed (
    images      bigint      NOT NULL,
    version     integer     NOT NULL,
    faces       bigint      NOT NULL,
    seed_s      float8      NOT NULL,
    migrations  jsonb       NOT NULL,
    seeded_at   timestamptz NOT NULL DEFAULT now()
)
"""


def seed(database: str, images: int, spread: Spread = SPREAD, chunk: int = 100_000) -> int:
    """Write ``images`` images, their faces and the people into ``database`` (empty and
    migrated), then VACUUM ANALYZE it (a database in service is vacuumed: its index-only
    scans see a visibility map). Returns the number of faces.

    Fast, for a million: chunks of ``chunk`` images in parallel sessions (one per core, up
    to 4), each with ``session_replication_role = replica`` (no foreign-key checks: the
    rows are made consistent), with the secondary indexes of ``images`` and ``faces``
    dropped during the load and made again afterwards from their own definitions
    (``pg_get_indexdef``: whatever the migrations declare), since sorted builds are several
    times faster than a million scattered insertions. Hence the superuser's sessions.
    """
    rare = rare_images(images, spread)
    common = {
        "start": spread.start,
        "span": timedelta(days=spread.days),
        "cameras": spread.cameras,
        "people": spread.people,
        "processed": spread.processed,
        "unresolved": spread.unresolved,
        "failed": spread.failed,
        "rare": rare,
        "rare_ids": [image_id(n) for n in rare],
        "rule": json.dumps(default_rule().model_dump(mode="json")),
        "model": json.dumps(ModelInfo(detection_max_side=1024).model_dump(mode="json")),
        "pool": ENCODING_POOL,
    }
    with superuser(database) as conn:
        conn.execute("CREATE TABLE bench_encodings (k integer PRIMARY KEY, encoding bytea NOT NULL)")
        with conn.cursor().copy("COPY bench_encodings (k, encoding) FROM STDIN") as copy:
            for k, encoding in enumerate(encoding_pool()):
                copy.write_row((k, encoding))
        indexes = conn.execute(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid IN ('images'::regclass, 'faces'::regclass) "
            "AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid)"
        ).fetchall()
        with conn.transaction():
            conn.execute(_PEOPLE, {"start": spread.start, "people": spread.people})
            conn.execute(_ENROLLED, {"start": spread.start, "people": spread.people})
            for name, _ in indexes:
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))

    def load(lo: int) -> None:
        with superuser(database) as conn:
            conn.execute("SET session_replication_role = replica")
            with conn.transaction():
                conn.execute("SELECT setseed(%s)", (lo / images,))  # each chunk the same every time
                conn.execute(_CHUNK, {**common, "lo": lo, "hi": min(images, lo + chunk)})

    def build(definition: str) -> None:
        with superuser(database) as conn:
            conn.execute("SET maintenance_work_mem = '1GB'")  # a trigram GIN builds 1.5x faster
            conn.execute(definition)

    workers = max(1, min(4, len(os.sched_getaffinity(0))))
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        for done, _ in enumerate(pool.map(load, range(0, images, chunk)), 1):
            loaded = min(images, done * chunk)
            rate = loaded / max(1e-9, time.monotonic() - started)
            print(f"[pages]   {loaded:,} of {images:,} images ({rate:,.0f}/s)", flush=True)
    started = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:  # the slowest (GIN) first
        list(pool.map(build, sorted((d for _, d in indexes), key=lambda d: " gin " not in d)))
    print(f"[pages]   {len(indexes)} indexes made in {time.monotonic() - started:.0f} s", flush=True)
    with superuser(database) as conn:
        conn.execute("DROP TABLE bench_encodings")
        conn.execute("VACUUM (ANALYZE) images, faces, people, person_faces")
        return int(_one(conn, "SELECT count(*) FROM faces"))


def _one(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


# ---------------------------------------------------------------- database and stack


def _script(name: str, action: str, env: dict[str, str]) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / name), action],
        check=True,
        env={**os.environ, "PYTHON": sys.executable, "FACESTREAM_RUN_DIR": str(RUN_DIR), **env},
        stdout=subprocess.DEVNULL,
    )


_PG_ENV = {"PG_PORT": str(PG_PORT), "PG_DIR": str(PG_DIR)}
_KAFKA_ENV = {"KAFKA_PORT": str(KAFKA_PORT), "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1)}


def owner_url(database: str) -> str:
    return f"postgresql://{OWNER}:{OWNER}@127.0.0.1:{PG_PORT}/{database}"


def superuser(database: str = "postgres") -> psycopg.Connection[Any]:
    """The cluster's superuser, over its Unix socket (trusted locally, scripts/postgres.sh)."""
    return psycopg.connect(host=str(PG_DIR), port=PG_PORT, user="postgres", dbname=database, autocommit=True)


def database_name(images: int) -> str:
    return f"pages_{images}"


def migration_fingerprints() -> dict[str, str]:
    """Each shipped migration file's SHA-256: an applied one edited since means seeding anew."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(MIGRATIONS_DIR.glob("*.sql"))}


def _why_not_reusable(database: str, images: int) -> str | None:
    """None if ``database`` holds the seeded ``images`` with the migrations as shipped."""
    with superuser() as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            return "no such database"
    with psycopg.connect(owner_url(database), autocommit=True) as conn:
        if _one(conn, "SELECT to_regclass('bench_seed')") is None:
            return "not seeded (no bench_seed marker)"
        row = conn.execute("SELECT images, version, migrations FROM bench_seed").fetchone()
    if row is None or row[0] != images or row[1] != SEED_VERSION:
        return f"seeded differently ({row[:2] if row else None}, wanted {(images, SEED_VERSION)})"
    shipped = migration_fingerprints()
    edited = [name for name, digest in row[2].items() if shipped.get(name, digest) != digest]
    if edited:
        return f"applied migrations edited since seeding: {', '.join(edited)}"
    return None


def prepare_database(images: int, reseed: bool = False) -> dict[str, Any]:
    """A migrated database holding ``images`` seeded images: the kept one if it still
    fits (:func:`_why_not_reusable`), else a new one. Returns what was done and how long."""
    database = database_name(images)
    why = "--reseed" if reseed else _why_not_reusable(database, images)
    out: dict[str, Any] = {"database": database, "images": images, "reused": why is None}
    if why is not None:
        print(f"[pages] seeding {database}: {why}", flush=True)
        with superuser() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(OWNER))
            )
    started = time.monotonic()
    applied = apply_migrations(owner_url(database))
    out["migrations_applied"] = applied
    out["migrate_s"] = round(time.monotonic() - started, 1)
    with psycopg.connect(owner_url(database), autocommit=True) as conn:
        if why is not None:
            started = time.monotonic()
            faces = seed(database, images)
            out["seed_s"] = round(time.monotonic() - started, 1)
            conn.execute(_MARKER)
            conn.execute(
                "INSERT INTO bench_seed (images, version, faces, seed_s, migrations) "
                "VALUES (%s, %s, %s, %s, %s)",
                (images, SEED_VERSION, faces, out["seed_s"], "{}"),
            )
        else:
            if applied:
                conn.execute("ANALYZE")
            seeded = conn.execute("SELECT faces, seed_s, seeded_at FROM bench_seed").fetchone()
            assert seeded is not None
            faces = seeded[0]
            out["seed_s_when_seeded"] = seeded[1]
            out["seeded_at"] = seeded[2].isoformat(timespec="seconds")
        out["faces"] = faces
        out["size_mb"] = round(_one(conn, "SELECT pg_database_size(current_database())") / 2**20)
    record_migrations(database)
    return out


def record_migrations(database: str) -> None:
    """Note in the marker the SHA-256 of each migration applied to ``database`` not noted
    yet (its file as it was applied): a later edit of that file means seeding anew."""
    applied = set(applied_migrations(owner_url(database)))
    with psycopg.connect(owner_url(database), autocommit=True) as conn:
        recorded: dict[str, str] = _one(conn, "SELECT migrations FROM bench_seed")
        for name, digest in migration_fingerprints().items():
            if Path(name).stem in applied:
                recorded.setdefault(name, digest)
        conn.execute("UPDATE bench_seed SET migrations = %s", (json.dumps(recorded),))


@contextmanager
def broker() -> Iterator[str]:
    """A fresh broker of the benchmark's own; its bootstrap address."""
    shutil.rmtree(RUN_DIR / f"kafka-{KAFKA_PORT}", ignore_errors=True)
    _script("kafka.sh", "start", _KAFKA_ENV)
    try:
        yield f"127.0.0.1:{KAFKA_PORT}"
    finally:
        _script("kafka.sh", "stop", _KAFKA_ENV)


@contextmanager
def database_server() -> Iterator[None]:
    """The benchmark's PostgreSQL, started (its data kept), stopped afterwards."""
    _script("postgres.sh", "start", _PG_ENV)
    try:
        yield
    finally:
        _script("postgres.sh", "stop", _PG_ENV)


@dataclass
class Api:
    """One ``python -m api`` process on one database."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident memory (VmHWM), MB."""
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None


@contextmanager
def api_process(name: str, database_url: str, bootstrap: str, port: int) -> Iterator[Api]:
    """The results API as deployed (``python -m api``), as its own database user."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "ADMIN_API_KEY": ADMIN_KEY,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    log_path = RUN_DIR / f"api-{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "api"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            try:
                wait_ready(f"api ({name})", f"{url}/readyz", proc)
            except RuntimeError as exc:
                raise RuntimeError(f"the API on {name} images did not start; see {log_path}") from exc
            yield Api(name=name, url=url, proc=proc)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    """One page load: a path, its query, and what its answer must satisfy."""

    name: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    html: bool = False
    #: For JSON lists: each item must pass this (None: any item).
    item: Callable[[dict[str, Any]], bool] | None = None
    item_rule: str = ""
    #: Follow ``next_cursor`` this many pages before the timed page (the deep page).
    depth: int = 0

    @property
    def label(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.path}?{query}" if query else self.path


def _has_face_of(person: str) -> Callable[[dict[str, Any]], bool]:
    return lambda image: any(f.get("person_id") == person for f in image.get("faces", []))


def _submitted_within(since: datetime, until: datetime) -> Callable[[dict[str, Any]], bool]:
    def check(image: dict[str, Any]) -> bool:
        at = image.get("submitted_at")
        return at is not None and since <= datetime.fromisoformat(at) < until

    return check


def requests_to_time(spread: Spread = SPREAD) -> list[Request]:
    """Every request measured, as defined for the final contract of ``GET /v1/images``
    (``since``, ``until``, ``filename``, ``cursor`` / ``next_cursor``) and the pages. The
    day window and the file name search fall inside ``spread``'s 30 days."""
    typical, rare = person_id(1), person_id(0)
    day = spread.start + timedelta(days=13)  # 2026-11-03
    since, until = day, day + timedelta(days=1)
    limit = {"limit": str(PAGE_SIZE)}
    return [
        Request("newest page", "/v1/images", limit),
        Request(
            "status=unresolved",
            "/v1/images",
            {"status": "unresolved", **limit},
            item=lambda i: i.get("status") == "unresolved",
            item_rule="status unresolved",
        ),
        Request(
            "camera",
            "/v1/images",
            {"camera": "cam0042", **limit},
            item=lambda i: i.get("camera") == "cam0042",
            item_rule="camera cam0042",
        ),
        Request(
            "person, typical",
            "/v1/images",
            {"person": typical, **limit},
            item=_has_face_of(typical),
            item_rule="a face of the person",
        ),
        Request(
            "person seen in 3 images",
            "/v1/images",
            {"person": rare, **limit},
            item=_has_face_of(rare),
            item_rule="a face of the person",
        ),
        Request(
            "filename substring",
            "/v1/images",
            {"filename": "cam0042/2026-11-0", **limit},
            item=lambda i: "cam0042/2026-11-0" in (i.get("filename") or "").lower(),
            item_rule="filename contains cam0042/2026-11-0",
        ),
        Request(
            "one-day window",
            "/v1/images",
            {"since": since.isoformat(), "until": until.isoformat(), **limit},
            item=_submitted_within(since, until),
            item_rule="submitted within the day",
        ),
        Request(f"keyset page {DEEP_PAGE} (cursor)", "/v1/images", limit, depth=DEEP_PAGE - 1),
        Request(
            f"offset page {DEEP_PAGE} (the old way)",
            "/v1/images",
            {"offset": str((DEEP_PAGE - 1) * PAGE_SIZE), **limit},
        ),
        Request("results page", "/", html=True),
        Request("results page, unresolved", "/", {"status": "unresolved"}, html=True),
        Request("person page", f"/people/{typical}", html=True),
        Request("review page", "/review", html=True),
    ]


class Refused(Exception):
    """An answer that is not the page asked for (an error status, or a filter ignored)."""


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
        detail = body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        detail = None
    return f"{r.status_code}" + (f": {str(detail)[:120]}" if detail else "")


def judge(request: Request, r: httpx.Response) -> dict[str, Any]:
    """The answer's JSON (``{}`` for a page); raises :class:`Refused` if it is not what
    ``request`` asked for."""
    if r.status_code != 200:
        raise Refused(_detail(r))
    if request.html:
        if not r.headers.get("content-type", "").startswith("text/html"):
            raise Refused(f"200 but {r.headers.get('content-type')}, not HTML")
        return {}
    body = r.json()
    data = body.get("data")
    if not isinstance(data, list):
        raise Refused("200 but no data list")
    if request.item is not None and not all(request.item(i) for i in data):
        raise Refused(f"200 but the filter is ignored: not every item has {request.item_rule}")
    times = [datetime.fromisoformat(i["submitted_at"]) for i in data if i.get("submitted_at")]
    if any(a < b for a, b in itertools.pairwise(times)):
        raise Refused("200 but not newest first")
    return dict(body)


def deep_params(client: httpx.Client, request: Request) -> tuple[dict[str, str], list[float]]:
    """The query of the page ``request.depth`` pages after the first, by following
    ``next_cursor``; and the time of each page on the way (ms)."""
    params = dict(request.params)
    walk: list[float] = []
    for page in range(1, request.depth + 1):
        if sum(walk) > WALK_BUDGET_S * 1000:
            raise Refused(f"cursor walk stopped at page {page}: over {WALK_BUDGET_S:.0f} s")
        started = time.perf_counter()
        r = client.get(request.path, params=params)
        walk.append((time.perf_counter() - started) * 1000)
        cursor = judge(request, r).get("next_cursor")
        if not cursor:
            why = "no next_cursor in the answer" if "next_cursor" not in r.json() else "next_cursor is null"
            raise Refused(f"{why} (page {page})")
        params = {**request.params, "cursor": str(cursor)}
    return params, walk


@dataclass
class Timing:
    """The loads of one request on one database."""

    samples_ms: list[float] = field(default_factory=list)
    error: str | None = None
    bytes: int = 0
    walk_ms: list[float] = field(default_factory=list)
    #: The query timed (the deep page's carries its cursor).
    params: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error, "n": len(self.samples_ms), "bytes": self.bytes}
        if self.samples_ms:
            out["median_ms"] = round(statistics.median(self.samples_ms), 2)
            out["p95_ms"] = round(float(np.percentile(self.samples_ms, 95)), 2)
            out["samples_ms"] = [round(s, 2) for s in self.samples_ms]
        if self.walk_ms:
            out["walk_median_ms"] = round(statistics.median(self.walk_ms), 2)
            out["walk_total_s"] = round(sum(self.walk_ms) / 1000, 2)
        return out


def load_once(client: httpx.Client, request: Request, params: dict[str, str], timing: Timing) -> None:
    """One timed load; an unfit answer sets ``timing.error``."""
    try:
        started = time.perf_counter()
        r = client.get(request.path, params=params)
        elapsed = (time.perf_counter() - started) * 1000
        judge(request, r)
    except (Refused, httpx.HTTPError, ValueError) as exc:
        timing.error = str(exc) or type(exc).__name__
        return
    timing.samples_ms.append(elapsed)
    timing.bytes = len(r.content)


def time_requests(apis: Sequence[Api], requests: Sequence[Request], repeats: int) -> list[list[Timing]]:
    """timings[request][api]: ``repeats`` loads of each request on each API, after two
    untimed ones; round by round, alternating which database goes first."""
    clients = [httpx.Client(base_url=api.url, headers={"X-API-Key": ADMIN_KEY}, timeout=120) for api in apis]
    with ExitStack() as stack:
        for c in clients:
            stack.enter_context(c)
        timings = [[Timing() for _ in apis] for _ in requests]
        for i, request in enumerate(requests):
            for j, client in enumerate(clients):
                t = timings[i][j]
                t.params = dict(request.params)
                try:
                    if request.depth:
                        t.params, t.walk_ms = deep_params(client, request)
                        print(
                            f"[pages] {apis[j].name}: followed next_cursor {request.depth} pages "
                            f"in {sum(t.walk_ms) / 1000:.1f} s",
                            flush=True,
                        )
                    for _ in range(2):  # warm: caches, the pool's prepared statements
                        judge(request, client.get(request.path, params=t.params))
                except (Refused, httpx.HTTPError, ValueError) as exc:
                    t.error = str(exc) or type(exc).__name__
        spent = [[0.0 for _ in apis] for _ in requests]
        print(f"[pages] timing {len(requests)} requests x {repeats} on {len(apis)} databases", flush=True)
        for round_ in range(repeats):
            order = list(range(len(apis)))
            if round_ % 2:
                order.reverse()
            for i, request in enumerate(requests):
                for j in order:
                    t = timings[i][j]
                    if t.error is not None or (spent[i][j] > BUDGET_S and len(t.samples_ms) >= MIN_SAMPLES):
                        continue
                    started = time.monotonic()
                    load_once(clients[j], request, t.params, t)
                    spent[i][j] += time.monotonic() - started
    return timings


# ----------------------------------------------------------------------------- plans

_LOG_ENTRY = re.compile(r"^\S+ \S+ \S+ \[\d+\] (?:\S+@\S+ )?LOG:  duration: ([\d.]+) ms  plan:$")
_INDEX = re.compile(r"(?:Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\w+)")
_SEQ = re.compile(r"Seq Scan on (\w+)")
#: What asyncpg runs for itself (connection reset, type introspection, JIT off for it).
_DRIVER_STATEMENTS = (
    "SELECT pg_advisory_unlock_all()",
    "WITH RECURSIVE typeinfo_tree",
    "SELECT current_setting('jit')",
    "SELECT set_config('jit'",
)


def explain_user(database: str) -> str:
    """A DATABASE_URL whose sessions log every statement's plan (auto_explain, ANALYZE,
    BUFFERS), in the API's group role: only the plan pass uses it."""
    user = "facestream_bench_explain"
    with superuser(database) as admin:
        admin.execute(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) "
                "THEN CREATE ROLE {user} LOGIN PASSWORD {name}; END IF; END $$"
            ).format(name=sql.Literal(user), user=sql.Identifier(user))
        )
        admin.execute(sql.SQL("GRANT facestream_api TO {}").format(sql.Identifier(user)))
        for name, value in (
            ("session_preload_libraries", "auto_explain"),
            ("auto_explain.log_min_duration", "0"),
            ("auto_explain.log_analyze", "on"),
            ("auto_explain.log_buffers", "on"),
            ("auto_explain.log_timing", "on"),
        ):
            admin.execute(
                sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                    sql.Identifier(user),
                    sql.Identifier(database),
                    sql.Identifier(*name.split(".")),
                    sql.Literal(value),
                )
            )
    return with_credentials(owner_url(database), user, user)


def logged_plans(text: str) -> list[dict[str, Any]]:
    """auto_explain's entries in a stretch of the server log: each statement's duration,
    plan, the indexes it used and the tables it read whole."""
    entries: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        m = _LOG_ENTRY.match(line)
        if m:
            current = {"duration_ms": float(m.group(1)), "lines": []}
            entries.append(current)
        elif current is not None and line.startswith("\t"):
            current["lines"].append(line[1:])
        else:
            current = None
    out = []
    for e in entries:
        plan = "\n".join(e["lines"])
        # The query's text runs up to the plan's root node, the first line with a cost.
        head = next((k for k, line in enumerate(e["lines"]) if "(cost=" in line), len(e["lines"]))
        query = " ".join(" ".join(e["lines"][:head]).removeprefix("Query Text:").split())[:200]
        if query.upper() in ("SELECT 1", "SELECT 1;") or query.startswith(_DRIVER_STATEMENTS):
            continue  # the API's health checks, asyncpg's own housekeeping
        out.append(
            {
                "duration_ms": e["duration_ms"],
                "query": query,
                "indexes": sorted(set(_INDEX.findall(plan))),
                "seq_scans": sorted(set(_SEQ.findall(plan))),
                "plan": plan,
            }
        )
    return out


def capture_plans(
    api: Api, requests: Sequence[Request], params: Sequence[dict[str, str]], log: Path
) -> list[list[dict[str, Any]]]:
    """Load each request once on ``api`` (whose sessions log their plans) and read back
    the plans of the statements it ran."""
    out = []
    with httpx.Client(base_url=api.url, headers={"X-API-Key": ADMIN_KEY}, timeout=120) as client:
        for request, query in zip(requests, params, strict=True):
            start = log.stat().st_size
            with suppress(httpx.HTTPError):
                client.get(request.path, params=query)
            time.sleep(0.3)  # the server writes its log asynchronously to us
            with log.open("rb") as f:
                f.seek(start)
                out.append(logged_plans(f.read().decode(errors="replace")))
    return out


# ----------------------------------------------------------------------------- the run


def run(quick: bool, out_dir: Path, reseed: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """Seed (or reuse) the databases, time every request on each, capture the plans."""
    sizes = (1_000_000, 10_000)
    repeats = repeats or (20 if quick else 50)
    if shutil.which("java") is None:
        return {"skipped": "no Java for the broker the API needs at start-up"}
    results: dict[str, Any] = {"sizes": list(sizes), "repeats": repeats, "page_size": PAGE_SIZE}
    requests = requests_to_time()
    with database_server():
        free = shutil.disk_usage(PG_DIR).free
        kept = sum(f.stat().st_size for f in PG_DIR.rglob("*") if f.is_file())
        if free + kept < MIN_FREE_BYTES:
            return {"skipped": f"{free / 2**30:.1f} GB free on {PG_DIR}; the 1M database needs about 5"}
        started = time.monotonic()
        results["databases"] = [prepare_database(n, reseed) for n in sizes]
        results["prepare_s"] = round(time.monotonic() - started, 1)
        for db in results["databases"]:  # a migration written meanwhile (the API refuses to start without)
            db["migrations_applied"] += apply_migrations(owner_url(db["database"]))
            record_migrations(db["database"])
        # The API logs in as its own user, in its group role, as deployed (tests/platform.py).
        api_urls = [role_urls(owner_url(database_name(n)))["api"] for n in sizes]
        with broker() as bootstrap, ExitStack() as stack:
            apis = [
                stack.enter_context(api_process(f"{n}", url, bootstrap, port))
                for n, url, port in zip(sizes, api_urls, API_PORTS, strict=False)
            ]
            started = time.monotonic()
            timings = time_requests(apis, requests, repeats)
            results["timing_s"] = round(time.monotonic() - started, 1)
            results["api_peak_rss_mb"] = {
                str(n): api.peak_rss_mb() for n, api in zip(sizes, apis, strict=True)
            }
            plans = _plans(sizes[0], bootstrap, requests, [t[0].params for t in timings])
        with superuser(database_name(sizes[0])) as conn:  # what a sequential scan there reads
            results["table_rows"] = dict(
                conn.execute(
                    "SELECT relname, reltuples::bigint FROM pg_class "
                    "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
                ).fetchall()
            )
    rows: list[dict[str, Any]] = []
    for request, per_api, plan in zip(requests, timings, plans, strict=True):
        by_size = {str(n): t.summary() for n, t in zip(sizes, per_api, strict=True)}
        big, small = by_size[str(sizes[0])], by_size[str(sizes[1])]
        ratio = big["median_ms"] / small["median_ms"] if "median_ms" in big and "median_ms" in small else None
        rows.append(
            {
                "name": request.name,
                "request": request.label,
                "by_size": by_size,
                "ratio": round(ratio, 2) if ratio is not None else None,
                "statements": [{k: v for k, v in s.items() if k != "plan"} for s in plan],
            }
        )
    results["requests"] = rows
    results["failed"] = [
        f"{r['name']} ({n}): {t['error']}" for r in rows for n, t in r["by_size"].items() if t["error"]
    ]
    write_plans(out_dir / "pages_plans.txt", requests, plans)
    (out_dir / "pages.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    results["table"] = table(results)
    return results


def _plans(
    images: int, bootstrap: str, requests: Sequence[Request], params: Sequence[dict[str, str]]
) -> list[list[dict[str, Any]]]:
    """The plans of one load of each request (with ``params``: the queries timed) on the
    ``images`` database; empty lists if the plan pass fails (the timings stand without it)."""
    try:
        url = explain_user(database_name(images))
        with api_process(f"{images}-plans", url, bootstrap, API_PORTS[2]) as api:
            return capture_plans(api, requests, params, PG_DIR / "server.log")
    except (OSError, RuntimeError, psycopg.Error) as exc:
        print(f"[pages] no plans: {exc}", flush=True)
        return [[] for _ in requests]


def write_plans(path: Path, requests: Sequence[Request], plans: Sequence[Sequence[dict[str, Any]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = []
    for request, statements in zip(requests, plans, strict=True):
        parts.append(f"=== {request.name}: GET {request.label}\n")
        for s in statements:
            parts.append(f"--- {s['duration_ms']:.3f} ms\n{s['plan']}\n")
    path.write_text("\n".join(parts))


def table(results: dict[str, Any]) -> list[str]:
    """The summary's lines."""
    big, small = (str(n) for n in results["sizes"])
    lines = []
    for db in results["databases"]:
        if db["reused"]:
            how = f"kept from an earlier run (seeded in {db.get('seed_s_when_seeded')} s)"
        else:
            how = f"seeded in {db['seed_s']} s"
        lines.append(f"  {db['images']:>9,} images, {db['faces']:,} faces, {db['size_mb']:,} MB: {how}")
    head = ("request", "1M median", "p95", "10k median", "p95", "ratio")
    lines.append(
        f"  {head[0]:<32} {head[1]:>9} {head[2]:>7} {head[3]:>10} {head[4]:>7} {head[5]:>6}  indexes at 1M"
    )
    for r in results["requests"]:
        b, s = r["by_size"][big], r["by_size"][small]
        error = b["error"] or s["error"]
        if error and "median_ms" not in b:
            lines.append(f"  {r['name']:<32} error: {error}")
            continue
        indexes = sorted({i for st in r["statements"] for i in st["indexes"]})
        seq = sorted({t for st in r["statements"] for t in st["seq_scans"]})
        sizes = results.get("table_rows", {})
        seq = [f"{t} ({sizes[t]:,} rows)" if t in sizes else t for t in seq]
        used = ", ".join(indexes) + (f"; seq scan {', '.join(seq)}" if seq else "")
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        figures = [x.get(k, math.nan) for x in (b, s) for k in ("median_ms", "p95_ms")]
        lines.append(
            f"  {r['name']:<32} {figures[0]:>9.1f} {figures[1]:>7.1f} {figures[2]:>10.1f} {figures[3]:>7.1f} "
            f"{ratio:>6}  {used}"
        )
        if error:
            lines.append(f"  {'':<32} error: {error}")
    rss = {k: v or 0.0 for k, v in results.get("api_peak_rss_mb", {}).items()}
    lines.append(f"  API peak RSS: {rss.get(big, 0):.0f} MB at 1M, {rss.get(small, 0):.0f} MB at 10k")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pages", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="50 loads of each request instead of 20")
    parser.add_argument("--repeats", type=int, default=None, help="loads of each request on each database")
    parser.add_argument("--reseed", action="store_true", help="seed the databases anew even if they fit")
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args(argv)
    from benchmarks.__main__ import machine

    results: dict[str, Any] = {"machine": machine(), "mode": "full" if args.full else "quick"}
    results.update(run(not args.full, args.out, reseed=args.reseed, repeats=args.repeats))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pages.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    print("\n".join(results.get("table", [results.get("skipped", "")])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
