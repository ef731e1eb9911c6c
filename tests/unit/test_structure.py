"""Rules of the code's shape that a review would otherwise have to re-check by hand."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: stream/ is read as pure handlers plus thin wiring: no function longer than this.
MAX_STREAM_FUNCTION_LINES = 60


def test_no_function_in_stream_is_longer_than_60_lines() -> None:
    long = []
    for path in sorted((ROOT / "stream").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_STREAM_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_the_stream_handlers_do_no_io() -> None:
    """stream/handlers.py plans; it imports no broker, database or HTTP client."""
    tree = ast.parse((ROOT / "stream/handlers.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert imported.isdisjoint({"asyncpg", "faust", "confluent_kafka", "aiokafka", "httpx"})
