"""The CLI's pure parts: its grammar, its error sentences, each file's fate and the exit
status, and the HTTP policy (retries, the per-file resend after a refused batch) against
an in-process transport that follows ingest's documented contract."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from cli import commands
from cli.__main__ import rerun_scope
from cli.args import DEFAULT_API, DEFAULT_INGEST, options, parse
from cli.commands import Clients
from cli.console import Console
from cli.errors import EXIT_ITEMS_FAILED, EXIT_OK, EXIT_TIMED_OUT, Refused, Unreachable, refusal_message
from cli.fates import Fate, Item, exit_status, summary, write
from cli.http import INGEST, RESULTS, Service

# -- grammar ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--api", "http://a:1", "--api-key", "k", "--json", "submit", "dir"],
        ["submit", "dir", "--api", "http://a:1", "--api-key", "k", "--json"],
        ["--api", "http://a:1", "submit", "--json", "dir", "--api-key", "k"],
    ],
)
def test_global_options_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = parse(argv)
    opts = options(args, env={}, run_dir=Path("/nonexistent"))
    assert (opts.api, opts.api_key, opts.json, opts.quiet) == ("http://a:1", "k", True, False)
    assert args.paths == [Path("dir")]


def test_an_option_after_the_subcommand_wins_over_the_same_before_it() -> None:
    args = parse(["--api", "http://before:1", "keys", "list", "--api", "http://after:1/"])
    assert options(args, env={}, run_dir=Path("/nonexistent")).api == "http://after:1"


def test_options_of_a_nested_subcommand_and_before_it() -> None:
    args = parse(["-q", "keys", "create", "cam", "--scopes", "submit", "--expires-in", "30", "--json"])
    opts = options(args, env={}, run_dir=Path("/nonexistent"))
    assert (args.name, args.scopes, args.expires_in, opts.quiet, opts.json) == (
        "cam",
        "submit",
        30,
        True,
        True,
    )


def test_defaults_come_from_the_environment_then_the_stored_admin_key(tmp_path: Path) -> None:
    (tmp_path / "admin-key").write_text("stored-key\n")
    env = {"FACESTREAM_API_URL": "http://api:9", "FACESTREAM_INGEST_URL": "http://ing:9"}
    opts = options(parse(["submit", "x"]), env=env, run_dir=tmp_path)
    assert (opts.api, opts.ingest, opts.api_key) == ("http://api:9", "http://ing:9", "stored-key")
    opts = options(parse(["submit", "x"]), env={"FACESTREAM_API_KEY": "env-key"}, run_dir=tmp_path)
    assert (opts.api, opts.ingest, opts.api_key) == (DEFAULT_API, DEFAULT_INGEST, "env-key")
    given = options(
        parse(["submit", "x", "--api-key", "given"]), env={"FACESTREAM_API_KEY": "e"}, run_dir=tmp_path
    )
    assert given.api_key == "given"


def test_rerun_grammar_and_its_request_body() -> None:
    args = parse(["rerun", "--id", "a", "--id", "b", "--status", "failed", "--newest", "--limit", "5"])
    assert (args.ids, args.status, args.newest, args.limit) == (["a", "b"], ["failed"], True, 5)
    assert rerun_scope(args) == {"order": "newest", "status": ["failed"], "limit": 5}
    args = parse(
        ["rerun", "--camera", "door", "--since", "2025-01-31", "--until", "2025-02-01T10:00:00+01:00"]
    )
    assert rerun_scope(args) == {
        "order": "oldest",
        "camera": "door",
        "since": "2025-01-31T00:00:00+00:00",  # no zone: UTC, as the results page reads it
        "until": "2025-02-01T10:00:00+01:00",
    }


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["submit"],
        ["submit", "d", "--batch", "0"],
        ["rerun", "--status", "processed"],
        ["keys", "create", "n"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    assert "usage: facestream" in capsys.readouterr().err


def test_ids_are_read_checked_and_deduplicated(tmp_path: Path) -> None:
    a, b = "6f1c2a8e-1111-4b2c-9d3e-000000000001", "6f1c2a8e-1111-4b2c-9d3e-000000000002"
    (tmp_path / "ids").write_text(f"{b}  # a comment\n\n{a}\n")
    assert commands.read_ids([a], tmp_path / "ids", lambda: "") == [a, b]
    assert commands.read_ids([], Path("-"), lambda: f"{b}\n") == [b]
    with pytest.raises(Exception, match="'nope' is not an image id"):
        commands.read_ids(["nope"], None, lambda: "")


# -- error sentences --------------------------------------------------------------------


def test_every_error_names_the_service_and_its_url() -> None:
    url = "http://127.0.0.1:8001"
    m401 = refusal_message(
        RESULTS, url, 401, "the API key is not valid (unknown or revoked)", "GET /v1/images/x"
    )
    assert m401.startswith(f"the results API at {url} refused the API key (401): the API key is not valid")
    m403 = refusal_message(RESULTS, url, 403, "this API key lacks the 'query' scope", "GET /v1/images/x")
    assert "refused GET /v1/images/x (403): the API key lacks the 'query' scope" in m403
    assert "--scopes query" in m403
    m503 = refusal_message(INGEST, "http://i:8000", 503, "the broker is unavailable", "POST /v1/images")
    assert m503 == "the ingest API at http://i:8000 failed POST /v1/images (503): the broker is unavailable"
    assert "429" in refusal_message(INGEST, "http://i:8000", 429, "slow down", "POST /v1/images")
    assert str(Unreachable(INGEST, "http://127.0.0.1:8000", "connection refused")) == (
        "cannot reach the ingest API at http://127.0.0.1:8000 (connection refused); is it running? make up"
    )


# -- fates and exit status ----------------------------------------------------------------


def test_each_fate_reads_as_a_line_and_as_json() -> None:
    items = [
        Item("k/Ada/1.jpg", Fate.OK, person="Ada", person_id="p", face_id="f"),
        Item("k/Ada/2.jpg", Fate.SKIPPED, person="Ada", person_id="p", face_id="f"),
        Item("k/Ada/3.jpg", Fate.REFUSED, detail="no face found in the photo", http_status=422, person="Ada"),
        Item("p/a.jpg", Fate.OK, id="i1", status="processed", people=["Ada", "unknown"]),
        Item(
            "p/b.jpg",
            Fate.FAILED,
            id="i2",
            status="failed",
            status_reason="corrupt_image",
            detail="truncated",
        ),
        Item("p/c.jpg", Fate.NOT_SENT, detail="cannot read it: Permission denied"),
    ]
    lines = [i.describe() for i in items]
    assert lines == [
        "k/Ada/1.jpg: ok (enrolled)",
        "k/Ada/2.jpg: skipped (already enrolled)",
        "k/Ada/3.jpg: refused 422: no face found in the photo",
        "p/a.jpg: ok: processed: Ada, unknown",
        "p/b.jpg: failed (corrupt_image): truncated (image i2)",
        "p/c.jpg: not sent (cannot read it: Permission denied)",
    ]
    out = io.StringIO()
    write(items, out, as_json=True, quiet=True)  # --json lists every item, whatever --quiet
    objs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [o["fate"] for o in objs] == ["ok", "skipped", "refused", "ok", "failed", "not sent"]
    assert objs[2] == {
        "file": "k/Ada/3.jpg",
        "fate": "refused",
        "detail": "no face found in the photo",
        "http_status": 422,
        "person": "Ada",
    }
    quiet = io.StringIO()
    write(items, quiet, as_json=False, quiet=True)
    assert quiet.getvalue().splitlines() == [lines[2], lines[4], lines[5]]
    assert summary(items) == "2 ok, 1 skipped, 1 refused, 1 failed, 1 not sent"


def test_exit_status_of_the_items() -> None:
    ok, skipped = Item("a", Fate.OK), Item("b", Fate.SKIPPED)
    assert exit_status([ok, skipped]) == EXIT_OK
    assert exit_status([ok, Item("c", Fate.REFUSED)]) == EXIT_ITEMS_FAILED
    assert exit_status([ok, Item("c", Fate.FAILED)]) == EXIT_ITEMS_FAILED
    assert exit_status([Item("c", Fate.REFUSED), Item("d", Fate.PENDING)]) == EXIT_TIMED_OUT
    assert exit_status([]) == EXIT_OK


# -- HTTP policy ----------------------------------------------------------------------


def _service(name: str, handler: httpx.MockTransport, slept: list[float]) -> Service:
    client = httpx.Client(base_url="http://svc:1", transport=handler)
    return Service(name, client, sleep=slept.append)


def test_429_is_retried_after_retry_after_then_fails_naming_the_service() -> None:
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(429, json={"detail": "rate limit exceeded"}, headers={"Retry-After": "2"})

    slept: list[float] = []
    svc = _service(RESULTS, httpx.MockTransport(answer), slept)
    r = svc.send("GET", "/v1/people")
    assert (r.status_code, len(calls), slept) == (429, 4, [2.0, 2.0, 2.0])
    err = svc.refused(r)
    assert isinstance(err, Refused)
    assert "the results API at http://svc:1 kept refusing GET /v1/people with 429" in str(err)


def test_no_answer_is_unreachable() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(
        Unreachable, match=r"cannot reach the ingest API at http://svc:1 \(connection refused\)"
    ):
        _service(INGEST, httpx.MockTransport(answer), []).send("GET", "/")


def test_a_refused_batch_is_sent_again_file_by_file_so_the_good_files_are_accepted(tmp_path: Path) -> None:
    """Ingest's contract: one bad file refuses the whole request (naming it), nothing is published."""
    requests: list[int] = []

    def ingest(request: httpx.Request) -> httpx.Response:
        body = request.read()
        n = body.count(b'name="files"')
        requests.append(n)
        if b"NOT-AN-IMAGE" in body:
            return httpx.Response(415, json={"detail": "bad.jpg: not an image (unrecognised content)"})
        return httpx.Response(
            202, json={"data": [{"id": f"id{len(requests)}-{i}"} for i in range(n)], "count": n}
        )

    files = []
    for name, data in [("a.jpg", b"img"), ("bad.jpg", b"NOT-AN-IMAGE"), ("c.jpg", b"img")]:
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    slept: list[float] = []
    clients = Clients(
        _service(RESULTS, httpx.MockTransport(ingest), slept),
        _service(INGEST, httpx.MockTransport(ingest), slept),
        Console(io.StringIO(), io.StringIO(), quiet=True),
    )
    ledger: list[Item] = []
    items = commands.submit(clients, files, ledger, batch=10)
    assert requests == [3, 1, 1, 1]
    assert [(i.fate, i.http_status, i.detail) for i in items] == [
        (Fate.OK, None, None),
        (Fate.REFUSED, 415, "not an image (unrecognised content)"),
        (Fate.OK, None, None),
    ]
    assert items[0].id
    assert items[2].id
    assert ledger == items


def test_the_help_names_every_scope_and_rerunnable_status() -> None:
    from cli import args
    from common.auth import SCOPES

    assert args.SCOPES.split(",") == list(SCOPES)
    assert args.RERUNNABLE == ("failed", "unresolved")
