"""Runs the whole platform (every service, as its own process) for integration/e2e tests.

The services are started exactly as ``make up`` starts them (``python -m <service>``),
on test ports, against the session's broker and database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / ".run" / "test" / "logs"
PORT_OFFSET = int(os.environ.get("FACESTREAM_TEST_PORT_OFFSET", "0"))
#: The bootstrap admin key the test platform is started with (tests send it as X-API-Key).
ADMIN_KEY = "fsk-test-admin-key-not-secret"


@dataclass
class Platform:
    ingest_url: str
    api_url: str
    stream_url: str
    recognizer_url: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, BinaryIO] = field(default_factory=dict)
    started_with: dict[str, tuple[tuple[str, ...], str]] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=lambda: {"X-API-Key": ADMIN_KEY})
    log_dir: Path = LOGS

    def start(
        self,
        name: str,
        *args: str,
        ready_url: str | None,
        module: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """Run ``python -m <module or name>`` as ``name``; wait for ``ready_url`` unless None."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if ready_url is not None:
            self.started_with[name] = (args, ready_url)
        log = self.logs[name] = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", module or name, *args],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if ready_url is not None:
            wait_ready(name, ready_url, self.procs[name])

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
        finally:
            self.logs.pop(name).close()

    def restart(self, name: str, sig: int = signal.SIGTERM) -> int:
        """Stop ``name`` with ``sig`` and start it again; returns its exit code."""
        code = self.stop(name, sig)
        args, ready_url = self.started_with[name]
        self.start(name, *args, ready_url=ready_url)
        return code

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def wait_ready(name: str, url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {LOGS / (name + '.log')}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{name} not ready at {url} within {timeout}s; see {LOGS / (name + '.log')}")


#: Ports of ingest, api, stream and recognizer when the tests run them.
TEST_PORTS = (18000 + PORT_OFFSET, 18001 + PORT_OFFSET, 16066 + PORT_OFFSET, 19101 + PORT_OFFSET)


def start_platform(
    kafka: str,
    database_url: str,
    images_root: Path,
    workers: int = 2,
    ports: tuple[int, int, int, int] = TEST_PORTS,
    env: dict[str, str] | None = None,
    log_dir: Path = LOGS,
) -> Platform:
    """Start stream, recognizer, ingest and api (in that order) and wait until each is ready."""
    ingest, api, stream, recognizer = ports
    full_env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "DATABASE_URL": database_url,
        "IMAGES_ROOT": str(images_root),
        "INGEST_PORT": str(ingest),
        "API_PORT": str(api),
        "API_HOST": "127.0.0.1",
        "RESULTS_BASE_URL": f"http://127.0.0.1:{api}",  # ingest's result_url points here
        "STREAM_WEB_PORT": str(stream),
        "METRICS_PORT": str(recognizer),
        "WORKERS": str(workers),
        "RETRY_BASE_DELAY_S": "0.2",
        "ADMIN_API_KEY": ADMIN_KEY,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    p = Platform(
        ingest_url=f"http://127.0.0.1:{ingest}",
        api_url=f"http://127.0.0.1:{api}",
        stream_url=f"http://127.0.0.1:{stream}",
        recognizer_url=f"http://127.0.0.1:{recognizer}",
        env=full_env,
        log_dir=log_dir,
    )
    try:
        p.start("stream", ready_url=f"{p.stream_url}/readyz")
        p.start("recognizer", ready_url=f"{p.recognizer_url}/readyz")
        p.start("ingest", ready_url=f"{p.ingest_url}/readyz")
        p.start("api", ready_url=f"{p.api_url}/readyz")
    except Exception:
        p.stop_all()
        raise
    return p
