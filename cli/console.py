"""Where the CLI writes: results on stdout (human lines, or JSON lines with ``--json``),
progress and errors on stderr (progress only without ``--quiet``; redrawn in place on a
terminal, one line per step otherwise)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from cli import fates
from cli.fates import Item


@dataclass
class Console:
    out: TextIO
    err: TextIO
    as_json: bool = False
    quiet: bool = False
    prog: str = "facestream"
    _open_line: bool = field(default=False, init=False)
    _last: float = field(default=0.0, init=False)

    def progress(self, text: str, *, final: bool = False) -> None:
        """A progress line; on a terminal it replaces the previous one, elsewhere it is
        written at most every 5 s (and always when ``final``)."""
        if self.quiet:
            return
        if self.err.isatty():
            self.err.write(f"\r\x1b[K{text}")
            self._open_line = True
        else:
            now = time.monotonic()
            if not final and now - self._last < 5:
                return
            self._last = now
            self.err.write(text + "\n")
        self.err.flush()

    def note(self, text: str) -> None:
        """A line for people (stderr), unless ``--quiet``."""
        if not self.quiet:
            self._end_line()
            self.err.write(text + "\n")
            self.err.flush()

    def error(self, text: str) -> None:
        self._end_line()
        self.err.write(f"{self.prog}: {text}\n")
        self.err.flush()

    def items(self, items: list[Item]) -> None:
        self._end_line()
        fates.write(items, self.out, as_json=self.as_json, quiet=self.quiet)

    def result(self, human: str, obj: Any) -> None:
        """A command's answer: ``human`` text, or ``obj`` as JSON."""
        self._end_line()
        if self.as_json:
            self.out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        elif human:
            self.out.write(human + "\n")
        self.out.flush()

    def _end_line(self) -> None:
        if self._open_line:
            self.err.write("\n")
            self._open_line = False
