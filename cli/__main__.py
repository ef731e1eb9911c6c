"""``facestream`` (or ``python -m cli``): see ``facestream --help`` and the README's
"Command line". Parses, connects, runs one command, reports every item and returns the
exit status (:mod:`cli.errors`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from cli import commands
from cli.args import Options, options, parse
from cli.commands import Clients
from cli.console import Console
from cli.errors import EXIT_OK, CliError, UsageError
from cli.fates import Item, exit_status, summary
from cli.folders import images_of
from cli.http import INGEST, RESULTS, Service

#: Seconds to connect, and to wait for an answer (enrollment has a recognizer scan the photo first).
CONNECT_TIMEOUT_S = 10.0
ANSWER_TIMEOUT_S = 120.0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)  # usage errors exit 2 here (argparse)
    opts = options(args)
    console = Console(sys.stdout, sys.stderr, as_json=opts.json, quiet=opts.quiet)
    ledger: list[Item] = []
    headers = {"X-API-Key": opts.api_key} if opts.api_key else {}
    timeout = httpx.Timeout(ANSWER_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    with (
        httpx.Client(base_url=opts.api, timeout=timeout, headers=headers) as api,
        httpx.Client(base_url=opts.ingest, timeout=timeout, headers=headers) as ingest,
    ):
        clients = Clients(Service(RESULTS, api), Service(INGEST, ingest), console)
        try:
            code = run(clients, args, opts, ledger)
        except CliError as exc:
            console.items(ledger)
            console.error(str(exc))
            return exc.exit_status
        except KeyboardInterrupt:
            console.items(ledger)
            console.error("interrupted")
            return 130
    console.items(ledger)
    if ledger:
        console.note(f"{args.command}: {summary(ledger)}")
    return max(code, exit_status(ledger))


def run(c: Clients, args: argparse.Namespace, opts: Options, ledger: list[Item]) -> int:
    """Run the command of ``args``; returns its own exit status (the items add theirs)."""
    if args.command == "enroll":
        commands.enroll(c, args.folder, ledger, args.per_person, accept_poor=args.accept_poor)
    elif args.command == "import":
        commands.import_people(
            c, args.source, ledger, args.per_person, args.concurrency, accept_poor=args.accept_poor
        )
    elif args.command == "submit":
        items = commands.submit(c, _files(args.paths), ledger, batch=args.batch, camera=args.camera)
        if not args.no_wait:
            commands.wait_for(c, items, args.timeout)
    elif args.command == "demo":
        c.console.note(f"enrolling the people in {args.known}")
        commands.enroll(c, args.known, ledger)
        # No pause: each recognizer applies the gallery events it has before every image,
        # and the broker hands them over as soon as they are written.
        c.console.note(f"submitting the images in {args.images}")
        items = commands.submit(c, _files([args.images]), ledger)
        commands.wait_for(c, items, args.timeout)
        c.console.note(f"See them all at {opts.api}/")
    elif args.command == "rerun":
        ids = commands.read_ids(args.ids, args.ids_from, sys.stdin.read)
        return commands.rerun(c, rerun_scope(args), ids)
    elif args.keys_command == "create":
        commands.keys_create(c, args.name, args.scopes, args.rate, args.expires_in)
    elif args.keys_command == "list":
        commands.keys_list(c, args.all)
    else:
        commands.keys_revoke(c, args.id)
    return EXIT_OK


def _files(paths: list[Path]) -> list[Path]:
    try:
        found = images_of(paths)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    if not found:
        raise UsageError(f"no image files in {', '.join(map(str, paths))}")
    return found


def rerun_scope(args: argparse.Namespace) -> dict[str, Any]:
    """The re-run request's body, without its ids (``commands.rerun`` adds them)."""
    scope: dict[str, Any] = {"order": "newest" if args.newest else "oldest"}
    if args.status:
        scope["status"] = sorted(set(args.status))
    for name in ("camera", "since", "until", "limit"):
        if getattr(args, name) is not None:
            scope[name] = getattr(args, name)
    return scope


if __name__ == "__main__":
    raise SystemExit(main())
