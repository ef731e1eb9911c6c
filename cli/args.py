"""The command line's grammar (pure, unit-tested).

The connection and output options (``--api``, ``--ingest``, ``--api-key``, ``--json``,
``--quiet``) are accepted before or after the subcommand: every parser, the main one
and each subcommand's, takes them from one parent parser with ``SUPPRESS`` defaults, so
a value given before the subcommand is kept unless it is given again after it (then the
later one wins). :func:`options` fills in what was not given: the environment, then
the defaults.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from schemas import lifecycle

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "datasets" / "faces" / "sample" / "examples" / "knn_examples"
DEFAULT_API = "http://127.0.0.1:8001"
DEFAULT_INGEST = "http://127.0.0.1:8000"
RERUNNABLE = tuple(sorted(s.value for s in lifecycle.RERUNNABLE))
#: For --help only (common.auth.SCOPES, which a unit test compares, imports the web stack).
SCOPES = "submit,query,enroll,verify,admin"


@dataclass(frozen=True)
class Options:
    api: str
    ingest: str
    api_key: str | None
    json: bool
    quiet: bool


def _global_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    g = parent.add_argument_group("connection and output (before or after the subcommand)")
    s = argparse.SUPPRESS
    g.add_argument(
        "--api",
        metavar="URL",
        default=s,
        help=f"results API (default: $FACESTREAM_API_URL, else {DEFAULT_API})",
    )
    g.add_argument(
        "--ingest",
        metavar="URL",
        default=s,
        help=f"ingest API (default: $FACESTREAM_INGEST_URL, else {DEFAULT_INGEST})",
    )
    g.add_argument(
        "--api-key",
        metavar="KEY",
        default=s,
        help="API key (default: $FACESTREAM_API_KEY, else .run/admin-key)",
    )
    g.add_argument("--json", action="store_true", default=s, help="one JSON object a line on stdout")
    g.add_argument(
        "-q", "--quiet", action="store_true", default=s, help="no progress; report only what went wrong"
    )
    return parent


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive number")
    return value


def _seconds(raw: str) -> float:
    """A positive number (seconds, or days): fractions allowed."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{raw} is not a positive number")
    return value


def instant(raw: str) -> str:
    """An ISO 8601 date or time, as the API takes it (with a zone: UTC when none is given)."""
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not an ISO 8601 time (e.g. 2025-01-31T18:00:00Z)"
        ) from None
    return (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).isoformat()


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="facestream",
        parents=[common],
        description="facestream command line: enroll people, submit images, re-run, manage keys. "
        "Exit status: 0 all done, 1 some items failed (each reported), 2 usage error, "
        "3 a service stopped the command, 4 timed out waiting for results.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, help_text: str, where: argparse._SubParsersAction[argparse.ArgumentParser] = sub
    ) -> argparse.ArgumentParser:
        return where.add_parser(name, parents=[common], help=help_text, description=help_text)

    accept_poor = (
        "enroll faces that would make poor templates (too small, too blurred) instead of refusing them"
    )
    p = command("enroll", "enroll a folder of people: <person>/<image> or person_1.jpg files (idempotent)")
    p.add_argument("folder", type=Path)
    p.add_argument("--per-person", type=_positive, metavar="N", help="at most this many photos per person")
    p.add_argument("--accept-poor", action="store_true", help=accept_poor)

    p = command(
        "import",
        "enroll many people: a folder of one folder per person (LFW's layout) or a .zip/.tar of one "
        "(idempotent: photos already enrolled are skipped)",
    )
    p.add_argument("source", type=Path, metavar="DIR_OR_ARCHIVE")
    p.add_argument("--per-person", type=_positive, metavar="N", help="at most this many photos per person")
    p.add_argument("--accept-poor", action="store_true", help=accept_poor)
    p.add_argument(
        "--concurrency",
        type=_positive,
        default=4,
        metavar="N",
        help="photos sent at once (default 4; each is scanned by a recognizer process)",
    )

    p = command("submit", "submit images (files, or every image under folders) and show the results")
    p.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="image files or folders")
    p.add_argument("--no-wait", action="store_true", help="only submit; do not wait for the results")
    p.add_argument(
        "--timeout", type=_seconds, default=300.0, help="seconds to wait for results (default 300)"
    )
    p.add_argument("--camera", help="camera or tenant key recorded with every image")
    p.add_argument("--batch", type=_positive, default=10, metavar="N", help="files per request (default 10)")

    p = command("demo", "enroll --known, submit --images, show the results")
    p.add_argument("--known", type=Path, default=SAMPLE / "train")
    p.add_argument("--images", type=Path, default=SAMPLE / "test")
    p.add_argument(
        "--timeout", type=_seconds, default=300.0, help="seconds to wait for results (default 300)"
    )

    p = command("rerun", "re-run failed and unresolved images (all, or by id, camera, time)")
    p.add_argument(
        "--id", dest="ids", action="append", default=[], metavar="ID", help="an image id (repeatable)"
    )
    p.add_argument("--ids-from", type=Path, metavar="FILE", help="image ids, one a line ('-': stdin)")
    p.add_argument("--camera", help="only images from this camera")
    p.add_argument(
        "--since",
        type=instant,
        metavar="TIME",
        help="only images submitted at or after (ISO 8601; UTC without a zone)",
    )
    p.add_argument("--until", type=instant, metavar="TIME", help="only images submitted before (ISO 8601)")
    p.add_argument(
        "--status", action="append", choices=RERUNNABLE, help="only this status (repeatable; default both)"
    )
    p.add_argument("--newest", action="store_true", help="newest first (default: oldest first)")
    p.add_argument("--limit", type=_positive, metavar="N", help="at most this many images")

    p = command("keys", "manage API keys (needs an admin key)")
    keys = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    k = command("create", "create a key; prints it once", keys)
    k.add_argument("name")
    k.add_argument("--scopes", required=True, help=f"comma-separated: {SCOPES}")
    k.add_argument("--rate", type=_positive, metavar="N", help="requests per minute (default: the services')")
    k.add_argument(
        "--expires-in", type=_seconds, metavar="DAYS", help="the key stops working after this many days"
    )
    k = command("list", "list keys (never their secrets)", keys)
    k.add_argument("--all", action="store_true", help="include revoked keys")
    k = command("revoke", "revoke a key by id", keys)
    k.add_argument("id")
    return parser


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def options(
    args: argparse.Namespace, env: Mapping[str, str] | None = None, run_dir: Path | None = None
) -> Options:
    """The connection and output options: given, else the environment, else the defaults
    (the API key: ``$FACESTREAM_API_KEY``, else the admin key ``make up`` wrote)."""
    env = os.environ if env is None else env
    run_dir = run_dir or Path(env.get("FACESTREAM_RUN_DIR", ROOT / ".run"))
    key = getattr(args, "api_key", None) or env.get("FACESTREAM_API_KEY") or _stored_key(run_dir)
    return Options(
        api=(getattr(args, "api", None) or env.get("FACESTREAM_API_URL") or DEFAULT_API).rstrip("/"),
        ingest=(getattr(args, "ingest", None) or env.get("FACESTREAM_INGEST_URL") or DEFAULT_INGEST).rstrip(
            "/"
        ),
        api_key=key,
        json=bool(getattr(args, "json", False)),
        quiet=bool(getattr(args, "quiet", False)),
    )


def _stored_key(run_dir: Path) -> str | None:
    stored = run_dir / "admin-key"
    try:
        return stored.read_text().strip() or None
    except OSError:
        return None
